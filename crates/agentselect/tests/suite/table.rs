//! The test table of spec/agentselect.md §5: every row its own test, the selection rows run once
//! with the reference suffix `-coderd-chat` and once with the default `-chat`.

use agentselect::{AgentInfo, ChatSuffix, SelectError, find_chat_agent, is_chat_agent};
use uuid::Uuid;

/// A root agent `name/order` with an id derived from its position.
fn root(n: u128, name: &str, order: i32) -> AgentInfo {
    AgentInfo {
        id: Uuid::from_u128(n),
        name: name.to_owned(),
        parent_id: None,
        display_order: order,
    }
}

/// A child agent `name/order`.
fn child(n: u128, name: &str, order: i32) -> AgentInfo {
    AgentInfo {
        parent_id: Some(Uuid::from_u128(1000)),
        ..root(n, name, order)
    }
}

fn chosen(agents: &[AgentInfo], suffix: &str) -> Result<String, String> {
    let suffix = ChatSuffix::new(suffix).unwrap();
    find_chat_agent(agents, &suffix)
        .map(|a| a.name.clone())
        .map_err(|e| e.to_string())
}

/// Rows 1–13, generated into one module per suffix. Names in the table use `-coderd-chat`,
/// which also ends with `-chat`, so the expected agent is the same for both suffixes.
macro_rules! selection_table {
    ($module:ident, $suffix:literal) => {
        mod $module {
            use super::*;
            const SUFFIX: &str = $suffix;

            #[test]
            fn row01_single_suffix_match() {
                let agents = [
                    root(1, "alpha", 0),
                    root(2, "dev-coderd-chat", 2),
                    root(3, "zeta", 1),
                ];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "dev-coderd-chat");
            }

            #[test]
            fn row02_suffix_match_is_case_insensitive() {
                let agents = [
                    root(1, "alpha", 0),
                    root(2, "Dev-Coderd-Chat", 2),
                    root(3, "zeta", 1),
                ];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "Dev-Coderd-Chat");
            }

            #[test]
            fn row03_no_match_lowest_order_then_name() {
                let agents = [root(1, "zeta", 2), root(2, "bravo", 1), root(3, "alpha", 1)];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "alpha");
            }

            #[test]
            fn row04_no_match_case_insensitive_name_order() {
                let agents = [
                    root(1, "Bravo", 3),
                    root(2, "alpha", 3),
                    root(3, "charlie", 3),
                ];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "alpha");
            }

            #[test]
            fn row05_names_equal_except_case_exact_byte_order() {
                let agents = [root(1, "dev", 0), root(2, "Dev", 0)];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "Dev");
                let agents = [root(1, "Dev", 0), root(2, "dev", 0)];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "Dev");
            }

            #[test]
            fn row06_identical_names_id_order() {
                let agents = [root(2, "dev", 0), root(1, "dev", 0)];
                let suffix = ChatSuffix::new(SUFFIX).unwrap();
                let picked = find_chat_agent(&agents, &suffix).unwrap();
                assert_eq!(
                    picked.id.to_string(),
                    "00000000-0000-0000-0000-000000000001"
                );
            }

            #[test]
            fn row07_multiple_suffix_matches() {
                let agents = [
                    root(1, "alpha-coderd-chat", 2),
                    root(2, "beta-coderd-chat", 1),
                    root(3, "gamma", 0),
                ];
                assert_eq!(
                    chosen(&agents, SUFFIX).unwrap_err(),
                    format!(
                        "multiple agents match the chat suffix \"{SUFFIX}\": beta-coderd-chat, \
                         alpha-coderd-chat; only one agent should use this suffix"
                    )
                );
            }

            #[test]
            fn row08_child_with_suffix_is_ignored() {
                let agents = [
                    root(1, "alpha", 1),
                    child(2, "child-coderd-chat", 0),
                    root(3, "bravo", 0),
                ];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "bravo");
            }

            #[test]
            fn row09_child_with_suffix_ignored_root_with_suffix_wins() {
                let agents = [
                    root(1, "alpha", 0),
                    child(2, "child-coderd-chat", 1),
                    root(3, "root-coderd-chat", 2),
                ];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "root-coderd-chat");
            }

            #[test]
            fn row10_empty_list() {
                assert_eq!(
                    chosen(&[], SUFFIX).unwrap_err(),
                    "no eligible workspace agents found"
                );
            }

            #[test]
            fn row11_only_children() {
                let agents = [child(1, "alpha", 0), child(2, "beta-coderd-chat", 1)];
                assert_eq!(
                    chosen(&agents, SUFFIX).unwrap_err(),
                    "no eligible workspace agents found"
                );
            }

            #[test]
            fn row12_single_root() {
                assert_eq!(chosen(&[root(1, "solo", 5)], SUFFIX).unwrap(), "solo");
            }

            #[test]
            fn row13_suffix_wins_regardless_of_order() {
                let agents = [
                    root(1, "alpha", 0),
                    root(2, "zeta", 1),
                    root(3, "preferred-coderd-chat", 99),
                ];
                assert_eq!(chosen(&agents, SUFFIX).unwrap(), "preferred-coderd-chat");
            }
        }
    };
}

