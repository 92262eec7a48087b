//! Loopback-only networking: target checks, client sockets bound to one of
//! several 127.0.0.x source addresses, the file-descriptor limit (`rlimit`),
//! and the GET of the hubs' `/metrics` (`reqwest`).
//!
//! Why several source addresses: a TCP connection is identified by its
//! (source address, source port, destination address, destination port), and
//! Linux hands out about 28k ephemeral ports (32768-60999), so one source
//! address reaches one listener at most ~28k times. Every 127.0.0.0/8 address
//! is loopback, so binding client sockets to 127.0.0.1, 127.0.0.2, ... before
//! connecting multiplies that. `IP_BIND_ADDRESS_NO_PORT` defers the port
//! choice to `connect`, so the kernel may reuse a port for another
//! destination instead of reserving it at `bind`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};
use rlimit::Resource;
use tokio::net::{TcpSocket, TcpStream};
use url::Url;

/// A hub WebSocket endpoint on loopback.
#[derive(Debug, Clone)]
pub struct HubTarget {
    /// As given, e.g. `ws://127.0.0.1:18070/ws` (sent in the upgrade request).
    pub url: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

/// The loopback IP a URL's host names (`localhost` counts as 127.0.0.1), or
/// an error naming the URL if it is not loopback. Hosts of non-special
/// schemes (`postgres://`) arrive as opaque text, so text is parsed too.
fn loopback_ip(u: &Url, what: &str) -> anyhow::Result<IpAddr> {
    let ip: IpAddr = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.into(),
        Some(url::Host::Ipv6(ip)) => ip.into(),
        Some(url::Host::Domain("localhost")) => Ipv4Addr::LOCALHOST.into(),
        Some(url::Host::Domain(d)) => match d.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => bail!(
                "{what} {u}: host {d:?} is not loopback; this tool only targets 127.0.0.0/8, ::1 or localhost"
            ),
        },
        None => bail!("{what} {u} has no host"),
    };
    if !ip.is_loopback() {
        bail!("{what} {u}: {ip} is not a loopback address; this tool only targets loopback");
    }
    Ok(ip)
}

fn loopback_addr(u: &Url, what: &str) -> anyhow::Result<SocketAddr> {
    let ip = loopback_ip(u, what)?;
    let port = u
        .port_or_known_default()
        .with_context(|| format!("{what} {u} has no port"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Parses a `ws://` hub URL and refuses anything but loopback.
pub fn hub_target(s: &str) -> anyhow::Result<HubTarget> {
    let u = Url::parse(s).with_context(|| format!("--hub-url {s:?} is not a URL"))?;
    if u.scheme() != "ws" {
        bail!("--hub-url {s}: only ws:// is supported (loopback, no TLS)");
    }
    let addr = loopback_addr(&u, "--hub-url")?;
    Ok(HubTarget {
        url: s.to_string(),
        addr,
    })
}

/// Parses an `http://` metrics URL and refuses anything but loopback.
pub fn metrics_target(s: &str) -> anyhow::Result<Url> {
    let u = Url::parse(s).with_context(|| format!("--metrics-url {s:?} is not a URL"))?;
    if u.scheme() != "http" {
        bail!("--metrics-url {s}: only http:// is supported");
    }
    loopback_addr(&u, "--metrics-url")?;
    Ok(u)
}

/// Refuses a PostgreSQL URL whose host is not loopback (a Unix socket, given
/// as `host=/path` or an empty host, is local and allowed).
pub fn check_database_url(s: &str) -> anyhow::Result<()> {
    let u = Url::parse(s).context("--database-url is not a URL")?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        bail!("--database-url must be a postgres:// URL");
    }
    let socket_param = u
        .query_pairs()
        .any(|(k, v)| k == "host" && v.starts_with('/'));
    match u.host() {
        None => Ok(()),
        Some(url::Host::Domain("")) => Ok(()),
        Some(_) if socket_param => Ok(()),
        Some(_) => loopback_ip(&u, "--database-url").map(|_| ()),
    }
}

/// The `i`-th client's source address: 127.0.0.(1 + i % k); none for an
/// IPv6 target.
pub fn source_addr(target: &SocketAddr, i: usize, k: usize) -> Option<IpAddr> {
    if !target.is_ipv4() || k == 0 {
        return None;
    }
    let last = 1 + (i % k.min(254)) as u8;
    Some(Ipv4Addr::new(127, 0, 0, last).into())
}

/// Connects to `dest` from `source` (port chosen at connect time), with
/// TCP_NODELAY, within `timeout`.
pub async fn connect(
    dest: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let sock = if dest.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        bind_address_no_port(&sock);
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = tokio::time::timeout(timeout, sock.connect(dest))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Best effort: without it the kernel reserves the port at bind time, which
/// only lowers how many connections fit.
fn bind_address_no_port(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, a pointer to a live c_int and its
    // size; setsockopt does not keep the pointer.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Raises the soft `RLIMIT_NOFILE` to `want` if allowed (root may also raise
/// the hard limit), else to the hard limit. Returns the new soft limit.
pub fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    let (soft, hard) = Resource::NOFILE.get().context("getrlimit(RLIMIT_NOFILE)")?;
    if soft >= want {
        return Ok(soft);
    }
    // Only a privileged process may raise the hard limit; try.
    if hard < want && Resource::NOFILE.set(want, want).is_ok() {
        return Ok(want);
    }
    let soft = hard.min(want);
    Resource::NOFILE
        .set(soft, hard)
        .context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(soft)
}

/// One HTTP client for every scrape (its connection pool is reused). No
/// proxy: the targets are loopback, and a `HTTP_PROXY` in the environment
/// must not take the scrapes elsewhere.
fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client without TLS roots or proxies always builds")
    })
}

