//! What the chat API reads and writes directly: chat listings (order, cursor, filters), history
//! pages, metadata writes.

use std::collections::BTreeMap;

use chatstore::types::{MessagePart, NewChat, NewMessage, Role};
use chatstore::{Change, ChatCursor, ChatListQuery, ChatMetadata, MessagePage, Store};
use uuid::Uuid;

use super::support::*;

async fn create(store: &impl Store, s: &Fixture, title: &str, labels: &[(&str, &str)]) -> Uuid {
    store
        .create_chat(NewChat {
            title: Some(title.to_owned()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..s.new_chat()
        })
        .await
        .unwrap()
        .chat
        .id
}

fn query(s: &Fixture, limit: i64) -> ChatListQuery {
    ChatListQuery {
        owner_id: s.user,
        limit,
        ..ChatListQuery::default()
    }
}

fn titles(chats: &[chatstore::types::Chat]) -> Vec<&str> {
    chats.iter().map(|c| c.title.as_str()).collect()
}

pub async fn chats_list_pinned_first_then_newest_and_pages_follow_the_cursor<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let mut ids = Vec::new();
    for title in ["a", "b", "c", "d", "e"] {
        ids.push(create(&store, &s, title, &[]).await);
    }
    // "b" is pinned; "d" was touched last.
    store
        .update_chat_metadata(
            ids[1],
            &ChatMetadata {
                pin_order: Some(3),
                ..ChatMetadata::default()
            },
        )
        .await
        .unwrap();
    store
        .update_chat_metadata(
            ids[3],
            &ChatMetadata {
                title: Some("d2".into()),
                ..ChatMetadata::default()
            },
        )
        .await
        .unwrap();

    let first = store.list_chats(&query(&s, 2)).await.unwrap();
    assert_eq!(titles(&first), ["b", "d2"]);
    let mut q = query(&s, 2);
    q.after = Some(ChatCursor::of(&first[1]));
    let second = store.list_chats(&q).await.unwrap();
    assert_eq!(titles(&second), ["e", "c"]);
    q.after = Some(ChatCursor::of(&second[1]));
    let third = store.list_chats(&q).await.unwrap();
    assert_eq!(titles(&third), ["a"]);

    // Another user's chats never show.
    let other = ChatListQuery {
        owner_id: Uuid::new_v4(),
        ..query(&s, 50)
    };
    assert!(store.list_chats(&other).await.unwrap().is_empty());
    b.finish().await;
}

pub async fn chats_filter_by_archived_labels_and_title<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    create(&store, &s, "Billing fix", &[("project", "billing")]).await;
    create(&store, &s, "100% done_now", &[("project", "web")]).await;
    let archived = create(&store, &s, "old", &[("project", "billing")]).await;
    // Only an idle chat can be archived: finish its turn first.
    b.force_status(archived, "waiting").await;
    store
        .apply(archived, Change::SetArchived(true), None)
        .await
        .unwrap();

    let mut q = query(&s, 50);
    q.labels = BTreeMap::from([("project".to_owned(), "billing".to_owned())]);
    assert_eq!(
        titles(&store.list_chats(&q).await.unwrap()),
        ["Billing fix"]
    );
    q.archived = true;
    assert_eq!(titles(&store.list_chats(&q).await.unwrap()), ["old"]);

    let mut q = query(&s, 50);
    q.title_query = "BILLING".into();
    assert_eq!(
        titles(&store.list_chats(&q).await.unwrap()),
        ["Billing fix"]
    );
    // Wildcards are matched literally.
    q.title_query = "0% d".into();
    assert_eq!(
        titles(&store.list_chats(&q).await.unwrap()),
        ["100% done_now"]
    );
    q.title_query = "%".into();
    assert_eq!(
        titles(&store.list_chats(&q).await.unwrap()),
        ["100% done_now"]
    );
    q.title_query = "_".into();
    assert_eq!(
        titles(&store.list_chats(&q).await.unwrap()),
        ["100% done_now"]
    );
    b.finish().await;
}

