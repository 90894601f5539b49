//! The command line of chatctl. Global flags also read `CHATCTL_*` environment variables; a
//! flag wins over the environment, which wins over the saved login (`chatctl login`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// chatctl: the command-line client of chatd.
///
/// Exit codes: 0 success; 1 failure; 2 bad usage; 3 not logged in, token refused or not
/// allowed; 4 not found; 5 server unreachable or unavailable; 6 request refused (bad input,
/// forbidden transition, full queue, name in use); 7 the attached chat stopped with an error.
#[derive(Debug, Parser)]
#[command(name = "chatctl", version, about, long_about)]
pub struct Cli {
    /// The chatd server, e.g. `http://127.0.0.1:7420`, or `https://…` when it serves TLS
    /// (default: the saved login).
    #[arg(long, env = "CHATCTL_SERVER", global = true)]
    pub server: Option<String>,

    /// The API token (default: the saved login).
    #[arg(long, env = "CHATCTL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,

    /// CA certificates (PEM) an `https://` server's certificate is checked against (default: the
    /// saved login's, else the system's roots).
    #[arg(long, env = "CHATCTL_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Where the login is saved (default: `$XDG_CONFIG_HOME/chatctl/config.toml`, else
    /// `~/.config/chatctl/config.toml`).
    #[arg(long, env = "CHATCTL_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Print results as JSON (one document per line; the proto3 JSON mapping of the API's
    /// messages) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save the server address and an API token for the next commands (checked first).
    Login(LoginArgs),
    /// Show who the token belongs to and their organizations.
    Whoami,
    /// Chats: create, send, list, show, follow live, interrupt, archive.
    #[command(subcommand)]
    Chat(ChatCommand),
    /// Templates: push a directory, list, show.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Workspaces: list, start, stop, build logs.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Administration (admin tokens): users, API tokens, model configurations.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print a shell completion script, e.g. `chatctl completions bash >
    /// /etc/bash_completion.d/chatctl` (needs no server).
    Completions(CompletionsArgs),
}

/// Flags of `chatctl completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Flags of `chatctl login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The server (default: `--server`, else `http://127.0.0.1:7420`).
    #[arg(long = "to", value_name = "SERVER")]
    pub to: Option<String>,
    /// Read the token from this file (default: `--token`, else the admin token a local
    /// `chatd serve` wrote on its first start, `~/.local/share/chatd/admin-token`, or
    /// `/var/lib/chatd/admin-token` as root).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// `chatctl chat …`.
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Create a chat with a first message and print its id (`--attach` to follow the reply).
    New(NewChatArgs),
    /// Send a message to a chat (queued if it is busy, unless `--interrupt`).
    Send(SendArgs),
    /// List your chats, pinned and most recent first.
    Ls(ListChatsArgs),
    /// Show a chat and its messages.
    Show(ChatIdArg),
    /// Follow a chat live: streamed text, tool calls and results, retries, errors. Returns when
    /// the chat is idle (waiting, error, or waiting for client tools) unless `--follow`.
    Attach(AttachArgs),
    /// Stop the chat's current turn.
    Interrupt(ChatIdArg),
    /// Archive a chat (`--undo` to unarchive).
    Archive(ArchiveArgs),
}

/// A chat id.
#[derive(Debug, Args)]
pub struct ChatIdArg {
    /// The chat's id.
    pub chat_id: String,
}

/// Flags of `chatctl chat new`.
#[derive(Debug, Args)]
pub struct NewChatArgs {
    /// The first message (words are joined with spaces).
    #[arg(required = true)]
    pub message: Vec<String>,
    /// The organization (default: your only one).
    #[arg(long)]
    pub org: Option<String>,
    /// The model configuration (default: the organization's default).
    #[arg(long)]
    pub model: Option<String>,
    /// A title (default: the server's).
    #[arg(long)]
    pub title: Option<String>,
    /// Bind the chat to this workspace.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Follow the reply live until the chat is idle.
    #[arg(long)]
    pub attach: bool,
}

/// Flags of `chatctl chat send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The chat's id.
    pub chat_id: String,
    /// The message (words are joined with spaces).
    #[arg(required = true)]
    pub message: Vec<String>,
    /// Interrupt the current turn instead of queueing behind it.
    #[arg(long)]
    pub interrupt: bool,
    /// Follow the reply live until the chat is idle.
    #[arg(long)]
    pub attach: bool,
}

