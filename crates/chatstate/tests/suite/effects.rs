//! The effects of transitions and the cross-cutting rules of spec/engine.md §4 and §6, plus a
//! property test that drives the reference model with random transition sequences.

use chatstate::{
    BusyBehavior, CancelReason, ChatFacts, ChatModel, ChatStatus, Effect, ExecState, StepContent,
    Transition, plan,
};
use proptest::prelude::*;

fn facts(status: ChatStatus, queue_len: usize) -> ChatFacts {
    ChatFacts {
        status: Some(status),
        queue_len,
        owned: true,
        pending_dynamic_calls: 1,
        ..ChatFacts::default()
    }
}

fn effects(f: &ChatFacts, t: Transition) -> Vec<Effect> {
    plan(f, t).unwrap().effects
}

macro_rules! reason_rows {
    ($($name:ident: $facts:expr, $t:expr => $effect:expr;)*) => {$(
        #[test]
        fn $name() {
            let e = effects(&$facts, $t);
            assert!(e.contains(&$effect), "{:?} lacks {:?}", e, $effect);
        }
    )*};
}

reason_rows! {
    send_from_waiting_cancels_with_new_user_message: facts(ChatStatus::Waiting, 0), Transition::SendMessage(BusyBehavior::Queue) => Effect::CancelOpenToolCalls(CancelReason::NewUserMessage);
    send_from_error_with_queue_cancels_with_promotion: facts(ChatStatus::Error, 1), Transition::SendMessage(BusyBehavior::Queue) => Effect::CancelOpenToolCalls(CancelReason::QueuedPromotion);
    interrupting_send_from_a_cancels_with_user_message: facts(ChatStatus::RequiresAction, 0), Transition::SendMessage(BusyBehavior::Interrupt) => Effect::CancelPendingDynamicCalls(CancelReason::UserMessage);
    edit_cancels_with_message_edit: facts(ChatStatus::Running, 0), Transition::EditMessage => Effect::CancelOpenToolCalls(CancelReason::MessageEdit);
    interrupt_from_a_cancels_with_user: facts(ChatStatus::RequiresAction, 0), Transition::Interrupt => Effect::CancelPendingDynamicCalls(CancelReason::User);
    timeout_cancels_with_timed_out: facts(ChatStatus::RequiresAction, 0), Transition::CancelRequiresAction => Effect::CancelPendingDynamicCalls(CancelReason::TimedOut);
    reconcile_cancels_with_invalid_state: facts(ChatStatus::Legacy("completed".into()), 0), Transition::ReconcileInvalidState => Effect::CancelPendingDynamicCalls(CancelReason::InvalidState);
    promote_from_error_cancels_with_promotion: facts(ChatStatus::Error, 2), Transition::PromoteQueuedMessage => Effect::CancelOpenToolCalls(CancelReason::QueuedPromotion);
    promote_from_a_cancels_with_promotion: facts(ChatStatus::RequiresAction, 2), Transition::PromoteQueuedMessage => Effect::CancelOpenToolCalls(CancelReason::QueuedPromotion);
    finish_turn_with_backlog_cancels_with_promotion: facts(ChatStatus::Running, 1), Transition::FinishTurn => Effect::CancelOpenToolCalls(CancelReason::QueuedPromotion);
    finish_interruption_with_backlog_cancels_with_promotion: facts(ChatStatus::Interrupting, 1), Transition::FinishInterruption => Effect::CancelOpenToolCalls(CancelReason::QueuedPromotion);
    reconcile_stores_the_invalid_state_error: facts(ChatStatus::Legacy("paused".into()), 0), Transition::ReconcileInvalidState => Effect::StoreInvalidStateError;
    archiving_resets_the_pin_order: facts(ChatStatus::Waiting, 0), Transition::SetArchived(true) => Effect::ResetPinOrder;
    compaction_clears_ownership: facts(ChatStatus::Waiting, 0), Transition::RequestCompaction => Effect::ClearOwnership;
    compaction_grants_a_history_epoch: facts(ChatStatus::Error, 0), Transition::RequestCompaction => Effect::GrantHistoryEpoch;
    edit_clears_the_queue: facts(ChatStatus::Error, 3), Transition::EditMessage => Effect::ClearQueue;
    entering_requires_action_sets_the_deadline: facts(ChatStatus::Running, 0), Transition::EnterRequiresAction => Effect::SetDeadline;
    finish_error_stores_the_error: facts(ChatStatus::Running, 0), Transition::FinishError => Effect::StoreLastError;
}

#[test]
fn cancellation_reasons_read_as_the_spec_says() {
    let texts: Vec<&str> = [
        CancelReason::NewUserMessage,
        CancelReason::QueuedPromotion,
        CancelReason::UserMessage,
        CancelReason::MessageEdit,
        CancelReason::User,
        CancelReason::TimedOut,
        CancelReason::InvalidState,
    ]
    .map(CancelReason::text)
    .to_vec();
    assert_eq!(
        texts,
        [
            "Tool execution interrupted by new user message",
            "Tool execution interrupted by queued message promotion",
            "Tool execution interrupted by user message",
            "Tool execution interrupted by message edit",
            "Tool execution interrupted by user",
            "Tool execution timed out",
            "Tool execution canceled due to invalid chat state",
        ]
    );
}

