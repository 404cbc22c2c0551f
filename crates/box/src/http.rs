//! HTTP: a request's own rules in their order (Host, method, Origin, rate, preflight), routing (a
//! token-protected route through `access`), JSON answers, every refusal as an RFC 9457 problem.
use crate::access::{self, Context, Denied, Grant, Scope, ORIGIN_REFUSED};
use crate::app::App;
use crate::snapshot::Snapshot;
use crate::streams::Busy;
use boxapi_core::auth::TokenError;
use boxapi_core::cors::{self, Origin};
use boxapi_core::fair::Terminal;
use boxapi_core::{authz, problem};
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// A request's body as the handlers read it: hyper's, telling the connection's slot when it has
/// arrived.
pub type Incoming = boxapi_core::fair::Arriving<hyper::body::Incoming>;

/// A response body: a complete buffer, or the counters stream that writes itself line by line.
/// `Either` keeps the usual answers as cheap as `Full` alone (no allocation); the stream, a few
/// hundred bytes, is boxed so that every response moved around stays small (40 bytes, not 544:
/// the moves cost a keep-alive request about 2,000 instructions).
pub type Body = Either<Full<Bytes>, Box<crate::stream::CounterStream>>;

/// An empty body (preflights, HEAD).
pub fn empty() -> Body {
    Either::Left(Full::default())
}

/// A request body (a token request's form, a few hundred bytes) must arrive within this time.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the connection knows about itself.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The TLS server name the client sent, if any.
    pub sni: Option<String>,
    /// Who this connection counts against (rate limit, connection share).
    pub terminal: Terminal,
    /// How the terminal reaches the box: found once per connection (neighbour table, bridge
    /// database, sysfs), the same for every request on it.
    pub client: crate::card::sys::Client,
    /// The token this connection presented last (requests on a connection come one at a time,
    /// so the lock is never contended).
    pub token: std::sync::Mutex<boxapi_core::auth::Remembered>,
}

/// Every refusal the API can answer; `Display` is the problem's `detail`.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A token-protected route's rules said no (`access::Context::check`), or the `Origin`.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A preflight that is refused; answered without any CORS header.
    #[error("the preflight asks for a method other than GET or HEAD")]
    PreflightRefused,
    #[error("no such endpoint: the API serves /v1/access, /v1/counters and /v1/counters/stream")]
    NotFound,
    #[error("this endpoint answers {0} only")]
    MethodNotAllowed(&'static str),
    #[error("the Host header or TLS server name is not a name of this box")]
    Misdirected,
    #[error("too many requests from this terminal; retry after {0} s")]
    RateLimited(u64),
    #[error(
        "this terminal already has a counters stream open (one at a time); it ends within {0} s"
    )]
    StreamOpen(u64),
    #[error("counters streams already hold half of the box's connections; one ends within {0} s")]
    StreamsFull(u64),
    #[error(transparent)]
    InvalidInterval(#[from] crate::stream::IntervalError),
}

impl From<TokenError> for Problem {
    fn from(e: TokenError) -> Self {
        Problem::Denied(e.into())
    }
}

