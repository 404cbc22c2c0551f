//! The authority's routes: `POST /v1/token` (RFC 6749 client credentials, CORS for registered
//! tools' pages), `GET /v1/locate` (the caller's box), discovery (RFC 8414), the boxes' `POST
//! /v1/enrol`, `POST /v1/address` and `GET /v1/fleet` (when `[enrolment]` is configured;
//! `crate::enrol`, `crate::fleet`), and problem+json for everything else.
use crate::app::App;
use crate::enrol::{self, Refusal};
use crate::fleet;
use crate::locator::{self, LocateError};
use crate::metrics::{LocateResult, RefusedReason};
use crate::snapshot::Snapshot;
use crate::store::{Admission, StoreError};
use boxapi_core::authz::{self, OAuthError};
use boxapi_core::control::Mode;
use boxapi_core::cors::{self, Origin};
use boxapi_core::{log, problem};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A request's body as the handlers read it: hyper's, telling the connection's slot when it has
/// arrived.
pub type Incoming = boxapi_core::fair::Arriving<hyper::body::Incoming>;

pub type Body = Full<Bytes>;

/// A token request's form is a few hundred bytes: it has this long to arrive.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

const TOKEN_ALLOW: &str = "POST, OPTIONS";
const DISCOVERY_ALLOW: &str = "GET, HEAD, OPTIONS";
/// Boxes are not browsers: no preflight.
const ENROL_ALLOW: &str = "POST";
const FLEET_ALLOW: &str = "GET, HEAD";
/// Where a tool's page learns which box serves the line it runs on.
pub const LOCATE_PATH: &str = "/v1/locate";

fn json(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// A refusal as RFC 9457 problem details, with the header its status needs.
fn problem(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
    extra: Option<(header::HeaderName, HeaderValue)>,
) -> Response<Body> {
    let body = problem::body(code, title, status.as_u16(), detail);
    let mut resp = json(status, problem::CONTENT_TYPE, body.to_string().into_bytes());
    if let Some((name, value)) = extra {
        resp.headers_mut().insert(name, value);
    }
    resp
}

fn not_found() -> Response<Body> {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        "Not found",
        "no such endpoint: the authority serves /v1/token, /v1/locate (when a locator is \
         configured), /.well-known/oauth-authorization-server and, for boxes when enrolment is \
         configured, /v1/enrol and /v1/address",
        None,
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        &format!("this endpoint answers {allow} only"),
        Some((header::ALLOW, HeaderValue::from_static(allow))),
    )
}

