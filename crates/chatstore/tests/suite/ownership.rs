//! Ownership (spec/engine.md §9): acquisition races, fencing, heartbeats, cleanup.

use std::collections::HashMap;
use std::sync::Arc;

use chatstore::types::{Fence, MessagePart, NewMessage};
use chatstore::{Change, LEASE_NOT_HELD, Store, StoreError};
use uuid::Uuid;

use super::support::*;

async fn acquire_all<S: Store>(store: &S, worker: Uuid) -> Vec<Uuid> {
    let mut owned = Vec::new();
    loop {
        let candidates = store.acquisition_candidates(10).await.unwrap();
        if candidates.is_empty() {
            return owned;
        }
        let mut progress = false;
        for chat in candidates {
            if store
                .acquire(chat, worker, Uuid::new_v4())
                .await
                .unwrap()
                .is_some()
            {
                owned.push(chat);
                progress = true;
            }
        }
        if !progress {
            return owned;
        }
    }
}

pub async fn eight_workers_racing_over_fifty_chats_own_each_exactly_once<B: Backend>(b: B) {
    let s = b.fixture();
    let store = Arc::new(b.store().clone());
    for _ in 0..50 {
        store.create_chat(s.new_chat()).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let worker = Uuid::new_v4();
            (worker, acquire_all(store.as_ref(), worker).await)
        }));
    }
    let mut owners: HashMap<Uuid, Uuid> = HashMap::new();
    for task in tasks {
        let (worker, chats) = task.await.unwrap();
        for chat in chats {
            assert!(
                owners.insert(chat, worker).is_none(),
                "chat {chat} acquired twice"
            );
        }
    }
    assert_eq!(owners.len(), 50);
    for (chat, worker) in owners {
        assert_eq!(store.chat(chat).await.unwrap().worker_id, Some(worker));
    }
    assert!(store.acquisition_candidates(10).await.unwrap().is_empty());
    drop(store);
    b.finish().await;
}

/// Acquires in batches of 4 until a batch comes back empty; the chats with their runners.
async fn acquire_all_in_batches<S: Store>(store: &S, worker: Uuid) -> Vec<(Uuid, Uuid)> {
    let mut owned = Vec::new();
    loop {
        let batch = store.acquire_batch(worker, 4).await.unwrap();
        if batch.is_empty() {
            return owned;
        }
        for chat in batch {
            assert_eq!(chat.worker_id, Some(worker));
            owned.push((chat.id, chat.runner_id.expect("a runner")));
        }
    }
}

pub async fn workers_acquiring_in_batches_and_one_by_one_own_each_chat_exactly_once<B: Backend>(
    b: B,
) {
    let s = b.fixture();
    let store = Arc::new(b.store().clone());
    for _ in 0..60 {
        store.create_chat(s.new_chat()).await.unwrap();
    }
    // Replicas of two kinds race: batch acquirers and single acquirers.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let worker = Uuid::new_v4();
            let owned = if i % 2 == 0 {
                acquire_all_in_batches(store.as_ref(), worker).await
            } else {
                let chats = acquire_all(store.as_ref(), worker).await;
                let mut owned = Vec::new();
                for chat in chats {
                    owned.push((chat, store.chat(chat).await.unwrap().runner_id.unwrap()));
                }
                owned
            };
            (worker, owned)
        }));
    }
    let mut owners: HashMap<Uuid, Uuid> = HashMap::new();
    for task in tasks {
        let (worker, owned) = task.await.unwrap();
        for (chat, runner) in owned {
            assert!(
                owners.insert(chat, worker).is_none(),
                "chat {chat} acquired twice"
            );
            // Each owner holds a live lease it can renew.
            assert_eq!(
                store.heartbeat(worker, &[(chat, runner)]).await.unwrap(),
                [(chat, runner)]
            );
        }
    }
    assert_eq!(owners.len(), 60);
    assert!(
        store
            .acquire_batch(Uuid::new_v4(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    drop(store);
    b.finish().await;
}

pub async fn a_batch_takes_the_oldest_candidates_first_and_no_more_than_asked<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store();
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(store.create_chat(s.new_chat()).await.unwrap().chat);
    }
    let worker = Uuid::new_v4();
    let first = store.acquire_batch(worker, 2).await.unwrap();
    let ids: Vec<Uuid> = first.iter().map(|c| c.id).collect();
    assert_eq!(ids, [created[0].id, created[1].id]);
    for (acquired, before) in first.iter().zip(&created) {
        // One transition each: the snapshot moved by one, nothing else but the owner changed.
        assert_eq!(acquired.snapshot_version, before.snapshot_version + 1);
        assert_eq!(acquired.history_version, before.history_version);
        assert_eq!(acquired.status, before.status);
        assert_eq!(store.chat(acquired.id).await.unwrap(), *acquired);
    }
    let rest = store.acquire_batch(worker, 2).await.unwrap();
    assert_eq!(
        rest.iter().map(|c| c.id).collect::<Vec<_>>(),
        [created[2].id]
    );
    assert!(store.acquire_batch(worker, 2).await.unwrap().is_empty());
    b.finish().await;
}