#[test]
fn cancellations_come_before_the_user_message() {
    let e = effects(
        &facts(ChatStatus::Waiting, 0),
        Transition::SendMessage(BusyBehavior::Queue),
    );
    let cancel = e
        .iter()
        .position(|x| matches!(x, Effect::CancelOpenToolCalls(_)))
        .unwrap();
    let insert = e
        .iter()
        .position(|x| *x == Effect::InsertUserMessage)
        .unwrap();
    assert!(cancel < insert);
}

#[test]
fn leaving_error_clears_last_error_but_archiving_does_not() {
    assert!(
        effects(
            &facts(ChatStatus::Error, 0),
            Transition::SendMessage(BusyBehavior::Queue)
        )
        .contains(&Effect::ClearLastError)
    );
    assert!(
        effects(&facts(ChatStatus::Error, 0), Transition::ClearContext)
            .contains(&Effect::ClearLastError)
    );
    assert!(
        !effects(&facts(ChatStatus::Error, 0), Transition::SetArchived(true))
            .contains(&Effect::ClearLastError)
    );
}

#[test]
fn the_compaction_marker_survives_queueing_sends_and_ownership_changes() {
    let running = facts(ChatStatus::Running, 0);
    for t in [
        Transition::SendMessage(BusyBehavior::Queue),
        Transition::SendMessage(BusyBehavior::Interrupt),
        Transition::Acquire,
        Transition::Abandon,
        Transition::RecordGenerationAttempt,
        Transition::CommitStep {
            consume_compaction: false,
        },
    ] {
        assert!(
            !effects(&running, t).contains(&Effect::ClearCompactionRequested),
            "{t:?}"
        );
    }
    for t in [
        Transition::FinishTurn,
        Transition::EditMessage,
        Transition::FinishError,
        Transition::CommitStep {
            consume_compaction: true,
        },
    ] {
        assert!(
            effects(&running, t).contains(&Effect::ClearCompactionRequested),
            "{t:?}"
        );
    }
}

#[test]
fn retry_state_is_cleared_when_the_attempt_changes_or_the_chat_stops_running() {
    let running = facts(ChatStatus::Running, 0);
    assert!(
        effects(&running, Transition::RecordGenerationAttempt).contains(&Effect::ClearRetryState)
    );
    assert!(effects(&running, Transition::FinishError).contains(&Effect::ClearRetryState));
    assert!(!effects(&running, Transition::RecordRetryState).contains(&Effect::ClearRetryState));
}

/// One random step: a transition, a target pick and what a commit would contain.
fn step() -> impl Strategy<Value = (Transition, usize, StepContent)> {
    let transition = prop::sample::select(Transition::ALL.to_vec());
    let content = prop_oneof![
        (0u8..3, 0u8..2).prop_map(|(local_calls, dynamic_calls)| StepContent::Assistant {
            local_calls,
            dynamic_calls
        }),
        Just(StepContent::LocalResults),
    ];
    (transition, 0usize..8, content)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// After every accepted transition the model agrees with the plan and the spec's
    /// invariants hold.
    #[test]
    fn random_sequences_keep_the_invariants(steps in prop::collection::vec(step(), 1..60)) {
        let mut model = ChatModel::default();
        model.apply(Transition::Create, 0, StepContent::LocalResults).unwrap();
        for (t, pick, content) in steps {
            let before = model.clone();
            match model.apply(t, pick, content) {
                Ok(Some(p)) => {
                    prop_assert_eq!(model.state(), p.to, "{:?} from {}", t, before.state());
                    prop_assert_ne!(p.to, ExecState::Invalid);
                    check_invariants(&before, &model, t)?;
                }
                Ok(None) | Err(_) => prop_assert_eq!(&model, &before, "a refused transition wrote something"),
            }
        }
    }
}

fn check_invariants(
    before: &ChatModel,
    after: &ChatModel,
    t: Transition,
) -> Result<(), TestCaseError> {
    prop_assert!(
        !after.user_message_over_open_call,
        "a user message entered history over an unanswered call ({t:?})"
    );
    prop_assert!(after.queue.len() <= chatstate::MAX_QUEUE);
    let left_error = matches!(before.state(), ExecState::E0 | ExecState::E1)
        && !matches!(
            after.state(),
            ExecState::E0 | ExecState::E1 | ExecState::XE0 | ExecState::XE1
        );
    if left_error {
        prop_assert!(
            after.last_error.is_none(),
            "leaving error kept last_error ({t:?})"
        );
    }
    if after.generation_attempt != before.generation_attempt {
        prop_assert!(
            !after.retry_state,
            "retry_state survived an attempt change ({t:?})"
        );
    }
    if after.status != Some(ChatStatus::Running) {
        prop_assert!(!after.retry_state, "retry_state outside running ({t:?})");
    }
    prop_assert_eq!(
        after.deadline,
        matches!(after.state(), ExecState::A0 | ExecState::A1),
        "the action deadline is set exactly in requires_action ({:?})",
        t
    );
    if matches!(after.state(), ExecState::A0 | ExecState::A1) {
        prop_assert!(after.facts().pending_dynamic_calls > 0);
    }
    Ok(())
}
