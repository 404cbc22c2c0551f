//! A box whose device certificate the authority refuses at the handshake (from another CA,
//! revoked in the authority's CRL, expired): `boxapi enrol` exits 1 naming the cause, the
//! authority logs it, and an authority that is down reads differently. No root, Knot nor Pebble:
//! the refusal comes before any ACME or DNS work.
#[path = "../../box/tests/common/mod.rs"]
mod common;
mod operator;
use common::*;
use operator::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// `boxapi enrol` as the box holding `device`, against the authority at `port`: exit code and
/// stderr.
fn enrol(dir: &Path, pki: &Path, device: &str, port: u16) -> (i32, String) {
    let box_dir = dir.join(format!("box-{device}"));
    std::fs::create_dir_all(&box_dir).unwrap();
    let text = config(&box_dir, "", "").replace(
        "listen = [\"127.0.0.1:0\"]",
        // Never bound by `enrol`: only the address it publishes.
        "listen = [\"192.168.77.1:443\"]",
    ) + &enrol_section(pki, device, port);
    let path = box_dir.join("boxapi.toml");
    std::fs::write(&path, text).unwrap();
    let out = daemon_command()
        .args(["enrol", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET /metrics` of the authority.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The authority's `device_certificate_refused` events so far.
fn refusals(auth: &Daemon) -> Vec<Value> {
    auth.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "device_certificate_refused")
        .collect()
}

#[test]
fn refused_device_certificates_are_named_on_both_sides() {
    let dir = temp_dir("device-certs");
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    pki(&pki_dir);
    let auth_dir = dir.join("authority");
    std::fs::create_dir_all(&auth_dir).unwrap();
    for f in ["auth.pem", "auth.key", "device-ca.pem", "device-ca.crl"] {
        std::fs::copy(pki_dir.join(f), auth_dir.join(f)).unwrap();
    }
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let auth = authority(&auth_dir, metrics_addr, "");
    let port = auth.addr.port();
    for (device, box_says, authority_says) in [
        ("stranger", "unknown CA", "unknown_ca"),
        ("revoked", "revoked", "revoked"),
        ("expired", "expired", "expired"),
    ] {
        let (code, err) = enrol(&dir, &pki_dir, device, port);
        eprintln!("{device}: {}", err.trim_end());
        assert_eq!(code, 1, "{device}: {err}");
        assert!(
            err.contains("refused this box's device certificate") && err.contains(box_says),
            "{device}: {err}"
        );
        assert!(
            wait_for(Duration::from_secs(5), || refusals(&auth)
                .iter()
                .any(|v| v["reason"] == authority_says)),
            "{device}: {}",
            auth.log_text()
        );
    }
    // Each line names the peer, and none is lost or repeated for three different causes.
    let seen = refusals(&auth);
    for line in &seen {
        eprintln!("{line}");
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|v| v["peer"] == "127.0.0.1"), "{seen:?}");
    // A flood of refused handshakes from one peer: a bounded log, and the rest counted.
    for _ in 0..20 {
        assert_eq!(enrol(&dir, &pki_dir, "stranger", port).0, 1);
    }
    std::thread::sleep(Duration::from_millis(500));
    let flood = refusals(&auth).len() - seen.len();
    assert!(flood <= 1, "{flood} more lines for 20 refusals in a minute");
    let metrics = scrape(metrics_addr);
    for (reason, count) in [("unknown_ca", 21), ("revoked", 1), ("expired", 1)] {
        let line = format!(
            "boxapi_authority_device_certificates_refused_total{{reason=\"{reason}\"}} {count}\n"
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // The good device gets past the handshake (and then fails upstream: no CA here), so its
    // error is not a refused certificate.
    let (code, err) = enrol(&dir, &pki_dir, "device", port);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("device certificate"), "{err}");
    // An authority that is down: not a certificate matter either.
    drop(auth);
    let (code, err) = enrol(&dir, &pki_dir, "stranger", port);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot reach the authority") && !err.contains("certificate"),
        "{err}"
    );
}
