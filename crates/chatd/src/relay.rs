//! The part relay between replicas (spec/engine.md §14.4): a client's `StreamChat` may be served
//! by one replica while another runs the chat, and the live parts exist only in the runner's
//! memory (`chatengine::parts`).
//!
//! - [`PartsRelay`] serves `chatd.v1.ChatPartsRelay.StreamParts` on every replica: the caller
//!   names an episode, gets its buffered parts and then the live ones, and may switch to another
//!   episode at any time. It is authenticated with the deployment's relay secret (a cluster
//!   secret in the database, so replicas on one database trust each other without
//!   configuration) and accepted whether or not this replica owns the chat.
//! - [`Relay`] is the consuming end a stream loop points at (worker, episode): the same replica
//!   reads its own buffer in memory; another replica is dialled at the address it registered in
//!   `chatd_workers`, and the call is re-established (with back-off) when it drops. Parts are
//!   delivered with their episode and `seq`; after a reconnect an episode is replayed from its
//!   first part, so the consumer drops what it has seen (`seq` at or below its last).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::chat_parts_relay_client::ChatPartsRelayClient;
use chatproto::chatd::v1::chat_parts_relay_server::{ChatPartsRelay, ChatPartsRelayServer};
use chatstore::prelude::*;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::auth::{bearer, parse_id};
use crate::closing::{Closing, spawn_client_stream};
use crate::convert;
use chatengine::parts::{EpisodeKey, PartBuffer, PartSubscription};
use chatengine::step::BufferedPart;

/// The name of the relay's cluster secret (`chatd_cluster_secrets`).
pub(crate) const RELAY_SECRET: &str = "relay";
/// Most parts in one relayed batch.
const BATCH: usize = 64;
/// Back-off between attempts to reach another replica.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How long dialling another replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The deployment's relay secret, read from the database on first use (so a daemon started
/// before its schema exists, `--no-migrate`, still starts) and kept. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RelaySecret {
    store: Arc<dyn Database>,
    cell: Arc<tokio::sync::OnceCell<Arc<str>>>,
}

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySecret").finish_non_exhaustive()
    }
}

impl RelaySecret {
    /// The secret named [`RELAY_SECRET`] in `store`.
    pub(crate) fn new(store: Arc<dyn Database>) -> Self {
        Self {
            store,
            cell: Arc::default(),
        }
    }

    /// The secret; an error when the database cannot say (tried again on the next call).
    pub(crate) async fn get(&self) -> Result<Arc<str>, chatstore::StoreError> {
        self.cell
            .get_or_try_init(|| async {
                self.store.cluster_secret(RELAY_SECRET).await.map(Arc::from)
            })
            .await
            .cloned()
    }
}

/// `ChatPartsRelay`: streams the episodes of this replica's part buffer to other replicas.
#[derive(Debug, Clone)]
pub(crate) struct PartsRelay {
    parts: PartBuffer<BufferedPart>,
    secret: RelaySecret,
    subscriber_timeout: Duration,
    closing: Closing,
}

impl PartsRelay {
    /// The service over this replica's buffer. `secret` is the deployment's relay secret;
    /// a caller that does not present it as `authorization: Bearer <secret>` is refused.
    /// A consumer that does not take a batch within `subscriber_timeout` is cut off; every
    /// call ends when `closing` fires.
    pub(crate) fn new(
        parts: PartBuffer<BufferedPart>,
        secret: RelaySecret,
        subscriber_timeout: Duration,
        closing: Closing,
    ) -> Self {
        Self {
            parts,
            secret,
            subscriber_timeout,
            closing,
        }
    }

    /// The tonic server.
    pub(crate) fn into_server(self) -> ChatPartsRelayServer<Self> {
        ChatPartsRelayServer::new(self)
    }
}

#[tonic::async_trait]
impl ChatPartsRelay for PartsRelay {
    type StreamPartsStream = ReceiverStream<Result<pb::StreamPartsResponse, Status>>;

