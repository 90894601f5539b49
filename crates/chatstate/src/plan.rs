//! The transition matrix (spec/engine.md §5) and the effects of each transition (§4, §6): a
//! pure function from (facts about the chat, transition) to a [`Plan`] the store applies in one
//! transaction, or a [`TransitionError`].

use crate::{BusyBehavior, CancelReason, ChatStatus, ExecState, Transition, TransitionError};

/// The default queue cap (config `chat.max_queue`).
pub const MAX_QUEUE: usize = 20;

/// What the store knows about a chat, read under the row lock, that the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFacts {
    /// The status; `None` when the chat does not exist.
    pub status: Option<ChatStatus>,
    /// Archived flag.
    pub archived: bool,
    /// Rows in the queue.
    pub queue_len: usize,
    /// A worker owns the chat (`worker_id` set).
    pub owned: bool,
    /// Client-executed tool calls in history without a result.
    pub pending_dynamic_calls: usize,
    /// The queue cap in force (`chat.max_queue`, [`MAX_QUEUE`] by default).
    pub max_queue: usize,
}

impl Default for ChatFacts {
    fn default() -> Self {
        Self {
            status: None,
            archived: false,
            queue_len: 0,
            owned: false,
            pending_dynamic_calls: 0,
            max_queue: MAX_QUEUE,
        }
    }
}

impl ChatFacts {
    /// The execution state these facts derive.
    pub fn state(&self) -> ExecState {
        ExecState::derive(self.status.as_ref(), self.archived, self.queue_len > 0)
    }
}

/// One change the store applies, in plan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Insert the chat row and its initial messages.
    InsertChat,
    /// Write the status column.
    SetStatus(ChatStatus),
    /// Write the archived flag.
    SetArchived(bool),
    /// `pin_order := 0` (archiving).
    ResetPinOrder,
    /// Answer every outstanding tool call in history with a synthetic error result.
    CancelOpenToolCalls(CancelReason),
    /// Answer the pending client-executed (dynamic) tool calls with a synthetic error result.
    CancelPendingDynamicCalls(CancelReason),
    /// Insert the transition's user message into history.
    InsertUserMessage,
    /// Append the transition's user message to the queue tail.
    AppendToQueue,
    /// Move the queue head into history (recording `queued_message_id`; exactly one row).
    PromoteQueueHead,
    /// Move the named queued message to the head (`position = min − 1`).
    MoveQueuedToHead,
    /// Delete the named queued message.
    DeleteQueued,
    /// Delete the whole queue.
    ClearQueue,
    /// Soft-delete the edited message and everything after it.
    SoftDeleteFromTarget,
    /// Insert the replacement message (and optional suffix messages).
    InsertReplacement,
    /// Insert one `tool` message per client result.
    InsertToolResults,
    /// Insert the worker's partial assistant/tool suffix of an interrupted turn.
    InsertPartialOutput,
    /// Insert the messages of one committed step.
    InsertStepMessages,
    /// Insert the clear-context boundary triplet.
    InsertBoundaryTriplet,
    /// `last_error := NULL`.
    ClearLastError,
    /// `last_error :=` the classified error.
    StoreLastError,
    /// `last_error :=` the invalid-state message ([`INVALID_STATE_MESSAGE`]).
    StoreInvalidStateError,
    /// `requires_action_deadline_at := NULL`.
    ClearDeadline,
    /// `requires_action_deadline_at := now() + chat.requires_action_timeout`.
    SetDeadline,
    /// `compaction_requested_at := now()`.
    SetCompactionRequested,
    /// `compaction_requested_at := NULL`.
    ClearCompactionRequested,
    /// Clear `worker_id` and `runner_id`.
    ClearOwnership,
    /// Set `worker_id` and a new `runner_id`; upsert the heartbeat row.
    SetOwnership,
    /// `history_version := snapshot_version`, `generation_attempt := 0`.
    GrantHistoryEpoch,
    /// `generation_attempt += 1`.
    IncrementGenerationAttempt,
    /// `retry_state :=` the retry payload (and open the retry window if closed).
    StoreRetryState,
    /// `retry_state := NULL`.
    ClearRetryState,
}

/// The `last_error.message` a reconciled invalid chat gets.
pub const INVALID_STATE_MESSAGE: &str =
    "chat was in an invalid state; send a new message or edit history to continue";

