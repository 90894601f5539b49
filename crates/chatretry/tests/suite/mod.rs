mod driver;
mod limits;
mod policy;
mod silence;
mod token;
