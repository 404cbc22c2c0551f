//! HTTP: the access rules in their order (Host, Origin, rate, preflight, suspension, route, clock,
//! token, scope), JSON answers, and every refusal as an RFC 9457 problem, mapped in one place.
use crate::app::App;
use crate::snapshot::Snapshot;
use boxapi_core::auth::{Scopes, TokenError};
use boxapi_core::control::Mode;
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

/// A response body: a complete buffer, or the counters stream that writes itself line by line.
/// `Either` keeps the usual answers as cheap as `Full` alone (no boxing, no allocation).
pub type Body = Either<Full<Bytes>, crate::stream::CounterStream>;

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
    #[error("no bearer token: send \"Authorization: Bearer <access token>\"")]
    MissingToken,
    #[error(transparent)]
    InvalidToken(#[from] TokenError),
    #[error("the token does not grant the \"{0}\" scope this endpoint needs")]
    InsufficientScope(&'static str),
    #[error("{0}")]
    OriginNotAllowed(&'static str),
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
    #[error(transparent)]
    InvalidInterval(#[from] crate::stream::IntervalError),
    #[error("the operator has suspended this API for now; retry after {0} s")]
    Suspended(u64),
    #[error(
        "the box's clock is not set yet (no NTP answer); tokens cannot be checked, retry shortly"
    )]
    ClockUnsynchronized,
}

impl Problem {
    fn status(&self) -> StatusCode {
        match self {
            Problem::MissingToken | Problem::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Problem::InsufficientScope(_)
            | Problem::OriginNotAllowed(_)
            | Problem::PreflightRefused => StatusCode::FORBIDDEN,
            Problem::NotFound => StatusCode::NOT_FOUND,
            Problem::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Problem::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Problem::RateLimited(_) | Problem::StreamOpen(_) => StatusCode::TOO_MANY_REQUESTS,
            Problem::InvalidInterval(_) => StatusCode::BAD_REQUEST,
            Problem::Suspended(_) | Problem::ClockUnsynchronized => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Problem::MissingToken => "missing_token",
            Problem::InvalidToken(_) => "invalid_token",
            Problem::InsufficientScope(_) => "insufficient_scope",
            Problem::OriginNotAllowed(_) | Problem::PreflightRefused => "origin_not_allowed",
            Problem::NotFound => "not_found",
            Problem::MethodNotAllowed(_) => "method_not_allowed",
            Problem::Misdirected => "misdirected_request",
            Problem::RateLimited(_) | Problem::StreamOpen(_) => "rate_limited",
            Problem::InvalidInterval(_) => "invalid_request",
            Problem::Suspended(_) => "suspended",
            Problem::ClockUnsynchronized => "clock_unsynchronized",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Problem::MissingToken => "Missing access token",
            Problem::InvalidToken(_) => "Invalid access token",
            Problem::InsufficientScope(_) => "Insufficient scope",
            Problem::OriginNotAllowed(_) | Problem::PreflightRefused => "Origin not allowed",
            Problem::NotFound => "Not found",
            Problem::MethodNotAllowed(_) => "Method not allowed",
            Problem::Misdirected => "Misdirected request",
            Problem::RateLimited(_) | Problem::StreamOpen(_) => "Too many requests",
            Problem::InvalidInterval(_) => "Invalid request",
            Problem::Suspended(_) => "Suspended by the operator",
            Problem::ClockUnsynchronized => "Clock not synchronized",
        }
    }

    fn response(&self) -> Response<Body> {
        let status = self.status();
        let body = problem::body(
            self.code(),
            self.title(),
            status.as_u16(),
            &self.to_string(),
        );
        let mut resp = json(status, &PROBLEM_JSON, body.to_string().into_bytes());
        let h = resp.headers_mut();
        let mut set = |name: header::HeaderName, value: String| {
            // Built from constants and integers only, so always a valid header value.
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        };
        match self {
            Problem::MissingToken => {
                set(header::WWW_AUTHENTICATE, "Bearer realm=\"boxapi\"".into())
            }
            Problem::InvalidToken(_) => set(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"boxapi\", error=\"invalid_token\"".into(),
            ),
            Problem::InsufficientScope(scope) => set(
                header::WWW_AUTHENTICATE,
                format!("Bearer realm=\"boxapi\", error=\"insufficient_scope\", scope=\"{scope}\""),
            ),
            Problem::MethodNotAllowed(allow) => set(header::ALLOW, (*allow).into()),
            Problem::RateLimited(s) | Problem::StreamOpen(s) | Problem::Suspended(s) => {
                set(header::RETRY_AFTER, s.to_string())
            }
            Problem::ClockUnsynchronized => set(header::RETRY_AFTER, "30".into()),
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
    let server = &snap.config.server;
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

/// DNS-rebinding defence: Host (and SNI when sent) must name this box.
/// What the read-only endpoints allow, and what the token endpoint allows.
const GET_HEAD: &str = "GET, HEAD, OPTIONS";
const POST_ONLY: &str = "POST, OPTIONS";
/// The stream has no HEAD: the contract lists GET only (a HEAD would hold a stream for nothing).
const GET_ONLY: &str = "GET, OPTIONS";
const STREAM_PATH: &str = "/v1/counters/stream";

/// The token-protected endpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Access,
    Counters,
    Stream,
}

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

/// The bearer token of RFC 6750 §2.1, or `None` when there is none.
fn bearer(headers: &HeaderMap) -> Result<Option<&[u8]>, Problem> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TokenError::Malformed("more than one Authorization header").into());
    }
    let v = value.as_bytes();
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return Ok(None);
    }
    Ok(Some(v[7..].trim_ascii()))
}

