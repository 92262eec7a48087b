//! The demo pages over a real socket, spoken to with hand-written HTTP/1.1 (no HTTP client
//! dependency needed for a status line and a body).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use demo_sites::{Config, Hits, KEYWORD};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    addr: SocketAddr,
    hits: Arc<Hits>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(config: Config) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (router, hits) = demo_sites::router(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(demo_sites::serve_router(listener, router, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        hits,
        stop,
        task,
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn fixed_pages_answer_as_documented_and_are_counted() {
    let server = start(Config::default()).await;

    let up = get(server.addr, "/up").await;
    assert_eq!((up.status, up.body.as_str()), (200, "ok"));
    assert_eq!(get(server.addr, "/down").await.status, 503);
    let keyword = get(server.addr, "/keyword").await;
    assert_eq!(keyword.status, 200);
    assert!(keyword.body.contains(KEYWORD), "{}", keyword.body);
    let redirect = get(server.addr, "/redirect").await;
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location"), Some("/up"));
    let index = get(server.addr, "/").await;
    assert_eq!(index.status, 200);
    for path in ["/up", "/down", "/slow", "/flap", "/keyword", "/redirect"] {
        assert!(
            index.body.contains(&format!("href=\"{path}\"")),
            "{path} missing from index"
        );
    }
    assert_eq!(get(server.addr, "/nope").await.status, 404);

    assert_eq!(server.hits.get("/up"), 1);
    assert_eq!(server.hits.get("/down"), 1);
    assert_eq!(server.hits.get("/redirect"), 1);
    assert_eq!(server.hits.get("/flap"), 0);
    assert_eq!(server.hits.get("/nope"), 0);
    assert_eq!(server.hits.total(), 5);

    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn slow_waits_for_its_configured_or_requested_delay() {
    let server = start(Config {
        slow_ms: 150,
        ..Config::default()
    })
    .await;

    let started = Instant::now();
    assert_eq!(get(server.addr, "/slow").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let started = Instant::now();
    let reply = get(server.addr, "/slow?ms=20").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok after 20 ms"));
    assert!(started.elapsed() >= Duration::from_millis(20));

    assert_eq!(get(server.addr, "/slow?ms=later").await.status, 400);
    assert_eq!(server.hits.get("/slow"), 3);
}

#[tokio::test]
async fn flap_follows_wall_clock_phase() {
    let period = Duration::from_secs(3600);
    let server = start(Config {
        flap_period: period,
        ..Config::default()
    })
    .await;
    // Read the phase on both sides of the request; with an hour-long period they agree unless
    // the request straddles a boundary, in which case either answer is right.
    let before = demo_sites::flap_is_up(SystemTime::now(), period);
    let status = get(server.addr, "/flap").await.status;
    let after = demo_sites::flap_is_up(SystemTime::now(), period);
    let expected: &[u16] = match (before, after) {
        (true, true) => &[200],
        (false, false) => &[500],
        _ => &[200, 500],
    };
    assert!(
        expected.contains(&status),
        "got {status}, expected {expected:?}"
    );
}

#[tokio::test]
async fn serve_answers_until_its_shutdown_future_resolves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(demo_sites::serve(listener, Config::default(), async move {
        let _ = stopped.await;
    }));
    assert_eq!(get(addr, "/up").await.status, 200);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_two_minute_slow_request() {
    let server = start(Config::default()).await;
    let in_flight = tokio::spawn(get(server.addr, "/slow?ms=120000"));
    // The request is counted when its handler starts: from then on it is in flight.
    while server.hits.get("/slow") == 0 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    server.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("serve returned within the grace period")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    in_flight.abort();
}
