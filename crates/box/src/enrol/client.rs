//! The box's HTTPS client calls to the operator's authority over mutual TLS, the device
//! certificate proving which box is asking: a JSON POST, or a GET. Bounded in time and size.
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
/// A chain is a few KiB; anything much larger is not an answer of ours. A call that expects
/// more (the fleet document) says so.
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
    /// The authority's TLS alert about the device certificate: why it was refused.
    #[error("the authority refused this box's device certificate: {0}")]
    DeviceCertRefused(&'static str),
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

impl ClientError {
    /// How long the authority asked the box to wait (`Retry-After` of a 429 or 503), when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
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

/// What the authority's fatal alert says of the box's device certificate (RFC 8446 §6.2, as
/// rustls's verifier sends them), or `None` for an alert about anything else.
fn refusal(alert: rustls::AlertDescription) -> Option<&'static str> {
    use rustls::AlertDescription as A;
    Some(match alert {
        A::UnknownCA => {
            "unknown CA (not issued by the device CA the authority trusts, or its revocation \
             status cannot be checked)"
        }
        A::CertificateRevoked => "revoked (listed in the authority's CRL)",
        A::CertificateExpired => "expired or not yet valid (is the box's clock right?)",
        A::BadCertificate => "bad certificate (malformed)",
        A::UnsupportedCertificate => "unsupported (not for TLS client authentication)",
        A::CertificateUnknown => "not acceptable (certificate_unknown)",
        A::AccessDenied => "access denied",
        A::CertificateRequired => "none was sent, and the authority requires one",
        _ => return None,
    })
}

/// An I/O error of the TLS connection: the refusal of the device certificate when the
/// authority's alert says so, else `other`.
fn tls_io_error(
    e: &std::io::Error,
    other: impl FnOnce(&std::io::Error) -> ClientError,
) -> ClientError {
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::AlertReceived(alert) => refusal(*alert),
            _ => None,
        });
    match refused {
        Some(why) => ClientError::DeviceCertRefused(why),
        None => other(e),
    }
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

/// The answer's head: a few lines from the authority (or a proxy in front of it).
const MAX_HEAD: usize = 16 * 1024;
/// Headers in that head; hyper's client allowed 100.
const MAX_HEADERS: usize = 64;

/// POSTs `body` as JSON to `{base}{path}` and returns the JSON answer of a 2xx.
pub async fn post_json(
    identity: &Identity,
    base: &str,
    path: &str,
    body: &Value,
) -> Result<Value, ClientError> {
    judge(
        request(
            identity,
            base,
            path,
            Some(body.to_string().as_bytes()),
            None,
            MAX_ANSWER,
        )
        .await?,
    )
}

/// One request to `{base}{path}`: a POST of the JSON `body`, or without one a GET, conditional
/// on `If-None-Match: "<version>"` when `version` is given. The answer as it came, its body at
/// most `max` bytes.
pub async fn request(
    identity: &Identity,
    base: &str,
    path: &str,
    body: Option<&[u8]>,
    version: Option<u64>,
    max: usize,
) -> Result<Answer, ClientError> {
    let (host, port) = split_url(base)?;
    let work = async {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| ClientError::Connect(base.to_owned(), e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|_| ClientError::Url(base.to_owned(), "bad host name"))?;
            // TLS 1.2 refuses a device certificate during the handshake; TLS 1.3 after it, in
            // the first read of the answer (`exchange`).
            tokio_rustls::TlsConnector::from(identity.config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| tls_io_error(&e, |e| ClientError::Tls(base.to_owned(), e.to_string())))
        };
        let tls = tokio::time::timeout(CONNECT, connect)
            .await
            .map_err(|_| ClientError::Timeout(base.to_owned()))??;
        exchange(tls, &host, path, body, version, max).await
    };
    tokio::time::timeout(EXCHANGE, work)
        .await
        .map_err(|_| ClientError::Timeout(base.to_owned()))?
}

