//! TLS: TLS 1.2 and 1.3 only, forward-secret AEAD suites only, ring as the one crypto provider.
use crate::config::{read_named, Problem};
use crate::files::limit;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// A loaded server identity.
pub struct Identity {
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's notAfter, Unix seconds (None if it could not be read).
    pub not_after: Option<i64>,
    /// The leaf certificate's notBefore (renewal is scheduled from the lifetime).
    pub not_before: Option<i64>,
}

/// The suites boxapi offers, named by their IANA constants, in the server's order of preference:
/// TLS 1.3's (all AEAD, key exchange always ephemeral) and TLS 1.2's ECDHE with AES-GCM or
/// ChaCha20-Poly1305. Nothing else. AES-128 comes first: 128-bit security matches the key
/// exchange (X25519, P-256) and the P-256 signature, and its SHA-256 key schedule is what box
/// CPUs compute fast (ARMv8 and x86 have SHA-256 instructions; 32-bit MIPS computes SHA-384 in
/// emulated 64-bit arithmetic), so every handshake costs less.
pub const ALLOWED_SUITES: [CipherSuite; 9] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The crypto provider with only the [`ALLOWED_SUITES`], in their order (ring's defaults are
/// exactly these, AES-256 first; the filter keeps it true should ring ever add others).
pub fn provider() -> rustls::crypto::CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .retain(|s| ALLOWED_SUITES.contains(&s.suite()));
    p.cipher_suites.sort_by_key(|s| {
        ALLOWED_SUITES
            .iter()
            .position(|a| *a == s.suite())
            .unwrap_or(usize::MAX)
    });
    p
}

/// The configuration keys naming the two files (problems name them).
const CERT: &str = "server.cert";
const KEY: &str = "server.key";

/// Why a certificate chain and a key (PEM) do not make a server identity. The messages name the
/// PEM problem, never the key material.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("no CERTIFICATE block")]
    NoCertificate,
    #[error("not PEM: {0}")]
    CertificatePem(String),
    #[error("no usable private key: {0}")]
    Key(String),
    /// The key is not the leaf's (or rustls refused the pair).
    #[error("does not fit the certificate: {0}")]
    Mismatch(String),
}

/// Makes a server identity of a PEM certificate chain (leaf first) and the leaf's private key.
pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Identity, PairError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PairError::CertificatePem(e.to_string()))?;
    let leaf = chain.first().ok_or(PairError::NoCertificate)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PairError::Key(e.to_string()))?;
    let validity = crate::cert::validity(leaf);
    let (not_before, not_after) = (validity.map(|v| v.0), validity.map(|v| v.1));
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| PairError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server's suite order (AES-128-GCM, AES-256-GCM, then ChaCha20) wins over the client's.
    config.ignore_client_order = true;
    Ok(Identity {
        config: Arc::new(config),
        not_after,
        not_before,
    })
}

/// Loads the certificate chain and key; every problem is pushed, naming the key and file.
pub fn load(cert: &Path, key: &Path, problems: &mut Vec<Problem>) -> Option<Identity> {
    // An empty path is a key the configuration already reported (missing, or not a string):
    // reading it would only add a second, confusing line for the same mistake.
    let read = |name, path: &Path, problems: &mut Vec<Problem>| {
        (!path.as_os_str().is_empty())
            .then(|| read_named(name, path, limit::PEM, problems))
            .flatten()
    };
    let cert_pem = read(CERT, cert, problems);
    let key_pem = read(KEY, key, problems);
    // A chain that does not parse is reported even when the key could not be read.
    let (cert_pem, key_pem) = match (cert_pem, key_pem) {
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            if let Err(e @ (PairError::NoCertificate | PairError::CertificatePem(_))) =
                from_pem(&c, b"")
            {
                problems.push(Problem::file(CERT, cert, e));
            }
            return None;
        }
        _ => return None,
    };
    from_pem(&cert_pem, &key_pem)
        .map_err(|e| {
            problems.push(match e {
                PairError::NoCertificate | PairError::CertificatePem(_) => {
                    Problem::file(CERT, cert, e)
                }
                PairError::Key(_) => Problem::file(KEY, key, e),
                PairError::Mismatch(why) => Problem::file(
                    KEY,
                    key,
                    format_args!("does not fit the certificate {}: {why}", cert.display()),
                ),
            })
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lines;

    /// `server.cert` missing from the file is one problem (the configuration's), not a second
    /// "cannot read" line for the empty path; the other file is still read and reported.
    #[test]
    fn a_path_the_configuration_already_refused_is_not_read() {
        let mut problems = Vec::new();
        let absent =
            std::env::temp_dir().join(format!("boxapi-tls-absent-{}.pem", std::process::id()));
        assert!(load(Path::new(""), &absent, &mut problems).is_none());
        let l = lines(&problems);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].starts_with("server.key"), "{l:?}");
    }

    #[test]
    fn only_forward_secret_aead_suites() {
        let p = provider();
        // ring offers all nine today; none is lost by the filter, none other gets through.
        assert_eq!(p.cipher_suites.len(), ALLOWED_SUITES.len());
        for s in &p.cipher_suites {
            assert!(ALLOWED_SUITES.contains(&s.suite()), "{:?}", s.suite());
        }
        assert!(!ALLOWED_SUITES.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA));
        // In the server's order of preference.
        let order: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(order, ALLOWED_SUITES);
    }

    #[test]
    fn missing_files_are_reported_by_name() {
        let mut p = Vec::new();
        assert!(load(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
            &mut p
        )
        .is_none());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].key(), Some("server.cert"));
        assert!(p[0]
            .to_string()
            .starts_with("server.cert (/nonexistent/c.pem): cannot read"));
        assert!(p[1]
            .to_string()
            .starts_with("server.key (/nonexistent/k.pem)"));
    }

    #[test]
    fn a_device_or_a_pipe_is_refused_unopened_and_both_are_reported() {
        let dir = std::env::temp_dir().join(format!("boxapi-tls-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("key.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let key = fifo.clone();
        std::thread::spawn(move || {
            let mut p = Vec::new();
            let loaded = load(Path::new("/dev/zero"), &key, &mut p).is_some();
            let _ = tx.send((loaded, lines(&p)));
        });
        let (loaded, p) = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("load blocked");
        assert!(!loaded);
        assert_eq!(
            p,
            [
                "server.cert (/dev/zero): not a regular file (a character device)".to_owned(),
                format!(
                    "server.key ({}): not a regular file (a named pipe)",
                    fifo.display()
                ),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
