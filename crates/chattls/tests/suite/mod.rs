mod files;
mod serving;
