//! chatretry's test suite (spec/chatretry.md §10 and §11), on Tokio's paused clock so the whole
//! 25-attempt schedule runs in milliseconds of real time.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
