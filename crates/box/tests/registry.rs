//! The operator-signed tool registry: accepted when the root key's signature verifies, refused when
//! tampered with or older than the version already accepted; a tool revoked in a new registry is
//! refused after reload while others are untouched.
mod common;
use common::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = daemon_command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sign(dir: &Path, version: u64, revoked: bool, reg: &Key) -> (i32, String) {
    let payload = json!({"version": version, "tools": [{"id": "reg", "name": "Registry tool",
        "origins": ["https://reg.example"], "scopes": ["access"], "keys": [reg.jwk()], "revoked": revoked}]});
    let input = dir.join(format!("registry-v{version}.json"));
    std::fs::write(&input, payload.to_string()).unwrap();
    let key = dir.join("root.private.jwk");
    operator_sign("registry", &key, &input, &dir.join("registry.jws"))
}

/// An operator root key, `root.private.jwk` and `root.jwk` in `dir`.
fn root_key(dir: &Path) {
    let out = dir.to_str().unwrap();
    let (code, _, err) = run(&["keygen", "--alg", "EdDSA", "--kid", "root", "--out", out]);
    assert_eq!(code, 0, "{err}");
}

/// An operator root key and a registry tool's key in `dir`.
fn keys(dir: &Path) -> Key {
    root_key(dir);
    tool_key(dir, "reg")
}

const REGISTRY: &str = "[registry]\nfile = \"registry.jws\"\nroot_key = \"root.jwk\"\n";

/// The registry tool's token is refused; the configured tool `a` is untouched.
fn refused_while_others_are_served(d: &Daemon, token: &str) {
    d.get_token("/v1/access", token)
        .assert_problem(401, "invalid_token");
    assert_eq!(
        d.get_token("/v1/access", &fixtures().a.token("a", "access"))
            .status,
        200
    );
}

