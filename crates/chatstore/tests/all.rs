//! chatstore's test suite, against a real PostgreSQL (a fresh database per test).

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