/// Flags of `chatctl chat ls`.
#[derive(Debug, Args)]
pub struct ListChatsArgs {
    /// Archived chats instead.
    #[arg(long)]
    pub archived: bool,
    /// Only chats whose title contains this (case-insensitive).
    #[arg(long)]
    pub title: Option<String>,
    /// At most this many (1–200).
    #[arg(long, default_value_t = 50)]
    pub limit: i32,
}

/// Flags of `chatctl chat attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The chat's id.
    pub chat_id: String,
    /// Keep following after the chat goes idle (until interrupted with Ctrl-C).
    #[arg(long)]
    pub follow: bool,
}

/// Flags of `chatctl chat archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The chat's id.
    pub chat_id: String,
    /// Unarchive instead.
    #[arg(long)]
    pub undo: bool,
}

/// `chatctl template …`.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Push a template directory (its `template.toml` and files) as a new version.
    Push(PushArgs),
    /// List the organization's templates.
    Ls(OrgArg),
    /// Show a template and its active version.
    Show(IdArg),
}

/// Flags of `chatctl template push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The template directory.
    pub dir: PathBuf,
    /// The organization (default: your only one).
    #[arg(long)]
    pub org: Option<String>,
    /// The version's name (default: generated).
    #[arg(long)]
    pub version_name: Option<String>,
    /// What changed.
    #[arg(long, default_value = "")]
    pub message: String,
    /// Do not make the new version active (the first version of a template always is).
    #[arg(long)]
    pub no_activate: bool,
}

/// An organization filter.
#[derive(Debug, Args)]
pub struct OrgArg {
    /// The organization (default: your only one).
    #[arg(long)]
    pub org: Option<String>,
}

/// An id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The id.
    pub id: String,
}

/// `chatctl workspace …`.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// List your workspaces.
    Ls(OrgArg),
    /// Start a workspace (a new start build).
    Start(IdArg),
    /// Stop a workspace (a new stop build).
    Stop(IdArg),
    /// Print the build logs of a workspace's latest build (`--follow` until it finishes).
    Logs(LogsArgs),
}

/// Flags of `chatctl workspace logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The workspace's id.
    pub id: String,
    /// Keep printing until the build finishes.
    #[arg(long)]
    pub follow: bool,
}

/// `chatctl admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Model configurations.
    #[command(subcommand)]
    Model(ModelCommand),
}

/// `chatctl admin user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users.
    Ls,
    /// Create a user in an organization.
    Create(CreateUserArgs),
}

/// Flags of `chatctl admin user create`.
#[derive(Debug, Args)]
pub struct CreateUserArgs {
    /// The username.
    pub username: String,
    /// Make the user an admin (default: member).
    #[arg(long)]
    pub admin: bool,
    /// The organization (default: your only one).
    #[arg(long)]
    pub org: Option<String>,
}

/// `chatctl admin token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token (printed once).
    Create(CreateTokenArgs),
    /// List API tokens (never their secrets).
    Ls(UserFilter),
    /// Revoke an API token.
    Revoke(IdArg),
}

/// Flags of `chatctl admin token create`.
#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    /// Whose token (default: yours).
    #[arg(long)]
    pub user: Option<String>,
    /// A name to recognise it by.
    #[arg(long, default_value = "chatctl")]
    pub name: String,
}

/// A user filter.
#[derive(Debug, Args)]
pub struct UserFilter {
    /// Whose tokens (default: yours).
    #[arg(long)]
    pub user: Option<String>,
}

/// `chatctl admin model …`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List model configurations.
    Ls(OrgArg),
    /// Add a model configuration (the organization's first one becomes its default).
    Create(CreateModelArgs),
}

/// Flags of `chatctl admin model create`.
#[derive(Debug, Args)]
pub struct CreateModelArgs {
    /// The provider's API: `anthropic`, `openai` or `openai-compat` (any OpenAI-compatible
    /// server; give `--base-url`).
    #[arg(long, value_parser = ["anthropic", "openai", "openai-compat"])]
    pub provider: String,
    /// The provider's model id, e.g. `claude-sonnet-4-5` or `gpt-4.1`.
    #[arg(long)]
    pub model: String,
    /// Where the API key comes from: `env:NAME` (the daemon's environment) or `file:PATH`. The
    /// key itself is never sent to or stored by chatd.
    #[arg(long, default_value = "")]
    pub api_key_ref: String,
    /// The provider's base URL (default: its public endpoint).
    #[arg(long, default_value = "")]
    pub base_url: String,
    /// The model's context window, in tokens.
    #[arg(long, default_value_t = 200_000)]
    pub context_limit: i64,
    /// Make it the organization's default.
    #[arg(long)]
    pub default: bool,
    /// The organization (default: your only one).
    #[arg(long)]
    pub org: Option<String>,
}