async fn decide(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    conn: &ConnInfo,
    req: &mut Request<hyper::body::Incoming>,
    origin: Origin,
    tool: &mut Option<usize>,
) -> Result<Response<Body>, Problem> {
    if !host_ok(req, snap, conn) {
        return Err(Problem::Misdirected);
    }
    // A method a known path never answers is refused first, whoever asks.
    let token_endpoint =
        snap.config.token_endpoint.is_some() && req.uri().path() == authz::TOKEN_PATH;
    let allow = match req.uri().path() {
        "/v1/access" | "/v1/counters" | authz::DISCOVERY_PATH => Some(GET_HEAD),
        STREAM_PATH => Some(GET_ONLY),
        _ if token_endpoint => Some(POST_ONLY),
        _ => None,
    };
    if let Some(allow) = allow {
        if !allow.split(", ").any(|m| m == req.method().as_str()) {
            return Err(Problem::MethodNotAllowed(allow));
        }
    }
    if origin == Origin::Refused {
        return Err(Problem::OriginNotAllowed(
            "this Origin is not the origin of an allowed measurement tool",
        ));
    }
    app.limiter
        .check(conn.terminal, Instant::now())
        .map_err(Problem::RateLimited)?;
    let token_endpoint =
        snap.config.token_endpoint.is_some() && req.uri().path() == authz::TOKEN_PATH;
    if req.method() == Method::OPTIONS {
        return preflight(req.headers(), origin, token_endpoint);
    }
    if let Mode::Suspended { retry_after } = app.control.mode() {
        return Err(Problem::Suspended(retry_after));
    }
    let read_only = req.method() == Method::GET || req.method() == Method::HEAD;
    let route = match req.uri().path() {
        "/v1/access" => Route::Access,
        "/v1/counters" => Route::Counters,
        STREAM_PATH => Route::Stream,
        authz::DISCOVERY_PATH if read_only => {
            let body = authz::discovery(&snap.config).to_string().into_bytes();
            return Ok(json(StatusCode::OK, &APPLICATION_JSON, body));
        }
        authz::DISCOVERY_PATH => return Err(Problem::MethodNotAllowed(GET_HEAD)),
        _ if token_endpoint && req.method() == Method::POST => {
            return token_request(app, snap, req, origin).await
        }
        _ if token_endpoint => return Err(Problem::MethodNotAllowed(POST_ONLY)),
        _ => return Err(Problem::NotFound),
    };
    if !read_only {
        return Err(Problem::MethodNotAllowed(GET_HEAD));
    }
    let scope = if route == Route::Access {
        Scopes::ACCESS
    } else {
        Scopes::COUNTERS
    };
    let now = boxapi_core::time::unix_now();
    if boxapi_core::time::clock_is_unset(now) {
        return Err(Problem::ClockUnsynchronized);
    }
    let token = bearer(req.headers())?.ok_or(Problem::MissingToken)?;
    let revoked = |id: &str| app.control.is_revoked(id);
    let grant = snap.trust.verifier.verify_remembered(
        token,
        now,
        &snap.trust.registry,
        &revoked,
        &mut conn.token.lock().unwrap_or_else(|p| p.into_inner()),
    )?;
    *tool = Some(grant.tool);
    if let Origin::Allowed { tool: page_tool } = origin {
        if page_tool != grant.tool {
            return Err(Problem::OriginNotAllowed(
                "this page's origin belongs to another tool than the token",
            ));
        }
    }
    if !grant.scopes.contains(scope) {
        let name = if scope == Scopes::ACCESS {
            "access"
        } else {
            "counters"
        };
        return Err(Problem::InsufficientScope(name));
    }
    if route == Route::Stream {
        return stream(app, snap, conn, req, grant, token);
    }
    let src = snap.sources().with_wifi(&app.wifi);
    // The rights in effect: the token's scopes ∩ the registration (checked above, 403) ∩ the
    // subscriber's choices (withheld sections are null, not refused).
    let withheld = snap
        .trust
        .registry
        .get(grant.tool)
        .map(|t| app.control.withheld_for(&t.id))
        .unwrap_or_default();
    let body = if route == Route::Access {
        src.access_card(&conn.client, withheld).await
    } else {
        let mut counters = src.counters(&conn.client);
        crate::card::withhold::counters(&mut counters, withheld);
        // Serializing a Value into a Vec cannot fail.
        serde_json::to_vec(&counters).unwrap_or_default()
    };
    Ok(json(StatusCode::OK, &APPLICATION_JSON, body))
}

