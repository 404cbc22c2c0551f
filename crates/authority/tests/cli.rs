//! The authority's command line: exit codes and check-config's one line per problem. (Being an
//! integration test, it also makes `cargo test --workspace` build the `boxapi-authority` binary
//! that the box's end-to-end tests start.)
use std::process::Command;

fn authority(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_boxapi-authority"))
        .args(args)
        .output()
        .expect("run boxapi-authority");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "boxapi-authority-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn version_help_and_usage() {
    let (code, out, _) = authority(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("boxapi-authority "), "{out}");
    assert_eq!(authority(&["--help"]).0, 0);
    assert_eq!(authority(&["frobnicate"]).0, 64);
    assert_eq!(authority(&["serve"]).0, 64, "--config is required");
}

#[test]
fn check_config_lists_every_problem_one_per_line() {
    let (code, _, err) = authority(&["check-config", "--config", "/nonexistent/authority.toml"]);
    assert_eq!(code, 64);
    assert!(
        err.starts_with("/nonexistent/authority.toml: cannot read:"),
        "{err}"
    );

    let dir = temp_dir("check");
    let path = dir.join("authority.toml");
    std::fs::write(
        &path,
        "[server]\ncert = \"cert.pem\"\nkey = \"key.pem\"\ncolour = 1\n\
         [auth]\naudience = \"https://box\"\nissuers = [\"https://iss\"]\n",
    )
    .expect("write config");
    let path = path.to_str().expect("utf-8 path");
    let (code, _, err) = authority(&["check-config", "--config", path]);
    assert_eq!(code, 64, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    for want in [
        "server.colour: unknown key".to_owned(),
        "server: set listen_interfaces or listen (nothing to listen on)".to_owned(),
        "token_endpoint: the authority needs [token_endpoint] enabled".to_owned(),
        "authority.listen: the authority needs at least one address".to_owned(),
        format!("server.cert ({}): cannot read:", cert.display()),
        format!("server.key ({}): cannot read:", key.display()),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "{want} in {err}"
        );
    }
    assert_eq!(lines.len(), 6, "one line per problem: {err}");
    // serve refuses the same file with the same code.
    assert_eq!(authority(&["serve", "--config", path]).0, 64);
}

/// Files the configuration names that are named pipes or devices (an open(2) that blocks, a read
/// that never ends) are refused unopened, each named by its key, and at once; so are a state_dir
/// that is a file and an empty audience.
#[test]
fn check_config_refuses_pipes_and_devices_at_once() {
    let dir = temp_dir("special");
    let fifo = dir.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    std::fs::write(dir.join("state"), "").expect("state file");
    let (f, z) = (fifo.display().to_string(), "/dev/zero");
    let text = format!(
        r#"[server]
cert = "{z}"
key = "{f}"
state_dir = "state"
control_socket = "control.sock"
[auth]
audience = ""
issuers = ["https://authority.test"]
[[tool]]
id = "t"
origins = ["https://tool.example"]
scopes = ["access"]
keys = ["{f}"]
[token_endpoint]
enabled = true
issuer = "https://authority.test"
signing_key = "{z}"
[authority]
listen = ["127.0.0.1:0"]
[authority.store]
kind = "redis"
url = "redis://127.0.0.1:1/0"
password_file = "{f}"
[enrolment]
device_ca = "{z}"
device_crls = ["{f}"]
zone = "box.test"
[acme]
directory = "https://127.0.0.1:1/dir"
account = "{f}"
eab_kid = "kid-1"
eab_hmac_key_file = "{z}"
[dns]
server = "127.0.0.1:53"
tsig_name = "boxapi-update"
tsig_secret_file = "{f}"
"#
    );
    let path = dir.join("authority.toml");
    std::fs::write(&path, text).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_boxapi-authority"))
        .args(["check-config", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run boxapi-authority");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            panic!("check-config did not return within 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    let (pipe, device) = (
        "not a regular file (a named pipe)",
        "not a regular file (a character device)",
    );
    let state = dir.join("state");
    let wants = [
        format!(
            "server.state_dir: {}: exists and is not a directory",
            state.display()
        ),
        "auth.audience: must not be empty".to_owned(),
        format!("server.cert ({z}): {device}"),
        format!("server.key ({f}): {pipe}"),
        format!("tool[0].keys ({f}): {pipe}"),
        format!("token_endpoint.signing_key ({z}): {device}"),
        format!("enrolment.device_ca ({z}): {device}"),
        format!("enrolment.device_crls ({f}): {pipe}"),
        format!("acme.account ({f}): {pipe}"),
        format!("acme.eab_hmac_key_file ({z}): {device}"),
        format!("dns.tsig_secret_file ({f}): {pipe}"),
        format!("authority.store.password_file ({f}): {pipe}"),
    ];
    for want in &wants {
        assert!(
            err.lines().any(|l| l == want),
            "{want} missing from:\n{err}"
        );
    }
    assert_eq!(err.lines().count(), wants.len(), "{err}");
}
