mod jobs;
mod model_check;
mod ownership;
mod pubsub;
mod support;
mod transitions;
mod triggers;
mod workspace;
