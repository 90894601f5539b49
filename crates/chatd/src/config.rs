//! The configuration file (`--config FILE`, or `CHATD_CONFIG`): TOML whose keys are the long
//! flags of the subcommand, without their dashes.
//!
//! ```toml
//! listen = "127.0.0.1:7420"
//! database-url = "postgres://postgres@127.0.0.1:5432/chatd"
//! shutdown-grace = "20s"
//! no-bootstrap-admin = true          # a switch: true sets it
//! anthropic-models = ["claude-sonnet-4-5", "claude-haiku-4-5"]
//!
//! [retry]                            # a table prefixes its keys: `retry-max-attempts`
//! max-attempts = 10
//!
//! [[model]]                          # `chatd serve` only: models to seed
//! provider = "openai-compat"
//! model = "qwen3-coder"
//! base-url = "http://127.0.0.1:8000/v1"
//! ```
//!
//! A value from the file counts only where neither the command line nor the environment set
//! one, so the order is: command line, `CHATD_*` variable, file, default. Each value is
//! checked by the flag's own parser, so a bad value gets the flag's message (prefixed with the
//! file's path), and an unknown key is refused rather than ignored. The mechanism: the file's
//! values are appended to the command line as `--key=value` and the whole is parsed again.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory as _, FromArgMatches as _, Parser as _};

use crate::cli::{Cli, Command};
use crate::seed::ModelSeed;

/// Why the command line and configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line itself (also `--help` and `--version`): print it with
    /// [`clap::Error::exit`].
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The file cannot be read.
    #[error("cannot read the configuration file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds a bad key or value.
    #[error("configuration file {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// The key of the `[[model]]` tables.
const MODEL_TABLES: &str = "model";

/// Parses the command line (`args` includes the program name) with the configuration file it
/// names, if any.
pub fn parse<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args.clone())?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        invalid(e.message().to_owned() + &position(&text, e.span()))
    })?;
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let Some(sub) = command.find_subcommand(name) else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };

    let mut models = Vec::new();
    for (key, value) in flatten_sections(table) {
        if key == MODEL_TABLES && name == "serve" {
            models = value
                .try_into::<Vec<ModelSeed>>()
                .map_err(|e| invalid(format!("[[model]]: {}", e.message())))?;
            continue;
        }
        let arg = sub
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                invalid(format!(
                    "unknown key `{key}`: keys are the long flags of `chatd {name}` (see `chatd \
                     {name} --help`){}",
                    if key == MODEL_TABLES {
                        "; [[model]] tables are read by `chatd serve`"
                    } else {
                        ""
                    }
                ))
            })?;
        if matches!(
            sub_matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        append(&mut args, &key, switch, &value).map_err(invalid)?;
    }

    let mut cli = Cli::try_parse_from(args).map_err(|e| invalid(first_line(&e.to_string())))?;
    if let Command::Serve(serve) = &mut cli.command {
        serve.file_models = models;
    }
    Ok(cli)
}

/// The file's keys with its tables flattened: `[retry] max-attempts = 5` is the key
/// `retry-max-attempts`. `[[model]]` (an array of tables) stays as it is.
fn flatten_sections(table: toml::Table) -> Vec<(String, toml::Value)> {
    let mut keys = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(section) => {
                for (inner, value) in flatten_sections(section) {
                    keys.push((format!("{key}-{inner}"), value));
                }
            }
            value => keys.push((key, value)),
        }
    }
    keys
}

/// Appends `key = value` to the command line as `--key=value` (once per element of a list).
fn append(
    args: &mut Vec<OsString>,
    key: &str,
    switch: bool,
    value: &toml::Value,
) -> Result<(), String> {
    use toml::Value;
    if switch {
        return match value {
            Value::Boolean(true) => {
                args.push(format!("--{key}").into());
                Ok(())
            }
            Value::Boolean(false) => Ok(()),
            _ => Err(format!("`{key}` is a switch: write `{key} = true`")),
        };
    }
    let scalar = |value: &Value| match value {
        Value::String(text) => Ok(text.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!("`{key}` must be a string or a number")),
    };
    let values = match value {
        Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
        other => vec![scalar(other)?],
    };
    for value in values {
        args.push(format!("--{key}={value}").into());
    }
    Ok(())
}

