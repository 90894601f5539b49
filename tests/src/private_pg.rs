//! A PostgreSQL server of one test's own: `initdb` into a fresh directory under the build's
//! `target/tmp/`, its own port on loopback (no Unix socket), started and stopped with `pg_ctl`, so a test can configure it (TLS), stop it or
//! break it without touching the shared server or other tests. Dropping it stops the server
//! (immediately) and removes its files.
//!
//! The server binaries are those of the newest PostgreSQL installed (`/usr/lib/postgresql/*/bin`,
//! else `pg_config --bindir`). As root (CI), the server runs as the `postgres` user, since
//! PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use chattest::certs::TestCerts;

use crate::run_command as run;

/// A running private server.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn server_bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let output = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|_| "no PostgreSQL server binaries (initdb, pg_ctl) are installed".to_owned())?;
    let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if bin.join("initdb").exists() {
        Ok(bin)
    } else {
        Err(format!("no initdb in {}", bin.display()))
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// `program` as the user the server runs as.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl PrivatePostgres {
    /// Creates and starts a server that accepts user `postgres` without a password on
    /// 127.0.0.1; with `tls`, only over TLS with that certificate. `Err` says why it cannot
    /// (for a test to skip with).
    pub fn start(tls: Option<&TestCerts>) -> Result<Self, String> {
        let bin = server_bin_dir()?;
        let dir = target_tmp_dir().join(format!("chatd-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut server = Self { dir, bin, port: 0 };
        if is_root() {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&server.dir),
                "chown",
            )?;
        }
        let data = server.dir.join("data");
        run(
            as_server_user(&server.bin.join("initdb"))
                .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
                .arg(&data),
            "initdb",
        )?;
        let mut hba = String::new();
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n",
        );
        if let Some(certs) = tls {
            for (name, pem) in [
                ("server.crt", &certs.cert_pem),
                ("server.key", &certs.key_pem),
            ] {
                let path = data.join(name);
                std::fs::write(&path, pem).map_err(|e| format!("cannot write {name}: {e}"))?;
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("cannot protect {name}: {e}"))?;
                if is_root() {
                    run(
                        Command::new("chown").arg("postgres:postgres").arg(&path),
                        "chown",
                    )?;
                }
            }
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            hba.push_str(
                "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            );
        } else {
            hba.push_str("host all all 127.0.0.1/32 trust\n");
        }
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| format!("pg_hba.conf: {e}"))?;
        let mut file = std::fs::read_to_string(data.join("postgresql.conf")).unwrap_or_default();
        file.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), file)
            .map_err(|e| format!("postgresql.conf: {e}"))?;
        // A free port can be taken between the probe and the start: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port()?;
            match server.pg_ctl(&[
                "start",
                "-w",
                "-t",
                "30",
                "-o",
                &format!("-p {}", server.port),
            ]) {
                Ok(()) => return Ok(server),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        run(
            as_server_user(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(args),
            "pg_ctl",
        )
    }

    /// Kills the server the way a crash would (`pg_ctl stop -m immediate`: every connection is
    /// cut, no checkpoint) and starts it again on the same port, returning once it accepts
    /// connections.
    pub fn crash_and_restart(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"])?;
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "30",
            "-o",
            &format!("-p {}", self.port),
        ])
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`, then `?query` when given.
    pub fn url(&self, query: &str) -> String {
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// A file in the server's directory that the test may write (e.g. a CA for clients).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// `target/tmp` of the build that made the running binary (the directory holding cargo's
/// `CACHEDIR.TAG`), so a test's server lives with the build and `cargo clean` removes what a
/// killed run left; the system's temporary directory when the binary is not under a target dir.
fn target_tmp_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(|target| target.join("tmp"))
        })
        .unwrap_or_else(std::env::temp_dir)
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
