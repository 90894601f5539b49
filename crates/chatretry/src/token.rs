//! A cancellation token that carries a cause (spec/chatretry.md §2.2).

use std::future::Future;
use std::sync::{Arc, Mutex};

use chaterror::{CancelCause, Cancelled};
use tokio_util::sync::CancellationToken;

/// A cancellation token that remembers **why** it was cancelled.
///
/// Children are cancelled with their parent; cancelling a child never affects the parent. The
/// first cause recorded on a token wins. [`cause`](Self::cause) is the token's own cause, else
/// the nearest cancelled ancestor's.
///
/// ```
/// use chatretry::{CancelCause, CancelToken};
///
/// let turn = CancelToken::new();
/// let attempt = turn.child();
/// turn.cancel(CancelCause::UserInterrupt);
/// turn.cancel(CancelCause::Shutdown); // no-op: the first cause wins
/// assert!(attempt.is_cancelled());
/// assert_eq!(attempt.cause(), Some(CancelCause::UserInterrupt));
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    signal: CancellationToken,
    cause: Arc<Mutex<Option<CancelCause>>>,
    parent: Option<Box<CancelToken>>,
}

impl CancelToken {
    /// A root token, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token cancelled when this one is (or when cancelled itself).
    pub fn child(&self) -> Self {
        Self {
            signal: self.signal.child_token(),
            cause: Arc::default(),
            parent: Some(Box::new(self.clone())),
        }
    }

    /// Cancels this token and its descendants with `cause`. Idempotent: a cause already
    /// recorded on this token stays.
    pub fn cancel(&self, cause: CancelCause) {
        {
            let mut own = self.cause.lock().unwrap_or_else(|p| p.into_inner());
            if own.is_none() {
                *own = Some(cause);
            }
        }
        self.signal.cancel();
    }

    /// Whether this token or an ancestor was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// This token's own cause, else the nearest cancelled ancestor's; `None` while not
    /// cancelled.
    pub fn cause(&self) -> Option<CancelCause> {
        if !self.is_cancelled() {
            return None;
        }
        let own = *self.cause.lock().unwrap_or_else(|p| p.into_inner());
        own.or_else(|| self.parent.as_ref().and_then(|p| p.cause()))
    }

    /// Resolves with the cause once the token is cancelled.
    pub async fn cancelled(&self) -> CancelCause {
        self.signal.cancelled().await;
        // A token is only ever cancelled through `cancel` on itself or an ancestor, which records
        // a cause first; `Shutdown` is a defensive default that cannot be observed.
        self.cause().unwrap_or(CancelCause::Shutdown)
    }

    /// Races `fut` against cancellation; on cancellation drops `fut` and returns
    /// [`Cancelled`] with the cause.
    pub async fn run<F: Future>(&self, fut: F) -> Result<F::Output, Cancelled> {
        tokio::select! {
            biased;
            cause = self.cancelled() => Err(Cancelled { cause: Some(cause) }),
            out = fut => Ok(out),
        }
    }
}
