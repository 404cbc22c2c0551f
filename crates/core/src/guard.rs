//! Answers to requests that hyper cannot parse (400, 414, 431) in the contract's shape. hyper
//! writes those itself, bare (no `Cache-Control`, no `nosniff`, no body), and offers no hook; so
//! the connection's byte stream is wrapped: a response head that hyper writes without the
//! `cache-control` header every boxapi response carries is hyper's own error answer. It is replaced
//! on the wire by the same status with the contract's headers and a problem+json body, and logged
//! like any request. (hyper closes the connection after such an answer, so the replacement says
//! `Connection: close`.)
//!
//! Which request hyper rejected is told from the bytes read: the guard keeps the stream's bytes
//! from a request's start (up to [`CAPTURE`]) and counts the answers written since. hyper reads
//! ahead: with pipelining, the request it rejects may have come in the same read as others it
//! answered, so the log names the request after those answered ones, found (only then) by
//! walking their heads and bodies through the kept bytes.
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much of a request's start names it in the log (method and path).
const LINE: usize = 256;
/// How much of the stream is kept from a request's start: room for a few heads (one with a bearer
/// token is about 500 bytes), so that a request that came pipelined behind others is still found.
const CAPTURE: usize = 1024;

/// A connection's byte stream, watched for hyper's own error answers.
pub struct ParseErrorGuard<T> {
    inner: T,
    /// The bytes read from the start of a request on (the anchor), at most [`CAPTURE`]: while
    /// shorter, every byte read since. Copied as read; looked into only for hyper's answers.
    capture: Vec<u8>,
    /// Requests answered since the anchor: the one hyper is on is the next one in `capture`.
    answered: u32,
    /// An answer was written since the last read: the next bytes read belong to a request not
    /// yet answered (the next one, unless it came pipelined with the answered ones).
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
            capture: Vec::with_capacity(CAPTURE),
            answered: 0,
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

/// Method and path of the request that could not be parsed, as far as they can be told: the one
/// after the `answered` ones at the start of `capture`. `-` when it is not there (a request before
/// it is chunked, or longer than what was kept) or its line cannot be read.
fn failing_request(capture: &[u8], answered: u32) -> (String, String) {
    let mut rest = capture;
    for _ in 0..answered {
        match request_len(rest) {
            Some(n) if n < rest.len() => rest = &rest[n..],
            _ => return ("-".to_owned(), "-".to_owned()),
        }
    }
    request_line(rest)
}

/// The empty lines httparse skips before a request line.
fn skip_empty_lines(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    &bytes[n..]
}

/// The length of the request at the start of `bytes` (head and `Content-Length` body), if its
/// head is all there and its body is framed by a length (or absent).
fn request_len(bytes: &[u8]) -> Option<usize> {
    let skipped = bytes.len() - skip_empty_lines(bytes).len();
    let mut at = skipped;
    let mut body = 0usize;
    let mut first_line = true;
    loop {
        let end = at + bytes[at..].iter().position(|&b| b == b'\n')?;
        let line = &bytes[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at = end + 1;
        if line.is_empty() {
            return at.checked_add(body);
        }
        if std::mem::take(&mut first_line) {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            body = std::str::from_utf8(value).ok()?.parse().ok()?;
        }
    }
}

/// Method and path of the request line `bytes` start with (after empty lines).
fn request_line(bytes: &[u8]) -> (String, String) {
    let bytes = skip_empty_lines(bytes);
    let line = bytes[..bytes.len().min(LINE)]
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
    let target = clean(parts.next(), LINE);
    let path = target.split('?').next().unwrap_or("-").to_owned();
    (method, path)
}

/// Whether `first` starts a final response head (not `100 Continue`): the request is answered.
fn final_answer(first: &[u8]) -> bool {
    first.starts_with(b"HTTP/1.") && first.get(9).is_some_and(|&d| d != b'1')
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
        if new.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        if this.at_request_start {
            this.at_request_start = false;
            this.started = Instant::now();
            if CAPTURE - this.capture.len() < LINE {
                // Too little room left for the next request's line: these bytes are taken to
                // start it, as they do unless it began in an earlier read (pipelined behind
                // the anchor's requests), which is not told here to keep reads to a copy.
                this.capture.clear();
                this.answered = 0;
            }
        }
        // While there is room, `capture` holds every byte read since its anchor.
        let room = CAPTURE - this.capture.len();
        if room > 0 {
            this.capture.extend_from_slice(&new[..new.len().min(room)]);
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
        let Some(status) = hypers_own_answer(first) else {
            return false;
        };
        let (method, path) = failing_request(&self.capture, self.answered);
        // No read since the last answer: hyper had the rejected head already, and got to it
        // at once.
        let us = if self.at_request_start {
            0
        } else {
            self.started.elapsed().as_micros() as u64
        };
        crate::log::access(None, &method, &path, status, us);
        self.replacement = Some((answer(status), 0));
        true
    }

    /// After a write that `first` starts: once a final answer's first bytes are out (not merely
    /// offered, which hyper repeats after `Pending`), the request is counted as answered.
    fn wrote(&mut self, first: &[u8], result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) && final_answer(first) {
            self.answered = self.answered.saturating_add(1);
            self.at_request_start = true;
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
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(buf, &result);
        result
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
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(first, &result);
        result
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
        assert_eq!(
            request_line(b"\r\nGET /v1/access HTTP/1.1\r\n"),
            ("GET".into(), "/v1/access".into())
        );
        assert_eq!(request_line(b"\x16\x03\x01"), ("-".into(), "-".into()));
    }

    #[test]
    fn tells_where_a_request_ends() {
        assert_eq!(
            request_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET"),
            Some(27)
        );
        assert_eq!(request_len(b"\r\nGET / HTTP/1.1\n\nGET"), Some(18));
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\ncontent-LENGTH:  5 \r\n\r\nhelloGET"),
            Some(45)
        );
        // Not told: chunked, an unreadable length, a head cut short.
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            None
        );
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            None
        );
        assert_eq!(request_len(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    /// A connection's other end: each read gives the next chunk whole; a write may be made to
    /// return `Pending` once.
    #[derive(Default)]
    struct Wire {
        chunks: std::collections::VecDeque<Vec<u8>>,
        written: Vec<u8>,
        pending_once: bool,
    }

    impl AsyncRead for Wire {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(c) = self.chunks.pop_front() {
                buf.put_slice(&c);
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if std::mem::take(&mut self.pending_once) {
                return Poll::Pending;
            }
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(std::task::Waker::noop())
    }

    /// hyper reads `bytes` in one read.
    fn read(g: &mut ParseErrorGuard<Wire>, bytes: &[u8]) {
        g.inner.chunks.push_back(bytes.to_vec());
        let mut store = vec![0u8; 64 * 1024];
        let mut buf = ReadBuf::new(&mut store);
        assert!(Pin::new(g).poll_read(&mut cx(), &mut buf).is_ready());
        assert_eq!(buf.filled(), bytes);
    }

    fn write(g: &mut ParseErrorGuard<Wire>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(g).poll_write(&mut cx(), bytes)
    }

    /// One of ours: it carries `cache-control`.
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncache-control: no-store\r\ncontent-length: 2\r\n\r\n";
    /// hyper's own.
    const HYPERS_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    const BAD: &[u8] = b"GET /bad?x=1 HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n";

    fn rejected(g: &ParseErrorGuard<Wire>) -> (String, String) {
        failing_request(&g.capture, g.answered)
    }

    fn named(method: &str, path: &str) -> (String, String) {
        (method.to_owned(), path.to_owned())
    }

    /// A head the size of one with a bearer token.
    fn head(method: &str, path: &str) -> Vec<u8> {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
            "t".repeat(400)
        )
        .into_bytes()
    }

    #[test]
    fn a_request_pipelined_behind_an_answered_one_is_the_one_named() {
        let mut g = ParseErrorGuard::new(Wire::default());
        read(
            &mut g,
            &[head("HEAD", "/v1/counters"), BAD.to_vec()].concat(),
        );
        assert_eq!(rejected(&g), named("HEAD", "/v1/counters"));
        assert!(write(&mut g, OK).is_ready());
        assert!(write(&mut g, b"{}").is_ready());
        assert_eq!(rejected(&g), named("GET", "/bad"));
        // hyper's answer to it is replaced (and logged).
        assert!(write(&mut g, HYPERS_400).is_ready());
        let wire = String::from_utf8(g.inner.written.clone()).unwrap();
        assert!(
            wire.starts_with("HTTP/1.1 200 OK\r\n")
                && wire.contains("}HTTP/1.1 400 Bad Request\r\n"),
            "{wire}"
        );
    }

    #[test]
    fn each_request_of_a_keep_alive_connection_is_named() {
        let mut g = ParseErrorGuard::new(Wire::default());
        for i in 0..12 {
            let path = format!("/v1/r{i}");
            read(&mut g, &head("GET", &path));
            assert_eq!(rejected(&g), named("GET", &path), "request {i}");
            assert!(g.capture.len() <= CAPTURE);
            assert!(write(&mut g, OK).is_ready());
            assert!(write(&mut g, b"{}").is_ready());
        }
    }

    #[test]
    fn bodies_empty_lines_and_split_heads_are_stepped_over() {
        let mut g = ParseErrorGuard::new(Wire::default());
        read(
            &mut g,
            b"POST /v1/a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\r\nGET /b HTTP/1.1\r\n\r\nGET /ba",
        );
        assert!(write(&mut g, OK).is_ready());
        assert_eq!(rejected(&g), named("GET", "/b"));
        assert!(write(&mut g, OK).is_ready());
        // The rest of the third head comes in a read of its own.
        read(&mut g, &BAD[7..]);
        assert_eq!(rejected(&g), named("GET", "/bad"));
    }

    #[test]
    fn a_request_that_cannot_be_found_is_not_named_after_another() {
        // Behind a chunked body.
        let mut g = ParseErrorGuard::new(Wire::default());
        let chunked = b"POST /v1/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        read(&mut g, &[&chunked[..], BAD].concat());
        assert!(write(&mut g, OK).is_ready());
        assert_eq!(rejected(&g), named("-", "-"));
        // Behind a head longer than what is kept.
        let mut g = ParseErrorGuard::new(Wire::default());
        let long = format!(
            "GET /v1/a HTTP/1.1\r\nX-Long: {}\r\n\r\n",
            "l".repeat(CAPTURE)
        );
        read(&mut g, &[long.as_bytes(), BAD].concat());
        assert!(write(&mut g, OK).is_ready());
        assert_eq!(rejected(&g), named("-", "-"));
    }

    #[test]
    fn only_final_answers_written_out_count() {
        let mut g = ParseErrorGuard::new(Wire::default());
        read(&mut g, &[head("POST", "/v1/a"), BAD.to_vec()].concat());
        // `100 Continue` answers nothing yet.
        assert!(write(&mut g, b"HTTP/1.1 100 Continue\r\n\r\n").is_ready());
        assert_eq!(rejected(&g), named("POST", "/v1/a"));
        // An answer offered, not taken, then offered again: one answer.
        g.inner.pending_once = true;
        assert!(write(&mut g, OK).is_pending());
        assert_eq!(rejected(&g), named("POST", "/v1/a"));
        assert!(write(&mut g, OK).is_ready());
        assert_eq!(rejected(&g), named("GET", "/bad"));
    }
}
