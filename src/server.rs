//! The daemon's event loop: listeners opened and closed as LAN addresses and the control state
//! change, a bounded number of connections, each with a deadline for its handshake and first request.
use crate::control::{Control, Mode, State};
use crate::http::{self, ConnInfo};
use crate::lan::{self, Endpoint, Lan};
use crate::log;
use crate::ratelimit::Limiter;
use crate::snapshot::Snapshot;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A connection must finish its TLS handshake and send its first request head within this time.
pub const HANDSHAKE_AND_HEAD: Duration = Duration::from_secs(10);
/// Later request heads on a kept-alive connection (idle time included) must arrive within this time.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);
/// A connection without a request for this long may be closed to make room when all slots are
/// taken: a TLS handshake on a LAN takes milliseconds, even on a box's CPU with many at once.
pub const MIN_PENDING_AGE: Duration = Duration::from_millis(100);
/// On shutdown, open connections get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Request heads (all headers) above this size get 431 or a closed connection.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Everything the request path shares.
pub struct App {
    snapshot: RwLock<Arc<Snapshot>>,
    pub control: Control,
    pub lan: Lan,
    pub limiter: Limiter,
    /// `boxapi authority`: a data-centre token server (any peer, any address, token routes only).
    pub authority: bool,
    /// Replay cache and quotas of the on-box token endpoint.
    pub authz: crate::authz::State,
    connections: Arc<Semaphore>,
    pending: Arc<Pending>,
}

/// Connections that have not sent their first request yet, oldest first. When every connection
/// slot is taken, the oldest of these is closed to make room: slow or silent clients (a
/// slowloris) cannot keep others out for the whole handshake deadline.
#[derive(Default)]
pub struct Pending {
    /// The next id (a plain u64 under the lock: 32-bit MIPS has no 64-bit atomics) and the queue.
    queue: std::sync::Mutex<(u64, std::collections::VecDeque<PendingEntry>)>,
}

/// (id, since when, how to tell it to close)
type PendingEntry = (u64, Instant, Arc<tokio::sync::Notify>);

/// One connection's place in [`Pending`]; leaves the queue when released or dropped.
pub struct PendingSlot {
    id: u64,
    evicted: Arc<tokio::sync::Notify>,
    set: Arc<Pending>,
}

impl Pending {
    fn register(self: &Arc<Self>) -> PendingSlot {
        let evicted = Arc::new(tokio::sync::Notify::new());
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let id = q.0;
        q.0 = q.0.wrapping_add(1);
        q.1.push_back((id, Instant::now(), evicted.clone()));
        drop(q);
        PendingSlot {
            id,
            evicted,
            set: self.clone(),
        }
    }

    /// Closes the oldest connection still waiting for its first request, if it has waited at
    /// least `MIN_PENDING_AGE` (a normal handshake is over long before); false if there is none.
    fn evict_oldest(&self) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.1
            .front()
            .is_none_or(|(_, since, _)| since.elapsed() < MIN_PENDING_AGE)
        {
            return false;
        }
        match q.1.pop_front() {
            Some((_, _, n)) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }
}

impl PendingSlot {
    /// The first request arrived: this connection can no longer be evicted.
    fn release(&self) {
        let mut q = self.set.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.1.retain(|(id, _, _)| *id != self.id);
    }

    async fn evicted(&self) {
        self.evicted.notified().await
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.release();
    }
}

impl App {
    pub fn new(snapshot: Snapshot, state: State, authority: bool) -> Arc<App> {
        let s = &snapshot.config.server;
        let limiter = Limiter::new(s.rate_limit_per_second, s.rate_limit_burst);
        let connections = Arc::new(Semaphore::new(s.max_connections));
        Arc::new(App {
            snapshot: RwLock::new(Arc::new(snapshot)),
            control: Control::new(state),
            lan: Lan::default(),
            limiter,
            authority,
            authz: Default::default(),
            connections,
            pending: Arc::default(),
        })
    }

