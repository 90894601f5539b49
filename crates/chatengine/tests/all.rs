//! chatengine's test suite: the engine, the workspace-connection resolver and the tools as the
//! engine wires them, in-process, against a real database (either backend, `CHATD_TEST_BACKEND`),
//! the provider emulator and real workspace agents (`chatd_e2e::workspaces::Harness`).

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // tests panic where they fail

mod suite;
