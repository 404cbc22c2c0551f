//! Black-box harness: fixtures made by certs/*.sh (openssl), the real `boxapi` binary, a rustls
//! client speaking raw HTTP/1.1, and tokens minted with the independent `jsonwebtoken` crate.
#![allow(dead_code)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// This build's `boxapi`: cargo names it for the box crate's own tests; the system tests
/// (crates/systest, which share this harness) find it beside their own executable.
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| match option_env!("CARGO_BIN_EXE_boxapi") {
        Some(b) => b.to_owned(),
        None => workspace_bin("boxapi").display().to_string(),
    })
}

/// The guard of a root-only test, which is `#[ignore]`d so that a plain `cargo test` reports it
/// ignored rather than passed; run with `--include-ignored` (as `make test` does, as root in CI)
/// without root, it fails instead of passing having proved nothing.
pub fn require_root(for_what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root ({for_what}): run it as root, as `make test` does in CI"
    );
}

/// A token endpoint's refusal of a client assertion dated beyond the leeway: `invalid_client`,
/// with a detail a tool developer can act on (it names `iat` and the client's clock).
pub fn assert_refused_as_from_the_future(r: &Resp) {
    assert_eq!(r.status, 401, "{r:?}");
    let v = r.json();
    assert_eq!(v["error"], "invalid_client", "{v}");
    let detail = v["error_description"].as_str().unwrap_or("");
    assert!(
        detail.contains("iat") && detail.contains("future") && detail.contains("clock"),
        "{detail}"
    );
}

/// A binary of this workspace in the target directory the running test was built into
/// (`target/debug/deps/TEST` → `target/debug/NAME`), built by `cargo test --workspace`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`, or run the tests with `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// The daemon under test: this build, or a cross-built binary (`make test-cross`) run through an
/// emulator: BOXAPI_TEST_BIN=target/cross/…/boxapi BOXAPI_TEST_RUNNER=qemu-arm-static.
pub fn daemon_command() -> Command {
    let bin = std::env::var("BOXAPI_TEST_BIN").unwrap_or_else(|_| bin().to_owned());
    match std::env::var("BOXAPI_TEST_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut c = Command::new(runner);
            c.arg(bin);
            c
        }
        _ => Command::new(bin),
    }
}
/// The authority's binary (system tests only).
pub fn authority_bin() -> PathBuf {
    workspace_bin("boxapi-authority")
}

pub const AUD: &str = "https://box.test";
pub const ISS: &str = "https://auth.test";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A tool signing key made by openssl.
pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    pub pem: Vec<u8>,
    pub spki: Vec<u8>,
}

impl Key {
    /// The public JWK: the raw key is the tail of the SubjectPublicKeyInfo.
    pub fn jwk(&self) -> Value {
        match self.alg {
            Algorithm::ES256 => {
                let p = &self.spki[self.spki.len() - 65..];
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64url(&p[1..33]), "y": b64url(&p[33..])})
            }
            _ => {
                let p = &self.spki[self.spki.len() - 32..];
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64url(p)})
            }
        }
    }

    pub fn encoding(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.pem).unwrap(),
            _ => EncodingKey::from_ed_pem(&self.pem).unwrap(),
        }
    }

    /// Signs arbitrary claims with this key (typ at+jwt).
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&h, claims, &self.encoding()).unwrap()
    }

    /// A valid 15-minute token for `tool` with `scope`.
    pub fn token(&self, tool: &str, scope: &str) -> String {
        self.sign(&claims(tool, scope))
    }
}

pub fn claims(tool: &str, scope: &str) -> Value {
    let t = now();
    json!({"iss": ISS, "aud": AUD, "client_id": tool, "sub": tool, "scope": scope, "iat": t, "exp": t + 900})
}

