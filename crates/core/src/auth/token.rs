//! Verification of JWT access tokens (RFC 9068 style, JWS compact, ES256 or EdDSA only).
use super::jwk::{Alg, PublicJwk};
use super::registry::{Registry, Scopes, Tool, Validity};
use crate::b64;
use ring::signature::{UnparsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_FIXED, ED25519};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;

/// Tokens above this size are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token was refused; the text is the problem's `detail` and never quotes the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is larger than 4096 bytes")]
    Oversized,
    #[error("the token is not a JWS in compact form: {0}")]
    Malformed(&'static str),
    #[error("the token's alg must be ES256 or EdDSA")]
    Algorithm,
    #[error("the token's typ must be at+jwt or JWT")]
    Type,
    #[error("the token header has no kid")]
    MissingKid,
    #[error("no key with the token's kid is configured")]
    UnknownKid,
    #[error("the token's alg does not match its key")]
    AlgorithmMismatch,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("the token's iss is not an accepted issuer")]
    Issuer,
    #[error("the token's aud does not name this box")]
    Audience,
    #[error("the token's client_id is not a registered tool")]
    UnknownTool,
    #[error("the token is signed with a key that belongs to another tool")]
    KeyNotForTool,
    #[error("this tool's access has been revoked")]
    Revoked,
    /// The tool's habilitation (registry or `[[tool]]` `expires`) has lapsed: distinct from a
    /// token that expired, so that a tool developer knows a new token will not help. Both
    /// carry the tool's whole window, which the box's problem repeats (contract §6 rev. 3).
    #[error("this tool's authorisation expired at {}: it is not valid now, whatever the token says; the operator must renew it", crate::time::rfc3339(.0.expires.unwrap_or_default()))]
    ToolExpired(Window),
    #[error("this tool's authorisation is not valid now: it starts at {}", crate::time::rfc3339(.0.not_before.unwrap_or_default()))]
    ToolNotYetValid(Window),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf or iat in the future)")]
    NotYetValid,
    #[error("the token's lifetime (exp - iat) is longer than allowed")]
    LifetimeTooLong,
    /// A client assertion dated ahead of this server's clock: it would pass for one made after
    /// a replay store was emptied, so it is refused, and the detail names the client's clock.
    #[error("the token's iat is in the future, beyond the {0} s allowed for clock skew: iat must be when the assertion was made; check the client's clock")]
    IssuedInFuture(u64),
}

/// A tool's validity window (Unix seconds; `None`: unbounded on that side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub not_before: Option<i64>,
    pub expires: Option<i64>,
}

/// What a valid token grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Index of the tool in the registry of the snapshot that verified it.
    pub tool: usize,
    /// Scopes of the token that the tool is registered for.
    pub scopes: Scopes,
    pub exp: u64,
}

/// Verifies a JWS (compact form, ES256 or EdDSA) signed by `key`, up to `max` bytes, and returns
/// its payload. For documents signed by the operator, such as the tool registry.
pub fn verify_jws(key: &PublicJwk, jws: &[u8], max: usize) -> Result<Vec<u8>, TokenError> {
    let rules = Rules {
        audience: String::new(),
        issuers: Vec::new(),
        max_lifetime: 0,
        leeway: 0,
    };
    let one = Verifier::new(rules, Vec::new(), vec![key.clone()]);
    one.check_jws_sized(jws, max).map(|(_, payload)| payload)
}

/// A verified client assertion.
#[derive(Debug, PartialEq, Eq)]
pub struct Assertion {
    pub tool: usize,
    pub jti: String,
    pub exp: u64,
    /// When the client says it made the assertion (optional in RFC 7523).
    pub iat: Option<u64>,
}

struct Key {
    alg: Alg,
    key: UnparsedPublicKey<Vec<u8>>,
    /// `Some(tool index)`: a tool's own key; `None`: an issuer key, valid for any registered tool.
    tool: Option<usize>,
}

/// Accepted keys and claim rules, parsed once per configuration snapshot.
pub struct Verifier {
    keys: HashMap<String, Key>,
    audience: String,
    issuers: Vec<String>,
    max_lifetime: u64,
    leeway: u64,
    cache: super::cache::TokenCache<Grant>,
    /// Tells this verifier's [`Remembered`] tokens from another's (a reload makes a new one).
    id: u32,
}

