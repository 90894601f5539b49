//! chatd's storage layer: the domain types, one store trait per domain, and the PostgreSQL
//! backend with LISTEN/NOTIFY pubsub.
//!
//! | Domain | Trait | Module |
//! |---|---|---|
//! | chats, messages, queue, ownership, tool ledger | [`Store`] | [`types`] and the crate root |
//! | organizations, users, API tokens | [`IdentityStore`] | [`identity`] |
//! | model configurations | [`ModelStore`] | [`models`] |
//! | templates and versions | [`TemplateStore`] | [`templates`] |
//! | workspaces, builds, provisioner jobs | [`WorkspaceStore`] | [`workspaces`] |
//! | workspace agents | [`AgentStore`] | [`agents`] |
//! | replica registry, cluster secrets, the database clock | [`ReplicaStore`] | [`replicas`] |
//!
//! [`Database`] is all of them, what a process that serves everything holds. A caller that
//! needs one domain takes that domain's trait. `use chatstore::prelude::*` brings every trait
//! into scope, so their methods can be called on a `dyn Database`.
//!
//! All SQL lives in the backend modules ([`postgres`]; [`sqlite`], the embedded one, opens and
//! migrates its file and implements every domain) and in `migrations/`; the rules a transition
//! follows come from `chatstate` (`Store::apply` asks `chatstate::plan` and writes the effects).
//! The domain types carry no backend derives: each backend maps them itself. This crate knows no
//! gRPC and no HTTP.
//!
//! [`testing::TestDatabase`] gives tests of this and other crates a fresh, migrated database.

pub mod agents;
pub mod identity;
pub mod models;
pub mod postgres;
pub mod pubsub;
pub mod replicas;
pub mod sqlite;
pub mod templates;
pub mod testing;
pub mod types;
pub mod workspaces;

mod error;
mod names;
mod open;
mod rows;
mod sql;
mod store;
mod transition;

pub use agents::AgentStore;
pub use error::StoreError;
pub use identity::IdentityStore;
pub use models::ModelStore;
pub use names::UnknownName;
pub use open::{DatabaseUrl, OpenDatabase, OpenOptions};
pub use replicas::{CredentialHold, ReplicaStore};
pub use store::{
    Applied, Change, ChatCursor, ChatListQuery, ChatMetadata, ChatSnapshot, LEASE_NOT_HELD,
    MessagePage, Store, StoreConfig, ToolResultInput,
};
pub use templates::TemplateStore;
pub use transition::CLEARED_CONTEXT_TEXT;
pub use workspaces::WorkspaceStore;

/// Every domain of the store: what a process serving the whole API holds (as
/// `Arc<dyn Database>`). Implemented for every type that implements all the domain traits.
pub trait Database:
    Store + IdentityStore + ModelStore + TemplateStore + WorkspaceStore + AgentStore + ReplicaStore
{
}

impl<T> Database for T where
    T: Store
        + IdentityStore
        + ModelStore
        + TemplateStore
        + WorkspaceStore
        + AgentStore
        + ReplicaStore
        + ?Sized
{
}

/// Every store trait, for calling their methods on a [`Database`].
pub mod prelude {
    pub use crate::{
        AgentStore, Database, IdentityStore, ModelStore, ReplicaStore, Store, TemplateStore,
        WorkspaceStore,
    };
}
