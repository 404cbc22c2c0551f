//! The API over real TLS: the card, every token rule, every CORS rule, and every row of the
//! contract's error table (the control-driven rows are in control.rs).
mod common;
use common::*;
use serde_json::json;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn access_card_has_every_member() {
    let d = Daemon::start("card", "", "");
    let r = d.get_token("/v1/access", &fixtures().a.token("a", "access"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "no Origin, no CORS header"
    );
    let c = r.json();
    assert_eq!(c["api_version"], "1.0");
    assert!(c["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        c["box"],
        json!({"model": "Test Box", "firmware_version": "9.9"})
    );
    assert_eq!(
        c["subscription"],
        json!({"down_kbps": 2000000, "up_kbps": 700000})
    );
    assert_eq!(
        c["access"],
        json!({"technology": "ftth", "down_kbps": 2488000, "up_kbps": 1244000})
    );
    assert!(c["wifi"].get("enabled").is_some() && c["wifi"]["radios"].is_array());
    for k in ["connection", "interface", "link_kbps", "wifi"] {
        assert!(c["client"].get(k).is_some(), "client.{k} missing: {c}");
    }
    assert_eq!(c["client"]["connection"], "unknown", "loopback peer");
    assert!(c["counters"]["monotonic_us"].as_u64().unwrap() > 0);
    // wan_interface = "lo": the counters are lo's, read fresh from sysfs.
    let rx: u64 = std::fs::read_to_string("/sys/class/net/lo/statistics/rx_bytes")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let wan_rx = c["counters"]["wan"]["rx_bytes"].as_u64().unwrap();
    assert!(wan_rx > 0 && wan_rx <= rx + 1_000_000, "{wan_rx} vs {rx}");
    // The log is read by another thread: give it a moment.
    let logged = wait_for(std::time::Duration::from_secs(2), || {
        let log = d.log_text();
        log.contains(r#""event":"access""#) && log.contains(r#""tool":"a""#)
    });
    let log = d.log_text();
    assert!(logged, "{log}");
    assert!(!log.contains("eyJ"), "a token leaked into the log");
}

#[test]
fn counters_with_an_eddsa_token_and_fresh_reads() {
    let d = Daemon::start("counters", "", "");
    let t = fixtures().b.token("b", "counters");
    let first = d.get_token("/v1/counters", &t).json();
    let second = d.get_token("/v1/counters", &t).json();
    assert!(second["monotonic_us"].as_u64() > first["monotonic_us"].as_u64());
    // Each request crosses lo, so fresh reads of lo's counters grow.
    assert!(second["wan"]["rx_bytes"].as_u64() > first["wan"]["rx_bytes"].as_u64());
    assert!(first.get("client").is_some() && first["timestamp"].is_string());
}

#[test]
fn head_answers_like_get_without_body() {
    let d = Daemon::start("head", "", "");
    let t = fixtures().a.token("a", "access counters");
    let get = d.get_token("/v1/counters", &t);
    let auth = bearer(&t);
    let head = request(
        d.addr,
        "localhost",
        "HEAD",
        "/v1/counters",
        &[("Authorization", &auth)],
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), get.header("content-type"));
    // GET's Content-Length is hyper's, from the body's size; HEAD's is set from the same body.
    let get_len: usize = get.header("content-length").unwrap().parse().unwrap();
    assert_eq!(get_len, get.body.len());
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(
        (len as i64 - get.body.len() as i64).abs() <= 4,
        "{len} vs {}",
        get.body.len()
    );
    // Problems too: HEAD's status, type and length are GET's, without the body.
    for path in ["/v1/access", "/nothing"] {
        let get = request(d.addr, "localhost", "GET", path, &[]);
        let head = request(d.addr, "localhost", "HEAD", path, &[]);
        assert!(
            get.status == 401 || get.status == 404,
            "{path}: {}",
            get.status
        );
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.body.is_empty() && !get.body.is_empty(), "{path}");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        let length = get.body.len().to_string();
        assert_eq!(
            get.header("content-length"),
            Some(length.as_str()),
            "{path}"
        );
        assert_eq!(
            head.header("content-length"),
            Some(length.as_str()),
            "{path}"
        );
    }
}

#[test]
fn missing_token() {
    let d = Daemon::start("missing", "", "");
    let r = d.get("/v1/access", &[]);
    r.assert_problem(401, "missing_token");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="boxapi""#)
    );
    let basic = d.get("/v1/access", &[("Authorization", "Basic YTpi")]);
    basic.assert_problem(401, "missing_token");
}

