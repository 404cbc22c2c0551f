//! The on-box OAuth 2.0 authorization server (annex 2 §3): discovery (RFC 8414) and a
//! `client_credentials` token endpoint authenticating tools by `private_key_jwt` (RFC 7523,
//! single-use assertions) or `client_secret_basic`, with a per-tool hourly token quota.
use crate::auth::{mint, Scopes};
use crate::config::Common;
use crate::grants::{self, Admission, MemoryGrants, Single};
use crate::trust::Trust;
use http::header::{self, HeaderMap};
use serde_json::{json, Value};
use std::collections::HashMap;

pub const TOKEN_PATH: &str = "/v1/token";
pub const DISCOVERY_PATH: &str = "/.well-known/oauth-authorization-server";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A client assertion is made for one request: it may not live longer than this.
pub const MAX_ASSERTION_LIFE: u64 = 300;
/// Bounds each tool's replay set in the box's [`MemoryGrants`]: assertions live 5 minutes, and
/// an assertion only enters the set once the tool's quota has room, so a tool fills at most its
/// own set, never another tool's.
pub const MAX_REPLAY_PER_TOOL: usize = 1024;
/// Form bodies of the token endpoint are a few hundred bytes (an assertion is under 4 KiB).
pub const MAX_BODY: usize = 16 * 1024;

/// What a token endpoint issues from: its configuration and whom it trusts.
#[derive(Clone, Copy)]
pub struct Issuer<'a> {
    pub config: &'a Common,
    pub trust: &'a Trust,
}

/// RFC 6749 §5.2 errors (and the quota's 429).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("{0}")]
    InvalidClient(String),
    #[error("a requested scope is not in this tool's registration, or unknown (the scopes are access and counters)")]
    InvalidScope,
    #[error("only grant_type=client_credentials is supported")]
    UnsupportedGrantType,
    #[error("this tool's token quota for the hour is spent; retry after {0} s")]
    Quota(u64),
}

impl OAuthError {
    pub fn status(&self) -> u16 {
        match self {
            OAuthError::InvalidClient(_) => 401,
            OAuthError::Quota(_) => 429,
            _ => 400,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::Quota(_) => "slow_down",
        }
    }

    /// The header RFC 6749 asks for with this error, if any.
    pub fn header(&self) -> Option<(header::HeaderName, header::HeaderValue)> {
        match self {
            OAuthError::InvalidClient(_) => Some((
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"boxapi\""),
            )),
            OAuthError::Quota(s) => Some((header::RETRY_AFTER, header::HeaderValue::from(*s))),
            _ => None,
        }
    }

    pub fn body(&self) -> Value {
        json!({ "error": self.code(), "error_description": self.to_string() })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Exactly two hex digits: `from_str_radix` alone would take "+1" as a number.
                let digit = |k: usize| b.get(k).and_then(|&c| (c as char).to_digit(16));
                out.push((digit(i + 1)? * 16 + digit(i + 2)?) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// An `application/x-www-form-urlencoded` body; a parameter given twice is an error (RFC 6749 §3.2).
pub fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| OAuthError::InvalidRequest("the body is not UTF-8"))?;
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = match (percent_decode(k), percent_decode(v)) {
            (Some(k), Some(v)) => (k, v),
            _ => {
                return Err(OAuthError::InvalidRequest(
                    "the body is not valid form encoding",
                ))
            }
        };
        if out.insert(k, v).is_some() {
            return Err(OAuthError::InvalidRequest("a parameter is repeated"));
        }
    }
    Ok(out)
}

/// The discovery document: where tokens come from (the box or the central server) and how.
pub fn discovery(config: &Common) -> Value {
    let auth = &config.auth;
    let (issuer, endpoint) = match &config.token_endpoint {
        Some(te) => (
            te.issuer.clone(),
            Some(format!("{}{TOKEN_PATH}", te.issuer)),
        ),
        None => (
            auth.issuers.first().cloned().unwrap_or_default(),
            auth.central_token_endpoint.clone(),
        ),
    };
    json!({
        "issuer": issuer,
        "token_endpoint": endpoint,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA"],
        "scopes_supported": ["access", "counters"],
        "response_types_supported": [],
        "boxapi_mode": if config.token_endpoint.is_some() { "box" } else { "central" },
        "boxapi_audience": auth.audience,
        "boxapi_accepted_issuers": auth.issuers,
        "boxapi_max_token_lifetime": auth.max_token_lifetime,
    })
}

