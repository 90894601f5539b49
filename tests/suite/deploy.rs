//! The Kubernetes manifests in `deploy/` run as written. Each overlay is rendered with
//! `kubectl kustomize`; each container's arguments and environment are taken from the rendered
//! objects and run with the binaries built here, as the kubelet would run them:
//!
//! - what only a cluster provides is replaced with a local equivalent, and nothing else: the
//!   downward API's pod IP is `127.0.0.1`; a Secret's keys are test values (the test database's
//!   URL, certificates made by the test); every volume is a directory of the test's (a
//!   ConfigMap's files copied in), and its mount path is rewritten to it in the arguments and
//!   in the mounted files; each container port is a free local port (the Service's DNS name
//!   points at the chatd process); the workspace uids are the test's own range (uids are
//!   host-wide and tests run at once);
//! - each probe is performed as the kubelet does it: a gRPC health check, without TLS, on the
//!   probe's port, with its service name, retried within `failureThreshold × periodSeconds`;
//! - SIGTERM (after the preStop sleep) must end the process within the rest of
//!   `terminationGracePeriodSeconds`.
//!
//! A flag, a variable or a configuration key that drifts from the binaries fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatd_e2e::test_db::{TestDb, skip_on_sqlite};
use chatd_e2e::workspace_binary;
use chatd_e2e::workspaces::{free_port, tempdir};
use chattest::certs::TestCerts;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic_health::pb::health_check_response::ServingStatus;

/// The rendered objects of an overlay.
fn render(overlay: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/overlays")
        .join(overlay);
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run kubectl ({e}): the deploy tests render the manifests with \
                 `kubectl kustomize`; install kubectl (Debian: apt-get install kubectl)"
            )
        });
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// What the test gives in place of the cluster: Secret values, and where things are.
struct Cluster {
    objects: Vec<Value>,
    database_url: Option<String>,
    certs: TestCerts,
    agent_certs: (String, String),
    /// Container port → local port, shared by every pod (one process per port here).
    ports: BTreeMap<u16, u16>,
    /// Service DNS name:port → local address.
    services: BTreeMap<String, String>,
    /// `--workspace-uids` of this test.
    workspace_uids: String,
    _dirs: Vec<tempdir::Dir>,
}

impl Cluster {
    fn new(objects: Vec<Value>, database_url: Option<String>, workspace_uids: String) -> Self {
        let certs = TestCerts::for_names(&["127.0.0.1", "localhost", "chatd.chatd.svc"]);
        let agent_certs = certs.sign(&["127.0.0.1", "chatd-agents.chatd.svc"]);
        let mut ports = BTreeMap::new();
        let mut services = BTreeMap::new();
        for service in objects.iter().filter(|o| o["kind"] == "Service") {
            let name = service["metadata"]["name"].as_str().unwrap();
            let namespace = service["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            for port in service["spec"]["ports"].as_array().into_iter().flatten() {
                let target = port["targetPort"]
                    .as_u64()
                    .or(port["port"].as_u64())
                    .unwrap();
                let target = u16::try_from(target).unwrap();
                let local = *ports.entry(target).or_insert_with(free_port);
                services.insert(
                    format!("{name}.{namespace}.svc:{}", port["port"]),
                    format!("127.0.0.1:{local}"),
                );
            }
        }
        Self {
            objects,
            database_url,
            certs,
            agent_certs,
            ports,
            services,
            workspace_uids,
            _dirs: Vec::new(),
        }
    }

    fn local_port(&mut self, port: u16) -> u16 {
        *self.ports.entry(port).or_insert_with(free_port)
    }

    /// A Secret key's test value.
    fn secret(&self, name: &str, key: &str) -> String {
        match (name, key) {
            ("chatd-database", "url") => self
                .database_url
                .clone()
                .expect("a database for this overlay"),
            ("chatd-tls", "tls.crt") => self.certs.cert_pem.clone(),
            ("chatd-tls", "tls.key") => self.certs.key_pem.clone(),
            ("chatd-tls", "ca.crt") => self.certs.ca_pem.clone(),
            ("chatd-agent-tls", "tls.crt") => self.agent_certs.0.clone(),
            ("chatd-agent-tls", "tls.key") => self.agent_certs.1.clone(),
            _ => panic!("the test has no value for key {key} of Secret {name}"),
        }
    }

    /// The files of a Secret this test knows (an optional one it does not know stays empty).
    fn secret_files(&self, source: &Value) -> Vec<(String, String)> {
        let name = source["secretName"].as_str().unwrap();
        let keys: Vec<(String, String)> = match source["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap().to_owned(),
                        i["path"].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
            None => match name {
                "chatd-tls" => ["tls.crt", "tls.key", "ca.crt"]
                    .map(|k| (k.to_owned(), k.to_owned()))
                    .to_vec(),
                "chatd-agent-tls" => ["tls.crt", "tls.key"]
                    .map(|k| (k.to_owned(), k.to_owned()))
                    .to_vec(),
                _ if source["optional"] == true => Vec::new(),
                _ => panic!("the test knows no files of Secret {name}"),
            },
        };
        keys.into_iter()
            .map(|(key, path)| (path, self.secret(name, &key)))
            .collect()
    }