fn oauth_error(e: &OAuthError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json(
        status,
        "application/json",
        e.body().to_string().into_bytes(),
    );
    if let Some((name, value)) = e.header() {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// 503 when the shared store (or the locator) could not be consulted: fail closed, come back soon.
fn unavailable(detail: &str, retry_after: u64) -> Response<Body> {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "Temporarily unavailable",
        detail,
        Some((header::RETRY_AFTER, HeaderValue::from(retry_after))),
    )
}

fn reason(e: &OAuthError) -> RefusedReason {
    match e {
        OAuthError::InvalidRequest(_) => RefusedReason::invalid_request,
        OAuthError::InvalidClient(_) => RefusedReason::invalid_client,
        OAuthError::InvalidScope => RefusedReason::invalid_scope,
        OAuthError::UnsupportedGrantType => RefusedReason::unsupported_grant_type,
        OAuthError::Quota(_) => RefusedReason::quota,
    }
}

/// A request's answer and, for the access log and metrics, the tool it was for.
struct Answer {
    resp: Response<Body>,
    tool: Option<String>,
}

impl From<Response<Body>> for Answer {
    fn from(resp: Response<Body>) -> Self {
        Answer { resp, tool: None }
    }
}

async fn route(
    app: &App,
    snap: &Snapshot,
    req: &mut Request<Incoming>,
    origin: Origin,
    peer: IpAddr,
    device: Option<&[u8]>,
) -> Answer {
    let path = req.uri().path();
    let enrolment = snap.enrolment.clone();
    // Before the suspension: an authority suspended in an emergency still carries the
    // operator's restriction to the boxes.
    if let (fleet::PATH, Some(settings)) = (path, &enrolment) {
        return fleet_document(app, req, settings, device).into();
    }
    let allow = match path {
        authz::TOKEN_PATH => TOKEN_ALLOW,
        authz::DISCOVERY_PATH => DISCOVERY_ALLOW,
        enrol::ENROL_PATH | enrol::ADDRESS_PATH if enrolment.is_some() => ENROL_ALLOW,
        LOCATE_PATH if snap.locator.is_some() => DISCOVERY_ALLOW,
        _ => return not_found().into(),
    };
    if !allow.split(", ").any(|m| m == req.method().as_str()) {
        return method_not_allowed(allow).into();
    }
    if origin == Origin::Refused {
        return problem(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "Origin not allowed",
            "this Origin is not the origin of an allowed measurement tool",
            None,
        )
        .into();
    }
    let token_endpoint = path == authz::TOKEN_PATH;
    if req.method() == Method::OPTIONS {
        let mut resp = Response::new(Body::default());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        match origin {
            Origin::Allowed { .. } if cors::preflight_method_ok(req.headers(), token_endpoint) => {
                cors::add_preflight_headers(req.headers(), resp.headers_mut(), token_endpoint)
            }
            Origin::Allowed { .. } => {
                return problem(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    "Origin not allowed",
                    "the preflight asks for a method this endpoint does not answer",
                    None,
                )
                .into()
            }
            _ => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
        }
        return resp.into();
    }
    if let Mode::Suspended { retry_after } = app.control.mode() {
        if token_endpoint {
            app.metrics.token_refused("-", RefusedReason::suspended);
        }
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "suspended",
            "Suspended by the operator",
            &format!(
                "the operator has suspended the authority for now; retry after {retry_after} s"
            ),
            Some((header::RETRY_AFTER, HeaderValue::from(retry_after))),
        )
        .into();
    }
    if let (Some(settings), true) = (&enrolment, allow == ENROL_ALLOW) {
        let started = Instant::now();
        let enrolling = path == enrol::ENROL_PATH;
        let mut name = String::new();
        let result = async {
            name = enrol::device_name(settings, device)?;
            let body = read_json_body(req).await?;
            if enrolling {
                enrol::enrol(app, settings, &name, &body).await
            } else {
                enrol::address(app, settings, &name, &body).await
            }
        }
        .await;
        let event = if enrolling {
            "enrolment"
        } else {
            "address_update"
        };
        enrol::log_outcome(event, &name, &result, started);
        let resp = match result {
            Ok(v) => json(
                StatusCode::OK,
                "application/json",
                v.to_string().into_bytes(),
            ),
            Err(r) => problem(
                r.status,
                r.code,
                r.title,
                &r.detail,
                r.retry_after
                    .map(|s| (header::RETRY_AFTER, HeaderValue::from(s))),
            ),
        };
        return resp.into();
    }
    match path {
        authz::TOKEN_PATH => token(app, snap, req, origin, peer).await,
        LOCATE_PATH => locate(app, snap, req, peer).await.into(),
        _ => {
            let body = authz::discovery(&snap.config.common)
                .to_string()
                .into_bytes();
            json(StatusCode::OK, "application/json", body).into()
        }
    }
}

/// The box serving the caller's line (`None`: not mapped, or the address is unknown).
async fn caller_box(
    app: &App,
    snap: &Snapshot,
    headers: &hyper::HeaderMap,
    peer: IpAddr,
) -> Result<Option<String>, LocateError> {
    let Some(loc) = &snap.locator else {
        return Ok(None);
    };
    let settings = &snap.config.authority;
    let addr = locator::client_address(
        peer,
        headers,
        &settings.client_address_header,
        &settings.trusted_proxies,
    );
    match addr {
        Some(a) => loc.locate(a, &app.store).await,
        None => Ok(None),
    }
}

async fn locate(
    app: &App,
    snap: &Snapshot,
    req: &Request<Incoming>,
    peer: IpAddr,
) -> Response<Body> {
    match caller_box(app, snap, req.headers(), peer).await {
        Ok(Some(url)) => {
            app.metrics.located(LocateResult::found);
            let body = serde_json::json!({ "box_url": url })
                .to_string()
                .into_bytes();
            json(StatusCode::OK, "application/json", body)
        }
        Ok(None) => {
            app.metrics.located(LocateResult::not_found);
            problem(
                StatusCode::NOT_FOUND,
                "box_not_found",
                "No box known for this address",
                "the operator maps no box to the address this request came from: call from the subscriber's own line (not through a VPN or another network)",
                None,
            )
        }
        Err(e) => {
            app.metrics.located(LocateResult::error);
            if let LocateError::Store(s) = &e {
                app.metrics.store_error("locate", s);
            }
            log::event("locate_error", &[("error", &e.to_string())]);
            unavailable(
                "the box locator cannot answer right now; retry shortly",
                e.retry_after_secs(),
            )
        }
    }
}

/// The store could not check what it had to: 503, counted, never a token.
fn store_failed(app: &App, tool: &str, op: &'static str, e: &StoreError) -> Answer {
    app.metrics.store_error(op, e);
    app.metrics
        .token_refused(tool, RefusedReason::store_unavailable);
    log::event("store_error", &[("op", op), ("error", &e.to_string())]);
    Answer {
        resp: unavailable(
            "token issuance is briefly unavailable (its shared state cannot be reached); retry after the Retry-After delay",
            e.retry_after_secs(),
        ),
        tool: (tool != "-").then(|| tool.to_owned()),
    }
}

