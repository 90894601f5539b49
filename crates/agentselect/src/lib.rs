//! Choose the workspace agent a chat talks to (spec/agentselect.md).
//!
//! A workspace build can run several agents. A chat needs exactly one: the root agent whose name
//! ends with the configurable *chat-agent suffix* (default `-chat`), or, when none does, the
//! first root agent in a deterministic order. Child agents (e.g. dev-container sub-agents) are
//! never chosen.
//!
//! This crate is a pure function over plain data: no I/O, no clock, no logging, and no
//! dependency but `std` and `uuid`. It knows nothing of databases, connections or chats; callers
//! load the latest build's agents and persist the choice.
//!
//! ```
//! use agentselect::{AgentInfo, ChatSuffix, find_chat_agent};
//! use uuid::Uuid;
//!
//! let agents = [
//!     AgentInfo { id: Uuid::from_u128(1), name: "main".into(), parent_id: None, display_order: 0 },
//!     AgentInfo { id: Uuid::from_u128(2), name: "dev-chat".into(), parent_id: None, display_order: 1 },
//! ];
//! let chosen = find_chat_agent(&agents, &ChatSuffix::default()).unwrap();
//! assert_eq!(chosen.name, "dev-chat");
//! ```

mod select;
mod suffix;

pub use select::{AgentInfo, SelectError, find_chat_agent, is_chat_agent};
pub use suffix::{ChatSuffix, EmptySuffixError};
