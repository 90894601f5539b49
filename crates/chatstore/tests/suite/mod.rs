/// A domain test on both backends: `$name` on PostgreSQL and `$on_sqlite` on the embedded file,
/// each calling `$body(&store, seed.field, ...)` with the seed's fields named.
macro_rules! both_backends {
    ($name:ident, $on_sqlite:ident => $body:ident($($field:ident),* $(,)?)) => {
        #[tokio::test]
        async fn $name() {
            let s = $crate::suite::support::Seeded::new().await;
            $body(&s.store(), $(s.$field),*).await;
            s.finish().await;
        }

        #[tokio::test]
        async fn $on_sqlite() {
            let s = $crate::suite::support::SqliteSeeded::new().await;
            $body(&s.store, $(s.$field),*).await;
        }
    };
}

mod admin;
mod jobs;
mod listing;
mod model_check;
mod ownership;
mod pubsub;
mod sqlite_file;
mod support;
mod tenancy;
mod transitions;
mod triggers;
mod workspace;

/// The backend-neutral contract of `Store`: one module per backend (`postgres_contract`,
/// `sqlite_contract`), each with `the_database_follows_the_model` and one `#[test]` per contract
/// test listed once below. Another backend adds one `name: Backend` pair.
macro_rules! contract_tests {
    ($($suite:ident: $backend:ident),* ; $tests:tt) => {
        $(contract_tests!(@suite $suite $backend $tests);)*
    };
    (@suite $suite:ident $backend:ident { $($module:ident: [$($test:ident),* $(,)?]),* $(,)? }) => {
        mod $suite {
            #[test]
            fn the_database_follows_the_model() {
                crate::suite::model_check::the_database_follows_the_model::<
                    crate::suite::support::$backend,
                >();
            }

            $(
                mod $module {
                    $(
                        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                        async fn $test() {
                            use crate::suite::support::Backend as _;
                            crate::suite::$module::$test(
                                crate::suite::support::$backend::open().await,
                            )
                            .await;
                        }
                    )*
                }
            )*
        }
    };
}

contract_tests! {
    postgres_contract: PgBackend, sqlite_contract: SqliteBackend;
    {
        ownership: [
            eight_workers_racing_over_fifty_chats_own_each_exactly_once,
            workers_acquiring_in_batches_and_one_by_one_own_each_chat_exactly_once,
            a_batch_takes_the_oldest_candidates_first_and_no_more_than_asked,
            a_stale_runners_commit_is_rejected_after_a_takeover,
            the_generation_fence_rejects_an_older_attempt,
            a_heartbeat_renews_fresh_leases_and_never_revives_a_stale_one,
            abandon_needs_the_owner_and_leaves_the_chat_acquirable,
            the_tool_ledger_records_a_runners_call_only_while_it_holds_the_live_lease,
            candidates_are_ordered_interrupting_then_requires_action_then_running,
        ],
        listing: [
            chats_list_pinned_first_then_newest_and_pages_follow_the_cursor,
            chats_filter_by_archived_labels_and_title,
            history_pages_run_backwards_from_the_newest_or_forwards_from_an_id,
            metadata_writes_change_only_what_is_set,
        ],
        pubsub: [
            an_unowned_runnable_chat_sends_an_ownership_hint,
            an_owner_hears_of_every_chat_of_theirs_including_title_changes,
        ],
        transitions: [
            create_starts_running_with_history_version_one,
            the_queue_holds_twenty_messages_in_order,
            oversized_and_empty_messages_are_refused,
            unknown_chats_and_messages_are_not_found,
            edit_soft_deletes_from_the_target_and_clears_the_queue,
            requires_action_round_trip_and_result_validation,
            a_new_message_cancels_open_tool_calls_with_the_spec_reason,
            finish_interruption_refuses_to_leave_a_call_unanswered,
            clear_context_inserts_the_boundary_triplet,
            an_invalid_chat_is_reconciled_into_error,
            a_snapshot_reads_chat_history_and_queue_consistently,
        ],
    }
}
