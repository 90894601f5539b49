//! Model configurations seeded from the daemon's configuration.
//!
//! Operators name their providers where they start the daemon (`--anthropic-api-key-ref`,
//! `--openai-compat-base-url`, `[[model]]` tables of the configuration file, …) instead of
//! calling the admin API after the first start. At every start each seed is applied to one
//! organization (`--models-organization`, `default` unless told otherwise) through
//! [`ModelStore::seed_model_config`]: a model the organization lacks is added (the first
//! becomes its default), an existing one takes only the seed's API key reference, and what
//! administrators changed since stays as they left it. Nothing is ever removed.
//!
//! Seeds are validated by the same rules as `CreateModelConfig` before the daemon connects
//! anywhere, so a typo stops the start with a clear message.

use chatengine::models::KeyReferences;
use chatstore::models::{NewModelConfig, Seeded};
use chatstore::prelude::*;
use serde::Deserialize;
use tracing::{info, warn};

use crate::ChatdError;
use crate::admin::{
    DEFAULT_COMPRESSION_THRESHOLD, MAX_DISPLAY_NAME_CHARS, check_base_url, check_context_limit,
    check_key_ref, check_model, check_provider_url,
};

/// A provider API chatd can talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeedProvider {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's API.
    Openai,
    /// Any OpenAI-compatible server (needs a base URL).
    OpenaiCompat,
}

impl SeedProvider {
    /// The provider kind as stored.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
            Self::OpenaiCompat => "openai-compat",
        }
    }

    /// The context window assumed when a seed names none, in tokens: what the provider's
    /// current models offer at least (a smaller guess only compacts earlier).
    pub fn default_context_limit(self) -> i64 {
        match self {
            Self::Anthropic => 200_000,
            Self::Openai => 128_000,
            Self::OpenaiCompat => 32_768,
        }
    }
}

/// One model to seed: a `[[model]]` table of the configuration file, or one of the models named
/// by the provider flags.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ModelSeed {
    /// `anthropic`, `openai` or `openai-compat`.
    pub provider: SeedProvider,
    /// The provider's model id, e.g. `claude-sonnet-4-5`.
    pub model: String,
    /// Name shown to users; empty = the model id.
    #[serde(default)]
    pub display_name: String,
    /// The provider's base URL; empty = its public endpoint (required for `openai-compat`).
    #[serde(default)]
    pub base_url: String,
    /// Where the API key comes from: `env:NAME` or `file:PATH`; empty = no key.
    #[serde(default)]
    pub api_key_ref: String,
    /// Context window in tokens; `None` = [`SeedProvider::default_context_limit`].
    #[serde(default)]
    pub context_limit: Option<i64>,
    /// Make it the organization's default when it is added (an existing one keeps its role).
    #[serde(default)]
    pub default: bool,
}

impl ModelSeed {
    /// The configuration a seed stands for in an organization.
    fn new_config(
        &self,
        organization_id: uuid::Uuid,
        keys: &KeyReferences,
    ) -> Result<NewModelConfig, tonic::Status> {
        let seed = self;
        let base_url = check_base_url(&seed.base_url)?;
        check_provider_url(seed.provider.kind(), &base_url)?;
        let display_name = seed.display_name.trim().to_owned();
        crate::auth::check_len("display_name", &display_name, MAX_DISPLAY_NAME_CHARS)?;
        Ok(NewModelConfig {
            organization_id,
            provider: seed.provider.kind().to_owned(),
            model: check_model(&seed.model)?,
            display_name,
            base_url,
            api_key_ref: check_key_ref(keys, &seed.api_key_ref)?,
            context_limit: check_context_limit(
                seed.context_limit
                    .unwrap_or_else(|| seed.provider.default_context_limit()),
            )?,
            compression_threshold: DEFAULT_COMPRESSION_THRESHOLD,
            max_output_tokens: None,
            temperature: None,
            enabled: true,
            is_default: seed.default,
            options: serde_json::Value::Object(serde_json::Map::new()),
        })
    }
}

/// The models to seed and where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSeeding {
    /// The name of the organization the models are added to.
    pub organization: String,
    /// The models, in order.
    pub seeds: Vec<ModelSeed>,
    /// The environment variables (`ANTHROPIC_API_KEY`, …) whose provider is seeded because the
    /// variable is set and nothing else configures it.
    pub from_environment: Vec<&'static str>,
    /// The API key references chatd reads: seeds, the admin API and the engine all follow it.
    pub keys: KeyReferences,
}

impl ModelSeeding {
    /// Checks every seed by the rules of `CreateModelConfig`, and that no model is named twice
    /// (two seeds of one model with different keys would fight at every start).
    pub fn check(&self) -> Result<(), ChatdError> {
        let invalid = |seed: &ModelSeed, why: &str| {
            ChatdError::InvalidConfig(format!(
                "model {:?} of provider {}: {why}",
                seed.model,
                seed.provider.kind()
            ))
        };
        for (i, seed) in self.seeds.iter().enumerate() {
            seed.new_config(uuid::Uuid::nil(), &self.keys)
                .map_err(|status| invalid(seed, status.message()))?;
            let same = |other: &ModelSeed| {
                (other.provider, other.model.trim(), other.base_url.trim())
                    == (seed.provider, seed.model.trim(), seed.base_url.trim())
            };
            if self.seeds[..i].iter().any(same) {
                return Err(invalid(seed, "configured twice"));
            }
        }
        if !self.seeds.is_empty() && self.organization.trim().is_empty() {
            return Err(ChatdError::InvalidConfig(
                "--models-organization must name an organization".into(),
            ));
        }
        Ok(())
    }