/// How a token request's client proved who it is.
enum Authenticated {
    /// `client_secret_basic`: nothing to remember.
    Secret(usize),
    /// `private_key_jwt`: the assertion must be single use.
    Assertion(crate::auth::Assertion),
}

/// Authenticates the client of a token request (signature or secret, `client_id`). Single use of
/// an assertion is the caller's to check, with the quota (see [`PendingGrant`]).
fn authenticate(
    Issuer { config, trust }: Issuer<'_>,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    now: u64,
) -> Result<Authenticated, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    let assertion = form.get("client_assertion");
    let bad = |why: &str| OAuthError::InvalidClient(why.to_owned());
    let authenticated = match (basic, assertion) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::InvalidRequest(
                "use one client authentication method",
            ))
        }
        (None, None) => {
            return Err(bad(
                "client authentication is required (private_key_jwt or client_secret_basic)",
            ))
        }
        (Some(creds), None) => {
            let raw = crate::b64::std_decode(creds.trim().as_bytes())
                .ok_or_else(|| bad("malformed Basic credentials"))?;
            let text = String::from_utf8(raw).map_err(|_| bad("malformed Basic credentials"))?;
            let (id, secret) = text
                .split_once(':')
                .ok_or_else(|| bad("malformed Basic credentials"))?;
            let (id, secret) = (
                percent_decode(id).unwrap_or_default(),
                percent_decode(secret).unwrap_or_default(),
            );
            let index = trust
                .registry
                .index_of(&id)
                .ok_or_else(|| bad("unknown client or wrong secret"))?;
            let expected = config.tools.get(index).and_then(|t| t.client_secret_sha256);
            let given = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
            match expected {
                // Digests are compared without an early exit (and a digest leaks nothing of the secret).
                Some(e)
                    if e.iter()
                        .zip(given.as_ref())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0 =>
                {
                    Authenticated::Secret(index)
                }
                _ => return Err(bad("unknown client or wrong secret")),
            }
        }
        (None, Some(jwt)) => {
            if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
                return Err(OAuthError::InvalidRequest(
                    "client_assertion_type must be jwt-bearer",
                ));
            }
            let te = config
                .token_endpoint
                .as_ref()
                .ok_or(OAuthError::InvalidRequest("no token endpoint"))?;
            let endpoint = format!("{}{TOKEN_PATH}", te.issuer);
            let a = trust
                .verifier
                .verify_assertion(
                    jwt.as_bytes(),
                    &[&endpoint, &te.issuer],
                    MAX_ASSERTION_LIFE,
                    now,
                    &trust.registry,
                )
                .map_err(|e| OAuthError::InvalidClient(format!("client assertion refused: {e}")))?;
            Authenticated::Assertion(a)
        }
    };
    let tool = match &authenticated {
        Authenticated::Secret(i) => *i,
        Authenticated::Assertion(a) => a.tool,
    };
    let id = &trust
        .registry
        .get(tool)
        .ok_or_else(|| bad("unknown client"))?
        .id;
    if form.get("client_id").is_some_and(|c| c != id) {
        return Err(bad("client_id does not match the authenticated client"));
    }
    Ok(authenticated)
}

/// A client assertion that authenticated a token request: it must be used once only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedAssertion {
    pub jti: String,
    /// Until when (unix seconds) the assertion would still be accepted, leeway included: a
    /// replay check must remember its `jti` at least this long.
    pub valid_until: u64,
    /// The earliest it can have been made ([`grants::made_at`]).
    pub made_at: u64,
}

/// A token request that passed every check needing no run-time state: the client is
/// authenticated, not revoked, within its validity, allowed from this page, and asks for
/// registered scopes. Left before [`mint`]: single use of the assertion and the quota, checked
/// together by the caller's grant store ([`MemoryGrants`], or the authority's Redis store).
pub struct PendingGrant<'a> {
    pub tool_index: usize,
    pub tool_id: &'a str,
    pub assertion: Option<UsedAssertion>,
    pub scopes: Scopes,
    /// This tool's hourly token quota.
    pub tokens_per_hour: u32,
    key: &'a crate::auth::jwk::PrivateJwk,
    issuer: &'a str,
    ttl: u64,
}

