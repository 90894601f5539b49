//! chatd's storage layer: domain types, the [`Store`] trait, and its PostgreSQL implementation
//! with LISTEN/NOTIFY pubsub.
//!
//! All SQL lives in [`postgres`] and in `migrations/postgres/`; the rules a transition follows
//! come from `chatstate` (`Store::apply` asks `chatstate::plan` and writes the effects). This crate
//! knows no gRPC and no HTTP.
//!
//! [`testing::TestDatabase`] gives tests of this and other crates a fresh, migrated database.

pub mod admin;
pub mod postgres;
pub mod pubsub;
pub mod testing;
pub mod types;
pub mod workspace;

mod error;
mod store;

pub use error::StoreError;
pub use store::{
    Applied, Change, ChatCursor, ChatListQuery, ChatMetadata, ChatSnapshot, MessagePage, Store,
    StoreConfig, ToolResultInput,
};