#[test]
fn cursors_round_trip_and_junk_is_refused() {
    let cursor = ChatCursor {
        pin_order: -1,
        updated_at_micros: 1_700_000_000_123_456,
        id: Uuid::new_v4(),
    };
    assert_eq!(ChatCursor::decode(&cursor.encode()), Some(cursor));
    for junk in ["", "c1.", "c1.1.2", "c1.1.2.nope", "c2.1.2.3", "c1.x.2.3"] {
        assert_eq!(ChatCursor::decode(junk), None, "{junk:?}");
    }
    let extra = format!("{}.9", cursor.encode());
    assert_eq!(ChatCursor::decode(&extra), None);
}

pub async fn history_pages_run_backwards_from_the_newest_or_forwards_from_an_id<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = create(&store, &s, "t", &[]).await;
    // Five assistant steps of the running turn, committed by its owner.
    let owner = Uuid::new_v4();
    let runner = Uuid::new_v4();
    store.acquire(chat, owner, runner).await.unwrap().unwrap();
    let fence = |h| chatstore::types::Fence {
        worker_id: owner,
        runner_id: runner,
        history_version: Some(h),
        generation_attempt: None,
    };
    for n in 0..5 {
        let c = store.chat(chat).await.unwrap();
        store
            .apply(
                chat,
                Change::CommitStep {
                    messages: vec![NewMessage::assistant(vec![MessagePart::text(format!(
                        "reply {n}"
                    ))])],
                    consume_compaction: false,
                },
                Some(fence(c.history_version)),
            )
            .await
            .unwrap();
    }
    let all: Vec<i64> = store
        .history(chat, false)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(all.len(), 6);

    let page = |before_id, after_id, limit| MessagePage {
        before_id,
        after_id,
        limit,
    };
    let ids = |(messages, more): (Vec<chatstore::types::Message>, bool)| {
        (messages.iter().map(|m| m.id).collect::<Vec<_>>(), more)
    };
    assert_eq!(
        ids(store
            .messages_page(chat, &page(None, None, 4))
            .await
            .unwrap()),
        (all[2..].to_vec(), true)
    );
    assert_eq!(
        ids(store
            .messages_page(chat, &page(Some(all[2]), None, 4))
            .await
            .unwrap()),
        (all[..2].to_vec(), false)
    );
    assert_eq!(
        ids(store
            .messages_page(chat, &page(None, Some(all[0]), 3))
            .await
            .unwrap()),
        (all[1..4].to_vec(), true)
    );
    assert_eq!(
        ids(store
            .messages_page(chat, &page(Some(all[4]), Some(all[1]), 10))
            .await
            .unwrap()),
        (all[2..4].to_vec(), false)
    );
    let (first, _) = store
        .messages_page(chat, &page(None, None, 1))
        .await
        .unwrap();
    assert_eq!(first[0].role, Role::Assistant);
    b.finish().await;
}

pub async fn metadata_writes_change_only_what_is_set<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = create(&store, &s, "before", &[("a", "1")]).await;
    let was = store.chat(chat).await.unwrap();
    let now = store
        .update_chat_metadata(
            chat,
            &ChatMetadata {
                labels: Some(BTreeMap::from([("b".to_owned(), "2".to_owned())])),
                ..ChatMetadata::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(now.title, "before");
    assert_eq!(
        now.labels,
        BTreeMap::from([("b".to_owned(), "2".to_owned())])
    );
    assert!(now.updated_at >= was.updated_at);
    assert_eq!(
        now.snapshot_version, was.snapshot_version,
        "not a transition"
    );

    let missing = store
        .update_chat_metadata(Uuid::new_v4(), &ChatMetadata::default())
        .await;
    assert!(matches!(
        missing,
        Err(chatstore::StoreError::ChatNotFound(_))
    ));
    let unbound = store.unbind_workspace(chat).await.unwrap();
    assert_eq!(unbound.workspace_id, None);
    b.finish().await;
}
