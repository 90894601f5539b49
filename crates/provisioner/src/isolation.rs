//! How the local backend keeps a workspace away from the daemon's secrets and from other
//! workspaces. The model, members and agents are untrusted: whatever a workspace runs must not
//! reach the daemon's environment, its data dir or another workspace.
//!
//! - **Environment**: every process of a workspace (its agent, build script, startup script and
//!   whatever they start) starts from a cleared environment with an explicit allow-list
//!   ([`Isolation::confine`]): `PATH` and the locale of the daemon, `HOME` set to the workspace
//!   home, the template's variables and the `CHATD_*` workspace variables. Nothing else of the
//!   daemon's environment (database URL, provider keys, tokens) gets through.
//! - **Users** ([`Isolation::Users`], the default when the daemon runs as root): each workspace
//!   also runs as a Unix user of its own, a uid from a configured range (no passwd entry is
//!   needed). Its home is owned by that uid with mode 0700, so other workspaces cannot read it;
//!   the data dir's files stay the daemon's (mode 0600, the path above the homes is only
//!   searchable), so the admin token, the agent tokens and the database are out of reach; its
//!   processes are capped by `RLIMIT_NPROC`; and stopping or deleting the workspace, or its agent
//!   dying, kills every process of the uid: background processes, daemons that left the process
//!   group and orphans of a killed agent included.
//! - Unprivileged, the backend isolates by environment only: anything a workspace runs can read
//!   what the daemon's user can. It is then meant for a single trusted user, and says so in its
//!   log at start.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backend::{BuildError, codes};

/// The uids workspaces run as when the daemon is root, and the cap on their processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceUsers {
    /// The first uid of the range (also used as the gid).
    pub first_uid: u32,
    /// How many uids the range has: at most this many workspaces exist on one host.
    pub count: u32,
    /// `RLIMIT_NPROC` of a workspace's processes (threads count too).
    pub max_processes: u64,
}

impl Default for WorkspaceUsers {
    /// Uids 200000 to 265535, which no distribution hands out to its own users, and 4096
    /// processes (threads included) per workspace.
    fn default() -> Self {
        Self {
            first_uid: 200_000,
            count: 65_536,
            max_processes: 4096,
        }
    }
}

impl WorkspaceUsers {
    /// Whether `uid` is one of the range's.
    pub fn contains(&self, uid: u32) -> bool {
        uid >= self.first_uid && uid - self.first_uid < self.count
    }
}

/// How workspaces are kept apart from the daemon and from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A cleared environment only; workspaces run as the daemon's user. For a single trusted
    /// user.
    Environment,
    /// A cleared environment and a Unix user per workspace (needs root).
    Users(WorkspaceUsers),
}

impl Isolation {
    /// [`Isolation::Users`] with `users` when this process runs as root, else
    /// [`Isolation::Environment`].
    pub fn for_this_process(users: WorkspaceUsers) -> Self {
        if nix::unistd::geteuid().is_root() {
            Self::Users(users)
        } else {
            Self::Environment
        }
    }

    /// The range of workspace users, when workspaces have users of their own.
    pub fn users(&self) -> Option<&WorkspaceUsers> {
        match self {
            Self::Environment => None,
            Self::Users(users) => Some(users),
        }
    }

