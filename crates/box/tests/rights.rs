//! The subscriber's rights and the habilitations' validity, through the real binary: tools outside
//! their validity window get a 401 that says so (API and token endpoint), `ctl status` and the log
//! warn before expiry.
mod common;
use common::*;
use serde_json::Value;
use std::process::Command;

/// RFC 3339 of now + `secs` (GNU date).
fn date_in(secs: i64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", now() as i64 + secs),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Tools whose habilitation lapsed, has not started, or lapses in ten days; their tokens are
/// signed with the central issuer key (valid for any registered tool).
fn dated_tools() -> String {
    format!(
        r#"
[[tool]]
id = "old"
origins = ["https://old.example"]
scopes = ["access", "counters"]
expires = "{past}"

[[tool]]
id = "future"
origins = ["https://future.example"]
scopes = ["access"]
not_before = {future}

[[tool]]
id = "soon"
origins = ["https://soon.example"]
scopes = ["access"]
not_before = "{past}"
expires = "{soon}"
"#,
        past = date_in(-3600),
        future = date_in(86_400),
        soon = date_in(10 * 86_400 + 600),
    )
}

fn status(d: &Daemon) -> Value {
    let (code, out, err) = d.ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_tool_outside_its_validity_window_gets_a_distinct_401() {
    let dir = temp_dir("validity");
    let text = config(&dir, "", "").replace("[metrics]", &format!("{}\n[metrics]", dated_tools()));
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    let d = Daemon::start_in(dir, &[]);
    let issuer = &fixtures().issuer;

    let r = d.get(
        "/v1/access",
        &[
            (
                "Authorization",
                &format!("Bearer {}", issuer.token("old", "access")),
            ),
            ("Origin", "https://old.example"),
        ],
    );
    r.assert_problem(401, "invalid_token");
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("authorisation expired at"), "{detail}");
    assert!(detail.contains("not valid now"), "{detail}");
    // Contract §6 rev. 3: the reason, and the tool's window repeated (no start: null).
    let p = r.json();
    assert_eq!(p["reason"], "tool_not_valid");
    assert!(detail.contains(p["expires"].as_str().unwrap()), "{p}");
    assert_eq!(p["not_before"], Value::Null, "{p}");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_token\""));
    // The tool's page can read why: its origin keeps its CORS headers.
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://old.example")
    );
    // Distinct from a bad signature.
    let mut forged = issuer.token("a", "access").into_bytes();
    let n = forged.len() - 10;
    forged[n] = if forged[n] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let bad = d.get_token("/v1/access", &forged);
    bad.assert_problem(401, "invalid_token");
    assert_ne!(bad.json()["detail"], detail.as_str());

    let r = d.get_token("/v1/access", &issuer.token("future", "access"));
    r.assert_problem(401, "invalid_token");
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("not valid now"), "{detail}");
    assert!(detail.contains("starts at"), "{detail}");
    let p = r.json();
    assert_eq!(p["reason"], "tool_not_valid");
    assert!(detail.contains(p["not_before"].as_str().unwrap()), "{p}");
    assert_eq!(p["expires"], Value::Null, "{p}");

    // Inside its window: served, and warned about.
    assert_eq!(
        d.get_token("/v1/access", &issuer.token("soon", "access"))
            .status,
        200
    );
    let s = status(&d);
    let warnings = s["warnings"].to_string();
    assert!(
        warnings.contains("\\\"soon\\\": its authorisation expires in 10 days"),
        "{warnings}"
    );
    assert!(
        warnings.contains("\\\"old\\\": its authorisation expired at"),
        "{warnings}"
    );
    let state = |id: &str| {
        s["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("old"), "expired");
    assert_eq!(state("future"), "not_yet_valid");
    assert_eq!(state("soon"), "active");
    assert_eq!(state("gone"), "revoked");
    assert!(d.logged("\"event\":\"tool_expiry_warning\""));
    assert!(d.log_text().contains("\"tool\":\"soon\""));
}

#[test]
fn the_token_endpoint_refuses_a_lapsed_tool() {
    let dir = temp_dir("validity-token");
    keygen(&dir, "EdDSA", "box-signer");
    let sum = Command::new("sh")
        .args(["-c", "printf %s s3cret | sha256sum"])
        .output()
        .unwrap();
    let secret = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let text = config(&dir, "", "")
        .replace(
            "keys = [\"",
            &format!("client_secret_sha256 = \"{secret}\"\nkeys = [\""),
        )
        .replace(
            "id = \"b\"\n",
            &format!("id = \"b\"\nexpires = \"{}\"\n", date_in(-60)),
        )
        .replace(
            "[metrics]",
            "[token_endpoint]\nenabled = true\nissuer = \"https://box.test\"\nsigning_key = \"box-signer.private.jwk\"\n\n[metrics]",
        );
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    let d = Daemon::start_in(dir, &[]);
    let basic = |id: &str| {
        let mut b = b64url(format!("{id}:s3cret").as_bytes())
            .replace('-', "+")
            .replace('_', "/");
        while b.len() % 4 != 0 {
            b.push('=');
        }
        format!("Basic {b}")
    };
    let post = |id: &str| {
        request_body(
            d.addr,
            "POST",
            "/v1/token",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", &basic(id)),
            ],
            b"grant_type=client_credentials",
        )
    };
    assert_eq!(post("a").status, 200);
    let r = post("b");
    assert_eq!(r.status, 401, "{r:?}");
    let j = r.json();
    assert_eq!(j["error"], "invalid_client");
    assert!(
        j["error_description"]
            .as_str()
            .unwrap()
            .contains("authorisation expired"),
        "{j}"
    );
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = daemon_command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Signs `registry.jws` in `dir` (root key `root.private.jwk`) with one tool, `reg`.
fn push_registry(dir: &std::path::Path, version: u64, extra: &str, reg: &Key) {
    let payload = format!(
        r#"{{"version": {version}, "tools": [{{"id": "reg", "origins": ["https://reg.example"],
            "scopes": ["access"], "keys": [{}] {extra}}}]}}"#,
        reg.jwk()
    );
    let input = dir.join("registry.json");
    std::fs::write(&input, payload).unwrap();
    let (code, _, err) = run(&[
        "registry",
        "sign",
        "--key",
        dir.join("root.private.jwk").to_str().unwrap(),
        "--in",
        input.to_str().unwrap(),
        "--out",
        dir.join("registry.jws").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_registry_pushed_with_a_past_expiry_is_accepted_and_the_tool_refused() {
    let dir = temp_dir("registry-expiry");
    let (code, _, err) = run(&[
        "keygen",
        "--alg",
        "EdDSA",
        "--kid",
        "root",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let reg = tool_key(&dir, "reg");
    let valid = format!(r#", "expires": "{}""#, date_in(365 * 86_400));
    push_registry(&dir, 1, &valid, &reg);
    let text = config(
        &dir,
        "",
        "[registry]\nfile = \"registry.jws\"\nroot_key = \"root.jwk\"\n",
    );
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    let d = Daemon::start_in(dir.clone(), &[]);
    let token = reg.token("reg", "access");
    assert_eq!(d.get_token("/v1/access", &token).status, 200);

    // Version 2 says the habilitation lapsed an hour ago: the registry is accepted (the version
    // is recorded, a rollback to 1 is refused), the tool's still-valid token is not.
    let lapsed = format!(r#", "expires": "{}""#, date_in(-3600));
    push_registry(&dir, 2, &lapsed, &reg);
    let (code, out, err) = d.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let r = d.get_token("/v1/access", &token);
    r.assert_problem(401, "invalid_token");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("authorisation expired at"),
        "{r:?}"
    );
    assert_eq!(
        d.get_token("/v1/access", &fixtures().a.token("a", "access"))
            .status,
        200,
        "other tools are untouched"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("state/registry.version"))
            .unwrap()
            .trim(),
        "2"
    );
    let s: Value = serde_json::from_str(&d.ctl(&["status"]).1).unwrap();
    let reg_status = s["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "reg")
        .unwrap()
        .clone();
    assert_eq!(reg_status["state"], "expired");
    assert!(d.logged("its authorisation expired at"));
}

fn tools(d: &Daemon) -> Vec<Value> {
    let (code, out, err) = d.ctl(&["tools"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array().expect("ctl tools prints a JSON list").clone()
}

fn tool(list: &[Value], id: &str) -> Value {
    list.iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list:?}"))
        .clone()
}

#[test]
fn withholding_wifi_from_one_tool_nulls_it_for_that_tool_only() {
    let d = Daemon::start("withhold", "", "");
    let f = fixtures();
    let (ta, tb) = (
        f.a.token("a", "access counters"),
        f.b.token("b", "access counters"),
    );
    let card = |t: &str| {
        let r = d.get_token("/v1/access", t);
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
    };
    let before = card(&ta);
    assert!(before["wifi"].is_object());
    assert_eq!(before["withheld"], serde_json::json!([]));

    let (code, out, err) = d.ctl(&["withhold", "wifi", "--tool", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    let a = card(&ta);
    assert_eq!(a["wifi"], Value::Null);
    assert_eq!(a["withheld"], serde_json::json!(["wifi"]));
    for member in [
        "api_version",
        "timestamp",
        "box",
        "subscription",
        "access",
        "client",
        "counters",
    ] {
        assert!(!a[member].is_null(), "{member} is still shared: {a}");
    }
    let b = card(&tb);
    assert!(b["wifi"].is_object(), "tool b is untouched: {b}");
    assert_eq!(b["withheld"], serde_json::json!([]));
    let list = tools(&d);
    assert_eq!(tool(&list, "a")["withheld"], serde_json::json!(["wifi"]));
    assert_eq!(tool(&list, "b")["withheld"], serde_json::json!([]));

    // Persisted: a restart keeps the subscriber's choice.
    let dir = d.terminate();
    let d = Daemon::start_in(dir, &[]);
    let r = d.get_token("/v1/access", &ta);
    assert_eq!(r.json()["wifi"], Value::Null);
    assert_eq!(d.ctl(&["allow", "wifi", "--tool", "a"]).0, 0);
    let r = d.get_token("/v1/access", &ta).json();
    assert!(r["wifi"].is_object());
    assert_eq!(r["withheld"], serde_json::json!([]));

    // Withheld from every tool: counters on /v1/access, and on /v1/counters the WAN and the
    // terminal's counts; clock readings stay.
    assert_eq!(d.ctl(&["withhold", "counters"]).0, 0);
    for t in [&ta, &tb] {
        let c = d.get_token("/v1/access", t).json();
        assert_eq!(c["counters"], Value::Null);
        assert_eq!(c["withheld"], serde_json::json!(["counters"]));
        let r = d.get_token("/v1/counters", t);
        assert_eq!(r.status, 200);
        let c = r.json();
        assert_eq!(
            (c["wan"].clone(), c["client"].clone()),
            (Value::Null, Value::Null)
        );
        assert!(c["monotonic_us"].is_u64() && c["timestamp"].is_string());
        assert_eq!(c["withheld"], serde_json::json!(["counters"]));
    }
    // ...except for tool b, which the subscriber allows.
    assert_eq!(d.ctl(&["allow", "counters", "--tool", "b"]).0, 0);
    assert!(d.get_token("/v1/counters", &tb).json()["wan"].is_object());
    assert_eq!(d.get_token("/v1/counters", &ta).json()["wan"], Value::Null);
    // `client` withheld: the terminal's own counts on /v1/counters too.
    assert_eq!(d.ctl(&["withhold", "client", "--tool", "b"]).0, 0);
    let c = d.get_token("/v1/counters", &tb).json();
    assert_eq!(c["client"], Value::Null);
    assert_eq!(c["withheld"], serde_json::json!(["client"]));
    assert_eq!(d.get_token("/v1/access", &tb).json()["client"], Value::Null);

    // A scope-level refusal keeps its 403: withholding never widens or replaces it.
    d.get_token("/v1/access", &f.c.token("c", "access counters"))
        .assert_problem(403, "insufficient_scope");
    // Mistakes: an unknown section is bad usage, an unknown tool a refusal; nothing changes.
    assert_eq!(d.ctl(&["withhold", "secrets"]).0, 64);
    let (code, _, err) = d.ctl(&["withhold", "wifi", "--tool", "nosuchtool"]);
    assert_eq!(code, 1);
    assert!(err.contains("nosuchtool"), "{err}");
    assert!(d.get_token("/v1/access", &tb).json()["wifi"].is_object());
}

#[test]
fn ctl_tools_lists_every_tool_and_activity_survives_a_restart() {
    let d = Daemon::start("activity", "", "");
    let list = tools(&d);
    let ids: Vec<&str> = list.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "gone"]);
    let a = tool(&list, "a");
    assert_eq!(a["name"], "Tool A");
    assert_eq!(
        a["origins"],
        serde_json::json!(["https://a.example", "https://a.example:8443"])
    );
    assert_eq!(a["scopes"], serde_json::json!(["access", "counters"]));
    assert_eq!(a["state"], "active");
    for k in ["not_before", "expires", "first_access", "last_access"] {
        assert_eq!(a[k], Value::Null, "{k}");
    }
    assert_eq!(a["requests"], 0);
    assert_eq!(tool(&list, "gone")["state"], "revoked");

    let t = fixtures().a.token("a", "access counters");
    assert_eq!(d.get_token("/v1/access", &t).status, 200);
    assert_eq!(d.get_token("/v1/counters", &t).status, 200);
    // A refused request is not a read.
    d.get_token("/v1/access", &fixtures().c.token("c", "counters"))
        .assert_problem(403, "insufficient_scope");
    let a = tool(&tools(&d), "a");
    assert_eq!(a["requests"], 2);
    let first = a["first_access"].as_str().unwrap().to_owned();
    assert!(first.ends_with('Z') && first.len() == 20, "{first}");
    assert!(a["last_access"].as_str().unwrap() >= first.as_str());
    assert_eq!(tool(&tools(&d), "c")["requests"], 0);

    let dir = d.terminate();
    let saved = std::fs::read_to_string(dir.join("state/activity.json")).unwrap();
    assert!(saved.contains("\"a\""), "{saved}");
    assert!(
        !saved.contains("127.0.0.1") && !saved.contains(&t[..20]),
        "{saved}"
    );
    let d = Daemon::start_in(dir, &[]);
    let a = tool(&tools(&d), "a");
    assert_eq!(a["requests"], 2);
    assert_eq!(a["first_access"], first.as_str());
    assert_eq!(d.get_token("/v1/counters", &t).status, 200);
    assert_eq!(tool(&tools(&d), "a")["requests"], 3);
}

/// Sends `n` requests on one kept-alive connection, reading each answer fully.
fn keep_alive_requests(d: &Daemon, path: &str, token: &str, n: usize, mut each: impl FnMut(usize)) {
    use std::io::{Read, Write};
    let mut s = connect(d.addr, "localhost", client_config(rustls::DEFAULT_VERSIONS));
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    for i in 0..n {
        s.write_all(req.as_bytes()).unwrap();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap();
                if buf.len() >= end + 4 + len {
                    buf.drain(..end + 4 + len);
                    break;
                }
            }
            let got = s.read(&mut chunk).unwrap();
            assert!(got > 0, "connection closed after {i} requests");
            buf.extend_from_slice(&chunk[..got]);
        }
        each(i);
    }
}

#[test]
fn ten_thousand_requests_leave_the_state_files_the_same_size() {
    let d = Daemon::start("bounded", "rate_limit_per_second = 0", "");
    let state = d.dir.join("state");
    let t = fixtures().a.token("a", "counters");
    keep_alive_requests(&d, "/v1/counters", &t, 1, |_| {});
    let dir = d.terminate();
    let sizes = || {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let after_one = sizes();
    assert!(
        after_one.iter().any(|(n, _)| n == "activity.json"),
        "{after_one:?}"
    );

    let d = Daemon::start_in(dir, &[]);
    let inode = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(state.join("activity.json"))
            .unwrap()
            .ino()
    };
    let mut files_written = std::collections::HashSet::new();
    files_written.insert(inode());
    keep_alive_requests(&d, "/v1/counters", &t, 10_000, |i| {
        if i % 500 == 0 {
            files_written.insert(inode());
        }
    });
    // Not written per request: at most once a minute (and this loop takes seconds).
    assert!(files_written.len() <= 2, "{} writes", files_written.len());
    assert_eq!(tool(&tools(&d), "a")["requests"], 10_001);
    d.terminate();
    assert_eq!(sizes(), after_one);
}

#[test]
fn the_first_access_after_a_quiet_minute_is_on_disk_at_once() {
    let d = Daemon::start("activity-kill", "", "");
    let file = d.dir.join("state/activity.json");
    let t = fixtures().b.token("b", "access");
    assert_eq!(d.get_token("/v1/access", &t).status, 200);
    assert!(
        wait_for(std::time::Duration::from_secs(3), || {
            std::fs::read_to_string(&file).is_ok_and(|s| s.contains("\"b\""))
        }),
        "not saved"
    );
    // A kill -9 (no shutdown save) keeps it.
    let dir = d.stop();
    let d = Daemon::start_in(dir, &[]);
    assert_eq!(tool(&tools(&d), "b")["requests"], 1);
}
