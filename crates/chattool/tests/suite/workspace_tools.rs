//! The process and file tools against a real workspace agent on loopback (the wsagent.v1 service
//! over a temporary directory), through the same client the engine dials.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatproto::wsagent::v1 as pb;
use chattest::proxy::{Mode, Proxy};
use chattool::conn::{DEFAULT_AGENT_CALL_DEADLINE, Deadlined, WorkspaceConn};
use chattool::context::{NO_RESOLVER, NO_WORKSPACE, WorkspaceResolver};
use chattool::{
    ChatScope, Tool, ToolContext, ToolResult, ToolSettings, args, files, lifecycle, process,
};
use serde_json::Value;

const SECRET: &str = "tool-tests";

struct Fixed(Option<Arc<dyn WorkspaceConn>>);

#[async_trait]
impl WorkspaceResolver for Fixed {
    async fn connect(&self, _chat_id: uuid::Uuid) -> Result<Arc<dyn WorkspaceConn>, String> {
        self.0.clone().ok_or_else(|| NO_WORKSPACE.to_owned())
    }
}

struct Workspace {
    root: PathBuf,
    conn: Arc<dyn WorkspaceConn>,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn workspace() -> Workspace {
    workspace_via(
        |agent| async move { (agent, None) },
        DEFAULT_AGENT_CALL_DEADLINE,
    )
    .await
    .0
}

/// A workspace whose agent chatd reaches at the address `route` makes of the agent's (a proxy,
/// which it returns), with `deadline` on every agent call.
async fn workspace_via<F, Fut>(route: F, deadline: Duration) -> (Workspace, Option<Proxy>)
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = (std::net::SocketAddr, Option<Proxy>)>,
{
    let root = std::env::temp_dir().join(format!(
        "chattool-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&root).unwrap();
    let root = std::fs::canonicalize(root).unwrap();
    let mut config = wsagent::process::ProcessConfig::new(root.clone());
    config.shell = "/bin/sh".into();
    let service = wsagent::server::AgentService::new(
        wsagent::process::ProcessManager::new(config),
        wsagent::files::FileRoots {
            roots: vec![root.clone()],
            confine: true,
        },
        root.clone(),
        "agent".into(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, proxy) = route(listener.local_addr().unwrap()).await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server(SECRET.into()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let conn = wsagent::client::connect_agent(
        &format!("http://{addr}"),
        SECRET,
        Duration::from_secs(5),
        None,
    )
    .await
    .unwrap();
    let ws = Workspace {
        root,
        conn: Arc::new(Deadlined::new(conn, deadline)),
    };
    (ws, proxy)
}

fn scope() -> ChatScope {
    ChatScope {
        id: uuid::Uuid::from_u128(1),
        owner_id: uuid::Uuid::from_u128(2),
        organization_id: uuid::Uuid::from_u128(3),
    }
}

fn ctx(ws: &Workspace, call: &str) -> ToolContext {
    let mut c = ToolContext::new(scope(), call);
    c.resolver = Some(Arc::new(Fixed(Some(ws.conn.clone()))));
    c
}

async fn json(tool: &dyn Tool, ctx: &ToolContext, args: Value) -> Value {
    let result = tool.call(ctx, &args.to_string()).await;
    assert!(!result.is_error, "{}", result.content);
    result.as_json().unwrap()
}

async fn text(tool: &dyn Tool, ctx: &ToolContext, args: &str) -> String {
    let result: ToolResult = tool.call(ctx, args).await;
    assert!(
        result.is_error,
        "expected a text error, got {}",
        result.content
    );
    result.content
}

#[tokio::test]
async fn every_tool_has_a_schema_both_providers_accept() {
    let tools = chattool::all_tools();
    assert_eq!(tools.len(), 12);
    let mut names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    for tool in &tools {
        args::check_schema(&tool.parameters()).unwrap_or_else(|e| panic!("{}: {e}", tool.name()));
        assert!(!tool.description().is_empty());
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), tools.len(), "tool names are unique");
}

#[tokio::test]
async fn execute_runs_a_foreground_command_and_reports_exit_and_output() {
    let ws = workspace().await;
    let mut c = ctx(&ws, "call-1");
    let kicks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = kicks.clone();
    c.on_progress = Some(Arc::new(move || {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let r = json(
        &process::Execute,
        &c,
        serde_json::json!({"command": "echo hi > f && cat f"}),
    )
    .await;
    assert!(
        kicks.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "each round-trip kicks the idle watchdog"
    );
    assert_eq!(r["success"], true);
    assert_eq!(r["output"], "hi\n");
    assert_eq!(r["exit_code"], 0);
    assert!(r["wall_duration_ms"].is_u64());
    assert!(r.get("note").is_none());
    assert_eq!(std::fs::read_to_string(ws.root.join("f")).unwrap(), "hi\n");

    let r = json(
        &process::Execute,
        &ctx(&ws, "call-2"),
        serde_json::json!({"command": "cat f; exit 3"}),
    )
    .await;
    assert_eq!(r["success"], false);
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["note"], process::READ_FILE_NOTE);
}

#[tokio::test]
async fn a_foreground_timeout_leaves_the_process_running_and_process_output_gets_the_real_result() {
    let ws = workspace().await;
    let r = json(
        &process::Execute,
        &ctx(&ws, "call-1"),
        serde_json::json!({"command": "echo started; sleep 1; echo done", "timeout": "300ms"}),
    )
    .await;
    assert_eq!(r["success"], false);
    assert_eq!(r["exit_code"], -1);
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["still_running"], true);
    assert_eq!(r["error"], "command timed out after 300ms");
    let id = r["background_process_id"].as_str().unwrap().to_owned();
    assert_eq!(
        r["note"],
        format!(
            "The command is still running as process {id}. Use process_output to check on it or process_signal to stop it."
        )
    );

    let c = ctx(&ws, "call-2");
    let out = json(
        &process::ProcessOutput,
        &c,
        serde_json::json!({"process_id": id, "wait_timeout": "0s"}),
    )
    .await;
    assert_eq!(out["success"], true);
    assert_eq!(out["note"], "process is still running");
    let out = json(
        &process::ProcessOutput,
        &c,
        serde_json::json!({"process_id": id, "wait_timeout": "10s"}),
    )
    .await;
    assert_eq!(out["success"], true);
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["output"], "started\ndone\n");
}

#[tokio::test]
async fn background_runs_list_and_signal() {
    let ws = workspace().await;
    let r = json(
        &process::Execute,
        &ctx(&ws, "bg-1"),
        serde_json::json!({"command": "sleep 30", "run_in_background": true}),
    )
    .await;
    assert_eq!(r["success"], true);
    let explicit = r["background_process_id"].as_str().unwrap().to_owned();
    // A trailing `&` is promoted to a background run instead of being handed to the shell.
    let r = json(
        &process::Execute,
        &ctx(&ws, "bg-2"),
        serde_json::json!({"command": "sleep 30 &"}),
    )
    .await;
    let promoted = r["background_process_id"].as_str().unwrap().to_owned();

    let c = ctx(&ws, "list");
    let list = json(&process::ProcessList, &c, serde_json::json!({})).await;
    let ids: Vec<&str> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&explicit.as_str()) && ids.contains(&promoted.as_str()),
        "{list}"
    );
    let promoted_entry = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == promoted.as_str())
        .unwrap();
    assert_eq!(promoted_entry["command"], "sleep 30");
    assert_eq!(promoted_entry["running"], true);

    for id in [&explicit, &promoted] {
        let r = json(
            &process::ProcessSignal,
            &c,
            serde_json::json!({"process_id": id, "signal": "kill"}),
        )
        .await;
        assert_eq!(
            r["message"],
            format!("signal \"kill\" sent to process {id}")
        );
        let out = json(
            &process::ProcessOutput,
            &c,
            serde_json::json!({"process_id": id, "wait_timeout": "5s"}),
        )
        .await;
        assert_eq!(out["success"], false, "{out}");
        assert_ne!(out["exit_code"], 0);
    }
    let r = json(
        &process::ProcessSignal,
        &c,
        serde_json::json!({"process_id": "p999", "signal": "terminate"}),
    )
    .await;
    assert_eq!(r["success"], false);
    assert!(
        r["error"].as_str().unwrap().starts_with("signal process: "),
        "{r}"
    );
}

#[tokio::test]
async fn a_replayed_execute_with_the_same_call_id_does_not_run_twice() {
    let ws = workspace().await;
    let c = ctx(&ws, "call-once");
    let args = serde_json::json!({"command": "echo x >> counter; wc -l < counter"});
    let first = json(&process::Execute, &c, args.clone()).await;
    let second = json(&process::Execute, &c, args).await;
    assert_eq!(first["output"], "1\n");
    assert_eq!(second["output"], "1\n");
    assert_eq!(
        std::fs::read_to_string(ws.root.join("counter")).unwrap(),
        "x\n"
    );
}

#[tokio::test]
async fn an_agent_cut_off_by_the_network_mid_command_runs_it_once_and_its_output_is_recovered() {
    let (ws, proxy) = workspace_via(
        |agent| async move {
            let proxy = Proxy::start(agent).await.unwrap();
            (proxy.addr(), Some(proxy))
        },
        Duration::from_secs(1),
    )
    .await;
    let proxy = proxy.unwrap();
    // A partition that swallows every byte (the wait ends at the command's timeout, the snapshot
    // at the call deadline), then one whose peer answers with resets (both fail at once).
    let cases = [
        (Mode::Blackhole, "did not answer within 1 s"),
        (Mode::Reset, "use process_output with ID"),
    ];
    for (n, (mode, says)) in cases.into_iter().enumerate() {
        let ledger = ws.root.join(format!("ran-{n}"));
        let command = format!("echo run >> ran-{n}; sleep 2; echo finished-{n}");
        let c = ctx(&ws, &format!("cut-{n}"));
        let call = tokio::spawn(async move {
            process::Execute
                .call(
                    &c,
                    &serde_json::json!({ "command": command, "timeout": "3s" }).to_string(),
                )
                .await
        });
        while !ledger.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy.set_mode(mode);
        let cut = call.await.unwrap().as_json().unwrap();
        let id = cut["background_process_id"].as_str().unwrap().to_owned();
        assert_eq!(cut["exit_code"], -1, "{mode:?}: {cut}");
        assert!(
            !id.is_empty(),
            "{mode:?}: the model gets the process id: {cut}"
        );
        assert!(
            cut["error"].as_str().unwrap().contains(says),
            "{mode:?}: {cut}"
        );

        // The network comes back: the stalled connections are reset, new ones pass.
        proxy.set_mode(Mode::Pass);
        proxy.end_partition();
        let done = json(
            &process::ProcessOutput,
            &ctx(&ws, &format!("output-{n}")),
            serde_json::json!({ "process_id": id, "wait_timeout": "10s" }),
        )
        .await;
        assert_eq!(done["exit_code"], 0, "{mode:?}: {done}");
        assert_eq!(done["output"], format!("finished-{n}\n"), "{mode:?}");
        assert_eq!(
            std::fs::read_to_string(&ledger).unwrap(),
            "run\n",
            "{mode:?}: the command ran once"
        );
    }
}

#[tokio::test]
async fn bad_arguments_are_text_errors_that_say_what_is_wrong() {
    let ws = workspace().await;
    let c = ctx(&ws, "call");
    assert_eq!(
        text(&process::Execute, &c, r#"{"command": "  "}"#).await,
        "command is required"
    );
    assert_eq!(
        text(
            &process::Execute,
            &c,
            r#"{"command": "ls", "timeout": "soon"}"#
        )
        .await,
        "invalid timeout \"soon\": time: invalid duration \"soon\""
    );
    assert_eq!(
        text(
            &process::Execute,
            &c,
            r#"{"command": "ls", "timeout": "-1s"}"#
        )
        .await,
        "timeout must be positive"
    );
    let wrong = text(&process::Execute, &c, r#"{"command": 5}"#).await;
    assert!(
        wrong.starts_with(
            "invalid arguments for execute: invalid type: integer `5`, expected a string"
        ),
        "{wrong}"
    );
    assert_eq!(
        text(&process::ProcessOutput, &c, "{}").await,
        "process_id is required"
    );
    assert_eq!(
        text(
            &process::ProcessOutput,
            &c,
            r#"{"process_id": "p1", "wait_timeout": "x"}"#
        )
        .await,
        "invalid wait_timeout \"x\": time: invalid duration \"x\""
    );
    assert_eq!(
        text(
            &process::ProcessSignal,
            &c,
            r#"{"process_id": "p1", "signal": "hup"}"#
        )
        .await,
        "signal must be \"terminate\" or \"kill\""
    );
    assert_eq!(
        text(&files::ReadFile, &c, r#"{"path": ""}"#).await,
        "path is required"
    );
    assert_eq!(
        text(&files::WriteFile, &c, r#"{"content": "x"}"#).await,
        "path is required"
    );
}

#[tokio::test]
async fn without_a_workspace_or_a_resolver_the_tools_say_so() {
    let mut c = ToolContext::new(scope(), "call");
    c.resolver = Some(Arc::new(Fixed(None)));
    assert_eq!(
        text(&process::Execute, &c, r#"{"command": "ls"}"#).await,
        NO_WORKSPACE
    );
    assert_eq!(
        text(&files::ReadFile, &c, r#"{"path": "a"}"#).await,
        NO_WORKSPACE
    );
    c.resolver = None;
    assert_eq!(text(&process::ProcessList, &c, "{}").await, NO_RESOLVER);
}

#[tokio::test]
async fn output_is_capped() {
    let ws = workspace().await;
    let mut c = ctx(&ws, "cap");
    c.settings = Arc::new(ToolSettings {
        output_cap: 10,
        ..ToolSettings::default()
    });
    let r = json(
        &process::Execute,
        &c,
        serde_json::json!({"command": "printf 'abcdefghijklmnop'"}),
    )
    .await;
    assert_eq!(r["output"], "abcdefghij");
}

#[tokio::test]
async fn files_are_written_read_with_line_numbers_and_edited_all_or_nothing() {
    let ws = workspace().await;
    let c = ctx(&ws, "w1");
    let r = json(
        &files::WriteFile,
        &c,
        serde_json::json!({"path": "src/main.txt", "content": "alpha\nbeta\ngamma\n"}),
    )
    .await;
    assert_eq!(r, serde_json::json!({"ok": true}));
    let r = json(
        &files::ReadFile,
        &c,
        serde_json::json!({"path": "src/main.txt", "offset": 2, "limit": 1}),
    )
    .await;
    assert_eq!(r["content"], "     2\tbeta\n");
    assert_eq!(
        (
            r["lines_read"].as_i64(),
            r["total_lines"].as_i64(),
            r["file_size"].as_i64()
        ),
        (Some(1), Some(3), Some(17))
    );

    let r = json(
        &files::EditFiles,
        &ctx(&ws, "e1"),
        serde_json::json!({"edits": [{"path": "src/main.txt", "old_text": "beta", "new_text": "BETA"}]}),
    )
    .await;
    assert_eq!(r["ok"], true);
    assert!(
        r["files"][0]["diff"].as_str().unwrap().contains("+BETA"),
        "{r}"
    );

    // A batch with one failing edit changes nothing.
    let err = text(
        &files::EditFiles,
        &ctx(&ws, "e2"),
        &serde_json::json!({"edits": [
            {"path": "src/main.txt", "old_text": "alpha", "new_text": "ALPHA"},
            {"path": "src/main.txt", "old_text": "missing", "new_text": "x"}
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(
        err,
        "edits[1]: old_text not found in src/main.txt\nNo edits were applied."
    );
    assert_eq!(
        std::fs::read_to_string(ws.root.join("src/main.txt")).unwrap(),
        "alpha\nBETA\ngamma\n"
    );

    // Edits encoded as a JSON string are accepted.
    let encoded =
        serde_json::json!([{"path": "src/main.txt", "old_text": "gamma", "new_text": "GAMMA"}])
            .to_string();
    let r = json(
        &files::EditFiles,
        &ctx(&ws, "e3"),
        serde_json::json!({"edits": encoded}),
    )
    .await;
    assert_eq!(r["ok"], true);
}

#[tokio::test]
async fn edit_files_argument_errors_end_with_no_edits_applied() {
    let ws = workspace().await;
    let c = ctx(&ws, "e");
    assert_eq!(
        text(&files::EditFiles, &c, r#"{"edits": []}"#).await,
        "Add at least one edit to edits\nNo edits were applied."
    );
    assert_eq!(
        text(
            &files::EditFiles,
            &c,
            r#"{"edits": [{"path": "a", "old_text": "x", "new_text": "y"}, {"old_text": "x"}]}"#
        )
        .await,
        "edits[1].path is required\nNo edits were applied."
    );
    assert_eq!(
        text(&files::EditFiles, &c, r#"{"files": [{"path": "a"}]}"#).await,
        "the \"files\" argument is no longer supported; pass \"edits\": [{\"path\", \"old_text\", \"new_text\"}]\nNo edits were applied."
    );
    std::fs::write(ws.root.join("twice.txt"), "x\nx\n").unwrap();
    assert_eq!(
        text(
            &files::EditFiles,
            &c,
            r#"{"edits": [{"path": "twice.txt", "old_text": "x", "new_text": "y"}]}"#
        )
        .await,
        "edits[0]: old_text matches 2 locations in twice.txt; add more context or set replace_all\nNo edits were applied."
    );
}

#[tokio::test]
async fn file_tools_refuse_paths_that_leave_the_workspace() {
    let ws = workspace().await;
    let c = ctx(&ws, "escape");
    let root = ws.root.display().to_string();
    let expected = format!("path \"../outside.txt\" is outside the workspace root \"{root}\"");
    assert_eq!(
        text(&files::ReadFile, &c, r#"{"path": "../outside.txt"}"#).await,
        expected
    );
    assert_eq!(
        text(
            &files::WriteFile,
            &c,
            r#"{"path": "../outside.txt", "content": "x"}"#
        )
        .await,
        expected
    );
    assert_eq!(
        text(
            &files::EditFiles,
            &c,
            r#"{"edits": [{"path": "../outside.txt", "old_text": "a", "new_text": "b"}]}"#
        )
        .await,
        format!("{expected}\nNo edits were applied.")
    );
    assert!(!ws.root.parent().unwrap().join("outside.txt").exists());
}

/// A connection whose answers the test scripts: blocking output reads fail (a transport error),
/// snapshots return `snapshot`; every file call is counted.
struct Scripted {
    snapshot: Result<chatproto::wsagent::v1::ProcessOutputResponse, tonic::Status>,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl WorkspaceConn for Scripted {
    async fn start_process(
        &self,
        _r: pb::StartProcessRequest,
    ) -> Result<pb::StartProcessResponse, tonic::Status> {
        Ok(pb::StartProcessResponse {
            process_id: "p-1".into(),
            ..Default::default()
        })
    }
    async fn process_output(
        &self,
        r: pb::ProcessOutputRequest,
    ) -> Result<pb::ProcessOutputResponse, tonic::Status> {
        let waits = r.wait_timeout.is_some_and(|d| d.seconds > 0 || d.nanos > 0);
        if waits {
            return Err(tonic::Status::unavailable("connection reset by peer"));
        }
        self.snapshot.clone()
    }
    async fn list_processes(
        &self,
        _r: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse, tonic::Status> {
        Ok(pb::ListProcessesResponse::default())
    }
    async fn signal_process(&self, _r: pb::SignalProcessRequest) -> Result<(), tonic::Status> {
        Ok(())
    }
    async fn read_file(
        &self,
        _r: pb::ReadFileRequest,
    ) -> Result<pb::ReadFileResponse, tonic::Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(pb::ReadFileResponse::default())
    }
    async fn write_file(&self, _r: pb::WriteFileRequest) -> Result<(), tonic::Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    async fn edit_files(
        &self,
        _r: pb::EditFilesRequest,
    ) -> Result<pb::EditFilesResponse, tonic::Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(pb::EditFilesResponse::default())
    }
    async fn cancel(&self, _r: pb::CancelRequest) -> Result<pb::CancelResponse, tonic::Status> {
        Ok(pb::CancelResponse::default())
    }
}

fn scripted_ctx(
    snapshot: Result<pb::ProcessOutputResponse, tonic::Status>,
) -> (ToolContext, Arc<chattool::conn::Rooted<Arc<Scripted>>>) {
    let conn = Arc::new(chattool::conn::Rooted {
        conn: Arc::new(Scripted {
            snapshot,
            calls: Default::default(),
        }),
        working_directory: "/home/dev/project".into(),
    });
    let mut c = ToolContext::new(scope(), "scripted");
    c.resolver = Some(Arc::new(Fixed(Some(conn.clone()))));
    (c, conn)
}

#[tokio::test]
async fn a_failed_blocking_wait_falls_back_to_a_snapshot_of_the_exited_process() {
    let (c, _) = scripted_ctx(Ok(pb::ProcessOutputResponse {
        running: false,
        exit_code: Some(3),
        output: "done\n".into(),
        ..Default::default()
    }));
    let r = json(
        &process::Execute,
        &c,
        serde_json::json!({"command": "make"}),
    )
    .await;
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["output"], "done\n");
    assert_eq!(r["success"], false);
    assert!(r.get("background_process_id").is_none(), "{r}");
}

#[tokio::test]
async fn a_failed_blocking_wait_with_a_running_snapshot_says_to_check_later() {
    let (c, _) = scripted_ctx(Ok(pb::ProcessOutputResponse {
        running: true,
        output: "partial".into(),
        ..Default::default()
    }));
    let r = json(
        &process::Execute,
        &c,
        serde_json::json!({"command": "make"}),
    )
    .await;
    assert_eq!(r["exit_code"], -1);
    assert_eq!(r["output"], "partial");
    assert_eq!(r["background_process_id"], "p-1");
    assert_eq!(
        r["error"],
        "get process output: connection reset by peer (process still running, use process_output to check later)"
    );
}

#[tokio::test]
async fn a_failed_snapshot_too_tells_the_model_to_retry_with_process_output() {
    let (c, _) = scripted_ctx(Err(tonic::Status::unavailable("agent gone")));
    let r = json(
        &process::Execute,
        &c,
        serde_json::json!({"command": "make"}),
    )
    .await;
    assert_eq!(r["exit_code"], -1);
    assert_eq!(r["background_process_id"], "p-1");
    assert_eq!(
        r["error"],
        "get process output: connection reset by peer; use process_output with ID p-1 to retry"
    );
    let r = json(
        &process::ProcessOutput,
        &c,
        serde_json::json!({"process_id": "p-1"}),
    )
    .await;
    assert_eq!(r["success"], false);
    assert_eq!(r["error"], "get process output: agent gone");
}

#[tokio::test]
async fn chatd_refuses_escaping_paths_before_the_agent_sees_them() {
    let (mut c, conn) = scripted_ctx(Ok(Default::default()));
    let outside = r#"path "../../etc/passwd" is outside the workspace root "/home/dev/project""#;
    assert_eq!(
        text(&files::ReadFile, &c, r#"{"path": "../../etc/passwd"}"#).await,
        outside
    );
    assert_eq!(
        text(
            &files::WriteFile,
            &c,
            r#"{"path": "../../etc/passwd", "content": ""}"#
        )
        .await,
        outside
    );
    assert_eq!(
        text(
            &files::EditFiles,
            &c,
            r#"{"edits": [{"path": "ok.txt", "old_text": "a", "new_text": "b"},
                          {"path": "/home/dev/project/../../../etc/passwd", "old_text": "a", "new_text": "b"}]}"#
        )
        .await,
        r#"path "/home/dev/project/../../../etc/passwd" is outside the workspace root "/home/dev/project"
No edits were applied."#
    );
    assert_eq!(conn.conn.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Inside the root, an extra root, or with confinement off, the call goes through.
    json(
        &files::ReadFile,
        &c,
        serde_json::json!({"path": "src/../README.md"}),
    )
    .await;
    c.settings = Arc::new(ToolSettings {
        files_extra_roots: vec!["/tmp".into()],
        ..ToolSettings::default()
    });
    json(
        &files::WriteFile,
        &c,
        serde_json::json!({"path": "/tmp/scratch", "content": ""}),
    )
    .await;
    c.settings = Arc::new(ToolSettings {
        files_confine: false,
        ..ToolSettings::default()
    });
    json(
        &files::ReadFile,
        &c,
        serde_json::json!({"path": "/etc/hostname"}),
    )
    .await;
    assert_eq!(conn.conn.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A lease that lapsed.
struct Lapsed;

impl chattool::context::LeaseCheck for Lapsed {
    fn holds(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_runner_that_cannot_prove_its_lease_dispatches_nothing() {
    let ws = workspace().await;
    let mut c = ctx(&ws, "call-1");
    c.lease = Some(Arc::new(Lapsed));
    let calls: [(&dyn Tool, Value); 4] = [
        (
            &process::Execute,
            serde_json::json!({"command": "echo ran >> count"}),
        ),
        (
            &files::WriteFile,
            serde_json::json!({"path": "written", "content": "x"}),
        ),
        (&files::ReadFile, serde_json::json!({"path": "count"})),
        (&lifecycle::StopWorkspace, serde_json::json!({})),
    ];
    for (tool, args) in calls {
        let refused = text(tool, &c, &args.to_string()).await;
        assert_eq!(refused, chattool::context::LEASE_LOST, "{}", tool.name());
    }
    assert!(!ws.root.join("count").exists(), "the command never ran");
    assert!(
        !ws.root.join("written").exists(),
        "the file was never written"
    );
}