pub async fn a_stale_runners_commit_is_rejected_after_a_takeover<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = store.create_chat(s.new_chat()).await.unwrap().chat;
    let (old_worker, old_runner) = (Uuid::new_v4(), Uuid::new_v4());
    let acquired = store
        .acquire(chat.id, old_worker, old_runner)
        .await
        .unwrap()
        .unwrap();
    let old_fence = Fence {
        worker_id: old_worker,
        runner_id: old_runner,
        history_version: Some(acquired.history_version),
        generation_attempt: Some(acquired.generation_attempt),
    };
    // The old owner's heartbeat goes stale; another worker takes over.
    b.expire_leases(chat.id).await;
    assert_eq!(
        store.acquisition_candidates(10).await.unwrap(),
        vec![chat.id]
    );
    let new_worker = Uuid::new_v4();
    assert!(
        store
            .acquire(chat.id, new_worker, Uuid::new_v4())
            .await
            .unwrap()
            .is_some()
    );

    let before = store.history(chat.id, true).await.unwrap();
    let err = store
        .apply(
            chat.id,
            Change::CommitStep {
                messages: vec![NewMessage::assistant(vec![MessagePart::text("late")])],
                consume_compaction: false,
            },
            Some(old_fence),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FenceMismatch(_)), "{err}");
    assert_eq!(
        store.history(chat.id, true).await.unwrap(),
        before,
        "a rejected commit leaves no trace"
    );
    assert_eq!(
        store.chat(chat.id).await.unwrap().worker_id,
        Some(new_worker)
    );
    b.finish().await;
}

pub async fn the_generation_fence_rejects_an_older_attempt<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = store.create_chat(s.new_chat()).await.unwrap().chat;
    let (worker, runner) = (Uuid::new_v4(), Uuid::new_v4());
    let chat = store
        .acquire(chat.id, worker, runner)
        .await
        .unwrap()
        .unwrap();
    let fence = |attempt| Fence {
        worker_id: worker,
        runner_id: runner,
        history_version: Some(chat.history_version),
        generation_attempt: attempt,
    };
    store
        .apply(chat.id, Change::RecordGenerationAttempt, Some(fence(None)))
        .await
        .unwrap();
    store
        .apply(chat.id, Change::RecordGenerationAttempt, Some(fence(None)))
        .await
        .unwrap();
    let commit = || Change::CommitStep {
        messages: vec![NewMessage::assistant(vec![MessagePart::text("answer")])],
        consume_compaction: false,
    };
    let err = store
        .apply(chat.id, commit(), Some(fence(Some(1))))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FenceMismatch(_)), "{err}");
    store
        .apply(chat.id, commit(), Some(fence(Some(2))))
        .await
        .unwrap();
    b.finish().await;
}