/// `POST /v1/token`: checks needing no state, then the caller's box, single use of the assertion
/// and the quota in the store (any store failure is a 503, never an unchecked token), then signs.
async fn token(
    app: &App,
    snap: &Snapshot,
    req: &mut Request<Incoming>,
    origin: Origin,
    peer: IpAddr,
) -> Answer {
    let limited = http_body_util::Limited::new(req.body_mut(), authz::MAX_BODY);
    let body = match tokio::time::timeout(BODY_DEADLINE, limited.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return oauth_error(&OAuthError::InvalidRequest(
                "the body is too large or unreadable",
            ))
            .into()
        }
        Err(_) => {
            return oauth_error(&OAuthError::InvalidRequest(
                "the body did not arrive in time",
            ))
            .into()
        }
    };
    let now = boxapi_core::time::unix_now();
    let page_tool = match origin {
        Origin::Allowed { tool } => Some(tool),
        _ => None,
    };
    // A stale copy of the shared revocations could miss one made on another replica: fail closed.
    let shared = match app.store.revoked() {
        Ok(s) => s,
        Err(e) => return store_failed(app, "-", "revoked", &e),
    };
    let revoked = |id: &str| app.control.is_revoked(id) || shared.contains(id);
    let issuer = authz::Issuer {
        config: &snap.config.common,
        trust: &snap.trust,
    };
    let grant = match authz::validate(issuer, req.headers(), &body, page_tool, &revoked, now) {
        Ok(g) => g,
        Err(r) => {
            // A tool is named once it authenticated, a revoked one included (docs/authorization.md).
            let why = if r.revoked {
                RefusedReason::revoked
            } else {
                reason(&r.error)
            };
            app.metrics.token_refused(r.tool.unwrap_or("-"), why);
            return Answer {
                resp: oauth_error(&r.error),
                tool: r.tool.map(str::to_owned),
            };
        }
    };
    let tool = grant.tool_id;
    let refuse = |e: OAuthError, why: RefusedReason| {
        app.metrics.token_refused(tool, why);
        Answer {
            resp: oauth_error(&e),
            tool: Some(tool.to_owned()),
        }
    };
    let settings = &snap.config.authority;
    let box_url = match caller_box(app, snap, req.headers(), peer).await {
        Ok(u) => u,
        // Without per-box audiences the URL is a convenience: the token does without it.
        Err(e) if !settings.per_box_audience => {
            log::event("locate_error", &[("error", &e.to_string())]);
            None
        }
        Err(e) => {
            if let LocateError::Store(s) = &e {
                return store_failed(app, tool, "locate", s);
            }
            app.metrics
                .token_refused(tool, RefusedReason::store_unavailable);
            log::event("locate_error", &[("error", &e.to_string())]);
            return Answer {
                resp: unavailable(
                    "the box locator cannot answer right now; retry shortly",
                    e.retry_after_secs(),
                ),
                tool: Some(tool.to_owned()),
            };
        }
    };
    let audience = match (&box_url, settings.per_box_audience) {
        (_, false) => snap.config.common.auth.audience.clone(),
        (Some(url), true) => url.clone(),
        (None, true) => {
            app.metrics
                .token_refused(tool, RefusedReason::invalid_target);
            let body = serde_json::json!({
                "error": "invalid_target",
                "error_description": "tokens here are for one box: request them from the subscriber's line (the operator maps no box to this address)",
            });
            return Answer {
                resp: json(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    body.to_string().into_bytes(),
                ),
                tool: Some(tool.to_owned()),
            };
        }
    };
    let admission = match app
        .store
        .admit(tool, grant.single(), grant.tokens_per_hour, now)
        .await
    {
        Ok(a) => a,
        Err(e) => return store_failed(app, tool, "admit", &e),
    };
    if let Some(e) = authz::refusal(admission) {
        let why = match admission {
            Admission::QuotaSpent(_) => RefusedReason::quota,
            _ => RefusedReason::replayed_assertion,
        };
        return refuse(e, why);
    }
    match authz::mint(&grant, &audience, now) {
        Ok(mut v) => {
            if let Some(url) = box_url {
                v["box_url"] = url.into();
            }
            app.metrics.token_issued(tool);
            Answer {
                resp: json(
                    StatusCode::OK,
                    "application/json",
                    v.to_string().into_bytes(),
                ),
                tool: Some(tool.to_owned()),
            }
        }
        Err(e) => refuse(e, RefusedReason::invalid_request),
    }
}

