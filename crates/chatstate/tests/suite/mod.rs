mod effects;
mod matrix;