/// What a transition does: the state it leads to and the effects, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The state before.
    pub from: ExecState,
    /// The state after.
    pub to: ExecState,
    /// The changes to apply, in order.
    pub effects: Vec<Effect>,
}

/// Plans `transition` for a chat described by `facts` (spec/engine.md §4–§6).
///
/// ```
/// use chatstate::{BusyBehavior, ChatFacts, ChatStatus, Effect, ExecState, Transition, plan};
///
/// let idle = ChatFacts { status: Some(ChatStatus::Waiting), ..Default::default() };
/// let p = plan(&idle, Transition::SendMessage(BusyBehavior::Queue)).unwrap();
/// assert_eq!(p.to, ExecState::R0);
/// assert!(p.effects.contains(&Effect::InsertUserMessage));
/// ```
pub fn plan(facts: &ChatFacts, transition: Transition) -> Result<Plan, TransitionError> {
    use Effect as E;
    use ExecState::*;
    use Transition as T;

    let from = facts.state();
    let q = facts.queue_len;
    let not_allowed = || TransitionError::TransitionNotAllowed { from, transition };

    // Ownership transitions are allowed in any existing state (§2.2).
    match transition {
        T::Acquire if from != N => {
            return Ok(finish(facts, transition, from, vec![E::SetOwnership]));
        }
        T::Abandon if from != N => {
            if !facts.owned {
                return Err(TransitionError::NotOwned);
            }
            return Ok(finish(facts, transition, from, vec![E::ClearOwnership]));
        }
        _ => {}
    }
    match (from, transition) {
        (N, T::Create) => {}
        (N, _) => return Err(TransitionError::ChatNotFound),
        (Invalid, T::ReconcileInvalidState) => {}
        (Invalid, _) => return Err(TransitionError::InvalidState),
        _ => {}
    }

    let max_queue = facts.max_queue;
    let queue_full = || TransitionError::MessageQueueFull { max: max_queue };
    // The letter with a queue of `len` rows.
    let running = |len: usize| if len > 0 { R1 } else { R0 };

    let (to, effects) = match (from, transition) {
        (N, T::Create) => (R0, vec![E::InsertChat]),

        // SetArchived: W↔XW, E0↔XE0, E1↔XE1; the no-op direction is refused.
        (W | E0 | E1, T::SetArchived(true)) => {
            let to = match from {
                W => XW,
                E0 => XE0,
                _ => XE1,
            };
            (to, vec![E::SetArchived(true), E::ResetPinOrder])
        }
        (XW | XE0 | XE1, T::SetArchived(false)) => {
            let to = match from {
                XW => W,
                XE0 => E0,
                _ => E1,
            };
            (to, vec![E::SetArchived(false)])
        }

        // SendMessage.
        (W | E0, T::SendMessage(_)) => (
            R0,
            vec![
                E::CancelOpenToolCalls(CancelReason::NewUserMessage),
                E::InsertUserMessage,
                E::SetStatus(ChatStatus::Running),
            ],
        ),
        (E1, T::SendMessage(_)) => {
            if q >= max_queue {
                return Err(queue_full());
            }
            (
                R1,
                vec![
                    E::AppendToQueue,
                    E::CancelOpenToolCalls(CancelReason::QueuedPromotion),
                    E::PromoteQueueHead,
                    E::SetStatus(ChatStatus::Running),
                ],
            )
        }
        (R0 | R1 | I0 | I1 | A0 | A1, T::SendMessage(busy)) => {
            if q >= max_queue {
                return Err(queue_full());
            }
            match (from, busy) {
                (R0 | R1, BusyBehavior::Queue) => (R1, vec![E::AppendToQueue]),
                (R0 | R1, BusyBehavior::Interrupt) => (
                    I1,
                    vec![E::AppendToQueue, E::SetStatus(ChatStatus::Interrupting)],
                ),
                (I0 | I1, _) => (I1, vec![E::AppendToQueue]),
                (_, BusyBehavior::Queue) => (A1, vec![E::AppendToQueue]),
                (_, BusyBehavior::Interrupt) => (
                    R1,
                    vec![
                        E::CancelPendingDynamicCalls(CancelReason::UserMessage),
                        E::AppendToQueue,
                        E::SetStatus(ChatStatus::Running),
                        E::ClearDeadline,
                    ],
                ),
            }
        }

        // EditMessage: from any non-archived existing state → R0.
        (W | E0 | E1 | R0 | R1 | I0 | I1 | A0 | A1, T::EditMessage) => (
            R0,
            vec![
                E::SoftDeleteFromTarget,
                E::CancelOpenToolCalls(CancelReason::MessageEdit),
                E::InsertReplacement,
                E::ClearQueue,
                E::SetStatus(ChatStatus::Running),
                E::ClearDeadline,
            ],
        ),

        // DeleteQueuedMessage: same letter, 0 or 1 by what remains.
        (E1 | R1 | I1 | A1, T::DeleteQueuedMessage) => {
            let left = q.saturating_sub(1) > 0;
            let to = match (from, left) {
                (E1, true) => E1,
                (E1, false) => E0,
                (R1, true) => R1,
                (R1, false) => R0,
                (I1, true) => I1,
                (I1, false) => I0,
                (_, true) => A1,
                (_, false) => A0,
            };
            (to, vec![E::DeleteQueued])
        }

        // PromoteQueuedMessage.
        (R1 | I1, T::PromoteQueuedMessage) => (
            I1,
            vec![E::MoveQueuedToHead, E::SetStatus(ChatStatus::Interrupting)],
        ),
        (E1 | A1, T::PromoteQueuedMessage) => (
            running(q - 1),
            vec![
                E::MoveQueuedToHead,
                E::CancelOpenToolCalls(CancelReason::QueuedPromotion),
                E::PromoteQueueHead,
                E::SetStatus(ChatStatus::Running),
                E::ClearDeadline,
            ],
        ),

        // Interrupt.
        (R0 | R1, T::Interrupt) if facts.owned => (
            if from == R0 { I0 } else { I1 },
            vec![E::SetStatus(ChatStatus::Interrupting)],
        ),
        // Nobody owns the chat: apply FinishInterruption in the same transaction.
        (R0 | I0, T::Interrupt) if !facts.owned => (W, vec![E::SetStatus(ChatStatus::Waiting)]),
        (R1 | I1, T::Interrupt) if !facts.owned => (
            running(q - 1),
            vec![
                E::CancelOpenToolCalls(CancelReason::QueuedPromotion),
                E::PromoteQueueHead,
                E::SetStatus(ChatStatus::Running),
            ],
        ),
        (A0 | A1, T::Interrupt) => (
            running(q),
            vec![
                E::CancelPendingDynamicCalls(CancelReason::User),
                E::SetStatus(ChatStatus::Running),
                E::ClearDeadline,
            ],
        ),

        // CompleteRequiresAction.
        (A0 | A1, T::CompleteRequiresAction) => (
            running(q),
            vec![
                E::InsertToolResults,
                E::SetStatus(ChatStatus::Running),
                E::ClearDeadline,
            ],
        ),

        // RequestCompaction: W/E0 → R0, E1 → R1; no message; ownership cleared; history epoch.
        (W | E0 | E1, T::RequestCompaction) => (
            running(q),
            vec![
                E::SetStatus(ChatStatus::Running),
                E::SetCompactionRequested,
                E::ClearOwnership,
                E::GrantHistoryEpoch,
            ],
        ),

        // ClearContext: W/E0 → W.
        (W | E0, T::ClearContext) => (
            W,
            vec![
                E::InsertBoundaryTriplet,
                E::SetStatus(ChatStatus::Waiting),
                E::ClearCompactionRequested,
            ],
        ),

        // ReconcileInvalidState: Invalid → E0/E1.
        (Invalid, T::ReconcileInvalidState) => (
            if q > 0 { E1 } else { E0 },
            vec![
                E::SetArchived(false),
                E::CancelPendingDynamicCalls(CancelReason::InvalidState),
                E::SetStatus(ChatStatus::Error),
                E::StoreInvalidStateError,
                E::ClearDeadline,
            ],
        ),

        // Worker side.
        (R0 | R1, T::RecordGenerationAttempt) => (from, vec![E::IncrementGenerationAttempt]),
        (R0 | R1, T::RecordRetryState) => (from, vec![E::StoreRetryState]),
        (R0 | R1, T::CommitStep { consume_compaction }) => {
            let mut effects = vec![E::InsertStepMessages];
            if consume_compaction {
                effects.push(E::ClearCompactionRequested);
            }
            (from, effects)
        }
        (R0 | R1, T::EnterRequiresAction) => {
            if facts.pending_dynamic_calls == 0 {
                return Err(TransitionError::NoPendingDynamicCalls);
            }
            (
                if from == R0 { A0 } else { A1 },
                vec![E::SetStatus(ChatStatus::RequiresAction), E::SetDeadline],
            )
        }
        (I0, T::FinishInterruption) => (
            W,
            vec![E::InsertPartialOutput, E::SetStatus(ChatStatus::Waiting)],
        ),
        (I1, T::FinishInterruption) => (
            running(q - 1),
            vec![
                E::InsertPartialOutput,
                E::CancelOpenToolCalls(CancelReason::QueuedPromotion),
                E::PromoteQueueHead,
                E::SetStatus(ChatStatus::Running),
            ],
        ),
        (R0, T::FinishTurn) => (W, vec![E::SetStatus(ChatStatus::Waiting)]),
        (R1, T::FinishTurn) => (
            running(q - 1),
            vec![
                E::CancelOpenToolCalls(CancelReason::QueuedPromotion),
                E::PromoteQueueHead,
                E::SetStatus(ChatStatus::Running),
            ],
        ),
        (W | R0 | R1, T::FinishError) => (
            if from == R1 { E1 } else { E0 },
            vec![
                E::SetStatus(ChatStatus::Error),
                E::StoreLastError,
                E::ClearDeadline,
            ],
        ),
        (A0 | A1, T::CancelRequiresAction) => {
            if facts.pending_dynamic_calls == 0 {
                return Err(TransitionError::NoPendingDynamicCalls);
            }
            (
                running(q),
                vec![
                    E::CancelPendingDynamicCalls(CancelReason::TimedOut),
                    E::SetStatus(ChatStatus::Running),
                    E::ClearDeadline,
                ],
            )
        }

        _ => return Err(not_allowed()),
    };
    Ok(finish(facts, transition, to, effects).with_from(from))
}

