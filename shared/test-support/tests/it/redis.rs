//! `TestRedis` against the shared test Redis (`UPTIME_TEST_REDIS_URL`) and
//! `RedisServer` as a real `redis-server` process; checked with fred, the
//! client the hub uses.

use std::future::Future;
use std::time::Duration;

use fred::prelude::*;
use test_support::{Mode, RedisServer, TcpProxy, TestRedis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test finishes or fails within this.
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("the test took more than 30 s")
}

async fn client(url: &str) -> Client {
    let mut config = Config::from_url(url).expect("a Redis URL");
    config.fail_fast = true;
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .build()
        .expect("a fred client");
    client.init().await.expect("connecting to Redis");
    client
}

#[tokio::test]
async fn test_redis_deletes_its_own_keys_and_only_those() {
    bounded(async {
        let mine = TestRedis::new().await.unwrap();
        let other = TestRedis::new().await.unwrap();
        assert_ne!(mine.prefix, other.prefix);
        assert!(mine.prefix.starts_with('t') && mine.prefix.ends_with(':'));
        assert!(
            mine.prefix[..mine.prefix.len() - 1]
                .chars()
                .all(|c| c.is_ascii_alphanumeric()),
            "{} must be a literal SCAN pattern",
            mine.prefix
        );
        assert_eq!(mine.key("a"), format!("{}a", mine.prefix));

        let redis = client(&mine.url).await;
        // More than one SCAN page (COUNT 1000), and a key that is not a string.
        let many: Vec<(String, String)> = (0..2500)
            .map(|i| (mine.key(&format!("k{i}")), i.to_string()))
            .collect();
        redis.mset(many).await.unwrap();
        redis
            .hset::<(), _, _>(mine.key("hash"), ("field", "value"))
            .await
            .unwrap();
        redis
            .set::<(), _, _>(other.key("k0"), "theirs", None, None, false)
            .await
            .unwrap();

        assert_eq!(mine.clear().unwrap(), 2501);
        let left: i64 = redis
            .exists(vec![mine.key("k0"), mine.key("k2499"), mine.key("hash")])
            .await
            .unwrap();
        assert_eq!(left, 0);

        // Drop does the same, and leaves the other prefix alone.
        redis
            .set::<(), _, _>(mine.key("again"), "1", None, None, false)
            .await
            .unwrap();
        let again = mine.key("again");
        drop(mine);
        assert_eq!(redis.exists::<i64, _>(again).await.unwrap(), 0);
        let theirs: Option<String> = redis.get(other.key("k0")).await.unwrap();
        assert_eq!(theirs.as_deref(), Some("theirs"));
        drop(other);
        redis.quit().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn redis_server_restarts_empty_on_the_same_port() {
    bounded(async {
        let mut server = RedisServer::start().await.unwrap();
        let (url, port) = (server.url(), server.port());
        assert_eq!(url, format!("redis://127.0.0.1:{port}"));

        let before = client(&url).await;
        before
            .set::<(), _, _>("survives?", "no", None, None, false)
            .await
            .unwrap();
        assert_eq!(before.dbsize::<i64>().await.unwrap(), 1);

        server.restart_empty().await.unwrap();
        assert_eq!(server.port(), port);
        assert_eq!(server.url(), url);
        let after = client(&url).await;
        assert_eq!(after.dbsize::<i64>().await.unwrap(), 0);
        after.quit().await.unwrap();

        // Stopped: nothing listens until it is started again.
        server.stop().await.unwrap();
        assert!(!server.is_running());
        TcpStream::connect(server.addr())
            .await
            .expect_err("nothing should listen while stopped");
        server.restart_empty().await.unwrap();
        assert!(server.is_running());
        let again = client(&url).await;
        assert_eq!(again.dbsize::<i64>().await.unwrap(), 0);
        again.quit().await.unwrap();
        drop(before);

        // Dropping kills the process; the port closes once it has exited.
        let addr = server.addr();
        drop(server);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server still listens 5 s after drop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn two_servers_do_not_share_anything() {
    bounded(async {
        let (a, b) = (
            RedisServer::start().await.unwrap(),
            RedisServer::start().await.unwrap(),
        );
        assert_ne!(a.port(), b.port());
        let (ca, cb) = (client(&a.url()).await, client(&b.url()).await);
        ca.set::<(), _, _>("k", "a", None, None, false)
            .await
            .unwrap();
        assert_eq!(cb.dbsize::<i64>().await.unwrap(), 0);
    })
    .await;
}

/// Sends an inline PING and waits `wait` for the reply.
async fn ping(stream: &mut TcpStream, wait: Duration) -> std::io::Result<Vec<u8>> {
    stream.write_all(b"PING\r\n").await?;
    let mut reply = vec![0; 7];
    match tokio::time::timeout(wait, stream.read_exact(&mut reply)).await {
        Ok(read) => read.map(|_| reply),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[tokio::test]
async fn a_proxy_in_front_of_redis_cuts_it_off_and_heals() {
    bounded(async {
        let server = RedisServer::start().await.unwrap();
        let proxy = TcpProxy::start(server.addr()).await.unwrap();
        assert_eq!(
            proxy.url_for("redis"),
            format!("redis://127.0.0.1:{}", proxy.addr().port())
        );
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            ping(&mut conn, Duration::from_secs(2)).await.unwrap(),
            b"+PONG\r\n"
        );

        proxy.mode(Mode::BlackHole);
        let silent = ping(&mut conn, Duration::from_millis(300)).await;
        assert_eq!(silent.unwrap_err().kind(), std::io::ErrorKind::TimedOut);

        proxy.mode(Mode::Pass);
        let redis = client(&proxy.url_for("redis")).await;
        assert_eq!(redis.dbsize::<i64>().await.unwrap(), 0);
        redis.quit().await.unwrap();
    })
    .await;
}