pub async fn a_heartbeat_renews_fresh_leases_and_never_revives_a_stale_one<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let worker = Uuid::new_v4();
    let fresh = created(&store, s.new_chat()).await;
    let stale = created(&store, s.new_chat()).await;
    let (fresh_runner, stale_runner) = (Uuid::new_v4(), Uuid::new_v4());
    store
        .acquire(fresh, worker, fresh_runner)
        .await
        .unwrap()
        .unwrap();
    store
        .acquire(stale, worker, stale_runner)
        .await
        .unwrap()
        .unwrap();
    b.expire_leases(stale).await;
    let renewed = store
        .heartbeat(
            worker,
            &[
                (fresh, fresh_runner),
                (stale, stale_runner),
                (fresh, Uuid::new_v4()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(renewed, vec![(fresh, fresh_runner)]);
    // Another worker cannot renew a lease it does not hold.
    assert!(
        store
            .heartbeat(Uuid::new_v4(), &[(fresh, fresh_runner)])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.cleanup_heartbeats().await.unwrap(), 1);
    assert_eq!(store.acquisition_candidates(10).await.unwrap(), vec![stale]);
    b.finish().await;
}

pub async fn abandon_needs_the_owner_and_leaves_the_chat_acquirable<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = created(&store, s.new_chat()).await;
    let (worker, runner) = (Uuid::new_v4(), Uuid::new_v4());
    store.acquire(chat, worker, runner).await.unwrap().unwrap();
    let wrong = Fence {
        worker_id: Uuid::new_v4(),
        runner_id: runner,
        history_version: None,
        generation_attempt: None,
    };
    assert!(matches!(
        store
            .apply(chat, Change::Abandon, Some(wrong))
            .await
            .unwrap_err(),
        StoreError::FenceMismatch(_)
    ));
    let right = Fence {
        worker_id: worker,
        ..wrong
    };
    let chat_after = store
        .apply(chat, Change::Abandon, Some(right))
        .await
        .unwrap()
        .chat;
    assert_eq!((chat_after.worker_id, chat_after.runner_id), (None, None));
    assert_eq!(store.acquisition_candidates(10).await.unwrap(), vec![chat]);
    b.finish().await;
}

pub async fn the_tool_ledger_records_a_runners_call_only_while_it_holds_the_live_lease<
    B: Backend,
>(
    b: B,
) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = created(&store, s.new_chat()).await;
    let (worker, runner) = (Uuid::new_v4(), Uuid::new_v4());
    store.acquire(chat, worker, runner).await.unwrap().unwrap();
    let begin = |call: &'static str, runner| {
        let store = store.clone();
        async move {
            store
                .begin_tool_execution(chat, call, "execute", &[1; 32], runner)
                .await
        }
    };
    let refused = |result: Result<_, StoreError>| {
        assert!(
            matches!(result, Err(StoreError::FenceMismatch(why)) if why == LEASE_NOT_HELD),
            "{result:?}"
        );
    };
    // The owner records its call; a replay by the owner reads it back.
    assert_eq!(begin("call-1", Some(runner)).await.unwrap(), None);
    assert!(begin("call-1", Some(runner)).await.unwrap().is_some());
    // Another runner records nothing, not even a replay of a recorded call.
    refused(begin("call-2", Some(Uuid::new_v4())).await);
    refused(begin("call-1", Some(Uuid::new_v4())).await);
    // Once its lease lapses, neither does the owner.
    b.expire_leases(chat).await;
    refused(begin("call-2", Some(runner)).await);
    // Nothing was written for call-2: a call without a runner (not fenced) is its first.
    assert_eq!(begin("call-2", None).await.unwrap(), None);
    b.finish().await;
}

pub async fn candidates_are_ordered_interrupting_then_requires_action_then_running<B: Backend>(
    b: B,
) {
    let s = b.fixture();
    let store = b.store().clone();
    let running = created(&store, s.new_chat()).await;
    let interrupting = created(&store, s.new_chat()).await;
    // Owned and then interrupted, then the lease lapses.
    let (worker, runner) = (Uuid::new_v4(), Uuid::new_v4());
    store
        .acquire(interrupting, worker, runner)
        .await
        .unwrap()
        .unwrap();
    store
        .apply(interrupting, Change::Interrupt, None)
        .await
        .unwrap();
    b.expire_leases(interrupting).await;
    assert_eq!(
        store.acquisition_candidates(10).await.unwrap(),
        vec![interrupting, running]
    );
    b.finish().await;
}

/// Lease renewals have connections of their own: with every connection of the store's pool
/// taken (a flood of stream reads), a heartbeat still renews its leases.
#[tokio::test]
async fn heartbeats_renew_leases_while_the_pool_is_exhausted() {
    use chatstore::postgres::{PgStore, PoolConfig};
    let s = Seeded::new().await;
    let chat = s.chat().await;
    let pool = chatstore::postgres::connect(
        &s.db.url,
        &PoolConfig {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_millis(500),
        },
    )
    .await
    .unwrap();
    let store = PgStore::new(pool.clone(), chatstore::StoreConfig::default());
    let (worker, runner) = (Uuid::new_v4(), Uuid::new_v4());
    store.acquire(chat, worker, runner).await.unwrap().unwrap();
    let _held = pool.acquire().await.unwrap();
    assert!(
        store.chat(chat).await.is_err(),
        "the store's pool is exhausted"
    );
    let renewed = store.heartbeat(worker, &[(chat, runner)]).await.unwrap();
    assert_eq!(renewed, vec![(chat, runner)]);
    s.finish().await;
}
