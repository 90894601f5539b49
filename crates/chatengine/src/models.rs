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
        let format = match config.provider.as_str() {
            "anthropic" => WireFormat::Anthropic,
            "openai" => WireFormat::OpenAi,
            "openai-compat" => WireFormat::OpenAiCompatible,
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
            default_base_url(&config.provider)
                .unwrap_or_default()
                .to_owned()
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

/// Where a provider kind is called when its configuration names no base URL.
pub(crate) fn default_base_url(provider: &str) -> Option<&'static str> {
    match provider {
        "anthropic" => Some("https://api.anthropic.com"),
        "openai" => Some("https://api.openai.com/v1"),
        _ => None,
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

/// What a turn asks of the provider beyond the conversation: output and sampling limits,
/// reasoning (extended thinking), prompt caching and the provider's own body keys.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOptions {
    /// Most output tokens.
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Keys merged into the request body.
    pub body: Option<serde_json::Value>,
    /// Whether to mark the prompt for the provider's cache.
    pub cache_prompt: bool,
}

/// The thinking budget of an Anthropic reasoning effort.
fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "low" => Some(2_048),
        "medium" => Some(8_192),
        "high" => Some(24_576),
        _ => None,
    }
}

/// Output tokens an Anthropic reply keeps beside its thinking budget.
const ANSWER_TOKENS: u64 = 4_096;

impl CallOptions {
    /// The options of a call with `config`; `effort` (the chat's reasoning effort) overrides the
    /// configuration's `reasoning_effort`.
    ///
    /// The configuration's `options` are the provider's body keys (`{"reasoning_effort":
    /// "high"}`, Anthropic's `{"thinking": {...}}`), except `prompt_caching` (default true). An
    /// effort becomes `reasoning_effort` for OpenAI-style providers and extended thinking with a
    /// budget for Anthropic (low 2,048, medium 8,192, high 24,576 tokens; `none` turns it off),
    /// which then also needs room for the answer and no temperature.
    pub fn of(config: &ModelConfig, effort: Option<&str>) -> Self {
        let mut body = config.options.as_object().cloned().unwrap_or_default();
        let cache_prompt = body
            .remove("prompt_caching")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        // Older configurations kept these among the options.
        let legacy_max = body.remove("max_output_tokens").and_then(|v| v.as_u64());
        let legacy_temperature = body.remove("temperature").and_then(|v| v.as_f64());
        if let Some(serde_json::Value::Object(nested)) = body.remove("provider_options") {
            body.extend(nested);
        }
        let configured_effort = body
            .get("reasoning_effort")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let effort = effort.map(str::to_owned).or(configured_effort);
        let mut max_output_tokens = config
            .max_output_tokens
            .and_then(|n| u64::try_from(n).ok())
            .or(legacy_max);
        let mut temperature = config.temperature.or(legacy_temperature);
        if config.provider == "anthropic" {
            body.remove("reasoning_effort");
            if let Some(budget) = effort.as_deref().and_then(thinking_budget) {
                body.entry("thinking").or_insert_with(
                    || serde_json::json!({"type": "enabled", "budget_tokens": budget}),
                );
            } else if effort.as_deref() == Some("none") {
                body.remove("thinking");
            }
            let budget = body
                .get("thinking")
                .and_then(|t| t.get("budget_tokens"))
                .and_then(|v| v.as_u64());
            if let Some(budget) = budget {
                let needed = budget + ANSWER_TOKENS;
                max_output_tokens = Some(max_output_tokens.map_or(needed, |n| n.max(needed)));
                temperature = None;
            }
        } else if let Some(effort) = effort {
            if effort == "none" {
                body.remove("reasoning_effort");
            } else {
                body.insert("reasoning_effort".into(), effort.into());
            }
        }
        Self {
            max_output_tokens: max_output_tokens.and_then(|n| u32::try_from(n).ok()),
            temperature: temperature.map(|t| t as f32),
            body: (!body.is_empty()).then_some(serde_json::Value::Object(body)),
            cache_prompt,
        }
    }
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

    fn config(provider: &str, options: serde_json::Value) -> ModelConfig {
        ModelConfig {
            id: Uuid::nil(),
            organization_id: Uuid::nil(),
            provider_id: Uuid::nil(),
            provider: provider.into(),
            model: "m".into(),
            base_url: String::new(),
            api_key_ref: String::new(),
            context_limit: 200_000,
            compression_threshold: 70,
            max_output_tokens: None,
            temperature: Some(0.5),
            options,
            is_default: true,
        }
    }

    #[test]
    fn reasoning_becomes_thinking_for_anthropic_and_an_effort_for_openai() {
        use serde_json::json;
        let anthropic = CallOptions::of(&config("anthropic", json!({})), Some("medium"));
        assert_eq!(
            anthropic.body,
            Some(json!({"thinking": {"type": "enabled", "budget_tokens": 8192}}))
        );
        assert_eq!(anthropic.max_output_tokens, Some(8192 + 4096));
        assert_eq!(anthropic.temperature, None, "thinking takes no temperature");
        assert!(anthropic.cache_prompt);

        // The configuration's own effort and body keys; the chat's effort wins.
        let configured = config(
            "openai",
            json!({"reasoning_effort": "low", "prompt_caching": false, "service_tier": "flex"}),
        );
        let openai = CallOptions::of(&configured, None);
        assert_eq!(
            openai.body,
            Some(json!({"reasoning_effort": "low", "service_tier": "flex"}))
        );
        assert!(!openai.cache_prompt);
        assert_eq!(openai.temperature, Some(0.5));
        let high = CallOptions::of(&configured, Some("high"));
        assert_eq!(high.body.unwrap()["reasoning_effort"], "high");
        let none = CallOptions::of(&configured, Some("none"));
        assert_eq!(none.body, Some(json!({"service_tier": "flex"})));

        // No effort: nothing added; an explicit thinking block is kept as configured.
        let plain = CallOptions::of(&config("anthropic", json!({})), None);
        assert_eq!((plain.body, plain.max_output_tokens), (None, None));
        let explicit = config(
            "anthropic",
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        );
        assert_eq!(
            CallOptions::of(&explicit, None).max_output_tokens,
            Some(5120)
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