/// A token request [`validate`] refused: the answer, and for metrics whom it was refused to.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal<'a> {
    pub error: OAuthError,
    /// The tool, once its client authentication passed (`None` before).
    pub tool: Option<&'a str>,
    /// The authenticated tool is revoked.
    pub revoked: bool,
}

impl From<OAuthError> for Refusal<'_> {
    fn from(error: OAuthError) -> Self {
        Refusal {
            error,
            tool: None,
            revoked: false,
        }
    }
}

/// Checks a token request up to (not including) single use and quota: see [`PendingGrant`].
/// `revoked` tells run-time revocations; `page_tool` is the tool whose allowed origin sent the
/// request, if a browser did.
pub fn validate<'a>(
    issuer: Issuer<'a>,
    headers: &HeaderMap,
    body: &[u8],
    page_tool: Option<usize>,
    revoked: &dyn Fn(&str) -> bool,
    now: u64,
) -> Result<PendingGrant<'a>, Refusal<'a>> {
    let Issuer { config, trust } = issuer;
    let te = config
        .token_endpoint
        .as_ref()
        .ok_or(OAuthError::InvalidRequest("no token endpoint"))?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let form = parse_form(body)?;
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => return Err(OAuthError::UnsupportedGrantType.into()),
        None => return Err(OAuthError::InvalidRequest("grant_type is required").into()),
    }
    let (index, assertion) = match authenticate(issuer, headers, &form, now)? {
        Authenticated::Secret(i) => (i, None),
        Authenticated::Assertion(a) => {
            let valid_until = a.exp.saturating_add(trust.verifier.leeway());
            let max_life = MAX_ASSERTION_LIFE + trust.verifier.leeway();
            let made_at = grants::made_at(a.iat, valid_until, max_life);
            (
                a.tool,
                Some(UsedAssertion {
                    valid_until,
                    jti: a.jti,
                    made_at,
                }),
            )
        }
    };
    let tool = trust
        .registry
        .get(index)
        .ok_or(OAuthError::InvalidClient("unknown client".into()))?;
    let refuse = |error: OAuthError| Refusal {
        error,
        tool: Some(&tool.id),
        revoked: false,
    };
    // Revoked, or outside its validity window: the same words as the API's 401.
    crate::auth::token::check_tool(tool, now, revoked).map_err(|e| Refusal {
        revoked: e == crate::auth::TokenError::Revoked,
        ..refuse(OAuthError::InvalidClient(e.to_string()))
    })?;
    if page_tool.is_some_and(|p| p != index) {
        return Err(refuse(OAuthError::InvalidClient(
            "this page's origin belongs to another tool".into(),
        )));
    }
    // The tool's own signing key when the server holds one (a central authority), else the box's.
    let key = trust
        .tool_signing_keys
        .get(&index)
        .or(trust.signing_key.as_ref())
        .ok_or_else(|| {
            refuse(OAuthError::InvalidRequest(
                "this server holds no signing key for this tool",
            ))
        })?;
    let scopes = match form.get("scope") {
        None => tool.scopes,
        Some(s) => {
            let mut want = Scopes::default();
            for name in s.split(' ').filter(|n| !n.is_empty()) {
                let sc = Scopes::from_name(name).ok_or_else(|| refuse(OAuthError::InvalidScope))?;
                want = want.union(sc);
            }
            if !tool.scopes.contains(want) || want == Scopes::default() {
                return Err(refuse(OAuthError::InvalidScope));
            }
            want
        }
    };
    Ok(PendingGrant {
        tool_index: index,
        tool_id: &tool.id,
        assertion,
        scopes,
        tokens_per_hour: tool.tokens_per_hour.unwrap_or(te.tokens_per_hour),
        key,
        issuer: &te.issuer,
        ttl: config.auth.max_token_lifetime,
    })
}

