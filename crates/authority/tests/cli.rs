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