/// A token with an arbitrary header and signature, as an attacker would write it.
fn forged(header: serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(sig)
    )
}

#[test]
fn every_token_rule() {
    let d = Daemon::start("tokens", "", "");
    let f = fixtures();
    let t = now();
    let with = |patch: serde_json::Value| {
        let mut c = claims("a", "access");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    // The HS256 attack: the public key (as the server might hold it) used as an HMAC secret.
    let hs = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("a-key".into());
        let secret = f.a.jwk().to_string();
        jsonwebtoken::encode(
            &h,
            &claims("a", "access"),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            forged(
                json!({"alg": "none", "kid": "a-key"}),
                &claims("a", "access"),
                b"",
            ),
        ),
        ("HS256 with the public key", hs),
        (
            "expired",
            f.a.sign(&with(json!({"iat": t - 1000, "exp": t - 100}))),
        ),
        (
            "nbf in the future",
            f.a.sign(&with(json!({"nbf": t + 300}))),
        ),
        (
            "lifetime over 15 minutes",
            f.a.sign(&with(json!({"exp": t + 901}))),
        ),
        (
            "wrong aud",
            f.a.sign(&with(json!({"aud": "https://other.box"}))),
        ),
        (
            "aud array without us",
            f.a.sign(&with(json!({"aud": ["https://x", "https://y"]}))),
        ),
        (
            "wrong iss",
            f.a.sign(&with(json!({"iss": "https://evil.test"}))),
        ),
        ("no exp", f.a.sign(&with(json!({"exp": null})))),
        ("no iat", f.a.sign(&with(json!({"iat": null})))),
        ("unknown tool", f.a.sign(&with(json!({"client_id": "zz"})))),
        ("tool a's key for tool b", f.a.token("b", "access")),
        ("revoked tool (config)", f.issuer.token("gone", "access")),
        (
            "oversized",
            f.a.sign(&with(json!({"pad": "x".repeat(5000)}))),
        ),
        ("garbage", "not.a.token".into()),
        ("two parts", "abc.def".into()),
    ];
    let mut unknown_kid = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    unknown_kid.kid = Some("nobody".into());
    let unknown =
        jsonwebtoken::encode(&unknown_kid, &claims("a", "access"), &f.a.encoding()).unwrap();
    let mut no_kid = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    no_kid.kid = None;
    let nokid = jsonwebtoken::encode(&no_kid, &claims("a", "access"), &f.a.encoding()).unwrap();
    let mut bad_sig = f.a.token("a", "access");
    let last = bad_sig.pop().unwrap();
    bad_sig.push(if last == 'A' { 'B' } else { 'A' });
    let mut all = cases;
    all.push(("unknown kid", unknown));
    all.push(("no kid", nokid));
    all.push(("bad signature", bad_sig));
    for (name, token) in &all {
        let r = d.get_token("/v1/access", token);
        assert_eq!(r.status, 401, "{name}: {r:?}");
        r.assert_problem(401, "invalid_token");
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="boxapi", error="invalid_token""#),
            "{name}"
        );
        // Contract §6 rev. 3: a reason only where the tool itself is refused.
        let reason = if name.starts_with("revoked") {
            serde_json::json!("tool_revoked")
        } else {
            serde_json::Value::Null
        };
        assert_eq!(r.json()["reason"], reason, "{name}");
        let detail = r.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            !detail.contains(&token[..token.len().min(20)]) || token.len() < 20,
            "{name}: detail echoes the token"
        );
    }
    // Within the leeway (30 s) an expired token is still accepted; nbf likewise.
    let late = f.a.sign(&with(json!({"iat": t - 900, "exp": t - 10})));
    assert_eq!(d.get_token("/v1/access", &late).status, 200);
    let aud_list = f.a.sign(&with(json!({"aud": ["https://x", AUD]})));
    assert_eq!(d.get_token("/v1/access", &aud_list).status, 200);
}