impl PendingGrant<'_> {
    /// The assertion to use once, as a grant store takes it.
    pub fn single(&self) -> Option<Single<'_>> {
        self.assertion.as_ref().map(|a| Single {
            jti: &a.jti,
            valid_until: a.valid_until,
            made_at: a.made_at,
        })
    }
}

/// The OAuth answer to a grant store's refusal; `None` when it granted.
pub fn refusal(admission: Admission) -> Option<OAuthError> {
    match admission {
        Admission::Granted => None,
        Admission::Replayed => Some(OAuthError::InvalidClient(
            "this client assertion was already used".into(),
        )),
        Admission::PredatesStore => Some(OAuthError::InvalidClient(
            "this client assertion was made before this server's record of used assertions began: make a new one".into(),
        )),
        Admission::QuotaSpent(s) => Some(OAuthError::Quota(s.0)),
    }
}

/// Signs the access token of an admitted grant for `audience` (normally `[auth] audience`).
pub fn mint(grant: &PendingGrant<'_>, audience: &str, now: u64) -> Result<Value, OAuthError> {
    let scope = grant.scopes.names().join(" ");
    let spec = mint::TokenSpec {
        tool: grant.tool_id,
        scope: &scope,
        audience,
        issuer: grant.issuer,
        ttl: grant.ttl,
        now,
    };
    let access_token =
        mint::token(grant.key, &spec).map_err(|_| OAuthError::InvalidRequest("signing failed"))?;
    Ok(
        json!({ "access_token": access_token, "token_type": "Bearer", "expires_in": grant.ttl, "scope": scope }),
    )
}

/// Handles a token request with the in-memory grant store (the box's token endpoint):
/// [`validate`], [`MemoryGrants::admit`], [`mint`]. `revoked` tells run-time revocations;
/// `page_tool` is the tool whose allowed origin sent the request, if a browser did.
pub fn token(
    issuer: Issuer<'_>,
    grants: &MemoryGrants,
    headers: &HeaderMap,
    body: &[u8],
    page_tool: Option<usize>,
    revoked: &dyn Fn(&str) -> bool,
    now: u64,
) -> Result<Value, OAuthError> {
    let grant = validate(issuer, headers, body, page_tool, revoked, now).map_err(|r| r.error)?;
    // Full means this tool alone used its replay set up within minutes: it slows down.
    let admission = grants
        .admit(grant.tool_id, grant.single(), grant.tokens_per_hour, now)
        .map_err(|e| OAuthError::Quota(e.retry_after_secs()))?;
    if let Some(e) = refusal(admission) {
        return Err(e);
    }
    mint(&grant, &issuer.config.auth.audience, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_takes_exactly_two_hex_digits() {
        assert!(parse_form(b"a=%+1").is_err());
        assert!(parse_form(b"a=%-1").is_err());
        assert!(parse_form(b"a=%1").is_err());
        assert!(parse_form("a=%é1".as_bytes()).is_err());
        assert_eq!(parse_form(b"a=%2B%2b").unwrap()["a"], "++");
    }

    #[test]
    fn form_decoding() {
        let f =
            parse_form(b"grant_type=client_credentials&scope=access+counters&x=%41%2b").unwrap();
        assert_eq!(f["scope"], "access counters");
        assert_eq!(f["x"], "A+");
        assert!(parse_form(b"a=1&a=2").is_err());
        assert!(parse_form(b"a=%zz").is_err());
        assert!(parse_form(b"a=%4").is_err());
    }

    #[test]
    fn errors_map_to_rfc6749() {
        assert_eq!(OAuthError::InvalidClient("x".into()).status(), 401);
        assert_eq!(
            OAuthError::UnsupportedGrantType.code(),
            "unsupported_grant_type"
        );
        assert_eq!(OAuthError::Quota(5).status(), 429);
        assert_eq!(OAuthError::InvalidScope.body()["error"], "invalid_scope");
        assert_eq!(refusal(Admission::Granted), None);
        for refused in [Admission::Replayed, Admission::PredatesStore] {
            assert_eq!(refusal(refused).map(|e| e.code()), Some("invalid_client"));
        }
        let quota = refusal(Admission::QuotaSpent(grants::RetryAfterSecs(5)));
        assert_eq!(quota, Some(OAuthError::Quota(5)));
    }
}
