//! Provider clients for model configurations: one [`ModelClient`] per provider row, built on
//! first use and shared by every turn (spec/engine.md §12.2). Clients never retry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chatmodel::ModelError;
use chatmodel::client::{ModelClient, ProviderConfig, Timeouts, WireFormat};
use chatstore::models::ModelConfig;
use uuid::Uuid;

/// Why a model configuration cannot be used (a `config` error, never retried).
#[derive(Debug, thiserror::Error)]
pub enum ModelSetupError {
    /// chatd has no client for this provider kind.
    #[error("provider {0:?} is not supported by chatd yet")]
    Unsupported(String),
    /// The API key reference cannot be read.
    #[error("the API key of provider {provider} cannot be read from {reference:?}")]
    MissingKey {
        /// The provider kind.
        provider: String,
        /// The reference (`env:NAME`, `file:PATH`).
        reference: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the provider client")]
    Client(#[source] ModelError),
}

/// The clients of a process, keyed by provider row.
#[derive(Debug, Default)]
pub struct ModelClients {
    timeouts: Timeouts,
    keys: KeyReferences,
    clients: Mutex<HashMap<Uuid, Arc<ModelClient>>>,
}

impl ModelClients {
    /// Clients with these connect / first-byte timeouts, reading keys the policy allows.
    pub fn new(timeouts: Timeouts, keys: KeyReferences) -> Self {
        Self {
            timeouts,
            keys,
            clients: Mutex::default(),
        }
    }

    /// The client of the configuration's provider.
    pub fn client(&self, config: &ModelConfig) -> Result<Arc<ModelClient>, ModelSetupError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&config.provider_id) {
            return Ok(client.clone());
        }
        let (format, default_url) = match config.provider.as_str() {
            "anthropic" => (WireFormat::Anthropic, "https://api.anthropic.com"),
            "openai" => (WireFormat::OpenAi, "https://api.openai.com/v1"),
            "openai-compat" => (WireFormat::OpenAiCompatible, ""),
            other => return Err(ModelSetupError::Unsupported(other.to_owned())),
        };
        let api_key = self
            .keys
            .read(&config.api_key_ref)
            .map_err(|UnreadableKey| ModelSetupError::MissingKey {
                provider: config.provider.clone(),
                reference: config.api_key_ref.clone(),
            })?;
        let base_url = if config.base_url.is_empty() {
            default_url.to_owned()
        } else {
            config.base_url.clone()
        };
        let client = Arc::new(
            ModelClient::new(ProviderConfig {
                format,
                base_url,
                api_key,
                extra_headers: Vec::new(),
                timeouts: self.timeouts,
                http2_prior_knowledge: false,
            })
            .map_err(ModelSetupError::Client)?,
        );
        clients.insert(config.provider_id, client.clone());
        Ok(client)
    }
}

/// An API key reference that names no readable, non-empty key the policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the API key reference is not an allowed `env:NAME` or `file:PATH` naming a non-empty key")]
pub struct UnreadableKey;

/// Which API key references chatd reads. Model configurations are written by API admins, and a
/// reference is read in the daemon's environment and file system, then sent to the
/// configuration's base URL: without a policy, `env:CHATD_DATABASE_URL` or `file:/etc/shadow`
/// would send the daemon's secrets to a host of the admin's choosing. Only variables whose names
/// match a pattern (`*` matches any run of characters; default `*_API_KEY`) and files inside the
/// allowed directories (default `/run/secrets`, where container platforms mount secrets) are
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReferences {
    env_patterns: Vec<String>,
    file_dirs: Vec<PathBuf>,
}

impl Default for KeyReferences {
    fn default() -> Self {
        Self::new(
            vec!["*_API_KEY".into()],
            vec![PathBuf::from("/run/secrets")],
        )
    }
}

impl KeyReferences {
    /// A policy allowing variables matching `env_patterns` and files inside `file_dirs`.
    pub fn new(env_patterns: Vec<String>, file_dirs: Vec<PathBuf>) -> Self {
        Self {
            env_patterns,
            file_dirs,
        }
    }

