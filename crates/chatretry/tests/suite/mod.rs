mod driver;
mod policy;
mod silence;
mod token;
