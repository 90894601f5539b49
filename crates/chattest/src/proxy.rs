//! A TCP proxy on loopback that sits between a client and a real server (chatd and PostgreSQL,
//! chatd and an agent) and adds latency to what the server sends back.
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

/// A running proxy; dropping it closes the listener and every proxied connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    reply_delay: Arc<watch::Sender<Duration>>,
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
        let task = tokio::spawn(accept(listener, upstream, reply_delay.clone()));
        Ok(Self {
            addr,
            reply_delay,
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
) {
    // Connections live in the set, so aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let delay = reply_delay.subscribe();
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, delay).await;
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Copies client → server as it comes and server → client after the reply delay, until either
/// side closes.
async fn relay(client: TcpStream, server: TcpStream, delay: watch::Receiver<Duration>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
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
