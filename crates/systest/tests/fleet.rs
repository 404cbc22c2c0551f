//! Issue 23 end to end: a real authority publishes signed fleet documents and a real box fetches
//! them over its device certificate's mTLS and applies them at once: a restriction (503
//! suspended, as `ctl suspend`), its lifting, a tool's revocation; an older document (a stale
//! replica) and another key's are refused; an authority that is down changes nothing, and a box
//! restarted meanwhile keeps what it applied.
#[path = "../../box/tests/common/mod.rs"]
mod common;
mod operator;
use common::*;
use operator::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `fleet_poll_secs = 1` plus its jitter (20 %), and slack for a loaded machine.
const APPLIED_WITHIN: Duration = Duration::from_secs(4);

/// `boxapi ARGS`, which must succeed.
fn boxapi(args: &[&str]) {
    let out = daemon_command().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// An operator's root key pair, `root.private.jwk` and `root.jwk`, in `dir`.
fn root_key(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.to_str().unwrap();
    boxapi(&["keygen", "--alg", "EdDSA", "--kid", "root", "--out", out]);
    dir.to_path_buf()
}

/// The operator's signing tool: the payload `doc` signed (`kind`: "registry" or "fleet") with the
/// root key in `keys`, written to `out`.
fn sign(keys: &Path, kind: &str, doc: &Value, out: &Path) {
    let input = out.with_extension("json");
    std::fs::write(&input, doc.to_string()).unwrap();
    let (code, err) = operator_sign(kind, &keys.join("root.private.jwk"), &input, out);
    assert_eq!(code, 0, "{err}");
}

/// The registry tool `reg` (its key `reg`), revoked or not.
fn tools(reg: &Key, revoked: bool) -> Value {
    json!([{"id": "reg", "origins": ["https://reg.example"], "scopes": ["access", "counters"],
            "keys": [reg.jwk()], "revoked": revoked}])
}

/// An authority in `dir` with `[registry]` of the root key in `keys`, serving what was published
/// there before (its `state_dir`).
fn authority_in(dir: &Path, pki: &Path, keys: &Path, reg: &Key) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["auth.pem", "auth.key", "device-ca.pem", "device-ca.crl"] {
        std::fs::copy(pki.join(f), dir.join(f)).unwrap();
    }
    let registry = dir.join("registry.jws");
    sign(
        keys,
        "registry",
        &json!({"version": 1, "tools": tools(reg, false)}),
        &registry,
    );
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        "\n[registry]\nfile = \"registry.jws\"\nroot_key = \"{}\"\n",
        keys.join("root.jwk").display()
    );
    authority(dir, metrics, &extra)
}

/// `ctl publish-fleet` on `auth` of the fleet document of version `v` (tools revoked or not,
/// `restriction`) signed by the root key in `keys`.
fn publish(auth: &Daemon, keys: &Path, reg: &Key, v: u64, revoked: bool, restriction: Value) {
    let file = auth.dir.join(format!("fleet-{v}.jws"));
    let doc = json!({"version": v, "tools": tools(reg, revoked), "restriction": restriction});
    sign(keys, "fleet", &doc, &file);
    let (code, out, err) = auth.ctl(&["publish-fleet", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out} {err}");
}

/// The box's configuration: the test's tools, the registry of version 1, `[enrol]` for the
/// authority on `port` polling every second.
fn box_config(dir: &Path, pki: &Path, keys: &Path, device: &str, port: u16) {
    let extra = format!(
        "\n[registry]\nfile = \"registry.jws\"\nroot_key = \"{}\"\n{}fleet_poll_secs = 1\n\
         retry_min_secs = 1\nretry_max_secs = 2\n",
        keys.join("root.jwk").display(),
        enrol_section(pki, device, port)
    );
    std::fs::write(dir.join("boxapi.toml"), config(dir, "", &extra)).unwrap();
}

fn status(d: &Daemon) -> Value {
    let (code, out, err) = d.ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// How long until `f` holds (at most `APPLIED_WITHIN`; fails past it).
#[track_caller]
fn applied_within(d: &Daemon, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    assert!(
        wait_for(APPLIED_WITHIN, &mut f),
        "{what}: not applied within {APPLIED_WITHIN:?}: {}",
        d.log_text()
    );
    t.elapsed()
}

/// `/v1/access` with `token` answers 503 suspended with this Retry-After.
fn suspended(d: &Daemon, token: &str, retry_after: &str) -> bool {
    let r = d.get_token("/v1/access", token);
    r.status == 503
        && r.json()["code"] == "suspended"
        && r.header("retry-after") == Some(retry_after)
}

fn served(d: &Daemon, token: &str) -> bool {
    d.get_token("/v1/access", token).status == 200
}

fn revoked(d: &Daemon, token: &str) -> bool {
    let r = d.get_token("/v1/access", token);
    r.status == 401 && r.json()["reason"] == "tool_revoked"
}

/// Whether `d` logs an `event` line that `f` accepts, within `APPLIED_WITHIN`.
fn logged(d: &Daemon, event: &str, f: impl Fn(&Value) -> bool) -> bool {
    wait_for(APPLIED_WITHIN, || {
        d.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|l| l["event"] == event && f(&l)))
    })
}

