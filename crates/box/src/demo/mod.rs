//! `boxapi demo`: a zero-setup local run with a generated CA, certificate, tool key and config.
use boxapi_core::auth::jwk::{self, Alg};
use boxapi_core::auth::mint;
pub(crate) mod x509;

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use x509::{CertSpec, EcKey};

pub const AUDIENCE: &str = "https://boxapi.demo";
pub const ISSUER: &str = "https://boxapi.demo/issuer";
pub const TOOL: &str = "demo";
pub const TOOL_ORIGIN: &str = "http://localhost:8000";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Bad(PathBuf, String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |e| DemoError::Io(path.to_path_buf(), e)
}

/// Writes a private key file (mode 0600).
fn write_private(path: &Path, content: &[u8]) -> Result<(), DemoError> {
    boxapi_core::files::write_private(path, content).map_err(|e| DemoError::Io(e.path, e.source))
}

/// The interface of the default IPv4 route, else the first non-loopback interface.
fn wan_interface() -> Option<String> {
    let routes = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let default = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000")).then(|| f[0].to_owned())
    });
    default.or_else(|| {
        let mut names: Vec<String> = fs::read_dir("/sys/class/net")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        names.into_iter().next()
    })
}

/// Creates (or reuses) the demo's files in `dir` and (re)writes its config for `listen`.
/// Returns the config path.
pub fn prepare(dir: &Path, listen: SocketAddr) -> Result<PathBuf, DemoError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join("tools"))
        .map_err(io(dir))?;
    let now = boxapi_core::time::unix_now() as i64;
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key.der"));
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key.pem"));
    if !(ca_cert.exists() && cert.exists() && key.exists()) {
        let ca = EcKey::generate().map_err(|e| DemoError::Bad(ca_key.clone(), e.to_string()))?;
        let leaf = EcKey::generate().map_err(|e| DemoError::Bad(key.clone(), e.to_string()))?;
        let ca_name = "boxapi demo CA";
        let ca_spec = CertSpec {
            common_name: ca_name,
            is_ca: true,
            dns_names: &[],
            ips: &[],
            not_before: now - 3600,
            not_after: now + 10 * 365 * 86_400,
        };
        let ips = [
            "127.0.0.1".parse().expect("literal address"),
            "::1".parse().expect("literal address"),
        ];
        let leaf_spec = CertSpec {
            common_name: "localhost",
            is_ca: false,
            dns_names: &["localhost"],
            ips: &ips,
            not_before: now - 3600,
            not_after: now + 365 * 86_400,
        };
        let ca_der = x509::issue(&ca_spec, &ca, &ca, ca_name)
            .map_err(|e| DemoError::Bad(ca_cert.clone(), e.to_string()))?;
        let leaf_der = x509::issue(&leaf_spec, &leaf, &ca, ca_name)
            .map_err(|e| DemoError::Bad(cert.clone(), e.to_string()))?;
        write_private(&ca_key, &ca.pkcs8)?;
        write_private(&key, x509::pem("PRIVATE KEY", &leaf.pkcs8).as_bytes())?;
        fs::write(&ca_cert, x509::pem("CERTIFICATE", &ca_der)).map_err(io(&ca_cert))?;
        fs::write(&cert, x509::pem("CERTIFICATE", &leaf_der)).map_err(io(&cert))?;
    }
    let private = dir.join("tools/demo.private.jwk");
    if !private.exists() {
        let k = mint::generate(Alg::Es256, "demo-1")
            .map_err(|e| DemoError::Bad(private.clone(), e.to_string()))?;
        write_private(&private, k.to_json().to_string().as_bytes())?;
        let public = dir.join("tools/demo.jwk");
        fs::write(&public, k.key.to_json().to_string()).map_err(io(&public))?;
    }
    let wan = wan_interface()
        .map(|w| format!("wan_interface = \"{w}\"\n"))
        .unwrap_or_default();
    let config = format!(
        r#"# Written by `boxapi demo`; rewritten at each start.
[server]
listen = ["{listen}"]
server_names = ["localhost"]
cert = "server.pem"
key = "server.key.pem"
state_dir = "state"
control_socket = "control.sock"

[auth]
audience = "{AUDIENCE}"
issuers = ["{ISSUER}"]

[[tool]]
id = "{TOOL}"
name = "Demo speed test"
origins = ["{TOOL_ORIGIN}"]
scopes = ["access", "counters"]
keys = ["tools/demo.jwk"]

[metrics]
{wan}
# What a PC cannot know about an ISP line: example values.
[metrics.static]
box = {{ model = "boxapi demo (PC)", firmware_version = "{version}" }}
subscription = {{ down_kbps = 1000000, up_kbps = 500000 }}
access = {{ technology = "ftth", down_kbps = 1244000, up_kbps = 1244000 }}
wifi = {{ enabled = true, radios = [{{ band = "2.4GHz", enabled = true, standard = "n" }}, {{ band = "5GHz", enabled = true, standard = "ax" }}] }}
"#,
        version = env!("CARGO_PKG_VERSION"),
    );
    let path = dir.join("boxapi.toml");
    fs::write(&path, config).map_err(io(&path))?;
    Ok(path)
}

/// A fresh 15-minute token for the demo tool.
pub fn token(dir: &Path) -> Result<String, DemoError> {
    let path = dir.join("tools/demo.private.jwk");
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    let key = jwk::parse_private(&text).map_err(|e| DemoError::Bad(path.clone(), e.to_string()))?;
    let spec = mint::TokenSpec {
        tool: TOOL,
        scope: "access counters",
        audience: AUDIENCE,
        issuer: ISSUER,
        ttl: 900,
        now: boxapi_core::time::unix_now(),
    };
    mint::token(&key, &spec).map_err(|e| DemoError::Bad(path, e.to_string()))
}

/// The command a user pastes into another terminal.
pub fn curl_command(dir: &Path, addr: SocketAddr, token: &str) -> String {
    let ca = fs::canonicalize(dir.join("ca.pem")).unwrap_or_else(|_| dir.join("ca.pem"));
    let host = match addr {
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        SocketAddr::V4(v4) => v4.ip().to_string(),
    };
    format!(
        "curl --cacert '{}' -H 'Authorization: Bearer {token}' https://{host}:{}/v1/access",
        ca.display(),
        addr.port()
    )
}
