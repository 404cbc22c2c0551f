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
    let out = daemon_command()
        .args(["keygen", "--alg", "EdDSA", "--kid", "box-signer", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
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
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let made = Command::new(root.join("certs/make-tool-key.sh"))
        .args([dir.to_str().unwrap(), "reg", "ES256"])
        .status()
        .unwrap();
    assert!(made.success());
    let reg = Key {
        kid: "reg-key".into(),
        alg: jsonwebtoken::Algorithm::ES256,
        pem: std::fs::read(dir.join("reg.pem")).unwrap(),
        spki: std::fs::read(dir.join("reg.pub.der")).unwrap(),
    };
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