#[test]
fn issuer_key_serves_any_registered_tool() {
    let d = Daemon::start("issuer", "", "");
    let f = fixtures();
    for tool in ["a", "b"] {
        let r = d.get_token("/v1/access", &f.issuer.token(tool, "access"));
        assert_eq!(r.status, 200, "{tool}: {r:?}");
    }
    assert_eq!(
        d.get_token("/v1/counters", &f.issuer.token("c", "counters"))
            .status,
        200
    );
}

#[test]
fn scopes_are_capped_by_the_registration() {
    let d = Daemon::start("scope", "", "");
    let f = fixtures();
    let r = d.get_token("/v1/access", &f.a.token("a", "counters"));
    r.assert_problem(403, "insufficient_scope");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="boxapi", error="insufficient_scope", scope="access""#)
    );
    // Tool c is registered for counters only: its token asking for access gets no more.
    d.get_token("/v1/access", &f.c.token("c", "access counters"))
        .assert_problem(403, "insufficient_scope");
    assert_eq!(
        d.get_token("/v1/counters", &f.c.token("c", "access counters"))
            .status,
        200
    );
}

#[test]
fn cors_echoes_exactly_one_allowed_origin() {
    let d = Daemon::start("cors", "", "");
    let f = fixtures();
    let t = bearer(&f.a.token("a", "access counters"));
    for origin in ["https://a.example", "https://a.example:8443"] {
        let r = d.get("/v1/access", &[("Origin", origin), ("Authorization", &t)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("vary"), Some("Origin"));
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("WWW-Authenticate, Retry-After")
        );
    }
    // Errors for an allowed origin carry the header too, so the page can read them.
    let r = d.get("/v1/access", &[("Origin", "https://a.example")]);
    r.assert_problem(401, "missing_token");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    let r = d.get("/nope", &[("Origin", "https://a.example")]);
    r.assert_problem(404, "not_found");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );

    for near in [
        "https://a.example.evil.com",
        "https://evil-a.example",
        "https://a.example/",
        "https://A.example",
        "http://a.example",
        "https://a.example:443",
        "https://a.example:8444",
        "https://sub.a.example",
        "null",
        "*",
        "https://gone.example",
    ] {
        let r = d.get("/v1/access", &[("Origin", near), ("Authorization", &t)]);
        r.assert_problem(403, "origin_not_allowed");
        assert_eq!(r.header("access-control-allow-origin"), None, "{near}");
    }
    // Tool A's page cannot use tool B's token, even though both are valid.
    let tb = bearer(&f.b.token("b", "access"));
    let r = d.get(
        "/v1/access",
        &[("Origin", "https://a.example"), ("Authorization", &tb)],
    );
    r.assert_problem(403, "origin_not_allowed");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    let r = d.get(
        "/v1/access",
        &[("Origin", "https://b.example"), ("Authorization", &tb)],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn preflights() {
    let d = Daemon::start("preflight", "", "");
    let pf = |origin: &str, method: &str, pna: bool| {
        let mut h = vec![
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
            ("Access-Control-Request-Headers", "authorization"),
        ];
        if pna {
            h.push(("Access-Control-Request-Private-Network", "true"));
        }
        request(d.addr, "localhost", "OPTIONS", "/v1/access", &h)
    };
    let r = pf("https://a.example", "GET", false);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, HEAD"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("Authorization")
    );
    assert!(
        r.header("access-control-max-age")
            .unwrap()
            .parse::<u32>()
            .unwrap()
            > 0
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(r.header("access-control-allow-private-network"), None);

    let r = pf("https://b.example", "HEAD", true);
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-private-network"),
        Some("true")
    );

    for (origin, method) in [
        ("https://evil.example", "GET"),
        ("https://a.example", "POST"),
        ("null", "GET"),
    ] {
        let r = pf(origin, method, true);
        assert_eq!(r.status, 403, "{origin} {method}");
        for h in [
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-private-network",
        ] {
            assert_eq!(r.header(h), None, "{origin} {method}: {h}");
        }
    }
}

