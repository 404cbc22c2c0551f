//! The box's one HTTPS client call: a JSON POST to the operator's authority over mutual TLS, the
//! device certificate proving which box is asking. Bounded in time and size.
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Connecting and the TLS handshake.
const CONNECT: Duration = Duration::from_secs(15);
/// The whole exchange: an enrolment waits for the CA's DNS-01 validation (seconds, sometimes a minute).
const EXCHANGE: Duration = Duration::from_secs(180);
/// A chain is a few KiB; anything much larger is not an answer of ours.
const MAX_ANSWER: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}: {1}")]
    File(String, String),
    #[error("enrol.authority {0:?}: {1}")]
    Url(String, &'static str),
    #[error("cannot reach the authority {0}: {1}")]
    Connect(String, String),
    #[error("TLS with the authority {0} failed: {1}")]
    Tls(String, String),
    #[error("the authority {0} did not answer in time")]
    Timeout(String),
    #[error("HTTP exchange with the authority failed: {0}")]
    Http(String),
    /// The authority refused: its status and problem detail.
    #[error("the authority refused ({0}): {1}")]
    Refused(u16, String),
    #[error("the authority's answer is not JSON: {0}")]
    BadAnswer(String),
}

/// Mutual-TLS settings: whom to trust and who we are.
pub struct Identity {
    config: Arc<rustls::ClientConfig>,
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::File(format!("{key} ({})", path.display()), e.to_string()))
}

impl Identity {
    /// Loads the authority's trust anchors and the device certificate and key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Identity, ClientError> {
        let file_err =
            |k: &str, p: &Path, e: String| ClientError::File(format!("{k} ({})", p.display()), e);
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = read(ca, "enrol.authority_ca")?;
        for c in CertificateDer::pem_slice_iter(&ca_pem) {
            let c = c.map_err(|e| file_err("enrol.authority_ca", ca, e.to_string()))?;
            roots
                .add(c)
                .map_err(|e| file_err("enrol.authority_ca", ca, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(file_err("enrol.authority_ca", ca, "no certificate".into()));
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(cert, "enrol.device_cert")?)
                .collect::<Result<_, _>>()
                .map_err(|e| file_err("enrol.device_cert", cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err("enrol.device_cert", cert, "no certificate".into()));
        }
        // The message names the PEM problem, never the key material.
        let device_key = PrivateKeyDer::from_pem_slice(&read(key, "enrol.device_key")?)
            .map_err(|e| file_err("enrol.device_key", key, e.to_string()))?;
        let provider = Arc::new(boxapi_core::tls::provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ClientError::Tls(String::new(), e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, device_key)
            .map_err(|e| file_err("enrol.device_key", key, e.to_string()))?;
        Ok(Identity {
            config: Arc::new(config),
        })
    }
}

/// `https://host[:port]` → (host, port).
fn split_url(url: &str) -> Result<(String, u16), ClientError> {
    let bad = |why| ClientError::Url(url.to_owned(), why);
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("not https"))?;
    if rest.contains('/') || rest.is_empty() {
        return Err(bad("expected https://host[:port] without a path"));
    }
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or_else(|| bad("bad IPv6 literal"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if tail.is_empty() => 443,
            None => return Err(bad("bad port")),
        };
        return Ok((host.to_owned(), port));
    }
    match rest.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), p.parse().map_err(|_| bad("bad port"))?)),
        None => Ok((rest.to_owned(), 443)),
    }
}

/// POSTs `body` as JSON to `{base}{path}` and returns the JSON answer of a 2xx.
pub async fn post_json(
    identity: &Identity,
    base: &str,
    path: &str,
    body: &Value,
) -> Result<Value, ClientError> {
    let (host, port) = split_url(base)?;
    let work = async {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| ClientError::Connect(base.to_owned(), e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|_| ClientError::Url(base.to_owned(), "bad host name"))?;
            tokio_rustls::TlsConnector::from(identity.config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| ClientError::Tls(base.to_owned(), e.to_string()))
        };
        let tls = tokio::time::timeout(CONNECT, connect)
            .await
            .map_err(|_| ClientError::Timeout(base.to_owned()))??;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        driver.abort();
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::BadAnswer(format!("status {status}: {e}")))?;
        if !(200..300).contains(&status) {
            let detail = answer["detail"]
                .as_str()
                .or(answer["error_description"].as_str())
                .unwrap_or("no detail");
            let code = answer["code"].as_str().unwrap_or("");
            return Err(ClientError::Refused(status, format!("{code}: {detail}")));
        }
        Ok(answer)
    };
    tokio::time::timeout(EXCHANGE, work)
        .await
        .map_err(|_| ClientError::Timeout(base.to_owned()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("https://auth.example").unwrap(),
            ("auth.example".into(), 443)
        );
        assert_eq!(
            split_url("https://127.0.0.1:8443").unwrap(),
            ("127.0.0.1".into(), 8443)
        );
        assert_eq!(split_url("https://[::1]:9").unwrap(), ("::1".into(), 9));
        for bad in [
            "http://a",
            "https://",
            "https://a/b",
            "https://a:x",
            "https://[::1",
        ] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