/// Shared fixtures: CA, server certificate, and four keys (tools a, b, c, and a central issuer).
pub struct Fixtures {
    pub dir: PathBuf,
    pub a: Key,
    pub b: Key,
    pub c: Key,
    pub issuer: Key,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let dir = std::env::temp_dir().join(format!("boxapi-fixtures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        run(Command::new(root.join("certs/make-dev-certs.sh")).arg(&dir));
        let key = |name: &str, alg: Algorithm| {
            let a = if alg == Algorithm::ES256 {
                "ES256"
            } else {
                "EdDSA"
            };
            run(Command::new(root.join("certs/make-tool-key.sh")).args([
                dir.to_str().unwrap(),
                name,
                a,
            ]));
            let k = Key {
                kid: format!("{name}-key"),
                alg,
                pem: std::fs::read(dir.join(format!("{name}.pem"))).unwrap(),
                spki: std::fs::read(dir.join(format!("{name}.pub.der"))).unwrap(),
            };
            std::fs::write(dir.join(format!("{name}.jwk")), k.jwk().to_string()).unwrap();
            k
        };
        let f = Fixtures {
            a: key("a", Algorithm::ES256),
            b: key("b", Algorithm::EdDSA),
            c: key("c", Algorithm::ES256),
            issuer: key("issuer", Algorithm::ES256),
            dir: dir.clone(),
        };
        std::fs::write(
            dir.join("issuer.jwks"),
            json!({"keys": [f.issuer.jwk()]}).to_string(),
        )
        .unwrap();
        f
    })
}

/// The standard test configuration; `extra_server` and `extra` are appended to [server] and the end.
pub fn config(state: &Path, extra_server: &str, extra: &str) -> String {
    let f = fixtures();
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
server_names = ["localhost"]
cert = "{d}/server.pem"
key = "{d}/server.key"
state_dir = "{s}/state"
control_socket = "{s}/control.sock"
{extra_server}

[auth]
audience = "{AUD}"
issuers = ["{ISS}"]
issuer_keys = "{d}/issuer.jwks"

[[tool]]
id = "a"
name = "Tool A"
origins = ["https://a.example", "https://a.example:8443"]
scopes = ["access", "counters"]
keys = ["{d}/a.jwk"]

[[tool]]
id = "b"
origins = ["https://b.example"]
scopes = ["access", "counters"]
keys = ["{d}/b.jwk"]

[[tool]]
id = "c"
origins = ["https://c.example"]
scopes = ["counters"]
keys = ["{d}/c.jwk"]

[[tool]]
id = "gone"
origins = ["https://gone.example"]
scopes = ["access"]
revoked = true

[metrics]
wan_interface = "lo"

[metrics.static]
box = {{ model = "Test Box", firmware_version = "9.9" }}
subscription = {{ down_kbps = 2000000, up_kbps = 700000 }}
access = {{ technology = "ftth", down_kbps = 2488000, up_kbps = 1244000 }}
{extra}
"#,
        d = f.dir.display(),
        s = state.display(),
        extra_server = if extra_server.contains("rate_limit") {
            extra_server.to_owned()
        } else {
            format!("rate_limit_per_second = 1000\nrate_limit_burst = 1000\n{extra_server}")
        },
    )
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub fn temp_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("boxapi-test-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Daemon {
    /// Starts `boxapi serve` on the standard config plus extras.
    pub fn start(name: &str, extra_server: &str, extra: &str) -> Daemon {
        let dir = temp_dir(name);
        std::fs::write(dir.join("boxapi.toml"), config(&dir, extra_server, extra)).unwrap();
        Daemon::start_in(dir, &[])
    }

    /// Starts `boxapi serve --config DIR/boxapi.toml`, with an optional command prefix (e.g. faketime).
    pub fn start_in(dir: PathBuf, prefix: &[&str]) -> Daemon {
        Daemon::start_command(dir, prefix, "serve")
    }

    /// Starts `boxapi COMMAND --config DIR/boxapi.toml`, or with "authority" the workspace's
    /// `boxapi-authority serve --config DIR/boxapi.toml`.
    pub fn start_command(dir: PathBuf, prefix: &[&str], command: &str) -> Daemon {
        let config = dir.join("boxapi.toml");
        let mut cmd = match prefix.split_first() {
            _ if command == "authority" => Command::new(authority_bin()),
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(bin());
                c
            }
            None => daemon_command(),
        };
        let command = if command == "authority" {
            "serve"
        } else {
            command
        };
        let mut child = cmd
            .args([command, "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"] == "listening" {
                        let _ = tx.send(v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        // Generous: under an emulator a start takes seconds.
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(100));
                panic!("daemon did not start: {:?}", log.lock().unwrap());
            }
        };
        Daemon {
            child,
            addr,
            dir,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether the daemon logs `needle` within 3 s (its stderr is read by another thread).
    pub fn logged(&self, needle: &str) -> bool {
        wait_for(Duration::from_secs(3), || self.log_text().contains(needle))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(self.addr, "localhost", "GET", path, headers)
    }

    pub fn get_token(&self, path: &str, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.get(path, &[("Authorization", &auth)])
    }

    /// Runs `boxapi ctl --socket … ARGS`; returns (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let sock = self.dir.join("control.sock");
        let out = daemon_command()
            .arg("ctl")
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }

    /// Stops the daemon as a service manager does (SIGTERM), so that it saves what it keeps in
    /// memory; asserts a clean exit within 10 s.
    pub fn terminate(mut self) -> PathBuf {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let mut code = None;
        let exited = wait_for(Duration::from_secs(10), || {
            code = self.child.try_wait().unwrap().map(|s| s.code());
            code.is_some()
        });
        assert!(exited, "no exit after SIGTERM: {}", self.log_text());
        assert_eq!(code.flatten(), Some(0), "{}", self.log_text());
        self.dir.clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    /// Asserts an RFC 9457 problem with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let j = self.json();
        assert_eq!(j["code"], code, "{j}");
        assert_eq!(j["status"], status);
        assert!(
            j["type"].is_string() && j["title"].is_string() && j["detail"].is_string(),
            "{j}"
        );
    }
}

