use std::cmp::Ordering;
use std::fmt;

use uuid::Uuid;

use crate::ChatSuffix;

/// What selection needs to know about one agent of a build (`workspace_agents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent's id.
    pub id: Uuid,
    /// The agent's name, as written in the template.
    pub name: String,
    /// The parent agent, for child agents (e.g. dev-container sub-agents); `None` for roots.
    pub parent_id: Option<Uuid>,
    /// Display order from the template; lower comes first.
    pub display_order: i32,
}

impl AgentInfo {
    fn is_root(&self) -> bool {
        self.parent_id.is_none()
    }
}

/// Why no agent could be chosen. `Display` gives the model-facing texts of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// No root agent: the list was empty or held only child agents.
    NoEligibleAgents,
    /// More than one root agent carries the chat suffix.
    MultipleChatAgents {
        /// The suffix exactly as configured.
        suffix: String,
        /// The matching agents' names, in selection order.
        names: Vec<String>,
    },
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEligibleAgents => f.write_str("no eligible workspace agents found"),
            Self::MultipleChatAgents { suffix, names } => write!(
                f,
                "multiple agents match the chat suffix \"{suffix}\": {}; only one agent should use this suffix",
                names.join(", ")
            ),
        }
    }
}

impl std::error::Error for SelectError {}

/// Whether `name` marks a chat agent: it ends with `suffix`, compared with full Unicode
/// lower-casing on both sides. A name equal to the suffix matches.
///
/// ```
/// use agentselect::is_chat_agent;
///
/// assert!(is_chat_agent("agent-CHAT", "-chat"));
/// assert!(!is_chat_agent("agent-chats", "-chat"));
/// assert!(!is_chat_agent("agent-chat", "-coderd-chat"));
/// ```
pub fn is_chat_agent(name: &str, suffix: &str) -> bool {
    name.to_lowercase().ends_with(&suffix.to_lowercase())
}

/// Picks the chat's agent among a build's agents (spec/agentselect.md §3).
///
/// Only root agents are eligible. They are ordered by display order, then lower-cased name, then
/// exact name, then id; the single one carrying the suffix wins, otherwise the first in that
/// order. Several carrying the suffix is an error naming them all.
///
/// ```
/// use agentselect::{AgentInfo, ChatSuffix, SelectError, find_chat_agent};
/// use uuid::Uuid;
///
/// let agent = |n: u128, name: &str, order| AgentInfo {
///     id: Uuid::from_u128(n),
///     name: name.into(),
///     parent_id: None,
///     display_order: order,
/// };
/// let suffix = ChatSuffix::default();
///
/// // No agent carries the suffix: the first in display order.
/// let agents = [agent(1, "zeta", 2), agent(2, "bravo", 1)];
/// assert_eq!(find_chat_agent(&agents, &suffix).unwrap().name, "bravo");
///
/// assert_eq!(find_chat_agent(&[], &suffix), Err(SelectError::NoEligibleAgents));
/// ```
pub fn find_chat_agent<'a>(
    agents: &'a [AgentInfo],
    suffix: &ChatSuffix,
) -> Result<&'a AgentInfo, SelectError> {
    let mut roots: Vec<&AgentInfo> = agents.iter().filter(|a| a.is_root()).collect();
    // `sort_by` is stable; the key is total anyway because ids are unique.
    roots.sort_by(|a, b| selection_order(a, b));
    let first = *roots.first().ok_or(SelectError::NoEligibleAgents)?;

    let matching: Vec<&AgentInfo> = roots
        .iter()
        .copied()
        .filter(|a| is_chat_agent(&a.name, suffix.as_str()))
        .collect();
    match matching.as_slice() {
        [] => Ok(first),
        [only] => Ok(only),
        several => Err(SelectError::MultipleChatAgents {
            suffix: suffix.as_str().to_owned(),
            names: several.iter().map(|a| a.name.clone()).collect(),
        }),
    }
}

fn selection_order(a: &AgentInfo, b: &AgentInfo) -> Ordering {
    a.display_order
        .cmp(&b.display_order)
        .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
        .then_with(|| a.name.cmp(&b.name))
        // Uuid's ordering is its bytes' order, which equals the order of its canonical
        // lower-case hyphenated text.
        .then_with(|| a.id.cmp(&b.id))
}