/// `GET /v1/counters/stream`: checks the interval, takes the terminal's one stream, and answers
/// with a body that writes the lines itself.
fn stream(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    conn: &ConnInfo,
    req: &Request<hyper::body::Incoming>,
    grant: boxapi_core::auth::Grant,
    token: &[u8],
) -> Result<Response<Body>, Problem> {
    let every = crate::stream::interval(req.uri().query())?;
    let ends = tokio::time::Instant::now() + snap.config.metrics.stream_max;
    let guard = app
        .streams
        .begin(conn.terminal, ends)
        .map_err(Problem::StreamOpen)?;
    let tool_id = snap
        .trust
        .registry
        .get(grant.tool)
        .map(|t| t.id.clone())
        .unwrap_or_default();
    let body = crate::stream::CounterStream::new(crate::stream::Opening {
        app: app.clone(),
        snap: snap.clone(),
        client: conn.client.clone(),
        tool_id,
        token: token.into(),
        every,
        guard,
        ends,
    });
    let mut resp = Response::new(Either::Right(body));
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
    req: &mut Request<hyper::body::Incoming>,
    origin: Origin,
) -> Result<Response<Body>, Problem> {
    use http_body_util::BodyExt;
    let now = boxapi_core::time::unix_now();
    if boxapi_core::time::clock_is_unset(now) {
        return Err(Problem::ClockUnsynchronized);
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
            config: &snap.config,
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
pub async fn handle(
    app: &Arc<App>,
    conn: &ConnInfo,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let snap = app.snapshot();
    let revoked = |id: &str| app.control.is_revoked(id);
    let origin = cors::classify(req.headers(), &snap.trust.registry, &revoked);
    let mut tool = None;
    let result = decide(app, &snap, conn, &mut req, origin, &mut tool).await;
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
    let tool = tool
        .and_then(|i| snap.trust.registry.get(i))
        .map(|t| t.id.as_str());
    // Activity counts what a verified tool was given (the subscriber's "who read my data").
    if let Some(id) = tool.filter(|_| resp.status().is_success()) {
        app.activity
            .record(id, boxapi_core::time::unix_now() as i64);
    }
    let elapsed = started.elapsed().as_micros() as u64;
    boxapi_core::log::access(
        tool,
        req.method().as_str(),
        req.uri().path(),
        resp.status().as_u16(),
        elapsed,
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(bearer(&h).unwrap(), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h).unwrap(), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  a.b.c "),
        );
        assert_eq!(bearer(&h).unwrap(), Some(&b"a.b.c"[..]));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(bearer(&h).is_err());
    }

    #[test]
    fn every_problem_has_its_status_and_headers() {
        let cases: Vec<(Problem, u16, &str)> = vec![
            (Problem::MissingToken, 401, "missing_token"),
            (
                Problem::InvalidToken(TokenError::Expired),
                401,
                "invalid_token",
            ),
            (
                Problem::InsufficientScope("counters"),
                403,
                "insufficient_scope",
            ),
            (Problem::OriginNotAllowed("x"), 403, "origin_not_allowed"),
            (Problem::NotFound, 404, "not_found"),
            (
                Problem::MethodNotAllowed(GET_HEAD),
                405,
                "method_not_allowed",
            ),
            (Problem::Misdirected, 421, "misdirected_request"),
            (Problem::RateLimited(3), 429, "rate_limited"),
            (Problem::StreamOpen(3), 429, "rate_limited"),
            (
                Problem::InvalidInterval(crate::stream::IntervalError::Missing),
                400,
                "invalid_request",
            ),
            (Problem::Suspended(60), 503, "suspended"),
            (Problem::ClockUnsynchronized, 503, "clock_unsynchronized"),
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
        let r = Problem::InsufficientScope("counters").response();
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("scope=\"counters\""));
        assert_eq!(
            Problem::Suspended(60).response().headers()[header::RETRY_AFTER],
            "60"
        );
        assert_eq!(
            Problem::MethodNotAllowed(GET_HEAD).response().headers()[header::ALLOW],
            "GET, HEAD, OPTIONS"
        );
    }
}
