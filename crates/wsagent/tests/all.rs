//! wsagent's test suite: files, processes, the gRPC service, the runtime and the binary.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