/// `(line N)` for a parse error's byte span.
fn position(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|span| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

/// The first line of a clap error, without its `error: ` prefix.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::cli::ServeArgs;
    use crate::seed::SeedProvider;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new()
            .prefix("chatd-config-")
            .suffix(".toml")
            .tempfile()
            .unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    fn serve(args: &[&str]) -> Result<ServeArgs, ConfigError> {
        let cli = parse(["chatd", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(args) => Ok(*args),
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn file_values_fill_what_flags_leave_unset() {
        let f = file(
            r#"
            listen = "127.0.0.1:7499"
            shutdown-grace = "3s"
            provisioner-workers = 5
            no-migrate = true
            no-bootstrap-admin = false
            anthropic-api-key-ref = "env:ANTHROPIC_API_KEY"
            anthropic-models = ["claude-a", "claude-b"]

            [[model]]
            provider = "openai-compat"
            model = "qwen"
            base-url = "http://127.0.0.1:8000/v1"
            "#,
        );
        let path = f.path().to_str().unwrap();
        let args = serve(&["--config", path, "--shutdown-grace", "7s"]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:7499".parse::<SocketAddr>().unwrap());
        // The command line wins.
        assert_eq!(args.shutdown_grace, Duration::from_secs(7));
        assert_eq!(args.provisioner_workers, 5);
        assert!(args.no_migrate);
        assert!(!args.no_bootstrap_admin);
        let seeding = args.model_seeding_with(|_| false);
        let models: Vec<(SeedProvider, &str)> = seeding
            .seeds
            .iter()
            .map(|s| (s.provider, s.model.as_str()))
            .collect();
        assert_eq!(
            models,
            [
                (SeedProvider::Anthropic, "claude-a"),
                (SeedProvider::Anthropic, "claude-b"),
                (SeedProvider::OpenaiCompat, "qwen")
            ]
        );
        assert_eq!(seeding.seeds[0].api_key_ref, "env:ANTHROPIC_API_KEY");
        assert_eq!(seeding.organization, "default");
    }

    #[test]
    fn no_file_is_the_plain_command_line() {
        let args = serve(&["--listen", "127.0.0.1:1"]).unwrap();
        assert_eq!(args.listen.port(), 1);
        assert!(args.file_models.is_empty());
        assert!(args.model_seeding_with(|_| false).seeds.is_empty());
    }

    #[test]
    fn bad_files_say_what_and_where() {
        let message = |text: &str| {
            let f = file(text);
            let err = serve(&["--config", f.path().to_str().unwrap()]).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
            err.to_string()
        };
        let err = message("listen = \"127.0.0.1:7420\"\nlisten-addr = \"x\"\n");
        assert!(err.contains("unknown key `listen-addr`"), "{err}");
        assert!(err.contains("chatd-config-"), "the path is named: {err}");
        let err = message("shutdown-grace = \"soon\"\n");
        assert!(
            err.contains("--shutdown-grace") && err.contains("soon"),
            "{err}"
        );
        let err = message("no-migrate = \"yes\"\n");
        assert!(err.contains("`no-migrate` is a switch"), "{err}");
        let err = message("\n\nlisten = \n");
        assert!(err.contains("(line 3)"), "{err}");
        let err = message("[[model]]\nprovider = \"openai\"\n");
        assert!(err.contains("[[model]]: missing field `model`"), "{err}");
        let err = message("listen = [{ host = \"x\" }]\n");
        assert!(
            err.contains("`listen` must be a string or a number"),
            "{err}"
        );
        let err = message("[retry]\nmax-tries = 3\n");
        assert!(err.contains("unknown key `retry-max-tries`"), "{err}");
    }

    #[test]
    fn tables_prefix_their_keys_and_engine_settings_are_checked() {
        let f = file(
            r#"
            chat-agent-suffix = "-agent"
            [retry]
            max-attempts = 7
            initial-delay = "2s"
            [provider]
            connect-timeout = "3s"
            "#,
        );
        let args = serve(&["--config", f.path().to_str().unwrap()]).unwrap();
        let config = args.engine.engine_config().unwrap();
        assert_eq!(config.retry.max_attempts, 7);
        assert_eq!(config.retry.initial_delay, Duration::from_secs(2));
        assert_eq!(config.provider_timeouts.connect, Duration::from_secs(3));
        assert_eq!(config.tools.chat_suffix.as_str(), "-agent");

        let refused = |flags: &[&str]| serve(flags).unwrap().engine.engine_config().unwrap_err();
        let err = refused(&["--chat-agent-suffix", ""]);
        assert!(err.starts_with("--chat-agent-suffix"), "{err}");
        let err = refused(&["--stream-silence-timeout", "25h"]);
        assert!(err.starts_with("--stream-silence-timeout"), "{err}");
        let err = refused(&["--retry-initial-delay", "2m"]);
        assert!(err.contains("--retry-max-delay"), "{err}");
        let err = refused(&["--execute-default-timeout", "5h"]);
        assert!(err.contains("--execute-max-timeout"), "{err}");
        let err = refused(&["--retry-max-attempts", "0"]);
        assert!(err.contains("at least 1"), "{err}");
        // The defaults are the engine's.
        let defaults = serve(&[]).unwrap().engine.engine_config().unwrap();
        let engine = chatengine::EngineConfig::default();
        assert_eq!(defaults.retry, engine.retry);
        assert_eq!(defaults.max_steps_per_turn, engine.max_steps_per_turn);
        assert_eq!(defaults.provider_timeouts, engine.provider_timeouts);
        assert_eq!(defaults.shared_rate_limits, engine.shared_rate_limits);
        assert_eq!(defaults.shared_limit_poll, engine.shared_limit_poll);
        let off = serve(&["--no-shared-rate-limits"])
            .unwrap()
            .engine
            .engine_config()
            .unwrap();
        assert!(!off.shared_rate_limits);
        assert_eq!(defaults.tools.chat_suffix, engine.tools.chat_suffix);
        assert_eq!(defaults.resolver.dial_timeout, engine.resolver.dial_timeout);
        assert_eq!(
            defaults.resolver.dial_validation_delay,
            engine.resolver.dial_validation_delay
        );
        assert_eq!(
            (
                defaults.runner_sync_interval,
                defaults.heartbeat_cleanup_interval
            ),
            (
                engine.runner_sync_interval,
                engine.heartbeat_cleanup_interval
            )
        );
        assert_eq!(
            (defaults.task_retry_initial, defaults.task_retry_max),
            (engine.task_retry_initial, engine.task_retry_max)
        );
        assert_eq!(
            (defaults.parts.episode_max_bytes, defaults.parts.gc_after),
            (engine.parts.episode_max_bytes, engine.parts.gc_after)
        );
        assert_eq!(
            defaults.tools.agent_inactive_timeout,
            defaults.resolver.agent_inactive_timeout
        );
        let err = refused(&["--task-retry-initial", "10s"]);
        assert!(err.contains("--task-retry-max"), "{err}");
    }

    #[test]
    fn model_tables_belong_to_serve() {
        let f = file("[[model]]\nprovider = \"openai\"\nmodel = \"gpt\"\n");
        let err = parse([
            "chatd",
            "migrate",
            "--database-url",
            "postgres://x",
            "--config",
            f.path().to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("[[model]] tables are read by `chatd serve`"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let err = serve(&["--config", "/nonexistent/chatd.toml"]).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/chatd.toml"), "{err}");
    }
}
