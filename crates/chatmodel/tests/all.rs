//! chatmodel's test suite: the stream decoders on documented transcripts, and the clients against the provider emulator.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
