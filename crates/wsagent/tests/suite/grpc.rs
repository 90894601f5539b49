//! The agent's gRPC service over a real loopback connection: authentication, processes, files,
//! idempotent edits and status codes.

use std::time::Duration;

use chatproto::tonic::transport::{Channel, Server};
use chatproto::tonic::{Code, Request};
use chatproto::wsagent::v1 as pb;
use chatproto::wsagent::v1::agent_client::AgentClient;
use tokio_stream::wrappers::TcpListenerStream;
use wsagent::files::FileRoots;
use wsagent::process::{ProcessConfig, ProcessManager};
use wsagent::server::AgentService;

const SECRET: &str = "s3cret-for-tests";

async fn serve(root: &std::path::Path) -> String {
    let mut config = ProcessConfig::new(root.to_path_buf());
    config.shell = "/bin/sh".into();
    let service = AgentService::new(
        ProcessManager::new(config),
        FileRoots {
            roots: vec![root.to_path_buf()],
            confine: true,
        },
        root.to_path_buf(),
        "agent-1".into(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(service.into_server(SECRET.into()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {SECRET}").parse().unwrap());
    request
}

fn workspace(name: &str) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("wsagent-grpc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::canonicalize(root).unwrap()
}

async fn client(url: String) -> AgentClient<Channel> {
    AgentClient::new(Channel::from_shared(url).unwrap().connect().await.unwrap())
}

#[tokio::test]
async fn calls_without_the_secret_are_unauthenticated() {
    let root = workspace("auth");
    let mut c = client(serve(&root).await).await;
    let err = c.health(pb::HealthRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = Request::new(pb::HealthRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        c.health(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let health = c
        .health(authed(pb::HealthRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (health.status(), health.agent_id.as_str()),
        (pb::HealthStatus::Serving, "agent-1")
    );
}

#[tokio::test]
async fn a_command_runs_and_its_output_comes_back() {
    let root = workspace("run");
    let mut c = client(serve(&root).await).await;
    let started = c
        .start_process(authed(pb::StartProcessRequest {
            command: "echo hi > f && cat f".into(),
            chat_id: "chat-1".into(),
            idempotency_key: "call-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let output = c
        .process_output(authed(pb::ProcessOutputRequest {
            process_id: started.process_id.clone(),
            chat_id: "chat-1".into(),
            wait_timeout: Some(Duration::from_secs(30).try_into().unwrap()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (output.output.as_str(), output.running, output.exit_code),
        ("hi\n", false, Some(0))
    );
    assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "hi\n");
    let other_chat = c
        .process_output(authed(pb::ProcessOutputRequest {
            process_id: started.process_id,
            chat_id: "chat-2".into(),
            wait_timeout: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(other_chat.code(), Code::NotFound);
    let bad_signal = c
        .signal_process(authed(pb::SignalProcessRequest {
            process_id: "p1".into(),
            chat_id: "chat-1".into(),
            signal: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_signal.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn edits_are_idempotent_and_errors_have_the_right_codes() {
    let root = workspace("edit");
    std::fs::write(root.join("a.txt"), "old\n").unwrap();
    let mut c = client(serve(&root).await).await;
    let request = || pb::EditFilesRequest {
        edits: vec![pb::FileEdit {
            path: "a.txt".into(),
            old_text: "old".into(),
            new_text: "new".into(),
            replace_all: false,
        }],
        idempotency_key: "call-7".into(),
        chat_id: "chat-1".into(),
        lookup_only: false,
    };
    let first = c.edit_files(authed(request())).await.unwrap().into_inner();
    assert!(!first.replayed);
    assert!(first.files[0].diff.contains("+new"));
    // The replay returns the recorded outcome (the text "old" is gone, so re-running would fail).
    let replay = c.edit_files(authed(request())).await.unwrap().into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.files, first.files);
    let lookup = c
        .edit_files(authed(pb::EditFilesRequest {
            lookup_only: true,
            idempotency_key: "never".into(),
            ..request()
        }))
        .await
        .unwrap_err();
    assert_eq!(lookup.code(), Code::NotFound);

    let missing = c
        .edit_files(authed(pb::EditFilesRequest {
            idempotency_key: String::new(),
            ..request()
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::FailedPrecondition);
    assert_eq!(missing.message(), "edits[0]: old_text not found in a.txt");

    let outside = c
        .read_file(authed(pb::ReadFileRequest {
            path: "../../etc/passwd".into(),
            offset: 0,
            limit: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied);
    assert!(outside.message().contains("is outside the workspace root"));
    let absent = c
        .read_file(authed(pb::ReadFileRequest {
            path: "nope.txt".into(),
            offset: 0,
            limit: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound);

    c.write_file(authed(pb::WriteFileRequest {
        path: "dir/b.txt".into(),
        content: b"x".to_vec(),
        idempotency_key: "w".into(),
        chat_id: "chat-1".into(),
    }))
    .await
    .unwrap();
    let read = c
        .read_file(authed(pb::ReadFileRequest {
            path: "dir/b.txt".into(),
            offset: 0,
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.content, "     1\tx\n");
}