/// `GET url` within `timeout`, returning the body of a 200 answer.
pub async fn http_get(url: &Url, timeout: Duration) -> anyhow::Result<String> {
    let resp = http_client()
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "text/plain")
        .timeout(timeout)
        .send()
        .await?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        bail!("HTTP {}", status.as_u16());
    }
    Ok(resp.text().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        let t = hub_target("ws://127.0.0.1:18070/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:18070".parse().unwrap());
        assert!(hub_target("ws://127.0.0.9:1/ws").is_ok());
        assert!(hub_target("ws://localhost:1/ws").is_ok());
        assert!(hub_target("ws://[::1]:1/ws").is_ok());
        for bad in [
            "ws://10.0.0.1:1/ws",
            "ws://example.com:1/ws",
            "wss://127.0.0.1:1/ws",
            "http://127.0.0.1:1/ws",
            "nonsense",
        ] {
            assert!(hub_target(bad).is_err(), "{bad}");
        }
        let m = metrics_target("http://127.0.0.1:18080/metrics").unwrap();
        assert_eq!(m.port(), Some(18080));
        assert_eq!(m.path(), "/metrics");
        assert!(metrics_target("http://localhost:18080/metrics").is_ok());
        assert!(metrics_target("http://192.168.1.1:80/metrics").is_err());
        assert!(metrics_target("https://127.0.0.1/metrics").is_err());
        assert!(check_database_url("postgres://u@127.0.0.1:5432/db").is_ok());
        assert!(check_database_url("postgres://u@localhost/db").is_ok());
        assert!(check_database_url("postgres:///db?host=/run/pg").is_ok());
        assert!(check_database_url("postgres://u@db.internal:5432/db").is_err());
        assert!(check_database_url("mysql://127.0.0.1/db").is_err());
    }

    #[test]
    fn source_addresses_cycle_over_loopback() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(source_addr(&v4, 0, 4), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_addr(&v4, 5, 4), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(source_addr(&v4, 3, 4), Some("127.0.0.4".parse().unwrap()));
        assert_eq!(source_addr(&v6, 3, 4), None);
        assert_eq!(source_addr(&v4, 3, 0), None);
    }

    /// A tiny HTTP server answering one request per connection with
    /// `answer`; returns its URL.
    async fn serve(answer: &'static str) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/metrics", l.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn http_get_returns_plain_and_chunked_bodies_of_a_200_only() {
        let t = Duration::from_secs(5);
        let plain =
            serve("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello").await;
        assert_eq!(http_get(&plain, t).await.unwrap(), "hello");
        let chunked = serve(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(http_get(&chunked, t).await.unwrap(), "hello world");
        let busy = serve("HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n").await;
        let e = http_get(&busy, t).await.unwrap_err();
        assert!(e.to_string().contains("HTTP 503"), "{e}");
        let garbage = serve("garbage").await;
        assert!(http_get(&garbage, t).await.is_err());
    }

    #[test]
    fn the_open_file_limit_is_raised_as_far_as_allowed() {
        let (soft, hard) = Resource::NOFILE.get().unwrap();
        assert_eq!(raise_nofile(soft).unwrap(), soft, "already enough");
        let got = raise_nofile(hard.saturating_add(1).min(1 << 20)).unwrap();
        assert!(got >= soft.min(hard), "{got}");
        assert_eq!(Resource::NOFILE.get().unwrap().0, got);
    }

    #[tokio::test]
    async fn binds_a_second_loopback_source_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = l.local_addr().unwrap();
        let src = source_addr(&dest, 1, 2);
        let c = connect(dest, src, Duration::from_secs(5)).await.unwrap();
        let (_, peer) = l.accept().await.unwrap();
        assert_eq!(peer.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert!(c.nodelay().unwrap());
    }
}
