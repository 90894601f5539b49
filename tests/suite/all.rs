//! chatd's end-to-end suite: one test binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic where it fails

mod admin_api;
mod chat_api;
mod chat_tools;
mod chatctl;
mod config;
mod engine;
mod metrics;
mod migrate;
mod python_client;
mod resolver;
mod serve;
mod streams;
mod tool_waits;
mod workspaces;
