//! Redis for tests: [`TestRedis`] isolates a test on the shared server by key
//! prefix; [`RedisServer`] is a private server a test may stop and restart.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::resp::{Conn, Reply};

/// The variable naming the shared test Redis (`redis://127.0.0.1:PORT`).
pub const TEST_REDIS_ENV: &str = "UPTIME_TEST_REDIS_URL";
/// The variable naming the `redis-server` binary [`RedisServer`] runs
/// (default: `redis-server` on `PATH`).
pub const TEST_REDIS_SERVER_ENV: &str = "UPTIME_TEST_REDIS_SERVER";

/// How long the blocking client in [`TestRedis`] waits for any one step.
const BLOCKING_TIMEOUT: Duration = Duration::from_secs(2);

/// A key prefix of this test's own on the shared test Redis.
///
/// Every key a test (or the hub it starts) writes must begin with
/// [`prefix`](Self::prefix), e.g. by passing it as the hub's Redis key
/// prefix; then tests running in parallel never see each other's keys. On
/// drop, every key under the prefix is deleted (best effort: SCAN + UNLINK
/// over a blocking socket, so no runtime is needed). Pub/sub channels are not
/// keys: name them under the prefix too, and nothing needs deleting.
///
/// The server is shared: a test must not FLUSHALL or restart it; a
/// [`RedisServer`] is for that. A [`TcpProxy`](crate::TcpProxy) in front of
/// either cuts off only the connections made through it.
pub struct TestRedis {
    /// URL of the shared server, as given in `UPTIME_TEST_REDIS_URL`.
    pub url: String,
    /// `t<uuid>:`: letters, digits and `:` only, so it is also a literal
    /// SCAN/KEYS pattern.
    pub prefix: String,
    addr: SocketAddr,
    db: u32,
}

impl TestRedis {
    /// Reads `UPTIME_TEST_REDIS_URL` and checks that the server answers PING,
    /// so that a missing server fails here, naming the variable.
    pub async fn new() -> anyhow::Result<Self> {
        let url = std::env::var(TEST_REDIS_ENV).with_context(|| {
            format!("{TEST_REDIS_ENV} is not set: run the tests with scripts/test.sh, which starts Redis")
        })?;
        let (addr, db) = parse_url(&url).with_context(|| {
            format!("{TEST_REDIS_ENV}={url} is not a redis://HOST:PORT[/DB] URL")
        })?;
        let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
        ping(addr)
            .await
            .with_context(|| format!("Redis at {url} ({TEST_REDIS_ENV}) does not answer PING"))?;
        Ok(Self {
            url,
            prefix,
            addr,
            db,
        })
    }

