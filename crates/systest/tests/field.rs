//! Root-only, end to end with the real components of the field (contract §10): Knot (authoritative
//! DNS accepting TSIG-signed RFC 2136 updates), Pebble (an ACME CA standing in for a public one),
//! the operator's `boxapi-authority`, and a box on a LAN interface. The box enrols, serves the
//! issued certificate under its own name (which Knot resolves to its LAN address) to a client that
//! trusts Pebble's root only, renews by itself while a keep-alive connection opened before goes
//! on, serves the pair a renewal replaced while a power cut's torn pair stands (then renews), and
//! keeps its certificate when the DNS server is down. The renewal follows reloads:
//! `[enrol]` brought, changed and removed by `ctl reload` start, redirect and stop it.
//! Against a scripted authority (no Knot nor Pebble needed, root still for the LAN interface):
//! the renewal waits for the authority's `Retry-After`, and the box's hosts-file entry follows
//! `[enrol]` across reloads without touching the operator's own lines.
#[path = "../../box/tests/common/mod.rs"]
mod common;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Knot and Pebble, started by the repository's field script, stopped on drop.
struct Field {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Field {
    fn start(dir: &Path) -> Field {
        sh(&format!(
            "{ROOT}/tests/field/start-field.sh {}",
            dir.display()
        ));
        let text = std::fs::read_to_string(dir.join("env")).unwrap();
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.trim_matches('\'').trim_matches('"').to_owned(),
                )
            })
            .collect();
        Field {
            dir: dir.to_path_buf(),
            env,
        }
    }

    fn get(&self, k: &str) -> &str {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("{k} not in the field's env"))
    }
}

impl Drop for Field {
    fn drop(&mut self) {
        let _ = Command::new(format!("{ROOT}/tests/field/stop-field.sh"))
            .arg(&self.dir)
            .output();
    }
}

/// A veth pair standing for the box's LAN (this kernel has no dummy interfaces), removed on drop.
struct Lan(String);

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// The operator's PKI for this test (tests/field/make-pki.sh): a CA for the authority's TLS
/// certificate, and a device CA with one device certificate (the box's identity from the factory).
fn operator_pki(dir: &Path) {
    sh(&format!("{ROOT}/tests/field/make-pki.sh {}", dir.display()));
}

/// A TLS client that trusts Pebble's root only (the stand-in for a browser's public roots).
fn pebble_client(root_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    assert!(!roots.is_empty(), "no Pebble root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A verified connection to the box by its name; returns it with the leaf it presented.
fn open(addr: SocketAddr, name: &str, cfg: &Arc<rustls::ClientConfig>) -> (Tls, Vec<u8>) {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let conn =
        rustls::ClientConnection::new(cfg.clone(), ServerName::try_from(name.to_owned()).unwrap())
            .unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake (verifying the chain against Pebble's root and the name).
    s.flush().unwrap();
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    let leaf = s.conn.peer_certificates().unwrap()[0].to_vec();
    (s, leaf)
}

/// One keep-alive request: reads exactly one response (by Content-Length).
fn keep_alive_get(s: &mut Tls, name: &str, path: &str, token: &str) -> Resp {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nAuthorization: Bearer {token}\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                return parse_response(&raw);
            }
        }
    }
}

/// What a rogue authority answers.
enum Rogue {
    /// This chain, whatever was asked.
    Chain(String),
    /// A certificate for the CSR's key, but naming this other name (signed by the operator CA).
    SignFor(String),
}