    /// The configuration in force now; a request keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a new, fully built configuration.
    pub fn replace_snapshot(&self, new: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    /// The endpoints to listen on now (none while disabled), refreshing the LAN prefixes.
    pub fn desired_endpoints(&self) -> Vec<Endpoint> {
        let snap = self.snapshot();
        if self.authority {
            let eps = snap.config.authority_listen.iter().map(|a| Endpoint {
                addr: *a,
                device: None,
            });
            return if self.control.mode() == Mode::Disabled {
                Vec::new()
            } else {
                eps.collect()
            };
        }
        let server = &snap.config.server;
        // Interface addresses matter only for listen_interfaces and for explicit non-loopback
        // addresses (whose interface prefix is the LAN); a loopback-only daemon needs none.
        let needs_interfaces = !server.listen_interfaces.is_empty()
            || server.listen.iter().any(|l| !l.ip().is_loopback());
        let addrs = if needs_interfaces {
            lan::interface_addrs()
        } else {
            Vec::new()
        };
        let endpoints = self.lan.refresh(server, &addrs);
        if self.control.mode() == Mode::Disabled {
            return Vec::new();
        }
        endpoints.into_iter().collect()
    }
}

/// Binds every endpoint wanted now; `main` calls it before `run` so that an explicit `listen`
/// address that cannot be bound (port in use) fails the start. Interface addresses that cannot be
/// bound yet (an IPv6 address still tentative) are logged and retried at the next poll.
pub fn bind_initial(app: &App) -> std::io::Result<Bound> {
    let mut bound = Vec::new();
    for ep in app.desired_endpoints() {
        match bind(app, &ep) {
            Ok(l) => bound.push((ep, l)),
            Err(e) if ep.device.is_some() => bind_error(&ep, &e),
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", ep.addr))),
        }
    }
    Ok(bound)
}

/// The box binds LAN addresses only; the central authority binds what its operator lists.
fn bind(app: &App, ep: &Endpoint) -> std::io::Result<TcpListener> {
    if !app.authority {
        return lan::bind(ep);
    }
    let socket = if ep.addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(ep.addr)?;
    socket.listen(1024)
}

fn bind_error(ep: &Endpoint, e: &std::io::Error) {
    log::event(
        "bind_error",
        &[("addr", &ep.addr.to_string()), ("error", &e.to_string())],
    );
}

/// Listeners bound before the server loop starts.
pub type Bound = Vec<(Endpoint, TcpListener)>;

struct Active {
    local: SocketAddr,
    task: JoinHandle<()>,
}

/// Serves until `shutdown` completes. `listeners` are already bound (tests bind port 0); further
/// listeners are opened and closed as interface addresses and the control state change.
pub async fn run(app: Arc<App>, listeners: Bound, shutdown: impl Future<Output = ()>) {
    let mut active: BTreeMap<Endpoint, Active> = BTreeMap::new();
    for (ep, l) in listeners {
        start_listener(&app, &mut active, ep, l);
    }
    let mut state_changes = app.control.subscribe();
    tokio::pin!(shutdown);
    loop {
        let poll = app.snapshot().config.server.interface_poll;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(poll) => {}
            changed = state_changes.changed() => if changed.is_err() { break },
        }
        reconcile(&app, &mut active);
    }
    for (_, a) in active {
        a.task.abort();
    }
    // In-flight requests get a bounded grace period: each connection holds one permit.
    let max = app.snapshot().config.server.max_connections as u32;
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, app.connections.acquire_many(max)).await;
    log::event(
        "stopped",
        &[(
            "drained",
            if drained.is_ok() {
                "yes"
            } else {
                "no, grace period over"
            },
        )],
    );
}

fn start_listener(
    app: &Arc<App>,
    active: &mut BTreeMap<Endpoint, Active>,
    ep: Endpoint,
    l: TcpListener,
) {
    let local = l.local_addr().unwrap_or(ep.addr);
    let dev = ep.device.clone().unwrap_or_default();
    log::event(
        "listening",
        &[("addr", &local.to_string()), ("device", &dev)],
    );
    let task = tokio::spawn(accept_loop(app.clone(), l));
    active.insert(ep, Active { local, task });
}

