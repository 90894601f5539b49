use std::fmt;

/// The configured chat-agent suffix (config `agent_select.chat_suffix`): never empty, because an
/// empty suffix would make every agent a chat agent.
///
/// ```
/// use agentselect::ChatSuffix;
///
/// assert_eq!(ChatSuffix::default().as_str(), "-chat");
/// assert_eq!(ChatSuffix::new("-coderd-chat").unwrap().as_str(), "-coderd-chat");
/// assert_eq!(
///     ChatSuffix::new("").unwrap_err().to_string(),
///     "chat agent suffix must not be empty"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatSuffix(String);

impl ChatSuffix {
    /// chatd's default suffix. (The reference hard-codes `-coderd-chat`.)
    pub const DEFAULT: &'static str = "-chat";

    /// Validates a configured suffix. It is kept exactly as given (for error texts); matching
    /// lower-cases both sides.
    pub fn new(suffix: impl Into<String>) -> Result<Self, EmptySuffixError> {
        let suffix = suffix.into();
        if suffix.is_empty() {
            return Err(EmptySuffixError);
        }
        Ok(Self(suffix))
    }

    /// The suffix as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ChatSuffix {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for ChatSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A configuration error: the chat-agent suffix was empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmptySuffixError;

impl fmt::Display for EmptySuffixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("chat agent suffix must not be empty")
    }
}

impl std::error::Error for EmptySuffixError {}
