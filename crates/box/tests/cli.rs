//! The command line: check-config, keygen, token, demo, exit codes.
mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn boxapi(args: &[&str]) -> (i32, String, String) {
    let out = daemon_command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_test_config() {
    let dir = temp_dir("check-ok");
    std::fs::write(dir.join("boxapi.toml"), config(&dir, "", "")).unwrap();
    let (code, out, err) = boxapi(&[
        "check-config",
        "--config",
        dir.join("boxapi.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"));
}

#[test]
fn check_config_lists_every_mistake() {
    let dir = temp_dir("check-bad");
    let text = config(&dir, "listen_typo = 1", "")
        .replace("listen = [\"127.0.0.1:0\"]", "listen = [\"0.0.0.0:443\"]")
        .replace(
            &format!("{}/a.jwk", fixtures().dir.display()),
            "/nonexistent/a.jwk",
        )
        .replace("issuer_keys", "max_token_lifetime = 3600\nissuer_keys");
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    let (code, _, err) = boxapi(&[
        "check-config",
        "--config",
        dir.join("boxapi.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let has = |s: &str| lines.iter().any(|l| l.contains(s));
    assert!(has("server.listen_typo: unknown key"), "{err}");
    assert!(has("0.0.0.0:443 is an unspecified address"), "{err}");
    assert!(has("/nonexistent/a.jwk") && has("tool[0].keys"), "{err}");
    assert!(has("auth.max_token_lifetime: 3600"), "{err}");
    assert_eq!(lines.len(), 4, "one line per mistake: {err}");
    // serve refuses the same file with the same code.
    let (code, _, _) = boxapi(&[
        "serve",
        "--config",
        dir.join("boxapi.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 64);
}

#[test]
fn usage_errors_exit_64_and_version_exits_0() {
    assert_eq!(boxapi(&["frobnicate"]).0, 64);
    assert_eq!(boxapi(&["serve"]).0, 64);
    let (code, out, _) = boxapi(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("boxapi "));
    assert_eq!(boxapi(&["--help"]).0, 0);
    assert_eq!(
        boxapi(&["check-config", "--config", "/nonexistent.toml"]).0,
        64
    );
}

#[test]
fn keygen_and_token_work_with_the_daemon() {
    let dir = temp_dir("keygen");
    let keys = dir.join("keys");
    for (alg, kid) in [("ES256", "k1"), ("EdDSA", "k2")] {
        let (code, _, err) = boxapi(&[
            "keygen",
            "--alg",
            alg,
            "--kid",
            kid,
            "--out",
            keys.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        let private = keys.join(format!("{kid}.private.jwk"));
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let public = std::fs::read_to_string(keys.join(format!("{kid}.jwk"))).unwrap();
        assert!(
            !public.contains("\"d\""),
            "public key file holds the private part"
        );
    }
    // Not overwritten.
    assert_ne!(
        boxapi(&[
            "keygen",
            "--alg",
            "ES256",
            "--kid",
            "k1",
            "--out",
            keys.to_str().unwrap()
        ])
        .0,
        0
    );
    assert_eq!(
        boxapi(&[
            "keygen",
            "--alg",
            "RS256",
            "--kid",
            "k3",
            "--out",
            keys.to_str().unwrap()
        ])
        .0,
        64
    );

    let text = config(&dir, "", "")
        .replace(
            &format!("{}/a.jwk", fixtures().dir.display()),
            &format!("{}/k1.jwk", keys.display()),
        )
        .replace(
            &format!("{}/b.jwk", fixtures().dir.display()),
            &format!("{}/k2.jwk", keys.display()),
        );
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    let d = Daemon::start_in(dir, &[]);
    for (kid, tool) in [("k1", "a"), ("k2", "b")] {
        let key = keys.join(format!("{kid}.private.jwk"));
        let (code, token, err) = boxapi(&[
            "token",
            "--key",
            key.to_str().unwrap(),
            "--tool",
            tool,
            "--scope",
            "access counters",
            "--aud",
            AUD,
            "--iss",
            ISS,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(d.get_token("/v1/access", token.trim()).status, 200);
        // Decoded by an independent library: a 15-minute token.
        let claims: serde_json::Value = {
            let mut v = jsonwebtoken::Validation::default();
            v.insecure_disable_signature_validation();
            v.validate_aud = false;
            jsonwebtoken::decode(
                token.trim(),
                &jsonwebtoken::DecodingKey::from_secret(b""),
                &v,
            )
            .unwrap()
            .claims
        };
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            900
        );
    }
    let key = keys.join("k1.private.jwk");
    let token_with = |key: &Path, extra: &[&str]| {
        let mut args = vec![
            "token",
            "--key",
            key.to_str().unwrap(),
            "--tool",
            "a",
            "--scope",
            "access",
        ];
        args.extend(["--aud", AUD, "--iss", ISS]);
        args.extend(extra);
        boxapi(&args)
    };
    let (code, out, err) = token_with(&key, &["--ttl", "901"]);
    assert_eq!(code, 64);
    assert!(out.is_empty() && err.contains("900"), "{err}");
    // A public key cannot sign, and errors never print key material.
    let public = keys.join("k1.jwk");
    let (code, _, err) = token_with(&public, &[]);
    assert_eq!(code, 64);
    let private_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
    assert!(!err.contains(private_json["d"].as_str().unwrap()));
}

/// `make demo`'s promise: the printed curl command works when pasted into another terminal.
#[test]
fn demo_prints_a_working_curl_command() {
    let dir = temp_dir("demo");
    let demo = |stdout: Stdio| {
        Command::new(bin())
            .args([
                "demo",
                "--dir",
                dir.join("d").to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = demo(Stdio::piped());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("curl ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("demo printed no curl command");
    // Pasted into a shell, from another directory.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} -sS -w '\\n%{{http_code}}'"))
        .current_dir("/")
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(
        code,
        "200",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(card["api_version"], "1.0");
    assert_eq!(card["access"]["technology"], "ftth");

    // A second start reuses the CA (a browser or curl trusting it keeps working).
    let ca = std::fs::read(dir.join("d/ca.pem")).unwrap();
    let mut again = demo(Stdio::null());
    std::thread::sleep(Duration::from_millis(500));
    let _ = again.kill();
    let _ = again.wait();
    assert_eq!(std::fs::read(dir.join("d/ca.pem")).unwrap(), ca);
}

/// The OpenWrt package's default config is valid apart from the files provisioning installs.
#[test]
fn openwrt_default_config_only_lacks_provisioned_files() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("cross/openwrt/boxapi/files/boxapi.toml");
    let (code, _, err) = boxapi(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("server.cert (") && lines[1].starts_with("server.key ("),
        "{err}"
    );
}

/// `token --key` reads the key as every configured file is read: a device or a named pipe is
/// refused at once, naming the option (before, `--key /dev/zero` read until memory ran out).
#[test]
fn token_refuses_a_key_that_is_not_a_regular_file() {
    let mut child = daemon_command()
        .args([
            "token",
            "--key",
            "/dev/zero",
            "--tool",
            "a",
            "--scope",
            "access",
        ])
        .args(["--aud", AUD, "--iss", ISS])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_for(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(ended, "token --key /dev/zero still reading after 5 s");
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("--key /dev/zero") && err.contains("not a regular file"),
        "{err}"
    );
}

/// A value that is not UTF-8 is reported as such, not as a missing value (before: "a value is
/// required for '--config <CONFIG>' but none was supplied").
#[test]
fn a_value_that_is_not_utf8_is_named_as_such() {
    use std::os::unix::ffi::OsStrExt;
    let out = daemon_command()
        .arg("serve")
        .arg("--config")
        .arg(std::ffi::OsStr::from_bytes(b"/tmp/\xff.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("invalid UTF-8") && err.contains("--config"),
        "{err}"
    );
}

/// A first-boot box: `[enrol]`, and no certificate or key of its own yet. `serve` enrols first,
/// so `check-config` passes it; a broken `[enrol]`, or a certificate that is there but broken,
/// still fails.
#[test]
fn check_config_passes_a_first_boot_box_that_will_enrol() {
    let dir = temp_dir("check-first-boot");
    let f = fixtures().dir.display().to_string();
    let enrol = format!(
        "[enrol]\nauthority = \"https://enrol.isp.example\"\nauthority_ca = \"{f}/ca.pem\"\n\
         device_cert = \"{f}/server.pem\"\ndevice_key = \"{f}/server.key\"\nzone = \"box.test\"\n"
    );
    let own = |text: String| {
        text.replace(
            &format!("cert = \"{f}/server.pem\"\nkey = \"{f}/server.key\""),
            &format!(
                "cert = \"{d}/own.pem\"\nkey = \"{d}/own.key\"",
                d = dir.display()
            ),
        )
    };
    let path = dir.join("boxapi.toml");
    let check = |text: String| {
        std::fs::write(&path, text).unwrap();
        boxapi(&["check-config", "--config", path.to_str().unwrap()])
    };
    let (code, out, err) = check(own(config(&dir, "", &enrol)));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("serve enrols first"), "{out}");
    // Without [enrol] nothing will make them: still a problem.
    let (code, _, err) = check(own(config(&dir, "", "")));
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("server.cert") && err.contains("own.pem"),
        "{err}"
    );
    // A broken [enrol]: a key enrolment cannot use, an authority that is not https.
    let (code, _, err) = check(own(config(
        &dir,
        "",
        &enrol.replace("server.key\"\nzone", "nothing.key\"\nzone"),
    )));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("enrol.device_key"), "{err}");
    let (code, _, err) = check(own(config(
        &dir,
        "",
        &enrol.replace("https://enrol", "http://enrol"),
    )));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("enrol.authority"), "{err}");
    // There but broken: not a first boot, a problem.
    std::fs::write(dir.join("own.pem"), "not a certificate").unwrap();
    let (code, _, err) = check(own(config(&dir, "", &enrol)));
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("own.pem") && err.contains("CERTIFICATE"),
        "{err}"
    );
}
