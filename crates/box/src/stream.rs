//! `GET /v1/counters/stream?interval_ms=N`: the `/v1/counters` object as NDJSON, one line every N
//! ms on one connection, so a tool watching cross-traffic does not pay a request per sample.
//!
//! The body drives itself: hyper polls it when it can write, a tokio interval says when the next
//! line is due, and the counters are read at that moment (so each line's `monotonic_us` is when
//! they were read). Nothing is buffered ahead: a client that reads slowly skips samples instead of
//! queueing them. Bounds: 100–10,000 ms per line, `metrics.stream_max_seconds` (120 s at most)
//! per stream, one stream per terminal, and the connection holds its connection slot throughout.
use crate::access::{self, Denied, Grant, Scope};
use crate::app::App;
use crate::snapshot::Snapshot;
use crate::streams::StreamGuard;
use boxapi_core::auth::{Remembered, TokenError};
use boxapi_core::control::Sections;
use boxapi_core::{cors, log};
use bytes::Bytes;
use hyper::body::Frame;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

pub const MIN_INTERVAL_MS: u64 = 100;
pub const MAX_INTERVAL_MS: u64 = 10_000;

/// Why a query is refused; `Display` is the problem's `detail`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("interval_ms is required: /v1/counters/stream?interval_ms=N with N from 100 to 10000")]
    Missing,
    #[error("interval_ms is given more than once")]
    Repeated,
    #[error("interval_ms must be an integer number of milliseconds from 100 to 10000")]
    OutOfRange,
}

/// `interval_ms` from the query string. Other parameters (a cache-buster) are ignored.
pub fn interval(query: Option<&str>) -> Result<Duration, IntervalError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "interval_ms" {
            continue;
        }
        if found.is_some() {
            return Err(IntervalError::Repeated);
        }
        found = Some(value);
    }
    let value = found.ok_or(IntervalError::Missing)?;
    // Digits only (no sign, no spaces, no percent-encoding tricks), and short enough to parse.
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IntervalError::OutOfRange);
    }
    match value.parse::<u64>() {
        Ok(ms) if (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) => {
            Ok(Duration::from_millis(ms))
        }
        _ => Err(IntervalError::OutOfRange),
    }
}

/// What a stream needs to know about the request that opened it.
pub struct Opening {
    pub app: Arc<App>,
    pub snap: Arc<Snapshot>,
    /// The connection's terminal, found when it connected.
    pub client: crate::card::sys::Client,
    /// The opening request's context (terminal, page origin, tool).
    pub ctx: access::Context,
    /// The opening request's `Origin` header, if any, and its token: the access check is made
    /// with them again before each line, so the stream ends when the same request made now would
    /// be refused (suspended, token expired, tool revoked or lapsed, or a reload that removed its
    /// key, its counters scope or its origin). The subscriber's switch-off closes the connection.
    pub origin: hyper::HeaderMap,
    pub token: Box<[u8]>,
    /// What the opening request was granted.
    pub grant: Grant,
    pub every: Duration,
    pub guard: StreamGuard,
    pub ends: Instant,
}

/// Why a stream ended, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The client went away (or the connection was closed for it).
    Closed,
    Limit,
    Suspended,
    Revoked,
    TokenExpired,
    /// Refused for another reason now (a reload changed the tool, its keys or its scopes).
    Refused,
}

impl End {
    /// Why the access check now refuses the stream.
    fn of(denied: &Denied) -> End {
        match denied {
            Denied::Suspended(_) => End::Suspended,
            Denied::InvalidToken(TokenError::Revoked) => End::Revoked,
            Denied::InvalidToken(TokenError::Expired) => End::TokenExpired,
            _ => End::Refused,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Limit => "time_limit",
            End::Suspended => "suspended",
            End::Revoked => "revoked",
            End::TokenExpired => "token_expired",
            End::Refused => "refused",
        }
    }
}

/// The response body of one stream.
pub struct CounterStream {
    open: Opening,
    /// The token's last check (a comparison while the snapshot is the same).
    memo: Remembered,
    /// The sections withheld from the tool at the last check.
    withheld: Sections,
    tool_id: String,
    /// Told when the body is done (the connection's slot goes back to waiting for a request).
    on_end: Option<Box<dyn FnOnce() + Send>>,
    tick: Interval,
    deadline: Pin<Box<Sleep>>,
    lines: u64,
    ended: Option<End>,
}

