//! What a tool returns (spec/chattool.md §2.1): a text error, or a JSON object (which may carry an
//! `error` key whose structured fields must survive a replay of the history).

use serde::{Deserialize, Serialize};

/// A tool's result as the model sees it (also the form the idempotency ledger records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The text (a sentence for errors, compact JSON otherwise).
    pub content: String,
    /// True for a text error: replayed as its text only.
    pub is_error: bool,
}

impl ToolResult {
    /// A text error (`is_error = true`).
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            content: text.into(),
            is_error: true,
        }
    }

    /// A JSON result (`is_error = false`), serialised compactly; `{}` if serialisation fails.
    pub fn json(value: &impl Serialize) -> Self {
        Self {
            content: serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned()),
            is_error: false,
        }
    }

    /// The content parsed as JSON (`None` for a text error or non-JSON content).
    pub fn as_json(&self) -> Option<serde_json::Value> {
        if self.is_error {
            return None;
        }
        serde_json::from_str(&self.content).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_results_are_compact_and_errors_are_text() {
        let r = ToolResult::json(&serde_json::json!({"ok": true, "files": []}));
        assert_eq!(r.content, r#"{"files":[],"ok":true}"#);
        assert!(!r.is_error);
        assert_eq!(r.as_json().unwrap()["ok"], true);
        let e = ToolResult::error("path is required");
        assert!(e.is_error);
        assert_eq!(e.as_json(), None);
    }
}
