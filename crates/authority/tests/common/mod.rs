//! The authority's black-box harness: a working directory with the dev certificates
//! (certs/make-dev-certs.sh, openssl), the real `boxapi-authority serve`, its control socket, and
//! a TLS client trusting the dev CA.
#![allow(dead_code)]

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A fresh directory for one test (`group` names the test file).
pub fn temp_dir(group: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "boxapi-authority-{group}-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The dev CA (`ca.pem`) and a server certificate for localhost (`server.pem`, `server.key`).
pub fn dev_certs(dir: &Path) {
    let certs = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../certs/make-dev-certs.sh"
    ));
    let made = Command::new(certs)
        .arg(dir)
        .output()
        .expect("run make-dev-certs.sh");
    assert!(made.status.success(), "{made:?}");
}

/// `boxapi-authority serve --config DIR/authority.toml`; killed when dropped.
pub struct Authority {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Authority {
    pub fn start(dir: &Path) -> Authority {
        let mut child = Command::new(env!("CARGO_BIN_EXE_boxapi-authority"))
            .args(["serve", "--config"])
            .arg(dir.join("authority.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start boxapi-authority");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                if v["event"] == "listening" {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("the authority did not start");
        };
        Authority {
            child,
            addr: addr.parse().expect("a socket address"),
            dir: dir.to_owned(),
        }
    }

    /// One command on the control socket, and its reply.
    pub fn control(&self, line: &str) -> Value {
        use std::os::unix::net::UnixStream;
        let mut s = UnixStream::connect(self.dir.join("control.sock")).expect("control socket");
        s.write_all(format!("{line}\n").as_bytes())
            .expect("control write");
        let mut reply = String::new();
        BufReader::new(s)
            .read_line(&mut reply)
            .expect("control read");
        serde_json::from_str(&reply).expect("control reply is JSON")
    }

    /// A verified TLS connection to the authority (the dev CA trusted).
    pub fn connect(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.dir.join("ca.pem")).expect("ca.pem") {
            roots.add(c.expect("a certificate")).expect("a root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(self.addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let name = ServerName::try_from("localhost").expect("a name");
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("a client");
        rustls::StreamOwned::new(conn, tcp)
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