/// What the authority answered, before it is judged.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// A 2xx's JSON, or the refusal with its problem detail.
fn judge(answer: Answer) -> Result<Value, ClientError> {
    if !(200..300).contains(&answer.status) {
        return Err(refused(answer));
    }
    serde_json::from_slice(&answer.body)
        .map_err(|e| ClientError::BadAnswer(format!("status {}: {e}", answer.status)))
}

/// A refusal with its problem detail. One that is not problem+json (a proxy's 503 page) is
/// still a refusal, and its Retry-After still counts.
pub fn refused(answer: Answer) -> ClientError {
    let problem = serde_json::from_slice::<Value>(&answer.body).unwrap_or(Value::Null);
    let detail = problem["detail"]
        .as_str()
        .or(problem["error_description"].as_str())
        .unwrap_or("no detail");
    let code = problem["code"].as_str().unwrap_or("");
    ClientError::Refused {
        status: answer.status,
        detail: format!("{code}: {detail}"),
        retry_after: answer.retry_after,
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`) and its answer, read within
/// `MAX_HEAD` and `max`. Written by hand rather than with hyper's client: the box makes these
/// few calls, and a second hyper dispatcher cost ~60 KB of every box binary.
async fn exchange<S>(
    mut io: S,
    host: &str,
    path: &str,
    body: Option<&[u8]>,
    version: Option<u64>,
    max: usize,
) -> Result<Answer, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let http = |e: &std::io::Error| tls_io_error(e, |e| ClientError::Http(e.to_string()));
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ClientError::Http(format!("bad request path {path:?}")));
    }
    let mut request = match body {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
             accept: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n"),
    };
    if let Some(v) = version {
        request.push_str(&format!("if-none-match: \"{v}\"\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    io.write_all(&request).await.map_err(|e| http(&e))?;
    io.flush().await.map_err(|e| http(&e))?;

    let mut buf = Vec::with_capacity(4096);
    let mut eof = false;
    loop {
        match parse(&buf, eof, max)? {
            Some(answer) => return Ok(answer),
            None if eof => {
                return Err(ClientError::Http(
                    "connection closed before the answer's end".into(),
                ))
            }
            None => {}
        }
        if buf.len() >= MAX_HEAD + max + 64 * 1024 {
            return Err(ClientError::Http("answer too large".into()));
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // An authority that closes without TLS's close_notify ends an answer delimited by
            // the close just the same; one that had framed its answer is judged by that frame.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => eof = true,
            Err(e) => return Err(http(&e)),
        }
    }
}

/// The answer in `buf` if it is complete (`eof`: the authority closed the connection), `None` if
/// more is needed, its body at most `max` bytes. Informational (1xx) answers before the final one
/// are skipped.
fn parse(mut buf: &[u8], eof: bool, max: usize) -> Result<Option<Answer>, ClientError> {
    let bad = |why: &str| ClientError::Http(why.to_owned());
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(bad("answer head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ClientError::Http(format!("bad answer head: {e}"))),
        };
        if head_len > MAX_HEAD {
            return Err(bad("answer head too large"));
        }
        let status = head.code.unwrap_or(0);
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(bad("unexpected protocol switch"));
            }
            buf = &buf[head_len..];
            continue;
        }
        let mut length = None;
        let mut chunked = false;
        let mut retry_after = None;
        for h in head.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| bad("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("conflicting content-length"));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Only chunked is spoken to a client that asked for no other coding.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(bad("unsupported transfer-encoding"));
                }
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("retry-after")
                // Only where HTTP gives it a meaning for a refused request: 429 (RFC 6585) and 503.
                && matches!(status, 429 | 503)
            {
                retry_after = parse_retry_after(h.value);
            }
        }
        let rest = &buf[head_len..];
        let body = if matches!(status, 204 | 304) {
            Some(Vec::new())
        } else if chunked {
            dechunk(rest, max)?
        } else if let Some(n) = length {
            if n > max {
                return Err(bad("length limit exceeded"));
            }
            (rest.len() >= n).then(|| rest[..n].to_vec())
        } else if rest.len() > max {
            return Err(bad("length limit exceeded"));
        } else {
            // Delimited by the close.
            eof.then(|| rest.to_vec())
        };
        return Ok(body.map(|body| Answer {
            status,
            retry_after,
            body,
        }));
    }
}

/// A chunked body (RFC 9112 §7.1) from `buf` once its last chunk and trailers are in, bounded
/// by `max`.
fn dechunk(mut buf: &[u8], max: usize) -> Result<Option<Vec<u8>>, ClientError> {
    let bad = |why: &str| ClientError::Http(why.to_owned());
    let mut body = Vec::new();
    loop {
        let (start, size) = match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(bad("bad chunk size")),
        };
        let size = usize::try_from(size).map_err(|_| bad("length limit exceeded"))?;
        if size > max - body.len() {
            return Err(bad("length limit exceeded"));
        }
        buf = &buf[start..];
        if size == 0 {
            // Trailers, each ended by CRLF, then the empty line: skipped, not read.
            return Ok(find_crlf_crlf(buf).map(|_| body));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(bad("bad chunk end"));
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// Where the trailer section after a last chunk ends: at once on an empty line, else after the
/// first empty line.
fn find_crlf_crlf(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
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

    fn answer(status: u16, retry: Option<u64>, body: &str) -> Answer {
        Answer {
            status,
            retry_after: retry.map(Duration::from_secs),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_framed_by_length_chunks_or_the_close() {
        let whole =
            |text: &str, eof| parse(text.as_bytes(), eof, MAX_ANSWER).map_err(|e| e.to_string());
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(whole(ok, false), Ok(Some(answer(200, None, "{\"a\":1}"))));
        // Every prefix of it is incomplete, not an error.
        for cut in 0..ok.len() {
            assert_eq!(whole(&ok[..cut], false), Ok(None), "{cut}");
        }
        // Closed before the length: incomplete still (the caller reports the early close).
        assert_eq!(whole(&ok[..ok.len() - 1], true), Ok(None));
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\nx-trailer: y\r\n\r\n";
        assert_eq!(
            whole(chunked, false),
            Ok(Some(answer(200, None, "{\"a\":1}")))
        );
        for cut in 0..chunked.len() {
            assert_eq!(whole(&chunked[..cut], false), Ok(None), "{cut}");
        }
        let close = "HTTP/1.1 503 Busy\r\nRetry-After: 30\r\n\r\n<html>busy</html>";
        assert_eq!(whole(close, false), Ok(None));
        assert_eq!(
            whole(close, true),
            Ok(Some(answer(503, Some(30), "<html>busy</html>")))
        );
        // 1xx answers are skipped; Retry-After counts only for 429 and 503.
        let cont = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad\r\nretry-after: 9\r\n\
                    content-length: 0\r\n\r\n";
        assert_eq!(whole(cont, false), Ok(Some(answer(400, None, ""))));
        let no_body = "HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(whole(no_body, false), Ok(Some(answer(204, None, ""))));
    }

    #[test]
    fn answers_beyond_the_bounds_or_malformed_are_refused() {
        let err = |text: &[u8]| match parse(text, true, MAX_ANSWER) {
            Err(ClientError::Http(why)) => why,
            other => panic!("{other:?}"),
        };
        let big = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_ANSWER + 1
        );
        assert_eq!(err(big.as_bytes()), "length limit exceeded");
        let mut close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        close.resize(close.len() + MAX_ANSWER + 1, b' ');
        assert_eq!(err(&close), "length limit exceeded");
        let chunk = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_ANSWER + 1
        );
        assert_eq!(err(chunk.as_bytes()), "length limit exceeded");
        let huge = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert_eq!(err(huge.as_bytes()), "length limit exceeded");
        let mut head = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        head.resize(MAX_HEAD + 1, b'a');
        assert_eq!(err(&head), "answer head too large");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: y\r\n")).collect();
        let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(err(many.as_bytes()).starts_with("bad answer head"));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nab\r\n",
            "HTTP/1.1 101 Switching\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            err(bad.as_bytes());
        }
    }

    /// A fake authority at the other end of a stream: reads the request until it ends with
    /// `end`, answers `pieces` one at a time, and returns the request it read.
    fn fake_authority(
        end: &'static [u8],
        pieces: Vec<Vec<u8>>,
    ) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(end) {
                let n = server.read(&mut buf).await.unwrap();
                assert!(n > 0, "request cut short");
                seen.extend_from_slice(&buf[..n]);
            }
            for piece in pieces {
                server.write_all(&piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            String::from_utf8(seen).unwrap()
        });
        (client, task)
    }

    #[tokio::test]
    async fn one_exchange_over_a_stream() {
        use tokio::io::AsyncWriteExt;
        // Answered in small pieces, closed without more.
        let pieces = [
            &b"HTTP/1.1 200 OK\r\ncont"[..],
            b"ent-length: 8\r\n\r\n{\"ok\"",
            b":1}",
        ];
        let (client, authority) =
            fake_authority(b"{\"csr\":\"x\"}", pieces.map(<[u8]>::to_vec).to_vec());
        let got = exchange(
            client,
            "auth.example",
            "/v1/enrol",
            Some(br#"{"csr":"x"}"#),
            None,
            MAX_ANSWER,
        )
        .await
        .unwrap();
        assert_eq!(got, answer(200, None, "{\"ok\":1}"));
        assert_eq!(
            authority.await.unwrap(),
            "POST /v1/enrol HTTP/1.1\r\nhost: auth.example\r\ncontent-type: application/json\r\n\
             accept: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"csr\":\"x\"}"
        );
        // A GET, conditional on the version held: no body.
        let not_modified = b"HTTP/1.1 304 Not Modified\r\netag: \"7\"\r\n\r\n".to_vec();
        let (client, authority) = fake_authority(b"\r\n\r\n", vec![not_modified]);
        let got = exchange(client, "a", "/v1/fleet", None, Some(7), MAX_ANSWER).await;
        assert_eq!(got.unwrap(), answer(304, None, ""));
        assert_eq!(
            authority.await.unwrap(),
            "GET /v1/fleet HTTP/1.1\r\nhost: a\r\nif-none-match: \"7\"\r\nconnection: close\r\n\r\n"
        );
        // An answer larger than MAX_ANSWER (a fleet document) comes whole to a call allowing it.
        let big = "x".repeat(MAX_ANSWER + 1);
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len());
        let (client, _) = fake_authority(
            b"\r\n\r\n",
            vec![head.into_bytes(), big.clone().into_bytes()],
        );
        let max = boxapi_core::auth::fleet::MAX_SIGNED_BYTES;
        let got = exchange(client, "a", "/v1/fleet", None, None, max).await;
        assert_eq!(got.unwrap(), answer(200, None, &big));
        // Closed mid-answer: an error, not a short body.
        let (client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let _ = server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}")
                .await;
        });
        let early = exchange(client, "a", "/v1/address", Some(b"{}"), None, MAX_ANSWER).await;
        assert!(matches!(early, Err(ClientError::Http(_))), "{early:?}");
        assert!(judge(answer(
            429,
            Some(5),
            "{\"code\":\"rate_limited\",\"detail\":\"d\"}"
        ))
        .unwrap_err()
        .to_string()
        .ends_with("(429): rate_limited: d (asked to retry after 5 s)"));
    }

    #[test]
    fn certificate_alerts_name_the_refusal_and_others_stay_what_they_were() {
        use rustls::AlertDescription as A;
        let alert = |a| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(a),
            )
        };
        let other = |e: &std::io::Error| ClientError::Http(e.to_string());
        for (a, says) in [
            (A::UnknownCA, "unknown CA"),
            (A::CertificateRevoked, "revoked"),
            (A::CertificateExpired, "expired"),
            (A::UnsupportedCertificate, "client authentication"),
        ] {
            let e = tls_io_error(&alert(a), other).to_string();
            assert!(
                e.starts_with("the authority refused this box's device certificate: ")
                    && e.contains(says),
                "{a:?}: {e}"
            );
        }
        // Not about the certificate: as before.
        for e in [
            alert(A::HandshakeFailure),
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError),
        ] {
            assert!(
                matches!(tls_io_error(&e, other), ClientError::Http(_)),
                "{e}"
            );
        }
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
