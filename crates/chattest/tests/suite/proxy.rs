//! The proxy's modes against an echo server: what the client on the other side sees.

use std::time::Duration;

use chattest::proxy::{Mode, Proxy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on loopback.
async fn echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(text).await?;
    let mut buf = vec![0; text.len()];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// A proxy to an echo server, blackholed with two connections stalled: one opened before the
/// partition (which worked) and one during it. Neither gets an answer, nor a FIN.
async fn partitioned() -> (Proxy, [TcpStream; 2]) {
    let proxy = Proxy::start(echo().await).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut open, b"ping").await.unwrap(), b"ping");
    proxy.set_mode(Mode::Blackhole);
    let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
    for stream in [&mut open, &mut new] {
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), round_trip(stream, b"x")).await;
        assert!(
            stalled.is_err(),
            "a blackholed connection answered: {stalled:?}"
        );
    }
    (proxy, [open, new])
}

/// Each stream sees a reset.
async fn assert_reset(streams: &mut [TcpStream]) {
    for stream in streams {
        let mut buf = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the reset arrives");
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
    }
}

/// A new connection through the proxy works.
async fn assert_passes(proxy: &Proxy) {
    let mut healed = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut healed, b"pong").await.unwrap(), b"pong");
}

#[tokio::test]
async fn pass_forwards_blackhole_stalls_and_reset_resets() {
    let (proxy, mut stalled) = partitioned().await;
    // Reset: both see the reset; a connection made afterwards is reset at once.
    proxy.set_mode(Mode::Reset);
    assert_reset(&mut stalled).await;
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(round_trip(&mut refused, b"x").await.is_err());
    // Passing again, new connections work.
    proxy.set_mode(Mode::Pass);
    assert_passes(&proxy).await;
}

#[tokio::test]
async fn ending_a_partition_resets_the_stalled_connections_and_passes_new_ones() {
    let (proxy, mut stalled) = partitioned().await;
    proxy.end_partition();
    assert_reset(&mut stalled).await;
    assert_passes(&proxy).await;
}
