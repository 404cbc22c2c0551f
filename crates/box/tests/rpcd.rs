//! The OpenWrt box UI's interface: the rpcd exec plugin (cross/openwrt/boxapi/files/boxapi.rpcd)
//! driven through rpcd's own protocol (`list`, then `call METHOD` with the arguments as JSON on
//! stdin, one JSON object expected on stdout) against a real running daemon.
mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn files() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../cross/openwrt/boxapi/files"
    ))
    .to_path_buf()
}

/// Runs the plugin as rpcd does (its stdin closed after the arguments); returns its stdout as
/// JSON, asserting that it is one JSON object whatever happened.
fn plugin(env: &[(&str, &Path)], args: &[&str], stdin: &str) -> Value {
    plugin_in(&["sh"], env, args, stdin)
}

/// The same, under a given shell (`busybox sh` is OpenWrt's ash).
fn plugin_in(shell: &[&str], env: &[(&str, &Path)], args: &[&str], stdin: &str) -> Value {
    let mut cmd = Command::new(shell[0]);
    cmd.args(&shell[1..])
        .arg(files().join("boxapi.rpcd"))
        .args(args)
        .env_remove("BOXAPI_SOCKET")
        .env("BOXAPI_BIN", bin())
        .env("BOXAPI_CONFIG", "/nonexistent/boxapi.toml")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {text:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(v.is_object(), "{args:?}: rpcd needs an object: {v}");
    v
}

#[test]
fn the_rpcd_plugin_answers_list_and_call_and_errors_in_json() {
    let d = Daemon::start("rpcd", "", "");
    let sock = d.dir.join("control.sock");
    let env: &[(&str, &Path)] = &[("BOXAPI_SOCKET", &sock)];
    let call = |method: &str, args: &str| plugin(env, &["call", method], args);

    // list: every method with its argument types (rpcd's signature format).
    let methods = plugin(env, &["list"], "");
    assert_eq!(
        methods,
        json!({"status": {}, "tools": {}, "enable": {}, "disable": {},
               "withhold": {"section": "str", "tool": "str"}, "allow": {"section": "str", "tool": "str"}})
    );
    // The ACL grants exactly those methods: reading for status and tools, the rest as writes.
    let acl: Value =
        serde_json::from_str(&std::fs::read_to_string(files().join("boxapi.acl.json")).unwrap())
            .unwrap();
    let grant = &acl["luci-app-boxapi"];
    let names = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_owned())
            .collect()
    };
    let read = names(&grant["read"]["ubus"]["boxapi"]);
    let write = names(&grant["write"]["ubus"]["boxapi"]);
    assert_eq!(read, ["status", "tools"].map(String::from).into());
    assert_eq!(
        read.union(&write).cloned().collect::<BTreeSet<_>>(),
        methods.as_object().unwrap().keys().cloned().collect()
    );

    // call, as rpcd passes arguments (an empty object when there are none).
    let status = call("status", "{}");
    assert_eq!(status["state"], "enabled");
    assert!(
        status.get("error").is_none() && status.get("ok").is_none(),
        "{status}"
    );
    let tools = call("tools", "{ }");
    let a = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "a")
        .unwrap()
        .clone();
    assert_eq!(a["withheld"], json!([]));

    let r = call("withhold", r#"{"section": "wifi", "tool": "a"}"#);
    assert!(r.get("error").is_none(), "{r}");
    let token = fixtures().a.token("a", "access");
    let card = d.get_token("/v1/access", &token).json();
    assert_eq!(card["wifi"], Value::Null);
    assert_eq!(card["withheld"], json!(["wifi"]));
    assert!(call("allow", r#"{"section": "wifi", "tool": "a"}"#)
        .get("error")
        .is_none());
    assert!(d.get_token("/v1/access", &token).json()["wifi"].is_object());

    // Bad calls get an error object, never a crash or an empty answer; nothing changes.
    for (method, args, why) in [
        ("withhold", r#"{"section": "secrets"}"#, "is not one of"),
        ("withhold", "{}", "\"section\" is required"),
        ("withhold", "not json", "not JSON"),
        ("withhold", "[1]", "must be a JSON object"),
        (
            "allow",
            r#"{"section": "wifi", "tool": 7}"#,
            "must be a string",
        ),
        ("status", r#"{"verbose": true}"#, "unknown argument"),
        (
            "withhold",
            r#"{"section": "wifi", "tool": "a\"; touch /tmp/x; \""}"#,
            "is registered",
        ),
        ("revoke", r#"{"tool": "a"}"#, "unknown method"),
        ("reload", "{}", "unknown method"),
    ] {
        let r = call(method, args);
        let err = r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {args}: {r}"));
        assert!(err.contains(why), "{method} {args}: {err}");
    }
    let big = format!(r#"{{"section": "{}"}}"#, "x".repeat(5000));
    assert!(call("withhold", &big)["error"].is_string());
    assert!(plugin(env, &["nonsense"], "")["error"].is_string());
    assert!(d.get_token("/v1/access", &token).json()["wifi"].is_object());
    assert_eq!(
        d.get_token("/v1/access", &token).json()["withheld"],
        json!([])
    );

    // The subscriber's switch (last: re-enabling listens on a new port 0).
    assert!(call("disable", "{}").get("error").is_none());
    assert_eq!(call("status", "{}")["state"], "disabled");
    assert!(call("enable", "{}").get("error").is_none());
    assert_eq!(call("status", "{}")["state"], "enabled");

    // The socket found from the configuration, as on a box (no environment).
    let conf = d.dir.join("boxapi.toml");
    let from_config = plugin(&[("BOXAPI_CONFIG", &conf)], &["call", "status"], "{}");
    assert_eq!(from_config["state"], "enabled");

    // The daemon gone: still one JSON object, saying so.
    d.stop();
    let r = call("tools", "{}");
    assert!(
        r["error"].as_str().unwrap().contains("not reachable"),
        "{r}"
    );
}

#[test]
fn the_plugin_runs_under_busybox_ash_as_on_openwrt() {
    // Missing busybox fails the test, as a missing redis-server or openssl does elsewhere.
    let found = Command::new("busybox").arg("true").status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "this test needs busybox (OpenWrt's ash): `make deps` installs it"
    );
    let d = Daemon::start("rpcd-ash", "", "");
    let conf = d.dir.join("boxapi.toml");
    let env: &[(&str, &Path)] = &[("BOXAPI_CONFIG", &conf)];
    let ash = |args: &[&str], stdin: &str| plugin_in(&["busybox", "sh"], env, args, stdin);
    assert!(ash(&["list"], "")["withhold"].is_object());
    assert_eq!(ash(&["call", "status"], "{}")["state"], "enabled");
    assert!(
        ash(&["call", "withhold"], r#"{"section":"client","tool":"b"}"#)
            .get("error")
            .is_none()
    );
    let tools = ash(&["call", "tools"], "{}");
    let b = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "b")
        .unwrap()
        .clone();
    assert_eq!(b["withheld"], json!(["client"]));
    assert!(ash(&["call", "allow"], r#"{"section":"nope"}"#)["error"].is_string());
    assert!(ash(&["call", "nope"], "{}")["error"].is_string());
}

/// Through uhttpd's /ubus (LuCI's path), every call's arguments carry the caller's session:
/// uhttpd adds `"ubus_rpc_session": SID` to them (uhttpd ubus.c, uh_ubus_send_request) and rpcd
/// hands them to the plugin as they are. Refused as an unknown argument, every click in the box UI
/// failed (found by tests/openwrt with the real uhttpd and rpcd).
#[test]
fn the_plugin_accepts_the_session_that_uhttpd_adds_to_every_call() {
    let d = Daemon::start("rpcd-session", "", "");
    let sock = d.dir.join("control.sock");
    let env: &[(&str, &Path)] = &[("BOXAPI_SOCKET", &sock)];
    let sid = r#""ubus_rpc_session": "0123456789abcdef0123456789abcdef""#;
    let call = |method: &str, args: &str| plugin(env, &["call", method], args);
    for m in ["status", "tools"] {
        let r = call(m, &format!("{{{sid}}}"));
        assert!(r.get("error").is_none(), "{m}: {r}");
    }
    let r = call(
        "withhold",
        &format!(r#"{{"section": "wifi", "tool": "a", {sid}}}"#),
    );
    assert!(r.get("error").is_none(), "{r}");
    let token = fixtures().a.token("a", "access");
    assert_eq!(
        d.get_token("/v1/access", &token).json()["wifi"],
        Value::Null
    );
    // Still a string, and still no other argument: the session is not a way in for anything.
    let r = call("status", r#"{"ubus_rpc_session": 7}"#);
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("must be a string"),
        "{r}"
    );
    let r = call("status", &format!(r#"{{{sid}, "verbose": true}}"#));
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown argument"),
        "{r}"
    );
}
