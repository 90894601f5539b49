//! chatproto's test suite: the generated types and the embedded descriptor set.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