    /// Runs the container `container` of `workload` (a Deployment, StatefulSet or Job): its
    /// volumes made local directories, its arguments and environment rewritten as the module
    /// says.
    fn process(&mut self, workload: &Value, container: &str) -> Process {
        let spec = &workload["spec"]["template"]["spec"];
        let c = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == container)
            .unwrap()
            .clone();
        assert!(
            c["command"].is_null(),
            "a command would replace the image's entrypoint"
        );
        // Volumes: mount path → local directory.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in c["volumeMounts"].as_array().into_iter().flatten() {
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .chain(
                    workload["spec"]["volumeClaimTemplates"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| &t["metadata"]),
                )
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("no volume {}", mount["name"]))
                .clone();
            let dir = tempdir::Dir::create();
            let files: Vec<(String, String)> =
                if let Some(name) = volume["configMap"]["name"].as_str() {
                    let map = self
                        .objects
                        .iter()
                        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
                        .unwrap_or_else(|| panic!("no ConfigMap {name}"));
                    map["data"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect()
                } else if volume["secret"].is_object() {
                    self.secret_files(&volume["secret"])
                } else {
                    Vec::new() // emptyDir, a claim
                };
            for (path, text) in files {
                std::fs::write(dir.0.join(path), text).unwrap();
            }
            // Readable by the workspaces' users, as the manifests' 0444 modes make them.
            std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            mounts.push((
                mount["mountPath"].as_str().unwrap().to_owned(),
                dir.0.clone(),
            ));
            self._dirs.push(dir);
        }
        // One pass over the text, the longest match first, so a replacement is never rewritten
        // again (a local directory is under /tmp, itself a mount path).
        let mut replacements: Vec<(String, String)> = mounts
            .iter()
            .map(|(path, dir)| (path.clone(), dir.display().to_string()))
            .chain(self.services.clone())
            .collect();
        replacements.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let rewrite = |text: &str| -> String { replace_all(text, &replacements) };
        // The files of ConfigMaps name mount paths too (chatd.toml names the keys' directory).
        for (_, dir) in &mounts {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if let Ok(text) = std::fs::read_to_string(&path) {
                    std::fs::write(&path, rewrite(&text)).unwrap();
                }
            }
        }
        let mut args: Vec<String> = strings(&c["args"]).iter().map(|a| rewrite(a)).collect();
        for arg in &mut args {
            if arg.starts_with("--workspace-uids=") {
                *arg = format!("--workspace-uids={}", self.workspace_uids);
                continue;
            }
            // A listener on every interface of the pod: a free port on loopback here.
            if let Some((flag, port)) = arg.split_once("=0.0.0.0:") {
                let local = self.local_port(port.parse().unwrap());
                *arg = format!("{flag}=127.0.0.1:{local}");
            }
        }
        let mut env = Vec::new();
        for var in c["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_owned();
            let value = if let Some(value) = var["value"].as_str() {
                rewrite(value)
            } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP" {
                "127.0.0.1".to_owned()
            } else if let Some(secret) = var["valueFrom"]["secretKeyRef"].as_object() {
                self.secret(
                    secret["name"].as_str().unwrap(),
                    secret["key"].as_str().unwrap(),
                )
            } else {
                panic!("the test cannot give variable {name}: {var}")
            };
            env.push((name, value));
        }
        let probes = ["startupProbe", "readinessProbe", "livenessProbe"]
            .iter()
            .filter(|p| c[**p].is_object())
            .map(|p| {
                let probe = &c[*p];
                let port = u16::try_from(probe["grpc"]["port"].as_u64().unwrap()).unwrap();
                Probe {
                    kind: p,
                    port: self.local_port(port),
                    service: probe["grpc"]["service"].as_str().unwrap_or("").to_owned(),
                    patience: Duration::from_secs(
                        probe["periodSeconds"].as_u64().unwrap_or(10)
                            * probe["failureThreshold"].as_u64().unwrap_or(3),
                    ),
                }
            })
            .collect();
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        Process {
            args,
            env,
            probes,
            stop_within: Duration::from_secs(grace - pre_stop),
        }
    }
}

