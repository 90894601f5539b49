//! A TCP proxy on loopback that sits between a client and a real server (chatd and PostgreSQL,
//! chatd and an agent): it adds latency to what the server sends back, and makes partitions
//! ([`Mode`]): a blackhole that accepts and never answers, or resets.
//!
//! A fixed reply delay makes orderings deterministic that are otherwise a matter of luck: with
//! a store's pool behind the proxy and its `LISTEN` connection direct, every notification of a
//! commit reaches the process before the reply to its `COMMIT`, which is the ordering that
//! split a commit from its side effects.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::time::Duration;
//! let proxy = chattest::proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await?;
//! proxy.set_reply_delay(Duration::from_millis(150));
//! let url = format!("postgres://postgres@{}/test", proxy.addr());
//! # let _ = url; Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the proxy does with connections, switched at any time with [`Proxy::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways (after the reply delay).
    Pass,
    /// A partition as the peers see it: new connections are accepted and never answered, and
    /// open ones stop moving bytes in both directions, without a FIN or a reset. A connection
    /// stalled this way stays stalled after [`Mode::Pass`] returns (its peers must time it out,
    /// as after a real partition); new ones pass again.
    Blackhole,
    /// Every open connection is reset (RST) and new ones are reset at once: a refused or
    /// crashed server.
    Reset,
}

/// A running proxy; dropping it closes the listener and every proxied connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    reply_delay: Arc<watch::Sender<Duration>>,
    mode: Arc<watch::Sender<Mode>>,
    /// Bumped to reset every stalled connection.
    resets: Arc<watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`, passing
    /// bytes through unchanged until told otherwise.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await
    }

    /// Like [`start`](Self::start), listening on `listen`: an address of this machine, such as
    /// the host end of a virtual link a test made to reach its own network namespaces.
    pub async fn start_on(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let reply_delay = Arc::new(watch::Sender::new(Duration::ZERO));
        let mode = Arc::new(watch::Sender::new(Mode::Pass));
        let resets = Arc::new(watch::Sender::new(0));
        let task = tokio::spawn(accept(
            listener,
            upstream,
            reply_delay.clone(),
            mode.clone(),
            resets.clone(),
        ));
        Ok(Self {
            addr,
            reply_delay,
            mode,
            resets,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, every chunk the server sends reaches the client `delay` after it was read
    /// (latency, not a bandwidth limit: chunks keep their order and do not queue behind each
    /// other's delays).
    pub fn set_reply_delay(&self, delay: Duration) {
        self.reply_delay.send_replace(delay);
    }

    /// From now on, treats connections as `mode` says.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Ends a partition: every connection the blackhole stalled is reset (as a peer's restart
    /// or a middlebox's idle timeout ends it in production), and new connections pass.
    pub fn end_partition(&self) {
        self.resets.send_modify(|n| *n += 1);
        self.mode.send_replace(Mode::Pass);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    reply_delay: Arc<watch::Sender<Duration>>,
    mode: Arc<watch::Sender<Mode>>,
    resets: Arc<watch::Sender<u64>>,
) {
    // Connections live in the set, so aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let delay = reply_delay.subscribe();
                let mut mode = mode.subscribe();
                let resets = resets.subscribe();
                connections.spawn(async move {
                    let mut client = client;
                    let now = *mode.borrow_and_update();
                    match now {
                        Mode::Pass => {}
                        Mode::Blackhole => return stall(client, None, mode, resets).await,
                        Mode::Reset => return reset(&client),
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return reset(&client);
                    };
                    let changed = tokio::select! {
                        () = relay(&mut client, &mut server, delay, mode.clone()) => return,
                        changed = mode.wait_for(|m| *m != Mode::Pass) => changed.map(|m| *m),
                    };
                    if matches!(changed, Ok(Mode::Blackhole)) {
                        stall(client, Some(server), mode, resets).await;
                    } else {
                        reset(&client);
                        reset(&server);
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Holds a blackholed connection open, moving no bytes, until the proxy resets, the partition
/// ends, or the proxy is dropped.
async fn stall(
    client: TcpStream,
    server: Option<TcpStream>,
    mut mode: watch::Receiver<Mode>,
    mut resets: watch::Receiver<u64>,
) {
    tokio::select! {
        _ = mode.wait_for(|m| *m == Mode::Reset) => {}
        _ = resets.changed() => {}
    }
    reset(&client);
    if let Some(server) = &server {
        reset(server);
    }
}

/// Closes with a reset rather than a FIN (SO_LINGER 0 when the socket is dropped).
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Copies client → server as it comes and server → client after the reply delay, until either
/// side closes. A chunk is forwarded only while the mode is [`Mode::Pass`] (read at the moment it
/// is forwarded, so nothing written after [`Proxy::set_mode`] returns gets through); otherwise
/// the copying stops and the caller's mode watch takes over.
async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    delay: watch::Receiver<Duration>,
    mode: watch::Receiver<Mode>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let passing = || *mode.borrow() == Mode::Pass;
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) if !passing() => return std::future::pending().await,
                Ok(n) => {
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown().await;
    };
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_replies = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let at = Instant::now() + *delay.borrow();
                    if chunks.send((at, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let write_replies = async {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if !passing() {
                return std::future::pending().await;
            }
            if client_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        () = requests => {}
        ((), ()) = async { tokio::join!(read_replies, write_replies) } => {}
    }
}
