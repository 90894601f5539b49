//! The chat state machine (spec/engine.md §2–§6): execution states derived from a chat's row,
//! every transition as a typed value, the transition matrix, and — for a state and a
//! transition — the effects the store must apply, or a typed [`TransitionError`].
//!
//! This crate is pure: it knows no database, no runtime and no clock. The store (`chatstore`)
//! reads the [`ChatFacts`] under the chat's row lock, asks [`plan`] what to do, and applies the
//! [`Effect`]s in one transaction. [`ChatModel`] is an in-memory reference implementation of
//! those effects, used to check the spec's invariants with property tests and, by the store's
//! tests, to check the database against the model.

mod model;
mod plan;
mod state;
mod transition;

pub use model::{ChatModel, ModelRow, RowRole, StepContent};
pub use plan::{ChatFacts, Effect, INVALID_STATE_MESSAGE, MAX_QUEUE, Plan, plan};
pub use state::{ChatStatus, ExecState, Ownership};
pub use transition::{BusyBehavior, CancelReason, Transition, TransitionError};
