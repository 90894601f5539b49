//! Where chatctl keeps the server address and the API token between runs (`chatctl login`):
//! a TOML file readable only by its owner.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CtlError;

/// The saved login.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The server, e.g. `http://127.0.0.1:7420`.
    pub server: Option<String>,
    /// The API token.
    pub token: Option<String>,
    /// The CA certificates an `https://` server is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// The default config file: `$XDG_CONFIG_HOME/chatctl/config.toml`, else
/// `~/.config/chatctl/config.toml`.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("chatctl").join("config.toml")
}

/// The token file a local `chatd serve` writes on its first start with its default data dir:
/// `/var/lib/chatd/admin-token` for root, else `$XDG_DATA_HOME/chatd/admin-token`, else
/// `~/.local/share/chatd/admin-token`.
pub fn default_admin_token_file() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/chatd/admin-token");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("share"))
        })
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("chatd").join("admin-token")
}

impl Config {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, CtlError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(CtlError::File {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|err| CtlError::ConfigSyntax {
            path: path.to_owned(),
            message: err.message().to_owned(),
        })
    }

    /// Writes the file (mode 0600: it holds a token), creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), CtlError> {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let file_error = |source| CtlError::File {
            path: path.to_owned(),
            source,
        };
        let text = toml::to_string(self).map_err(|err| CtlError::ConfigSyntax {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(file_error)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(file_error)?;
        // A file that existed keeps its old mode on open: tighten it.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(file_error)?;
        file.write_all(text.as_bytes()).map_err(file_error)
    }
}

/// Reads a token from a file (surrounding whitespace dropped).
pub fn read_token_file(path: &Path) -> Result<String, CtlError> {
    let text = std::fs::read_to_string(path).map_err(|source| CtlError::File {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CtlError::Usage(format!(
            "{} holds no token",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_config_reads_back_and_only_its_owner_can_read_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("chatctl-test-{}", uuid::Uuid::new_v4()));
        let path = dir.join("nested").join("config.toml");
        assert_eq!(
            Config::load(&path).unwrap(),
            Config::default(),
            "missing = empty"
        );
        let config = Config {
            server: Some("http://127.0.0.1:7420".into()),
            token: Some("chatd_abc_def".into()),
            ca_cert: Some("/etc/chatd/ca.crt".into()),
        };
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "server = [").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a valid chatctl config"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