    /// Whether `reference` is empty (no key) or one the policy allows; the error says why not
    /// and what is allowed.
    pub fn check(&self, reference: &str) -> Result<(), String> {
        if reference.is_empty() {
            return Ok(());
        }
        if let Some(name) = reference.strip_prefix("env:") {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "{reference:?} does not name an environment variable"
                ));
            }
            if self.env_patterns.iter().any(|p| glob_match(p, name)) {
                return Ok(());
            }
            return Err(format!(
                "environment variable {name} is not allowed as an API key: allowed are {}",
                self.env_patterns.join(", ")
            ));
        }
        if let Some(path) = reference.strip_prefix("file:") {
            let path = Path::new(path);
            let plain = path.is_absolute()
                && path
                    .components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir));
            if plain && self.file_dirs.iter().any(|dir| path.starts_with(dir)) {
                return Ok(());
            }
            return Err(format!(
                "file {} is not allowed as an API key: it must be an absolute path inside {}",
                path.display(),
                self.describe_dirs()
            ));
        }
        Err(
            "an API key reference is env:<NAME> or file:<path> (a reference to the key, never \
             the key)"
                .into(),
        )
    }

    /// Resolves an allowed reference: empty = no key. A file is read only when its real path
    /// (symbolic links resolved) is inside an allowed directory too.
    pub fn read(&self, reference: &str) -> Result<Option<String>, UnreadableKey> {
        self.check(reference).map_err(|_| UnreadableKey)?;
        if reference.is_empty() {
            return Ok(None);
        }
        let key = if let Some(name) = reference.strip_prefix("env:") {
            std::env::var(name).map_err(|_| UnreadableKey)?
        } else if let Some(path) = reference.strip_prefix("file:") {
            let real = std::fs::canonicalize(path).map_err(|_| UnreadableKey)?;
            let inside = self
                .file_dirs
                .iter()
                .any(|dir| std::fs::canonicalize(dir).is_ok_and(|dir| real.starts_with(dir)));
            if !inside {
                return Err(UnreadableKey);
            }
            std::fs::read_to_string(real).map_err(|_| UnreadableKey)?
        } else {
            return Err(UnreadableKey);
        };
        let key = key.trim().to_owned();
        if key.is_empty() {
            Err(UnreadableKey)
        } else {
            Ok(Some(key))
        }
    }

    fn describe_dirs(&self) -> String {
        if self.file_dirs.is_empty() {
            return "no directory (none is allowed)".into();
        }
        self.file_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `name` matches `pattern`, whose `*` matches any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references() {
        let keys = KeyReferences::default();
        assert_eq!(keys.read(""), Ok(None));
        assert_eq!(keys.read("plain-secret"), Err(UnreadableKey));
        assert_eq!(
            keys.read("env:CHATD_TEST_SURELY_UNSET_API_KEY"),
            Err(UnreadableKey)
        );
        assert_eq!(
            keys.read("file:/run/secrets/nonexistent"),
            Err(UnreadableKey)
        );
    }

    #[test]
    fn only_allowed_references_pass() {
        let keys = KeyReferences::default();
        for allowed in [
            "",
            "env:ANTHROPIC_API_KEY",
            "env:MY_API_KEY",
            "file:/run/secrets/key",
        ] {
            assert_eq!(keys.check(allowed), Ok(()), "{allowed}");
        }
        for refused in [
            "env:CHATD_DATABASE_URL",
            "env:HOME",
            "env:API_KEY_X",
            "env:",
            "env:A-B",
            "file:/etc/shadow",
            "file:/run/secrets/../../etc/shadow",
            "file:run/secrets/key",
            "file:/run/secretsx/key",
            "sk-ant-123",
        ] {
            assert!(keys.check(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_key_file_is_read_only_when_its_real_path_is_inside_an_allowed_directory() {
        let base = std::env::temp_dir().join(format!("chatd-keys-{}", Uuid::new_v4().simple()));
        let allowed = base.join("secrets");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::write(allowed.join("key"), "sk-inside\n").unwrap();
        std::fs::write(base.join("outside"), "sk-outside").unwrap();
        std::os::unix::fs::symlink(base.join("outside"), allowed.join("link")).unwrap();
        let keys = KeyReferences::new(Vec::new(), vec![allowed.clone()]);
        let reference = |name: &str| format!("file:{}", allowed.join(name).display());
        assert_eq!(keys.read(&reference("key")), Ok(Some("sk-inside".into())));
        assert_eq!(keys.read(&reference("link")), Err(UnreadableKey));
        assert_eq!(keys.read("env:ANTHROPIC_API_KEY"), Err(UnreadableKey));
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn patterns_match_runs_of_characters() {
        for (pattern, name, matches) in [
            ("*_API_KEY", "OPENAI_API_KEY", true),
            ("*_API_KEY", "_API_KEY", true),
            ("*_API_KEY", "OPENAI_API_KEYS", false),
            ("CHATD_*_KEY", "CHATD_A_KEY", true),
            ("CHATD_*_KEY", "CHATD_KEY", false),
            ("EXACT", "EXACT", true),
            ("EXACT", "EXACTLY", false),
            ("*", "ANY", true),
            ("A*B*C", "AXBYC", true),
            ("A*B*C", "AXC", false),
        ] {
            assert_eq!(glob_match(pattern, name), matches, "{pattern} {name}");
        }
    }
}
