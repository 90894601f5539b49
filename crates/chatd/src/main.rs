//! The `chatd` executable: parses the command line, sets up logging and runs a subcommand.

use std::process::ExitCode;

use chatd::cli::Command;
use chatd::telemetry::Telemetry;
use chatd::{DatabaseConfig, ServeConfig, ShutdownSignals};
use tracing::error;

fn main() -> ExitCode {
    let cli = match chatd::config::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(chatd::config::ConfigError::Cli(err)) => err.exit(),
        Err(err) => {
            eprintln!("chatd: {}", chatd::error_chain(&err));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chatd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporter sends its batches from a task of the runtime.
    let telemetry = {
        let _context = runtime.enter();
        match Telemetry::init(
            &cli.log_filter,
            cli.log_format,
            cli.otlp_endpoint.as_deref(),
        ) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("chatd: {err}");
                return ExitCode::from(2);
            }
        }
    };
    harden();

    let code = match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %chatd::error_chain(&err), "chatd failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

/// What the daemon does to its own process before anything else, because the workspaces it
/// builds run untrusted code: files it creates are private to its user (mode 0600, directories
/// 0700; the provisioner opens the path to the workspace homes on purpose), and it is
/// non-dumpable, so no process of its user (a workspace running as the daemon's user, on an
/// unprivileged daemon) can read its `/proc/<pid>/environ`, where provider keys and the database
/// URL live, or its memory.
fn harden() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Err(err) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %err, "cannot make the daemon non-dumpable");
    }
}

async fn run(command: Command) -> Result<(), chatd::ChatdError> {
    match command {
        Command::Serve(args) => {
            let timing = args
                .timing
                .timing()
                .map_err(chatd::ChatdError::InvalidConfig)?;
            let engine = args
                .engine
                .engine_config()
                .map_err(chatd::ChatdError::InvalidConfig)?;
            let signals = ShutdownSignals::install()?;
            let config = ServeConfig {
                timing,
                engine,
                requires_action_timeout: args.engine.requires_action_timeout,
                max_queue: args.engine.chat_max_queue,
                models: args.model_seeding(),
                metrics_listen: args.metrics_listen,
                listen: args.listen,
                advertise_address: args.advertise_address.clone(),
                relay_listen: args.relay_listen,
                health_listen: args.health_listen,
                tls: args.tls.config(),
                agent_networks: args.agent_networks.clone(),
                shutdown_grace: args.shutdown_grace,
                database: Some(DatabaseConfig {
                    url: chatd::cli::database_url_or_default(
                        args.database_url.as_deref(),
                        args.provisioner.data_dir.as_deref(),
                    ),
                    migrate: !args.no_migrate,
                    connect_timeout: args.connect.database_connect_timeout,
                }),
                agent_heartbeat_interval: args.provisioner.agent_heartbeat_interval,
                admin_token_file: (!args.no_bootstrap_admin).then(|| {
                    args.provisioner
                        .data_dir
                        .clone()
                        .unwrap_or_else(chatd::build_workers::default_data_dir)
                        .join("admin-token")
                }),
                admin_token_lifetime: args.bootstrap_token_lifetime,
                provisioner: (args.provisioner_workers > 0).then(|| {
                    args.provisioner
                        .settings(usize::from(args.provisioner_workers))
                }),
            };
            chatd::serve(config, signals.recv()).await
        }
        Command::Provisioner(args) => {
            let signals = ShutdownSignals::install()?;
            let database = DatabaseConfig {
                url: args.database_url,
                migrate: !args.no_migrate,
                connect_timeout: args.connect.database_connect_timeout,
            };
            let settings = args.provisioner.settings(usize::from(args.workers));
            chatd::build_workers::run_alone(settings, database, args.shutdown_grace, signals.recv())
                .await
        }
        Command::Admin(chatd::cli::AdminCommand::Token(args)) => {
            let database = args.database.config(false);
            let token = chatd::mint_admin_token(&database, &args.username, args.lifetime).await?;
            // The token is the command's output, for a pipe or a file.
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{token}")
                .and_then(|()| out.flush())
                .map_err(chatd::ChatdError::Output)
        }
        Command::Migrate(args) => {
            let database = args.database.config(true);
            chatd::migrate(&database.url, database.connect_timeout).await
        }
    }
}
