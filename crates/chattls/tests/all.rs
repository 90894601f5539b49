//! chattls's test suite: real TLS servers and clients on loopback.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
