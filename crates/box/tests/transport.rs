//! Transport rules: TLS versions, plain HTTP, and the handshake/head deadline.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A minimal ClientHello offering only `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1) and two CBC suites.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = vec![];
    body.extend(version);
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    body.extend([0, 4, 0x00, 0x2f, 0xc0, 0x13]); // TLS_RSA_WITH_AES_128_CBC_SHA, ECDHE_RSA_AES128_CBC_SHA
    body.extend([1, 0]); // null compression
    let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
    rec.extend(hs);
    rec
}

fn raw_exchange(d: &Daemon, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn tls_1_0_and_1_1_are_refused() {
    let d = Daemon::start("legacy", "", "");
    for v in [[3u8, 1], [3, 2]] {
        let answer = raw_exchange(&d, &legacy_client_hello(v));
        // Either nothing or a TLS alert record (0x15): never a ServerHello, never HTTP.
        assert!(answer.is_empty() || answer[0] == 0x15, "{v:?}: {answer:?}");
    }
}

#[test]
fn tls_1_2_and_1_3_both_work() {
    let d = Daemon::start("versions", "", "");
    let t = fixtures().a.token("a", "access");
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut s = connect(d.addr, "localhost", client_config(&[v]));
        let req = format!("GET /v1/access HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        assert_eq!(parse_response(&raw).status, 200);
        assert_eq!(s.conn.protocol_version(), Some(v.version));
        let suite = format!("{:?}", s.conn.negotiated_cipher_suite().unwrap().suite());
        assert!(
            suite.contains("GCM") || suite.contains("CHACHA20"),
            "{suite}"
        );
    }
}

#[test]
fn plain_http_gets_no_http_answer() {
    let d = Daemon::start("plain", "", "");
    let answer = raw_exchange(&d, b"GET /v1/access HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn silent_connection_is_closed_within_the_deadline() {
    let d = Daemon::start("silent", "", "");
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    let waited = start.elapsed();
    assert_eq!(n, 0, "the server should close, not answer");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(13),
        "{waited:?}"
    );
    // Meanwhile, and after, others are served.
    assert_eq!(d.get("/v1/access", &[]).status, 401);
}

#[test]
fn stalled_handshake_does_not_block_others() {
    let d = Daemon::start("stall", "", "");
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(d.addr).unwrap())
        .collect();
    for s in &mut stalled {
        let _ = s.write_all(&[0x16, 3, 1]); // half a record header, then nothing
    }
    let start = Instant::now();
    assert_eq!(d.get("/v1/access", &[]).status, 401);
    assert!(start.elapsed() < Duration::from_secs(2));
}