impl CounterStream {
    pub fn new(open: Opening) -> Self {
        let mut tick = tokio::time::interval(open.every);
        // A client that reads slower than the interval gets fewer lines, not a backlog.
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let deadline = Box::pin(tokio::time::sleep_until(open.ends));
        let tool_id = open
            .snap
            .trust
            .registry
            .get(open.grant.tool)
            .map(|t| t.id.clone())
            .unwrap_or_default();
        CounterStream {
            memo: Remembered::default(),
            withheld: open.grant.withheld,
            tool_id,
            open,
            on_end: None,
            tick,
            deadline,
            lines: 0,
            ended: None,
        }
    }

    /// Whether the stream must stop before its next line: the access check of a new request,
    /// under the configuration in force now.
    fn stop_reason(&mut self) -> Option<End> {
        let Opening {
            app,
            ctx,
            origin,
            token,
            ..
        } = &mut self.open;
        let snap = app.snapshot();
        let revoked = |id: &str| app.control.is_revoked(id);
        ctx.origin = cors::classify(origin, &snap.trust.registry, &revoked);
        match ctx.check(app, &snap, Ok(token), Scope::Counters, &mut self.memo) {
            Ok(grant) => {
                // The subscriber's choices as they are now: a withholding made during the
                // stream applies from the next line on.
                self.withheld = grant.withheld;
                None
            }
            Err(denied) => Some(End::of(&denied)),
        }
    }

    /// `f` runs once when the body is done or dropped.
    pub fn on_end(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.on_end = Some(f);
    }

    fn line(&self) -> Bytes {
        let src = self.open.snap.sources();
        let mut text = src.counters(&self.open.client, self.withheld);
        text.push(b'\n');
        Bytes::from(text)
    }
}

impl hyper::body::Body for CounterStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended.is_some() {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.ended = Some(End::Limit);
            return Poll::Ready(None);
        }
        if this.tick.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(end) = this.stop_reason() {
            this.ended = Some(end);
            return Poll::Ready(None);
        }
        this.lines += 1;
        Poll::Ready(Some(Ok(Frame::data(this.line()))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended.is_some()
    }
}

impl Drop for CounterStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f();
        }
        let reason = self.ended.unwrap_or(End::Closed);
        log::event(
            "stream_end",
            &[
                ("tool", &self.tool_id),
                ("reason", reason.as_str()),
                ("lines", &self.lines.to_string()),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::{Busy, Streams};
    use boxapi_core::fair::Terminal;

    #[test]
    fn intervals() {
        let ok = |q: &str| interval(Some(q)).map(|d| d.as_millis());
        assert_eq!(ok("interval_ms=100"), Ok(100));
        assert_eq!(ok("interval_ms=10000"), Ok(10_000));
        assert_eq!(ok("t=123&interval_ms=250"), Ok(250));
        assert_eq!(ok("interval_ms=00100"), Ok(100));
        for bad in [
            "interval_ms=99",
            "interval_ms=10001",
            "interval_ms=",
            "interval_ms=-100",
            "interval_ms=+100",
            "interval_ms=1e3",
            "interval_ms=100.0",
            "interval_ms=%31%30%30",
            "interval_ms=99999999999999999999999",
            "interval_ms",
        ] {
            assert_eq!(ok(bad), Err(IntervalError::OutOfRange), "{bad}");
        }
        assert_eq!(interval(None), Err(IntervalError::Missing));
        assert_eq!(ok("interval=100"), Err(IntervalError::Missing));
        assert_eq!(
            ok("interval_ms=100&interval_ms=200"),
            Err(IntervalError::Repeated)
        );
    }

    #[tokio::test]
    async fn one_stream_per_terminal() {
        let s = Arc::new(Streams::default());
        let t = Terminal::V4([10, 0, 0, 2]);
        let ends = Instant::now() + Duration::from_secs(30);
        let g = s.begin(t, ends, 2).unwrap();
        let Err(Busy::Open(retry)) = s.begin(t, ends, 2) else {
            panic!("a second stream for the same terminal")
        };
        assert!((30..=31).contains(&retry), "{retry}");
        let other = s.begin(Terminal::V4([10, 0, 0, 3]), ends, 2).unwrap();
        assert_eq!(s.len(), 2);
        // Two open of two: a third terminal waits for the first to end (the sooner one).
        let later = ends + Duration::from_secs(60);
        let Err(Busy::Full(retry)) = s.begin(Terminal::V4([10, 0, 0, 4]), later, 2) else {
            panic!("a third stream where two may be open")
        };
        assert!((30..=31).contains(&retry), "{retry}");
        drop(g);
        assert!(s.begin(t, ends, 2).is_ok());
        drop(other);
        assert!(s.is_empty());
        // No stream at all where streams may hold no slot.
        assert!(matches!(s.begin(t, ends, 0), Err(Busy::Full(_))));
    }
}
