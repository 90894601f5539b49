//! The live message-part buffer of a replica (spec/engine.md §13): the parts a generation streams
//! are kept per **episode** `(chat, history_version, generation_attempt)`, numbered from 1, so a
//! client can join mid-stream, get the parts so far and then the live ones.
//!
//! The buffer is pull-based: adding a part never waits for a subscriber, so a slow client cannot
//! slow the generation or anyone else; [`forward`] cuts off a consumer that does not take a part
//! within its deadline. Closed episodes are dropped by [`PartBuffer::collect_garbage`] once their
//! grace period has passed and nobody reads them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

/// An episode: the parts of one model call (or tool step) of a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpisodeKey {
    /// The chat.
    pub chat_id: Uuid,
    /// The history the call works on.
    pub history_version: i64,
    /// The attempt under that history.
    pub generation_attempt: i64,
}

/// What the buffer needs to know of a part: its size as JSON, for the per-episode cap.
pub trait PartSize {
    /// Bytes of the part's JSON form (an estimate is fine).
    fn json_len(&self) -> usize;
}

/// Limits of the buffer (spec/engine.md §18 `parts.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartBufferConfig {
    /// Most part bytes per episode (1 MB); later parts are refused.
    pub episode_max_bytes: usize,
    /// How long a closed episode stays for late subscribers (15 s).
    pub gc_after: Duration,
}

impl Default for PartBufferConfig {
    fn default() -> Self {
        Self {
            episode_max_bytes: 1_000_000,
            gc_after: Duration::from_secs(15),
        }
    }
}

/// Why a part was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The episode was never created.
    #[error("no such episode")]
    Unknown,
    /// The episode is closed.
    #[error("the episode is closed")]
    Closed,
    /// The episode reached its byte cap.
    #[error("the episode is full")]
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    len: usize,
    closed: bool,
}

#[derive(Debug)]
struct Parts<P> {
    list: Vec<P>,
    bytes: usize,
    created: bool,
    closed_at: Option<Instant>,
    model_invoked_at: Option<chrono::DateTime<chrono::Utc>>,
    tool_times: HashMap<String, ToolTimes>,
}

/// When a tool call of an episode started and finished (spec/engine.md §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolTimes {
    /// When the call was dispatched.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When its result arrived.
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug)]
struct Episode<P> {
    parts: Mutex<Parts<P>>,
    progress: watch::Sender<Progress>,
}