    /// Gets the data dir ready for workspaces before the first build, and checks what a
    /// workspace user needs: the workspaces' directory is searchable by others (every directory
    /// above it too) and the agent binary executable by them. Creates `<data_dir>/workspaces`.
    ///
    /// With workspace users it also sets this process's `RLIMIT_NPROC` to their process cap:
    /// root is exempt from it, and every workspace process inherits it and counts against its
    /// own uid, so the cap holds per workspace from the first build script on.
    pub fn prepare(&self, data_dir: &Path, agent_binary: &Path) -> Result<(), String> {
        let root = data_dir.join("workspaces");
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let Some(users) = self.users() else {
            return Ok(());
        };
        // A lower cap already in place (a hard limit this process cannot raise) stays.
        let nproc = nix::sys::resource::Resource::RLIMIT_NPROC;
        let (_, hard) = nix::sys::resource::getrlimit(nproc)
            .map_err(|e| format!("cannot read the process limit: {e}"))?;
        let cap = users.max_processes.min(hard);
        nix::sys::resource::setrlimit(nproc, cap, cap)
            .map_err(|e| format!("cannot cap the workspaces' processes: {e}"))?;
        // Searchable, not listable: workspace users reach their own home by its path only.
        for dir in [data_dir, root.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
        }
        let data_dir = std::fs::canonicalize(data_dir)
            .map_err(|e| format!("cannot resolve {}: {e}", data_dir.display()))?;
        for dir in data_dir.ancestors().skip(1) {
            let mode = std::fs::metadata(dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                .mode();
            if mode & 0o001 == 0 {
                return Err(format!(
                    "workspaces run as users of their own, who cannot reach {}: {} is not \
                     searchable by other users (mode {:o}); choose a data dir they can reach \
                     (such as /var/lib/chatd) or allow it with `chmod o+x {}`",
                    data_dir.display(),
                    dir.display(),
                    mode & 0o7777,
                    dir.display()
                ));
            }
        }
        let binary = find_program(agent_binary)
            .ok_or_else(|| format!("cannot find the agent binary {}", agent_binary.display()))?;
        let mode = std::fs::metadata(&binary)
            .map_err(|e| format!("cannot read {}: {e}", binary.display()))?
            .mode();
        let blocked = binary
            .ancestors()
            .skip(1)
            .find(|dir| std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 == 0));
        if mode & 0o001 == 0 || blocked.is_some() {
            return Err(format!(
                "workspaces run as users of their own, who cannot run the agent binary {}{}; \
                 install it where every user can run it (such as /usr/local/bin)",
                binary.display(),
                blocked
                    .map(|dir| format!(" ({} is not searchable by other users)", dir.display()))
                    .unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// The user of the workspace whose home is `home` (created when missing): the owner of the
    /// home when it is in the range, else a free uid of the range, to which the home and
    /// everything in it then pass. `None` without workspace users. Allocation holds a lock
    /// file in `root` (the directory of all workspaces), so two builds never share a uid.
    pub fn workspace_user(&self, root: &Path, home: &Path) -> Result<Option<u32>, BuildError> {
        std::fs::create_dir_all(home).map_err(|e| io_error("cannot create", home, e))?;
        let Some(users) = self.users() else {
            return Ok(None);
        };
        if let Some(workspace_dir) = home.parent() {
            // The workspace's own directory holds the agent's token and log: searchable only.
            std::fs::set_permissions(workspace_dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| io_error("cannot set the mode of", workspace_dir, e))?;
        }
        let owner = std::fs::metadata(home)
            .map_err(|e| io_error("cannot read", home, e))?
            .uid();
        if users.contains(owner) {
            return Ok(Some(owner));
        }
        let lock_path = root.join(".users.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("cannot open", &lock_path, e))?;
        lock.lock()
            .map_err(|e| io_error("cannot lock", &lock_path, e))?;
        let taken = homes_owners(root);
        let uid = (users.first_uid..users.first_uid.saturating_add(users.count))
            .find(|uid| !taken.contains(uid))
            .ok_or_else(|| {
                BuildError::new(
                    codes::BACKEND_FAILED,
                    format!(
                        "all {} workspace users (uids {} and up) are taken: delete workspaces or \
                         widen the range",
                        users.count, users.first_uid
                    ),
                )
            })?;
        chown_tree(home, uid)?;
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error("cannot set the mode of", home, e))?;
        Ok(Some(uid))
    }

    /// Gives a path the backend created inside a workspace home to the workspace user.
    pub fn hand_over(&self, path: &Path, uid: Option<u32>) -> Result<(), BuildError> {
        match uid {
            Some(uid) => std::os::unix::fs::lchown(path, Some(uid), Some(uid))
                .map_err(|e| io_error("cannot change the owner of", path, e)),
            None => Ok(()),
        }
    }

    /// Confines a command that a workspace runs: a cleared environment with the allow-list,
    /// `HOME` = `home`, then `env`; with a workspace user, that uid and gid (no supplementary
    /// groups).
    pub fn confine(
        &self,
        command: &mut tokio::process::Command,
        home: &Path,
        uid: Option<u32>,
        env: &[(String, String)],
    ) {
        command.env_clear();
        for name in INHERITED {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        if std::env::var_os("PATH").is_none() {
            command.env("PATH", DEFAULT_PATH);
        }
        command.env("HOME", home);
        for (name, value) in env {
            command.env(name, value);
        }
        if let (Some(uid), Some(_)) = (uid, self.users()) {
            command.uid(uid).gid(uid);
        }
    }

    /// Kills every process of the workspace user `uid` (stopping them all first, so none can
    /// fork a replacement between the rounds), until none is left. Returns how many it killed.
    /// Does nothing without workspace users.
    pub async fn kill_workspace_processes(&self, uid: Option<u32>) -> usize {
        let (Some(uid), Some(users)) = (uid, self.users()) else {
            return 0;
        };
        if !users.contains(uid) {
            return 0;
        }
        let mut killed = 0;
        for _ in 0..100 {
            let pids = processes_of(uid);
            if pids.is_empty() {
                break;
            }
            for &pid in &pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
            }
            for &pid in &pids {
                if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    killed += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        killed
    }
}

/// The variables of the daemon's environment a workspace process keeps: the search path and
/// the locale. Everything else is cleared.
const INHERITED: [&str; 5] = ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// `PATH` when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn io_error(what: &str, path: &Path, e: std::io::Error) -> BuildError {
    BuildError::new(
        codes::BACKEND_FAILED,
        format!("{what} {}: {e}", path.display()),
    )
}

/// The owners of the workspace homes under `root` (`<root>/<id>/home`).
fn homes_owners(root: &Path) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::metadata(entry.path().join("home")).ok())
        .map(|m| m.uid())
        .collect()
}

/// Gives `dir` and everything below it to `uid` (symbolic links themselves, never their
/// targets).
fn chown_tree(dir: &Path, uid: u32) -> Result<(), BuildError> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))
        .map_err(|e| io_error("cannot change the owner of", dir, e))?;
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| io_error("cannot read", &dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))
                .map_err(|e| io_error("cannot change the owner of", &path, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            }
        }
    }
    Ok(())
}