    /// Applies the seeds. Nothing to seed does nothing; a missing organization is logged and
    /// skipped (the next start tries again). A key that cannot be read yet is only a warning:
    /// the secret may be mounted later, and turns report it when it is still missing.
    pub async fn apply(&self, store: &dyn Database) -> Result<(), ChatdError> {
        if self.seeds.is_empty() {
            return Ok(());
        }
        for variable in &self.from_environment {
            info!(
                variable,
                api_key_ref = %format!("env:{variable}"),
                "{variable} is set in chatd's environment: seeding that provider's models with a reference to it"
            );
        }
        let Some(organization_id) = organization_named(store, &self.organization).await? else {
            warn!(
                organization = %self.organization,
                "cannot seed models: no such organization (create it, or pass --models-organization)"
            );
            return Ok(());
        };
        for seed in &self.seeds {
            let config = seed
                .new_config(organization_id, &self.keys)
                .map_err(|status| ChatdError::InvalidConfig(status.message().to_owned()))?;
            let seeded = store.seed_model_config(&config).await?;
            let record = seeded.record();
            let what = match seeded {
                Seeded::Created(_) => "added",
                Seeded::KeyChanged(_) => "took the configured API key reference",
                Seeded::Unchanged(_) => "already configured",
            };
            info!(
                model_config_id = %record.id,
                provider = %record.provider,
                model = %record.model,
                default = record.is_default,
                "seeded model: {what}"
            );
            if self.keys.read(&config.api_key_ref).is_err() {
                warn!(
                    model = %record.model,
                    api_key_ref = %config.api_key_ref,
                    "the API key of a seeded model cannot be read; its turns fail until it can"
                );
            }
        }
        Ok(())
    }
}

/// The id of the organization with this name.
async fn organization_named(
    store: &dyn Database,
    name: &str,
) -> Result<Option<uuid::Uuid>, ChatdError> {
    const PAGE: i64 = 100;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_organizations(None, after.as_deref(), PAGE)
            .await?;
        if let Some(found) = page.iter().find(|o| o.name == name) {
            return Ok(Some(found.id));
        }
        match page.last() {
            Some(last) if i64::try_from(page.len()).unwrap_or(i64::MAX) == PAGE => {
                after = Some(last.name.clone());
            }
            _ => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(provider: SeedProvider, model: &str) -> ModelSeed {
        ModelSeed {
            provider,
            model: model.into(),
            display_name: String::new(),
            base_url: String::new(),
            api_key_ref: String::new(),
            context_limit: None,
            default: false,
        }
    }

    fn check(seeds: Vec<ModelSeed>) -> Result<(), String> {
        ModelSeeding {
            organization: "default".into(),
            seeds,
            from_environment: Vec::new(),
            keys: KeyReferences::default(),
        }
        .check()
        .map_err(|e| e.to_string())
    }

    #[test]
    fn seeds_follow_the_rules_of_create_model_config() {
        assert_eq!(check(vec![seed(SeedProvider::Anthropic, "claude")]), Ok(()));
        let err = check(vec![seed(SeedProvider::OpenaiCompat, "llama")]).unwrap_err();
        assert!(err.contains("base_url is required"), "{err}");
        let err = check(vec![ModelSeed {
            api_key_ref: "sk-ant-the-key-itself".into(),
            ..seed(SeedProvider::Anthropic, "claude")
        }])
        .unwrap_err();
        assert!(err.contains("never the key"), "{err}");
        let err = check(vec![ModelSeed {
            context_limit: Some(0),
            ..seed(SeedProvider::Openai, "gpt")
        }])
        .unwrap_err();
        assert!(
            err.contains("model \"gpt\" of provider openai: context_limit"),
            "{err}"
        );
        let err = check(vec![seed(SeedProvider::Openai, " ")]).unwrap_err();
        assert!(err.contains("model must not be blank"), "{err}");
    }

    #[test]
    fn a_model_named_twice_is_refused() {
        let err = check(vec![
            seed(SeedProvider::Openai, "gpt"),
            ModelSeed {
                api_key_ref: "env:OTHER_API_KEY".into(),
                ..seed(SeedProvider::Openai, "gpt")
            },
        ])
        .unwrap_err();
        assert!(err.contains("configured twice"), "{err}");
        // The same id at another provider is another model.
        assert_eq!(
            check(vec![
                seed(SeedProvider::Openai, "gpt"),
                ModelSeed {
                    base_url: "http://127.0.0.1:8080/v1".into(),
                    ..seed(SeedProvider::OpenaiCompat, "gpt")
                }
            ]),
            Ok(())
        );
    }

    #[test]
    fn model_tables_read_in_kebab_case_and_refuse_unknown_keys() {
        let table: toml::Table = toml::from_str(
            r#"
            provider = "openai-compat"
            model = "qwen"
            base-url = "http://127.0.0.1:8000/v1"
            context-limit = 65536
            default = true
            "#,
        )
        .unwrap();
        let parsed: ModelSeed = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(parsed.provider, SeedProvider::OpenaiCompat);
        assert_eq!(parsed.context_limit, Some(65_536));
        assert!(parsed.default);
        let err =
            toml::from_str::<ModelSeed>("provider = \"openai\"\nmodel = \"x\"\napi-key = \"k\"")
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `api-key`"), "{err}");
        let err = toml::from_str::<ModelSeed>("provider = \"gemini\"\nmodel = \"x\"").unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `gemini`"),
            "{err}"
        );
    }
}