impl Problem {
    fn status(&self) -> StatusCode {
        match self {
            Problem::Denied(d) => match d {
                Denied::MissingToken | Denied::InvalidToken(_) => StatusCode::UNAUTHORIZED,
                Denied::InsufficientScope(_) | Denied::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
                Denied::Suspended(_) | Denied::ClockUnsynchronized => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
            Problem::PreflightRefused => StatusCode::FORBIDDEN,
            Problem::NotFound => StatusCode::NOT_FOUND,
            Problem::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Problem::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Problem::RateLimited(_) | Problem::StreamOpen(_) | Problem::StreamsFull(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Problem::InvalidInterval(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Problem::Denied(d) => match d {
                Denied::MissingToken => "missing_token",
                Denied::InvalidToken(_) => "invalid_token",
                Denied::InsufficientScope(_) => "insufficient_scope",
                Denied::OriginNotAllowed(_) => "origin_not_allowed",
                Denied::Suspended(_) => "suspended",
                Denied::ClockUnsynchronized => "clock_unsynchronized",
            },
            Problem::PreflightRefused => "origin_not_allowed",
            Problem::NotFound => "not_found",
            Problem::MethodNotAllowed(_) => "method_not_allowed",
            Problem::Misdirected => "misdirected_request",
            Problem::RateLimited(_) | Problem::StreamOpen(_) | Problem::StreamsFull(_) => {
                "rate_limited"
            }
            Problem::InvalidInterval(_) => "invalid_request",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Problem::Denied(d) => match d {
                Denied::MissingToken => "Missing access token",
                Denied::InvalidToken(_) => "Invalid access token",
                Denied::InsufficientScope(_) => "Insufficient scope",
                Denied::OriginNotAllowed(_) => "Origin not allowed",
                Denied::Suspended(_) => "Suspended by the operator",
                Denied::ClockUnsynchronized => "Clock not synchronized",
            },
            Problem::PreflightRefused => "Origin not allowed",
            Problem::NotFound => "Not found",
            Problem::MethodNotAllowed(_) => "Method not allowed",
            Problem::Misdirected => "Misdirected request",
            Problem::RateLimited(_) | Problem::StreamOpen(_) | Problem::StreamsFull(_) => {
                "Too many requests"
            }
            Problem::InvalidInterval(_) => "Invalid request",
        }
    }

    /// Contract §6 rev. 3: which of the causes one `code` covers, where a tool must tell them
    /// apart.
    fn reason(&self) -> Option<&'static str> {
        match self {
            Problem::Denied(Denied::InvalidToken(
                TokenError::ToolExpired(_) | TokenError::ToolNotYetValid(_),
            )) => Some("tool_not_valid"),
            Problem::Denied(Denied::InvalidToken(TokenError::Revoked)) => Some("tool_revoked"),
            Problem::StreamOpen(_) => Some("stream_open"),
            Problem::StreamsFull(_) => Some("streams_full"),
            _ => None,
        }
    }

    fn response(&self) -> Response<Body> {
        let status = self.status();
        let mut body = problem::body(
            self.code(),
            self.title(),
            status.as_u16(),
            &self.to_string(),
        );
        if let Some(reason) = self.reason() {
            body["reason"] = reason.into();
        }
        // The tool's window, repeated (`null`: unbounded on that side).
        if let Problem::Denied(Denied::InvalidToken(
            TokenError::ToolExpired(w) | TokenError::ToolNotYetValid(w),
        )) = self
        {
            let date = |t: Option<i64>| t.map(boxapi_core::time::rfc3339);
            body["not_before"] = date(w.not_before).into();
            body["expires"] = date(w.expires).into();
        }
        let mut resp = json(status, &PROBLEM_JSON, body.to_string().into_bytes());
        let h = resp.headers_mut();
        let mut set = |name: header::HeaderName, value: String| {
            // Built from constants and integers only, so always a valid header value.
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        };
        match self {
            Problem::Denied(Denied::MissingToken) => {
                set(header::WWW_AUTHENTICATE, "Bearer realm=\"boxapi\"".into())
            }
            Problem::Denied(Denied::InvalidToken(_)) => set(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"boxapi\", error=\"invalid_token\"".into(),
            ),
            Problem::Denied(Denied::InsufficientScope(scope)) => set(
                header::WWW_AUTHENTICATE,
                format!(
                    "Bearer realm=\"boxapi\", error=\"insufficient_scope\", scope=\"{}\"",
                    scope.name()
                ),
            ),
            Problem::MethodNotAllowed(allow) => set(header::ALLOW, (*allow).into()),
            Problem::RateLimited(s)
            | Problem::StreamOpen(s)
            | Problem::StreamsFull(s)
            | Problem::Denied(Denied::Suspended(s)) => set(header::RETRY_AFTER, s.to_string()),
            Problem::Denied(Denied::ClockUnsynchronized) => set(header::RETRY_AFTER, "30".into()),
            _ => {}
        }
        resp
    }
}

/// Header values of every response, validated once (`from_static` checks each byte when called
/// at run time; a clone of a static one is a copy).
static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static PROBLEM_JSON: HeaderValue = HeaderValue::from_static(problem::CONTENT_TYPE);
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// A whole JSON answer. Its `Content-Length` is written by hyper from the body's exact size (a
/// header map entry less per request); `handle` sets it explicitly only for HEAD.
fn json(status: StatusCode, content_type: &HeaderValue, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type.clone());
    resp
}

/// Host names compare case-insensitively; a port is ignored; IPv6 literals come in brackets.
pub fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

fn name_accepted(name: &str, snap: &Snapshot, conn: &ConnInfo) -> bool {
    let server = &snap.config.common.server;
    if server
        .server_names
        .iter()
        .chain(snap.box_name.as_ref())
        .any(|n| n.eq_ignore_ascii_case(name))
    {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| {
        ip == conn.local.ip().to_canonical() || server.listen.iter().any(|l| l.ip() == ip)
    })
}

/// What the read-only endpoints allow, and what the token endpoint allows.
const GET_HEAD: &str = "GET, HEAD, OPTIONS";
const POST_ONLY: &str = "POST, OPTIONS";
/// The stream has no HEAD: the contract lists GET only (a HEAD would hold a stream for nothing).
const GET_ONLY: &str = "GET, OPTIONS";
const STREAM_PATH: &str = "/v1/counters/stream";

/// What a request's path names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Access,
    Counters,
    Stream,
    Discovery,
    /// `POST /v1/token`, when this box answers it (`[token_endpoint]`).
    Token,
    Unknown,
}