impl Plan {
    fn with_from(mut self, from: ExecState) -> Self {
        self.from = from;
        self
    }
}

/// Adds the cross-cutting rules of spec/engine.md §6 to a transition's own effects.
fn finish(
    facts: &ChatFacts,
    transition: Transition,
    to: ExecState,
    mut effects: Vec<Effect>,
) -> Plan {
    use Effect as E;
    let from = facts.state();

    // Leaving E0/E1 (other than by archiving) clears last_error.
    let leaves_error = matches!(from, ExecState::E0 | ExecState::E1)
        && !matches!(
            to,
            ExecState::E0 | ExecState::E1 | ExecState::XE0 | ExecState::XE1
        );
    if leaves_error && !effects.contains(&E::ClearLastError) {
        effects.push(E::ClearLastError);
    }

    // The compaction marker is one-shot: every status rewrite clears it, except archiving,
    // ownership changes and sends that only append to the queue.
    let writes_status = effects.iter().any(|e| matches!(e, E::SetStatus(_)));
    let carries_marker = matches!(
        transition,
        Transition::Acquire
            | Transition::Abandon
            | Transition::SetArchived(_)
            | Transition::RequestCompaction
    ) || (matches!(transition, Transition::SendMessage(_))
        && !effects.contains(&E::InsertUserMessage)
        && !effects.contains(&E::PromoteQueueHead));
    if writes_status && !carries_marker && !effects.contains(&E::ClearCompactionRequested) {
        effects.push(E::ClearCompactionRequested);
    }

    // retry_state is cleared whenever generation_attempt changes (any history change, a new
    // attempt, a history epoch) and whenever status is written to anything but running.
    let changes_attempt = effects.iter().any(|e| {
        matches!(
            e,
            E::InsertChat
                | E::CancelOpenToolCalls(_)
                | E::CancelPendingDynamicCalls(_)
                | E::InsertUserMessage
                | E::PromoteQueueHead
                | E::SoftDeleteFromTarget
                | E::InsertReplacement
                | E::InsertToolResults
                | E::InsertPartialOutput
                | E::InsertStepMessages
                | E::InsertBoundaryTriplet
                | E::GrantHistoryEpoch
                | E::IncrementGenerationAttempt
        )
    });
    let leaves_running = effects
        .iter()
        .any(|e| matches!(e, E::SetStatus(s) if *s != ChatStatus::Running));
    if changes_attempt || leaves_running {
        effects.push(E::ClearRetryState);
    }

    Plan { from, to, effects }
}
