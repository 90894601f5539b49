//! API tokens (stored as hashes), and model configuration resolution on both backends.

use chatstore::testing::Fixtures as _;
use std::time::Duration;

use chatstore::models::{ModelConfigChanges, NewModelConfig};
use chatstore::postgres::PgStore;
use chatstore::prelude::*;
use chatstore::{StoreConfig, StoreError};
use uuid::Uuid;

use super::support::*;

#[tokio::test]
async fn api_tokens_authenticate_until_revoked_or_expired() {
    let s = Seeded::new().await;
    let store = PgStore::new(s.pool().clone(), StoreConfig::default());
    let key = store.fixture_token(s.user, "laptop", None).await.unwrap();
    assert!(key.token.starts_with("chatd_"));
    let caller = store.authenticate(&key.token).await.unwrap().unwrap();
    assert_eq!(
        (caller.user_id, caller.key_id, caller.role.as_str()),
        (s.user, key.id, "member")
    );

    // Only a hash is stored.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM api_keys WHERE id = $1")
        .bind(key.id)
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert!(
        !key.token
            .as_bytes()
            .windows(stored.len())
            .any(|w| w == stored.as_slice())
    );
    assert_eq!(stored.len(), 32);

    // A wrong secret with the right prefix, garbage, and a revoked token are all refused.
    let (prefix, _) = key.token.rsplit_once('_').unwrap();
    assert!(
        store
            .authenticate(&format!("{prefix}_wrong"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.authenticate("not a token").await.unwrap().is_none());
    store.revoke_api_key(key.id).await.unwrap();
    assert!(store.authenticate(&key.token).await.unwrap().is_none());

    let short = store
        .fixture_token(s.user, "ci", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(store.authenticate(&short.token).await.unwrap().is_some());
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(short.id)
        .execute(s.pool())
        .await
        .unwrap();
    assert!(store.authenticate(&short.token).await.unwrap().is_none());

    let suspended = store.fixture_token(s.user, "x", None).await.unwrap();
    sqlx::query("UPDATE users SET suspended = true WHERE id = $1")
        .bind(s.user)
        .execute(s.pool())
        .await
        .unwrap();
    assert!(
        store
            .authenticate(&suspended.token)
            .await
            .unwrap()
            .is_none()
    );
    s.finish().await;
}

both_backends!(model_configs_resolve_to_the_chats_choice_or_the_organization_default, model_configs_resolve_to_the_chats_choice_or_the_organization_default_on_sqlite => model_configs_resolve_to_the_chats_choice_or_the_organization_default_on(org, model_config));

async fn model_configs_resolve_to_the_chats_choice_or_the_organization_default_on(
    store: &(impl IdentityStore + ModelStore + ?Sized),
    org: Uuid,
    seeded_model: Uuid,
) {
    let local = NewModelConfig {
        organization_id: org,
        provider: "openai-compat".into(),
        model: "local-model".into(),
        base_url: "http://127.0.0.1:8080/v1".into(),
        api_key_ref: "env:LOCAL_KEY".into(),
        context_limit: 32_000,
        compression_threshold: 70,
        enabled: true,
        options: serde_json::json!({}),
        ..NewModelConfig::default()
    };
    let chosen = store.add_model_config(&local).await.unwrap().id;

    let config = store.resolve_model_config(org, Some(chosen)).await.unwrap();
    assert_eq!(
        (
            config.id,
            config.provider.as_str(),
            config.base_url.as_str()
        ),
        (chosen, "openai-compat", "http://127.0.0.1:8080/v1")
    );
    // Unknown or foreign ids fall back to the default (the seeded one).
    assert_eq!(
        store
            .resolve_model_config(org, Some(Uuid::new_v4()))
            .await
            .unwrap()
            .id,
        seeded_model
    );
    assert_eq!(
        store.resolve_model_config(org, None).await.unwrap().id,
        seeded_model
    );
    // A disabled choice falls back too.
    store
        .update_model_config(
            chosen,
            &ModelConfigChanges {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .resolve_model_config(org, Some(chosen))
            .await
            .unwrap()
            .id,
        seeded_model
    );

    // A new default replaces the old one.
    let newer = store
        .add_model_config(&NewModelConfig {
            model: "other".into(),
            context_limit: 8_000,
            is_default: true,
            ..local.clone()
        })
        .await
        .unwrap()
        .id;
    assert_eq!(
        store.resolve_model_config(org, None).await.unwrap().id,
        newer
    );

    let other_org = store.fixture_organization("empty").await.unwrap();
    assert!(matches!(
        store
            .resolve_model_config(other_org, Some(newer))
            .await
            .unwrap_err(),
        StoreError::NoDefaultModelConfig
    ));
    let err = store
        .add_model_config(&NewModelConfig {
            provider: "acme-ai".into(),
            ..local
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown provider kind"), "{err}");
}