/// The processes whose real, effective, saved or file-system uid is `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Uid:"))
                    .is_some_and(|ids| ids.split_whitespace().any(|id| id == uid.to_string()))
            })
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// `program` as a canonical path: itself when it has a directory part, else the first match
/// on `PATH`; `None` when there is no such file.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return std::fs::canonicalize(program).ok();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .and_then(|path| std::fs::canonicalize(path).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_holds_its_first_and_last_uid_only() {
        let users = WorkspaceUsers {
            first_uid: 100,
            count: 3,
            max_processes: 10,
        };
        assert!(!users.contains(99));
        assert!(users.contains(100));
        assert!(users.contains(102));
        assert!(!users.contains(103));
    }

    #[test]
    fn a_confined_command_keeps_only_the_allow_list() {
        let mut command = tokio::process::Command::new("/bin/true");
        Isolation::Environment.confine(
            &mut command,
            Path::new("/w/home"),
            None,
            &[("CHATD_WORKSPACE_ID".into(), "x".into())],
        );
        let env: Vec<(String, Option<String>)> = command
            .as_std()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"PATH"), "{names:?}");
        assert!(names.contains(&"HOME"), "{names:?}");
        assert!(names.contains(&"CHATD_WORKSPACE_ID"), "{names:?}");
        for (name, _) in &env {
            assert!(
                INHERITED.contains(&name.as_str()) || name == "HOME" || name.starts_with("CHATD_"),
                "{name} is not on the allow-list"
            );
        }
    }
}
