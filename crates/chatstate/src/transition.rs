//! Every transition of the spec as a typed value (spec/engine.md §4), the synthetic
//! cancellation reasons (§6) and the typed errors.

use std::fmt;

use crate::ExecState;

/// What `SendMessage` does when the chat is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BusyBehavior {
    /// Append to the queue (the default).
    #[default]
    Queue,
    /// Queue and interrupt the current turn.
    Interrupt,
}

/// A state transition. API-side transitions come from users; worker-side ones from the worker
/// that owns the chat. `Acquire` and `Abandon` change ownership only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// N → R0: a new chat with its first user message.
    Create,
    /// Archive (`true`) or unarchive (`false`).
    SetArchived(bool),
    /// A user message, queued or inserted by state and busy behaviour.
    SendMessage(BusyBehavior),
    /// Replace a user message and everything after it.
    EditMessage,
    /// Remove one queued message.
    DeleteQueuedMessage,
    /// Move a queued message to the head and make it the next turn.
    PromoteQueuedMessage,
    /// The user pressed Stop.
    Interrupt,
    /// Client results for the pending dynamic tool calls.
    CompleteRequiresAction,
    /// Ask the worker to summarise the history.
    RequestCompaction,
    /// Start a fresh context (boundary triplet).
    ClearContext,
    /// Repair an invalid chat into `error`.
    ReconcileInvalidState,
    /// A worker takes ownership (new runner id, fresh heartbeat).
    Acquire,
    /// The owner lets go.
    Abandon,
    /// The worker starts an action: `generation_attempt += 1`.
    RecordGenerationAttempt,
    /// The worker stores a scheduled retry.
    RecordRetryState,
    /// The worker commits one step (assistant/tool rows or a compaction triplet).
    CommitStep {
        /// Clears `compaction_requested_at` in the same commit (a manual compaction).
        consume_compaction: bool,
    },
    /// The model called dynamic tools: wait for the client.
    EnterRequiresAction,
    /// The worker finalised an interrupted turn.
    FinishInterruption,
    /// The turn is complete.
    FinishTurn,
    /// The turn failed.
    FinishError,
    /// The client did not answer the dynamic calls in time.
    CancelRequiresAction,
}

impl Transition {
    /// Every transition (with each variant of its parameters), for exhaustive tests.
    pub const ALL: [Transition; 24] = [
        Self::Create,
        Self::SetArchived(true),
        Self::SetArchived(false),
        Self::SendMessage(BusyBehavior::Queue),
        Self::SendMessage(BusyBehavior::Interrupt),
        Self::EditMessage,
        Self::DeleteQueuedMessage,
        Self::PromoteQueuedMessage,
        Self::Interrupt,
        Self::CompleteRequiresAction,
        Self::RequestCompaction,
        Self::ClearContext,
        Self::ReconcileInvalidState,
        Self::Acquire,
        Self::Abandon,
        Self::RecordGenerationAttempt,
        Self::RecordRetryState,
        Self::CommitStep {
            consume_compaction: false,
        },
        Self::CommitStep {
            consume_compaction: true,
        },
        Self::EnterRequiresAction,
        Self::FinishInterruption,
        Self::FinishTurn,
        Self::FinishError,
        Self::CancelRequiresAction,
    ];

    /// Whether only the owning worker applies it.
    pub fn is_worker_side(self) -> bool {
        matches!(
            self,
            Self::Acquire
                | Self::Abandon
                | Self::RecordGenerationAttempt
                | Self::RecordRetryState
                | Self::CommitStep { .. }
                | Self::EnterRequiresAction
                | Self::FinishInterruption
                | Self::FinishTurn
                | Self::FinishError
                | Self::CancelRequiresAction
        )
    }
}

/// Why a synthetic tool result cancels a call (spec/engine.md §6). The texts are contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// SendMessage from W/E0.
    NewUserMessage,
    /// Any promotion of a queued message into history.
    QueuedPromotion,
    /// SendMessage with `interrupt` from A*.
    UserMessage,
    /// EditMessage.
    MessageEdit,
    /// Interrupt from A*.
    User,
    /// CancelRequiresAction.
    TimedOut,
    /// ReconcileInvalidState.
    InvalidState,
}

impl CancelReason {
    /// The reason text stored (as a JSON string) in the synthetic `tool-result`.
    ///
    /// ```
    /// assert_eq!(chatstate::CancelReason::User.text(), "Tool execution interrupted by user");
    /// ```
    pub fn text(self) -> &'static str {
        match self {
            Self::NewUserMessage => "Tool execution interrupted by new user message",
            Self::QueuedPromotion => "Tool execution interrupted by queued message promotion",
            Self::UserMessage => "Tool execution interrupted by user message",
            Self::MessageEdit => "Tool execution interrupted by message edit",
            Self::User => "Tool execution interrupted by user",
            Self::TimedOut => "Tool execution timed out",
            Self::InvalidState => "Tool execution canceled due to invalid chat state",
        }
    }
}

/// Why a transition was refused; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// The chat does not exist (any transition but `Create` from N).
    ChatNotFound,
    /// The chat is in the Invalid state (only `ReconcileInvalidState` is allowed).
    InvalidState,
    /// The matrix forbids this transition from this state.
    TransitionNotAllowed {
        /// The state the chat was in.
        from: ExecState,
        /// The refused transition.
        transition: Transition,
    },
    /// The queue already holds the maximum number of messages.
    MessageQueueFull {
        /// The cap.
        max: usize,
    },
    /// `EnterRequiresAction` / `CancelRequiresAction` without pending dynamic calls.
    NoPendingDynamicCalls,
    /// `Abandon` of a chat nobody owns.
    NotOwned,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChatNotFound => f.write_str("chat not found"),
            Self::InvalidState => f.write_str("chat is in an invalid state; reconcile it first"),
            Self::TransitionNotAllowed { from, transition } => {
                write!(
                    f,
                    "transition {transition:?} is not allowed in state {from}"
                )
            }
            Self::MessageQueueFull { max } => write!(f, "message queue is full ({max} messages)"),
            Self::NoPendingDynamicCalls => f.write_str("no dynamic tool calls are pending"),
            Self::NotOwned => f.write_str("chat is not owned by any worker"),
        }
    }
}

impl std::error::Error for TransitionError {}