    /// `prefix` + `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The server's address, e.g. for a [`TcpProxy`](crate::TcpProxy) in
    /// front of it (which then only cuts off the connections made through it).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Deletes every key under the prefix now and says how many there were.
    /// Blocking; `Drop` calls it too.
    pub fn clear(&self) -> anyhow::Result<u64> {
        let mut conn = self.connect()?;
        let pattern = format!("{}*", self.prefix);
        let mut cursor = b"0".to_vec();
        let mut deleted = 0;
        loop {
            let reply = conn.command(&[
                b"SCAN",
                &cursor,
                b"MATCH",
                pattern.as_bytes(),
                b"COUNT",
                b"1000",
            ])?;
            let Reply::Array(Some(mut parts)) = reply else {
                bail!("unexpected SCAN reply {reply:?}");
            };
            let (Some(Reply::Array(Some(keys))), Some(Reply::Bulk(Some(next)))) =
                (parts.pop(), parts.pop())
            else {
                bail!("unexpected SCAN reply {parts:?}");
            };
            let keys: Vec<&[u8]> = keys
                .iter()
                .filter_map(|k| match k {
                    Reply::Bulk(Some(k)) => Some(k.as_slice()),
                    _ => None,
                })
                .collect();
            if !keys.is_empty() {
                let mut args: Vec<&[u8]> = vec![b"UNLINK"];
                args.extend(keys);
                if let Reply::Integer(n) = conn.command(&args)? {
                    deleted += n.unsigned_abs();
                }
            }
            if next == b"0" {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    fn connect(&self) -> std::io::Result<Conn> {
        Conn::connect(self.addr, self.db, BLOCKING_TIMEOUT)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.clear();
    }
}

/// `redis://HOST:PORT[/DB]` -> (address, db). No user or password: the test
/// servers have none.
fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, u32)> {
    let rest = url
        .strip_prefix("redis://")
        .context("the scheme is not redis://")?;
    let (host_port, db) = match rest.split_once('/') {
        Some((hp, "")) => (hp, 0),
        Some((hp, db)) => (hp, db.parse().context("the database is not a number")?),
        None => (rest, 0),
    };
    if host_port.contains('@') {
        bail!("a user or password is not supported");
    }
    let addr = host_port
        .to_socket_addrs()
        .context("HOST:PORT does not resolve")?
        .next()
        .context("HOST:PORT does not resolve")?;
    Ok((addr, db))
}

/// A private `redis-server` on a free 127.0.0.1 port, for tests that stop or
/// restart Redis. It never writes to disk (`--save '' --appendonly no`), so a
/// restart is empty, as a real Redis without persistence would be.
///
/// Runs `UPTIME_TEST_REDIS_SERVER`, else `redis-server` from `PATH`. Its log
/// and working folder are a temporary folder that is deleted on drop; the
/// process is killed on drop.
pub struct RedisServer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts the server and waits until it answers PING.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = std::env::var_os(TEST_REDIS_SERVER_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| "redis-server".into());
        let dir =
            std::env::temp_dir().join(format!("uptime-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut server = Self {
            binary,
            dir,
            port: 0,
            child: None,
        };
        // Another process may take the free port before redis-server binds it.
        let mut attempts = 0;
        loop {
            server.port = free_port()?;
            match server.spawn().await {
                Ok(()) => return Ok(server),
                Err(e) if attempts >= 3 => return Err(e),
                Err(_) => attempts += 1,
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`: the same on every restart.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// True until [`stop`](Self::stop); says nothing about whether it answers.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server (SHUTDOWN NOSAVE; SIGKILL if it has not exited within
    /// 5 s) and waits until the process has exited, so the port is free.
    /// Clients see their connections closed and new connections refused.
    /// Does nothing if it is stopped already.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // The server closes the connection instead of answering SHUTDOWN.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut stream = tokio::net::TcpStream::connect(self.addr()).await?;
            stream.write_all(b"SHUTDOWN NOSAVE\r\n").await?;
            stream.read(&mut [0; 64]).await
        })
        .await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            child.start_kill().context("killing redis-server")?;
        }
        child.wait().await.context("waiting for redis-server")?;
        Ok(())
    }

    /// Stops the server if it runs and starts it again, empty, on the same
    /// port ("Redis restarted and lost everything").
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn()
            .await
            .with_context(|| format!("restarting redis-server on port {}", self.port))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        debug_assert!(self.child.is_none());
        let log_path = self.dir.join("redis.log");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--protected-mode", "yes", "--daemonize", "no"])
            .args(["--save", "", "--appendonly", "no"])
            // An empty logfile means stdout, which goes to redis.log.
            .args(["--logfile", ""])
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "running {} (install redis-server or set {TEST_REDIS_SERVER_ENV})",
                    self.binary.display()
                )
            })?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "redis-server on port {} exited ({status}):\n{}",
                    self.port,
                    tail(&log_path)
                );
            }
            if ping(self.addr()).await.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!(
                    "redis-server on port {} did not answer PING within 10 s:\n{}",
                    self.port,
                    tail(&log_path)
                );
            }
            // Nothing to await: redis-server does not say when it is ready.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // kill_on_drop would do it too; tokio reaps the process in the background.
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// One inline PING on a new connection, within a second.
async fn ping(addr: SocketAddr) -> anyhow::Result<()> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"PING\r\n").await?;
        // "+PONG\r\n", or an error such as "-NOAUTH ...\r\n" (cut short).
        let mut reply = [0; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .context("no reply within 1 s")??;
    if &reply != b"+PONG\r\n" {
        bail!("unexpected reply {:?}", String::from_utf8_lossy(&reply));
    }
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_test_urls() {
        let (addr, db) = parse_url("redis://127.0.0.1:56379").unwrap();
        assert_eq!((addr.to_string().as_str(), db), ("127.0.0.1:56379", 0));
        assert_eq!(parse_url("redis://127.0.0.1:1/").unwrap().1, 0);
        assert_eq!(parse_url("redis://127.0.0.1:1/3").unwrap().1, 3);
        assert!(parse_url("rediss://127.0.0.1:1").is_err());
        assert!(parse_url("redis://:pw@127.0.0.1:1").is_err());
        assert!(parse_url("redis://127.0.0.1").is_err());
        assert!(parse_url("redis://127.0.0.1:1/x").is_err());
    }
}
