//! One function per command: build the request, call, print the result.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chatproto::chatd::v1 as pb;

use crate::cli::{
    AdminCommand, ChatCommand, Cli, Command, LoginArgs, ModelCommand, TemplateCommand,
    TokenCommand, UserCommand, WorkspaceCommand,
};
use crate::client::Conn;
use crate::config::{self, Config};
use crate::error::CtlError;
use crate::{json, render};

/// The server `login` uses when none is given.
const DEFAULT_SERVER: &str = "http://127.0.0.1:7420";

/// Writes the completion script for `shell` to standard output.
fn completions(shell: clap_complete::Shell) -> Result<(), CtlError> {
    use clap::CommandFactory as _;
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "chatctl", &mut script);
    std::io::stdout()
        .lock()
        .write_all(&script)
        .map_err(CtlError::Output)
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    if let Command::Completions(args) = &cli.command {
        return completions(args.shell);
    }
    let config_path = cli.config.clone().unwrap_or_else(config::default_path);
    if let Command::Login(args) = &cli.command {
        return login(&cli, args, &config_path).await;
    }
    let saved = Config::load(&config_path)?;
    let server = cli
        .server
        .clone()
        .or(saved.server)
        .ok_or(CtlError::NotLoggedIn)?;
    let token = cli
        .token
        .clone()
        .or(saved.token)
        .ok_or(CtlError::NotLoggedIn)?;
    let ca_cert = cli.ca_cert.clone().or(saved.ca_cert);
    let conn = Conn::open(&server, &token, ca_cert.as_deref()).await?;
    let out = Out { json: cli.json };
    match cli.command {
        Command::Login(_) | Command::Completions(_) => Ok(()),
        Command::Whoami => whoami(&conn, out).await,
        Command::Chat(command) => chat(&conn, out, command).await,
        Command::Template(command) => template(&conn, out, command).await,
        Command::Workspace(command) => workspace(&conn, out, command).await,
        Command::Admin(command) => admin(&conn, out, command).await,
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// Prints `message` as JSON (`--json`) or as `text`.
    fn show<M: prost::Message + prost::Name>(
        self,
        message: &M,
        text: impl FnOnce() -> String,
    ) -> Result<(), CtlError> {
        if self.json {
            json::print(message)
        } else {
            let text = text();
            let mut stdout = std::io::stdout().lock();
            if text.is_empty() {
                return Ok(());
            }
            writeln!(stdout, "{text}").map_err(CtlError::Output)
        }
    }
}

