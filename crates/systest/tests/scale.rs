//! The central authority at operator scale (issue 15): replicas sharing a real `redis-server`
//! (started here on a free port, no persistence), failing closed when it is gone, the box
//! locator, per-box audiences checked by two real boxes, and `/metrics`. Every wait is bounded.
#[path = "../../box/tests/common/mod.rs"]
mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The authority's issuer (its token endpoint is `{AUTHORITY}/v1/token`).
const AUTHORITY: &str = "https://authority.test";
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throw-away `redis-server`: loopback, free port, no persistence; killed on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it on `self.port` and waits (at most 5 s) until it answers PING.
    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args([
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (make deps installs it)");
        self.child = Some(child);
        assert!(
            wait_for(Duration::from_secs(5), || self.command(&["PING"]).is_some()),
            "redis-server on port {} did not start",
            self.port
        );
    }

    /// SIGSTOP (`true`) or SIGCONT: a Redis that accepts connections but never answers.
    fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One command in RESP; the first line of the reply, `None` when Redis does not answer.
    fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        (!line.is_empty()).then(|| line.trim_end().to_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Keys shared by a test's replicas and boxes: the operator's signing key for tool a.
fn operator_keys(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    keygen(&dir, "ES256", "a-operator");
    dir
}

/// An authority configuration in its own directory: the standard tools, tool b limited to
/// `b_per_hour` tokens, `authority` appended to `[authority]`, `extra` at the end.
fn authority_dir(
    name: &str,
    keys: &Path,
    b_per_hour: u32,
    authority: &str,
    extra: &str,
) -> PathBuf {
    let dir = temp_dir(name);
    let f = fixtures();
    let (a_jwk, b_jwk) = (
        format!("{}/a.jwk", f.dir.display()),
        format!("{}/b.jwk", f.dir.display()),
    );
    // The box's [metrics] sections are unknown keys to the authority: cut from there on.
    let box_text = config(&dir, "", "");
    let text = box_text[..box_text.find("[metrics]").unwrap()]
        .replace("listen = [\"127.0.0.1:0\"]\n", "")
        .replacen(
            &format!("keys = [\"{b_jwk}\"]"),
            &format!("keys = [\"{b_jwk}\"]\ntokens_per_hour = {b_per_hour}"),
            1,
        )
        .replacen(
            &format!("keys = [\"{a_jwk}\"]"),
            &format!("keys = [\"{a_jwk}\"]\nsigning_key = \"{}/a-operator.private.jwk\"", keys.display()),
            1,
        )
        + &format!(
            "[token_endpoint]\nenabled = true\nissuer = \"{AUTHORITY}\"\nsigning_key = \"{}/a-operator.private.jwk\"\ntokens_per_hour = 1000\n\n[authority]\nlisten = [\"127.0.0.1:0\"]\n{authority}\n",
            keys.display()
        );
    std::fs::write(dir.join("boxapi.toml"), format!("{text}\n{extra}\n")).unwrap();
    dir
}

fn redis_store(r: &Redis) -> String {
    format!(
        "[authority.store]\nkind = \"redis\"\nurl = \"{}\"\nkey_prefix = \"t:\"\nresponse_timeout_ms = 1000\n",
        r.url()
    )
}

fn authority(dir: &Path) -> Daemon {
    Daemon::start_command(dir.to_path_buf(), &[], "authority")
}

/// A fresh client assertion (RFC 7523) for `tool`, made now.
fn assertion(key: &Key, tool: &str, jti: &str) -> String {
    let t = now();
    key.sign(&json!({"iss": tool, "sub": tool, "aud": format!("{AUTHORITY}/v1/token"), "iat": t, "exp": t + 60, "jti": jti}))
}

fn form(assertion: &str) -> String {
    format!("grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}")
}

fn post_at(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut h = vec![FORM];
    h.extend_from_slice(headers);
    request_body(addr, "POST", "/v1/token", &h, body.as_bytes())
}

fn token_request(d: &Daemon, assertion: &str) -> Resp {
    post_at(d.addr, &[], &form(assertion))
}

fn error_of(r: &Resp) -> String {
    r.json()["error"].as_str().unwrap_or("").to_owned()
}

/// The claims of a JWT (no verification: the boxes do that).
fn claims_of(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    let std_b64 = part.replace('-', "+").replace('_', "/");
    let pad = "=".repeat((4 - std_b64.len() % 4) % 4);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{std_b64}{pad}' | base64 -d"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The token endpoint in the data centre signs each tool's tokens with that tool's own
/// operator-held key; a box that knows only that public key accepts them. The authority serves
/// tokens, not the box API.
#[test]
fn central_authority_signs_with_per_tool_keys() {
    let keys = operator_keys("central-keys");
    let authority = authority(&authority_dir("central", &keys, 1000, "", ""));
    let r = token_request(&authority, &assertion(&fixtures().a, "a", "au-1"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let header = claims_of(&format!("x.{}", token.split('.').next().unwrap()));
    assert_eq!(header["kid"], "a-operator", "signed with tool a's own key");
    authority
        .get("/v1/access", &[])
        .assert_problem(404, "not_found");
    let boxd = box_at("central-box", &keys, AUD);
    assert_eq!(boxd.get_token("/v1/access", &token).status, 200);
}

#[test]
fn same_assertion_at_two_replicas_at_once_gives_one_token() {
    let redis = Redis::start();
    let keys = operator_keys("replay-keys");
    let a = authority(&authority_dir(
        "replay-a",
        &keys,
        60,
        "",
        &redis_store(&redis),
    ));
    let b = authority(&authority_dir(
        "replay-b",
        &keys,
        60,
        "",
        &redis_store(&redis),
    ));
    let f = fixtures();
    for round in 0..10 {
        let body = form(&assertion(&f.a, "a", &format!("race-{round}")));
        let gate = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [a.addr, b.addr]
            .into_iter()
            .map(|addr| {
                let (gate, body) = (gate.clone(), body.clone());
                std::thread::spawn(move || {
                    gate.wait();
                    post_at(addr, &[], &body)
                })
            })
            .collect();
        let answers: Vec<Resp> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let ok = answers.iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, 1, "round {round}: {answers:?}");
        let other = answers.iter().find(|r| r.status != 200).unwrap();
        assert_eq!(other.status, 401, "{other:?}");
        assert_eq!(error_of(other), "invalid_client");
    }
    // One replica gone: the other serves, and still remembers what was used through either.
    drop(a);
    let r = token_request(&b, &assertion(&f.a, "a", "after-kill"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        token_request(&b, &assertion(&f.a, "a", "race-3")).status,
        401
    );
}

#[test]
fn quota_over_two_replicas_is_exact() {
    const N: u32 = 7;
    let redis = Redis::start();
    let keys = operator_keys("quota-keys");
    let a = authority(&authority_dir(
        "quota-a",
        &keys,
        N,
        "",
        &redis_store(&redis),
    ));
    let b = authority(&authority_dir(
        "quota-b",
        &keys,
        N,
        "",
        &redis_store(&redis),
    ));
    let f = fixtures();
    let gate = Arc::new(Barrier::new(20));
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let body = form(&assertion(&f.b, "b", &format!("q-{i}")));
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.wait();
                post_at(addr, &[], &body)
            })
        })
        .collect();
    let answers: Vec<Resp> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let issued = answers.iter().filter(|r| r.status == 200).count() as u32;
    assert_eq!(issued, N, "{answers:?}");
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429, "{r:?} {} {}", a.log_text(), b.log_text());
        assert_eq!(error_of(r), "slow_down");
        assert!(r.header("retry-after").is_some());
    }
    // Other tools have their own quota.
    assert_eq!(token_request(&a, &assertion(&f.a, "a", "q-a")).status, 200);
}

