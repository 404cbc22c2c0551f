//! Answers to requests that hyper cannot parse (400, 414, 431) in the contract's shape. hyper
//! writes those itself, bare (no `Cache-Control`, no `nosniff`, no body), and offers no hook; so
//! the connection's byte stream is wrapped: a response head that hyper writes without the
//! `cache-control` header every boxapi response carries is hyper's own error answer. It is replaced
//! on the wire by the same status with the contract's headers and a problem+json body, and logged
//! like any request. (hyper closes the connection after such an answer, so the replacement says
//! `Connection: close`.)
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much of a request's start is kept to name it in the log (method and path).
const CAPTURE: usize = 256;

/// A connection's byte stream, watched for hyper's own error answers.
pub struct ParseErrorGuard<T> {
    inner: T,
    /// The start of the latest request's bytes (for the log line).
    capture: Vec<u8>,
    /// The next bytes read begin a new request.
    at_request_start: bool,
    /// Our replacement answer, being written, and how far.
    replacement: Option<(Vec<u8>, usize)>,
    /// The replacement is out: whatever hyper writes now is dropped.
    swallowing: bool,
    started: Instant,
}

impl<T> ParseErrorGuard<T> {
    pub fn new(inner: T) -> Self {
        ParseErrorGuard {
            inner,
            capture: Vec::new(),
            at_request_start: true,
            replacement: None,
            swallowing: false,
            started: Instant::now(),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// The status of a response head hyper wrote without our headers, if `buf` starts one.
fn hypers_own_answer(buf: &[u8]) -> Option<u16> {
    if !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) || buf.len() < 12 {
        return None;
    }
    // Only errors: hyper also writes `100 Continue` itself, which must pass untouched. Checked
    // first, so that every 200 costs three bytes, not a scan of its head.
    let status: u16 = std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()?;
    if !(400..600).contains(&status) {
        return None;
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = &buf[..end];
    let ours = head
        .windows(15)
        .any(|w| w.eq_ignore_ascii_case(b"\ncache-control:"));
    (!ours).then_some(status)
}

fn title(status: u16) -> &'static str {
    match status {
        414 => "URI too long",
        431 => "Request header fields too large",
        _ => "Bad request",
    }
}

fn detail(status: u16) -> &'static str {
    match status {
        414 => "the request target is too long",
        431 => "the request head is larger than 16 KiB",
        _ => "the request could not be parsed as HTTP/1.1",
    }
}

/// The replacement: same status, the contract's headers, a problem+json body.
pub fn answer(status: u16) -> Vec<u8> {
    let body =
        crate::problem::body("invalid_request", title(status), status, detail(status)).to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Bad Request");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ct}\r\ncontent-length: {len}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n{body}",
        ct = crate::problem::CONTENT_TYPE,
        len = body.len()
    )
    .into_bytes()
}

/// Method and path of the request that could not be parsed, as far as they can be told.
fn request_line(capture: &[u8]) -> (String, String) {
    let line = capture
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let clean = |p: Option<&[u8]>, max: usize| -> String {
        match p {
            Some(p)
                if !p.is_empty() && p.len() <= max && p.iter().all(|b| b.is_ascii_graphic()) =>
            {
                String::from_utf8_lossy(p).into_owned()
            }
            _ => "-".to_owned(),
        }
    };
    let method = clean(parts.next(), 16);
    let target = clean(parts.next(), CAPTURE);
    let path = target.split('?').next().unwrap_or("-").to_owned();
    (method, path)
}

impl<T: AsyncRead + Unpin> AsyncRead for ParseErrorGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if self.at_request_start && !new.is_empty() {
            let n = new.len().min(CAPTURE);
            let this = &mut *self;
            this.capture.clear();
            this.capture.extend_from_slice(&new[..n]);
            this.at_request_start = false;
            this.started = Instant::now();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> ParseErrorGuard<T> {
    /// Writes the replacement out; Ready once all of it is written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, pos)) = &mut self.replacement {
            if *pos >= bytes.len() {
                self.replacement = None;
                self.swallowing = true;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *pos += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Looks at the start of what hyper writes; true if it is hyper's own answer (now replaced).
    fn intercept(&mut self, first: &[u8]) -> bool {
        if self.swallowing {
            return true;
        }
        if self.replacement.is_some() {
            return true;
        }
        match hypers_own_answer(first) {
            Some(status) => {
                let (method, path) = request_line(&self.capture);
                crate::log::access(
                    None,
                    &method,
                    &path,
                    status,
                    self.started.elapsed().as_micros() as u64,
                );
                self.replacement = Some((answer(status), 0));
                true
            }
            None => {
                if first.starts_with(b"HTTP/1.") {
                    // One of ours: the bytes read next start the next request.
                    self.at_request_start = true;
                }
                false
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ParseErrorGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.intercept(buf) {
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if this.intercept(first) {
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_hypers_answers_from_ours() {
        assert_eq!(
            hypers_own_answer(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n"),
            Some(431)
        );
        assert_eq!(
            hypers_own_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\n\r\n{}"),
            None
        );
        assert_eq!(hypers_own_answer(b"{\"HTTP/1.1 400"), None);
        assert_eq!(hypers_own_answer(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
    }

    #[test]
    fn the_replacement_has_the_contract_headers_and_a_problem() {
        let a = String::from_utf8(answer(431)).unwrap();
        assert!(
            a.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{a}"
        );
        assert!(a.contains("\r\ncache-control: no-store\r\n"));
        assert!(a.contains("\r\nx-content-type-options: nosniff\r\n"));
        let body = a.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 431);
        assert_eq!(v["code"], "invalid_request");
        assert!(a.contains(&format!("content-length: {}\r\n", body.len())));
    }

    #[test]
    fn names_the_request_when_it_can() {
        assert_eq!(
            request_line(b"GET /v1/access?x=1 HTTP/1.1\r\nHost"),
            ("GET".into(), "/v1/access".into())
        );
        assert_eq!(request_line(b"\x16\x03\x01"), ("-".into(), "-".into()));
    }
}
