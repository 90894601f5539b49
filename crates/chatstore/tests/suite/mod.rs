mod jobs;
mod support;
mod triggers;