/// Opens listeners for new endpoints and closes those whose address went away (or when disabled).
fn reconcile(app: &Arc<App>, active: &mut BTreeMap<Endpoint, Active>) {
    let desired = app.desired_endpoints();
    let gone: Vec<Endpoint> = active
        .keys()
        .filter(|ep| !desired.contains(ep))
        .cloned()
        .collect();
    for ep in gone {
        if let Some(a) = active.remove(&ep) {
            a.task.abort();
            log::event("closed", &[("addr", &a.local.to_string())]);
        }
    }
    for ep in desired {
        if active.contains_key(&ep) {
            continue;
        }
        match bind(app, &ep) {
            Ok(l) => start_listener(app, active, ep, l),
            // A fresh IPv6 address may still be tentative: try again at the next poll.
            Err(e) => log::event(
                "bind_error",
                &[("addr", &ep.addr.to_string()), ("error", &e.to_string())],
            ),
        }
    }
}

async fn accept_loop(app: Arc<App>, listener: TcpListener) {
    loop {
        let (permit, accepted) = match app.connections.clone().try_acquire_owned() {
            Ok(permit) => (permit, listener.accept().await),
            Err(_) => {
                // At capacity: take the next connection. A client that has waited in the backlog
                // and still sent nothing (not even its TLS hello) is closed at once; otherwise make
                // room by closing the oldest connection that is slow to send its first request,
                // and wait for its slot (or any other).
                let accepted = listener.accept().await;
                if let Ok((stream, _)) = &accepted {
                    if !has_data(stream) {
                        continue;
                    }
                }
                let permit = loop {
                    app.pending.evict_oldest();
                    tokio::select! {
                        p = app.connections.clone().acquire_owned() => break p,
                        // The oldest may be too young to evict yet: look again shortly.
                        _ = tokio::time::sleep(MIN_PENDING_AGE / 4) => {}
                    }
                };
                let Ok(permit) = permit else { return };
                (permit, accepted)
            }
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                log::event("accept_error", &[("error", &e.to_string())]);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !app.authority && !app.lan.allows(peer.ip()) {
            // Closed before any TLS byte: requests routed from the WAN side never get an answer.
            log::event("peer_refused", &[("reason", "not in a LAN prefix")]);
            continue;
        }
        // Registered here, not in the task: a burst of accepts runs before any new task does, and
        // an unregistered connection could not be evicted.
        let slot = app.pending.register();
        tokio::spawn(connection(app.clone(), stream, peer, permit, slot));
    }
}

/// Whether bytes are already waiting on the socket (MSG_PEEK, without blocking or consuming).
fn has_data(stream: &TcpStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    matches!(recv(stream.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT), Ok(n) if n > 0)
}

async fn connection(
    app: Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    slot: PendingSlot,
) {
    let deadline = Instant::now() + HANDSHAKE_AND_HEAD;
    let slot = Arc::new(slot);
    let local = stream.local_addr().unwrap_or(peer);
    let _ = stream.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(app.snapshot().tls.clone());
    let tls = tokio::select! {
        r = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => match r {
            Ok(Ok(tls)) => tls,
            _ => return, // handshake failed (e.g. TLS 1.1, plain HTTP) or too slow: no HTTP answer
        },
        _ = slot.evicted() => return,
    };
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    let info = Arc::new(ConnInfo { peer, local, sni });
    let first_request = Arc::new(AtomicBool::new(false));
    let (seen, svc_slot, svc_app) = (first_request.clone(), slot.clone(), app.clone());
    let svc = service_fn(move |req| {
        if !seen.swap(true, Ordering::Relaxed) {
            svc_slot.release();
        }
        let (app, info) = (svc_app.clone(), info.clone());
        async move { Ok::<_, Infallible>(http::handle(&app, &info, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(KEEP_ALIVE_IDLE)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let mut state = app.control.subscribe();
    let mut head_deadline = true;
    loop {
        let waiting = !first_request.load(Ordering::Relaxed);
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep_until(deadline), if head_deadline => {
                if !first_request.load(Ordering::Relaxed) {
                    return; // no request head within the deadline: close
                }
                head_deadline = false;
            }
            _ = slot.evicted(), if waiting => {
                if !first_request.load(Ordering::Relaxed) {
                    return; // room was needed and this client has not asked anything yet
                }
            }
            changed = state.changed() => {
                // The subscriber's switch-off also ends connections already open.
                if changed.is_err() || state.borrow().mode == Mode::Disabled {
                    return;
                }
            }
        }
    }
}
