//! Provider clients for model configurations: one [`ModelClient`] per provider row, built on
//! first use and shared by every turn (spec/engine.md §12.2). Clients never retry.

use std::collections::HashMap;
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
    clients: Mutex<HashMap<Uuid, Arc<ModelClient>>>,
}

impl ModelClients {
    /// Clients with these connect / first-byte timeouts.
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
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
        let api_key =
            read_key(&config.api_key_ref).map_err(|UnreadableKey| ModelSetupError::MissingKey {
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

/// An API key reference that names no readable, non-empty key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the API key reference is not `env:NAME` or `file:PATH` naming a non-empty key")]
pub struct UnreadableKey;

/// Resolves an API key reference: empty = no key, `env:NAME`, `file:PATH`.
pub fn read_key(reference: &str) -> Result<Option<String>, UnreadableKey> {
    if reference.is_empty() {
        return Ok(None);
    }
    let key = if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name).map_err(|_| UnreadableKey)?
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path).map_err(|_| UnreadableKey)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references() {
        assert_eq!(read_key(""), Ok(None));
        assert_eq!(read_key("plain-secret"), Err(UnreadableKey));
        assert_eq!(
            read_key("env:CHATD_TEST_SURELY_UNSET_VARIABLE"),
            Err(UnreadableKey)
        );
        assert_eq!(read_key("file:/nonexistent/chatd/key"), Err(UnreadableKey));
    }
}