pub fn ca_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(fixtures().dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

pub fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca_roots())
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Opens a verified TLS connection (SNI = `server_name` unless it is an IP).
pub fn connect(
    addr: SocketAddr,
    server_name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Parses one HTTP/1.1 response from raw bytes.
pub fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// One request on a fresh connection (Connection: close), with a Host header naming `host`.
pub fn request(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    request_with(addr, host, host, method, path, headers)
}

/// A request with a body (Content-Length set).
pub fn request_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = connect(addr, "localhost", client_config(rustls::DEFAULT_VERSIONS));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn request_with(
    addr: SocketAddr,
    sni: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut s = connect(addr, sni, client_config(rustls::DEFAULT_VERSIONS));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A TCP connection from a chosen loopback source address: another terminal, for the per-terminal
/// limits (rate, connection share). Reads time out after 15 s (a test never hangs on it).
pub fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let src: std::net::SocketAddrV4 = format!("{src}:0").parse().unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::from(src)).unwrap();
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst)).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// An ES256 tool key `NAME-key` made by certs/make-tool-key.sh in `dir`.
pub fn tool_key(dir: &Path, name: &str) -> Key {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    run(Command::new(root.join("certs/make-tool-key.sh")).args([
        dir.to_str().unwrap(),
        name,
        "ES256",
    ]));
    Key {
        kid: format!("{name}-key"),
        alg: Algorithm::ES256,
        pem: std::fs::read(dir.join(format!("{name}.pem"))).unwrap(),
        spki: std::fs::read(dir.join(format!("{name}.pub.der"))).unwrap(),
    }
}

/// `boxapi KIND sign` (`registry` or `fleet`) of the payload file `input` with the private root
/// key `key` into `out`: exit code and stderr.
pub fn operator_sign(kind: &str, key: &Path, input: &Path, out: &Path) -> (i32, String) {
    let done = daemon_command()
        .args([kind, "sign", "--key"])
        .arg(key)
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        done.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&done.stderr).into_owned(),
    )
}

/// `boxapi keygen --alg ALG --kid KID --out DIR`, which must succeed.
pub fn keygen(dir: &Path, alg: &str, kid: &str) {
    let out = daemon_command()
        .args(["keygen", "--alg", alg, "--kid", kid, "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {out:?}");
}