/// The last token a connection presented and what it granted, so that the next request on the
/// same connection with the same bytes costs a comparison instead of a hash (a keep-alive page
/// polling `/v1/counters` sends the same token every time). Bound to the verifier that checked
/// it: after a reload the token is verified again.
#[derive(Default)]
pub struct Remembered {
    last: Option<(u32, Box<[u8]>, Grant)>,
}

/// Claim rules from `[auth]`.
pub struct Rules {
    pub audience: String,
    pub issuers: Vec<String>,
    pub max_lifetime: u64,
    pub leeway: u64,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    typ: Option<Cow<'a, str>>,
    crit: Option<de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(borrow)]
    iss: Option<Cow<'a, str>>,
    #[serde(borrow)]
    aud: Option<Audience<'a>>,
    #[serde(borrow)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    scope: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sub: Option<Cow<'a, str>>,
    #[serde(borrow)]
    jti: Option<Cow<'a, str>>,
    iat: Option<f64>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
struct Audience<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Audience<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Audience<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Audience(vec![Cow::Borrowed(v)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Audience(vec![Cow::Owned(v.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element::<Cow<'de, str>>()? {
                    if all.len() == 16 {
                        return Err(de::Error::custom("too many audiences"));
                    }
                    all.push(s);
                }
                Ok(Audience(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether a tool may use the API at `now`: not revoked (in its registration or at run time) and
/// inside its validity window. Checked on every use of a token, cached or not.
pub fn check_tool(tool: &Tool, now: u64, revoked: &dyn Fn(&str) -> bool) -> Result<(), TokenError> {
    if tool.revoked || revoked(&tool.id) {
        return Err(TokenError::Revoked);
    }
    let window = Window {
        not_before: tool.not_before,
        expires: tool.expires,
    };
    match tool.validity(i64::try_from(now).unwrap_or(i64::MAX)) {
        Validity::Valid => Ok(()),
        Validity::NotYetValid(_) => Err(TokenError::ToolNotYetValid(window)),
        Validity::Expired(_) => Err(TokenError::ToolExpired(window)),
    }
}

/// A NumericDate as whole seconds; negative, fractional-overflowing or non-finite values are malformed.
fn seconds(v: f64) -> Result<u64, TokenError> {
    if v.is_finite() && (0.0..1e15).contains(&v) {
        Ok(v as u64)
    } else {
        Err(TokenError::Malformed("a time claim is out of range"))
    }
}

impl Verifier {
    /// `tool_keys` pairs each key with the index of the tool it is bound to; `issuer_keys` are unbound.
    /// Key ids are unique across both (the configuration checks it).
    pub fn new(
        rules: Rules,
        tool_keys: Vec<(PublicJwk, usize)>,
        issuer_keys: Vec<PublicJwk>,
    ) -> Self {
        let mut keys = HashMap::new();
        let bound = tool_keys.into_iter().map(|(k, t)| (k, Some(t)));
        for (k, tool) in bound.chain(issuer_keys.into_iter().map(|k| (k, None))) {
            let alg: &'static dyn VerificationAlgorithm = match k.alg {
                Alg::Es256 => &ECDSA_P256_SHA256_FIXED,
                Alg::EdDsa => &ED25519,
            };
            let key = UnparsedPublicKey::new(alg, k.public);
            keys.insert(
                k.kid,
                Key {
                    alg: k.alg,
                    key,
                    tool,
                },
            );
        }
        Verifier {
            keys,
            audience: rules.audience,
            issuers: rules.issuers,
            max_lifetime: rules.max_lifetime,
            leeway: rules.leeway,
            cache: Default::default(),
            // 32 bits: MIPS32 boxes have no 64-bit atomics (AtomicU64 does not exist there), and
            // four billion reloads will not happen in one process.
            id: {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        }
    }

    /// [`Verifier::verify_cached`], first trying the token this connection presented last: a hit
    /// checks expiry, the tool's validity and revocation exactly as a cache hit does.
    pub fn verify_remembered(
        &self,
        token: &[u8],
        now: u64,
        registry: &Registry,
        revoked: &dyn Fn(&str) -> bool,
        memo: &mut Remembered,
    ) -> Result<Grant, TokenError> {
        if let Some((id, last, grant)) = &memo.last {
            if *id == self.id && **last == *token {
                return self.recheck(*grant, now, registry, revoked);
            }
        }
        let grant = self.verify_cached(token, now, registry, revoked)?;
        memo.last = Some((self.id, token.into(), grant));
        Ok(grant)
    }

    /// What a grant this verifier made before must still pass now: the tool (its validity window,
    /// revocation), then the token's expiry, in [`Verifier::verify`]'s order, so that a tool whose
    /// authorisation lapsed or was revoked is told so even once its token expired too.
    fn recheck(
        &self,
        grant: Grant,
        now: u64,
        registry: &Registry,
        revoked: &dyn Fn(&str) -> bool,
    ) -> Result<Grant, TokenError> {
        let tool = registry.get(grant.tool).ok_or(TokenError::UnknownTool)?;
        check_tool(tool, now, revoked)?;
        if now >= grant.exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        Ok(grant)
    }

    /// [`Verifier::verify`] with the cache of tokens already verified: a hit still checks
    /// expiry and revocation, so it is equivalent to a full check for the same token.
    pub fn verify_cached(
        &self,
        token: &[u8],
        now: u64,
        registry: &Registry,
        revoked: &dyn Fn(&str) -> bool,
    ) -> Result<Grant, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let key = super::cache::digest(token);
        if let Some(grant) = self.cache.get(&key, now, self.leeway) {
            return self.recheck(grant, now, registry, revoked);
        }
        let grant = self.verify(token, now, registry, revoked)?;
        self.cache.insert(key, grant, grant.exp, now, self.leeway);
        Ok(grant)
    }

    /// Verifies an RFC 7523 client assertion (private_key_jwt): signed with a key bound to the
    /// tool it names, `iss` = `sub` = that tool's id, `aud` naming `audience`, a `jti`, and an
    /// `exp` at most `max_assertion_life` seconds ahead.
    pub fn verify_assertion(
        &self,
        token: &[u8],
        audiences: &[&str],
        max_assertion_life: u64,
        now: u64,
        registry: &Registry,
    ) -> Result<Assertion, TokenError> {
        let (key, payload) = self.check_jws(token)?;
        let tool = key.tool.ok_or(TokenError::KeyNotForTool)?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("payload is not a valid claims object"))?;
        let id = &registry.get(tool).ok_or(TokenError::UnknownTool)?.id;
        let iss = claims
            .iss
            .as_deref()
            .ok_or(TokenError::MissingClaim("iss"))?;
        let sub = claims
            .sub
            .as_deref()
            .ok_or(TokenError::MissingClaim("sub"))?;
        if iss != id || sub != id {
            return Err(TokenError::KeyNotForTool);
        }
        let aud = claims.aud.ok_or(TokenError::MissingClaim("aud"))?;
        if !aud.0.iter().any(|a| audiences.contains(&a.as_ref())) {
            return Err(TokenError::Audience);
        }
        let jti = claims
            .jti
            .as_deref()
            .ok_or(TokenError::MissingClaim("jti"))?;
        if jti.is_empty() || jti.len() > 256 {
            return Err(TokenError::Malformed("jti must be 1 to 256 characters"));
        }
        let exp = seconds(claims.exp.ok_or(TokenError::MissingClaim("exp"))?)?;
        if now >= exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if exp > now.saturating_add(max_assertion_life) {
            return Err(TokenError::LifetimeTooLong);
        }
        if let Some(nbf) = claims.nbf {
            if now.saturating_add(self.leeway) < seconds(nbf)? {
                return Err(TokenError::NotYetValid);
            }
        }
        let iat = claims.iat.map(seconds).transpose()?;
        if iat.is_some_and(|iat| iat > now.saturating_add(self.leeway)) {
            return Err(TokenError::IssuedInFuture(self.leeway));
        }
        Ok(Assertion {
            tool,
            jti: jti.to_owned(),
            exp,
            iat,
        })
    }

    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// Forgets every verified token (after a revocation, so that nothing relies on a re-check).
    pub fn forget_verified(&self) {
        self.cache.clear();
    }

    /// Verifies signature and claims at time `now`; `revoked` tells whether a tool id is revoked at run time.
    /// Checks the JWS itself: size, form, header (alg, typ, kid, no crit) and the signature with
    /// the key named by `kid`. Returns that key and the decoded payload.
    fn check_jws(&self, token: &[u8]) -> Result<(&Key, Vec<u8>), TokenError> {
        self.check_jws_sized(token, MAX_TOKEN_BYTES)
    }

    fn check_jws_sized(&self, token: &[u8], max: usize) -> Result<(&Key, Vec<u8>), TokenError> {
        if token.len() > max {
            return Err(TokenError::Oversized);
        }
        let mut parts = token.split(|&b| b == b'.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected three dot-separated parts"));
        };
        let header_json =
            b64::url_decode(h64).ok_or(TokenError::Malformed("header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header_json)
            .map_err(|_| TokenError::Malformed("header is not a JSON object"))?;
        let alg = header
            .alg
            .as_deref()
            .and_then(Alg::from_name)
            .ok_or(TokenError::Algorithm)?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "crit header parameters are not supported",
            ));
        }
        match header.typ.as_deref() {
            None | Some("at+jwt") | Some("JWT") | Some("application/at+jwt") => {}
            Some(_) => return Err(TokenError::Type),
        }
        let kid = header.kid.as_deref().ok_or(TokenError::MissingKid)?;
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKid)?;
        if key.alg != alg {
            return Err(TokenError::AlgorithmMismatch);
        }
        let sig =
            b64::url_decode(s64).ok_or(TokenError::Malformed("signature is not base64url"))?;
        let signed = &token[..h64.len() + 1 + p64.len()];
        key.key
            .verify(signed, &sig)
            .map_err(|_| TokenError::BadSignature)?;
        let payload =
            b64::url_decode(p64).ok_or(TokenError::Malformed("payload is not base64url"))?;
        Ok((key, payload))
    }

    pub fn verify(
        &self,
        token: &[u8],
        now: u64,
        registry: &Registry,
        revoked: &dyn Fn(&str) -> bool,
    ) -> Result<Grant, TokenError> {
        let (key, payload) = self.check_jws(token)?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("payload is not a valid claims object"))?;
        let iss = claims
            .iss
            .as_deref()
            .ok_or(TokenError::MissingClaim("iss"))?;
        if !self.issuers.iter().any(|i| i == iss) {
            return Err(TokenError::Issuer);
        }
        let aud = claims.aud.ok_or(TokenError::MissingClaim("aud"))?;
        if !aud.0.iter().any(|a| *a == self.audience) {
            return Err(TokenError::Audience);
        }
        let client_id = claims
            .client_id
            .as_deref()
            .ok_or(TokenError::MissingClaim("client_id"))?;
        let tool_index = registry
            .index_of(client_id)
            .ok_or(TokenError::UnknownTool)?;
        if key.tool.is_some_and(|t| t != tool_index) {
            return Err(TokenError::KeyNotForTool);
        }
        let tool = registry.get(tool_index).ok_or(TokenError::UnknownTool)?;
        check_tool(tool, now, revoked)?;
        let iat = seconds(claims.iat.ok_or(TokenError::MissingClaim("iat"))?)?;
        let exp = seconds(claims.exp.ok_or(TokenError::MissingClaim("exp"))?)?;
        if exp.saturating_sub(iat) > self.max_lifetime {
            return Err(TokenError::LifetimeTooLong);
        }
        if now >= exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        let not_before = match claims.nbf {
            Some(nbf) => seconds(nbf)?.max(iat),
            None => iat,
        };
        if now.saturating_add(self.leeway) < not_before {
            return Err(TokenError::NotYetValid);
        }
        let requested = Scopes::from_claim(claims.scope.as_deref().unwrap_or(""));
        Ok(Grant {
            tool: tool_index,
            scopes: requested.intersect(tool.scopes),
            exp,
        })
    }
}
