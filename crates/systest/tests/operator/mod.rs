//! The operator's side for system tests: its PKI (tests/field/make-pki.sh) and an authority with
//! enrolment, shared by the tests that start boxes against it.
#![allow(dead_code)]
use super::common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

pub fn sh(dir: &Path, cmd: &str) {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The operator's PKI (tests/field/make-pki.sh): op-ca, auth, device-ca with its CRL, the good
/// `device`, and the refused `stranger`, `revoked` and `expired`.
pub fn pki(dir: &Path) {
    sh(dir, &format!("{ROOT}/tests/field/make-pki.sh ."));
}

/// An authority with enrolment (its CA and DNS server never reached here) on a free port, its
/// metrics on `metrics`, and `extra` at the end of its configuration.
pub fn authority(dir: &Path, metrics: SocketAddr, extra: &str) -> Daemon {
    keygen(dir, "EdDSA", "op");
    keygen(dir, "EdDSA", "tool");
    std::fs::write(
        dir.join("tsig.key"),
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtMzItYnl0ZXMh\n",
    )
    .unwrap();
    let text = format!(
        r#"[server]
cert = "auth.pem"
key = "auth.key"
state_dir = "state"
control_socket = "control.sock"

[auth]
audience = "https://authority.test"
issuers = ["https://authority.test"]

[[tool]]
id = "t"
origins = ["https://tool.example"]
scopes = ["access"]
keys = ["tool.jwk"]

[token_endpoint]
enabled = true
issuer = "https://authority.test"
signing_key = "op.private.jwk"

[authority]
listen = ["127.0.0.1:0"]
metrics_listen = "{metrics}"

[enrolment]
device_ca = "device-ca.pem"
device_crls = ["device-ca.crl"]
zone = "box.test"

[acme]
directory = "https://127.0.0.1:9/dir"
account = "acme-account.json"
contact = ["mailto:ops@isp.example"]

[dns]
server = "127.0.0.1:9"
tsig_name = "boxapi."
tsig_secret_file = "tsig.key"
{extra}"#
    );
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    Daemon::start_command(dir.to_path_buf(), &[], "authority")
}

/// A box's `[enrol]` for the authority on `port`, as the holder of `device` of the PKI in `pki`.
pub fn enrol_section(pki: &Path, device: &str, port: u16) -> String {
    let p = pki.display();
    format!(
        "\n[enrol]\nauthority = \"https://127.0.0.1:{port}\"\nauthority_ca = \"{p}/op-ca.pem\"\n\
         device_cert = \"{p}/{device}.pem\"\ndevice_key = \"{p}/{device}.key\"\nzone = \"box.test\"\n"
    )
}