#[test]
fn not_found_method_not_allowed_and_misdirected() {
    let d = Daemon::start("routes", "", "");
    d.get("/v1/acces", &[]).assert_problem(404, "not_found");
    d.get("/", &[]).assert_problem(404, "not_found");
    let r = request(
        d.addr,
        "localhost",
        "POST",
        "/v1/access",
        &[("Content-Length", "0")],
    );
    r.assert_problem(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    let r = request(d.addr, "localhost", "DELETE", "/v1/counters", &[]);
    r.assert_problem(405, "method_not_allowed");

    let t = bearer(&fixtures().a.token("a", "access"));
    // DNS rebinding: a page of evil.example whose name now points at the box.
    let r = request_with(
        d.addr,
        "localhost",
        "evil.example",
        "GET",
        "/v1/access",
        &[("Authorization", &t)],
    );
    r.assert_problem(421, "misdirected_request");
    // The SNI is checked too (box.test is in the certificate but not in server_names).
    let r = request_with(
        d.addr,
        "box.test",
        "localhost",
        "GET",
        "/v1/access",
        &[("Authorization", &t)],
    );
    r.assert_problem(421, "misdirected_request");
    // Port ignored; the listen IP always accepted; case-insensitive names.
    let host = format!("127.0.0.1:{}", d.addr.port());
    assert_eq!(
        request_with(
            d.addr,
            "localhost",
            &host,
            "GET",
            "/v1/access",
            &[("Authorization", &t)]
        )
        .status,
        200
    );
    assert_eq!(
        request_with(
            d.addr,
            "localhost",
            "LocalHost:1",
            "GET",
            "/v1/access",
            &[("Authorization", &t)]
        )
        .status,
        200
    );
    assert_eq!(
        request_with(
            d.addr,
            "127.0.0.1",
            "127.0.0.1",
            "GET",
            "/v1/access",
            &[("Authorization", &t)]
        )
        .status,
        200
    );
}

#[test]
fn rate_limited_per_client() {
    let d = Daemon::start(
        "rate",
        "rate_limit_per_second = 1\nrate_limit_burst = 3",
        "",
    );
    let codes: Vec<u16> = (0..6).map(|_| d.get("/v1/access", &[]).status).collect();
    assert_eq!(&codes[..3], &[401, 401, 401], "{codes:?}");
    let r = d.get("/v1/access", &[("Origin", "https://a.example")]);
    r.assert_problem(429, "rate_limited");
    assert!(r.header("retry-after").unwrap().parse::<u32>().unwrap() >= 1);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
}

/// libfaketime (Debian package faketime), preloaded directly: the `faketime` wrapper forks, and
/// killing it would leave the daemon running.
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .find_map(|d| {
            let p = d.path().join("faketime/libfaketime.so.1");
            p.exists().then(|| p.display().to_string())
        });
    found.expect("libfaketime is missing (make test installs it: apt-get install faketime)")
}

#[test]
fn clock_before_build_date_is_unsynchronized() {
    let dir = temp_dir("clock");
    std::fs::write(dir.join("boxapi.toml"), config(&dir, "", "")).unwrap();
    let token = fixtures().a.token("a", "access");
    let preload = format!("LD_PRELOAD={}", libfaketime());
    let d = Daemon::start_in(dir, &["env", &preload, "FAKETIME=@2001-01-01 00:00:00"]);
    let r = d.get_token("/v1/access", &token);
    r.assert_problem(503, "clock_unsynchronized");
    assert!(r.header("retry-after").is_some());
}

#[test]
fn oversized_head_gets_431_or_close() {
    let d = Daemon::start("bighead", "", "");
    let big = "x".repeat(20 * 1024);
    let mut s = connect(d.addr, "localhost", client_config(rustls::DEFAULT_VERSIONS));
    use std::io::{Read, Write};
    let req = format!("GET /v1/access HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    if !raw.is_empty() {
        assert_eq!(parse_response(&raw).status, 431);
    }
    // The daemon is still fine.
    assert_eq!(d.get("/v1/access", &[]).status, 401);
}