/// `text` with each `from` of `replacements` (tried in order at each position) replaced by its
/// `to`, where `from` ends at a path boundary.
fn replace_all(text: &str, replacements: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    'scan: while let Some(c) = rest.chars().next() {
        for (from, to) in replacements {
            if let Some(after) = rest.strip_prefix(from.as_str())
                && after
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'))
            {
                out.push_str(to);
                rest = after;
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A kubelet gRPC probe.
#[derive(Debug)]
struct Probe {
    kind: &'static str,
    port: u16,
    service: String,
    patience: Duration,
}

impl Probe {
    /// Checks until SERVING within the probe's patience (failing at once if the process
    /// exits, e.g. on a flag it does not know); the last failure otherwise.
    async fn passes(&self, running: &mut Running) {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            let result = self.check().await;
            if result == Ok(ServingStatus::Serving) {
                return;
            }
            running.still_running();
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} on port {} (service {:?}): {result:?}\n{}",
                self.kind,
                self.port,
                self.service,
                running.log.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn check(&self) -> Result<ServingStatus, String> {
        let url = format!("http://127.0.0.1:{}", self.port);
        chatd_e2e::health_status(&url, None, &self.service).await
    }
}

/// A container's process as the manifests describe it.
#[derive(Debug)]
struct Process {
    args: Vec<String>,
    env: Vec<(String, String)>,
    probes: Vec<Probe>,
    stop_within: Duration,
}

/// A process's stderr, collected.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

struct Running {
    child: tokio::process::Child,
    log: Log,
}

impl Running {
    /// Fails the test with the process's log when it has exited.
    fn still_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("exited with {status}: {}", self.log.text());
        }
    }
}

impl Process {
    fn spawn(&self) -> Running {
        let mut command = tokio::process::Command::new(workspace_binary("chatd").unwrap());
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let log = Log::default();
        let sink = log.clone();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = sink.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Running { child, log }
    }

    /// Runs to completion; the exit must be a success.
    async fn run_to_success(&self) {
        let mut running = self.spawn();
        let status = tokio::time::timeout(Duration::from_secs(120), running.child.wait())
            .await
            .expect("the job finishes")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(status.success(), "{status}: {}", running.log.text());
    }

    /// Starts, passes every probe, and ends within its grace on SIGTERM.
    async fn serves_and_stops_on_sigterm(&self, ready: impl Fn(&str) -> bool) {
        let mut running = self.spawn();
        // Probes as the kubelet sends them: startup first, then readiness and liveness.
        for probe in &self.probes {
            probe.passes(&mut running).await;
        }
        if self.probes.is_empty() {
            // No probe (the provisioner): wait for it to say it works.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while !ready(&running.log.text()) {
                running.still_running();
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not started: {}",
                    running.log.text()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(ready(&running.log.text()), "{}", running.log.text());
        let pid = nix::unistd::Pid::from_raw(i32::try_from(running.child.id().unwrap()).unwrap());
        nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(self.stop_within, running.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "still running {:?} after SIGTERM: {}",
                    self.stop_within,
                    running.log.text()
                )
            })
            .unwrap();
        assert!(status.success(), "{status}: {}", running.log.text());
    }
}

#[tokio::test]
async fn the_production_overlay_migrates_serves_probes_and_stops_as_its_manifests_say() {
    if skip_on_sqlite("the production overlay runs on PostgreSQL") {
        return;
    }
    let mut h = TestDb::create().await;
    let url = h.database_url().await;
    let uids = chatd_e2e::test_db::uid_range(&h.workspace_users);
    let mut cluster = Cluster::new(render("production"), Some(url), uids);
    let objects = cluster.objects.clone();

    // The migration Job first (chatd starts with --no-migrate).
    let job = find(&objects, "Job", "chatd-migrate");
    cluster.process(job, "migrate").run_to_success().await;

    let chatd = cluster.process(find(&objects, "Deployment", "chatd"), "chatd");
    assert_eq!(
        chatd.probes.len(),
        3,
        "startup, readiness and liveness probes"
    );
    let provisioner = cluster.process(
        find(&objects, "Deployment", "chatd-provisioner"),
        "provisioner",
    );
    // The replica, with the provisioner beside it, as in the cluster.
    let mut replica = chatd.spawn();
    for probe in &chatd.probes {
        probe.passes(&mut replica).await;
    }
    provisioner
        .serves_and_stops_on_sigterm(|log| log.contains("provisioner started"))
        .await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(replica.child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(chatd.stop_within, replica.child.wait())
        .await
        .unwrap_or_else(|_| panic!("chatd still runs after SIGTERM: {}", replica.log.text()))
        .unwrap();
    assert!(status.success(), "{status}: {}", replica.log.text());
    h.finish().await;
}

#[tokio::test]
async fn the_single_overlay_serves_on_the_embedded_store_probes_and_stops_as_its_manifests_say() {
    let h = TestDb::create().await;
    let uids = chatd_e2e::test_db::uid_range(&h.workspace_users);
    let mut cluster = Cluster::new(render("single"), None, uids);
    let objects = cluster.objects.clone();
    let chatd = cluster.process(find(&objects, "StatefulSet", "chatd"), "chatd");
    assert!(!chatd.probes.is_empty(), "the pod has probes");
    chatd.serves_and_stops_on_sigterm(|_| true).await;
    h.finish().await;
}
