//! chatstate's test suite: the transition matrix, and the effects checked against the reference model.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
