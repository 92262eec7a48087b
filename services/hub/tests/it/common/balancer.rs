//! [`Balancer`]: a least-connections TCP load balancer on 127.0.0.1, as
//! HAProxy's `balance leastconn` in the dev stack or a cloud balancer in
//! front of hub pods: each new connection goes to the backend with the
//! fewest open connections through it. Backends can be added while it runs
//! (a hub scaled out).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

struct Backend {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            open: Arc::default(),
        }
    }
}

type Backends = Arc<Mutex<Vec<Backend>>>;

pub struct Balancer {
    addr: SocketAddr,
    backends: Backends,
    accept: JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: &[SocketAddr]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backends: Backends = Arc::new(Mutex::new(
            backends.iter().copied().map(Backend::new).collect(),
        ));
        let accept = tokio::spawn(accept_loop(listener, backends.clone()));
        Self {
            addr,
            backends,
            accept,
        }
    }

    pub fn add(&self, backend: SocketAddr) {
        self.backends.lock().unwrap().push(Backend::new(backend));
    }

    /// The validators' hub URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // The accept task owns the connection tasks: aborting it ends them.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, backends: Backends) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    // Least connections; the first listed on a tie.
                    let (target, open) = {
                        let b = backends.lock().unwrap();
                        let least = b
                            .iter()
                            .min_by_key(|b| b.open.load(Ordering::Relaxed))
                            .expect("a backend");
                        least.open.fetch_add(1, Ordering::Relaxed);
                        (least.addr, least.open.clone())
                    };
                    connections.spawn(async move {
                        forward(client, target).await;
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
