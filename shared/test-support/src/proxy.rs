//! [`TcpProxy`]: a loopback TCP proxy whose behaviour a test switches at
//! runtime, to cut a process off from Redis (or anything else) the way a
//! network would.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does with connections, current and new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards bytes both ways, and end-of-stream too. New connections get a
    /// connection of their own to the target.
    Pass,
    /// A partition that looks like silence: connections stay open, but bytes
    /// (and end-of-stream) in either direction are read and thrown away. New
    /// connections are accepted and not forwarded.
    ///
    /// A real network would hold and retransmit those bytes instead, so a
    /// connection that lost any is reset when the mode goes back to `Pass`:
    /// forwarding a stream with a hole in it would desynchronise the protocol
    /// on it in a way no network can. A connection that lost nothing (an
    /// idle one, or one accepted meanwhile) carries on.
    BlackHole,
    /// Resets (RST, via SO_LINGER 0) every current connection on both sides,
    /// and every new one as soon as it is accepted, until the mode changes.
    Reset,
}

/// A TCP proxy on 127.0.0.1 in front of one target address. It starts in
/// [`Mode::Pass`]; [`mode`](Self::mode) switches every connection at once.
/// Dropping it closes the listener and every connection.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards to `target` (resolved once, now).
    /// Needs a tokio runtime; the proxy runs on it until dropped.
    pub async fn start(target: impl ToSocketAddrs) -> io::Result<Self> {
        let target = tokio::net::lookup_host(target)
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "target does not resolve"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(Mode::Pass);
        let accept = tokio::spawn(accept_loop(listener, target, rx));
        Ok(Self {
            addr,
            target,
            mode,
            accept,
        })
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// `SCHEME://127.0.0.1:PORT` for the proxy, e.g. `url_for("redis")`.
    pub fn url_for(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// Switches every connection, current and new, to `mode`. Connection
    /// tasks react at once; there is no need to wait after calling this.
    pub fn mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn current_mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks: aborting it
        // drops the set, which aborts them, which closes their sockets.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(serve(client, target, mode.clone()));
                }
                // Out of file descriptors, most likely: do not spin on it.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What became of one direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// End-of-stream was read and passed on.
    Done,
    /// The whole connection must be reset.
    Reset,
}

/// Drops the sockets with SO_LINGER 0, so their peers get an RST.
fn reset(client: TcpStream, upstream: Option<TcpStream>) {
    let _ = client.set_zero_linger();
    if let Some(upstream) = upstream {
        let _ = upstream.set_zero_linger();
    }
}

async fn serve(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let _ = client.set_nodelay(true);
    let mut buf = vec![0; 16 * 1024];
    // Until the mode is Pass there is no upstream connection: a connection
    // accepted while black-holed is connected onwards only once it heals.
    let (mut lost, mut eof) = (false, false);
    let mut upstream = loop {
        // Copied out: a `Ref` kept for the match would block `send_replace`.
        let now = *mode.borrow_and_update();
        match now {
            Mode::Reset => return reset(client, None),
            Mode::Pass if lost => return reset(client, None),
            Mode::Pass => tokio::select! {
                connected = TcpStream::connect(target) => match connected {
                    Ok(upstream) => break upstream,
                    // As if the target had refused the client itself.
                    Err(_) => return reset(client, None),
                },
                changed = mode.changed() => if changed.is_err() { return },
            },
            Mode::BlackHole => tokio::select! {
                read = client.read(&mut buf), if !eof => match read {
                    Ok(n) => (lost, eof) = (true, n == 0),
                    Err(_) => return reset(client, None),
                },
                changed = mode.changed() => if changed.is_err() { return },
            },
        }
    };
    let _ = upstream.set_nodelay(true);

    // The two directions run concurrently, so neither can hold the other up
    // (a peer that writes while it does not read would otherwise deadlock).
    let lost = AtomicBool::new(false);
    let outcome = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let up = pump(client_read, upstream_write, mode.clone(), &lost);
        let down = pump(upstream_read, client_write, mode, &lost);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let outcome = tokio::select! {
                outcome = &mut up, if !up_done => { up_done = true; outcome }
                outcome = &mut down, if !down_done => { down_done = true; outcome }
            };
            if outcome == Outcome::Reset || (up_done && down_done) {
                break outcome;
            }
        }
    };
    if outcome == Outcome::Reset {
        reset(client, Some(upstream));
    }
}

/// Copies `from` to `to` while the mode is `Pass` and throws the bytes away
/// while it is `BlackHole`, setting `lost`.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mut mode: watch::Receiver<Mode>,
    lost: &AtomicBool,
) -> Outcome {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Reset => return Outcome::Reset,
            Mode::Pass if lost.load(Ordering::Relaxed) => return Outcome::Reset,
            Mode::Pass | Mode::BlackHole => {}
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(n) => n,
                Err(_) => return Outcome::Reset,
            },
            changed = mode.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return Outcome::Reset, // the proxy is gone
            },
        };
        let pass = *mode.borrow() == Mode::Pass;
        let passed = pass
            && tokio::select! {
                // An empty read is end-of-stream: pass it on as a write shutdown.
                written = async {
                    if n == 0 { to.shutdown().await } else { to.write_all(&buf[..n]).await }
                } => match written {
                    Ok(()) => true,
                    Err(_) => return Outcome::Reset,
                },
                // A peer that does not read must not keep a new mode from applying;
                // what was not written is lost.
                _ = mode.wait_for(|m| *m != Mode::Pass) => false,
            };
        if !passed {
            lost.store(true, Ordering::Relaxed);
        }
        if n == 0 {
            if passed {
                return Outcome::Done;
            }
            // The end-of-stream itself was lost: nothing more to read; wait
            // for the mode to leave BlackHole, which then resets.
            let _ = mode.wait_for(|m| *m != Mode::BlackHole).await;
            return Outcome::Reset;
        }
    }
}
