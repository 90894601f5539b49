//! Ending client streams when the server closes (spec/recovery.md §8, "new work is refused
//! with `chatd server inflight closed`").
//!
//! Streams (`StreamChat`, `WatchChats`, `StreamBuildLogs` with `follow`, the part relay) never
//! end on their own, so a graceful shutdown that merely waited for them would always wait out
//! the whole grace period and then cut them off mid-frame. Instead, once this replica has handed
//! its chats off, [`Closer::close`] ends every open stream with `UNAVAILABLE` and the message
//! [`SERVER_CLOSED`], the standard "try again elsewhere" signal: a client reconnects to another
//! replica (resuming with `after_id`) and the server exits as soon as the last call is gone.
//! A stream opened after that point is refused the same way.

use std::future::Future;

use tokio::sync::{mpsc, watch};
use tonic::Status;

use chatengine::metrics::Live;

/// The message of the `UNAVAILABLE` status that ends streams of a closing server.
pub(crate) const SERVER_CLOSED: &str = "chatd server inflight closed";

/// Closes every stream that watches the paired [`Closing`].
#[derive(Debug)]
pub(crate) struct Closer(watch::Sender<bool>);

/// Whether the server is closing; cheap to clone, one per stream task.
#[derive(Debug, Clone)]
pub(crate) struct Closing(watch::Receiver<bool>);

impl Closer {
    /// A closer and the signal its streams watch.
    pub(crate) fn new() -> (Self, Closing) {
        let (tx, rx) = watch::channel(false);
        (Self(tx), Closing(rx))
    }

    /// Ends every stream (and refuses new ones).
    pub(crate) fn close(&self) {
        self.0.send_replace(true);
    }
}

impl Closing {
    /// Resolves once the server closes (at once if it already has).
    pub(crate) async fn closed(&mut self) {
        if self.0.wait_for(|closed| *closed).await.is_err() {
            // The closer is gone without closing: nothing will ever close this stream.
            std::future::pending::<()>().await;
        }
    }
}

/// Spawns the task that feeds one client stream of `kind` (`chat`, `watch`, `build_logs`,
/// `relay`): counted in `chatd_stream_subscribers` while it runs, and ended with
/// `UNAVAILABLE` [`SERVER_CLOSED`] on `tx` when the server closes. The task only reads and
/// forwards, so dropping it at any await point leaves nothing half-done.
pub(crate) fn spawn_client_stream<T, F>(
    kind: &'static str,
    closing: &Closing,
    tx: mpsc::Sender<Result<T, Status>>,
    task: F,
) where
    T: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let live = Live::stream(kind);
    let mut closing = closing.clone();
    tokio::spawn(async move {
        let _live = live;
        tokio::select! {
            biased;
            () = closing.closed() => {
                // A client that reads nothing must not hold the shutdown: try once, briefly.
                let closed = Status::unavailable(SERVER_CLOSED);
                let _ = tx
                    .send_timeout(Err(closed), std::time::Duration::from_secs(1))
                    .await;
            }
            () = task => {}
        }
    });
}

#[cfg(test)]
mod tests {

    use super::*;

    #[tokio::test]
    async fn closing_ends_a_running_stream_with_unavailable() {
        let (closer, closing) = Closer::new();
        let (tx, mut rx) = mpsc::channel::<Result<u32, Status>>(4);
        let feed = tx.clone();
        spawn_client_stream("chat", &closing, tx, async move {
            let _ = feed.send(Ok(1)).await;
            std::future::pending::<()>().await;
        });
        assert_eq!(rx.recv().await.unwrap().unwrap(), 1);
        closer.close();
        let end = rx.recv().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unavailable);
        assert_eq!(end.message(), SERVER_CLOSED);
        // The task and its sender are gone: the stream ends.
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_opened_while_closing_is_refused() {
        let (closer, closing) = Closer::new();
        closer.close();
        let (tx, mut rx) = mpsc::channel::<Result<u32, Status>>(4);
        spawn_client_stream("watch", &closing, tx, async {});
        let end = rx.recv().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn a_finished_stream_sends_nothing_more() {
        let (_closer, closing) = Closer::new();
        let (tx, mut rx) = mpsc::channel::<Result<u32, Status>>(4);
        let feed = tx.clone();
        spawn_client_stream("chat", &closing, tx, async move {
            let _ = feed.send(Ok(7)).await;
        });
        assert_eq!(rx.recv().await.unwrap().unwrap(), 7);
        assert!(rx.recv().await.is_none());
    }
}
