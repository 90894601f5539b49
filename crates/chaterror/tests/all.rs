//! chaterror's test suite: the normative tables of spec/chaterror.md as one test per row.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
mod support;