    async fn stream_parts(
        &self,
        request: Request<Streaming<pb::StreamPartsRequest>>,
    ) -> Result<Response<Self::StreamPartsStream>, Status> {
        let presented = bearer(&request, "relay secret")?;
        let secret =
            self.secret.get().await.map_err(|err| {
                Status::unavailable(format!("cannot read the relay secret: {err}"))
            })?;
        if !constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
            return Err(Status::unauthenticated("wrong relay secret"));
        }
        let (tx, rx) = mpsc::channel(4);
        let task = serve_call(
            self.parts.clone(),
            request.into_inner(),
            tx.clone(),
            self.subscriber_timeout,
        );
        spawn_client_stream("relay", &self.closing, tx, task);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Compares two secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type Outbound = mpsc::Sender<Result<pb::StreamPartsResponse, Status>>;

/// One `StreamParts` call: follows the caller's control messages, one episode at a time.
async fn serve_call(
    parts: PartBuffer<BufferedPart>,
    mut inbound: Streaming<pb::StreamPartsRequest>,
    tx: Outbound,
    timeout: Duration,
) {
    let mut chat_id: Option<Uuid> = None;
    let mut episode: Option<AbortOnDrop<bool>> = None;
    loop {
        tokio::select! {
            message = inbound.message() => {
                let request = match message {
                    Ok(Some(request)) => request,
                    // The caller closed its side or went away.
                    Ok(None) | Err(_) => return,
                };
                let id = match parse_id("chat_id", &request.chat_id) {
                    Ok(id) if chat_id.is_none_or(|c| c == id) => id,
                    Ok(_) => {
                        let _ = tx.send(Err(Status::invalid_argument(
                            "chat_id must stay the same for the whole call",
                        ))).await;
                        return;
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                chat_id = Some(id);
                let key = EpisodeKey {
                    chat_id: id,
                    history_version: request.history_version,
                    generation_attempt: request.generation_attempt,
                };
                // Replacing the task aborts the previous episode's.
                episode = Some(AbortOnDrop(tokio::spawn(send_episode(
                    parts.subscribe(key),
                    key,
                    tx.clone(),
                    timeout,
                ))));
            }
            delivered = async {
                match episode.as_mut() {
                    Some(task) => (&mut task.0).await,
                    None => std::future::pending().await,
                }
            } => {
                match delivered {
                    // Drained: wait for the next control message.
                    Ok(true) => episode = None,
                    // Too slow, or gone: end the call (the caller reconnects if it still cares).
                    Ok(false) | Err(_) => return,
                }
            }
        }
    }
}

/// Sends an episode in batches of what is ready; true once it is drained, false when the
/// consumer went away or did not take a batch in time.
async fn send_episode(
    mut sub: PartSubscription<BufferedPart>,
    key: EpisodeKey,
    tx: Outbound,
    timeout: Duration,
) -> bool {
    loop {
        let first = sub.next().await;
        let done = first.is_none();
        let mut batch = Vec::new();
        if let Some((seq, part)) = first {
            batch.push(convert::live_part(&part.to_live(), &key, seq));
            while batch.len() < BATCH {
                let Some((seq, part)) = sub.try_next() else {
                    break;
                };
                batch.push(convert::live_part(&part.to_live(), &key, seq));
            }
        }
        let response = pb::StreamPartsResponse {
            parts: batch,
            episode_closed: done,
        };
        match tokio::time::timeout(timeout, tx.send(Ok(response))).await {
            Ok(Ok(())) if done => return true,
            Ok(Ok(())) => {}
            Ok(Err(_)) => return false,
            Err(_) => {
                warn!(chat_id = %key.chat_id, "a relay consumer took no parts in time; cutting it off");
                return false;
            }
        }
    }
}

/// A task that is aborted when its handle is dropped.
#[derive(Debug)]
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where stream loops get live parts from: this replica's buffer, or other replicas through
/// their relay. One per process; cheap to clone.
#[derive(Clone)]
pub(crate) struct PartSource {
    worker_id: Uuid,
    parts: PartBuffer<BufferedPart>,
    workspaces: Arc<dyn Database>,
    secret: RelaySecret,
    stale_after: Duration,
    /// What other replicas' certificates are checked against (for `https://` addresses).
    tls: chattls::ClientTls,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for PartSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartSource")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl PartSource {
    /// Parts of this replica (`worker_id`, `parts`) and of the replicas registered in the
    /// store (a registration older than `stale_after` is a dead replica), reached with the
    /// deployment's relay `secret`.
    pub(crate) fn new(
        worker_id: Uuid,
        parts: PartBuffer<BufferedPart>,
        workspaces: Arc<dyn Database>,
        secret: RelaySecret,
        stale_after: Duration,
        tls: chattls::ClientTls,
    ) -> Self {
        Self {
            worker_id,
            parts,
            workspaces,
            secret,
            stale_after,
            tls,
            channels: Arc::default(),
        }
    }

    /// One channel per replica address, shared by every stream (HTTP/2 multiplexes them).
    fn channel(&self, address: &str) -> Result<Channel, chattls::EndpointError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = chattls::endpoint(address, Some(&self.tls))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// The consuming end of a stream loop: point it at a worker's episode and read parts from the
/// receiver [`Relay::new`] returned.
#[derive(Debug)]
pub(crate) struct Relay {
    source: PartSource,
    chat_id: Uuid,
    tx: mpsc::Sender<pb::ChatMessagePartEvent>,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    worker_id: Uuid,
    episode: watch::Sender<(i64, i64)>,
    _task: AbortOnDrop<()>,
}

impl Relay {
    /// A relay for one chat, not pointed anywhere yet, and the receiver of its parts.
    pub(crate) fn new(
        source: PartSource,
        chat_id: Uuid,
    ) -> (Self, mpsc::Receiver<pb::ChatMessagePartEvent>) {
        let (tx, rx) = mpsc::channel(BATCH);
        (
            Self {
                source,
                chat_id,
                tx,
                conn: None,
            },
            rx,
        )
    }

    /// Relays the episode `(history_version, generation_attempt)` of the chat from `worker_id`;
    /// `None` stops relaying. The same worker keeps its connection and only switches episode.
    pub(crate) fn point(
        &mut self,
        worker_id: Option<Uuid>,
        history_version: i64,
        generation_attempt: i64,
    ) {
        let Some(worker_id) = worker_id else {
            self.conn = None;
            return;
        };
        let episode = (history_version, generation_attempt);
        if let Some(conn) = &self.conn
            && conn.worker_id == worker_id
        {
            conn.episode.send_if_modified(|current| {
                let changed = *current != episode;
                *current = episode;
                changed
            });
            return;
        }
        let (episode_tx, episode_rx) = watch::channel(episode);
        let task = if worker_id == self.source.worker_id {
            tokio::spawn(read_local(
                self.source.parts.clone(),
                self.chat_id,
                episode_rx,
                self.tx.clone(),
            ))
        } else {
            tokio::spawn(read_remote(
                self.source.clone(),
                self.chat_id,
                worker_id,
                episode_rx,
                self.tx.clone(),
            ))
        };
        self.conn = Some(Conn {
            worker_id,
            episode: episode_tx,
            _task: AbortOnDrop(task),
        });
    }
}

/// Reads episodes of this replica's buffer, following the episode watch.
async fn read_local(
    parts: PartBuffer<BufferedPart>,
    chat_id: Uuid,
    mut episode: watch::Receiver<(i64, i64)>,
    tx: mpsc::Sender<pb::ChatMessagePartEvent>,
) {
    loop {
        let (history_version, generation_attempt) = *episode.borrow_and_update();
        let key = EpisodeKey {
            chat_id,
            history_version,
            generation_attempt,
        };
        let mut sub = parts.subscribe(key);
        let drained = loop {
            tokio::select! {
                changed = episode.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break false;
                }
                part = sub.next() => match part {
                    Some((seq, part)) => {
                        if tx.send(convert::live_part(&part.to_live(), &key, seq)).await.is_err() {
                            return;
                        }
                    }
                    None => break true,
                },
            }
        };
        // Drained: nothing more until the loop points elsewhere.
        if drained && episode.changed().await.is_err() {
            return;
        }
    }
}

/// Reads episodes from another replica's relay, reconnecting with back-off until the stream
/// loop points elsewhere (which drops this task).
async fn read_remote(
    source: PartSource,
    chat_id: Uuid,
    worker_id: Uuid,
    mut episode: watch::Receiver<(i64, i64)>,
    tx: mpsc::Sender<pb::ChatMessagePartEvent>,
) {
    let mut delay = RECONNECT_INITIAL;
    loop {
        match relay_once(&source, chat_id, worker_id, &mut episode, &tx).await {
            Ok(Ended::ConsumerGone) => return,
            Ok(Ended::Progressed) => delay = RECONNECT_INITIAL,
            Ok(Ended::Idle) => {}
            Err(why) => debug!(%chat_id, %worker_id, %why, "part relay interrupted; reconnecting"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// How one relay call ended without an error.
enum Ended {
    /// The stream loop is gone.
    ConsumerGone,
    /// The other replica ended the call after delivering parts.
    Progressed,
    /// The other replica ended the call without delivering anything.
    Idle,
}

/// One `StreamParts` call to `worker_id`.
async fn relay_once(
    source: &PartSource,
    chat_id: Uuid,
    worker_id: Uuid,
    episode: &mut watch::Receiver<(i64, i64)>,
    tx: &mpsc::Sender<pb::ChatMessagePartEvent>,
) -> Result<Ended, String> {
    let address = source
        .workspaces
        .worker_address(worker_id, source.stale_after)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("replica {worker_id} is not registered or not alive"))?;
    let channel = source.channel(&address).map_err(|err| err.to_string())?;
    let control = |(history_version, generation_attempt): (i64, i64)| pb::StreamPartsRequest {
        chat_id: chat_id.to_string(),
        history_version,
        generation_attempt,
    };
    let (control_tx, control_rx) = mpsc::channel(4);
    // Cannot fail: the receiver is right here.
    let _ = control_tx.try_send(control(*episode.borrow_and_update()));
    let mut request = Request::new(ReceiverStream::new(control_rx));
    let secret = source.secret.get().await.map_err(|err| err.to_string())?;
    let value = format!("Bearer {secret}")
        .parse()
        .map_err(|_| "the relay secret is not a valid header value".to_owned())?;
    request.metadata_mut().insert("authorization", value);
    let mut responses = ChatPartsRelayClient::new(channel)
        .stream_parts(request)
        .await
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    let mut progressed = false;
    loop {
        tokio::select! {
            changed = episode.changed() => {
                if changed.is_err() {
                    return Ok(Ended::ConsumerGone);
                }
                let next = control(*episode.borrow_and_update());
                if control_tx.send(next).await.is_err() {
                    return Err("the relay call closed".into());
                }
            }
            message = responses.message() => match message {
                Ok(Some(batch)) => {
                    for part in batch.parts {
                        progressed = true;
                        if tx.send(part).await.is_err() {
                            return Ok(Ended::ConsumerGone);
                        }
                    }
                }
                Ok(None) => return Ok(if progressed { Ended::Progressed } else { Ended::Idle }),
                Err(status) => return Err(status.message().to_owned()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