/// `GET /v1/fleet`: the signed fleet document for a box named by its device certificate, with
/// its version as `ETag`; `304` when the box has it (`If-None-Match`), `404 no_fleet_document`
/// while none is published.
fn fleet_document(
    app: &App,
    req: &Request<Incoming>,
    settings: &crate::enrol_settings::Settings,
    device: Option<&[u8]>,
) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return method_not_allowed(FLEET_ALLOW);
    }
    let name = match enrol::device_name(settings, device) {
        Ok(name) => name,
        Err(r) => return problem(r.status, r.code, r.title, &r.detail, None),
    };
    let Some(doc) = app.fleet.current() else {
        return problem(
            StatusCode::NOT_FOUND,
            "no_fleet_document",
            "No fleet document",
            "the operator has published no fleet document yet",
            None,
        );
    };
    let etag = HeaderValue::from_str(&doc.etag())
        // A decimal number in quotes is always a valid header value.
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| doc.matches(v.as_bytes()));
    let window = app.snapshot().config.authority.fleet_window;
    app.fleet
        .seen
        .note(&name, doc.version, Instant::now(), window);
    let mut resp = if unchanged {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        json(StatusCode::OK, fleet::CONTENT_TYPE, doc.jws.to_vec())
    };
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// How long the listener lets a request to `path` run (`general` for all but one route):
/// `POST /v1/enrol` waits for a slot and for the CA, far longer than any other request, and is
/// given what its own bounds add up to (body included) when that is more.
pub fn time_limit(app: &App, path: &str, general: Duration) -> Duration {
    if path != enrol::ENROL_PATH {
        return general;
    }
    match &app.snapshot().enrolment {
        Some(settings) => {
            general.max(BODY_DEADLINE + enrol::max_duration(settings, app.store.call_limit()))
        }
        None => general,
    }
}

/// A box's JSON body: `Content-Type: application/json`, at most `enrol::MAX_BODY` bytes, within
/// `BODY_DEADLINE`.
async fn read_json_body(req: &mut Request<Incoming>) -> Result<Bytes, Refusal> {
    let json_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(enrol::invalid(
            "the body must be Content-Type: application/json",
        ));
    }
    let limited = http_body_util::Limited::new(req.body_mut(), enrol::MAX_BODY);
    match tokio::time::timeout(BODY_DEADLINE, limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => Err(enrol::invalid(format!(
            "the body is unreadable or larger than {} bytes",
            enrol::MAX_BODY
        ))),
        Err(_) => Err(enrol::invalid(format!(
            "the body did not arrive within {} s",
            BODY_DEADLINE.as_secs()
        ))),
    }
}

/// Answers one request: route it, add the headers every answer carries, log it. `peer` is the
/// connection's peer address; `device` the client's verified device certificate (DER), if it
/// presented one.
pub async fn handle(
    app: &App,
    mut req: Request<Incoming>,
    peer: IpAddr,
    device: Option<&[u8]>,
) -> Response<Body> {
    let started = Instant::now();
    let snap = app.snapshot();
    let revoked = |id: &str| app.is_revoked(id);
    let origin = cors::classify(req.headers(), &snap.trust.registry, &revoked);
    let Answer { mut resp, tool } = route(app, &snap, &mut req, origin, peer, device).await;
    let cors_allowed = matches!(origin, Origin::Allowed { .. })
        && !(req.method() == Method::OPTIONS && resp.status() == StatusCode::FORBIDDEN);
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if cors_allowed {
        if let Some(o) = req.headers().get(header::ORIGIN) {
            cors::add_response_headers(h, o);
        }
    }
    if req.method() == Method::HEAD {
        *resp.body_mut() = Body::default();
    }
    let endpoint = match req.uri().path() {
        authz::TOKEN_PATH => "token",
        LOCATE_PATH => "locate",
        authz::DISCOVERY_PATH => "discovery",
        fleet::PATH => "fleet",
        _ => "other",
    };
    app.metrics.observe_latency(endpoint, started.elapsed());
    log::access(
        tool.as_deref(),
        req.method().as_str(),
        req.uri().path(),
        resp.status().as_u16(),
        started.elapsed().as_micros() as u64,
    );
    resp
}

/// The metrics listener's only route: `GET /metrics` in the OpenMetrics text format.
pub fn metrics<B>(app: &App, req: &Request<B>) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return not_found();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let window = app.snapshot().config.authority.fleet_window;
    app.metrics
        .fleet_boxes(&app.fleet.seen.counts(Instant::now(), window));
    match app.metrics.encode() {
        Ok(text) => {
            let mut resp = json(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                text.into_bytes(),
            );
            if req.method() == Method::HEAD {
                *resp.body_mut() = Body::default();
            }
            resp
        }
        Err(_) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "the metrics could not be encoded",
            None,
        ),
    }
}