impl Route {
    fn of(path: &str, snap: &Snapshot) -> Route {
        match path {
            "/v1/access" => Route::Access,
            "/v1/counters" => Route::Counters,
            STREAM_PATH => Route::Stream,
            authz::DISCOVERY_PATH => Route::Discovery,
            authz::TOKEN_PATH if snap.config.common.token_endpoint.is_some() => Route::Token,
            _ => Route::Unknown,
        }
    }

    /// The methods a known path answers (405 with `Allow` for any other, whoever asks).
    fn allow(self) -> Option<&'static str> {
        match self {
            Route::Access | Route::Counters | Route::Discovery => Some(GET_HEAD),
            Route::Stream => Some(GET_ONLY),
            Route::Token => Some(POST_ONLY),
            Route::Unknown => None,
        }
    }
}

/// DNS-rebinding defence: Host (and SNI when sent) must name this box.
fn host_ok<B>(req: &Request<B>, snap: &Snapshot, conn: &ConnInfo) -> bool {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().ok(),
        (None, _) => req.uri().host(),
        _ => None,
    };
    let Some(host) = host else { return false };
    // An absolute-form target (`GET https://other/v1/access`) names a host too: it must name
    // this box as well, whatever the Host header says.
    let target_ok = req
        .uri()
        .authority()
        .is_none_or(|a| name_accepted(host_name(a.as_str()), snap, conn));
    target_ok
        && name_accepted(host_name(host), snap, conn)
        && conn
            .sni
            .as_deref()
            .is_none_or(|sni| name_accepted(sni, snap, conn))
}

/// The bearer token of RFC 6750 §2.1.
fn bearer(headers: &HeaderMap) -> Result<&[u8], Denied> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Denied::MissingToken);
    };
    if values.next().is_some() {
        return Err(TokenError::Malformed("more than one Authorization header").into());
    }
    let v = value.as_bytes();
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return Err(Denied::MissingToken);
    }
    Ok(v[7..].trim_ascii())
}

/// The request's rules in their order (Host, method, Origin, rate, preflight, then the route's:
/// `access::Context::check` for a token-protected one), then its answer.
async fn decide(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    conn: &ConnInfo,
    ctx: &mut Context,
    req: &mut Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    if !host_ok(req, snap, conn) {
        return Err(Problem::Misdirected);
    }
    let route = Route::of(req.uri().path(), snap);
    if let Some(allow) = route.allow() {
        if !allow.split(", ").any(|m| m == req.method().as_str()) {
            return Err(Problem::MethodNotAllowed(allow));
        }
    }
    if ctx.origin == Origin::Refused {
        return Err(Denied::OriginNotAllowed(ORIGIN_REFUSED).into());
    }
    app.limiter
        .check(ctx.terminal, Instant::now())
        .map_err(Problem::RateLimited)?;
    if req.method() == Method::OPTIONS {
        return preflight(req.headers(), ctx.origin, route == Route::Token);
    }
    // Each known path's method was checked above: a route is reached with one it answers.
    let scope = match route {
        Route::Access => Scope::Access,
        Route::Counters | Route::Stream => Scope::Counters,
        Route::Discovery | Route::Token | Route::Unknown => {
            access::suspension(app)?;
            return match route {
                Route::Discovery => {
                    let body = authz::discovery(&snap.config.common)
                        .to_string()
                        .into_bytes();
                    Ok(json(StatusCode::OK, &APPLICATION_JSON, body))
                }
                Route::Token => token_request(app, snap, req, ctx.origin).await,
                _ => Err(Problem::NotFound),
            };
        }
    };
    let grant = ctx.check(
        app,
        snap,
        bearer(req.headers()),
        scope,
        &mut conn.token.lock().unwrap_or_else(|p| p.into_inner()),
    )?;
    let body = match route {
        Route::Stream => return stream(app, snap, conn, ctx, req, grant),
        Route::Access => {
            let src = snap.sources().with_wifi(&app.wifi);
            src.access_card(&conn.client, grant.withheld).await
        }
        _ => snap.sources().counters(&conn.client, grant.withheld),
    };
    Ok(json(StatusCode::OK, &APPLICATION_JSON, body))
}

