use chatstate::TransitionError;
use uuid::Uuid;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL could not be parsed.
    #[error("invalid database URL")]
    InvalidUrl(#[source] sqlx::Error),
    /// Connecting to the database failed.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// An embedded database file cannot be used: it is locked by another daemon, is not a
    /// database, cannot be written, or was written by a newer version. The text names the file
    /// and says what to do.
    #[error("{message}")]
    DatabaseFile {
        /// What is wrong, naming the file.
        message: String,
        /// The underlying failure, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Applying the migrations failed.
    #[error("applying database migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    /// A stored value could not be decoded (e.g. malformed content JSON).
    #[error("stored {what} is malformed")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// No chat with this id.
    #[error("chat {0} not found")]
    ChatNotFound(Uuid),
    /// No undeleted message with this id in the chat.
    #[error("message {0} not found")]
    MessageNotFound(i64),
    /// The message is not a user message.
    #[error("message {0} is not a user message")]
    MessageNotUser(i64),
    /// No queued message with this id in the chat.
    #[error("queued message {0} not found")]
    QueuedMessageNotFound(i64),
    /// The state machine refused the transition.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A worker-side write whose fence no longer matches: an expected exit for the task.
    #[error("fence mismatch: {0}")]
    FenceMismatch(&'static str),
    /// The organization has no usable model configuration.
    #[error("no enabled default model configuration in this organization")]
    NoDefaultModelConfig,
    /// The request is malformed (empty content, oversized message, bad tool results, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The write collides with an existing row (e.g. a workspace name already in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// What the call names does not exist (the text says what).
    #[error("{0}")]
    NotFound(String),
    /// The call is not allowed in the current state (e.g. deleting a template still in use).
    #[error("{0}")]
    Precondition(String),
}

impl StoreError {
    pub(crate) fn query(err: sqlx::Error) -> Self {
        Self::Query(err)
    }

    /// Whether the database refused a write for lack of disk space (PostgreSQL `disk_full`,
    /// SQLite `SQLITE_FULL`): an operator must free space; nothing committed is lost.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Query(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("53100" | "13"))
            }
            _ => false,
        }
    }

    /// Whether the store or the database refused the data itself, so the same write fails
    /// again however often it is retried: the store's own checks (`InvalidInput`, e.g. a
    /// message over the size limit), PostgreSQL's SQLSTATE classes 22 (data exception, e.g. a
    /// NUL character in text) and 23 (integrity constraint violation); SQLite's constraint,
    /// type mismatch, range and too-big errors. Such a failure is never an outage to wait out.
    pub fn is_permanent(&self) -> bool {
        if let Self::InvalidInput(_) = self {
            return true;
        }
        let Self::Query(sqlx::Error::Database(db)) = self else {
            return false;
        };
        let Some(code) = db.code() else {
            return false;
        };
        if code.starts_with("22") || code.starts_with("23") {
            return true;
        }
        // SQLite's extended result codes keep the primary code in the low byte.
        code.parse::<u32>()
            .is_ok_and(|n| matches!(n & 0xff, 18 | 19 | 20 | 25))
    }

    /// Whether retrying the whole transaction may succeed (serialization failure, deadlock).
    pub(crate) fn is_retryable_conflict(&self) -> bool {
        match self {
            Self::Query(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        Self::Query(err)
    }
}