#[test]
fn signed_registry_lifecycle() {
    let dir = temp_dir("registry");
    let reg = keys(&dir);
    assert_eq!(sign(&dir, 2, false, &reg).0, 0);
    let (code, out, _) = run(&[
        "registry",
        "verify",
        "--key",
        dir.join("root.jwk").to_str().unwrap(),
        "--in",
        dir.join("registry.jws").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("version 2: 1 tools (reg)"), "{out}");

    std::fs::write(dir.join("boxapi.toml"), config(&dir, "", REGISTRY)).unwrap();
    let d = Daemon::start_in(dir.clone(), &[]);
    let token = reg.token("reg", "access");
    assert_eq!(d.get_token("/v1/access", &token).status, 200);
    let r = d.get(
        "/v1/access",
        &[
            ("Origin", "https://reg.example"),
            ("Authorization", &format!("Bearer {token}")),
        ],
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://reg.example")
    );

    // Version 3 revokes the tool: refused after reload; tool a untouched.
    assert_eq!(sign(&dir, 3, true, &reg).0, 0);
    assert_eq!(d.ctl(&["reload"]).0, 0);
    refused_while_others_are_served(&d, &token);

    // A tampered registry: refused, version 3 stays in force.
    let jws = std::fs::read_to_string(dir.join("registry.jws")).unwrap();
    let mut parts: Vec<String> = jws.trim().split('.').map(str::to_owned).collect();
    // The payload as signed (base64url decoded with coreutils), with the revocation flipped.
    let std_b64 = parts[1].replace('-', "+").replace('_', "/");
    let decoded = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{std_b64}==' | base64 -d 2>/dev/null"))
        .output()
        .unwrap();
    let payload = String::from_utf8(decoded.stdout).unwrap();
    let forged = payload.replace("\"revoked\":true", "\"revoked\":false");
    assert_ne!(forged, payload);
    parts[1] = b64url(forged.as_bytes());
    std::fs::write(dir.join("registry.jws"), parts.join(".")).unwrap();
    let (code, _, err) = d.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("signature"), "{err}");
    d.get_token("/v1/access", &token)
        .assert_problem(401, "invalid_token");

    // Rollback to version 2 (validly signed, tool not revoked): refused.
    assert_eq!(sign(&dir, 2, false, &reg).0, 0);
    let (code, _, err) = d.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("rollback"), "{err}");
    d.get_token("/v1/access", &token)
        .assert_problem(401, "invalid_token");
    let (code, _, err) = run(&[
        "check-config",
        "--config",
        dir.join("boxapi.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("older than the accepted version 3"), "{err}");
}

/// Issue 21: a damaged `registry.version` never lowers the anti-rollback floor. It read as 0
/// once: a registry that undid a revocation was accepted after a restart.
#[test]
fn a_damaged_registry_version_fails_closed() {
    let dir = temp_dir("registry-damaged");
    let reg = keys(&dir);
    assert_eq!(sign(&dir, 3, true, &reg).0, 0);
    std::fs::write(dir.join("boxapi.toml"), config(&dir, "", REGISTRY)).unwrap();
    let dir = Daemon::start_in(dir, &[]).stop();
    let version = dir.join("state/registry.version");
    assert_eq!(std::fs::read_to_string(&version).unwrap(), "3\n");
    // The revocation undone by an older registry, the version file damaged.
    assert_eq!(sign(&dir, 2, false, &reg).0, 0);
    std::fs::write(&version, b"").unwrap();
    let config_path = dir.join("boxapi.toml");
    let serve = |cmd: &str| {
        let out = daemon_command()
            .args([cmd, "--config", config_path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The previous good copy holds 3: version 2 is a rollback, refused.
    let (code, err) = serve("check-config");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("older than the accepted version 3"), "{err}");
    // No good copy at all: the floor is unknown. The daemon serves, without the registry (none
    // loosened: its tools are not trusted), and says so until the files are looked at.
    std::fs::write(dir.join("state/registry.version.prev"), b"\x00").unwrap();
    let d = Daemon::start_in(dir.clone(), &[]);
    let token = reg.token("reg", "access");
    refused_while_others_are_served(&d, &token);
    let (code, out, _) = d.ctl(&["status"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        status["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "registry_version_damaged"),
        "{status}"
    );
    assert!(d.logged("registry_version_damaged"));
    // Looked at and removed by the operator: the registry at hand is accepted and recorded.
    std::fs::remove_file(&version).unwrap();
    std::fs::remove_file(dir.join("state/registry.version.prev")).unwrap();
    assert_eq!(d.ctl(&["reload"]).0, 0);
    assert_eq!(d.get_token("/v1/access", &token).status, 200);
    assert_eq!(std::fs::read_to_string(&version).unwrap(), "2\n");
}

/// Started as root with `user`: the registry version written before the privilege drop stays
/// readable after it, so a reload still knows the floor. Before, the file (root's, mode 0600) was
/// unreadable to the dropped user and read as 0: a rollback was accepted at the first reload.
#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn the_floor_survives_the_privilege_drop() {
    require_root("to drop privileges");
    let dir = temp_dir("registry-privs");
    let reg = keys(&dir);
    assert_eq!(sign(&dir, 2, true, &reg).0, 0);
    // The server's key as a box keeps it: readable by the daemon's user, so a reload reads it.
    let fixture = fixtures().dir.display().to_string();
    let mut text = config(&dir, "user = \"nobody\"\ngroup = \"nogroup\"", REGISTRY);
    for file in ["server.pem", "server.key"] {
        std::fs::copy(fixtures().dir.join(file), dir.join(file)).unwrap();
        let chown = Command::new("chown")
            .arg("nobody")
            .arg(dir.join(file))
            .status()
            .unwrap();
        assert!(chown.success());
        text = text.replace(
            &format!("{fixture}/{file}"),
            &format!("{}/{file}", dir.display()),
        );
    }
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    let d = Daemon::start_in(dir.clone(), &[]);
    assert!(d.logged("privileges_dropped"));
    assert_eq!(sign(&dir, 1, false, &reg).0, 0);
    let (code, _, err) = d.ctl(&["reload"]);
    assert_eq!(code, 1, "a rollback was accepted after the privilege drop");
    assert!(err.contains("older than the accepted version 2"), "{err}");
    let token = reg.token("reg", "access");
    refused_while_others_are_served(&d, &token);
    let (_, out, _) = d.ctl(&["status"]);
    assert!(!out.contains("registry_version_damaged"), "{out}");
    // A newer version is recorded by the dropped user, and read back at the next reload.
    assert_eq!(sign(&dir, 3, true, &reg).0, 0);
    assert_eq!(d.ctl(&["reload"]).0, 0);
    assert_eq!(sign(&dir, 2, true, &reg).0, 0);
    assert_eq!(d.ctl(&["reload"]).0, 1);
    let (_, out, _) = d.ctl(&["status"]);
    assert!(!out.contains("registry_version_damaged"), "{out}");
}

/// `boxapi fleet sign` and `fleet verify` (issue 23): the fleet document is signed by the same
/// root key as the registry, and neither passes for the other.
#[test]
fn fleet_document_sign_and_verify() {
    let dir = temp_dir("fleet-cli");
    let reg = keys(&dir);
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let fleet = |args: &[&str]| run(&[&["fleet"], args].concat());
    let payload = json!({"version": 5, "tools": [{"id": "reg", "origins": ["https://reg.example"],
        "scopes": ["access"], "keys": [reg.jwk()], "revoked": true}],
        "restriction": {"suspended": true, "retry_after": 600, "reason": "CVE-2027-0001",
        "models": ["Box 8"]}});
    std::fs::write(dir.join("fleet.json"), payload.to_string()).unwrap();
    let signing = |input: &str, out: &str| {
        fleet(&[
            "sign",
            "--key",
            &path("root.private.jwk"),
            "--in",
            &path(input),
            "--out",
            &path(out),
        ])
    };
    let (code, _, err) = signing("fleet.json", "fleet.jws");
    assert_eq!(code, 0, "{err}");
    let verifying = |args: &[&str], input: &str| {
        run(&[args, &["--key", &path("root.jwk"), "--in", &path(input)]].concat())
    };
    let (code, out, err) = verifying(&["fleet", "verify"], "fleet.jws");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        r#"version 5: 1 tools (reg); restriction: suspended, retry_after 600 s, reason "CVE-2027-0001", models ["Box 8"]"#
    );
    // A fleet document is not a registry, and a registry is not a fleet document.
    let (code, _, err) = verifying(&["registry", "verify"], "fleet.jws");
    assert_eq!(code, 64);
    assert!(err.contains("unknown field `restriction`"), "{err}");
    assert_eq!(sign(&dir, 6, false, &reg).0, 0);
    let (code, _, err) = verifying(&["fleet", "verify"], "registry.jws");
    assert_eq!(code, 64);
    assert!(err.contains("missing field `restriction`"), "{err}");
    // Another key's signature is refused.
    root_key(&dir.join("other"));
    let (code, _, err) = run(&[
        "fleet",
        "verify",
        "--key",
        &path("other/root.jwk"),
        "--in",
        &path("fleet.jws"),
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("signature"), "{err}");
    // Nothing unchecked is signed: every problem is named.
    std::fs::write(
        dir.join("bad.json"),
        r#"{"version": 7, "tools": [], "restriction": {"suspended": true, "retry_after": 0}}"#,
    )
    .unwrap();
    let (code, _, err) = signing("bad.json", "bad.jws");
    assert_eq!(code, 64);
    assert!(
        err.contains("restriction.retry_after must be 1 to 86400 seconds"),
        "{err}"
    );
    assert!(!dir.join("bad.jws").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
