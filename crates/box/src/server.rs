//! The daemon's event loop: listeners opened and closed as LAN addresses and the control state
//! change, a bounded number of connections, each with a deadline for its handshake and first request.
use crate::app::App;
use crate::http::{self, ConnInfo};
use crate::lan::{self, Endpoint};
use crate::slots::{PendingSlot, MIN_PENDING_AGE};
use boxapi_core::control::Mode;
use boxapi_core::log;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A connection must finish its TLS handshake and send its first request head within this time.
pub const HANDSHAKE_AND_HEAD: Duration = Duration::from_secs(10);
/// Later request heads on a kept-alive connection (idle time included) must arrive within this time.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);
/// On shutdown, open connections get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Request heads (all headers) above this size get 431 or a closed connection.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Binds every endpoint wanted now; `main` calls it before `run` so that an explicit `listen`
/// address that cannot be bound (port in use) fails the start. Interface addresses that cannot be
/// bound yet (an IPv6 address still tentative) are logged and retried at the next poll.
pub fn bind_initial(app: &App) -> std::io::Result<Bound> {
    let mut bound = Vec::new();
    for ep in app.desired_endpoints() {
        match lan::bind(&ep) {
            Ok(l) => bound.push((ep, l)),
            Err(e) if ep.device.is_some() => bind_error(&ep, &e),
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", ep.addr))),
        }
    }
    Ok(bound)
}

fn bind_error(ep: &Endpoint, e: &std::io::Error) {
    log::event(
        "bind_error",
        &[("addr", &ep.addr.to_string()), ("error", &e.to_string())],
    );
}

/// Listeners bound before the server loop starts.
pub type Bound = Vec<(Endpoint, TcpListener)>;

/// A listener being served: its address and its accept loop.
pub(crate) struct Active {
    local: SocketAddr,
    task: JoinHandle<()>,
}

/// Serves until `shutdown` completes. `listeners` are already bound (tests bind port 0); further
/// listeners are opened and closed as interface addresses and the control state change.
pub async fn run(app: Arc<App>, listeners: Bound, shutdown: impl Future<Output = ()>) {
    for (ep, l) in listeners {
        start_listener(&app, ep, l);
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
        // Reading interface addresses (getifaddrs) is a netlink round trip: off the runtime.
        let app2 = app.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let desired = app2.desired_endpoints();
            for (ep, e) in reconcile(&app2, &desired) {
                bind_error(&ep, &e);
            }
        })
        .await;
    }
    for (_, a) in std::mem::take(&mut *app.listeners()) {
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

fn start_listener(app: &Arc<App>, ep: Endpoint, l: TcpListener) {
    let local = l.local_addr().unwrap_or(ep.addr);
    let dev = ep.device.clone().unwrap_or_default();
    log::event(
        "listening",
        &[("addr", &local.to_string()), ("device", &dev)],
    );
    let task = tokio::spawn(accept_loop(app.clone(), l));
    app.listeners().insert(ep, Active { local, task });
}

/// Opens listeners for the `desired` endpoints not yet open and closes those not desired (an
/// address that went away, or the API disabled). Returns the endpoints that could not be bound
/// (a fresh IPv6 address may still be tentative: the next poll tries again). Must run inside the
/// runtime (a blocking thread is fine).
pub(crate) fn reconcile(app: &Arc<App>, desired: &[Endpoint]) -> Vec<(Endpoint, std::io::Error)> {
    let gone: Vec<Active> = {
        let mut active = app.listeners();
        let keys: Vec<Endpoint> = active
            .keys()
            .filter(|ep| !desired.contains(ep))
            .cloned()
            .collect();
        keys.iter().filter_map(|k| active.remove(k)).collect()
    };
    for a in gone {
        a.task.abort();
        log::event("closed", &[("addr", &a.local.to_string())]);
    }
    let mut failed = Vec::new();
    for ep in desired {
        if app.listeners().contains_key(ep) {
            continue;
        }
        match lan::bind(ep) {
            Ok(l) => start_listener(app, ep.clone(), l),
            Err(e) => failed.push((ep.clone(), e)),
        }
    }
    failed
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
        if !app.lan.allows(peer.ip()) {
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
    let terminal = boxapi_core::fair::Terminal::of_ip(peer.ip());
    let info = Arc::new(ConnInfo {
        peer,
        local,
        sni,
        terminal,
    });
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