#[test]
fn revocation_at_one_replica_reaches_the_other_within_a_second() {
    let redis = Redis::start();
    let keys = operator_keys("revoke-keys");
    let a = authority(&authority_dir(
        "revoke-a",
        &keys,
        60,
        "",
        &redis_store(&redis),
    ));
    let b = authority(&authority_dir(
        "revoke-b",
        &keys,
        60,
        "",
        &redis_store(&redis),
    ));
    let f = fixtures();
    assert_eq!(token_request(&b, &assertion(&f.a, "a", "rv-0")).status, 200);
    let (code, out, err) = a.ctl(&["revoke", "a"]);
    assert_eq!(code, 0, "{out} {err}");
    let started = Instant::now();
    let mut n = 0;
    let refused = wait_for(Duration::from_secs(1), || {
        n += 1;
        let r = token_request(&b, &assertion(&f.a, "a", &format!("rv-{n}")));
        r.status == 401 && error_of(&r) == "invalid_client"
    });
    assert!(refused, "replica B still issues for a revoked tool");
    eprintln!("revocation A → B: {} ms", started.elapsed().as_millis());
    // Its page's origin is refused too; other tools are untouched.
    let r = post_at(
        b.addr,
        &[("Origin", "https://a.example")],
        &form(&assertion(&f.a, "a", "rv-origin")),
    );
    assert_eq!(r.status, 403);
    assert_eq!(token_request(&b, &assertion(&f.b, "b", "rv-b")).status, 200);
    // Status at B shows it; unrevoke at B lifts it at A.
    let (_, status, _) = b.ctl(&["status"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    let a_state = status["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "a")
        .unwrap();
    assert_eq!(a_state["revoked"], true, "{status}");
    assert_eq!(status["store"]["kind"], "redis");
    assert_eq!(status["store"]["fresh"], true);
    assert!(status["store"]["epoch"].as_u64().unwrap() > 0);
    assert_eq!(b.ctl(&["unrevoke", "a"]).0, 0);
    assert!(wait_for(Duration::from_secs(1), || {
        n += 1;
        token_request(&a, &assertion(&f.a, "a", &format!("rv-{n}"))).status == 200
    }));
}

#[test]
fn redis_gone_is_503_then_tokens_again_without_restart() {
    let mut redis = Redis::start();
    let keys = operator_keys("down-keys");
    let a = authority(&authority_dir(
        "down-a",
        &keys,
        60,
        "",
        &redis_store(&redis),
    ));
    let f = fixtures();
    let used = assertion(&f.a, "a", "down-0");
    assert_eq!(token_request(&a, &used).status, 200);
    // A revocation held only in Redis, to see it come back after Redis loses everything.
    assert_eq!(a.ctl(&["revoke", "c"]).0, 0);
    // A frozen Redis (slow, or packets dropped): 503 once the response timeout (1 s here) is
    // over, never a token, and tokens again as soon as it answers.
    redis.freeze(true);
    let started = Instant::now();
    let r = token_request(&a, &assertion(&f.a, "a", "frozen-1"));
    let waited = started.elapsed();
    redis.freeze(false);
    r.assert_problem(503, "temporarily_unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(
        waited < Duration::from_secs(3),
        "bounded by the response timeout: {waited:?}"
    );
    let mut thawed = 0;
    let back = wait_for(Duration::from_secs(3), || {
        thawed += 1;
        token_request(&a, &assertion(&f.a, "a", &format!("thawed-{thawed}"))).status == 200
    });
    assert!(back, "no token after Redis thawed");
    // An assertion used before Redis restarts has an iat before the new epoch (seconds).
    std::thread::sleep(Duration::from_millis(1100));
    redis.stop();
    for i in 0..5 {
        let started = Instant::now();
        let r = token_request(&a, &assertion(&f.a, "a", &format!("down-{i}-x")));
        r.assert_problem(503, "temporarily_unavailable");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{r:?}");
        assert!(r.json().get("access_token").is_none());
        assert!(started.elapsed() < Duration::from_secs(2), "fails fast");
    }
    redis.spawn();
    let started = Instant::now();
    let mut n = 0;
    let back = wait_for(Duration::from_secs(5), || {
        n += 1;
        token_request(&a, &assertion(&f.a, "a", &format!("up-{n}"))).status == 200
    });
    assert!(back, "no token after Redis came back: {}", a.log_text());
    eprintln!(
        "tokens again {} ms after redis-server restarted",
        started.elapsed().as_millis()
    );
    // The empty Redis forgot which assertions were used: one made before it came back is refused.
    let r = token_request(&a, &used);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(error_of(&r), "invalid_client");
    // The replica re-seeded the revocation it knew.
    assert_eq!(
        redis.command(&["SISMEMBER", "t:revoked", "c"]).as_deref(),
        Some(":1")
    );
    let r = post_at(
        a.addr,
        &[],
        &form(&{
            let t = now();
            f.c.sign(&json!({"iss": "c", "sub": "c", "aud": format!("{AUTHORITY}/v1/token"), "iat": t, "exp": t + 60, "jti": "c-1"}))
        }),
    );
    assert_eq!(r.status, 401, "{r:?}");
}

/// An assertion dated ahead of the authority's clock would be taken, after Redis restarted
/// empty, for one made since, and replayed: beyond the leeway it is refused, naming `iat` and the
/// client's clock; within it, clock skew is tolerated.
#[test]
fn an_assertion_dated_beyond_the_leeway_is_refused() {
    let redis = Redis::start();
    let keys = operator_keys("future-keys");
    let a = authority(&authority_dir(
        "future",
        &keys,
        60,
        "",
        &redis_store(&redis),
    ));
    let f = fixtures();
    let t = now();
    let ahead = |iat: u64, jti: &str| {
        f.a.sign(&json!({"iss": "a", "sub": "a", "aud": format!("{AUTHORITY}/v1/token"), "iat": iat, "exp": t + 120, "jti": jti}))
    };
    assert_refused_as_from_the_future(&token_request(&a, &ahead(t + 100, "future-1")));
    let r = token_request(&a, &ahead(t + 20, "future-2"));
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn locator_maps_addresses_to_boxes() {
    let redis = Redis::start();
    let keys = operator_keys("locate-keys");
    let map_dir = temp_dir("locate-map");
    let map = map_dir.join("boxes.json");
    std::fs::write(
        &map,
        json!({"127.0.0.1": "b1.boxes.test", "203.0.113.7": "https://b2.boxes.test:8443", "2001:db8:5:6::/64": "b6.boxes.test"}).to_string(),
    )
    .unwrap();
    let file = authority(&authority_dir(
        "locate-file",
        &keys,
        60,
        "trusted_proxies = [\"127.0.0.1\"]",
        &format!("[authority.locator]\nfile = \"{}\"\n", map.display()),
    ));
    let locate = |d: &Daemon, headers: &[(&str, &str)]| d.get("/v1/locate", headers);
    // The peer is a trusted proxy without a header: it maps itself here.
    let r = locate(&file, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"box_url": "https://b1.boxes.test"}));
    let r = locate(&file, &[("X-Forwarded-For", "198.51.100.1, 203.0.113.7")]);
    assert_eq!(r.json()["box_url"], "https://b2.boxes.test:8443");
    let r = locate(&file, &[("X-Forwarded-For", "2001:db8:5:6:a:b:c:d")]);
    assert_eq!(r.json()["box_url"], "https://b6.boxes.test");
    locate(&file, &[("X-Forwarded-For", "198.51.100.9")]).assert_problem(404, "box_not_found");
    // CORS like the token endpoint: a registered tool's page may ask, others may not.
    let r = locate(&file, &[("Origin", "https://a.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    locate(&file, &[("Origin", "https://evil.example")]).assert_problem(403, "origin_not_allowed");
    // The file is re-read when it changes.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&map, json!({"198.51.100.9": "b9.boxes.test"}).to_string()).unwrap();
    assert!(wait_for(Duration::from_secs(3), || {
        locate(&file, &[("X-Forwarded-For", "198.51.100.9")]).status == 200
    }));
    locate(&file, &[]).assert_problem(404, "box_not_found");

    // Redis keys, and an untrusted peer's header is ignored.
    let in_redis = authority(&authority_dir(
        "locate-redis",
        &keys,
        60,
        "",
        &format!("{}[authority.locator]\nredis = true\n", redis_store(&redis)),
    ));
    locate(&in_redis, &[]).assert_problem(404, "box_not_found");
    assert_eq!(
        redis
            .command(&["SET", "t:locate:127.0.0.1", "b7.boxes.test"])
            .as_deref(),
        Some("+OK")
    );
    let r = locate(&in_redis, &[("X-Forwarded-For", "203.0.113.7")]);
    assert_eq!(r.json()["box_url"], "https://b7.boxes.test");
    // And a token response carries the caller's box.
    let r = token_request(&in_redis, &assertion(&fixtures().a, "a", "loc-1"));
    assert_eq!(r.json()["box_url"], "https://b7.boxes.test");

    // A command: exit 0 with a name, exit 1 for "not mapped", too slow is a 503 (killed).
    let script = map_dir.join("locate.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in\n  127.0.0.1) echo b8.boxes.test ;;\n  198.51.100.2) sleep 5 ;;\n  *) exit 1 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let by_command = authority(&authority_dir(
        "locate-command",
        &keys,
        60,
        "trusted_proxies = [\"127.0.0.1\"]",
        &format!(
            "[authority.locator]\ncommand = \"{}\"\ncommand_timeout_ms = 300\n",
            script.display()
        ),
    ));
    assert_eq!(
        locate(&by_command, &[]).json()["box_url"],
        "https://b8.boxes.test"
    );
    locate(&by_command, &[("X-Forwarded-For", "198.51.100.1")])
        .assert_problem(404, "box_not_found");
    let started = Instant::now();
    let r = locate(&by_command, &[("X-Forwarded-For", "198.51.100.2")]);
    r.assert_problem(503, "temporarily_unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A box whose `[auth] audience` is its own URL and which trusts the operator's key for tool a.
fn box_at(name: &str, keys: &Path, audience: &str) -> Daemon {
    let dir = temp_dir(name);
    let a_jwk = format!("{}/a.jwk", fixtures().dir.display());
    let text = config(&dir, "", "")
        .replacen(
            &format!("keys = [\"{a_jwk}\"]"),
            &format!(
                "keys = [\"{a_jwk}\", \"{}/a-operator.jwk\"]",
                keys.display()
            ),
            1,
        )
        .replace(
            &format!("audience = \"{AUD}\""),
            &format!("audience = \"{audience}\""),
        )
        .replace(
            &format!("issuers = [\"{ISS}\"]"),
            &format!("issuers = [\"{AUTHORITY}\"]"),
        );
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    Daemon::start_in(dir, &[])
}

#[test]
fn per_box_audience_binds_a_token_to_its_box() {
    let keys = operator_keys("aud-keys");
    let map_dir = temp_dir("aud-map");
    let map = map_dir.join("boxes.json");
    std::fs::write(
        &map,
        json!({"127.0.0.1": "box-a.test", "203.0.113.8": "box-b.test"}).to_string(),
    )
    .unwrap();
    let auth = authority(&authority_dir(
        "aud-authority",
        &keys,
        60,
        "per_box_audience = true\ntrusted_proxies = [\"127.0.0.0/8\"]",
        &format!("[authority.locator]\nfile = \"{}\"\n", map.display()),
    ));
    let box_a = box_at("aud-box-a", &keys, "https://box-a.test");
    let box_b = box_at("aud-box-b", &keys, "https://box-b.test");
    let f = fixtures();
    let r = token_request(&auth, &assertion(&f.a, "a", "aud-1"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["box_url"], "https://box-a.test");
    let for_a = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&for_a)["aud"], "https://box-a.test");
    assert_eq!(box_a.get_token("/v1/access", &for_a).status, 200);
    box_b
        .get_token("/v1/access", &for_a)
        .assert_problem(401, "invalid_token");
    // From the line of box B (through the trusted proxy): the other way round.
    let r = post_at(
        auth.addr,
        &[("X-Forwarded-For", "203.0.113.8")],
        &form(&assertion(&f.a, "a", "aud-2")),
    );
    let for_b = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(box_b.get_token("/v1/access", &for_b).status, 200);
    box_a
        .get_token("/v1/access", &for_b)
        .assert_problem(401, "invalid_token");
    // From a line the operator does not know: no token for "some box".
    let r = post_at(
        auth.addr,
        &[("X-Forwarded-For", "198.51.100.1")],
        &form(&assertion(&f.a, "a", "aud-3")),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(error_of(&r), "invalid_target");
}

/// `GET` over plain HTTP (the metrics listener is internal).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = parse_response(&raw);
    let ct = r.header("content-type").unwrap_or("").to_owned();
    (r.status, ct, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn metrics_count_tokens_refusals_store_errors_and_latency() {
    let mut redis = Redis::start();
    let keys = operator_keys("metrics-keys");
    let port = free_port();
    let d = authority(&authority_dir(
        "metrics",
        &keys,
        1,
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
        &redis_store(&redis),
    ));
    let f = fixtures();
    assert_eq!(token_request(&d, &assertion(&f.a, "a", "m-1")).status, 200);
    assert_eq!(token_request(&d, &assertion(&f.a, "a", "m-1")).status, 401);
    assert_eq!(token_request(&d, &assertion(&f.b, "b", "m-2")).status, 200);
    assert_eq!(token_request(&d, &assertion(&f.b, "b", "m-3")).status, 429);
    // A revoked tool authenticated: it is named, with its own reason (docs/authorization.md).
    assert_eq!(d.ctl(&["revoke", "c"]).0, 0);
    let c = {
        let t = now();
        f.c.sign(&json!({"iss": "c", "sub": "c", "aud": format!("{AUTHORITY}/v1/token"), "iat": t, "exp": t + 60, "jti": "m-c"}))
    };
    assert_eq!(token_request(&d, &c).status, 401);
    // A frozen Redis does not answer within the response timeout: kind "timeout".
    redis.freeze(true);
    let r = token_request(&d, &assertion(&f.a, "a", "m-5"));
    redis.freeze(false);
    assert_eq!(r.status, 503, "{r:?}");
    redis.stop();
    assert_eq!(token_request(&d, &assertion(&f.a, "a", "m-4")).status, 503);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, ct, text) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    for want in [
        "boxapi_authority_tokens_issued_total{tool=\"a\"} 1",
        "boxapi_authority_tokens_issued_total{tool=\"b\"} 1",
        "boxapi_authority_tokens_refused_total{tool=\"a\",reason=\"replayed_assertion\"} 1",
        "boxapi_authority_tokens_refused_total{tool=\"b\",reason=\"quota\"} 1",
        "boxapi_authority_tokens_refused_total{tool=\"c\",reason=\"revoked\"} 1",
        "boxapi_authority_tokens_refused_total{tool=\"a\",reason=\"store_unavailable\"} ",
        "boxapi_authority_store_errors_total{op=\"admit\",kind=\"timeout\"} 1",
        "boxapi_authority_request_duration_seconds_count{endpoint=\"token\"} 7",
        "# EOF",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Every client here authenticated: none of its refusals is anonymous.
    assert!(
        !text.contains("tool=\"-\",reason=\"invalid_client\""),
        "{text}"
    );
    assert_eq!(http_get(addr, "/v1/token").0, 404);
    // The API listener does not serve metrics.
    d.get("/metrics", &[]).assert_problem(404, "not_found");
}

/// Signs a registry (version, tool "reg" revoked or not) with the root key in `dir` into `out`.
fn sign_registry(dir: &Path, reg: &Key, version: u64, revoked: bool, out: &Path) {
    let payload = json!({"version": version, "tools": [{"id": "reg", "name": "Registry tool",
        "origins": ["https://reg.example"], "scopes": ["access"], "keys": [reg.jwk()], "revoked": revoked}]});
    let input = dir.join(format!("registry-v{version}.json"));
    std::fs::write(&input, payload.to_string()).unwrap();
    let status = daemon_command()
        .args(["registry", "sign", "--key"])
        .arg(dir.join("root.private.jwk"))
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_new_registry_at_one_replica_revokes_at_the_other_within_a_second() {
    let redis = Redis::start();
    let keys = operator_keys("registry-keys");
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    keygen(&keys, "EdDSA", "root");
    let st = Command::new(root.join("certs/make-tool-key.sh"))
        .arg(&keys)
        .args(["reg", "ES256"])
        .status()
        .unwrap();
    assert!(st.success());
    let reg = Key {
        kid: "reg-key".into(),
        alg: jsonwebtoken::Algorithm::ES256,
        pem: std::fs::read(keys.join("reg.pem")).unwrap(),
        spki: std::fs::read(keys.join("reg.pub.der")).unwrap(),
    };
    let (file_a, file_b) = (keys.join("a-registry.jws"), keys.join("b-registry.jws"));
    sign_registry(&keys, &reg, 1, false, &file_a);
    sign_registry(&keys, &reg, 1, false, &file_b);
    let registry = |file: &Path| {
        format!(
            "{}[registry]\nfile = \"{}\"\nroot_key = \"{}/root.jwk\"\n",
            redis_store(&redis),
            file.display(),
            keys.display()
        )
    };
    let a = authority(&authority_dir(
        "registry-a",
        &keys,
        60,
        "",
        &registry(&file_a),
    ));
    let b = authority(&authority_dir(
        "registry-b",
        &keys,
        60,
        "",
        &registry(&file_b),
    ));
    let mut n = 0;
    let mut reg_token = |d: &Daemon| {
        n += 1;
        token_request(d, &assertion(&reg, "reg", &format!("reg-{n}")))
    };
    assert_eq!(reg_token(&b).status, 200);
    // The operator's new registry reaches replica A first; B has not reloaded.
    sign_registry(&keys, &reg, 2, true, &file_a);
    let (code, out, err) = a.ctl(&["reload"]);
    assert_eq!(code, 0, "{out} {err}");
    let started = Instant::now();
    let refused = wait_for(Duration::from_secs(1), || {
        let r = reg_token(&b);
        r.status == 401 && error_of(&r) == "invalid_client"
    });
    assert!(
        refused,
        "replica B still issues for a tool the new registry revokes"
    );
    eprintln!(
        "registry revocation A → B: {} ms",
        started.elapsed().as_millis()
    );
    // Other tools are untouched.
    assert_eq!(
        token_request(&b, &assertion(&fixtures().a, "a", "reg-a")).status,
        200
    );
}
