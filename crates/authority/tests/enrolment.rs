//! Enrolment against real components (docs/certificates.md): Knot (authoritative, RFC 2136 with
//! TSIG) and Pebble (ACME test CA validating DNS-01 against that Knot), both started by
//! `tests/field/start-field.sh`, and `boxapi-authority serve` with mutual TLS. The box is played by
//! curl with a device certificate made here by openssl (device CA, a revoked device in a CRL, a
//! device of another CA).
use boxapi_core::{b64, names};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const ZONE: &str = "box.test";

fn field_script(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/field")).join(name)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("boxapi-enrol-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a shell command in `dir`; panics with its stderr when it fails.
fn sh(dir: &Path, cmd: &str) -> String {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Knot + Pebble + EAB Pebble, stopped when dropped.
struct Field {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Field {
    fn start(dir: &Path) -> Field {
        let dir = dir.join("field");
        let out = Command::new(field_script("start-field.sh"))
            .arg(&dir)
            .env("FIELD_ZONE", ZONE)
            .env("FIELD_MAX_SECONDS", "300")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start-field: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        Field { dir, env }
    }

    fn get(&self, key: &str) -> &str {
        &self.env[key]
    }

    /// Stops one daemon (`KNOT_PID`, `PEBBLE_PID`): it no longer answers.
    fn kill(&self, pid_key: &str) {
        let pid = self.get(pid_key);
        sh(&self.dir, &format!("kill -TERM {pid}; for i in $(seq 50); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; pkill -KILL -P {pid}; kill -KILL {pid} || true"));
    }

    /// Stops the ACME CA (Pebble, which keeps its accounts in memory) and starts it again on
    /// the same address: it has forgotten every account. The new Pebble is stopped with the field.
    fn restart_pebble(&self) {
        self.kill("PEBBLE_PID");
        let port = self.get("KNOT_PORT");
        let ca = self.get("PEBBLE_LISTENER_CA");
        let directory = self.get("ACME_DIRECTORY");
        sh(
            &self.dir,
            &format!(
                "PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
                   timeout --signal=TERM 300 pebble -config pebble/pebble.json \
                   -dnsserver 127.0.0.1:{port} </dev/null >pebble/pebble-again.log 2>&1 &
                 sed -i \"s/^PIDS=\\\"\\(.*\\)\\\"$/PIDS=\\\"\\1 $!\\\"/\" env
                 for i in $(seq 100); do
                     curl -fsS --max-time 2 --cacert {ca} {directory} >/dev/null 2>&1 && exit 0
                     sleep 0.1
                 done
                 echo 'Pebble did not come back' >&2; exit 1"
            ),
        );
    }

    /// `kdig` at the field's Knot: the answers' data, sorted.
    fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = sh(
            &self.dir,
            &format!(
                "kdig +timeout=2 +retry=0 +short @127.0.0.1 -p {} {name} {rtype}",
                self.get("KNOT_PORT")
            ),
        );
        let mut v: Vec<String> = out
            .lines()
            .map(|l| l.trim_matches('"').to_owned())
            .collect();
        v.sort();
        v
    }

    /// Pebble's (random, per start) root: what a browser trusts in these tests.
    fn root(&self, mgmt_key: &str) -> PathBuf {
        let path = self.dir.join(format!("{mgmt_key}-root.pem"));
        sh(
            &self.dir,
            &format!(
                "curl -fsS --max-time 5 --cacert {} {}/roots/0 -o {}",
                self.get("PEBBLE_LISTENER_CA"),
                self.get(mgmt_key),
                path.display()
            ),
        );
        path
    }
}

impl Drop for Field {
    fn drop(&mut self) {
        let _ = Command::new(field_script("stop-field.sh"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

/// The operator's CA and the authority's server certificate; the device CA with its CRL; a second,
/// unrelated CA. Devices are made on demand.
struct Pki {
    dir: PathBuf,
}

const DEVICE_EXT: &str =
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = |name: &str, cn: &str| {
            format!(
                "openssl ecparam -name prime256v1 -genkey -noout -out {name}.key
                 openssl req -x509 -new -key {name}.key -sha256 -days 30 -subj '/CN={cn}' \
                   -addext 'basicConstraints=critical,CA:TRUE' \
                   -addext 'keyUsage=critical,keyCertSign,cRLSign' -out {name}.pem\n"
            )
        };
        let script = format!(
            "{}{}{}
             openssl ecparam -name prime256v1 -genkey -noout -out server.key
             openssl req -new -key server.key -subj /CN=authority -out server.csr
             printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
             openssl x509 -req -in server.csr -CA operator-ca.pem -CAkey operator-ca.key -set_serial 2 \
               -days 30 -extfile server.ext -out server.pem 2>/dev/null
             touch index.txt; echo 01 > crlnumber
             cat > device-ca.cnf <<EOF
[ ca ]
default_ca = device
[ device ]
database = $PWD/index.txt
crlnumber = $PWD/crlnumber
certificate = $PWD/device-ca.pem
private_key = $PWD/device-ca.key
default_md = sha256
default_crl_days = 30
EOF
             openssl ca -config device-ca.cnf -gencrl -out device-ca.crl 2>/dev/null",
            ca("operator-ca", "operator CA"),
            ca("device-ca", "device CA"),
            ca("other-ca", "another CA"),
        );
        sh(dir, &script);
        Pki {
            dir: dir.to_owned(),
        }
    }

    /// A device certificate `name`.pem / `name`.key from `ca`; its DER.
    fn device(&self, name: &str, ca: &str, serial: u32) -> Device {
        sh(
            &self.dir,
            &format!(
                "openssl ecparam -name prime256v1 -genkey -noout -out {name}.key
                 openssl req -new -key {name}.key -subj /CN={name} -out {name}.csr
                 printf '{DEVICE_EXT}' > {name}.ext
                 openssl x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -set_serial {serial} \
                   -days 30 -extfile {name}.ext -out {name}.pem 2>/dev/null"
            ),
        );
        let pem = std::fs::read(self.dir.join(format!("{name}.pem"))).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap().to_vec();
        Device {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            name: names::box_name(&der, ZONE).unwrap(),
        }
    }

    /// Revokes a device of the device CA and regenerates the CRL.
    fn revoke(&self, name: &str) {
        sh(
            &self.dir,
            &format!(
                "openssl ca -config device-ca.cnf -revoke {name}.pem 2>/dev/null
                 openssl ca -config device-ca.cnf -gencrl -out device-ca.crl 2>/dev/null"
            ),
        );
    }
}

struct Device {
    cert: PathBuf,
    key: PathBuf,
    /// `<label>.box.test`, as both sides derive it.
    name: String,
}

/// A box's key and CSR (DER), made by openssl: `subj` and `san` as openssl takes them.
fn csr(dir: &Path, file: &str, curve: &str, subj: &str, san: &str) -> (Vec<u8>, Vec<u8>) {
    let ext = if san.is_empty() {
        String::new()
    } else {
        format!("-addext 'subjectAltName={san}'")
    };
    sh(
        dir,
        &format!(
            "openssl ecparam -name {curve} -genkey -noout -out {file}.key
             openssl req -new -key {file}.key -subj '{subj}' {ext} -outform DER -out {file}.csr
             openssl pkey -in {file}.key -pubout -outform DER -out {file}.spki"
        ),
    );
    (
        std::fs::read(dir.join(format!("{file}.csr"))).unwrap(),
        std::fs::read(dir.join(format!("{file}.spki"))).unwrap(),
    )
}

fn box_csr(dir: &Path, file: &str, name: &str) -> (Vec<u8>, Vec<u8>) {
    csr(
        dir,
        file,
        "prime256v1",
        &format!("/CN={name}"),
        &format!("DNS:{name}"),
    )
}

fn enrol_body(csr: &[u8], addresses: &[&str]) -> String {
    json!({ "csr": b64::url_encode(csr), "addresses": addresses }).to_string()
}

/// `boxapi-authority serve`, killed when dropped.
struct Authority {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Authority {
    fn start(dir: &Path) -> Authority {
        Authority::start_with(dir, "authority.toml")
    }

    /// `boxapi-authority serve` with the configuration file `config` of `dir`.
    fn start_with(dir: &Path, config: &str) -> Authority {
        let mut child = Command::new(env!("CARGO_BIN_EXE_boxapi-authority"))
            .args(["serve", "--config"])
            .arg(dir.join(config))
            .stdin(Stdio::null())
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
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            std::thread::sleep(Duration::from_millis(200));
            panic!("authority did not start: {:?}", log.lock().unwrap());
        };
        Authority {
            child,
            addr,
            dir: dir.to_owned(),
            log,
        }
    }

    /// The log so far, once it has settled: lines reach stderr through the writer thread's
    /// batches, so a request's line may follow its response by a few milliseconds.
    fn log_lines(&self) -> Vec<Value> {
        let count = || self.log.lock().unwrap().len();
        let until = Instant::now() + Duration::from_secs(2);
        let mut seen = count();
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
            let now = count();
            if now == seen {
                break;
            }
            seen = now;
        }
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// POST `body` to `path` with curl, as the box holding `device` (or no client certificate).
    /// `None` when no HTTP answer came (the handshake was refused).
    fn post(&self, path: &str, device: Option<&Device>, ctype: &str, body: &str) -> Reply {
        post(&self.dir, self.addr, path, device, ctype, body)
    }

    fn enrol(&self, device: &Device, body: &str) -> Reply {
        self.post("/v1/enrol", Some(device), "application/json", body)
    }

    /// One command on the control socket.
    fn control(&self, line: &str) -> Value {
        self.control_at("control.sock", line)
    }

    /// One command on the control socket `sock` of `dir` (a replica's own).
    fn control_at(&self, sock: &str, line: &str) -> Value {
        use std::os::unix::net::UnixStream;
        let mut s = UnixStream::connect(self.dir.join(sock)).unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POST `body` to `path` of the authority at `addr` (its server certificate from the operator CA
/// in `dir`) with curl, as the box holding `device` (or no client certificate). `None` when no
/// HTTP answer came (the handshake was refused, or the connection was closed).
fn post(
    dir: &Path,
    addr: SocketAddr,
    path: &str,
    device: Option<&Device>,
    ctype: &str,
    body: &str,
) -> Reply {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body_file = dir.join(format!("req-{n}.json"));
    std::fs::write(&body_file, body).unwrap();
    let args = [
        "-X".to_owned(),
        "POST".to_owned(),
        "-H".to_owned(),
        format!("Content-Type: {ctype}"),
        "--data-binary".to_owned(),
        format!("@{}", body_file.display()),
    ];
    curl(dir, addr, path, device, &args)
}

/// curl to `path` of the authority at `addr` with `args` (method, headers, body), as `post`.
fn curl(
    dir: &Path,
    addr: SocketAddr,
    path: &str,
    device: Option<&Device>,
    args: &[String],
) -> Reply {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_file = dir.join(format!("resp-{n}"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-D", "-"])
        .arg("--cacert")
        .arg(dir.join("operator-ca.pem"))
        .args(args)
        .arg("-o")
        .arg(&out_file);
    if let Some(d) = device {
        cmd.arg("--cert").arg(&d.cert).arg("--key").arg(&d.key);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", addr.port()))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_string();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    Reply {
        status: if out.status.success() { status } else { None },
        head,
        body: std::fs::read_to_string(&out_file).unwrap_or_default(),
        curl_error: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[derive(Debug)]
struct Reply {
    status: Option<u16>,
    head: String,
    body: String,
    curl_error: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    #[track_caller]
    fn assert_problem(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, Some(status), "{self:?}");
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{self:?}"
        );
        let v = self.json();
        assert_eq!(v["code"], code, "{self:?}");
        v["detail"].as_str().unwrap().to_owned()
    }

    #[track_caller]
    fn assert_refused_handshake(&self) {
        assert_eq!(self.status, None, "{self:?}");
        assert!(!self.curl_error.is_empty(), "{self:?}");
    }
}

/// An Ed25519 JWK made by openssl (the token endpoint's signing key; unused here but required).
fn ed25519_jwk(dir: &Path, kid: &str) {
    sh(
        dir,
        &format!(
            "openssl genpkey -algorithm ed25519 -outform DER -out {kid}.p8
             openssl pkey -inform DER -in {kid}.p8 -pubout -outform DER -out {kid}.spki"
        ),
    );
    let d = std::fs::read(dir.join(format!("{kid}.p8"))).unwrap();
    let x = std::fs::read(dir.join(format!("{kid}.spki"))).unwrap();
    let (d, x) = (
        b64::url_encode(&d[d.len() - 32..]),
        b64::url_encode(&x[x.len() - 32..]),
    );
    let jwk = |d: Option<&str>| {
        let mut v = json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid, "x": x});
        if let Some(d) = d {
            v["d"] = json!(d);
        }
        v.to_string()
    };
    std::fs::write(dir.join(format!("{kid}.private.jwk")), jwk(Some(&d))).unwrap();
    std::fs::write(dir.join(format!("{kid}.jwk")), jwk(None)).unwrap();
}

struct Acme<'a> {
    directory: &'a str,
    /// EAB key id and MAC key (base64url), written to a file.
    eab: Option<(&'a str, &'a str)>,
}

/// Where the authority's CA and DNS server are: the field's, or stand-ins.
struct Upstream<'a> {
    /// PEM trust anchors of the CA's HTTPS.
    ca: &'a str,
    /// The DNS server taking updates, `IP:port`.
    dns: &'a str,
    tsig_name: &'a str,
    /// Base64.
    tsig_secret: &'a str,
}

/// The authority's configuration against the field's Knot and `acme`.
fn write_config(dir: &Path, field: &Field, acme: Acme<'_>) {
    let upstream = Upstream {
        ca: field.get("PEBBLE_LISTENER_CA"),
        dns: field.get("KNOT_ADDR"),
        tsig_name: field.get("TSIG_NAME"),
        tsig_secret: field.get("TSIG_SECRET"),
    };
    write_config_for(dir, &upstream, acme);
}

/// The authority's configuration: token endpoint (required), `[enrolment]`, `[acme]`, `[dns]`.
fn write_config_for(dir: &Path, upstream: &Upstream<'_>, acme: Acme<'_>) {
    if !dir.join("op.jwk").exists() {
        ed25519_jwk(dir, "op");
        ed25519_jwk(dir, "tool");
    }
    std::fs::write(dir.join("tsig.key"), format!("{}\n", upstream.tsig_secret)).unwrap();
    let eab = match acme.eab {
        Some((kid, key)) => {
            std::fs::write(dir.join("eab.key"), key).unwrap();
            format!("eab_kid = \"{kid}\"\neab_hmac_key_file = \"eab.key\"\n")
        }
        None => String::new(),
    };
    let text = format!(
        r#"
[server]
cert = "server.pem"
key = "server.key"
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

[enrolment]
device_ca = "device-ca.pem"
device_crls = ["device-ca.crl"]
zone = "{ZONE}"

[acme]
directory = "{directory}"
account = "acme-account.json"
contact = ["mailto:ops@isp.example"]
ca = "{ca}"
{eab}
[dns]
server = "{knot}"
tsig_name = "{tsig_name}"
tsig_secret_file = "tsig.key"
ttl = 30
"#,
        directory = acme.directory,
        ca = upstream.ca,
        knot = upstream.dns,
        tsig_name = upstream.tsig_name,
    );
    std::fs::write(dir.join("authority.toml"), &text).unwrap();
    std::fs::write(dir.join("base.toml"), text).unwrap();
}

/// The configuration `write_config` wrote last, saved as `file` with `acme` lines added to `[acme]`
/// and each `(from, to)` replaced.
fn config_variant(dir: &Path, file: &str, acme: &str, replace: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(dir.join("base.toml"))
        .unwrap()
        .replace("\n[dns]\n", &format!("{acme}\n[dns]\n"));
    for (from, to) in replace {
        assert!(text.contains(from), "{from} not in the configuration");
        text = text.replace(from, to);
    }
    std::fs::write(dir.join(file), text).unwrap();
}

/// A throw-away `redis-server` (loopback, free port, no persistence), killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (make deps installs it)");
        let until = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `Retry-After` of a reply, in seconds.
fn retry_after(r: &Reply) -> u64 {
    r.head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Retry-After: {r:?}"))
}

/// Checks an issued chain: the leaf names exactly `name`, carries the CSR's key, and verifies to
/// Pebble's root.
fn assert_chain(dir: &Path, chain: &str, name: &str, csr_spki: &[u8], root: &Path) {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(certs.len() >= 2, "leaf and intermediate: {chain}");
    let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        csr_spki,
        "the leaf carries the CSR's key"
    );
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::DNSName(d) => d.to_string(),
            other => panic!("unexpected SAN {other}"),
        })
        .collect();
    assert_eq!(names, [name]);
    let leaf_pem = dir.join("leaf.pem");
    let rest_pem = dir.join("intermediates.pem");
    let split = chain.find("-----END CERTIFICATE-----").unwrap() + 25;
    std::fs::write(&leaf_pem, &chain[..split]).unwrap();
    std::fs::write(&rest_pem, chain[split..].trim_start()).unwrap();
    let out = sh(
        dir,
        &format!(
            "openssl verify -CAfile {} -untrusted {} {}",
            root.display(),
            rest_pem.display(),
            leaf_pem.display()
        ),
    );
    assert!(out.trim_end().ends_with(": OK"), "{out}");
}

/// A good enrolment end to end, concurrent first enrolments sharing one account, the address
/// endpoint, then every bad input refused with a clear error and nothing changed.
#[test]
fn enrolment_issues_for_the_box_name_only() {
    let t0 = Instant::now();
    let dir = temp_dir("main");
    let field = Field::start(&dir);
    let pki = Pki::new(&dir);
    let a = pki.device("dev-a", "device-ca", 10);
    let b = pki.device("dev-b", "device-ca", 11);
    let c = pki.device("dev-c", "device-ca", 12);
    let revoked = pki.device("dev-r", "device-ca", 13);
    let stranger = pki.device("dev-x", "other-ca", 10);
    pki.revoke("dev-r");
    write_config(
        &dir,
        &field,
        Acme {
            directory: field.get("ACME_DIRECTORY"),
            eab: None,
        },
    );
    let auth = Arc::new(Authority::start(&dir));
    assert_eq!(a.name.len(), names::LABEL_LEN + 1 + ZONE.len());

    // Three boxes enrol at once, before the ACME account exists: one account is created.
    let mut handles = Vec::new();
    for (i, dev) in [a, b, c].into_iter().enumerate() {
        let auth = auth.clone();
        let dir = dir.clone();
        handles.push(std::thread::spawn(move || {
            let (csr, spki) = box_csr(&dir, &format!("box-{i}"), &dev.name);
            let v4 = format!("192.168.1.{}", 10 + i);
            let v6 = format!("fd00::{}", 10 + i);
            let r = auth.enrol(&dev, &enrol_body(&csr, &[&v4, &v6]));
            (dev, spki, r)
        }));
    }
    let mut boxes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (dev, _, r) in &boxes {
        assert_eq!(r.status, Some(200), "{r:?}");
        assert_eq!(r.json()["name"], dev.name.as_str());
        // Pebble offers no ARI: no renewal window.
        assert_eq!(r.json()["renew_after"], Value::Null, "{r:?}");
    }
    let created = auth
        .log_lines()
        .iter()
        .filter(|l| l["event"] == "acme_account_created")
        .count();
    assert_eq!(created, 1, "account creation is serialised");
    let mode = std::fs::metadata(dir.join("acme-account.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let (a, a_spki, a_reply) = boxes.remove(0);
    let (b, _, _) = boxes.remove(0);
    let root = field.root("PEBBLE_MGMT");
    assert_chain(
        &dir,
        a_reply.json()["chain"].as_str().unwrap(),
        &a.name,
        &a_spki,
        &root,
    );
    assert_eq!(field.dig(&a.name, "A"), ["192.168.1.10"]);
    assert_eq!(field.dig(&a.name, "AAAA"), ["fd00::10"]);
    assert_eq!(
        field.dig(&format!("_acme-challenge.{}", a.name), "TXT"),
        Vec::<String>::new()
    );
    // One log event per enrolment, with the name, and no secret.
    let events: Vec<Value> = auth
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "enrolment" && l["name"] == a.name.as_str())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["result"], "ok");
    assert!(events[0]["duration_ms"].as_str().is_some());
    let all_log = auth.log.lock().unwrap().join("\n");
    assert!(!all_log.contains(field.get("TSIG_SECRET")));
    let account = std::fs::read_to_string(dir.join("acme-account.json")).unwrap();
    let account_key: Value = serde_json::from_str(&account).unwrap();
    let key_b64 = account_key["key_pkcs8"].as_str().unwrap_or("-").to_owned();
    assert!(!all_log.contains(&key_b64));

    // The address endpoint: DNS only.
    let r = auth.post(
        "/v1/address",
        Some(&a),
        "application/json",
        &json!({"addresses": ["10.1.2.3", "2a01:db8::3", "10.1.2.3"]}).to_string(),
    );
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(
        r.json(),
        json!({"name": a.name, "addresses": ["10.1.2.3", "2a01:db8::3"]})
    );
    assert_eq!(field.dig(&a.name, "A"), ["10.1.2.3"]);
    assert_eq!(field.dig(&a.name, "AAAA"), ["2a01:db8::3"]);

    // Bad input: a clear error, and nothing changes.
    let unchanged = |what: &str| {
        assert_eq!(field.dig(&a.name, "A"), ["10.1.2.3"], "{what}");
        assert_eq!(field.dig(&a.name, "AAAA"), ["2a01:db8::3"], "{what}");
        assert_eq!(field.dig(&b.name, "A"), ["192.168.9.9"], "{what}");
        assert_eq!(
            field.dig(&format!("_acme-challenge.{}", a.name), "TXT"),
            Vec::<String>::new(),
            "{what}"
        );
    };
    let addrs = ["192.168.7.7"];
    let (other, _) = box_csr(&dir, "other", &b.name);
    let detail = auth
        .enrol(&a, &enrol_body(&other, &addrs))
        .assert_problem(403, "name_not_allowed");
    assert!(
        detail.contains(&b.name) && detail.contains(&a.name),
        "{detail}"
    );
    let (extra, _) = csr(
        &dir,
        "extra",
        "prime256v1",
        &format!("/CN={}", a.name),
        &format!("DNS:{},DNS:www.{ZONE}", a.name),
    );
    let detail = auth
        .enrol(&a, &enrol_body(&extra, &addrs))
        .assert_problem(403, "name_not_allowed");
    assert!(detail.contains(&format!("www.{ZONE}")), "{detail}");
    let (cn_other, _) = csr(
        &dir,
        "cn-other",
        "prime256v1",
        "/CN=evil.example",
        &format!("DNS:{}", a.name),
    );
    auth.enrol(&a, &enrol_body(&cn_other, &addrs))
        .assert_problem(403, "name_not_allowed");
    let (ip_san, _) = csr(
        &dir,
        "ip-san",
        "prime256v1",
        &format!("/CN={}", a.name),
        &format!("DNS:{},IP:192.168.1.1", a.name),
    );
    auth.enrol(&a, &enrol_body(&ip_san, &addrs))
        .assert_problem(403, "name_not_allowed");
    let (p384, _) = csr(
        &dir,
        "p384",
        "secp384r1",
        &format!("/CN={}", a.name),
        &format!("DNS:{}", a.name),
    );
    let detail = auth
        .enrol(&a, &enrol_body(&p384, &addrs))
        .assert_problem(400, "invalid_request");
    assert!(detail.contains("P-256"), "{detail}");
    let (mut forged, _) = box_csr(&dir, "forged", &a.name);
    let last = forged.len() - 3;
    forged[last] ^= 0x01;
    auth.enrol(&a, &enrol_body(&forged, &addrs))
        .assert_problem(400, "invalid_request");
    auth.enrol(&a, &enrol_body(b"not a CSR at all", &addrs))
        .assert_problem(400, "invalid_request");
    let (good, _) = box_csr(&dir, "good", &a.name);
    for body in [
        json!({"csr": "!!not base64url!!", "addresses": addrs}).to_string(),
        json!({"addresses": addrs}).to_string(),
        "{\"csr\": ".to_owned(),
        "[]".to_owned(),
    ] {
        auth.enrol(&a, &body).assert_problem(400, "invalid_request");
    }
    auth.post(
        "/v1/enrol",
        Some(&a),
        "text/plain",
        &enrol_body(&good, &addrs),
    )
    .assert_problem(400, "invalid_request");
    let nine: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}")).collect();
    let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
    for bad in [
        &[][..],
        &["127.0.0.1"],
        &["8.8.8.8"],
        &["169.254.0.1"],
        &["fe80::1"],
        &["ff02::1"],
        &["::"],
        &["192.168.1.1", "box.lan"],
        &nine,
    ] {
        let detail = auth
            .enrol(&a, &enrol_body(&good, bad))
            .assert_problem(400, "invalid_request");
        assert!(detail.contains("address"), "{detail}");
        auth.post(
            "/v1/address",
            Some(&a),
            "application/json",
            &json!({ "addresses": bad }).to_string(),
        )
        .assert_problem(400, "invalid_request");
    }
    // No device certificate: 401 on both endpoints; the token endpoint's discovery still answers.
    for path in ["/v1/enrol", "/v1/address"] {
        let detail = auth
            .post(path, None, "application/json", &enrol_body(&good, &addrs))
            .assert_problem(401, "device_certificate_required");
        assert!(detail.contains("device certificate"), "{detail}");
    }
    // Devices of another CA, and revoked ones, do not get through the handshake.
    auth.enrol(&stranger, &enrol_body(&good, &addrs))
        .assert_refused_handshake();
    auth.enrol(&revoked, &enrol_body(&good, &addrs))
        .assert_refused_handshake();
    let status = auth.control(r#"{"cmd":"status"}"#);
    assert_eq!(status["enrolment"]["zone"], ZONE, "{status}");
    assert_eq!(status["enrolment"]["acme_account"], "loaded", "{status}");
    assert_eq!(status["enrolment"]["issuing"], 0, "{status}");
    // A device revoked while the authority runs: refused once the new CRL is reloaded.
    let late = pki.device("dev-l", "device-ca", 14);
    let publish = |d: &Device| {
        auth.post(
            "/v1/address",
            Some(d),
            "application/json",
            &json!({"addresses": ["192.168.9.9"]}).to_string(),
        )
    };
    assert_eq!(publish(&late).status, Some(200));
    pki.revoke("dev-l");
    assert_eq!(auth.control(r#"{"cmd":"reload"}"#)["ok"], true);
    publish(&late).assert_refused_handshake();
    assert_eq!(publish(&b).status, Some(200), "other devices unaffected");
    assert_eq!(field.dig(&b.name, "A"), ["192.168.9.9"]);
    // Suspended: 503 with Retry-After, for boxes too.
    assert_eq!(
        auth.control(r#"{"cmd":"suspend","retry_after":120}"#)["ok"],
        true
    );
    let r = auth.enrol(&a, &enrol_body(&good, &addrs));
    r.assert_problem(503, "suspended");
    assert!(
        r.head.to_ascii_lowercase().contains("retry-after: 120"),
        "{r:?}"
    );
    assert_eq!(auth.control(r#"{"cmd":"resume"}"#)["ok"], true);
    unchanged("after every refusal");
    let refusals = auth
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "enrolment" && l["result"] != "ok")
        .count();
    assert!(
        refusals >= 20,
        "each refused enrolment is logged: {refusals}"
    );
    eprintln!("enrolment_issues_for_the_box_name_only: {:?}", t0.elapsed());
}

/// The DNS server or the ACME CA down: 502 with the cause named, no challenge record left, and
/// the authority keeps answering.
#[test]
fn upstream_failures_are_bad_gateway() {
    let t0 = Instant::now();
    let dir = temp_dir("upstream");
    let field = Field::start(&dir);
    let pki = Pki::new(&dir);
    let a = pki.device("dev-a", "device-ca", 10);
    write_config(
        &dir,
        &field,
        Acme {
            directory: field.get("ACME_DIRECTORY"),
            eab: None,
        },
    );
    let auth = Authority::start(&dir);
    let (csr, _) = box_csr(&dir, "box", &a.name);

    // The CA hanging (accepting TCP, never answering; the kernel's backlog does the accepting):
    // the enrolment ends within its bound with 502, and a second enrolment for the same name
    // meanwhile is `503 busy` at once instead of queueing for an issuance slot.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_dir = format!("https://{}/dir", hang.local_addr().unwrap());
    write_config(
        &dir,
        &field,
        Acme {
            directory: &hang_dir,
            eab: None,
        },
    );
    // The account made at start belongs to Pebble: the hanging CA gets a file of its own.
    let toml = std::fs::read_to_string(dir.join("authority.toml")).unwrap();
    std::fs::write(
        dir.join("authority.toml"),
        toml.replace("acme-account.json", "acme-account-hang.json"),
    )
    .unwrap();
    let r = auth.control(r#"{"cmd":"reload"}"#);
    assert_eq!(r["ok"], true, "{r}");
    std::thread::scope(|s| {
        let started = Instant::now();
        let first = s.spawn(|| auth.enrol(&a, &enrol_body(&csr, &["192.168.1.4"])));
        std::thread::sleep(Duration::from_millis(1500));
        let second = auth.enrol(&a, &enrol_body(&csr, &["192.168.1.4"]));
        second.assert_problem(503, "busy");
        assert!(
            second.head.to_ascii_lowercase().contains("retry-after"),
            "{second:?}"
        );
        let detail = first.join().unwrap().assert_problem(502, "acme_failed");
        assert!(detail.contains(&hang_dir), "{detail}");
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{:?}",
            started.elapsed()
        );
    });
    drop(hang);
    write_config(
        &dir,
        &field,
        Acme {
            directory: field.get("ACME_DIRECTORY"),
            eab: None,
        },
    );
    assert_eq!(auth.control(r#"{"cmd":"reload"}"#)["ok"], true);

    field.kill("PEBBLE_PID");
    let detail = auth
        .enrol(&a, &enrol_body(&csr, &["192.168.1.2"]))
        .assert_problem(502, "acme_failed");
    assert!(detail.contains(field.get("ACME_DIRECTORY")), "{detail}");
    assert_eq!(
        field.dig(&format!("_acme-challenge.{}", a.name), "TXT"),
        Vec::<String>::new()
    );

    field.kill("KNOT_PID");
    let knot = field.get("KNOT_ADDR");
    for r in [
        auth.enrol(&a, &enrol_body(&csr, &["192.168.1.3"])),
        auth.post(
            "/v1/address",
            Some(&a),
            "application/json",
            &json!({"addresses": ["192.168.1.3"]}).to_string(),
        ),
    ] {
        let detail = r.assert_problem(502, "dns_update_failed");
        assert!(detail.contains(knot), "{detail}");
    }
    let last = auth
        .log_lines()
        .into_iter()
        .rfind(|l| l["event"] == "enrolment")
        .unwrap();
    assert_eq!(last["result"], "dns_update_failed");
    assert_eq!(last["name"], a.name.as_str());
    eprintln!("upstream_failures_are_bad_gateway: {:?}", t0.elapsed());
}

/// External Account Binding against the Pebble that requires it: the right key enrols; no key or
/// a wrong key is `acme_failed` with the CA's reason.
#[test]
fn external_account_binding() {
    let t0 = Instant::now();
    let dir = temp_dir("eab");
    let field = Field::start(&dir);
    let pki = Pki::new(&dir);
    let a = pki.device("dev-a", "device-ca", 10);
    let (csr, spki) = box_csr(&dir, "box", &a.name);
    let body = enrol_body(&csr, &["192.168.1.2", "fd00::2"]);
    let directory = field.get("ACME_EAB_DIRECTORY");

    for (eab, want) in [
        (None, "externalAccountRequired"),
        (
            Some((field.get("EAB_KID"), "d3JvbmcgbWFjIGtleSB3cm9uZyBtYWMga2V5")),
            "unauthorized",
        ),
    ] {
        write_config(&dir, &field, Acme { directory, eab });
        let auth = Authority::start(&dir);
        let detail = auth.enrol(&a, &body).assert_problem(502, "acme_failed");
        assert!(detail.contains(want), "{detail}");
        assert!(!dir.join("acme-account.json").exists());
    }
    let key = field.get("EAB_HMAC_B64URL");
    write_config(
        &dir,
        &field,
        Acme {
            directory,
            eab: Some((field.get("EAB_KID"), key)),
        },
    );
    let auth = Authority::start(&dir);
    let r = auth.enrol(&a, &body);
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_chain(
        &dir,
        r.json()["chain"].as_str().unwrap(),
        &a.name,
        &spki,
        &field.root("PEBBLE_EAB_MGMT"),
    );
    assert!(!auth.log.lock().unwrap().join("\n").contains(key));
    eprintln!("external_account_binding: {:?}", t0.elapsed());
}

/// `check-config` names every problem of the enrolment sections and their files at once.
#[test]
fn check_config_reports_every_enrolment_problem() {
    let dir = temp_dir("check");
    Pki::new(&dir);
    ed25519_jwk(&dir, "op");
    ed25519_jwk(&dir, "tool");
    std::fs::write(dir.join("tsig.key"), "not base64 at all!\n").unwrap();
    std::fs::write(
        dir.join("bad.crl"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("acme-account.json"), "{\"id\": 1}").unwrap();
    sh(&dir, "chmod 600 acme-account.json");
    let text = r#"
[server]
cert = "server.pem"
key = "server.key"
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
[enrolment]
device_ca = "missing-ca.pem"
device_crls = ["bad.crl"]
zone = "box.test"
[acme]
directory = "https://127.0.0.1:1/dir"
account = "acme-account.json"
ca = "missing-acme-ca.pem"
eab_kid = "kid-1"
eab_hmac_key_file = "missing-eab.key"
[dns]
server = "127.0.0.1:53"
tsig_name = "boxapi-update"
tsig_secret_file = "tsig.key"
"#;
    std::fs::write(dir.join("authority.toml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_boxapi-authority"))
        .args(["check-config", "--config"])
        .arg(dir.join("authority.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for want in [
        "enrolment.device_ca (",
        "enrolment.device_crls (",
        "acme.account (",
        "acme.ca (",
        "acme.eab_hmac_key_file (",
        "dns.tsig_secret_file (",
    ] {
        assert!(stderr.contains(want), "{want} missing from:\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), 6, "{stderr}");
}

const WEEK: u64 = 7 * 86_400;
const ONE: &str = "max_issuances_per_device = 1";
/// Nothing listens on port 1: the DNS update fails at once, after the issuance was counted.
const NO_DNS: &str = "server = \"127.0.0.1:1\"";

/// What the limit tests start from: the field, devices a and b with an enrolment body each, the
/// configuration against Pebble (`base.toml`), and its `[dns] server` line.
struct LimitSetup {
    dir: PathBuf,
    /// Stops Knot and Pebble when the test ends.
    _field: Field,
    a: Device,
    b: Device,
    body_a: String,
    body_b: String,
    dns: String,
}

fn limit_setup(name: &str) -> LimitSetup {
    let dir = temp_dir(name);
    let field = Field::start(&dir);
    let pki = Pki::new(&dir);
    let (a, b) = (
        pki.device("dev-a", "device-ca", 10),
        pki.device("dev-b", "device-ca", 11),
    );
    write_config(
        &dir,
        &field,
        Acme {
            directory: field.get("ACME_DIRECTORY"),
            eab: None,
        },
    );
    let body = |d: &Device, addr| enrol_body(&box_csr(&dir, &d.name, &d.name).0, &[addr]);
    LimitSetup {
        body_a: body(&a, "192.168.1.2"),
        body_b: body(&b, "192.168.1.3"),
        dns: format!("server = \"{}\"", field.get("KNOT_ADDR")),
        dir,
        _field: field,
        a,
        b,
    }
}

/// A device past `[acme] max_issuances_per_device` gets `429 rate_limited` with `Retry-After`
/// (until its oldest issuance leaves the window) and the CA is not asked; a failed issuance does
/// not count; other devices are not affected; a reload changes the limit and keeps the counts.
#[test]
fn issuances_per_device_are_limited() {
    let t0 = Instant::now();
    let t = limit_setup("limit");
    let (dir, a, body) = (&t.dir, &t.a, &t.body_a);
    config_variant(dir, "authority.toml", ONE, &[(&t.dns, NO_DNS)]);
    let auth = Authority::start(dir);
    auth.enrol(a, body).assert_problem(502, "dns_update_failed");

    config_variant(dir, "authority.toml", ONE, &[]);
    assert_eq!(auth.control(r#"{"cmd":"reload"}"#)["ok"], true);
    let r = auth.enrol(a, body);
    assert_eq!(r.status, Some(200), "the failure did not count: {r:?}");
    let started = Instant::now();
    let r = auth.enrol(a, body);
    let detail = r.assert_problem(429, "rate_limited");
    assert!(
        detail.contains("renewals included") && detail.contains("1 certificates per 7 days"),
        "{detail}"
    );
    let wait = retry_after(&r);
    assert!(
        (WEEK - 60..=WEEK).contains(&wait),
        "until the issuance leaves the window: {wait}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, without the CA"
    );
    let r = auth.enrol(&t.b, &t.body_b);
    assert_eq!(r.status, Some(200), "other devices are not affected: {r:?}");

    // A reload with a higher limit: the count stays, the new limit applies.
    config_variant(dir, "authority.toml", "max_issuances_per_device = 2", &[]);
    assert_eq!(auth.control(r#"{"cmd":"reload"}"#)["ok"], true);
    let status = auth.control(r#"{"cmd":"status"}"#);
    assert_eq!(
        status["enrolment"]["max_issuances_per_device"], 2,
        "{status}"
    );
    assert_eq!(status["enrolment"]["issuance_window_days"], 7, "{status}");
    assert_eq!(auth.enrol(a, body).status, Some(200));
    auth.enrol(a, body).assert_problem(429, "rate_limited");
    let limited = auth
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "enrolment" && l["result"] == "rate_limited")
        .count();
    assert_eq!(limited, 2, "each refusal is logged");
    eprintln!("issuances_per_device_are_limited: {:?}", t0.elapsed());
}

/// With the Redis store the limit holds across replicas: a device that got its certificate from
/// one replica is refused by the other, and a failure at one is uncounted for both.
#[test]
fn issuance_limit_is_shared_by_replicas() {
    let t0 = Instant::now();
    let t = limit_setup("limit-redis");
    let dir = &t.dir;
    let redis = Redis::start();
    let store = format!(
        "\n[authority.store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"t:\"\n\n[enrolment]",
        redis.port
    );
    let second = [
        ("state_dir = \"state\"", "state_dir = \"state2\""),
        (
            "control_socket = \"control.sock\"",
            "control_socket = \"control2.sock\"",
        ),
        ("\n[enrolment]", store.as_str()),
        (t.dns.as_str(), t.dns.as_str()),
    ];
    config_variant(dir, "replica2.toml", ONE, &second);
    config_variant(dir, "authority.toml", ONE, &second[2..]);
    let r1 = Authority::start(dir);
    let r = r1.enrol(&t.a, &t.body_a);
    assert_eq!(r.status, Some(200), "{r:?}");
    let r2 = Authority::start_with(dir, "replica2.toml");
    let r = r2.enrol(&t.a, &t.body_a);
    r.assert_problem(429, "rate_limited");
    assert!(retry_after(&r) > WEEK - 60, "{r:?}");

    // b fails at replica 2 (its DNS server is gone), then gets its certificate at replica 1.
    let mut broken = second;
    broken[3].1 = NO_DNS;
    config_variant(dir, "replica2.toml", ONE, &broken);
    drop(r2);
    let r2 = Authority::start_with(dir, "replica2.toml");
    r2.enrol(&t.b, &t.body_b)
        .assert_problem(502, "dns_update_failed");
    let r = r1.enrol(&t.b, &t.body_b);
    assert_eq!(r.status, Some(200), "the failure was uncounted: {r:?}");
    r2.enrol(&t.b, &t.body_b)
        .assert_problem(429, "rate_limited");
    eprintln!("issuance_limit_is_shared_by_replicas: {:?}", t0.elapsed());
}

/// `POST /v1/enrol` may take far longer than any other request (a slot, the CA's validation): the
/// listener cuts other requests at the general limit, not an enrolment, whose limit is what its
/// own bounds add up to. Run in process with a general limit of 1 s (30 s in production) against
/// a DNS server that never answers (no field needed): the address update is cut at the general
/// limit, the enrolment lives until its own DNS bound (5 s) fails it with a 502.
#[test]
fn enrolment_outlasts_the_general_request_limit() {
    use boxapi_authority::{app::App, http, server, snapshot::Snapshot, store::Store};
    let dir = temp_dir("request-limit");
    let pki = Pki::new(&dir);
    let a = pki.device("dev-a", "device-ca", 10);
    // Connections are queued by the kernel and never accepted: updates get no answer.
    let silent_dns = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dns = silent_dns.local_addr().unwrap().to_string();
    let ca = dir.join("operator-ca.pem").display().to_string();
    write_config_for(
        &dir,
        &Upstream {
            ca: &ca,
            dns: &dns,
            tsig_name: "boxapi-update",
            tsig_secret: &b64::std_encode(&[7; 32]),
        },
        Acme {
            // Never reached: the DNS update comes first and fails.
            directory: "https://127.0.0.1:1/dir",
            eab: None,
        },
    );
    let snapshot = Snapshot::load(&dir.join("authority.toml")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (app, addr) = rt.block_on(async {
        let listeners = server::bind(&snapshot.config.listen).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let store = Store::open(
            &snapshot.config.authority.store,
            None,
            Default::default(),
            boxapi_core::time::unix_now(),
        )
        .unwrap();
        let app = App::new(snapshot, Default::default(), store);
        let shutdown = async {
            let _ = stopped.await;
        };
        tokio::spawn(server::run_with_request_limit(
            app.clone(),
            listeners,
            shutdown,
            Duration::from_secs(1),
        ));
        (app, addr)
    });

    // The production limits: 30 s for every route but the enrolment's, which covers its slot
    // wait and the whole issuance.
    let settings = app.snapshot().enrolment.clone().unwrap();
    for path in ["/v1/address", "/v1/token", "/v1/locate", "/nowhere"] {
        assert_eq!(
            http::time_limit(&app, path, server::REQUEST_LIMIT),
            server::REQUEST_LIMIT,
            "{path}"
        );
    }
    let enrol_limit = http::time_limit(&app, "/v1/enrol", server::REQUEST_LIMIT);
    assert!(
        enrol_limit
            > http::BODY_DEADLINE
                + boxapi_authority::enrol::SLOT_WAIT
                + settings.dns.request_timeout
                + settings.acme.total_timeout,
        "{enrol_limit:?}"
    );

    let started = Instant::now();
    let r = post(
        &dir,
        addr,
        "/v1/address",
        Some(&a),
        "application/json",
        &json!({"addresses": ["192.168.1.2"]}).to_string(),
    );
    let took = started.elapsed();
    assert_eq!(r.status, None, "cut without an answer: {r:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "cut at the general limit (checked every second), before the DNS bound (5 s): {took:?}"
    );

    let (csr, _) = box_csr(&dir, "box-a", &a.name);
    let started = Instant::now();
    let r = post(
        &dir,
        addr,
        "/v1/enrol",
        Some(&a),
        "application/json",
        &enrol_body(&csr, &["192.168.1.2"]),
    );
    let took = started.elapsed();
    let detail = r.assert_problem(502, "dns_update_failed");
    assert!(detail.contains(&dns), "{detail}");
    assert!(
        took >= settings.dns.request_timeout,
        "the enrolment ran to its own DNS bound, past the general limit: {took:?}"
    );
    let _ = stop.send(());
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(silent_dns);
}

/// `POST /v1/address` with one address, as the box holding `device`.
fn publish(auth: &Authority, device: &Device, ip: &str) -> Reply {
    let body = json!({ "addresses": [ip] }).to_string();
    auth.post("/v1/address", Some(device), "application/json", &body)
}

const HOUR: u64 = 3600;

/// A device past `[dns] max_address_updates_per_hour` gets `429 rate_limited` with `Retry-After`
/// (until its oldest update leaves the hour) and the DNS server is not asked; an update the DNS
/// server could not take counts (the limit spares the server); other devices, and the device's
/// certificates, have their own counts; a reload changes the limit and keeps the counts.
#[test]
fn address_updates_per_device_are_limited() {
    let t0 = Instant::now();
    let t = limit_setup("address-limit");
    let (dir, a) = (&t.dir, &t.a);
    let limit = |n: u32, server: &str| format!("{server}\nmax_address_updates_per_hour = {n}");
    config_variant(dir, "authority.toml", "", &[(&t.dns, &limit(2, NO_DNS))]);
    let auth = Authority::start(dir);
    publish(&auth, a, "192.168.1.2").assert_problem(502, "dns_update_failed");

    config_variant(dir, "authority.toml", "", &[(&t.dns, &limit(2, &t.dns))]);
    assert_eq!(auth.control(r#"{"cmd":"reload"}"#)["ok"], true);
    let r = publish(&auth, a, "192.168.1.4");
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(t._field.dig(&a.name, "A"), ["192.168.1.4"]);
    let r = publish(&auth, a, "192.168.1.5");
    let detail = r.assert_problem(429, "rate_limited");
    assert!(
        detail.contains("limit of 2 address updates per hour"),
        "{detail}"
    );
    let wait = retry_after(&r);
    assert!(
        (HOUR - 60..=HOUR).contains(&wait),
        "until the first (failed) update leaves the hour: {wait}"
    );
    assert_eq!(
        t._field.dig(&a.name, "A"),
        ["192.168.1.4"],
        "the DNS server was not asked"
    );
    let r = publish(&auth, &t.b, "192.168.1.6");
    assert_eq!(r.status, Some(200), "other devices are not affected: {r:?}");
    let r = auth.enrol(a, &t.body_a);
    assert_eq!(r.status, Some(200), "certificates are counted apart: {r:?}");

    // A reload with a higher limit: the count stays, the new limit applies.
    config_variant(dir, "authority.toml", "", &[(&t.dns, &limit(3, &t.dns))]);
    assert_eq!(auth.control(r#"{"cmd":"reload"}"#)["ok"], true);
    let status = auth.control(r#"{"cmd":"status"}"#);
    assert_eq!(
        status["enrolment"]["max_address_updates_per_hour"], 3,
        "{status}"
    );
    assert_eq!(publish(&auth, a, "192.168.1.7").status, Some(200));
    publish(&auth, a, "192.168.1.8").assert_problem(429, "rate_limited");
    assert_eq!(t._field.dig(&a.name, "A"), ["192.168.1.7"]);
    let limited = auth
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "address_update" && l["result"] == "rate_limited")
        .count();
    assert_eq!(limited, 2, "each refusal is logged");
    eprintln!("address_updates_per_device_are_limited: {:?}", t0.elapsed());
}

/// With the Redis store the address-update limit holds across replicas: updates through either
/// replica count against the one limit.
#[test]
fn address_update_limit_is_shared_by_replicas() {
    let t0 = Instant::now();
    let t = limit_setup("address-limit-redis");
    let dir = &t.dir;
    let redis = Redis::start();
    let store = format!(
        "\n[authority.store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"t:\"\n\n[enrolment]",
        redis.port
    );
    let dns = format!("{}\nmax_address_updates_per_hour = 2", t.dns);
    let second = [
        ("state_dir = \"state\"", "state_dir = \"state2\""),
        (
            "control_socket = \"control.sock\"",
            "control_socket = \"control2.sock\"",
        ),
        ("\n[enrolment]", store.as_str()),
        (t.dns.as_str(), dns.as_str()),
    ];
    config_variant(dir, "replica2.toml", "", &second);
    config_variant(dir, "authority.toml", "", &second[2..]);
    let r1 = Authority::start(dir);
    let r2 = Authority::start_with(dir, "replica2.toml");
    assert_eq!(publish(&r1, &t.a, "192.168.1.2").status, Some(200));
    assert_eq!(publish(&r2, &t.a, "192.168.1.3").status, Some(200));
    for replica in [&r1, &r2] {
        let r = publish(replica, &t.a, "192.168.1.4");
        r.assert_problem(429, "rate_limited");
        assert!(retry_after(&r) > HOUR - 60, "{r:?}");
    }
    assert_eq!(t._field.dig(&t.a.name, "A"), ["192.168.1.3"]);
    let r = publish(&r2, &t.b, "192.168.1.5");
    assert_eq!(r.status, Some(200), "other devices are not affected: {r:?}");
    eprintln!(
        "address_update_limit_is_shared_by_replicas: {:?}",
        t0.elapsed()
    );
}

/// The CA forgets the authority's ACME account (Pebble restarted: it keeps accounts in memory).
/// The next enrolment meets `accountDoesNotExist`, registers again by itself and succeeds, without
/// a restart of the authority; the new account is stored and serves the next start.
#[test]
fn a_forgotten_acme_account_is_registered_again() {
    let t0 = Instant::now();
    let dir = temp_dir("forgotten");
    let field = Field::start(&dir);
    let pki = Pki::new(&dir);
    let a = pki.device("dev-a", "device-ca", 10);
    write_config(
        &dir,
        &field,
        Acme {
            directory: field.get("ACME_DIRECTORY"),
            eab: None,
        },
    );
    let auth = Authority::start(&dir);
    let (csr, _) = box_csr(&dir, "box", &a.name);
    let body = enrol_body(&csr, &["192.168.1.2"]);
    let r = auth.enrol(&a, &body);
    assert_eq!(r.status, Some(200), "{r:?}");
    let account = || std::fs::read_to_string(dir.join("acme-account.json")).unwrap();
    let first = account();

    field.restart_pebble();
    let r = auth.enrol(&a, &body);
    assert_eq!(r.status, Some(200), "{r:?}");
    let events = |auth: &Authority, name: &str| -> Vec<Value> {
        auth.log_lines()
            .into_iter()
            .filter(|l| l["event"] == name)
            .collect()
    };
    let gone = events(&auth, "acme_account_gone");
    let created = events(&auth, "acme_account_created");
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(gone[0]["account"], created[0]["account"]);
    assert_ne!(created[0]["account"], created[1]["account"]);
    let second = account();
    assert_ne!(first, second, "the new account is stored");
    let mode = std::fs::metadata(dir.join("acme-account.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    // A restarted authority loads the new account and uses it: nothing created, nothing gone.
    drop(auth);
    let auth = Authority::start(&dir);
    let r = auth.enrol(&a, &body);
    assert_eq!(r.status, Some(200), "{r:?}");
    assert!(events(&auth, "acme_account_created").is_empty());
    assert!(events(&auth, "acme_account_gone").is_empty());
    assert_eq!(account(), second);
    eprintln!(
        "a_forgotten_acme_account_is_registered_again: {:?}",
        t0.elapsed()
    );
}

/// `GET /v1/fleet` as the box holding `device` (or none), with `If-None-Match` when given.
fn get_fleet(auth: &Authority, device: Option<&Device>, if_none_match: Option<&str>) -> Reply {
    let args: Vec<String> = if_none_match
        .map(|t| vec!["-H".to_owned(), format!("If-None-Match: {t}")])
        .unwrap_or_default();
    curl(&auth.dir, auth.addr, "/v1/fleet", device, &args)
}

/// An authority with `[enrolment]` (stand-in CA and DNS server, never reached) and a signed
/// registry (version 1) of the root key `root`; a device `dev` of the device CA.
struct FleetSetup {
    dir: PathBuf,
    root: boxapi_core::auth::jwk::PrivateJwk,
    dev: Device,
    /// Another box.
    dev_b: Device,
    /// `[authority] metrics_listen`'s port.
    metrics: u16,
}

impl FleetSetup {
    fn new(name: &str) -> FleetSetup {
        use boxapi_core::auth::{jwk::Alg, mint, signed};
        let dir = temp_dir(name);
        let pki = Pki::new(&dir);
        let dev = pki.device("dev-a", "device-ca", 10);
        let dev_b = pki.device("dev-b", "device-ca", 11);
        let ca = dir.join("operator-ca.pem").display().to_string();
        write_config_for(
            &dir,
            &Upstream {
                ca: &ca,
                dns: "127.0.0.1:1",
                tsig_name: "boxapi-update",
                tsig_secret: &b64::std_encode(&[7; 32]),
            },
            Acme {
                directory: "https://127.0.0.1:1/dir",
                eab: None,
            },
        );
        let root = mint::generate(Alg::EdDsa, "root").unwrap();
        std::fs::write(dir.join("root.jwk"), root.key.to_json().to_string()).unwrap();
        std::fs::write(
            dir.join("registry.jws"),
            signed::sign(&root, Self::registry(1).to_string().as_bytes()).unwrap(),
        )
        .unwrap();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = std::fs::read_to_string(dir.join("authority.toml"))
            .unwrap()
            .replace(
                "[authority]\n",
                &format!("[authority]\nmetrics_listen = \"127.0.0.1:{metrics}\"\nfleet_window_ms = 3000\n"),
            );
        config += "\n[registry]\nfile = \"registry.jws\"\nroot_key = \"root.jwk\"\n";
        std::fs::write(dir.join("authority.toml"), &config).unwrap();
        std::fs::write(dir.join("base.toml"), config).unwrap();
        FleetSetup {
            dir,
            root,
            dev,
            dev_b,
            metrics,
        }
    }

    fn registry(v: u64) -> Value {
        json!({"version": v, "tools": [{"id": "reg", "revoked": v > 2}]})
    }

    /// Version `v` signed by `key` in the file `name`; its `reason` tells documents apart.
    fn document(
        &self,
        name: &str,
        key: &boxapi_core::auth::jwk::PrivateJwk,
        v: u64,
        reason: &str,
    ) -> String {
        let mut payload = Self::registry(v);
        payload["restriction"] = json!({"suspended": true, "reason": reason});
        let jws = boxapi_core::auth::fleet::sign(key, payload.to_string().as_bytes()).unwrap();
        std::fs::write(self.dir.join(name), &jws).unwrap();
        jws
    }

    /// `ctl publish-fleet` of the file `name` on the control socket `sock`.
    fn publish(&self, auth: &Authority, sock: &str, name: &str) -> Value {
        let file = self.dir.join(name).display().to_string();
        auth.control_at(
            sock,
            &json!({"cmd": "publish_fleet", "file": file}).to_string(),
        )
    }

    #[track_caller]
    fn refused(&self, auth: &Authority, sock: &str, name: &str, why: &str) {
        let r = self.publish(auth, sock, name);
        assert_eq!(r["ok"], false, "{name}: {r}");
        let error = r["error"].as_str().unwrap();
        assert!(error.contains(why), "{name}: {error}");
        assert!(error.ends_with("nothing published"), "{error}");
    }

    /// `GET /v1/fleet` answers `jws`, version `v`.
    #[track_caller]
    fn served(&self, auth: &Authority, v: u64, jws: &str) {
        let r = get_fleet(auth, Some(&self.dev), None);
        assert_eq!(r.status, Some(200), "{r:?}");
        let head = r.head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/jose"), "{head}");
        assert!(head.contains(&format!("etag: \"{v}\"")), "{head}");
        assert_eq!(r.body, jws);
    }
}

/// Issue 23, the authority's side: `ctl publish_fleet` verifies a signed fleet document with the
/// registry's root key and refuses an older one, another key's, a registry, or another document
/// of the same version; `GET /v1/fleet` answers a box (device certificate) the document as
/// signed, its version as `ETag`, and `304` to a matching `If-None-Match`; a restart serves it
/// before anything is published again.
#[test]
fn the_fleet_document_is_published_and_served() {
    use boxapi_core::auth::{jwk::Alg, mint, signed};
    let t = FleetSetup::new("fleet");
    let (dir, dev, root) = (&t.dir, &t.dev, &t.root);
    let rogue = mint::generate(Alg::EdDsa, "root").unwrap();
    let sock = "control.sock";

    let auth = Authority::start(dir);
    get_fleet(&auth, Some(dev), None).assert_problem(404, "no_fleet_document");
    assert_eq!(
        auth.control(r#"{"cmd": "status"}"#)["fleet_version"],
        Value::Null
    );

    let v2 = t.document("v2.jws", root, 2, "CVE-2027-0001");
    let r = t.publish(&auth, sock, "v2.jws");
    assert_eq!(
        (r["ok"].clone(), r["fleet_version"].clone()),
        (json!(true), json!(2)),
        "{r}"
    );
    t.served(&auth, 2, &v2);
    // Only boxes: no device certificate, no document.
    get_fleet(&auth, None, None).assert_problem(401, "device_certificate_required");
    // Unchanged: 304 with the same ETag and no body; another version named: the document.
    for tag in ["\"2\"", "W/\"2\"", "\"1\", \"2\""] {
        let r = get_fleet(&auth, Some(dev), Some(tag));
        assert_eq!(r.status, Some(304), "{tag}: {r:?}");
        assert!(r.head.to_ascii_lowercase().contains("etag: \"2\""), "{r:?}");
        assert_eq!(r.body, "");
    }
    assert_eq!(get_fleet(&auth, Some(dev), Some("\"1\"")).status, Some(200));

    // Refused, each changing nothing: an older version (a replay), another key's, a registry,
    // another document of the version in force, a file that is no JWS.
    t.document("v1.jws", root, 1, "old");
    t.refused(
        &auth,
        sock,
        "v1.jws",
        "version 1 is older than the published version 2",
    );
    t.document("rogue.jws", &rogue, 9, "forged");
    t.refused(&auth, sock, "rogue.jws", "signature");
    std::fs::write(
        dir.join("registry-v5.jws"),
        signed::sign(root, FleetSetup::registry(5).to_string().as_bytes()).unwrap(),
    )
    .unwrap();
    t.refused(
        &auth,
        sock,
        "registry-v5.jws",
        "missing field `restriction`",
    );
    t.document("v2-other.jws", root, 2, "other");
    t.refused(
        &auth,
        sock,
        "v2-other.jws",
        "version 2 is published already with other content",
    );
    std::fs::write(dir.join("junk.jws"), "junk").unwrap();
    t.refused(&auth, sock, "junk.jws", "signature");
    t.served(&auth, 2, &v2);
    // The same document again: nothing to do, not an error.
    assert_eq!(t.publish(&auth, sock, "v2.jws")["ok"], true);
    let logged = auth.log_lines();
    let events = |e: &str| logged.iter().filter(|l| l["event"] == e).count();
    assert_eq!(events("fleet_document_refused"), 5);
    assert!(events("fleet_published") >= 1);

    // An authority suspended in an emergency still carries the restriction to the boxes.
    assert_eq!(auth.control(r#"{"cmd": "suspend"}"#)["ok"], true);
    t.served(&auth, 2, &v2);
    assert_eq!(auth.control(r#"{"cmd": "resume"}"#)["ok"], true);

    // How many boxes have each version: by device identity, each counted once for the version
    // it fetched last within the window (3 s here).
    let boxes = |auth: &Authority| auth.control(r#"{"cmd": "status"}"#)["fleet_boxes"].clone();
    assert_eq!(boxes(&auth), json!({"2": 1}));
    assert_eq!(
        get_fleet(&auth, Some(&t.dev_b), Some("\"1\"")).status,
        Some(200)
    );
    assert_eq!(boxes(&auth), json!({"2": 2}));
    let v3 = t.document("v3.jws", root, 3, "lifted later");
    assert_eq!(t.publish(&auth, sock, "v3.jws")["fleet_version"], 3);
    t.served(&auth, 3, &v3);
    let status = auth.control(r#"{"cmd": "status"}"#);
    assert_eq!(status["fleet_version"], 3);
    assert_eq!(status["fleet_boxes"], json!({"2": 1, "3": 1}));
    assert_eq!(status["fleet_window_ms"], 3000);
    let metrics = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{}/metrics", t.metrics)])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for want in [
        "boxapi_authority_fleet_boxes{version=\"2\"} 1",
        "boxapi_authority_fleet_boxes{version=\"3\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} not in {metrics}");
    }
    // Not seen again within the window: no longer counted.
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(boxes(&auth), json!({}));
    // Not a method for boxes to change anything with.
    let r = post(
        dir,
        auth.addr,
        "/v1/fleet",
        Some(dev),
        "application/json",
        "{}",
    );
    assert_eq!(r.status, Some(405), "{r:?}");

    // A restart serves the document in force before anything is published.
    drop(auth);
    let auth = Authority::start(dir);
    t.served(&auth, 3, &v3);
    t.refused(
        &auth,
        sock,
        "v2.jws",
        "version 2 is older than the published version 3",
    );
    drop(auth);
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits up to 5 s for `GET /v1/fleet` at `auth` to answer version `v`.
#[track_caller]
fn wait_for_fleet(t: &FleetSetup, auth: &Authority, v: u64) {
    let until = Instant::now() + Duration::from_secs(5);
    let etag = format!("etag: \"{v}\"");
    loop {
        let r = get_fleet(auth, Some(&t.dev), None);
        if r.status == Some(200) && r.head.to_ascii_lowercase().contains(&etag) {
            return;
        }
        assert!(Instant::now() < until, "version {v} not served: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With the Redis store, a document published on one replica is served by every replica within
/// `revocation_poll`, by one started later too; a replica refuses what is older than the store's;
/// a document put in Redis by someone else is verified by each replica and refused; a Redis that
/// lost its data gets the newest document back from the replicas.
#[test]
fn the_fleet_document_is_shared_by_replicas() {
    use boxapi_core::auth::{jwk::Alg, mint};
    let t = FleetSetup::new("fleet-redis");
    let (dir, root) = (&t.dir, &t.root);
    let redis = Redis::start();
    let store = format!(
        "\n[authority.store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"t:\"\n\n[enrolment]",
        redis.port
    );
    let metrics_line = format!("metrics_listen = \"127.0.0.1:{}\"\n", t.metrics);
    let replica = |n: u32| {
        let replace = [
            ("state_dir = \"state\"", format!("state_dir = \"state{n}\"")),
            (
                "control_socket = \"control.sock\"",
                format!("control_socket = \"control{n}.sock\""),
            ),
            ("\n[enrolment]", store.clone()),
            // One metrics listener is enough (the other test reads it).
            (metrics_line.as_str(), String::new()),
        ];
        let replace: Vec<(&str, &str)> = replace.iter().map(|(a, b)| (*a, b.as_str())).collect();
        config_variant(dir, &format!("replica{n}.toml"), "", &replace);
        Authority::start_with(dir, &format!("replica{n}.toml"))
    };
    let (r1, r2) = (replica(1), replica(2));
    let v2 = t.document("v2.jws", root, 2, "CVE-2027-0001");
    assert_eq!(
        t.publish(&r1, "control1.sock", "v2.jws")["fleet_version"],
        2
    );
    t.served(&r1, 2, &v2);
    wait_for_fleet(&t, &r2, 2);
    t.served(&r2, 2, &v2);
    // A replica started later serves it from the store.
    let r3 = replica(3);
    wait_for_fleet(&t, &r3, 2);
    // Replica 3 publishes version 3: replicas 1 and 2 follow.
    let v3 = t.document("v3.jws", root, 3, "later");
    assert_eq!(
        t.publish(&r3, "control3.sock", "v3.jws")["fleet_version"],
        3
    );
    wait_for_fleet(&t, &r1, 3);
    wait_for_fleet(&t, &r2, 3);
    t.served(&r2, 3, &v3);
    t.refused(
        &r2,
        "control2.sock",
        "v2.jws",
        "version 2 is older than the published version 3",
    );

    // Someone with Redis access but not the root key: each replica refuses it, says so, and
    // keeps serving version 3.
    let rogue = mint::generate(Alg::EdDsa, "root").unwrap();
    let forged = t.document("rogue.jws", &rogue, 9, "forged");
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (make deps installs it with redis-server)");
        assert!(out.status.success(), "{out:?}");
    };
    cli(&["HSET", "t:fleet", "version", "9", "jws", &forged]);
    std::thread::sleep(Duration::from_millis(1500));
    for r in [&r1, &r2, &r3] {
        t.served(r, 3, &v3);
        let refused = r.log_lines().iter().any(|l| {
            l["event"] == "fleet_document_refused"
                && l["error"].as_str().unwrap_or("").contains("signature")
        });
        assert!(refused, "the forged document was not reported");
    }
    // Redis loses its data: the replicas put the newest document back.
    cli(&["FLUSHALL"]);
    let r4 = replica(4);
    wait_for_fleet(&t, &r4, 3);
    t.served(&r4, 3, &v3);
    drop((r1, r2, r3, r4));
    let _ = std::fs::remove_dir_all(dir);
}
