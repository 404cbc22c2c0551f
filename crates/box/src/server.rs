//! The daemon's event loop: listeners opened and closed as LAN addresses and the control state
//! change, and each connection's life: its slot (a fair share per terminal, `boxapi_core::fair`),
//! its deadlines, the facts about its terminal (found once), and hyper serving it.
use crate::app::{Active, App, Listeners};
use crate::card::sys::Client;
use crate::http::{self, ConnInfo};
use crate::lan::{self, Endpoint};
use boxapi_core::daemon::conn::{self, KEEP_ALIVE_IDLE};
use boxapi_core::fair::{Arriving, Phase, Watched};
use boxapi_core::guard::ParseErrorGuard;
use boxapi_core::log;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A connection must finish its TLS handshake and send its first request head within this time.
/// Later heads have the kit's `KEEP_ALIVE_IDLE` from the last answer; together they are what
/// bounds every request head (the contract's 10 s, and tighter): hyper's own header timer would
/// only repeat it, at the cost of a timer allocated and registered per request.
pub const HANDSHAKE_AND_HEAD: Duration = Duration::from_secs(10);
// Both bounds stand for the contract's 10 s per head (there is no other head timer).
const _: () = assert!(KEEP_ALIVE_IDLE.as_secs() <= 10 && HANDSHAKE_AND_HEAD.as_secs() <= 10);
/// One request, body and answer included, may take at most this long (a `provider_command` may
/// take up to a minute; a client that never reads its answer is cut here).
pub const REQUEST_LIMIT: Duration = Duration::from_secs(75);
/// A streaming answer may outlive its own time limit by this much (its last line being written
/// to a slow reader); a client that stops reading a stream is cut there.
pub const STREAM_GRACE: Duration = Duration::from_secs(10);
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

/// Serves until `shutdown` completes. `listeners` are already bound (tests bind port 0); further
/// listeners are opened and closed as interface addresses and the control state change.
pub async fn run(app: Arc<App>, listeners: Bound, shutdown: impl Future<Output = ()>) {
    {
        let mut active = app.listeners();
        for (ep, l) in listeners {
            start_listener(&app, &mut active, ep, l);
        }
    }
    let mut state_changes = app.control.subscribe();
    tokio::pin!(shutdown);
    loop {
        let poll = app.snapshot().config.common.server.interface_poll;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(poll) => {}
            changed = state_changes.changed() => if changed.is_err() { break },
        }
        // Reading interface addresses (getifaddrs) is a netlink round trip: off the runtime.
        let app2 = app.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // The mode is read under the listeners' lock, which `ctl enable` holds from its binds
            // to the state change: this pass never closes, as still disabled, what enable opened.
            let mut active = app2.listeners();
            let desired = app2.desired_endpoints();
            for (ep, e) in reconcile(&app2, &mut active, &desired) {
                bind_error(&ep, &e);
            }
        })
        .await;
    }
    for (_, a) in std::mem::take(&mut *app.listeners()) {
        a.task.abort();
    }
    conn::drain(&app.slots).await;
}

fn start_listener(app: &Arc<App>, active: &mut Listeners, ep: Endpoint, l: TcpListener) {
    let local = l.local_addr().unwrap_or(ep.addr);
    let dev = ep.device.clone().unwrap_or_default();
    log::event(
        "listening",
        &[("addr", &local.to_string()), ("device", &dev)],
    );
    let task = tokio::spawn(accept_loop(app.clone(), l));
    active.insert(ep, Active { local, task });
}

/// Opens listeners for the `desired` endpoints not yet open and closes those not desired (an
/// address that went away, or the API disabled). Returns the endpoints that could not be bound
/// (a fresh IPv6 address may still be tentative: the next poll tries again). Must run inside the
/// runtime (a blocking thread is fine).
pub(crate) fn reconcile(
    app: &Arc<App>,
    active: &mut Listeners,
    desired: &[Endpoint],
) -> Vec<(Endpoint, std::io::Error)> {
    active.retain(|ep, a| {
        let keep = desired.contains(ep);
        if !keep {
            a.task.abort();
            log::event("closed", &[("addr", &a.local.to_string())]);
        }
        keep
    });
    let mut failed = Vec::new();
    for ep in desired {
        if active.contains_key(ep) {
            continue;
        }
        match lan::bind(ep) {
            Ok(l) => start_listener(app, active, ep.clone(), l),
            Err(e) => failed.push((ep.clone(), e)),
        }
    }
    failed
}