/// An open `/v1/counters/stream` of `token` on `d`, its head read (200).
fn counters_stream(d: &Daemon, token: &str) -> impl std::any::Any {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = connect(
        d.addr,
        "localhost",
        client_config(&[&rustls::version::TLS13]),
    );
    write!(
        stream,
        "GET /v1/counters/stream?interval_ms=100 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(stream);
    let mut head = String::new();
    lines.read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    lines
}

/// The `reg` tool's stream `lines` on `d` ended, for `reason` (logged `stream_end`).
#[track_caller]
fn stream_ended(d: &Daemon, lines: impl std::any::Any, reason: &str) {
    let ended = logged(d, "stream_end", |l| {
        l["tool"] == "reg" && l["reason"] == reason
    });
    assert!(ended, "the stream goes on ({reason}): {}", d.log_text());
    drop(lines);
}

/// The box's `fleet_poll_secs` set to `secs` (`ctl reload`).
fn poll_every(d: &Daemon, secs: u64) {
    let file = d.dir.join("boxapi.toml");
    let config = std::fs::read_to_string(&file).unwrap();
    let config = config.replace(
        "fleet_poll_secs = 1\n",
        &format!("fleet_poll_secs = {secs}\n"),
    );
    std::fs::write(&file, config).unwrap();
    let (code, _, err) = d.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
}

/// Points the box at another authority (`ctl reload`).
fn point_at(d: &Daemon, pki: &Path, keys: &Path, port: u16) {
    box_config(&d.dir, pki, keys, "device", port);
    let (code, _, err) = d.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
}

/// The operator's PKI, root key, registry tool key and authority in `dir`.
struct Operator {
    dir: PathBuf,
    pki: PathBuf,
    keys: PathBuf,
    reg: Key,
    auth: Daemon,
}

impl Operator {
    fn new(dir: PathBuf) -> Operator {
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).unwrap();
        pki(&pki_dir);
        let keys = root_key(&dir.join("op"));
        let reg = tool_key(&dir, "reg");
        let auth = authority_in(&dir.join("authority"), &pki_dir, &keys, &reg);
        Operator {
            dir,
            pki: pki_dir,
            keys,
            reg,
            auth,
        }
    }

    /// A box in its own directory, holding the device certificate `device`, started.
    fn start_box(&self, name: &str, device: &str) -> Daemon {
        let box_dir = self.dir.join(name);
        std::fs::create_dir_all(&box_dir).unwrap();
        sign(
            &self.keys,
            "registry",
            &json!({"version": 1, "tools": tools(&self.reg, false)}),
            &box_dir.join("registry.jws"),
        );
        box_config(
            &box_dir,
            &self.pki,
            &self.keys,
            device,
            self.auth.addr.port(),
        );
        Daemon::start_in(box_dir, &[])
    }
}

