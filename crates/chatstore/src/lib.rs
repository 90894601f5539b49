//! chatd's storage layer: the PostgreSQL schema and its migrations, and (as issue 4 lands) the
//! domain types, the `Store` trait and its PostgreSQL implementation.
//!
//! All SQL lives in this crate's `postgres` module and in `migrations/postgres/`; the rules a
//! transition follows come from `chatstate`. This crate knows no gRPC and no HTTP.
//!
//! Today it provides [`postgres::connect`] and [`postgres::migrate`] (used by `chatd migrate`)
//! and, for tests of this and other crates, [`testing::TestDatabase`]: a fresh database per test.

pub mod postgres;
pub mod testing;

mod error;

pub use error::StoreError;