/// TLS for a stand-in authority: the operator's authority certificate (`auth.pem`, `auth.key`).
fn authority_tls(dir: &Path) -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("auth.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("auth.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

/// An authority gone wrong (a bug or a compromise), serving `count` enrolments over TLS with the
/// operator's authority certificate.
fn rogue_authority(dir: &Path, rogue: Rogue, count: usize) -> SocketAddr {
    let dir = dir.to_path_buf();
    let cfg = authority_tls(&dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(tcp) = stream else { continue };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            // The request head and its body (Content-Length), then one answer.
            let (_, request) = read_request(&mut s);
            let chain = match &rogue {
                Rogue::Chain(c) => c.clone(),
                Rogue::SignFor(other) => {
                    let req: Value = serde_json::from_slice(&request).unwrap();
                    let b64 = req["csr"]
                        .as_str()
                        .unwrap()
                        .replace('-', "+")
                        .replace('_', "/");
                    let pad = "=".repeat((4 - b64.len() % 4) % 4);
                    sh(&format!(
                        "cd {d} && printf %s '{b64}{pad}' | base64 -d > rogue.csr && \
                         printf 'subjectAltName=DNS:{other}\\n' > rogue.ext && \
                         openssl x509 -req -inform DER -in rogue.csr -CA op-ca.pem -CAkey op-ca.key \
                         -CAcreateserial -days 1 -sha256 -extfile rogue.ext -out rogue.pem 2>/dev/null",
                        d = dir.display()
                    ));
                    std::fs::read_to_string(dir.join("rogue.pem")).unwrap()
                }
            };
            let body = serde_json::json!({ "name": "x", "chain": chain }).to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
            let _ = s.flush();
        }
    });
    addr
}