#[test]
fn boxes_pull_and_apply_the_fleet_document() {
    let op = Operator::new(temp_dir("fleet"));
    let d = op.start_box("box", "device");
    let Operator {
        dir,
        pki: pki_dir,
        keys,
        reg,
        auth,
    } = op;
    let rogue = root_key(&dir.join("rogue"));
    let token = reg.token("reg", "access counters");
    let other = fixtures().a.token("a", "access");
    assert!(served(&d, &token));
    // Nothing published yet: polled, nothing to apply.
    assert!(wait_for(APPLIED_WITHIN, || status(&d)["fleet"]
        ["last_fetch"]
        .is_string()));
    assert_eq!(status(&d)["fleet"]["version"], Value::Null);

    // A restriction: 503 suspended with its Retry-After, exactly as `ctl suspend` answers, and
    // an open stream ended.
    let lines = counters_stream(&d, &token);
    let restriction = json!({"suspended": true, "retry_after": 120, "reason": "CVE-2027-0001"});
    publish(&auth, &keys, &reg, 2, false, restriction);
    let took = applied_within(&d, "restriction", || suspended(&d, &token, "120"));
    eprintln!("restriction applied in {took:?}");
    stream_ended(&d, lines, "suspended");
    d.get("/v1/counters", &[]).assert_problem(503, "suspended");
    let s = status(&d);
    assert_eq!(s["state"], "enabled", "the local state is its own: {s}");
    assert_eq!(
        (
            s["fleet"]["version"].clone(),
            s["fleet"]["suspended"].clone(),
            s["fleet"]["retry_after"].clone()
        ),
        (json!(2), json!(true), json!(120)),
        "{s}"
    );
    assert_eq!(s["fleet"]["reason"], "CVE-2027-0001");
    // The local suspension and the fleet's are independent: resuming one lifts only it.
    assert_eq!(d.ctl(&["suspend", "--retry-after", "30"]).0, 0);
    assert!(suspended(&d, &token, "30"));
    assert_eq!(d.ctl(&["resume"]).0, 0);
    assert!(suspended(&d, &token, "120"));

    // Lifted for this box: the restriction now names other models only (this box's card says
    // "Test Box", firmware 9.9).
    let elsewhere = json!({"suspended": true, "models": ["Other Box"], "firmware": ["9.9"]});
    publish(&auth, &keys, &reg, 3, false, elsewhere);
    let took = applied_within(&d, "lifting", || served(&d, &token));
    eprintln!("lifting applied in {took:?}");
    assert_eq!(status(&d)["fleet"]["suspended"], false);

    // A tool revoked: its tokens refused and its open stream ended; others untouched.
    let lines = counters_stream(&d, &token);
    publish(&auth, &keys, &reg, 4, true, Value::Null);
    let took = applied_within(&d, "revocation", || revoked(&d, &token));
    eprintln!("revocation applied in {took:?}");
    assert!(served(&d, &other));
    stream_ended(&d, lines, "revoked");

    // Both at once, then what must change nothing.
    let restriction = json!({"suspended": true, "retry_after": 600});
    publish(&auth, &keys, &reg, 5, true, restriction);
    applied_within(&d, "restriction", || suspended(&d, &token, "600"));

    // A stale replica serving an older document (validly signed): refused as a rollback.
    let stale = authority_in(&dir.join("stale"), &pki_dir, &keys, &reg);
    publish(&stale, &keys, &reg, 3, false, json!({"suspended": false}));
    point_at(&d, &pki_dir, &keys, stale.addr.port());
    let refused = |d: &Daemon, why: &str| {
        logged(d, "fleet_document_refused", |l| {
            l["error"].as_str().is_some_and(|e| e.contains(why))
        })
    };
    assert!(refused(&d, "rollback refused"), "{}", d.log_text());
    // A document of another key (the rogue authority's own): refused and reported.
    let forged = authority_in(&dir.join("forged"), &pki_dir, &rogue, &reg);
    publish(&forged, &rogue, &reg, 9, false, json!({"suspended": false}));
    point_at(&d, &pki_dir, &keys, forged.addr.port());
    assert!(refused(&d, "signature"), "{}", d.log_text());
    assert!(suspended(&d, &token, "600"));
    assert_eq!(status(&d)["fleet"]["version"], 5);
    drop((stale, forged));

    // The authority down: nothing changes, and the failure is shown.
    point_at(&d, &pki_dir, &keys, auth.addr.port());
    let auth_dir = auth.stop();
    std::thread::sleep(APPLIED_WITHIN);
    assert!(suspended(&d, &token, "600"));
    let s = status(&d);
    assert!(
        s["fleet"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{s}"
    );
    // Restarted while the authority is down: what it applied holds from its first answer.
    let box_dir = d.stop();
    let d = Daemon::start_in(box_dir.clone(), &[]);
    assert!(suspended(&d, &token, "600"));
    // Every kept copy damaged: suspended (fail closed) until a good document is fetched; the
    // registry's version floor damaged too, which must not refuse that document.
    let box_dir = d.stop();
    for f in [
        "fleet-applied.jws",
        "fleet-applied.jws.prev",
        "registry.version",
        "registry.version.prev",
    ] {
        std::fs::write(box_dir.join("state").join(f), "junk").unwrap();
    }
    let d = Daemon::start_in(box_dir.clone(), &[]);
    assert!(suspended(&d, &other, "300"));
    let s = status(&d);
    assert!(
        s["warnings"].to_string().contains("fleet_document_damaged"),
        "{s}"
    );

    // The authority back (on a new port), and the operator lifts everything.
    let auth = Daemon::start_command(auth_dir, &[], "authority");
    point_at(&d, &pki_dir, &keys, auth.addr.port());
    publish(&auth, &keys, &reg, 6, false, json!({"suspended": false}));
    applied_within(&d, "lifting after the outage", || served(&d, &token));
    assert!(served(&d, &other));
    assert_eq!(status(&d)["fleet"]["version"], 6);
}

/// Until every box in `boxes` satisfies `f`, at most `within`: the time from the call. One
/// thread asks each box still pending in turn, every 250 ms: 50 checkers opening TLS connections
/// every 50 ms would load the machine the boxes run on.
fn all_within(
    boxes: &[Daemon],
    within: Duration,
    what: &str,
    f: impl Fn(&Daemon) -> bool,
) -> Duration {
    let t = Instant::now();
    let mut pending: Vec<&Daemon> = boxes.iter().collect();
    loop {
        pending.retain(|d| !f(d));
        let Some(d) = pending.first() else {
            return t.elapsed();
        };
        assert!(
            t.elapsed() < within,
            "{what}: {} boxes not within {within:?}: {}",
            pending.len(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Issue 23's proof: 50 real `boxapi serve` processes on loopback, each with its own device
/// certificate (and the pre-made server certificate, so none enrols), and one authority. The
/// time from each publication to the last box applying it: a restriction, a tool's revocation,
/// and the lifting of both.
#[test]
fn fifty_boxes_apply_what_the_authority_publishes() {
    const BOXES: usize = 50;
    // The poll interval (1 s) and its jitter, plus slack for 50 daemons on a shared machine
    // (measured 2.6 to 3.2 s).
    let within = Duration::from_secs(20);
    let op = Operator::new(temp_dir("fleet-50"));
    sh(
        &op.pki,
        &format!(
            "for i in $(seq 1 {BOXES}); do \
               openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out box$i.key; \
               openssl req -new -key box$i.key -subj \"/CN=device box$i\" 2>/dev/null | \
               openssl x509 -req -CA device-ca.pem -CAkey device-ca.key -CAcreateserial -days 2 -sha256 \
                 -extfile <(printf 'extendedKeyUsage=clientAuth\\nkeyUsage=critical,digitalSignature\\n') \
                 -out box$i.pem 2>/dev/null; done"
        ),
    );
    let boxes: Vec<Daemon> = (1..=BOXES)
        .map(|i| op.start_box(&format!("box{i}"), &format!("box{i}")))
        .collect();
    let token = op.reg.token("reg", "access counters");
    all_within(&boxes, within, "served", |d| served(d, &token));

    let restriction = json!({"suspended": true, "retry_after": 120});
    publish(&op.auth, &op.keys, &op.reg, 2, false, restriction);
    let took = all_within(&boxes, within, "restriction", |d| {
        suspended(d, &token, "120")
    });
    eprintln!("{BOXES} boxes suspended in {took:?}");
    // Every box fetched it, each by its own device identity.
    let (_, out, _) = op.auth.ctl(&["status"]);
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["fleet_boxes"]["2"], BOXES, "{s}");

    publish(&op.auth, &op.keys, &op.reg, 3, true, Value::Null);
    let took = all_within(&boxes, within, "revocation", |d| revoked(d, &token));
    eprintln!("{BOXES} boxes refuse the revoked tool in {took:?}");

    publish(&op.auth, &op.keys, &op.reg, 4, false, Value::Null);
    let took = all_within(&boxes, within, "lifting", |d| served(d, &token));
    eprintln!("{BOXES} boxes serve again in {took:?}");
}

/// A hostile or broken authority on loopback: the test PKI's authority certificate (the box trusts
/// it), no client certificate asked, and `answer` written to every request (at most 50
/// connections, for at most 30 s), then with `drip` one more byte every `drip` for 30 s. Its port.
fn hostile_authority(pki: &Path, answer: &'static [u8], drip: Option<Duration>) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.join("auth.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join("auth.key")).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let until = Instant::now() + Duration::from_secs(30);
    std::thread::spawn(move || {
        for sock in listener.incoming().take(50) {
            if Instant::now() > until {
                break;
            }
            let Ok(sock) = sock else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut s = rustls::StreamOwned::new(conn, sock);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer);
                if let Some(every) = drip {
                    while Instant::now() < until
                        && s.write_all(b" ").and_then(|()| s.flush()).is_ok()
                    {
                        std::thread::sleep(every);
                    }
                }
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    port
}

/// Attack: one 503 with `Retry-After: 86400` (a load balancer in front of the authority, or the
/// authority itself) must not silence the box's fleet polling for a day, during which a
/// restriction the operator publishes would not reach it: the box honours a `Retry-After` up to
/// twice its `fleet_poll_secs` (1 s here), up to 20 % later, whatever the authority asks.
#[test]
fn a_retry_after_of_a_day_does_not_stop_fleet_polling_for_a_day() {
    let op = Operator::new(temp_dir("fleet-retry"));
    let d = op.start_box("box", "device");
    let port = hostile_authority(
        &op.pki,
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
          retry-after: 86400\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        None,
    );
    point_at(&d, &op.pki, &op.keys, port);
    let wait = std::cell::Cell::new(None);
    let secs = |v: &Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    assert!(
        logged(&d, "fleet_fetch_failed", |l| {
            if !l["retry_after_s"].is_null() {
                wait.set(secs(&l["retry_in_s"]));
            }
            wait.get().is_some()
        }),
        "no fleet_fetch_failed with a Retry-After: {}",
        d.log_text()
    );
    let wait = wait.get().unwrap();
    assert!(
        wait <= 3.0,
        "one 503 with Retry-After: 86400 stops fleet polling for {wait} s"
    );
}

/// Attack: an authority (or a network stalling the connection past its handshake) dripping one
/// byte a second of a 200's body held the box's fleet task for `EXCHANGE` (300 s). A fetch now
/// gives up after `fleet_poll_secs` (at most 30 s), and a reload ends it at once: pointed back at
/// the real authority, the box applies a restriction published there within seconds.
#[test]
fn a_dripping_authority_does_not_hold_the_fleet_channel() {
    let op = Operator::new(temp_dir("fleet-drip"));
    let d = op.start_box("box", "device");
    let other = fixtures().a.token("a", "access");
    let port = hostile_authority(
        &op.pki,
        b"HTTP/1.1 200 OK\r\ncontent-type: application/jose\r\ncontent-length: 100000\r\n\r\n",
        Some(Duration::from_secs(1)),
    );
    // Polling every second, a fetch gives up after a second.
    point_at(&d, &op.pki, &op.keys, port);
    assert!(
        logged(&d, "fleet_fetch_failed", |l| l["error"]
            == "no answer within 1 s"),
        "{}",
        d.log_text()
    );
    // Polling every minute, the fetch's own deadline is 30 s: the reload must end it sooner.
    poll_every(&d, 60);
    std::thread::sleep(Duration::from_secs(4));
    point_at(&d, &op.pki, &op.keys, op.auth.addr.port());
    let restriction = json!({"suspended": true, "retry_after": 120, "reason": "CVE-2027-0003"});
    publish(&op.auth, &op.keys, &op.reg, 2, false, restriction);
    let t = Instant::now();
    let applied = wait_for(Duration::from_secs(20), || suspended(&d, &other, "120"));
    assert!(
        applied,
        "not applied within 20 s of the reload: {}",
        d.log_text()
    );
    eprintln!("applied {:?} after the reload", t.elapsed());
}

/// A reload re-plans the next fetch with its `fleet_poll_secs`: a box told to poll hourly, then
/// every second again, applies a restriction within seconds, not at the hour.
#[test]
fn a_reload_applies_its_fleet_poll_at_once() {
    let op = Operator::new(temp_dir("fleet-replan"));
    let d = op.start_box("box", "device");
    let other = fixtures().a.token("a", "access");
    poll_every(&d, 3600);
    // The fetch due within 2 s of start happens, and plans the next for the hour.
    std::thread::sleep(Duration::from_secs(3));
    assert!(status(&d)["fleet"]["last_fetch"].is_string());
    point_at(&d, &op.pki, &op.keys, op.auth.addr.port());
    let restriction = json!({"suspended": true, "retry_after": 120, "reason": "CVE-2027-0004"});
    publish(&op.auth, &op.keys, &op.reg, 2, false, restriction);
    applied_within(&d, "restriction after the reload", || {
        suspended(&d, &other, "120")
    });
}
/// Attack: answers a hostile or broken authority may give (a registry posing as the fleet
/// document, a 200 of HTML, a 304 when the box holds nothing) change nothing: the box keeps
/// serving, never suspends, and `ctl status` answers.
#[test]
fn hostile_fleet_answers_change_nothing() {
    let op = Operator::new(temp_dir("fleet-hostile"));
    let d = op.start_box("box", "device");
    let token = op.reg.token("reg", "access counters");
    let registry = op.dir.join("posing.jws");
    sign(
        &op.keys,
        "registry",
        &json!({"version": 9, "tools": tools(&op.reg, true)}),
        &registry,
    );
    let jws = std::fs::read(&registry).unwrap();
    let posing = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/jose\r\ncontent-length: {}\r\n\r\n",
        jws.len()
    );
    let posing: &'static [u8] = Box::leak([posing.as_bytes(), &jws].concat().into_boxed_slice());
    let answers: [&'static [u8]; 3] = [
        posing,
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\n\r\n<html></html>",
        b"HTTP/1.1 304 Not Modified\r\netag: \"99\"\r\n\r\n",
    ];
    for answer in answers {
        let port = hostile_authority(&op.pki, answer, None);
        point_at(&d, &op.pki, &op.keys, port);
        std::thread::sleep(Duration::from_secs(3));
        assert!(served(&d, &token), "{}", d.log_text());
        let s = status(&d);
        assert!(s["fleet"]["version"].is_null(), "{s}");
    }
    let refused = d.log_text().matches("fleet_document_refused").count();
    assert!(
        refused >= 2,
        "the posing registry and the HTML were fetched and refused"
    );
}
