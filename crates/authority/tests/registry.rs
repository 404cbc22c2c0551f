//! The authority's signed tool registry: an older registry, validly signed, is refused on reload
//! (by the control socket or SIGHUP) and at start, so a revocation cannot be undone by putting
//! back the registry from before it, nor by damaging the accepted version. Registries and keys
//! are made with boxapi-core's own signer; the server certificate with certs/make-dev-certs.sh
//! (openssl), through `common`.
mod common;
use boxapi_core::auth::jwk::{Alg, PrivateJwk};
use boxapi_core::auth::{mint, signed};
use boxapi_core::b64;
use common::{dev_certs, temp_dir, Authority};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://authority.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn write_private(dir: &Path, key: &PrivateJwk) {
    let kid = &key.key.kid;
    std::fs::write(
        dir.join(format!("{kid}.private.jwk")),
        key.to_json().to_string(),
    )
    .expect("write private key");
    std::fs::write(
        dir.join(format!("{kid}.jwk")),
        key.key.to_json().to_string(),
    )
    .expect("write public key");
}

/// Writes registry.jws: version `version`, tool "reg" (revoked or not), signed by `root`.
fn write_registry(dir: &Path, root: &PrivateJwk, tool: &PrivateJwk, version: u64, revoked: bool) {
    let payload = json!({"version": version, "tools": [{"id": "reg", "origins": ["https://reg.example"],
        "scopes": ["access"], "keys": [tool.key.to_json()], "revoked": revoked}]});
    let jws = signed::sign(root, payload.to_string().as_bytes()).expect("sign the registry");
    std::fs::write(dir.join("registry.jws"), jws).expect("write the registry");
}

/// A client assertion of tool "reg" for the authority's token endpoint.
fn assertion(tool: &PrivateJwk, jti: &str) -> String {
    let t = now();
    let header = json!({"alg": "EdDSA", "kid": tool.key.kid});
    let claims = json!({"iss": "reg", "sub": "reg", "aud": format!("{ISSUER}/v1/token"),
        "iat": t, "exp": t + 60, "jti": jti});
    let input = format!(
        "{}.{}",
        b64::url_encode(header.to_string().as_bytes()),
        b64::url_encode(claims.to_string().as_bytes())
    );
    let sig = mint::sign(tool, input.as_bytes()).expect("sign the assertion");
    format!("{input}.{}", b64::url_encode(&sig))
}

/// What these tests ask of a running authority.
trait Checks {
    fn reg_revoked(&self) -> bool;
    fn token_status(&self, tool: &PrivateJwk, jti: &str) -> u16;
}

impl Checks for Authority {
    /// Whether `ctl status` says tool "reg" is revoked.
    fn reg_revoked(&self) -> bool {
        let status = self.control(r#"{"cmd":"status"}"#);
        let tools = status["tools"].as_array().cloned().unwrap_or_default();
        let reg = tools.iter().find(|t| t["id"] == "reg");
        reg.expect("tool reg listed")["revoked"] == true
    }

    /// `POST /v1/token` with tool reg's client assertion (curl, the dev CA trusted): the status.
    fn token_status(&self, tool: &PrivateJwk, jti: &str) -> u16 {
        let body = format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
            assertion(tool, jti)
        );
        let port = self.addr.port();
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(self.dir.join("ca.pem"))
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-H", "Content-Type: application/x-www-form-urlencoded"])
            .args(["--data", &body])
            .arg(format!("https://localhost:{port}/v1/token"))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn an_older_registry_is_refused_on_reload_and_at_start() {
    let dir = temp_dir("registry", "rollback");
    dev_certs(&dir);
    let root = mint::generate(Alg::EdDsa, "root").expect("root key");
    let tool = mint::generate(Alg::EdDsa, "reg-key").expect("tool key");
    let op = mint::generate(Alg::EdDsa, "op").expect("signing key");
    write_private(&dir, &root);
    write_private(&dir, &op);
    std::fs::write(
        dir.join("authority.toml"),
        format!(
            r#"[server]
cert = "server.pem"
key = "server.key"
state_dir = "state"
control_socket = "control.sock"

[auth]
audience = "{ISSUER}"
issuers = ["{ISSUER}"]

[registry]
file = "registry.jws"
root_key = "root.jwk"

[token_endpoint]
enabled = true
issuer = "{ISSUER}"
signing_key = "op.private.jwk"

[authority]
listen = ["127.0.0.1:0"]
"#
        ),
    )
    .expect("write the configuration");
    // Version 1 trusts tool reg; version 2 revokes it.
    write_registry(&dir, &root, &tool, 1, false);
    let auth = Authority::start(&dir);
    assert!(!auth.reg_revoked());
    assert_eq!(auth.token_status(&tool, "t-1"), 200);
    write_registry(&dir, &root, &tool, 2, true);
    assert_eq!(auth.control(r#"{"cmd":"reload"}"#)["ok"], true);
    assert!(auth.reg_revoked());
    assert_eq!(auth.token_status(&tool, "t-2"), 401);

    // Version 1 put back, validly signed: refused, version 2 stays in force.
    write_registry(&dir, &root, &tool, 1, false);
    let r = auth.control(r#"{"cmd":"reload"}"#);
    assert_eq!(r["ok"], false, "{r}");
    assert!(r.to_string().contains("rollback"), "{r}");
    assert!(auth.reg_revoked());
    assert_eq!(auth.token_status(&tool, "t-3"), 401);
    // The same by SIGHUP (its refusal is logged; the registry in force is what counts).
    let hup = Command::new("kill")
        .args(["-HUP", &auth.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(auth.reg_revoked());
    assert_eq!(auth.token_status(&tool, "t-4"), 401);
    drop(auth);

    // Nor does a restart take it: check-config and serve refuse the file.
    let check = Command::new(env!("CARGO_BIN_EXE_boxapi-authority"))
        .args(["check-config", "--config"])
        .arg(dir.join("authority.toml"))
        .output()
        .expect("run check-config");
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(64), "{err}");
    assert!(err.contains("older than the accepted version 2"), "{err}");
    // And version 2 again is accepted (a version is not refused against itself).
    write_registry(&dir, &root, &tool, 2, true);
    let auth = Authority::start(&dir);
    assert!(auth.reg_revoked());
    drop(auth);

    // Issue 21: a damaged registry.version never lowers the floor. Its previous good copy holds
    // 2: version 1 is still refused.
    write_registry(&dir, &root, &tool, 1, false);
    let version = dir.join("state/registry.version");
    std::fs::write(&version, b"").expect("damage the version");
    let check = Command::new(env!("CARGO_BIN_EXE_boxapi-authority"))
        .args(["check-config", "--config"])
        .arg(dir.join("authority.toml"))
        .output()
        .expect("run check-config");
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(64), "{err}");
    assert!(err.contains("older than the accepted version 2"), "{err}");
    // No good copy at all: no registry is in force (tool reg is not trusted), and status warns.
    std::fs::write(dir.join("state/registry.version.prev"), b"x").expect("damage the copy");
    let auth = Authority::start(&dir);
    let status = auth.control(r#"{"cmd":"status"}"#);
    assert!(
        status["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w == "registry_version_damaged")),
        "{status}"
    );
    assert_eq!(auth.token_status(&tool, "t-5"), 401);
}
