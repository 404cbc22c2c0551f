//! The authority's listeners: any address the operator lists (it sits behind the operator's load
//! balancer, not on a LAN), a bounded number of connections, deadlines on handshakes and heads.
use crate::app::App;
use crate::http;
use boxapi_core::daemon::conn;
use boxapi_core::fair::{Arriving, Phase, Terminal, Watched};
use boxapi_core::guard::ParseErrorGuard;
use boxapi_core::log;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The TLS handshake must be over within this time.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// Every request head, the first and the later ones on a kept-alive connection, within this time.
pub const HEAD: Duration = Duration::from_secs(10);
/// Request heads above this size are refused.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// One request, body and answer included (a client that never reads its answer is cut here);
/// `POST /v1/enrol` has its own, longer limit (`http::time_limit`).
pub const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// Binds the configured addresses (any address: the authority is a data-centre server).
pub fn bind(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|addr| {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket
                .bind(*addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{addr}: {e}")))?;
            socket.listen(1024)
        })
        .collect()
}

/// Serves on `listeners` until `shutdown` completes, then tells open connections to close after
/// their answers in flight (the kit's drain).
pub async fn run(app: Arc<App>, listeners: Vec<TcpListener>, shutdown: impl Future<Output = ()>) {
    run_with_request_limit(app, listeners, shutdown, REQUEST_LIMIT).await
}

/// [`run`] with `request_limit` in place of `REQUEST_LIMIT` (the enrolment route keeps its own
/// limit when that is longer): tests show which routes are cut without waiting 30 s.
pub async fn run_with_request_limit(
    app: Arc<App>,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
    request_limit: Duration,
) {
    let mut tasks = Vec::new();
    for l in listeners {
        let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        log::event("listening", &[("addr", &local), ("device", "")]);
        let app = app.clone();
        tasks.push(tokio::spawn(conn::accept(l, move |stream, peer| {
            tokio::spawn(connection(app.clone(), stream, peer, request_limit));
        })));
    }
    shutdown.await;
    for t in tasks {
        t.abort();
    }
    conn::drain(&app.slots).await;
}

async fn connection(app: Arc<App>, stream: TcpStream, peer: SocketAddr, request_limit: Duration) {
    let accepted = Instant::now();
    // On the internet, a terminal is an IPv4 address or an IPv6 /64 (one subscriber's prefix). A
    // trusted proxy carries many clients: no share of its own, only `max_connections`.
    let proxied =
        crate::locator::is_trusted(peer.ip(), &app.snapshot().config.authority.trusted_proxies);
    let terminal = if proxied {
        Terminal::of_proxy(peer.ip())
    } else {
        Terminal::of_internet_ip(peer.ip())
    };
    let Some(slot) = app.slots.admit(terminal).await else {
        return;
    };
    let slot = Arc::new(slot);
    let _ = stream.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(app.snapshot().tls.clone());
    // Inline, as on the box (a kit function returning the TLS stream costs more per connection).
    let tls = tokio::select! {
        r = tokio::time::timeout_at(accepted + HANDSHAKE, acceptor.accept(Watched::new(stream, slot.clone()))) => match r {
            Ok(Ok(tls)) => tls,
            // Failed (e.g. TLS 1.1, plain HTTP, a refused device certificate) or too slow: no
            // HTTP answer; a refused certificate is logged, within bounds.
            Ok(Err(e)) => return app.refusals.note(&app.metrics, peer.ip(), &e),
            Err(_) => return,
        },
        // Taken back to make room, or the daemon is stopping.
        _ = slot.evicted() => return,
    };
    // The client's certificate, already verified against the device CA and its CRLs during the
    // handshake (absent for tool clients): the box's identity on every request of the connection.
    let device: Option<Arc<[u8]>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| Arc::from(leaf.as_ref()));
    slot.set_phase(Phase::Idle);
    // The limit of the request under way, in milliseconds: set before its Busy phase begins, so
    // the loop never judges a request by the previous one's limit.
    let limit_ms = Arc::new(AtomicU64::new(millis(request_limit)));
    let (svc_app, svc_slot, svc_limit) = (app.clone(), slot.clone(), limit_ms.clone());
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let limit = http::time_limit(&svc_app, req.uri().path(), request_limit);
        svc_limit.store(millis(limit), Ordering::Relaxed);
        let req = Arriving::begin(req, &svc_slot);
        let (app, slot, device) = (svc_app.clone(), svc_slot.clone(), device.clone());
        async move {
            let resp = http::handle(&app, req, peer.ip(), device.as_deref()).await;
            slot.set_phase(Phase::Idle);
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(ParseErrorGuard::new(tls)), svc);
    tokio::pin!(conn);
    let busy_until = |_, since| since + Duration::from_millis(limit_ms.load(Ordering::Relaxed));
    let first_head = accepted + HANDSHAKE + HEAD;
    conn::serve(conn, &slot, &app.control, first_head, busy_until, |c| {
        c.graceful_shutdown()
    })
    .await;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Scrapers are a handful of Prometheus servers: connections beyond this wait to be accepted.
const MAX_METRICS_CONNECTIONS: usize = 8;

/// Serves `GET /metrics` (plain HTTP, for the operator's Prometheus on an internal address) until
/// the task is dropped.
pub async fn serve_metrics(app: Arc<App>, listener: TcpListener) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log::event("metrics_listening", &[("addr", &local)]);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::event("accept_error", &[("error", &e.to_string())]);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(http::metrics(&app, &req)) }
            });
            let serve = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            // A scrape answers at once; nothing may hold a slot for long.
            let _ = tokio::time::timeout(HANDSHAKE, serve).await;
            drop(permit);
        });
    }
}
