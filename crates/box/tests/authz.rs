//! The on-box authorization server: discovery, client_credentials with private_key_jwt and
//! client_secret_basic, single-use assertions, scopes, quota, CORS, revocation. Assertions are
//! made with the independent jsonwebtoken crate.
mod common;
use common::*;
use serde_json::{json, Value};
use std::process::Command;

const ISSUER: &str = "https://box.test";
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{s}' | sha256sum"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn start(name: &str, per_hour: u32) -> Daemon {
    start_with(name, per_hour, |text| text)
}

/// A box with the on-box token endpoint; `tweak` edits the generated configuration text.
fn start_with(name: &str, per_hour: u32, tweak: impl Fn(String) -> String) -> Daemon {
    let dir = temp_dir(name);
    keygen(&dir, "EdDSA", "box-signer");
    // Every tool registers the SHA-256 of the secret "s3cret" (computed by sha256sum).
    let secret = sha256_hex("s3cret");
    let text = config(&dir, "", "")
        .replace("keys = [\"", &format!("client_secret_sha256 = \"{secret}\"\nkeys = [\""))
        .replace(
            "[metrics]",
            &format!(
                "[token_endpoint]\nenabled = true\nissuer = \"{ISSUER}\"\nsigning_key = \"box-signer.private.jwk\"\ntokens_per_hour = {per_hour}\n\n[metrics]"
            ),
        );
    std::fs::write(dir.join("boxapi.toml"), tweak(text)).unwrap();
    Daemon::start_in(dir, &[])
}

fn assertion(key: &Key, tool: &str, aud: &str, jti: &str) -> String {
    let t = now();
    key.sign(&json!({"iss": tool, "sub": tool, "aud": aud, "iat": t, "exp": t + 60, "jti": jti}))
}

fn form(assertion: &str, extra: &str) -> String {
    format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}{extra}"
    )
}

fn post(d: &Daemon, headers: &[(&str, &str)], body: &str) -> Resp {
    request_body(d.addr, "POST", "/v1/token", headers, body.as_bytes())
}

