//! The `chatctl` executable: parses the command line, runs it, exits with the documented code.

use std::process::ExitCode;

use chatctl::{cli, commands, error};
use clap::Parser as _;
fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chatctl: cannot start the async runtime: {err}");
            return ExitCode::from(error::exit::FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::from(error::exit::OK),
        Err(err) => {
            eprintln!("chatctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
