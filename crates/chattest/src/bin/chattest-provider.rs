//! `chattest-provider`: the provider emulator as a process, for manual runs and benchmarks.
//!
//! ```text
//! chattest-provider --script turns.json [--listen 127.0.0.1:8089]
//! ```
//!
//! The script is a JSON array of turns, e.g.
//! `[{"parts": [{"text": {"text": "Hello!", "chunk": 2}}], "usage": [10, 5]},
//!   {"fault": {"at": "before_headers", "kind": {"status": {"status": 529, "headers": [], "body": "{}"}}}}]`.
//! Point an Anthropic client at `http://ADDR` and an OpenAI-compatible one at `http://ADDR/v1`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chattest::emulator::{Emulator, Turn};
use clap::Parser;

/// Serve scripted Anthropic / OpenAI streaming responses on loopback.
#[derive(Debug, Parser)]
#[command(name = "chattest-provider", version, about)]
struct Args {
    /// JSON file with the turns to play, in order (see the crate docs for the format).
    #[arg(long)]
    script: PathBuf,
    /// Loopback address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let text = match std::fs::read_to_string(&args.script) {
        Ok(text) => text,
        Err(err) => {
            eprintln!(
                "chattest-provider: cannot read {}: {err}",
                args.script.display()
            );
            return ExitCode::from(2);
        }
    };
    let turns: Vec<Turn> = match serde_json::from_str(&text) {
        Ok(turns) => turns,
        Err(err) => {
            eprintln!(
                "chattest-provider: {} is not a valid script: {err}",
                args.script.display()
            );
            return ExitCode::from(2);
        }
    };
    let emulator = match Emulator::start_on(args.listen, turns).await {
        Ok(emulator) => emulator,
        Err(err) => {
            eprintln!("chattest-provider: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    #[allow(clippy::print_stdout)] // the address is this program's output
    {
        println!("chattest-provider listening on {}", emulator.base_url());
    }
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
