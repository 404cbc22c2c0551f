//! The authority's listeners: any address the operator lists (it sits behind the operator's load
//! balancer, not on a LAN), a bounded number of connections, deadlines on handshakes and heads.
use crate::app::App;
use crate::http;
use boxapi_core::log;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

/// The TLS handshake must be over within this time.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// Every request head, the first and the later ones on a kept-alive connection, within this time.
pub const HEAD: Duration = Duration::from_secs(10);
/// Request heads above this size are refused.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// On shutdown, open connections get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// Serves on `listeners` until `shutdown` completes, then lets open connections finish for
/// `SHUTDOWN_GRACE`.
pub async fn run(app: Arc<App>, listeners: Vec<TcpListener>, shutdown: impl Future<Output = ()>) {
    let mut tasks = Vec::new();
    for l in listeners {
        let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        log::event("listening", &[("addr", &local), ("device", "")]);
        tasks.push(tokio::spawn(accept_loop(app.clone(), l)));
    }
    shutdown.await;
    for t in tasks {
        t.abort();
    }
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

async fn accept_loop(app: Arc<App>, listener: TcpListener) {
    loop {
        let Ok(permit) = app.connections.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(connection(app.clone(), stream, peer, permit));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                log::event("accept_error", &[("error", &e.to_string())]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    app: Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(app.snapshot().tls.clone());
    let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        _ => return,
    };
    // The client's certificate, already verified against the device CA and its CRLs during the
    // handshake (absent for tool clients): the box's identity on every request of the connection.
    let device: Option<Arc<[u8]>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| Arc::from(leaf.as_ref()));
    let svc_app = app.clone();
    let svc = service_fn(move |req| {
        let app = svc_app.clone();
        let device = device.clone();
        async move { Ok::<_, Infallible>(http::handle(&app, req, peer.ip(), device.as_deref()).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(tls), svc)
        .await;
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
