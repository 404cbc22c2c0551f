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
/// The whole exchange: an enrolment waits for an issuance slot and the CA's DNS-01 validation.
/// Longer than the authority's own bound on `POST /v1/enrol` (about four minutes:
/// docs/certificates.md): a box that gave up first would leave an issuance counted against its
/// limit and get nothing for it.
const EXCHANGE: Duration = Duration::from_secs(300);
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
    /// The authority refused: its status, problem detail and, for 429 and 503, how long it asked
    /// the box to wait (`Retry-After`) before asking again.
    #[error("the authority refused ({status}): {detail}{}", retry_note(.retry_after))]
    Refused {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("the authority's answer is not JSON: {0}")]
    BadAnswer(String),
}

/// Said in the error (and so in `boxapi enrol`'s reason and `ctl status`'s `cert_last_error`), so
/// an operator sees why the box waits longer than its own backoff.
fn retry_note(retry_after: &Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| {
        format!(" (asked to retry after {} s)", d.as_secs())
    })
}

/// The longest `Retry-After` the box obeys: an authority's bug (or a proxy's) must not park a
/// box's renewal for weeks, past its certificate's expiry; the backoff takes over beyond it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A `Retry-After` in its seconds form (RFC 9110 §10.2.3), capped at `MAX_RETRY_AFTER`. The
/// date form and anything else unreadable is ignored: the box then keeps its own backoff, which
/// is what it did before it read the header at all.
pub fn parse_retry_after(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits, so a parse error can only be an overflow: a huge wait, capped like any other.
    let secs = text.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Mutual-TLS settings: whom to trust and who we are.
pub struct Identity {
    config: Arc<rustls::ClientConfig>,
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, ClientError> {
    boxapi_core::files::read_limited(path, boxapi_core::files::limit::PEM)
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
        // Only where HTTP gives it a meaning for a refused request: 429 (RFC 6585) and 503.
        let retry_after = matches!(status, 429 | 503)
            .then(|| resp.headers().get(hyper::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| parse_retry_after(v.as_bytes()));
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        driver.abort();
        let parsed = serde_json::from_slice::<Value>(&bytes);
        if !(200..300).contains(&status) {
            // A refusal that is not problem+json (a proxy's 503 page) is still a refusal, and
            // its Retry-After still counts.
            let answer = parsed.unwrap_or(Value::Null);
            let detail = answer["detail"]
                .as_str()
                .or(answer["error_description"].as_str())
                .unwrap_or("no detail");
            let code = answer["code"].as_str().unwrap_or("");
            return Err(ClientError::Refused {
                status,
                detail: format!("{code}: {detail}"),
                retry_after,
            });
        }
        parsed.map_err(|e| ClientError::BadAnswer(format!("status {status}: {e}")))
    };
    tokio::time::timeout(EXCHANGE, work)
        .await
        .map_err(|_| ClientError::Timeout(base.to_owned()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_are_read_capped_and_garbage_ignored() {
        let secs = |v: &str| parse_retry_after(v.as_bytes()).map(|d| d.as_secs());
        assert_eq!(secs("120"), Some(120));
        assert_eq!(secs(" 7 "), Some(7));
        assert_eq!(secs("0"), Some(0));
        // A week (the issuance window) or an overflow: a day at most.
        assert_eq!(secs("604800"), Some(86_400));
        assert_eq!(secs("99999999999999999999999"), Some(86_400));
        for garbage in [
            "",
            "-5",
            "+5",
            "1.5",
            "12s",
            "soon",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(secs(garbage), None, "{garbage:?}");
        }
        assert_eq!(parse_retry_after(b"\xff1"), None);
    }

    #[test]
    fn a_refusal_says_how_long_it_was_asked_to_wait() {
        let e = ClientError::Refused {
            status: 429,
            detail: "rate_limited: 5 certificates".into(),
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            e.to_string(),
            "the authority refused (429): rate_limited: 5 certificates (asked to retry after 3600 s)"
        );
        let e = ClientError::Refused {
            status: 502,
            detail: "acme_failed: x".into(),
            retry_after: None,
        };
        assert_eq!(e.to_string(), "the authority refused (502): acme_failed: x");
    }

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