fn status_json(d: &Daemon) -> Value {
    let (code, out, err) = d.ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn box_enrols_serves_its_public_name_and_renews_by_itself() {
    require_root("to add a network interface for Knot and Pebble");
    let dir = temp_dir("field");
    let field = Field::start(&dir.join("field"));
    let zone = field.get("ZONE").trim_end_matches('.').to_owned();
    operator_pki(&dir);
    std::fs::write(dir.join("tsig.key"), field.get("TSIG_SECRET")).unwrap();

    // The authority: token endpoint (required) plus enrolment, ACME and DNS.
    let out = daemon_command()
        .args([
            "keygen",
            "--alg",
            "ES256",
            "--kid",
            "authority-signer",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let knot_addr = field.get("KNOT_ADDR").to_owned();
    let auth_dir = dir.join("authority");
    std::fs::create_dir_all(&auth_dir).unwrap();
    let d = dir.display();
    std::fs::write(
        auth_dir.join("boxapi.toml"),
        format!(
            r#"[server]
cert = "{d}/auth.pem"
key = "{d}/auth.key"
state_dir = "{d}/authority/state"
control_socket = "{d}/authority/control.sock"
[auth]
audience = "https://box.test"
issuers = ["https://auth.test"]
[token_endpoint]
enabled = true
issuer = "https://auth.test"
signing_key = "{d}/authority-signer.private.jwk"
[authority]
listen = ["127.0.0.1:0"]
[enrolment]
device_ca = "{d}/device-ca.pem"
zone = "{zone}"
[acme]
directory = "{dir_url}"
account = "{d}/authority/acme-account.json"
ca = "{pebble_ca}"
[dns]
server = "{knot}"
tsig_name = "{tsig_name}"
tsig_algorithm = "{tsig_alg}"
tsig_secret_file = "{d}/tsig.key"
ttl = 60
"#,
            dir_url = field.get("ACME_DIRECTORY"),
            pebble_ca = field.get("PEBBLE_LISTENER_CA"),
            knot = knot_addr,
            tsig_name = field.get("TSIG_NAME"),
            tsig_alg = field.get("TSIG_ALG"),
        ),
    )
    .unwrap();
    let authority = Daemon::start_command(auth_dir, &[], "authority");

    // The box's LAN: an interface with a private address.
    let id = std::process::id() % 10_000;
    let lan = Lan(format!("bxf{id}"));
    let lan_ip = format!("10.213.{}.1", id % 250);
    sh(&format!(
        "ip link add {l} type veth peer name {l}p && ip addr add {lan_ip}/24 dev {l} && \
         ip link set {l}p up && ip link set {l} up",
        l = lan.0
    ));
    let port = {
        let l = std::net::TcpListener::bind((lan_ip.as_str(), 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let box_dir = dir.join("box");
    std::fs::create_dir_all(&box_dir).unwrap();
    let fixture_dir = fixtures().dir.display().to_string();
    let box_config = |fraction: f64| {
        config(&box_dir, "", "")
            .replace(&format!("cert = \"{fixture_dir}/server.pem\""), "cert = \"cert.pem\"")
            .replace(&format!("key = \"{fixture_dir}/server.key\""), "key = \"key.pem\"")
            .replace(
                "listen = [\"127.0.0.1:0\"]\n",
                &format!("listen_interfaces = [\"{}\"]\nport = {port}\n", lan.0),
            )
            .replace(
                "[metrics]",
                &format!(
                    "[enrol]\nauthority = \"https://127.0.0.1:{ap}\"\nauthority_ca = \"{d}/op-ca.pem\"\n\
                     device_cert = \"{d}/device.pem\"\ndevice_key = \"{d}/device.key\"\nzone = \"{zone}\"\n\
                     renew_fraction = {fraction:e}\nretry_min_secs = 1\nretry_max_secs = 2\n\n[metrics]",
                    ap = authority.addr.port()
                ),
            )
    };
    let cfg_path = box_dir.join("boxapi.toml");
    std::fs::write(&cfg_path, box_config(2.0 / 3.0)).unwrap();
    let cert_path = box_dir.join("cert.pem");
    let _ = std::fs::remove_file(&cert_path);

    // 1. One enrolment now.
    let out = daemon_command()
        .args(["enrol", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "enrol failed: {stdout}{}\nauthority: {}",
        String::from_utf8_lossy(&out.stderr),
        authority.log_text()
    );
    let name = stdout.split(':').next().unwrap().trim().to_owned();
    assert!(name.ends_with(&format!(".{zone}")), "{stdout}");
    assert_eq!(
        name.len(),
        16 + 1 + zone.len(),
        "opaque 16-character label: {name}"
    );
    let chain = std::fs::read(&cert_path).unwrap();
    let leaf = CertificateDer::pem_slice_iter(&chain)
        .next()
        .unwrap()
        .unwrap();
    let san = sh(&format!(
        "openssl x509 -noout -ext subjectAltName -in {}",
        cert_path.display()
    ));
    assert!(
        san.contains(&format!("DNS:{name}")) && san.matches("DNS:").count() == 1,
        "{san}"
    );

    // The name resolves to the box's LAN address through Knot.
    let a = sh(&format!(
        "kdig +short @127.0.0.1 -p {} {name} A",
        field.get("KNOT_PORT")
    ));
    assert_eq!(a.trim(), lan_ip, "A record of {name}");

    // Pebble's root: the only trust anchor of the client below (as a browser's public roots).
    let root = sh(&format!(
        "curl -sf --cacert {} {}/roots/0",
        field.get("PEBBLE_LISTENER_CA"),
        field.get("PEBBLE_MGMT")
    ));
    std::fs::write(dir.join("pebble-root.pem"), &root).unwrap();
    sh(&format!(
        "openssl verify -CAfile {d}/pebble-root.pem -untrusted {c} {c}",
        c = cert_path.display()
    ));
    let client = pebble_client(root.as_bytes());

    // A chain for another key (the one just issued: every enrolment makes a new key) or for
    // another name is refused by the box, and its current certificate stays.
    let issued = String::from_utf8(chain.clone()).unwrap();
    let other_box = format!("aaaaaaaaaaaaaaaa.{zone}");
    for (bad, why) in [
        (Rogue::Chain(issued), "not for this box's key"),
        (Rogue::SignFor(other_box), "not exactly"),
    ] {
        let rogue = rogue_authority(&dir, bad, 1);
        let text = std::fs::read_to_string(&cfg_path).unwrap().replace(
            &format!(
                "authority = \"https://127.0.0.1:{}\"",
                authority.addr.port()
            ),
            &format!("authority = \"https://127.0.0.1:{}\"", rogue.port()),
        );
        let rogue_cfg = box_dir.join("rogue.toml");
        std::fs::write(&rogue_cfg, text).unwrap();
        let out = daemon_command()
            .args(["enrol", "--config"])
            .arg(&rogue_cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(why), "{why}: {err}");
        assert_eq!(
            std::fs::read(&cert_path).unwrap(),
            chain,
            "the certificate stays"
        );
    }

    // 2. The box serves it under its own name once `[enrol]` is reloaded in; renewal made due a
    // few seconds from now.
    let (nb, na) = {
        let text = sh(&format!(
            "openssl x509 -noout -startdate -enddate -in {}",
            cert_path.display()
        ));
        let parse = |k: &str| {
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap()
                .trim()
                .to_owned();
            sh(&format!("date -d '{v}' +%s"))
                .trim()
                .parse::<f64>()
                .unwrap()
        };
        (parse("notBefore="), parse("notAfter="))
    };
    let fraction = (now() as f64 + 8.0 - nb) / (na - nb);
    let enrolled = box_config(fraction);
    let no_enrol = {
        let (from, to) = (
            enrolled.find("[enrol]").unwrap(),
            enrolled.find("[metrics]").unwrap(),
        );
        format!("{}{}", &enrolled[..from], &enrolled[to..])
    };
    let reload_with = |d: &Daemon, text: &str| {
        std::fs::write(&cfg_path, text).unwrap();
        let (code, out, err) = d.ctl(&["reload"]);
        assert_eq!(code, 0, "reload: {out}{err}");
    };

    // The renewal follows reloads: a daemon started without `[enrol]` has none...
    std::fs::write(&cfg_path, &no_enrol).unwrap();
    let boxd = Daemon::start_in(box_dir.clone(), &[]);
    assert_eq!(boxd.addr.ip().to_string(), lan_ip);
    let st = status_json(&boxd);
    assert!(
        st["cert_renew_at"].is_null() && st["cert_name"].is_null(),
        "{st}"
    );
    // ...and starts one when a reload brings `[enrol]`: here at once (due), against an authority
    // that is not there, which earns an hour of backoff.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = enrolled
        .replace(
            &format!("127.0.0.1:{}\"", authority.addr.port()),
            &format!("127.0.0.1:{nobody}\""),
        )
        .replace(
            &format!("renew_fraction = {fraction:e}"),
            "renew_fraction = 1e-9",
        )
        .replace(
            "retry_min_secs = 1\nretry_max_secs = 2",
            "retry_min_secs = 3600\nretry_max_secs = 7200",
        );
    assert_ne!(unreachable, enrolled);
    reload_with(&boxd, &unreachable);
    assert!(
        wait_for(Duration::from_secs(10), || status_json(&boxd)
            ["cert_last_error"]
            .is_string()),
        "no renewal after [enrol] came with a reload: {}",
        boxd.log_text()
    );
    let token = fixtures().a.token("a", "access counters");
    let (mut old, first_leaf) = open(boxd.addr, &name, &client);
    assert_eq!(
        first_leaf,
        leaf.to_vec(),
        "the enrolled certificate is served"
    );
    let r = keep_alive_get(&mut old, &name, "/v1/access", &token);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The right authority by another reload: the new values apply at once, the hour of backoff
    // earned under the old ones does not hold them back (renewal due a few seconds from now).
    reload_with(&boxd, &enrolled);
    assert!(
        wait_for(Duration::from_secs(5), || {
            let st = status_json(&boxd);
            st["cert_renew_at"].is_string() && st["cert_last_error"].is_null()
        }),
        "{}",
        status_json(&boxd)
    );
    assert_eq!(status_json(&boxd)["cert_name"], name.as_str());
    // Another name is still refused (DNS-rebinding defence).
    let (mut other, _) = open(boxd.addr, &name, &client);
    let r = keep_alive_get(&mut other, "evil.example", "/v1/access", &token);
    assert_eq!(r.status, 421);

    // 3. Renewal by itself; the old keep-alive connection goes on, new ones get the new chain.
    // The old connection is kept in use meanwhile: an idle keep-alive connection is closed after
    // a few seconds by design (contract §4), an active one must survive the renewal.
    assert!(
        wait_for(Duration::from_secs(60), || {
            let r = keep_alive_get(&mut old, &name, "/v1/counters", &token);
            assert_eq!(r.status, 200, "the old connection stays usable");
            boxd.log_text().contains("certificate_renewed")
        }),
        "no renewal: {}\nauthority: {}",
        boxd.log_text(),
        authority.log_text()
    );
    let r = keep_alive_get(&mut old, &name, "/v1/counters", &token);
    assert_eq!(
        r.status, 200,
        "the connection opened before the renewal still works"
    );
    assert!(
        wait_for(Duration::from_secs(10), || open(boxd.addr, &name, &client)
            .1
            != first_leaf),
        "new connections get the new certificate"
    );
    let (mut fresh, _) = open(boxd.addr, &name, &client);
    assert_eq!(
        keep_alive_get(&mut fresh, &name, "/v1/access", &token).status,
        200
    );

    // 3b. The pair a renewal replaced is kept whole beside the key (issue 21), and a pair torn
    // as a power cut between the key's rename and the chain's leaves it (a new key beside the
    // chain) is never served: the box serves the kept pair, says so, and renews.
    let prev = std::fs::read_to_string(box_dir.join("key.pem.prev-pair")).unwrap();
    assert!(
        prev.starts_with("-----BEGIN PRIVATE KEY-----") && prev.contains("CERTIFICATE"),
        "the replaced pair is kept: {prev}"
    );
    sh(&format!(
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {d}/torn.key && \
         mv {d}/torn.key {d}/key.pem",
        d = box_dir.display()
    ));
    assert!(
        wait_for(Duration::from_secs(20), || boxd
            .log_text()
            .contains("certificate_damaged")),
        "the torn pair was not noticed: {}",
        boxd.log_text()
    );
    let served = || {
        let (mut s, _) = open(boxd.addr, &name, &client);
        keep_alive_get(&mut s, &name, "/v1/access", &token).status == 200
    };
    assert!(served(), "served while the pair is torn");
    assert!(
        wait_for(Duration::from_secs(60), || {
            let st = status_json(&boxd);
            !st["warnings"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w == "certificate_damaged"))
                && st["cert_last_error"].is_null()
        }),
        "no good pair installed again: {}",
        boxd.log_text()
    );
    assert!(served(), "served once renewed");

    // 4. DNS down: renewals fail, the error shows in status, the current certificate serves on.
    sh(&format!("kill {}", field.get("KNOT_PID")));
    assert!(
        wait_for(Duration::from_secs(60), || !status_json(&boxd)
            ["cert_last_error"]
            .is_null()),
        "no renewal error reported: {}",
        boxd.log_text()
    );
    let st = status_json(&boxd);
    assert!(
        st["cert_last_error"].as_str().unwrap().contains("dns"),
        "the error names the DNS failure: {st}"
    );
    let (mut after, leaf_now) = open(boxd.addr, &name, &client);
    assert_ne!(leaf_now, first_leaf);
    assert_eq!(
        keep_alive_get(&mut after, &name, "/v1/access", &token).status,
        200
    );

    // 5. `[enrol]` removed by a reload: the renewal stops (no schedule, no error in status, no
    // further attempt although the last one failed and its 1-2 s backoff is long over).
    reload_with(&boxd, &no_enrol);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let st = status_json(&boxd);
            st["cert_renew_at"].is_null() && st["cert_last_error"].is_null()
        }),
        "{}",
        status_json(&boxd)
    );
    let attempts = || {
        boxd.log_text()
            .matches("certificate_renewal_failed")
            .count()
    };
    std::thread::sleep(Duration::from_millis(200));
    let before = attempts();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(attempts(), before, "{}", boxd.log_text());
}

/// One request read off `s`: its head (lower case) and body (by Content-Length).
fn read_request(s: &mut impl Read) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                return (head, raw[end + 4..].to_vec());
            }
        }
    }
    (
        String::from_utf8_lossy(&raw).to_ascii_lowercase(),
        Vec::new(),
    )
}

