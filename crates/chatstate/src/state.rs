//! Execution and ownership states (spec/engine.md §2).

use std::fmt;

/// The `chat_status` column. Legacy values (`pending`, `paused`, `completed`) may exist in old
/// rows; they classify as [`ExecState::Invalid`] and the API never returns them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChatStatus {
    /// `waiting`: idle.
    Waiting,
    /// `running`: a worker should be generating.
    Running,
    /// `interrupting`: the worker must finalise partial output.
    Interrupting,
    /// `requires_action`: waiting for client-executed tool results.
    RequiresAction,
    /// `error`: parked after an unrecoverable error.
    Error,
    /// Any other stored value.
    Legacy(String),
}

impl ChatStatus {
    /// The database / wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Interrupting => "interrupting",
            Self::RequiresAction => "requires_action",
            Self::Error => "error",
            Self::Legacy(other) => other,
        }
    }

    /// Parses a stored value; unknown values become [`ChatStatus::Legacy`].
    pub fn parse(text: &str) -> Self {
        match text {
            "waiting" => Self::Waiting,
            "running" => Self::Running,
            "interrupting" => Self::Interrupting,
            "requires_action" => Self::RequiresAction,
            "error" => Self::Error,
            other => Self::Legacy(other.to_owned()),
        }
    }
}

impl fmt::Display for ChatStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The execution state of a chat (spec/engine.md §2.1), derived from whether the row exists,
/// its status, `archived`, and whether its queue is non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecState {
    /// The chat does not exist.
    N,
    /// Idle.
    W,
    /// Error, queue empty.
    E0,
    /// Error, queued messages waiting.
    E1,
    /// Running, queue empty.
    R0,
    /// Running, with backlog.
    R1,
    /// Interrupting, queue empty.
    I0,
    /// Interrupting, then promote the queue head.
    I1,
    /// Waiting for dynamic tool results, queue empty.
    A0,
    /// Waiting for dynamic tool results, with backlog.
    A1,
    /// Archived idle.
    XW,
    /// Archived error.
    XE0,
    /// Archived error with backlog.
    XE1,
    /// Anything else (archived and running, waiting with a queue, legacy statuses, ...).
    Invalid,
}

impl ExecState {
    /// Every state, in the spec's order.
    pub const ALL: [ExecState; 14] = [
        Self::N,
        Self::W,
        Self::E0,
        Self::E1,
        Self::R0,
        Self::R1,
        Self::I0,
        Self::I1,
        Self::A0,
        Self::A1,
        Self::XW,
        Self::XE0,
        Self::XE1,
        Self::Invalid,
    ];

    /// Derives the state (spec/engine.md §2.1).
    ///
    /// ```
    /// use chatstate::{ChatStatus, ExecState};
    ///
    /// assert_eq!(ExecState::derive(Some(&ChatStatus::Running), false, true), ExecState::R1);
    /// assert_eq!(ExecState::derive(Some(&ChatStatus::Waiting), false, true), ExecState::Invalid);
    /// assert_eq!(ExecState::derive(None, false, false), ExecState::N);
    /// ```
    pub fn derive(status: Option<&ChatStatus>, archived: bool, queue_non_empty: bool) -> Self {
        let Some(status) = status else {
            return Self::N;
        };
        match (status, archived, queue_non_empty) {
            (ChatStatus::Waiting, false, false) => Self::W,
            (ChatStatus::Error, false, false) => Self::E0,
            (ChatStatus::Error, false, true) => Self::E1,
            (ChatStatus::Running, false, false) => Self::R0,
            (ChatStatus::Running, false, true) => Self::R1,
            (ChatStatus::Interrupting, false, false) => Self::I0,
            (ChatStatus::Interrupting, false, true) => Self::I1,
            (ChatStatus::RequiresAction, false, false) => Self::A0,
            (ChatStatus::RequiresAction, false, true) => Self::A1,
            (ChatStatus::Waiting, true, false) => Self::XW,
            (ChatStatus::Error, true, false) => Self::XE0,
            (ChatStatus::Error, true, true) => Self::XE1,
            _ => Self::Invalid,
        }
    }

    /// The status a chat in this state has; `None` for `N` and `Invalid`.
    pub fn status(self) -> Option<ChatStatus> {
        Some(match self {
            Self::W | Self::XW => ChatStatus::Waiting,
            Self::E0 | Self::E1 | Self::XE0 | Self::XE1 => ChatStatus::Error,
            Self::R0 | Self::R1 => ChatStatus::Running,
            Self::I0 | Self::I1 => ChatStatus::Interrupting,
            Self::A0 | Self::A1 => ChatStatus::RequiresAction,
            Self::N | Self::Invalid => return None,
        })
    }

    /// Whether a worker may acquire the chat: `R*`, `I*`, `A*` (A* need an owner to enforce the
    /// action deadline).
    pub fn is_runnable(self) -> bool {
        matches!(
            self,
            Self::R0 | Self::R1 | Self::I0 | Self::I1 | Self::A0 | Self::A1
        )
    }

    /// Whether the chat is archived.
    pub fn is_archived(self) -> bool {
        matches!(self, Self::XW | Self::XE0 | Self::XE1)
    }

    /// Whether the queue is non-empty in this state.
    pub fn has_queue(self) -> bool {
        matches!(self, Self::E1 | Self::R1 | Self::I1 | Self::A1 | Self::XE1)
    }
}

impl fmt::Display for ExecState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Ownership (spec/engine.md §2.2): orthogonal to the execution state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ownership {
    /// `U`: no worker owns the chat.
    Unowned,
    /// `O`: a worker owns the chat.
    Owned,
}