/// `GET /v1/counters/stream`: checks the interval, takes the terminal's one stream, and answers
/// with a body that writes the lines itself.
fn stream(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    conn: &ConnInfo,
    ctx: &Context,
    req: &Request<Incoming>,
    grant: Grant,
) -> Result<Response<Body>, Problem> {
    let every = crate::stream::interval(req.uri().query())?;
    let ends = tokio::time::Instant::now() + snap.config.metrics.stream_max;
    let guard = app
        .streams
        .begin(
            ctx.terminal,
            ends,
            snap.config.common.server.max_connections / 2,
        )
        .map_err(|busy| match busy {
            Busy::Open(s) => Problem::StreamOpen(s),
            Busy::Full(s) => Problem::StreamsFull(s),
        })?;
    // Kept to judge the page's origin again before each line, under the registry in force then
    // (a repeated Origin was refused above).
    let mut origin = HeaderMap::new();
    if let Some(o) = req.headers().get(header::ORIGIN) {
        origin.insert(header::ORIGIN, o.clone());
    }
    let body = crate::stream::CounterStream::new(crate::stream::Opening {
        app: app.clone(),
        snap: snap.clone(),
        client: conn.client.clone(),
        ctx: *ctx,
        origin,
        // The token that `ctx.check` has just accepted.
        token: bearer(req.headers()).unwrap_or_default().into(),
        grant,
        every,
        guard,
        ends,
    });
    let mut resp = Response::new(Either::Right(Box::new(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// `POST /v1/token`: an RFC 6749 token request; answers are OAuth JSON, not problems.
async fn token_request(
    app: &App,
    snap: &Snapshot,
    req: &mut Request<Incoming>,
    origin: Origin,
) -> Result<Response<Body>, Problem> {
    use http_body_util::BodyExt;
    let now = boxapi_core::time::unix_now();
    if boxapi_core::time::clock_is_unset(now) {
        return Err(Denied::ClockUnsynchronized.into());
    }
    // Size and time bounded: a slow body must not hold a connection slot.
    let limited = http_body_util::Limited::new(req.body_mut(), authz::MAX_BODY);
    let body = match tokio::time::timeout(BODY_DEADLINE, limited.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            let e = authz::OAuthError::InvalidRequest("the body is too large or unreadable");
            return Ok(oauth_error(&e));
        }
        Err(_) => {
            let e = authz::OAuthError::InvalidRequest("the body did not arrive in time");
            return Ok(oauth_error(&e));
        }
    };
    let page_tool = match origin {
        Origin::Allowed { tool } => Some(tool),
        _ => None,
    };
    let revoked = |id: &str| app.control.is_revoked(id);
    match authz::token(
        authz::Issuer {
            config: &snap.config.common,
            trust: &snap.trust,
        },
        &app.grants,
        req.headers(),
        &body,
        page_tool,
        &revoked,
        now,
    ) {
        Ok(v) => Ok(json(
            StatusCode::OK,
            &APPLICATION_JSON,
            v.to_string().into_bytes(),
        )),
        Err(e) => Ok(oauth_error(&e)),
    }
}

fn oauth_error(e: &authz::OAuthError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json(status, &APPLICATION_JSON, e.body().to_string().into_bytes());
    if let Some((name, value)) = e.header() {
        resp.headers_mut().insert(name, value);
    }
    resp
}

fn preflight(
    headers: &HeaderMap,
    origin: Origin,
    token_endpoint: bool,
) -> Result<Response<Body>, Problem> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    match origin {
        Origin::Allowed { .. } if cors::preflight_method_ok(headers, token_endpoint) => {
            cors::add_preflight_headers(headers, resp.headers_mut(), token_endpoint);
        }
        Origin::Allowed { .. } => return Err(Problem::PreflightRefused),
        // No Origin: not a browser preflight; say what the resource allows.
        _ => {
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
        }
    }
    Ok(resp)
}

/// Answers one request: decide, then add the headers every response carries, then log it.
pub async fn handle(app: &Arc<App>, conn: &ConnInfo, mut req: Request<Incoming>) -> Response<Body> {
    let snap = app.snapshot();
    let revoked = |id: &str| app.control.is_revoked(id);
    let origin = cors::classify(req.headers(), &snap.trust.registry, &revoked);
    let mut ctx = Context::new(conn.terminal, origin);
    let result = decide(app, &snap, conn, &mut ctx, &mut req).await;
    let cors_allowed = matches!(origin, Origin::Allowed { .. })
        && !matches!(result, Err(Problem::PreflightRefused));
    let mut resp = result.unwrap_or_else(|p| p.response());
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, NO_STORE.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    if cors_allowed {
        if let Some(o) = req.headers().get(header::ORIGIN) {
            cors::add_response_headers(h, o);
        }
    }
    if req.method() == Method::HEAD {
        // Same status and headers (Content-Length included) as GET, no body.
        if let Some(len) = hyper::body::Body::size_hint(resp.body()).exact() {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        *resp.body_mut() = empty();
    }
    ctx.log(
        app,
        &snap,
        req.method().as_str(),
        req.uri().path(),
        resp.status().as_u16(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_stays_small_to_move() {
        // Every answer is moved through hyper's dispatcher several times: a stream's state kept
        // inline made each keep-alive request copy 544 bytes a move.
        assert!(
            std::mem::size_of::<Body>() <= 48,
            "{}",
            std::mem::size_of::<Body>()
        );
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("box.example:8443"), "box.example");
        assert_eq!(host_name("box.example"), "box.example");
        assert_eq!(host_name("[::1]:8443"), "::1");
        assert_eq!(host_name("[fd00::1]"), "fd00::1");
        assert_eq!(host_name("127.0.0.1:443"), "127.0.0.1");
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Err(Denied::MissingToken)));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer(&h), Err(Denied::MissingToken)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  a.b.c "),
        );
        assert_eq!(bearer(&h).unwrap(), &b"a.b.c"[..]);
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(matches!(bearer(&h), Err(Denied::InvalidToken(_))));
    }

    #[test]
    fn every_problem_has_its_status_and_headers() {
        let cases: Vec<(Problem, u16, &str)> = vec![
            (Denied::MissingToken.into(), 401, "missing_token"),
            (TokenError::Expired.into(), 401, "invalid_token"),
            (
                Denied::InsufficientScope(Scope::Counters).into(),
                403,
                "insufficient_scope",
            ),
            (
                Denied::OriginNotAllowed("x").into(),
                403,
                "origin_not_allowed",
            ),
            (Problem::PreflightRefused, 403, "origin_not_allowed"),
            (Problem::NotFound, 404, "not_found"),
            (
                Problem::MethodNotAllowed(GET_HEAD),
                405,
                "method_not_allowed",
            ),
            (Problem::Misdirected, 421, "misdirected_request"),
            (Problem::RateLimited(3), 429, "rate_limited"),
            (Problem::StreamOpen(3), 429, "rate_limited"),
            (Problem::StreamsFull(3), 429, "rate_limited"),
            (
                Problem::InvalidInterval(crate::stream::IntervalError::Missing),
                400,
                "invalid_request",
            ),
            (Denied::Suspended(60).into(), 503, "suspended"),
            (
                Denied::ClockUnsynchronized.into(),
                503,
                "clock_unsynchronized",
            ),
        ];
        for (p, status, code) in cases {
            let r = p.response();
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(p.code(), code);
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
        }
        let r = Problem::from(Denied::InsufficientScope(Scope::Counters)).response();
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("scope=\"counters\""));
        assert_eq!(
            Problem::from(Denied::Suspended(60)).response().headers()[header::RETRY_AFTER],
            "60"
        );
        assert_eq!(
            Problem::MethodNotAllowed(GET_HEAD).response().headers()[header::ALLOW],
            "GET, HEAD, OPTIONS"
        );
    }
}
