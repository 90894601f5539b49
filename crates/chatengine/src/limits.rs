//! Rate limits shared by the chats of a credential (spec/chatretry.md §11.7): a model call that
//! is rate limited with a Retry-After holds back every chat of this replica that uses the same
//! provider credential, and, through the store, those of the other replicas, until it ends;
//! then one call probes before the others go ([`chatretry::SharedLimits`]).
//!
//! The credential is the provider, the base URL it is called at and the API key reference
//! (never the key). A hold heard here is written to the store at once; the holds other
//! replicas wrote are read every `shared_limit_poll`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chaterror::{Classification, ErrorKind};
use chatretry::{Admission, DelaySource, Permit, RetryEvent, SharedLimits};
use chatstore::Change;
use chatstore::models::ModelConfig;
use serde_json::json;

use crate::{EngineConfig, EngineDeps, Shared, TaskCtx, TaskExit, cancelled};

/// The replica's shared limits, publishing to the store; `None` when turned off.
pub(crate) fn build(deps: &EngineDeps, config: &EngineConfig) -> Option<Arc<SharedLimits>> {
    if !config.shared_rate_limits {
        return None;
    }
    let store = deps.store.clone();
    let limits = SharedLimits::new(config.retry.max_inline_retry_after).with_publisher(
        move |credential, hold| {
            let store = store.clone();
            let credential = credential.to_owned();
            let hold_for = hold
                .until
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let reason = reason(&hold.classification);
            // A hold that does not reach the store still holds this replica's chats back.
            tokio::spawn(async move {
                if let Err(err) = store.hold_credential(&credential, hold_for, &reason).await {
                    tracing::warn!(error = %err, "could not share a rate limit with the other replicas");
                }
            });
        },
    );
    Some(limits.shared())
}

/// Reads the holds the other replicas recorded, every `shared_limit_poll` (the engine read
/// them once before it started acquiring).
pub(crate) async fn sync_loop(shared: Arc<Shared>, root: chatretry::CancelToken) {
    if shared.limits.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(shared.config.shared_limit_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = root.cancelled() => return,
            _ = tick.tick() => {}
        }
        refresh(&shared).await;
    }
}

/// Merges the holds recorded in the store into this replica's (a failed read is tried again
/// at the next poll).
pub(crate) async fn refresh(shared: &Shared) {
    let Some(limits) = &shared.limits else {
        return;
    };
    let read = tokio::time::timeout(
        shared.config.lease_stale_after / 3,
        shared.deps.store.credential_holds(),
    );
    let holds = match read.await {
        Ok(Ok(holds)) => holds,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "could not read the shared rate limits");
            return;
        }
        Err(_) => {
            tracing::debug!("reading the shared rate limits timed out");
            return;
        }
    };
    let now = SystemTime::now();
    for hold in holds {
        limits.merge(
            &hold.credential,
            chatretry::Hold {
                until: now + hold.remaining,
                classification: classification(&hold.reason),
            },
            now,
        );
    }
}

/// The key of a configuration's credential: provider, base URL (the provider's default when
/// empty), API key reference.
pub(crate) fn credential_key(config: &ModelConfig) -> String {
    let base_url = if config.base_url.is_empty() {
        crate::models::default_base_url(&config.provider).unwrap_or_default()
    } else {
        config.base_url.trim_end_matches('/')
    };
    format!("{} {} {}", config.provider, base_url, config.api_key_ref)
}

/// What the store keeps of the failure behind a hold.
fn reason(c: &Classification) -> serde_json::Value {
    json!({
        "kind": c.kind.map(ErrorKind::as_str),
        "status_code": c.status_code,
        "provider": c.provider.map(|p| p.as_str()),
        "retry_after_ms": u64::try_from(c.retry_after.as_millis()).unwrap_or(u64::MAX),
    })
}

/// The classification a waiting chat reports for a hold read from the store.
fn classification(reason: &serde_json::Value) -> Classification {
    let kind = reason["kind"]
        .as_str()
        .and_then(ErrorKind::from_wire)
        .unwrap_or(ErrorKind::RateLimit);
    let c = chaterror::normalize(Classification {
        kind: Some(kind),
        retryable: true,
        status_code: reason["status_code"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0),
        retry_after: Duration::from_millis(reason["retry_after_ms"].as_u64().unwrap_or(0)),
        ..Classification::default()
    });
    match reason["provider"].as_str() {
        Some(provider) => c.with_provider(provider),
        None => c,
    }
}

/// Waits until the credential of `config` lets this chat call the provider (`attempts`: the
/// calls it made under this history, for its retry event), and returns the
/// permit to report the call's outcome on (`None` when shared limits are off). While it waits,
/// the chat's retry state says so (`delay_source: shared_limit`), once per hold.
pub(crate) async fn admit(
    t: &TaskCtx,
    attempts: i64,
    config: &ModelConfig,
) -> Result<Option<Permit>, TaskExit> {
    let Some(limits) = &t.shared.limits else {
        return Ok(None);
    };
    let key = credential_key(config);
    let mut announced = None;
    loop {
        let changed = limits.changed();
        let wait = match limits.admit(&key, SystemTime::now()) {
            Admission::Go(permit) => return Ok(Some(permit)),
            Admission::Wait(wait) => wait,
        };
        if let Some(until) = wait.until
            && announced != Some(until)
        {
            announced = Some(until);
            announce(t, attempts, &config.provider, until, wait.classification).await?;
        }
        // A hold ends on its own clock; a probe's outcome is announced. The second bound only
        // re-checks a probe that takes long.
        let bound = wait.until.map_or(PROBE_RECHECK, |until| {
            until
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        let _waiting = t.progress.waiting();
        tokio::select! {
            biased;
            _ = t.token.cancelled() => return Err(cancelled(&t.token)),
            _ = changed => {}
            _ = tokio::time::sleep(bound) => {}
        }
    }
}

/// How often a caller waiting for another's probe looks again without news.
const PROBE_RECHECK: Duration = Duration::from_secs(5);

/// Records that the chat waits for the shared limit until `until` (its `retry` event).
async fn announce(
    t: &TaskCtx,
    attempts: i64,
    provider: &str,
    until: SystemTime,
    classification: Classification,
) -> Result<(), TaskExit> {
    let delay = until
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let event = RetryEvent {
        attempt: u32::try_from(attempts).unwrap_or(0),
        delay,
        delay_source: DelaySource::SharedLimit,
        retrying_at: until,
        error: "another chat using this provider credential was rate limited".to_owned(),
        classification,
        max_attempts: t.shared.config.retry.max_attempts,
        parked: false,
        provider_request_id: None,
    };
    tracing::info!(
        chat_id = %t.chat_id,
        provider,
        delay_ms = delay.as_millis() as u64,
        "waiting for the provider credential's shared rate limit"
    );
    let provider = provider.to_owned();
    t.commit(
        Change::RecordRetryState {
            retry_state: crate::payload::retry_state(&event),
            window_restarts_at: None,
        },
        t.fence(None),
        move || crate::metrics::shared_limit_wait(&provider),
    )
    .await?;
    Ok(())
}
