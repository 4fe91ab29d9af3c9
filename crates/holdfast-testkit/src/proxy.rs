//! A TCP relay between a client and a server that can fail the way networks do without telling
//! anyone: stop forwarding while keeping both sockets open (a half-open link), or black-hole any
//! flow that stayed idle longer than a limit (a NAT or firewall that forgot the mapping). Neither
//! sends a FIN or a reset, so only the endpoints' own liveness checks can notice.
//!
//! A black-holed flow stays black-holed: its bytes are read and dropped, and its sockets are kept
//! open until the proxy is dropped (closing them would tell the peers).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Shared {
    /// Every flow, existing and new, forwards nothing.
    frozen: AtomicBool,
    /// Black-hole a flow idle longer than this many milliseconds (0: never).
    idle_limit_ms: AtomicU64,
    /// Flows accepted so far.
    accepted: AtomicUsize,
    /// Flows black-holed so far (by idleness or by a freeze).
    dropped: AtomicUsize,
    /// Write halves of black-holed flows, kept so that no FIN goes out.
    graveyard: Mutex<Vec<OwnedWriteHalf>>,
}

/// One flow's state, shared by its two directions.
struct Flow {
    last: Mutex<Instant>,
    dead: AtomicBool,
}

/// A relay listening on 127.0.0.1 (ephemeral port) towards `upstream`.
pub struct TestProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl TestProxy {
    /// Starts relaying to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else { return };
                        relay(client, server, shared);
                    });
                }
            })
        };
        TestProxy { addr, shared, accept }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops forwarding on every flow, present and future, without closing anything.
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
    }

    /// Forwards again on flows that were not black-holed (new flows work again).
    pub fn thaw(&self) {
        self.shared.frozen.store(false, Ordering::SeqCst);
    }

    /// Black-holes any flow that forwarded nothing (either way) for longer than `limit`; `None`
    /// turns this off.
    pub fn drop_idle_after(&self, limit: Option<Duration>) {
        let ms = limit.map_or(0, |d| d.as_millis().max(1) as u64);
        self.shared.idle_limit_ms.store(ms, Ordering::SeqCst);
    }

    /// Flows accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Flows black-holed so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let flow = Arc::new(Flow { last: Mutex::new(Instant::now()), dead: AtomicBool::new(false) });
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::spawn(pump(client_read, server_write, flow.clone(), shared.clone()));
    tokio::spawn(pump(server_read, client_write, flow, shared));
}

/// Forwards one direction until EOF; once the flow is dead, reads and drops.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: OwnedWriteHalf, flow: Arc<Flow>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !flow.dead.load(Ordering::SeqCst) {
            let limit = shared.idle_limit_ms.load(Ordering::SeqCst);
            let idle = flow.last.lock().unwrap().elapsed();
            let expired = limit > 0 && idle > Duration::from_millis(limit);
            if (expired || shared.frozen.load(Ordering::SeqCst)) && !flow.dead.swap(true, Ordering::SeqCst) {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if flow.dead.load(Ordering::SeqCst) {
            continue;
        }
        *flow.last.lock().unwrap() = Instant::now();
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if flow.dead.load(Ordering::SeqCst) {
        // No FIN on a black-holed flow: keep the write half open.
        shared.graveyard.lock().unwrap().push(to);
    } else {
        let _ = to.shutdown().await;
    }
}
