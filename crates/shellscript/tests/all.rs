//! shellscript's test suite: line order and streams, exit status, timeouts.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