/// Accepts connections from the LAN: any other peer is closed before any TLS byte, so requests
/// routed from the WAN side never get an answer.
async fn accept_loop(app: Arc<App>, listener: TcpListener) {
    conn::accept(listener, |stream, peer| {
        if app.lan.allows(peer.ip()) {
            tokio::spawn(connection(app.clone(), stream, peer));
        } else {
            log::event("peer_refused", &[("reason", "not in a LAN prefix")]);
        }
    })
    .await
}

/// Where the terminal is: from the cache if it was looked up lately, else read from the
/// neighbour table, bridge database and sysfs on a blocking thread (never on the runtime).
async fn client_facts(app: &App, ip: IpAddr) -> Client {
    if ip.is_loopback() {
        return Client::unknown();
    }
    let snap = app.snapshot();
    if let Some(c) = snap.sys.client_cached(ip) {
        return c;
    }
    let lan_device = app.lan.device_of(ip);
    tokio::task::spawn_blocking(move || snap.sys.client(ip, lan_device.as_deref()))
        .await
        .unwrap_or_else(|_| Client::unknown())
}

async fn connection(app: Arc<App>, stream: TcpStream, peer: SocketAddr) {
    let accepted = Instant::now();
    let deadline = accepted + HANDSHAKE_AND_HEAD;
    let ip = peer.ip().to_canonical();
    let cached = if ip.is_loopback() {
        Some(Client::unknown())
    } else {
        app.snapshot().sys.client_cached(ip)
    };
    let mut terminal = lan::terminal(ip, cached.as_ref().and_then(|c| c.mac));
    // No room even after waiting a little: closed unanswered (the terminal is over its share
    // with every connection busy, or the box is full of busy connections).
    let Some(slot) = app.slots.admit(terminal).await else {
        return;
    };
    let client = match cached {
        Some(c) => c,
        None => client_facts(&app, ip).await,
    };
    let found = lan::terminal(ip, client.mac);
    if found != terminal {
        if !slot.rekey(found) {
            return;
        }
        terminal = found;
    }
    let slot = Arc::new(slot);
    let local = stream.local_addr().unwrap_or(peer);
    let _ = stream.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(app.snapshot().tls.clone());
    // Inline rather than an async function of the kit: measured, a kit function returning the
    // TLS stream cost about 3,700 instructions more per connection under callgrind.
    let tls = tokio::select! {
        r = tokio::time::timeout_at(deadline, acceptor.accept(Watched::new(stream, slot.clone()))) => match r {
            Ok(Ok(tls)) => tls,
            _ => return, // failed (e.g. TLS 1.1, plain HTTP) or too slow: no HTTP answer
        },
        // Taken back to make room, or the daemon is stopping.
        _ = slot.evicted() => return,
    };
    slot.set_phase(Phase::Idle);
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    let info = Arc::new(ConnInfo {
        peer,
        local,
        sni,
        terminal,
        client,
        token: Default::default(),
    });
    let (svc_slot, svc_app) = (slot.clone(), app.clone());
    let svc = service_fn(move |req| {
        let req = Arriving::begin(req, &svc_slot);
        let (app, info, slot) = (svc_app.clone(), info.clone(), svc_slot.clone());
        async move {
            let mut resp = http::handle(&app, &info, req).await;
            match resp.body_mut() {
                // The answer goes on after this returns: the connection stays busy (and not
                // evictable) until the stream's body is done.
                http_body_util::Either::Right(stream) => {
                    slot.set_phase(Phase::Streaming);
                    stream.on_end(Box::new(move || slot.set_phase(Phase::Idle)));
                }
                http_body_util::Either::Left(_) => slot.set_phase(Phase::Idle),
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = http1::Builder::new()
        // Off explicitly: the kit's loop bounds every head (see `HANDSHAKE_AND_HEAD`).
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(ParseErrorGuard::new(tls)), svc);
    tokio::pin!(conn);
    // Contract §4's limit on every request head: hyper reads the next head only once the
    // previous answer is written, and the phase is Idle (its clock started) from that answer on.
    let busy_until = |phase, since| match phase {
        Phase::Streaming => since + app.snapshot().config.metrics.stream_max + STREAM_GRACE,
        _ => since + REQUEST_LIMIT,
    };
    conn::serve(conn, &slot, &app.control, deadline, busy_until, |c| {
        c.graceful_shutdown()
    })
    .await;
}