async fn login(cli: &Cli, args: &LoginArgs, config_path: &Path) -> Result<(), CtlError> {
    let server = args
        .to
        .clone()
        .or_else(|| cli.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = match (&args.token_file, &cli.token) {
        (Some(file), _) => config::read_token_file(file)?,
        (None, Some(token)) => token.clone(),
        (None, None) => {
            let file = config::default_admin_token_file();
            if !file.exists() {
                return Err(CtlError::Usage(format!(
                    "no token given: pass --token-file FILE or --token TOKEN (no admin token at {})",
                    file.display()
                )));
            }
            config::read_token_file(&file)?
        }
    };
    let conn = Conn::open(&server, &token, cli.ca_cert.as_deref()).await?;
    // Check the token before saving it.
    let me = conn
        .admin()
        .who_am_i(conn.req(pb::WhoAmIRequest {}))
        .await?
        .into_inner();
    Config {
        server: Some(server.clone()),
        token: Some(token),
        ca_cert: cli.ca_cert.clone(),
    }
    .save(config_path)?;
    let out = Out { json: cli.json };
    out.show(&me, || {
        format!(
            "Logged in to {server} as {}; saved in {}",
            me.user.as_ref().map_or("?", |u| u.username.as_str()),
            config_path.display()
        )
    })
}

async fn whoami(conn: &Conn, out: Out) -> Result<(), CtlError> {
    let me = conn
        .admin()
        .who_am_i(conn.req(pb::WhoAmIRequest {}))
        .await?
        .into_inner();
    out.show(&me, || {
        let user = me.user.clone().unwrap_or_default();
        let role = pb::UserRole::try_from(user.role).map_or_else(
            |_| "?".to_owned(),
            |r| render::wire_name(r.as_str_name(), "USER_ROLE_"),
        );
        let orgs: Vec<String> = me
            .organizations
            .iter()
            .map(|o| format!("{} ({})", o.name, o.id))
            .collect();
        format!(
            "{} ({role}, {})\norganizations: {}",
            user.username,
            user.id,
            orgs.join(", ")
        )
    })
}

/// The organization to use: the one given, else the caller's only one.
async fn organization(conn: &Conn, given: Option<&str>) -> Result<String, CtlError> {
    if let Some(org) = given {
        return Ok(org.to_owned());
    }
    let me = conn
        .admin()
        .who_am_i(conn.req(pb::WhoAmIRequest {}))
        .await?
        .into_inner();
    match me.organizations.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => Err(CtlError::Usage(
            "you belong to no organization; ask an admin to add you to one".into(),
        )),
        many => Err(CtlError::Usage(format!(
            "you belong to {} organizations; choose one with --org ({})",
            many.len(),
            many.iter()
                .map(|o| format!("{} = {}", o.name, o.id))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn text_input(words: &[String]) -> Result<Vec<pb::ChatInputPart>, CtlError> {
    let text = words.join(" ");
    if text.trim().is_empty() {
        return Err(CtlError::Usage("the message is empty".into()));
    }
    Ok(vec![pb::ChatInputPart {
        part: Some(pb::chat_input_part::Part::Text(pb::TextPart { text })),
    }])
}

async fn chat(conn: &Conn, out: Out, command: ChatCommand) -> Result<(), CtlError> {
    let mut chats = conn.chats();
    match command {
        ChatCommand::New(args) => {
            let chat = chats
                .create_chat(conn.req(pb::CreateChatRequest {
                    organization_id: args.org.unwrap_or_default(),
                    content: text_input(&args.message)?,
                    model_config_id: args.model,
                    title: args.title,
                    workspace_id: args.workspace,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&chat, || chat.id.clone())?;
            if args.attach {
                // The whole new chat: the turn may have committed steps before the stream
                // opens, and they belong to what the user asked to see.
                attach(conn, out, &chat.id, false, None).await?;
            }
            Ok(())
        }
        ChatCommand::Send(args) => {
            let busy = if args.interrupt {
                pb::BusyBehavior::Interrupt
            } else {
                pb::BusyBehavior::Queue
            };
            let sent = chats
                .send_message(conn.req(pb::SendMessageRequest {
                    chat_id: args.chat_id.clone(),
                    content: text_input(&args.message)?,
                    busy_behavior: busy.into(),
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&sent, || {
                if sent.queued {
                    "queued behind the current turn".to_owned()
                } else {
                    String::new()
                }
            })?;
            if args.attach {
                // Everything after the message sent (steps may commit before the stream opens);
                // a queued message enters history later, so then only what is new.
                let after = sent.message.as_ref().map_or(i64::MAX, |m| m.id);
                attach(conn, out, &args.chat_id, false, Some(after)).await?;
            }
            Ok(())
        }
        ChatCommand::Ls(args) => {
            let listed = chats
                .list_chats(conn.req(pb::ListChatsRequest {
                    page_size: args.limit,
                    archived: Some(args.archived),
                    title_query: args.title.unwrap_or_default(),
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&listed, || {
                listed
                    .chats
                    .iter()
                    .map(render::chat_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ChatCommand::Show(args) => {
            let chat = chats
                .get_chat(conn.req(pb::GetChatRequest {
                    chat_id: args.chat_id.clone(),
                }))
                .await?
                .into_inner();
            let history = chats
                .list_messages(conn.req(pb::ListMessagesRequest {
                    chat_id: args.chat_id,
                    page_size: 200,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            if out.json {
                json::print(&chat)?;
                return json::print(&history);
            }
            let mut text = Vec::new();
            let write = |text: &mut Vec<u8>| -> std::io::Result<()> {
                writeln!(text, "{}", render::chat_line(&chat))?;
                if history.has_more {
                    writeln!(text, "(older messages not shown)")?;
                }
                for m in &history.messages {
                    render::message(text, m)?;
                }
                if !history.queued_messages.is_empty() {
                    writeln!(text, "· {} queued", history.queued_messages.len())?;
                }
                Ok(())
            };
            write(&mut text).map_err(CtlError::Output)?;
            std::io::stdout()
                .lock()
                .write_all(&text)
                .map_err(CtlError::Output)
        }
        ChatCommand::Attach(args) => attach(conn, out, &args.chat_id, args.follow, None).await,
        ChatCommand::Interrupt(args) => {
            let chat = chats
                .interrupt_chat(conn.req(pb::InterruptChatRequest {
                    chat_id: args.chat_id,
                }))
                .await?
                .into_inner();
            out.show(&chat, || render::chat_line(&chat))
        }
        ChatCommand::Archive(args) => {
            let chat = chats
                .update_chat(conn.req(pb::UpdateChatRequest {
                    chat_id: args.chat_id,
                    archived: Some(!args.undo),
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&chat, || render::chat_line(&chat))
        }
    }
}

/// Follows a chat's stream. Without `follow` it returns once the chat is idle after having
/// been seen busy, or right after the initial state when it is idle from the start.
/// `after_id` skips history already shown (`i64::MAX`: show only what is new).
async fn attach(
    conn: &Conn,
    out: Out,
    chat_id: &str,
    follow: bool,
    after_id: Option<i64>,
) -> Result<(), CtlError> {
    let mut stream = conn
        .chats()
        .stream_chat(conn.req(pb::StreamChatRequest {
            chat_id: chat_id.to_owned(),
            after_id,
        }))
        .await?
        .into_inner();
    // With --json the events are printed as they are; the view then only tracks the state.
    let text: Box<dyn std::io::Write> = if out.json {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::stdout())
    };
    let mut view = render::Attach::new(text);
    let mut first = true;
    while let Some(response) = stream.message().await? {
        for event in &response.events {
            if out.json {
                json::print(event)?;
            }
            view.event(event).map_err(CtlError::Output)?;
        }
        // The first response is the initial state: a chat idle then has nothing to follow.
        if !follow && view.idle() && (first || !response.events.is_empty()) {
            break;
        }
        first = false;
    }
    view.finish().map_err(CtlError::Output)?;
    match view.error {
        Some(message) if view.status == Some(pb::ChatStatus::Error) => {
            Err(CtlError::ChatFailed(message))
        }
        _ => Ok(()),
    }
}

/// Reads a template directory the way the server expects it: every file but hidden entries,
/// with `/`-separated relative paths and Unix modes; the server reads `template.toml` from it.
fn template_files(dir: &Path) -> Result<Vec<pb::TemplateFile>, CtlError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<pb::TemplateFile>) -> Result<(), CtlError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CtlError::File { path, source }
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        entries.sort();
        for path in entries {
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(io(&path))?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else if meta.is_file() {
                let relative = path.strip_prefix(root).map_err(|_| {
                    CtlError::Usage(format!("{} is outside the template", path.display()))
                })?;
                let parts: Vec<&str> = relative
                    .components()
                    .filter_map(|c| c.as_os_str().to_str())
                    .collect();
                out.push(pb::TemplateFile {
                    path: parts.join("/"),
                    content: std::fs::read(&path).map_err(io(&path))?,
                    mode: meta.permissions().mode() & 0o777,
                });
            }
        }
        Ok(())
    }
    if !dir.join("template.toml").is_file() {
        return Err(CtlError::Usage(format!(
            "{} is not a template directory: it has no template.toml",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    Ok(files)
}

async fn template(conn: &Conn, out: Out, command: TemplateCommand) -> Result<(), CtlError> {
    let mut templates = conn.templates();
    match command {
        TemplateCommand::Push(args) => {
            let files = template_files(&args.dir)?;
            let organization_id = organization(conn, args.org.as_deref()).await?;
            let pushed = templates
                .push_template_version(conn.req(pb::PushTemplateVersionRequest {
                    organization_id,
                    manifest: None,
                    files,
                    version_name: args.version_name.unwrap_or_default(),
                    message: args.message,
                    activate: !args.no_activate,
                }))
                .await?
                .into_inner();
            out.show(&pushed, || {
                let template = pushed.template.clone().unwrap_or_default();
                let version = pushed.version.clone().unwrap_or_default();
                format!(
                    "{} template {} ({}), version {} ({})",
                    if pushed.template_created {
                        "created"
                    } else {
                        "updated"
                    },
                    template.name,
                    template.id,
                    version.name,
                    version.id
                )
            })
        }
        TemplateCommand::Ls(args) => {
            let organization_id = organization(conn, args.org.as_deref()).await?;
            let listed = templates
                .list_templates(conn.req(pb::ListTemplatesRequest {
                    organization_id,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&listed, || {
                listed
                    .templates
                    .iter()
                    .map(|t| format!("{}  {}  {}", t.id, t.name, t.description))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        TemplateCommand::Show(args) => {
            let shown = templates
                .get_template(conn.req(pb::GetTemplateRequest {
                    template_id: args.id,
                }))
                .await?
                .into_inner();
            out.show(&shown, || {
                let t = shown.template.clone().unwrap_or_default();
                let active = shown
                    .active_version
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |v| format!("{} ({})", v.name, v.id));
                format!(
                    "{} ({})\n{}\nactive version: {active}",
                    t.name, t.id, t.description
                )
            })
        }
    }
}

fn workspace_line(w: &pb::Workspace) -> String {
    let build = w.latest_build.as_ref();
    let transition = build.map_or_else(
        || "-".to_owned(),
        |b| {
            pb::WorkspaceTransition::try_from(b.transition).map_or_else(
                |_| "?".to_owned(),
                |t| render::wire_name(t.as_str_name(), "WORKSPACE_TRANSITION_"),
            )
        },
    );
    let job = build.and_then(|b| b.job.as_ref()).map_or_else(
        || "-".to_owned(),
        |j| {
            pb::ProvisionerJobStatus::try_from(j.status).map_or_else(
                |_| "?".to_owned(),
                |s| render::wire_name(s.as_str_name(), "PROVISIONER_JOB_STATUS_"),
            )
        },
    );
    format!(
        "{}  {}  {}  {transition} {job}",
        w.id, w.name, w.template_name
    )
}

fn build_line(b: &pb::WorkspaceBuild) -> String {
    format!(
        "build {} ({}) of workspace {}",
        b.build_number, b.id, b.workspace_id
    )
}

async fn workspace(conn: &Conn, out: Out, command: WorkspaceCommand) -> Result<(), CtlError> {
    let mut workspaces = conn.workspaces();
    match command {
        WorkspaceCommand::Ls(args) => {
            let listed = workspaces
                .list_workspaces(conn.req(pb::ListWorkspacesRequest {
                    organization_id: args.org.unwrap_or_default(),
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&listed, || {
                listed
                    .workspaces
                    .iter()
                    .map(workspace_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        WorkspaceCommand::Start(args) => {
            let build = workspaces
                .start_workspace(conn.req(pb::StartWorkspaceRequest {
                    workspace_id: args.id,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&build, || build_line(&build))
        }
        WorkspaceCommand::Stop(args) => {
            let build = workspaces
                .stop_workspace(conn.req(pb::StopWorkspaceRequest {
                    workspace_id: args.id,
                }))
                .await?
                .into_inner();
            out.show(&build, || build_line(&build))
        }
        WorkspaceCommand::Logs(args) => {
            let workspace = workspaces
                .get_workspace(conn.req(pb::GetWorkspaceRequest {
                    workspace_id: args.id.clone(),
                }))
                .await?
                .into_inner();
            let build = workspace.latest_build.ok_or_else(|| {
                CtlError::Usage(format!("workspace {} has no build yet", args.id))
            })?;
            let mut logs = workspaces
                .stream_build_logs(conn.req(pb::StreamBuildLogsRequest {
                    build_id: build.id,
                    after_id: 0,
                    follow: args.follow,
                }))
                .await?
                .into_inner();
            while let Some(batch) = logs.message().await? {
                out.show(&batch, || {
                    batch
                        .logs
                        .iter()
                        .map(|l| format!("[{}] {}", l.stage, l.output))
                        .collect::<Vec<_>>()
                        .join("\n")
                })?;
            }
            Ok(())
        }
    }
}

async fn admin(conn: &Conn, out: Out, command: AdminCommand) -> Result<(), CtlError> {
    let mut admin = conn.admin();
    match command {
        AdminCommand::User(UserCommand::Ls) => {
            let listed = admin
                .list_users(conn.req(pb::ListUsersRequest::default()))
                .await?
                .into_inner();
            out.show(&listed, || {
                listed
                    .users
                    .iter()
                    .map(|u| {
                        let role = pb::UserRole::try_from(u.role).map_or_else(
                            |_| "?".to_owned(),
                            |r| render::wire_name(r.as_str_name(), "USER_ROLE_"),
                        );
                        format!("{}  {}  {role}", u.id, u.username)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AdminCommand::User(UserCommand::Create(args)) => {
            let organization_id = organization(conn, args.org.as_deref()).await?;
            let role = if args.admin {
                pb::UserRole::Admin
            } else {
                pb::UserRole::Member
            };
            let user = admin
                .create_user(conn.req(pb::CreateUserRequest {
                    username: args.username,
                    role: role.into(),
                    organization_ids: vec![organization_id],
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&user, || {
                format!("created user {} ({})", user.username, user.id)
            })
        }
        AdminCommand::Token(TokenCommand::Create(args)) => {
            let created = admin
                .create_api_token(conn.req(pb::CreateApiTokenRequest {
                    user_id: args.user.unwrap_or_default(),
                    name: args.name,
                    lifetime: None,
                }))
                .await?
                .into_inner();
            out.show(&created, || created.token.clone())
        }
        AdminCommand::Token(TokenCommand::Ls(args)) => {
            let listed = admin
                .list_api_tokens(conn.req(pb::ListApiTokensRequest {
                    user_id: args.user.unwrap_or_default(),
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&listed, || {
                listed
                    .api_tokens
                    .iter()
                    .map(|t| {
                        let revoked = if t.revoked_at.is_some() {
                            "  revoked"
                        } else {
                            ""
                        };
                        format!("{}  {}  chatd_{}_…{revoked}", t.id, t.name, t.prefix)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AdminCommand::Token(TokenCommand::Revoke(args)) => {
            let revoked = admin
                .revoke_api_token(conn.req(pb::RevokeApiTokenRequest {
                    api_token_id: args.id.clone(),
                }))
                .await?
                .into_inner();
            out.show(&revoked, || format!("revoked {}", args.id))
        }
        AdminCommand::Model(ModelCommand::Create(args)) => {
            let organization_id = organization(conn, args.org.as_deref()).await?;
            let provider = match args.provider.as_str() {
                "anthropic" => pb::ProviderKind::Anthropic,
                "openai" => pb::ProviderKind::Openai,
                _ => pb::ProviderKind::OpenaiCompat,
            };
            let created = admin
                .create_model_config(conn.req(pb::CreateModelConfigRequest {
                    organization_id,
                    provider: provider.into(),
                    model: args.model,
                    base_url: args.base_url,
                    api_key_ref: args.api_key_ref,
                    context_limit: args.context_limit,
                    is_default: args.default,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&created, || {
                format!(
                    "created model configuration {} ({})",
                    created.model, created.id
                )
            })
        }
        AdminCommand::Model(ModelCommand::Ls(args)) => {
            let listed = admin
                .list_model_configs(conn.req(pb::ListModelConfigsRequest {
                    organization_id: organization(conn, args.org.as_deref()).await?,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.show(&listed, || {
                listed
                    .model_configs
                    .iter()
                    .map(|m| {
                        let default = if m.is_default { "  (default)" } else { "" };
                        format!("{}  {}{default}", m.id, m.model)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}
