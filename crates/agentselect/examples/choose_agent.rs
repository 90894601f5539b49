//! Choose a chat's workspace agent among the agents of a workspace's latest build, the way a
//! service that binds chats to agents would.
//!
//! Run with `cargo run -p agentselect --example choose_agent`.

#![allow(clippy::print_stdout)] // an example reports on stdout

use agentselect::{AgentInfo, ChatSuffix, find_chat_agent, is_chat_agent};
use uuid::Uuid;

fn agent(n: u128, name: &str, display_order: i32, parent: Option<u128>) -> AgentInfo {
    AgentInfo {
        id: Uuid::from_u128(n),
        name: name.to_owned(),
        parent_id: parent.map(Uuid::from_u128),
        display_order,
    }
}

fn show(title: &str, agents: &[AgentInfo], suffix: &ChatSuffix) {
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    print!(
        "{title}\n  agents {names:?}, suffix {:?}: ",
        suffix.as_str()
    );
    match find_chat_agent(agents, suffix) {
        Ok(chosen) => println!("chose {} ({})", chosen.name, chosen.id),
        Err(err) => println!("error: {err}"),
    }
}

fn main() {
    // In a real service the config value comes from a file; an empty suffix is refused.
    let default_suffix = ChatSuffix::default();
    let reference_suffix = match ChatSuffix::new("-coderd-chat") {
        Ok(suffix) => suffix,
        Err(err) => return println!("bad configuration: {err}"),
    };
    if let Err(err) = ChatSuffix::new("") {
        println!("configuring an empty suffix: {err}");
    }

    // A build with a main agent, a dedicated chat agent and a dev-container sub-agent.
    let build = [
        agent(1, "main", 0, None),
        agent(2, "dev-chat", 2, None),
        agent(3, "devcontainer-chat", 0, Some(1)),
    ];
    show(
        "the root agent with the suffix wins:",
        &build,
        &default_suffix,
    );
    show(
        "no agent carries the suffix: the first root by display order, then name:",
        &build,
        &reference_suffix,
    );

    let two_chat_agents = [
        agent(1, "alpha-chat", 2, None),
        agent(2, "beta-chat", 1, None),
    ];
    show(
        "two root agents carry the suffix:",
        &two_chat_agents,
        &default_suffix,
    );

    let only_children = [agent(4, "sidecar", 0, Some(1))];
    show(
        "child agents are never chosen:",
        &only_children,
        &default_suffix,
    );

    // The matching rule on its own: case-insensitive suffix comparison.
    for name in ["Dev-CHAT", "dev-chats"] {
        println!(
            "is_chat_agent({name:?}, \"-chat\") = {}",
            is_chat_agent(name, ChatSuffix::DEFAULT)
        );
    }
}