fn oauth_error(r: &Resp, status: u16, error: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(
        r.json()["error"],
        error,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn discovery_says_where_tokens_come_from() {
    let d = start("disco", 60);
    let r = d.get("/.well-known/oauth-authorization-server", &[]);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["issuer"], ISSUER);
    assert_eq!(v["token_endpoint"], format!("{ISSUER}/v1/token"));
    assert_eq!(v["boxapi_mode"], "box");
    assert!(v["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("private_key_jwt")));
    // Without the on-box server: the central one.
    let central = Daemon::start("disco-central", "", "");
    let v = central
        .get("/.well-known/oauth-authorization-server", &[])
        .json();
    assert_eq!(v["boxapi_mode"], "central");
    assert_eq!(v["issuer"], ISS);
    assert_eq!(central.get("/v1/token", &[]).status, 404);
}

#[test]
fn private_key_jwt_grant_and_replay() {
    let d = start("pkjwt", 60);
    let f = fixtures();
    let a = assertion(&f.a, "a", &format!("{ISSUER}/v1/token"), "j-1");
    let r = post(&d, &[FORM], &form(&a, "&scope=access"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900);
    assert_eq!(v["scope"], "access");
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(d.get_token("/v1/access", token).status, 200);
    d.get_token("/v1/counters", token)
        .assert_problem(403, "insufficient_scope");
    // The same assertion again: refused.
    oauth_error(&post(&d, &[FORM], &form(&a, "")), 401, "invalid_client");
    // Audience may also be the issuer itself (RFC 7523).
    let a2 = assertion(&f.a, "a", ISSUER, "j-2");
    assert_eq!(post(&d, &[FORM], &form(&a2, "")).status, 200);
    // Wrong audience, a tool's key speaking for another tool, an expired assertion.
    oauth_error(
        &post(
            &d,
            &[FORM],
            &form(&assertion(&f.a, "a", "https://other", "j-3"), ""),
        ),
        401,
        "invalid_client",
    );
    oauth_error(
        &post(&d, &[FORM], &form(&assertion(&f.a, "b", ISSUER, "j-4"), "")),
        401,
        "invalid_client",
    );
    let t = now();
    let old =
        f.a.sign(&json!({"iss": "a", "sub": "a", "aud": ISSUER, "exp": t - 100, "jti": "j-5"}));
    oauth_error(&post(&d, &[FORM], &form(&old, "")), 401, "invalid_client");
    let long =
        f.a.sign(&json!({"iss": "a", "sub": "a", "aud": ISSUER, "exp": t + 3600, "jti": "j-6"}));
    oauth_error(&post(&d, &[FORM], &form(&long, "")), 401, "invalid_client");
}

/// Single use holds across a restart: the box's memory of used assertions begins at its start,
/// and an assertion made before then may have been used with the previous process.
#[test]
fn an_assertion_used_before_a_restart_is_refused_after_it() {
    let d = start("restart", 60);
    let f = fixtures();
    let a = assertion(&f.a, "a", ISSUER, "r-1");
    let r = post(&d, &[FORM], &form(&a, ""));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // `iat` counts whole seconds: the new process starts in a later second than the assertion.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let d = Daemon::start_in(d.stop(), &[]);
    oauth_error(&post(&d, &[FORM], &form(&a, "")), 401, "invalid_client");
    // A new assertion is welcome.
    let b = assertion(&f.a, "a", ISSUER, "r-2");
    assert_eq!(post(&d, &[FORM], &form(&b, "")).status, 200);
}

/// An assertion dated ahead of the box's clock would be taken, after a restart, for one made
/// since, and replayed: beyond the leeway (30 s) it is refused, with a detail naming `iat` and
/// the client's clock; within it, clock skew is tolerated.
#[test]
fn an_assertion_dated_beyond_the_leeway_is_refused() {
    let d = start("future", 60);
    let f = fixtures();
    let t = now();
    let ahead = |iat: u64, jti: &str| {
        f.a.sign(
            &json!({"iss": "a", "sub": "a", "aud": ISSUER, "iat": iat, "exp": t + 120, "jti": jti}),
        )
    };
    assert_refused_as_from_the_future(&post(&d, &[FORM], &form(&ahead(t + 100, "f-1"), "")));
    let r = post(&d, &[FORM], &form(&ahead(t + 20, "f-2"), ""));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn client_secret_basic() {
    let d = start("basic", 60);
    let good = format!("Basic {}", b64std("a:s3cret"));
    let r = post(
        &d,
        &[FORM, ("Authorization", &good)],
        "grant_type=client_credentials",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["scope"], "access counters");
    let bad = format!("Basic {}", b64std("a:wrong"));
    let r = post(
        &d,
        &[FORM, ("Authorization", &bad)],
        "grant_type=client_credentials",
    );
    oauth_error(&r, 401, "invalid_client");
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    // An unknown client id with a known secret.
    let nobody = format!("Basic {}", b64std("zz:s3cret"));
    oauth_error(
        &post(
            &d,
            &[FORM, ("Authorization", &nobody)],
            "grant_type=client_credentials",
        ),
        401,
        "invalid_client",
    );
}

fn b64std(s: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{s}' | base64 -w0"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn request_errors() {
    let d = start("errors", 60);
    let f = fixtures();
    let a = |j: &str| assertion(&f.a, "a", ISSUER, j);
    oauth_error(
        &post(&d, &[FORM], &form(&a("e1"), "&scope=admin")),
        400,
        "invalid_scope",
    );
    let c = assertion(&f.c, "c", ISSUER, "e2");
    oauth_error(
        &post(&d, &[FORM], &form(&c, "&scope=access")),
        400,
        "invalid_scope",
    );
    let body = form(&a("e3"), "").replace("client_credentials", "password");
    oauth_error(&post(&d, &[FORM], &body), 400, "unsupported_grant_type");
    oauth_error(
        &post(&d, &[FORM], "client_assertion=x"),
        400,
        "invalid_request",
    );
    oauth_error(
        &post(&d, &[("Content-Type", "application/json")], "{}"),
        400,
        "invalid_request",
    );
    oauth_error(
        &post(
            &d,
            &[FORM],
            &format!("{}&grant_type=client_credentials", form(&a("e4"), "")),
        ),
        400,
        "invalid_request",
    );
    oauth_error(
        &post(&d, &[FORM], "grant_type=client_credentials"),
        401,
        "invalid_client",
    );
    let r = d.get("/v1/token", &[]);
    r.assert_problem(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
}

#[test]
fn quota_per_tool_and_revocation() {
    let d = start("quota", 2);
    let f = fixtures();
    for j in ["q1", "q2"] {
        assert_eq!(
            post(&d, &[FORM], &form(&assertion(&f.a, "a", ISSUER, j), "")).status,
            200
        );
    }
    let r = post(&d, &[FORM], &form(&assertion(&f.a, "a", ISSUER, "q3"), ""));
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // Another tool's quota is its own.
    assert_eq!(
        post(&d, &[FORM], &form(&assertion(&f.b, "b", ISSUER, "q4"), "")).status,
        200
    );
    assert_eq!(d.ctl(&["revoke", "b"]).0, 0);
    oauth_error(
        &post(&d, &[FORM], &form(&assertion(&f.b, "b", ISSUER, "q5"), "")),
        401,
        "invalid_client",
    );
}

#[test]
fn token_endpoint_follows_the_cors_allow_list() {
    let d = start("tcors", 60);
    let f = fixtures();
    let pf = request(
        d.addr,
        "localhost",
        "OPTIONS",
        "/v1/token",
        &[
            ("Origin", "https://a.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
    );
    assert_eq!(pf.status, 204);
    assert_eq!(pf.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        pf.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    let body = form(&assertion(&f.a, "a", ISSUER, "c1"), "");
    let ok = post(&d, &[FORM, ("Origin", "https://a.example")], &body);
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    // Tool b's page relaying tool a's assertion: refused.
    let other = post(
        &d,
        &[FORM, ("Origin", "https://b.example")],
        &form(&assertion(&f.a, "a", ISSUER, "c2"), ""),
    );
    oauth_error(&other, 401, "invalid_client");
    // A foreign origin: refused before anything else, without CORS headers.
    let evil = post(
        &d,
        &[FORM, ("Origin", "https://evil.example")],
        &form(&assertion(&f.a, "a", ISSUER, "c3"), ""),
    );
    evil.assert_problem(403, "origin_not_allowed");
    assert_eq!(evil.header("access-control-allow-origin"), None);
}

/// A tool's own quota (here in [[tool]]; the signed registry carries the same member) overrides
/// the server's default.
#[test]
fn per_tool_quota_overrides_the_default() {
    let b_jwk = format!("{}/b.jwk", fixtures().dir.display());
    let d = start_with("toolquota", 5, |text| {
        text.replacen(
            &format!("keys = [\"{b_jwk}\"]"),
            &format!("keys = [\"{b_jwk}\"]\ntokens_per_hour = 1"),
            1,
        )
    });
    let f = fixtures();
    assert_eq!(
        post(&d, &[FORM], &form(&assertion(&f.b, "b", ISSUER, "tq1"), "")).status,
        200
    );
    assert_eq!(
        post(&d, &[FORM], &form(&assertion(&f.b, "b", ISSUER, "tq2"), "")).status,
        429
    );
    for j in ["tq3", "tq4", "tq5"] {
        assert_eq!(
            post(&d, &[FORM], &form(&assertion(&f.a, "a", ISSUER, j), "")).status,
            200,
            "tool a keeps the default"
        );
    }
}
