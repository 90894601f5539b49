//! chattest's test suite: the emulator as a binary, and the providers' own Python SDKs against it.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
