//! chatctl: the command-line client of chatd. It talks to a `chatd serve` over the generated
//! gRPC client (`chatproto`) and knows nothing of the daemon's internals or its database: what
//! it can do, any other gRPC client can.
//!
//! Module map: [`cli`] (the command line), [`config`] (the saved login), [`client`] (the
//! authenticated connection), [`commands`] (one function per command), [`render`] (human
//! output, including the live view of `chat attach`), [`json`] (`--json` output), [`error`]
//! (errors and exit codes).

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod json;
pub mod render;