/// Requests a scripted authority received: when, and the path.
type Seen = Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

/// An authority that answers `/v1/enrol` with `enrol_answers` in turn (the last one repeated):
/// (status, Retry-After header, problem code); `/v1/address` with 200. Serves over TLS with the
/// operator's authority certificate until the test ends.
fn scripted_authority(
    dir: &Path,
    enrol_answers: Vec<(u16, Option<&'static str>, &'static str)>,
) -> (SocketAddr, Seen) {
    let cfg = authority_tls(dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut enrols = 0;
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let (head, _) = read_request(&mut s);
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            log.lock()
                .unwrap()
                .push((std::time::Instant::now(), path.clone()));
            let (status, retry_after, body) = if path == "/v1/enrol" {
                let (status, retry_after, code) =
                    enrol_answers[enrols.min(enrol_answers.len() - 1)];
                enrols += 1;
                let body =
                    serde_json::json!({ "status": status, "code": code, "detail": "scripted" });
                (status, retry_after, body.to_string())
            } else {
                (200, None, r#"{"name":"x","addresses":[]}"#.to_owned())
            };
            let retry_after = retry_after
                .map(|r| format!("retry-after: {r}\r\n"))
                .unwrap_or_default();
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/problem+json\r\n{retry_after}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
            let _ = s.flush();
        }
    });
    (addr, seen)
}

