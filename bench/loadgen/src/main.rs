//! `make bench`'s flood client. wrk keeps polling a connection whose TLS handshake the server
//! has not answered yet (it waits for writability, which a connected socket always has), so a
//! server that makes an over-share connection wait spends the machine's CPU on wrk's spin; this
//! client waits for the server's bytes like a browser does.
//!
//! `boxapi-loadgen --connect 127.0.0.1:443 --name localhost --ca ca.pem [--source 127.0.0.2]
//!  --connections N --seconds S --path /v1/access [--header 'Authorization: Bearer …']
//!  [--cert device.pem --key device.key] [--per-connection K] [--resumption off] [--expect 304]`
//! prints `requests=R seconds=S rate=R/S ok=O errors=E`, counting 2xx answers (or those of the
//! `--expect`ed status) as ok. `--cert`/`--key`: a TLS client certificate (a box's device
//! certificate); `--per-connection 1`: a new connection for each request, as a box polling the
//! authority every few minutes makes; `--resumption off`: no TLS session resumption, as a box
//! gets from an authority whose session cache has long forgotten it.
#![forbid(unsafe_code)]

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

struct Args {
    connect: SocketAddr,
    name: String,
    ca: String,
    source: Option<IpAddr>,
    connections: usize,
    seconds: u64,
    path: String,
    headers: Vec<String>,
    /// A client certificate chain and its key (PEM files).
    identity: Option<(String, String)>,
    /// Requests on one connection before it is closed (0: until it fails).
    per_connection: u64,
    resumption: bool,
    /// The status counted as ok (`None`: any 2xx).
    expect: Option<u16>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        connect: "127.0.0.1:443".parse().map_err(|e| format!("{e}"))?,
        name: "localhost".into(),
        ca: String::new(),
        source: None,
        connections: 32,
        seconds: 5,
        path: "/".into(),
        headers: Vec::new(),
        identity: None,
        per_connection: 0,
        resumption: true,
        expect: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--connect" => a.connect = value.parse().map_err(|e| bad(&e))?,
            "--name" => a.name = value,
            "--ca" => a.ca = value,
            "--source" => a.source = Some(value.parse().map_err(|e| bad(&e))?),
            "--connections" => a.connections = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => a.seconds = value.parse().map_err(|e| bad(&e))?,
            "--path" => a.path = value,
            "--header" => a.headers.push(value),
            "--cert" => cert = Some(value),
            "--key" => key = Some(value),
            "--per-connection" => a.per_connection = value.parse().map_err(|e| bad(&e))?,
            "--resumption" => a.resumption = value != "off",
            "--expect" => a.expect = Some(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.ca.is_empty() {
        return Err("--ca is required".into());
    }
    a.identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(a)
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
}

/// Finds the end of one response (head, then Content-Length bytes) in `buf`: its length and
/// whether it had the `expect`ed status (`None`: a 2xx).
fn response(buf: &[u8], expect: Option<u16>) -> Option<(usize, bool)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let ok = match expect {
        Some(code) => head.get(9..12) == Some(code.to_string().as_str()),
        None => head.get(9..10) == Some("2"),
    };
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some((head_end + len, ok))
}

/// One connection after another until `until`: keep-alive requests on each until it fails.
async fn worker(
    a: Arc<Args>,
    tls: tokio_rustls::TlsConnector,
    counts: Arc<Counts>,
    until: Instant,
) {
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", a.path, a.name);
    for h in &a.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let name = match ServerName::try_from(a.name.clone()) {
        Ok(n) => n,
        Err(_) => return,
    };
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        let served = tokio::time::timeout(left, async {
            let socket = if a.connect.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }?;
            if let Some(src) = a.source {
                socket.bind(SocketAddr::new(src, 0))?;
            }
            let tcp = socket.connect(a.connect).await?;
            tcp.set_nodelay(true)?;
            let mut s = tls.connect(name.clone(), tcp).await?;
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            let mut sent = 0;
            loop {
                if a.per_connection > 0 && sent == a.per_connection {
                    // Done with this connection, as a polling box is: close_notify, then a new one.
                    let _ = s.shutdown().await;
                    return Ok(());
                }
                sent += 1;
                s.write_all(request.as_bytes()).await?;
                loop {
                    if let Some((used, ok)) = response(&buf, a.expect) {
                        buf.drain(..used);
                        let c = if ok { &counts.ok } else { &counts.other };
                        c.fetch_add(1, Relaxed);
                        break;
                    }
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::Error::other("closed"));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        })
        .await;
        if let Ok(Err(_)) = served {
            counts.errors.fetch_add(1, Relaxed);
            // A refused or closed connection: try again soon, not in a tight loop.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A client certificate chain and its private key, from PEM files.
fn client_identity(
    cert: &str,
    key: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    Ok((chain, key))
}

fn main() {
    let a = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("boxapi-loadgen: {e}");
            std::process::exit(64);
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = match CertificateDer::pem_file_iter(&a.ca) {
        Ok(it) => it.flatten().collect::<Vec<_>>(),
        Err(e) => {
            eprintln!("boxapi-loadgen: --ca {}: {e}", a.ca);
            std::process::exit(66);
        }
    };
    roots.add_parsable_certificates(certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots),
        Err(e) => {
            eprintln!("boxapi-loadgen: TLS: {e}");
            std::process::exit(70);
        }
    };
    let mut config = match &a.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => match client_identity(cert, key).and_then(|(chain, key)| {
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())
        }) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("boxapi-loadgen: --cert/--key: {e}");
                std::process::exit(66);
            }
        },
    };
    if !a.resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("boxapi-loadgen: runtime: {e}");
            std::process::exit(70);
        }
    };
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(a.seconds);
    rt.block_on(async {
        let workers: Vec<_> = (0..a.connections)
            .map(|_| tokio::spawn(worker(a.clone(), tls.clone(), counts.clone(), until)))
            .collect();
        for w in workers {
            let _ = w.await;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let (ok, other, errors) = (
        counts.ok.load(Relaxed),
        counts.other.load(Relaxed),
        counts.errors.load(Relaxed),
    );
    let requests = ok + other;
    println!(
        "requests={requests} seconds={secs:.2} rate={:.0} ok={ok} errors={errors}",
        requests as f64 / secs
    );
}
