//! The authority's life as a daemon, run by the kit it shares with the box
//! (`boxapi_core::daemon`): a reload never moves its control socket or state, and SIGTERM tells
//! its connections to close rather than waiting them out.
mod common;
use boxapi_core::auth::jwk::Alg;
use boxapi_core::auth::mint;
use common::{dev_certs, temp_dir, Authority};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const ISSUER: &str = "https://authority.test";

/// A working directory with the dev certificates, a signing key and `authority.toml`.
fn setup(name: &str) -> PathBuf {
    let dir = temp_dir("daemon", name);
    dev_certs(&dir);
    let op = mint::generate(Alg::EdDsa, "op").expect("signing key");
    std::fs::write(dir.join("op.private.jwk"), op.to_json().to_string()).expect("write key");
    std::fs::write(dir.join("authority.toml"), config("state")).expect("write config");
    dir
}

fn config(state_dir: &str) -> String {
    format!(
        r#"[server]
cert = "server.pem"
key = "server.key"
state_dir = "{state_dir}"
control_socket = "control.sock"

[auth]
audience = "{ISSUER}"
issuers = ["{ISSUER}"]

[token_endpoint]
enabled = true
issuer = "{ISSUER}"
signing_key = "op.private.jwk"

[authority]
listen = ["127.0.0.1:0"]
"#
    )
}

/// One GET on an open keep-alive connection: the status, once the whole answer is read.
fn get_kept_alive(s: &mut impl ReadWrite, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("a length"));
        if got.len() >= end + 4 + len {
            let status = head.split(' ').nth(1).expect("a status");
            return status.parse().expect("a number");
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Contract §7 (rev. 3), as on the box: a reload that changes `state_dir` fails, names it and
/// changes nothing; so does one that moves the authority's listeners.
#[test]
fn reload_refuses_what_only_a_restart_applies() {
    let dir = setup("restartonly");
    let auth = Authority::start(&dir);
    std::fs::write(dir.join("authority.toml"), config("state2")).expect("write config");
    let r = auth.control(r#"{"cmd":"reload"}"#);
    assert_eq!(r["ok"], false, "{r}");
    let problems = r["problems"].to_string();
    assert!(
        problems.contains("server.state_dir") && problems.contains("restart"),
        "{r}"
    );
    assert!(!dir.join("state2").exists(), "nothing changed");
    // Nor its listeners (opened once, at start).
    let moved = config("state").replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(dir.join("authority.toml"), moved).expect("write config");
    let r = auth.control(r#"{"cmd":"reload"}"#);
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["problems"].to_string().contains("authority.listen"),
        "{r}"
    );
    std::fs::write(dir.join("authority.toml"), config("state")).expect("write config");
    assert_eq!(auth.control(r#"{"cmd":"reload"}"#)["ok"], true);
}

/// The control protocol is core's, the box's own commands are not: the authority answers them
/// as unknown (it used to know them and refuse them at run time), and still answers its own.
#[test]
fn box_commands_are_unknown_to_the_authority() {
    let dir = setup("boxcommands");
    let auth = Authority::start(&dir);
    for (line, cmd) in [
        (r#"{"cmd":"disable"}"#, "disable"),
        (r#"{"cmd":"tools"}"#, "tools"),
        (r#"{"cmd":"withhold","section":"wifi"}"#, "withhold"),
        (r#"{"cmd":"allow","section":"wifi","tool":"t"}"#, "allow"),
    ] {
        let r = auth.control(line);
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"], format!("unknown command {cmd:?}"), "{r}");
    }
    let r = auth.control(r#"{"cmd":"suspend","retry_after":5}"#);
    assert_eq!(r["state"], "suspended", "{r}");
    assert_eq!(auth.control(r#"{"cmd":"resume"}"#)["state"], "enabled");
}

/// SIGTERM closes a kept-alive idle connection at once (it used to stay open until its idle
/// limit or the grace period ran out), and the authority exits 0.
#[test]
fn sigterm_closes_idle_connections_at_once() {
    let dir = setup("drain");
    let mut auth = Authority::start(&dir);
    let mut idle = auth.connect();
    let discovery = "/.well-known/oauth-authorization-server";
    assert_eq!(get_kept_alive(&mut idle, discovery), 200);
    let pid = auth.child.id().to_string();
    let sent = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.expect("kill -TERM").success());
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    let closed = sent.elapsed();
    assert!(
        closed < Duration::from_millis(1500),
        "the idle connection was closed {closed:?} after SIGTERM"
    );
    let until = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = auth.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < until, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// A load balancer connects from one address for many clients: with `trusted_proxies` naming
/// it, it has no per-client share (issue 21: before, its 17th connection to a replica with the
/// default 64 slots was closed unanswered, a quarter being one client's share).
#[test]
fn a_trusted_proxy_holds_more_than_one_clients_share() {
    let dir = setup("proxy");
    let text = config("state").replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\"]\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    std::fs::write(dir.join("authority.toml"), text).expect("write config");
    let auth = Authority::start(&dir);
    let discovery = "/.well-known/oauth-authorization-server";
    let mut held: Vec<_> = (0..24).map(|_| auth.connect()).collect();
    for (i, s) in held.iter_mut().enumerate() {
        assert_eq!(get_kept_alive(s, discovery), 200, "connection {i}");
    }
    // All of them are still open and answered again.
    for (i, s) in held.iter_mut().enumerate() {
        assert_eq!(get_kept_alive(s, discovery), 200, "connection {i}, again");
    }
}