/// A LAN interface (veth) named `<prefix><pid>` with the private address 10.<octet>.x.1, and a
/// free port on it.
fn lan_interface(prefix: &str, octet: u8) -> (Lan, String, u16) {
    let id = std::process::id() % 10_000;
    let lan = Lan(format!("{prefix}{id}"));
    let ip = format!("10.{octet}.{}.1", id % 250);
    sh(&format!(
        "ip link add {l} type veth peer name {l}p && ip addr add {ip}/24 dev {l} && \
         ip link set {l}p up && ip link set {l} up",
        l = lan.0
    ));
    let port = {
        let l = std::net::TcpListener::bind((ip.as_str(), 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    (lan, ip, port)
}

/// The test box's configuration on `lan`, with `enrol` (lines of `[enrol]`, or none).
fn box_on(box_dir: &Path, lan: &(Lan, String, u16), enrol: Option<&str>) -> String {
    config(box_dir, "", "")
        .replace(
            "listen = [\"127.0.0.1:0\"]\n",
            &format!("listen_interfaces = [\"{}\"]\nport = {}\n", lan.0 .0, lan.2),
        )
        .replace(
            "[metrics]",
            &enrol.map_or_else(
                || "[metrics]".to_owned(),
                |e| format!("[enrol]\n{e}\n\n[metrics]"),
            ),
        )
}

/// `[enrol]` lines for the device of `pki`, against `authority`.
fn enrol_lines(pki: &Path, authority: SocketAddr, zone: &str, extra: &str) -> String {
    let d = pki.display();
    format!(
        "authority = \"https://{authority}\"\nauthority_ca = \"{d}/op-ca.pem\"\n\
         device_cert = \"{d}/device.pem\"\ndevice_key = \"{d}/device.key\"\nzone = \"{zone}\"\n{extra}"
    )
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn renewal_waits_for_the_authoritys_retry_after() {
    require_root("to add a network interface");
    let dir = temp_dir("retry-after");
    operator_pki(&dir);
    let lan = lan_interface("bxr", 214);
    // Issuance limit reached (an hour in the real authority; 5 s here), then busy for 3 s. The
    // box's own backoff is 1-2 s: without the authority's word it would be back within 2.4 s.
    let (authority, seen) = scripted_authority(
        &dir,
        vec![
            (429, Some("5"), "rate_limited"),
            (503, Some("3"), "busy"),
            (429, Some("garbage"), "rate_limited"),
        ],
    );
    let box_dir = dir.join("box");
    std::fs::create_dir_all(&box_dir).unwrap();
    let enrol = enrol_lines(
        &dir,
        authority,
        "box.test",
        // Due at once, whatever the fixture certificate's dates.
        "renew_fraction = 1e-9\nretry_min_secs = 1\nretry_max_secs = 2",
    );
    std::fs::write(
        box_dir.join("boxapi.toml"),
        box_on(&box_dir, &lan, Some(&enrol)),
    )
    .unwrap();
    let boxd = Daemon::start_in(box_dir, &[]);
    let enrols = || -> Vec<std::time::Instant> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| p == "/v1/enrol")
            .map(|(t, _)| *t)
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(30), || enrols().len() >= 4),
        "{:?}\n{}",
        seen.lock().unwrap(),
        boxd.log_text()
    );
    let t = enrols();
    let (first, second, third) = (t[1] - t[0], t[2] - t[1], t[3] - t[2]);
    assert!(
        first >= Duration::from_secs(5),
        "429 with Retry-After 5: back after {first:?}"
    );
    // Upper bounds with room for a loaded machine (5 s + 20 % jitter, then scheduling).
    assert!(first < Duration::from_secs(10), "{first:?}");
    assert!(
        second >= Duration::from_secs(3),
        "503 with Retry-After 3: back after {second:?}"
    );
    // An unreadable Retry-After is ignored: the box's backoff (1-2 s, ±20 %) again.
    assert!(
        third < Duration::from_secs(5),
        "garbage Retry-After: back after {third:?}"
    );
    // The failure event says what the authority asked and when the box comes back.
    let log = boxd.log_text();
    let failed: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "certificate_renewal_failed")
        .collect();
    assert_eq!(failed[0]["retry_after_s"], "5", "{log}");
    assert!(
        failed[0]["retry_in_s"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 5,
        "{log}"
    );
    assert!(
        failed[0]["error"].as_str().unwrap().contains("(429)"),
        "{log}"
    );
    assert_eq!(failed[1]["retry_after_s"], "3", "{log}");
    assert!(failed[2]["retry_after_s"].is_null(), "{log}");
    let st = status_json(&boxd);
    assert!(
        st["cert_last_error"]
            .as_str()
            .unwrap()
            .contains("rate_limited"),
        "{st}"
    );
    drop(lan);
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn hosts_entry_follows_enrol_and_leaves_other_lines_alone() {
    require_root("to add a network interface");
    let dir = temp_dir("hosts");
    operator_pki(&dir);
    let lan = lan_interface("bxh", 215);
    let lan_ip = lan.1.clone();
    // No enrolment is due (the fixture certificate's renewal time) and addresses go to an
    // authority that answers them: only the hosts file matters here.
    let (authority, _) = scripted_authority(&dir, vec![(503, Some("3600"), "busy")]);
    let box_dir = dir.join("box");
    std::fs::create_dir_all(&box_dir).unwrap();
    let (hosts, hosts2) = (dir.join("hosts"), dir.join("hosts2"));
    let operator = "# the operator's own\n10.215.0.9 printer.lan\n";
    std::fs::write(&hosts, operator).unwrap();
    let cfg = |zone: &str, file: &Path| {
        let enrol = enrol_lines(
            &dir,
            authority,
            zone,
            &format!("hosts_file = \"{}\"", file.display()),
        );
        box_on(&box_dir, &lan, Some(&enrol))
    };
    let cfg_path = box_dir.join("boxapi.toml");
    std::fs::write(&cfg_path, cfg("box.test", &hosts)).unwrap();
    let boxd = Daemon::start_in(box_dir.clone(), &[]);
    let reload_with = |text: &str| {
        std::fs::write(&cfg_path, text).unwrap();
        let (code, out, err) = boxd.ctl(&["reload"]);
        assert_eq!(code, 0, "reload: {out}{err}");
    };
    let name = status_json(&boxd)["cert_name"].as_str().unwrap().to_owned();
    assert!(name.ends_with(".box.test"), "{name}");
    let read = |f: &Path| std::fs::read_to_string(f).unwrap_or_default();
    // The box's line comes after the operator's, which stay.
    let entry = format!("{lan_ip} {name}\n");
    assert!(
        wait_for(Duration::from_secs(10), || read(&hosts)
            == format!("{operator}{entry}")),
        "{:?}\n{}",
        read(&hosts),
        boxd.log_text()
    );
    // Another zone, so another name: the old name's line goes, the new one comes.
    reload_with(&cfg("other.test", &hosts));
    let renamed = format!("{lan_ip} {}.other.test\n", name.split('.').next().unwrap());
    assert!(
        wait_for(Duration::from_secs(10), || read(&hosts)
            == format!("{operator}{renamed}")),
        "{:?}\n{}",
        read(&hosts),
        boxd.log_text()
    );
    // Another hosts file: the entry moves, the first file is the operator's alone again.
    reload_with(&cfg("other.test", &hosts2));
    assert!(
        wait_for(Duration::from_secs(10), || read(&hosts) == operator
            && read(&hosts2) == renamed),
        "{:?} {:?}\n{}",
        read(&hosts),
        read(&hosts2),
        boxd.log_text()
    );
    // `[enrol]` removed: the box's entry goes with it (the file stays, empty).
    reload_with(&box_on(&box_dir, &lan, None));
    assert!(
        wait_for(Duration::from_secs(10), || hosts2.exists()
            && read(&hosts2).is_empty()),
        "{:?}\n{}",
        read(&hosts2),
        boxd.log_text()
    );
    assert!(boxd.logged("hosts_entry_removed"), "{}", boxd.log_text());
    assert_eq!(read(&hosts), operator);
    drop(lan);
}
