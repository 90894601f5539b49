//! chatd's end-to-end suite: one test binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic where it fails

mod admin_api;
mod bench_support;
mod chat_api;
mod chatctl;
mod config;
mod deploy;
mod faults;
mod metrics;
mod migrate;
mod python_client;
mod security;
mod serve;
mod streams;
mod tls;
mod workspaces;