selection_table!(reference_suffix, "-coderd-chat");
selection_table!(default_suffix, "-chat");

/// `is_chat_agent` rows: name, matches `-coderd-chat`, matches `-chat`.
macro_rules! is_chat_agent_table {
    ($($test:ident: $name:literal => $reference:literal, $default:literal;)*) => {
        mod is_chat_agent_rows {
            use super::*;
            $(
                #[test]
                fn $test() {
                    assert_eq!(is_chat_agent($name, "-coderd-chat"), $reference, "suffix -coderd-chat");
                    assert_eq!(is_chat_agent($name, "-chat"), $default, "suffix -chat");
                }
            )*
        }
    };
}

is_chat_agent_table! {
    agent_coderd_chat: "agent-coderd-chat" => true, true;
    agent_coderd_chat_upper: "agent-CODERD-CHAT" => true, true;
    agent_coderd_chat_mixed: "agent-Coderd-Chat" => true, true;
    suffix_alone: "-coderd-chat" => true, true;
    my_agent: "my-agent" => false, false;
    agent_coderd: "agent-coderd" => false, false;
    agent_chat: "agent-chat" => false, true;
    agent_chat_upper: "agent-CHAT" => false, true;
    bare_chat: "chat" => false, false;
    agent_chats: "agent-chats" => false, false;
}

#[test]
fn row14_default_suffix_picks_dev_chat() {
    let agents = [root(1, "dev", 0), root(2, "dev-chat", 1)];
    assert_eq!(chosen(&agents, "-chat").unwrap(), "dev-chat");
}

#[test]
fn row15_reference_suffix_falls_back_to_dev() {
    let agents = [root(1, "dev", 0), root(2, "dev-chat", 1)];
    assert_eq!(chosen(&agents, "-coderd-chat").unwrap(), "dev");
}

#[test]
fn row16_suffix_is_compared_lower_cased() {
    let agents = [root(1, "dev", 0), root(2, "dev-chat", 1)];
    assert_eq!(chosen(&agents, "-CHAT").unwrap(), "dev-chat");
}

#[test]
fn row17_empty_suffix_is_rejected_at_configuration() {
    assert_eq!(
        ChatSuffix::new("").unwrap_err().to_string(),
        "chat agent suffix must not be empty"
    );
}

#[test]
fn multiple_match_error_quotes_the_suffix_as_configured() {
    let agents = [root(1, "a-chat", 0), root(2, "b-chat", 0)];
    let err = find_chat_agent(&agents, &ChatSuffix::new("-CHAT").unwrap()).unwrap_err();
    assert_eq!(
        err,
        SelectError::MultipleChatAgents {
            suffix: "-CHAT".into(),
            names: vec!["a-chat".into(), "b-chat".into()],
        }
    );
}

#[test]
fn unicode_names_are_lower_cased_fully() {
    // 'İ' lower-cases to "i̇" (two code points); the comparison must not panic or mis-slice.
    assert!(is_chat_agent("ÜBER-CHAT", "-chat"));
    assert!(is_chat_agent("agent-ÇHAT", "-çhat"));
    assert!(!is_chat_agent("İ", "-chat"));
}
