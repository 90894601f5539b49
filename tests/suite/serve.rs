//! `chatd serve`: health, reflection, configuration through the environment, clean shutdown.

use std::time::{Duration, Instant};

use chatd_e2e::{Daemon, workspace_binary};
use nix::sys::signal::Signal;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

pub(crate) async fn channel(daemon: &Daemon) -> Channel {
    Channel::from_shared(daemon.url())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", daemon.addr(), daemon.log()))
}

/// The overall health the daemon behind `channel` reports.
async fn health(channel: Channel) -> ServingStatus {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

pub(crate) async fn reflected_services(channel: Channel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response: {other:?}"),
    }
}

#[tokio::test]
async fn serve_answers_health_and_reflection_and_exits_cleanly_on_sigterm() {
    // The listen address comes from the environment, proving CHATD_* variables are read.
    let daemon = Daemon::start(&["serve"], &[("CHATD_LISTEN", "127.0.0.1:0")])
        .await
        .unwrap();
    let channel = channel(&daemon).await;

    assert_eq!(health(channel.clone()).await, ServingStatus::Serving);

    let services = reflected_services(channel).await;
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );
    for reflection in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&reflection.to_owned()), "{services:?}");
    }
    // With no database configured the embedded one serves every API; the internal relay is
    // served but not advertised.
    for api in [
        "chatd.v1.AdminService",
        "chatd.v1.AgentApiService",
        "chatd.v1.ChatService",
        "chatd.v1.TemplateService",
        "chatd.v1.WorkspaceService",
    ] {
        assert!(services.contains(&api.to_owned()), "{services:?}");
    }
    assert!(
        !services.iter().any(|s| s.contains("Relay")),
        "{services:?}"
    );

    let started = Instant::now();
    let status = daemon
        .stop(Signal::SIGTERM, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_open_stream_does_not_hold_shutdown_past_the_grace_period() {
    let daemon = Daemon::start(
        &["serve", "--listen", "127.0.0.1:0", "--shutdown-grace", "1s"],
        &[],
    )
    .await
    .unwrap();
    let mut watch = HealthClient::new(channel(&daemon).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let log = daemon.log();
    let status = daemon
        .stop(Signal::SIGINT, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}\n{log}");

    // The open watch saw the daemon stop serving before it went away.
    let mut saw_not_serving = false;
    while let Some(Ok(update)) = watch.next().await {
        saw_not_serving |= update.status() == ServingStatus::NotServing;
    }
    assert!(
        saw_not_serving,
        "the health watch never reported NOT_SERVING"
    );
}

#[tokio::test]
async fn help_documents_every_flag_with_its_environment_variable() {
    let chatd = workspace_binary("chatd").unwrap();
    let output = tokio::process::Command::new(chatd)
        .args(["serve", "--help"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "CHATD_LISTEN"),
        ("--shutdown-grace", "CHATD_SHUTDOWN_GRACE"),
        ("--log-filter", "CHATD_LOG"),
        ("--no-bootstrap-admin", "CHATD_NO_BOOTSTRAP_ADMIN"),
        ("--config", "CHATD_CONFIG"),
        ("--metrics-listen", "CHATD_METRICS_LISTEN"),
        ("--anthropic-api-key-ref", "CHATD_ANTHROPIC_API_KEY_REF"),
        ("--openai-api-key-ref", "CHATD_OPENAI_API_KEY_REF"),
        ("--openai-compat-base-url", "CHATD_OPENAI_COMPAT_BASE_URL"),
        ("--models-organization", "CHATD_MODELS_ORGANIZATION"),
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
        assert!(help.contains(env), "{env} missing from:\n{help}");
    }
}

#[tokio::test]
async fn migrate_help_documents_its_flags() {
    let chatd = workspace_binary("chatd").unwrap();
    let output = tokio::process::Command::new(chatd)
        .args(["migrate", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for text in [
        "--database-url",
        "CHATD_DATABASE_URL",
        "--database-connect-timeout",
        "CHATD_DATABASE_CONNECT_TIMEOUT",
    ] {
        assert!(help.contains(text), "{text} missing from:\n{help}");
    }
}

#[tokio::test]
async fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let chatd = workspace_binary("chatd").unwrap();
    let output = tokio::process::Command::new(chatd)
        .args(["serve", "--listen", &addr])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains(&format!("cannot listen on {addr}")), "{log}");
}

#[tokio::test]
async fn a_wildcard_listen_without_an_advertise_address_refuses_to_start_before_writing() {
    let data_dir = chatd_e2e::workspaces::tempdir::Dir::create();
    let chatd = workspace_binary("chatd").unwrap();
    let output = tokio::process::Command::new(chatd)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("CHATD_DATA_DIR", &data_dir.0)
        .env_remove("CHATD_ADVERTISE_ADDRESS")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("0.0.0.0:0, every interface"), "{log}");
    assert!(log.contains("set --advertise-address"), "{log}");
    // Refused before the embedded database was created.
    assert!(!data_dir.0.join("chatd.db").exists(), "{log}");
}

#[tokio::test]
async fn a_replica_on_every_interface_registers_its_advertised_address_for_the_relay() {
    use chatd_e2e::test_db::{TestDb, skip_on_sqlite};
    if skip_on_sqlite("relay addresses are for replicas on one PostgreSQL database") {
        return;
    }
    let mut h = TestDb::create().await;
    let pool = h.postgres().unwrap().pool.clone();
    let mut args = h.serve_args("0.0.0.0:0").await;
    args.extend(["--advertise-address".to_owned(), "127.0.0.1".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&args, &[]).await.unwrap();
    let port = daemon.addr().rsplit_once(':').unwrap().1.to_owned();
    let registered: String =
        chatd_e2e::workspaces::eventually("the replica's registration", || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar("SELECT relay_address FROM chatd_workers")
                    .fetch_optional(&pool)
                    .await
                    .unwrap()
            }
        })
        .await;
    // The listener's port on the advertised host, and reachable there.
    assert_eq!(registered, format!("http://127.0.0.1:{port}"));
    let reached = Channel::from_shared(registered)
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(health(reached).await, ServingStatus::Serving);
    assert!(
        daemon.log().contains("advertised=http://127.0.0.1:"),
        "{}",
        daemon.log()
    );
    daemon
        .stop(Signal::SIGTERM, Duration::from_secs(20))
        .await
        .unwrap();
    h.finish().await;
}
