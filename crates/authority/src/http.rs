//! The authority's routes: `POST /v1/token` (RFC 6749 client credentials, CORS for registered
//! tools' pages), discovery (RFC 8414), the boxes' `POST /v1/enrol` and `POST /v1/address` (when
//! `[enrolment]` is configured; `crate::enrol`), and problem+json for everything else.
use crate::app::App;
use crate::enrol::{self, Refusal};
use boxapi_core::authz::{self, OAuthError};
use boxapi_core::control::Mode;
use boxapi_core::cors::{self, Origin};
use boxapi_core::{log, problem};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::time::{Duration, Instant};

pub type Body = Full<Bytes>;

/// A token request's form is a few hundred bytes: it has this long to arrive.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

const TOKEN_ALLOW: &str = "POST, OPTIONS";
const DISCOVERY_ALLOW: &str = "GET, HEAD, OPTIONS";
/// Boxes are not browsers: no preflight.
const ENROL_ALLOW: &str = "POST";

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
        "no such endpoint: the authority serves /v1/token, /.well-known/oauth-authorization-server \
         and, for boxes when enrolment is configured, /v1/enrol and /v1/address",
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

async fn route(
    app: &App,
    req: &mut Request<hyper::body::Incoming>,
    origin: Origin,
    device: Option<&[u8]>,
) -> Response<Body> {
    let snap = app.snapshot();
    let path = req.uri().path();
    let enrolment = snap.enrolment.clone();
    let allow = match path {
        authz::TOKEN_PATH => TOKEN_ALLOW,
        authz::DISCOVERY_PATH => DISCOVERY_ALLOW,
        enrol::ENROL_PATH | enrol::ADDRESS_PATH if enrolment.is_some() => ENROL_ALLOW,
        _ => return not_found(),
    };
    if !allow.split(", ").any(|m| m == req.method().as_str()) {
        return method_not_allowed(allow);
    }
    if origin == Origin::Refused {
        return problem(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "Origin not allowed",
            "this Origin is not the origin of an allowed measurement tool",
            None,
        );
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
            }
            _ => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
        }
        return resp;
    }
    if let Mode::Suspended { retry_after } = app.control.mode() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "suspended",
            "Suspended by the operator",
            &format!(
                "the operator has suspended the authority for now; retry after {retry_after} s"
            ),
            Some((header::RETRY_AFTER, HeaderValue::from(retry_after))),
        );
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
                enrol::address(settings, &name, &body).await
            }
        }
        .await;
        let event = if enrolling {
            "enrolment"
        } else {
            "address_update"
        };
        enrol::log_outcome(event, &name, &result, started);
        return match result {
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
    }
    if !token_endpoint {
        let body = authz::discovery(&snap.config).to_string().into_bytes();
        return json(StatusCode::OK, "application/json", body);
    }
    let now = boxapi_core::time::unix_now();
    let limited = http_body_util::Limited::new(req.body_mut(), authz::MAX_BODY);
    let body = match tokio::time::timeout(BODY_DEADLINE, limited.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return oauth_error(&OAuthError::InvalidRequest(
                "the body is too large or unreadable",
            ))
        }
        Err(_) => {
            return oauth_error(&OAuthError::InvalidRequest(
                "the body did not arrive in time",
            ))
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
        &app.authz,
        req.headers(),
        &body,
        page_tool,
        &revoked,
        now,
    ) {
        Ok(v) => json(
            StatusCode::OK,
            "application/json",
            v.to_string().into_bytes(),
        ),
        Err(e) => oauth_error(&e),
    }
}

/// A box's JSON body: `Content-Type: application/json`, at most `enrol::MAX_BODY` bytes, within
/// `BODY_DEADLINE`.
async fn read_json_body(req: &mut Request<hyper::body::Incoming>) -> Result<Bytes, Refusal> {
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

/// Answers one request: route it, add the headers every answer carries, log it. `device` is the
/// client's verified device certificate (DER), if it presented one.
pub async fn handle(
    app: &App,
    mut req: Request<hyper::body::Incoming>,
    device: Option<&[u8]>,
) -> Response<Body> {
    let started = Instant::now();
    let snap = app.snapshot();
    let revoked = |id: &str| app.control.is_revoked(id);
    let origin = cors::classify(req.headers(), &snap.trust.registry, &revoked);
    let mut resp = route(app, &mut req, origin, device).await;
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
    log::access(
        None,
        req.method().as_str(),
        req.uri().path(),
        resp.status().as_u16(),
        started.elapsed().as_micros() as u64,
    );
    resp
}