impl<P> Episode<P> {
    fn new() -> Self {
        Self {
            parts: Mutex::new(Parts {
                list: Vec::new(),
                bytes: 0,
                created: false,
                closed_at: None,
                model_invoked_at: None,
                tool_times: HashMap::new(),
            }),
            progress: watch::Sender::new(Progress {
                len: 0,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Parts<P>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The buffer of one replica. Cheap to clone (shared).
#[derive(Debug)]
pub struct PartBuffer<P> {
    episodes: Arc<Mutex<HashMap<EpisodeKey, Arc<Episode<P>>>>>,
    config: PartBufferConfig,
}

impl<P> Clone for PartBuffer<P> {
    fn clone(&self) -> Self {
        Self {
            episodes: self.episodes.clone(),
            config: self.config,
        }
    }
}

impl<P: PartSize + Clone + Send + Sync + 'static> PartBuffer<P> {
    /// An empty buffer.
    pub fn new(config: PartBufferConfig) -> Self {
        Self {
            episodes: Arc::default(),
            config,
        }
    }

    fn entry(&self, key: EpisodeKey) -> Arc<Episode<P>> {
        let mut episodes = self.episodes.lock().unwrap_or_else(|p| p.into_inner());
        episodes
            .entry(key)
            .or_insert_with(|| Arc::new(Episode::new()))
            .clone()
    }

    fn get(&self, key: &EpisodeKey) -> Option<Arc<Episode<P>>> {
        let episodes = self.episodes.lock().unwrap_or_else(|p| p.into_inner());
        episodes.get(key).cloned()
    }

    /// Opens an episode; false if it was already created (or closed): each is created once.
    pub fn create_episode(&self, key: EpisodeKey) -> bool {
        let episode = self.entry(key);
        let mut parts = episode.lock();
        if parts.created || parts.closed_at.is_some() {
            return false;
        }
        parts.created = true;
        true
    }

    /// Appends a part; its sequence number (from 1).
    pub fn add_part(&self, key: &EpisodeKey, part: P) -> Result<u64, AddError> {
        let episode = self.get(key).ok_or(AddError::Unknown)?;
        let mut parts = episode.lock();
        if parts.closed_at.is_some() {
            return Err(AddError::Closed);
        }
        if !parts.created {
            return Err(AddError::Unknown);
        }
        let size = part.json_len();
        if parts.bytes.saturating_add(size) > self.config.episode_max_bytes {
            return Err(AddError::Full);
        }
        parts.bytes += size;
        parts.list.push(part);
        let len = parts.list.len();
        drop(parts);
        episode
            .progress
            .send_replace(Progress { len, closed: false });
        Ok(len as u64)
    }

    /// The parts so far (empty for an unknown episode).
    pub fn parts(&self, key: &EpisodeKey) -> Vec<P> {
        self.get(key)
            .map(|e| e.lock().list.clone())
            .unwrap_or_default()
    }

    /// Records that the episode's model call was sent (usage accounting of interrupted
    /// attempts); the first call wins.
    pub fn start_model_invocation(&self, key: EpisodeKey) {
        let episode = self.entry(key);
        let mut parts = episode.lock();
        if parts.model_invoked_at.is_none() {
            parts.model_invoked_at = Some(chrono::Utc::now());
        }
    }

    /// When the episode's model call was sent.
    pub fn model_invoked_at(&self, key: &EpisodeKey) -> Option<chrono::DateTime<chrono::Utc>> {
        self.get(key).and_then(|e| e.lock().model_invoked_at)
    }

    /// Records that a tool call of the episode started.
    pub fn tool_started(&self, key: EpisodeKey, tool_call_id: &str) {
        let episode = self.entry(key);
        episode.lock().tool_times.insert(
            tool_call_id.to_owned(),
            ToolTimes {
                started_at: chrono::Utc::now(),
                finished_at: None,
            },
        );
    }

    /// Records that a tool call of the episode finished.
    pub fn tool_finished(&self, key: EpisodeKey, tool_call_id: &str) {
        let episode = self.entry(key);
        if let Some(times) = episode.lock().tool_times.get_mut(tool_call_id) {
            times.finished_at = Some(chrono::Utc::now());
        }
    }

    /// A tool call's start and finish times.
    pub fn tool_times(&self, key: &EpisodeKey, tool_call_id: &str) -> Option<ToolTimes> {
        self.get(key)
            .and_then(|e| e.lock().tool_times.get(tool_call_id).copied())
    }

    /// Closes an episode (idempotent). An unknown episode is created closed, so a close that
    /// races ahead of the create wins.
    pub fn close_episode(&self, key: EpisodeKey) {
        let episode = self.entry(key);
        let mut parts = episode.lock();
        if parts.closed_at.is_none() {
            parts.closed_at = Some(Instant::now());
        }
        let len = parts.list.len();
        drop(parts);
        episode
            .progress
            .send_replace(Progress { len, closed: true });
    }

    /// Reads an episode from its first part: the buffered ones, then live ones; ends once the
    /// episode is closed and drained. Waits for an episode that does not exist yet.
    pub fn subscribe(&self, key: EpisodeKey) -> PartSubscription<P> {
        let episode = self.entry(key);
        let progress = episode.progress.subscribe();
        PartSubscription {
            episode,
            progress,
            next: 0,
        }
    }

    /// Drops closed episodes older than the grace period that nobody reads; how many.
    pub fn collect_garbage(&self) -> usize {
        let now = Instant::now();
        let mut episodes = self.episodes.lock().unwrap_or_else(|p| p.into_inner());
        let before = episodes.len();
        episodes.retain(|_, episode| {
            let expired = episode
                .lock()
                .closed_at
                .is_some_and(|at| now.duration_since(at) >= self.config.gc_after);
            // The map holds one reference; any other is a subscriber.
            !(expired && Arc::strong_count(episode) == 1)
        });
        before - episodes.len()
    }

    /// Episodes held (open, closed, or awaited by a subscriber).
    pub fn len(&self) -> usize {
        self.episodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether no episode is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A reader of one episode.
#[derive(Debug)]
pub struct PartSubscription<P> {
    episode: Arc<Episode<P>>,
    progress: watch::Receiver<Progress>,
    next: usize,
}

impl<P: Clone> PartSubscription<P> {
    /// The next part with its sequence number; `None` once the episode is closed and drained.
    pub async fn next(&mut self) -> Option<(u64, P)> {
        loop {
            // Mark the current progress seen before reading, so an add in between wakes us.
            let progress = *self.progress.borrow_and_update();
            if let Some(part) = self.episode.lock().list.get(self.next).cloned() {
                self.next += 1;
                return Some((self.next as u64, part));
            }
            if progress.closed && self.next >= progress.len {
                return None;
            }
            if self.progress.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The next part if one is buffered already, without waiting (to batch what is ready).
    pub fn try_next(&mut self) -> Option<(u64, P)> {
        let part = self.episode.lock().list.get(self.next).cloned()?;
        self.next += 1;
        Some((self.next as u64, part))
    }
}

/// Why [`forward`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardEnd {
    /// The episode closed and every part was delivered.
    Drained,
    /// The consumer went away.
    ConsumerGone,
    /// The consumer did not take a part within the deadline and was cut off.
    TooSlow,
}

/// Sends an episode's parts to a consumer, cutting it off when it does not take a part within
/// `deadline` (10 s in the spec), so a stuck client never holds anything up.
pub async fn forward<P: Clone>(
    mut parts: PartSubscription<P>,
    consumer: mpsc::Sender<(u64, P)>,
    deadline: Duration,
) -> ForwardEnd {
    while let Some(part) = parts.next().await {
        match tokio::time::timeout(deadline, consumer.send(part)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return ForwardEnd::ConsumerGone,
            Err(_) => return ForwardEnd::TooSlow,
        }
    }
    ForwardEnd::Drained
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PartSize for String {
        fn json_len(&self) -> usize {
            self.len() + 2
        }
    }

    fn key(attempt: i64) -> EpisodeKey {
        EpisodeKey {
            chat_id: Uuid::nil(),
            history_version: 1,
            generation_attempt: attempt,
        }
    }

    fn buffer() -> PartBuffer<String> {
        PartBuffer::new(PartBufferConfig {
            episode_max_bytes: 20,
            gc_after: Duration::from_secs(15),
        })
    }

    #[tokio::test]
    async fn parts_are_numbered_from_one_and_replayed_then_live() {
        let b = buffer();
        assert!(b.create_episode(key(1)));
        assert!(!b.create_episode(key(1)), "once per episode");
        assert_eq!(b.add_part(&key(1), "a".into()), Ok(1));
        assert_eq!(b.add_part(&key(1), "b".into()), Ok(2));
        let mut sub = b.subscribe(key(1));
        assert_eq!(sub.next().await, Some((1, "a".into())));
        assert_eq!(sub.try_next(), Some((2, "b".into())), "buffered: no wait");
        assert_eq!(sub.try_next(), None, "nothing more yet");
        let live = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(p) = sub.next().await {
                got.push(p);
            }
            got
        });
        tokio::task::yield_now().await;
        b.add_part(&key(1), "c".into()).unwrap();
        b.close_episode(key(1));
        assert_eq!(live.await.unwrap(), vec![(3, "c".to_owned())]);
        assert_eq!(b.parts(&key(1)), ["a", "b", "c"]);
        assert_eq!(b.add_part(&key(1), "d".into()), Err(AddError::Closed));
    }

    #[tokio::test]
    async fn a_subscriber_waits_for_an_episode_that_does_not_exist_yet() {
        let b = buffer();
        let mut sub = b.subscribe(key(2));
        assert_eq!(b.add_part(&key(2), "x".into()), Err(AddError::Unknown));
        let reader = tokio::spawn(async move { sub.next().await });
        tokio::task::yield_now().await;
        assert!(b.create_episode(key(2)));
        b.add_part(&key(2), "x".into()).unwrap();
        assert_eq!(reader.await.unwrap(), Some((1, "x".into())));
    }

    #[tokio::test]
    async fn a_close_that_races_ahead_of_the_create_wins() {
        let b = buffer();
        b.close_episode(key(3));
        b.close_episode(key(3));
        assert!(!b.create_episode(key(3)));
        assert_eq!(b.add_part(&key(3), "late".into()), Err(AddError::Closed));
        assert_eq!(b.subscribe(key(3)).next().await, None);
    }

    #[test]
    fn the_byte_cap_refuses_further_parts() {
        let b = buffer();
        b.create_episode(key(4));
        assert_eq!(b.add_part(&key(4), "0123456789".into()), Ok(1)); // 12 bytes
        assert_eq!(b.add_part(&key(4), "01234567".into()), Err(AddError::Full)); // 22 > 20
        assert_eq!(b.add_part(&key(4), "012345".into()), Ok(2)); // exactly 20
    }

    #[tokio::test(start_paused = true)]
    async fn closed_episodes_are_collected_after_the_grace_when_unread() {
        let b = buffer();
        b.create_episode(key(5));
        b.create_episode(key(6));
        b.close_episode(key(5));
        b.close_episode(key(6));
        let reader = b.subscribe(key(6));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.collect_garbage(), 0, "within the grace");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.collect_garbage(), 1, "the read one stays");
        drop(reader);
        assert_eq!(b.collect_garbage(), 1);
        assert!(b.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_stops_taking_parts_is_cut_off() {
        let b = buffer();
        b.create_episode(key(7));
        for p in ["a", "b", "c"] {
            b.add_part(&key(7), p.into()).unwrap();
        }
        b.close_episode(key(7));
        let (tx, mut rx) = mpsc::channel(1);
        let end = tokio::spawn(forward(b.subscribe(key(7)), tx, Duration::from_secs(10)));
        assert_eq!(rx.recv().await, Some((1, "a".into())));
        // The consumer stalls: one part fits the channel, the next one times out.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(end.await.unwrap(), ForwardEnd::TooSlow);

        let (tx, mut rx) = mpsc::channel(8);
        assert_eq!(
            forward(b.subscribe(key(7)), tx, Duration::from_secs(10)).await,
            ForwardEnd::Drained
        );
        assert_eq!(rx.recv().await, Some((1, "a".into())));
    }
}
