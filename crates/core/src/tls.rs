//! TLS: TLS 1.2 and 1.3 only, forward-secret AEAD suites only, ring as the one crypto provider.
use crate::config::Problem;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
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

/// The crypto provider with only ECDHE + AEAD suites (ring's defaults are exactly these; the filter
/// keeps it true should ring ever add others).
pub fn provider() -> rustls::crypto::CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| {
        let name = format!("{:?}", s.suite());
        name.starts_with("TLS13_")
            || (name.contains("_ECDHE_") && (name.contains("GCM") || name.contains("CHACHA20")))
    });
    p
}

/// The configuration keys naming the two files (problems name them).
const CERT: &str = "server.cert";
const KEY: &str = "server.key";

fn read(path: &Path, key: &str, problems: &mut Vec<Problem>) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            problems.push(Problem::file(key, path, format_args!("cannot read: {e}")));
            None
        }
    }
}

/// Loads the certificate chain and key; every problem is pushed, naming the key and file.
pub fn load(cert: &Path, key: &Path, problems: &mut Vec<Problem>) -> Option<Identity> {
    let cert_pem = read(cert, CERT, problems);
    let key_pem = read(key, KEY, problems);
    let chain: Vec<CertificateDer<'static>> = match cert_pem {
        Some(pem) => match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                problems.push(Problem::file(CERT, cert, "no CERTIFICATE block"));
                return None;
            }
            Err(e) => {
                problems.push(Problem::file(CERT, cert, format_args!("not PEM: {e}")));
                return None;
            }
        },
        None => return None,
    };
    let key_der = match PrivateKeyDer::from_pem_slice(&key_pem?) {
        Ok(k) => k,
        Err(e) => {
            // The message names the PEM problem, never the key material.
            problems.push(Problem::file(
                KEY,
                key,
                format_args!("no usable private key: {e}"),
            ));
            return None;
        }
    };
    let validity = crate::cert::validity(&chain[0]);
    let (not_before, not_after) = (validity.map(|v| v.0), validity.map(|v| v.1));
    let builder = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    let config = match builder.map(|b| b.with_no_client_auth().with_single_cert(chain, key_der)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) | Err(e) => {
            problems.push(Problem::file(
                KEY,
                key,
                format_args!("does not fit the certificate {}: {e}", cert.display()),
            ));
            return None;
        }
    };
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server's suite order (AES-GCM, then ChaCha20) wins over the client's.
    config.ignore_client_order = true;
    Some(Identity {
        config: Arc::new(config),
        not_after,
        not_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forward_secret_aead_suites() {
        let p = provider();
        assert!(!p.cipher_suites.is_empty());
        for s in &p.cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(!name.contains("CBC"), "{name}");
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
        }
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
}
