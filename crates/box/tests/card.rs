//! The card's layers: precedence (command > file > static > system) and providers that fail,
//! hang or print garbage never delay the answer past their timeout nor break the card.
mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn start_with_providers(name: &str, command_body: Option<&str>, timeout_ms: u64) -> Daemon {
    let dir = temp_dir(name);
    let mut metrics = format!(
        "provider_file = \"{}/card.json\"\nprovider_timeout_ms = {timeout_ms}\n",
        dir.display()
    );
    if let Some(body) = command_body {
        script(&dir.join("provider.sh"), body);
        metrics.push_str(&format!(
            "provider_command = \"{}/provider.sh\"\n",
            dir.display()
        ));
    }
    let text = config(&dir, "", "").replace("[metrics]\n", &format!("[metrics]\n{metrics}"));
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    Daemon::start_in(dir, &[])
}

#[test]
fn layers_take_precedence_in_order() {
    let d = start_with_providers(
        "layers",
        Some(
            r#"echo '{"access": {"technology": "vdsl2"}, "wifi": {"enabled": false, "radios": []}}'"#,
        ),
        2000,
    );
    std::fs::write(
        d.dir.join("card.json"),
        r#"{"access": {"technology": "adsl", "down_kbps": 20000}, "box": {"model": "From File"}}"#,
    )
    .unwrap();
    let t = fixtures().a.token("a", "access");
    // The file is looked at once a second at most (card::provider::FILE_CHECK): a read of the
    // card just before it was written may stand for up to that long.
    assert!(wait_for(Duration::from_secs(3), || d
        .get_token("/v1/access", &t)
        .json()["box"]["model"]
        == "From File"));
    let c = d.get_token("/v1/access", &t).json();
    assert_eq!(c["access"]["technology"], "vdsl2", "command over file: {c}");
    assert_eq!(c["access"]["down_kbps"], 20000, "file over static: {c}");
    assert_eq!(
        c["access"]["up_kbps"], 1244000,
        "static where nobody else says: {c}"
    );
    assert_eq!(c["box"]["model"], "From File");
    assert_eq!(c["box"]["firmware_version"], "9.9");
    assert_eq!(c["wifi"]["enabled"], false);

    // The file is re-read when it changes.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        d.dir.join("card.json"),
        r#"{"box": {"model": "Changed File"}}"#,
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(3), || d
        .get_token("/v1/access", &t)
        .json()["box"]["model"]
        == "Changed File"));

    // A file with garbage is skipped (and logged); the rest of the card stands.
    std::fs::write(
        d.dir.join("card.json"),
        "{\"access\": {\"technology\": \"fibre!\"}}   ",
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(3), || d
        .get_token("/v1/access", &t)
        .json()["box"]["model"]
        == "Test Box"));
    assert!(d.logged("provider_error"));
}

#[test]
fn failing_providers_are_skipped_within_their_timeout() {
    let t = fixtures().a.token("a", "access");
    for (name, body) in [
        ("hang", "sleep 30"),
        ("crash", "kill -SEGV $$"),
        ("garbage", "echo 'this is not json'"),
        ("huge", "head -c 10000000 /dev/zero | tr '\\0' 'x'"),
        // Too much output, then lingering with SIGPIPE ignored: refused for its size at once,
        // not waited for until the timeout.
        (
            "linger",
            "trap '' PIPE; head -c 100000 /dev/zero | tr '\\0' 'x'; sleep 30",
        ),
        (
            "wrongshape",
            "echo '{\"client\": {\"connection\": \"wifi\"}}'",
        ),
        ("exit1", "echo '{\"box\": {\"model\": \"X\"}}'; exit 1"),
    ] {
        let d = start_with_providers(name, Some(body), 300);
        let start = Instant::now();
        let r = d.get_token("/v1/access", &t);
        let took = start.elapsed();
        assert_eq!(r.status, 200, "{name}");
        let c = r.json();
        assert_eq!(c["box"]["model"], "Test Box", "{name}: static layer intact");
        assert_eq!(c["client"]["connection"], "unknown", "{name}");
        assert!(took < Duration::from_millis(1500), "{name}: took {took:?}");
        assert!(d.logged("provider_command"), "{name}: not logged");
        if name == "linger" {
            assert!(d.logged("larger than 64 KiB"), "{name}: {}", d.log_text());
        }
        // Counters never wait for providers.
        let start = Instant::now();
        assert_eq!(
            d.get_token("/v1/counters", &fixtures().a.token("a", "counters"))
                .status,
            200
        );
        assert!(start.elapsed() < Duration::from_millis(500));
    }
}

/// check-config (and so reload) applies the runtime's regular-file check to the provider files:
/// a named pipe or a directory there is a problem naming the key, while a file not written yet
/// is not (a provider may write it later). Before, check-config passed both.
#[test]
fn check_config_refuses_provider_files_that_are_not_regular() {
    let dir = temp_dir("provider-fifo");
    let fifo = dir.join("card.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    std::fs::create_dir(dir.join("stations.d")).unwrap();
    let metrics = format!(
        "provider_file = \"{}\"\nstation_provider_file = \"{}/stations.d\"\n",
        fifo.display(),
        dir.display()
    );
    let check = |metrics: &str| {
        let path = dir.join("boxapi.toml");
        let text = config(&dir, "", "").replace("[metrics]\n", &format!("[metrics]\n{metrics}"));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(&metrics);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("metrics.provider_file") && err.contains("named pipe"),
        "{err}"
    );
    assert!(
        err.contains("metrics.station_provider_file") && err.contains("directory"),
        "{err}"
    );

    // Absent is fine: the provider writes it later.
    let (code, err) = check(&format!(
        "provider_file = \"{}/later.json\"\n",
        dir.display()
    ));
    assert_eq!(code, Some(0), "{err}");
}
