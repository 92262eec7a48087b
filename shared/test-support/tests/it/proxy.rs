//! `TcpProxy` in front of a small echo server, all on 127.0.0.1.

use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use test_support::{Mode, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long "silence" must last, and how soon a reset must arrive.
const SILENCE: Duration = Duration::from_millis(300);
const PROMPTLY: Duration = Duration::from_secs(2);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("the test took more than 30 s")
}

/// An echo server; each connection reports how it ended (its copy's result).
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<io::Result<u64>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ended, ends) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let ended = ended.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let copied = tokio::io::copy(&mut r, &mut w).await;
                let _ = ended.send(copied);
            });
        }
    });
    (addr, ends)
}

async fn echoes(stream: &mut TcpStream, msg: &[u8]) -> bool {
    stream.write_all(msg).await.unwrap();
    let mut back = vec![0; msg.len()];
    match tokio::time::timeout(PROMPTLY, stream.read_exact(&mut back)).await {
        Ok(Ok(_)) => back == msg,
        _ => false,
    }
}

/// What the next read brings within `wait`: `Ok(n)` bytes (0: end-of-stream),
/// an error, or `TimedOut` if nothing came.
async fn next_read(stream: &mut TcpStream, wait: Duration) -> io::Result<usize> {
    let mut buf = [0; 64];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(read) => read,
        Err(_) => Err(ErrorKind::TimedOut.into()),
    }
}

fn kind(read: io::Result<usize>) -> Option<ErrorKind> {
    read.err().map(|e| e.kind())
}

#[tokio::test]
async fn pass_forwards_both_ways_and_end_of_stream() {
    bounded(async {
        let (echo, mut ends) = echo_server().await;
        let proxy = TcpProxy::start(echo).await.unwrap();
        assert_eq!(proxy.target(), echo);
        assert_eq!(proxy.current_mode(), Mode::Pass);
        assert_eq!(proxy.url_for("tcp"), format!("tcp://{}", proxy.addr()));

        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut conn, b"hello").await);
        assert!(echoes(&mut conn, b"again").await);
        // Our FIN reaches the echo server, which then closes; that FIN comes back.
        conn.shutdown().await.unwrap();
        assert_eq!(next_read(&mut conn, PROMPTLY).await.unwrap(), 0);
        assert_eq!(ends.recv().await.unwrap().unwrap(), 10);
    })
    .await;
}

#[tokio::test]
async fn pass_does_not_deadlock_when_both_sides_write_a_lot() {
    bounded(async {
        let (echo, _ends) = echo_server().await;
        let proxy = TcpProxy::start(echo).await.unwrap();
        let conn = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut r, mut w) = conn.into_split();
        const TOTAL: usize = 8 << 20;
        let writer = async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..TOTAL / chunk.len() {
                w.write_all(&chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        };
        let reader = async move {
            let mut buf = vec![0; 64 * 1024];
            let mut total = 0;
            loop {
                match r.read(&mut buf).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        };
        let ((), echoed) = tokio::join!(writer, reader);
        assert_eq!(echoed, TOTAL);
    })
    .await;
}

#[tokio::test]
async fn black_hole_is_silence_and_healing_resets_only_what_lost_bytes() {
    bounded(async {
        let (echo, _ends) = echo_server().await;
        let proxy = TcpProxy::start(echo).await.unwrap();
        let mut talker = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut idle = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut talker, b"before").await);
        assert!(echoes(&mut idle, b"before").await);

        proxy.mode(Mode::BlackHole);
        assert_eq!(proxy.current_mode(), Mode::BlackHole);
        // An open connection: what it sends disappears.
        talker.write_all(b"lost").await.unwrap();
        assert_eq!(
            kind(next_read(&mut talker, SILENCE).await),
            Some(ErrorKind::TimedOut)
        );
        // A new connection is accepted, and that is all.
        let mut newcomer = TcpStream::connect(proxy.addr()).await.unwrap();
        newcomer.write_all(b"lost too").await.unwrap();
        assert_eq!(
            kind(next_read(&mut newcomer, SILENCE).await),
            Some(ErrorKind::TimedOut)
        );
        let mut quiet_newcomer = TcpStream::connect(proxy.addr()).await.unwrap();

        proxy.mode(Mode::Pass);
        // Streams with a hole in them are reset rather than resumed...
        assert_eq!(
            kind(next_read(&mut talker, PROMPTLY).await),
            Some(ErrorKind::ConnectionReset)
        );
        assert_eq!(
            kind(next_read(&mut newcomer, PROMPTLY).await),
            Some(ErrorKind::ConnectionReset)
        );
        // ...while those that lost nothing carry on, and new ones work.
        assert!(echoes(&mut idle, b"after").await);
        assert!(echoes(&mut quiet_newcomer, b"after").await);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut fresh, b"after").await);
    })
    .await;
}

#[tokio::test]
async fn black_hole_swallows_replies_too() {
    bounded(async {
        // An upstream that answers once, late: the answer falls into the hole.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let (accepted, mut upstream_accepted) = mpsc::unbounded_channel::<()>();
        let (go, mut wait_for_go) = mpsc::unbounded_channel::<()>();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            accepted.send(()).unwrap();
            wait_for_go.recv().await;
            let _ = stream.write_all(b"late reply").await;
            let _ = stream.read(&mut [0; 1]).await;
        });
        let proxy = TcpProxy::start(upstream).await.unwrap();
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        // The proxy connects upstream as soon as it accepts (in Pass).
        upstream_accepted.recv().await.unwrap();

        proxy.mode(Mode::BlackHole);
        go.send(()).unwrap();
        assert_eq!(
            kind(next_read(&mut conn, SILENCE).await),
            Some(ErrorKind::TimedOut)
        );
        proxy.mode(Mode::Pass);
        assert_eq!(
            kind(next_read(&mut conn, PROMPTLY).await),
            Some(ErrorKind::ConnectionReset)
        );
    })
    .await;
}

#[tokio::test]
async fn reset_resets_both_sides_and_new_connections_until_pass() {
    bounded(async {
        let (echo, mut ends) = echo_server().await;
        let proxy = TcpProxy::start(echo).await.unwrap();
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut conn, b"hello").await);

        proxy.mode(Mode::Reset);
        assert_eq!(
            kind(next_read(&mut conn, PROMPTLY).await),
            Some(ErrorKind::ConnectionReset)
        );
        // The upstream side was reset as well.
        let upstream_end = tokio::time::timeout(PROMPTLY, ends.recv()).await.unwrap();
        assert_eq!(
            upstream_end.unwrap().unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );
        // New connections are accepted by the kernel, then reset at once.
        let mut newcomer = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            kind(next_read(&mut newcomer, PROMPTLY).await),
            Some(ErrorKind::ConnectionReset)
        );

        proxy.mode(Mode::Pass);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut fresh, b"works again").await);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_target_resets_the_client() {
    bounded(async {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let proxy = TcpProxy::start(target).await.unwrap();
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            kind(next_read(&mut conn, PROMPTLY).await),
            Some(ErrorKind::ConnectionReset)
        );
    })
    .await;
}

#[tokio::test]
async fn dropping_the_proxy_closes_everything() {
    bounded(async {
        let (echo, _ends) = echo_server().await;
        let proxy = TcpProxy::start(echo).await.unwrap();
        let addr = proxy.addr();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut conn, b"hello").await);
        drop(proxy);
        assert_eq!(next_read(&mut conn, PROMPTLY).await.unwrap(), 0);
        let refused = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    })
    .await;
}
