//! The operator-signed tool registry (the PKI of annex 2 §3): tools, origins, scopes, public
//! keys and revocations, as a JWS signed by the operator's root key, with a version number. A box
//! accepts a registry only if the signature verifies and the version is not older than the one it
//! already accepted (no rollback).
use super::jwk::{self, PrivateJwk, PublicJwk};
use super::registry::{check_origin_syntax, valid_tool_id, Scopes, Tool, TOOL_ID_RULE};
use super::token::{verify_jws, TokenError};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// A registry of a few hundred tools is far below this.
pub const MAX_REGISTRY_BYTES: usize = 1 << 20;
/// The last accepted version, in `state_dir`.
pub const VERSION_FILE: &str = "registry.version";

#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    #[error("signature: {0}")]
    Signature(#[from] TokenError),
    #[error("payload: {0}")]
    Payload(String),
    #[error("version {got} is older than the accepted version {have}: rollback refused")]
    Rollback { have: u64, got: u64 },
}

/// A verified registry.
#[derive(Debug)]
pub struct SignedRegistry {
    pub version: u64,
    /// Each tool with its verification keys.
    pub tools: Vec<(Tool, Vec<PublicJwk>)>,
}

fn bad(what: String) -> SignedError {
    SignedError::Payload(what)
}

/// The payload's members. Unknown members are refused, as unknown keys are in the TOML
/// configuration: a misspelt `"revokd": true` must not leave a tool trusted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u64,
    /// Kept raw so that each entry's problem can name its index.
    tools: Vec<Value>,
}

/// One tool of the registry, typed: a `"revoked": "true"` is an error, not a silent `false`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    name: Option<String>,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// JWKs, read by `jwk::parse_public_set`.
    keys: Option<Vec<Value>>,
    #[serde(default)]
    revoked: bool,
    tokens_per_hour: Option<u64>,
    /// The habilitation's validity window, RFC 3339 (null or absent: unbounded).
    not_before: Option<String>,
    expires: Option<String>,
}

/// Checks a registry payload (JSON) and returns it parsed.
pub fn parse_payload(payload: &[u8]) -> Result<SignedRegistry, SignedError> {
    let doc: Document =
        serde_json::from_slice(payload).map_err(|e| bad(format!("not a registry: {e}")))?;
    if doc.version == 0 {
        return Err(bad("\"version\" must be a positive integer".into()));
    }
    let mut tools: Vec<(Tool, Vec<PublicJwk>)> = Vec::new();
    for (n, item) in doc.tools.into_iter().enumerate() {
        let e = Entry::deserialize(item).map_err(|e| bad(format!("tools[{n}]: {e}")))?;
        if !valid_tool_id(&e.id) {
            return Err(bad(format!("tools[{n}].id must be {TOOL_ID_RULE}")));
        }
        if tools.iter().any(|(x, _)| x.id == e.id) {
            return Err(bad(format!("tools[{n}].id {:?} appears twice", e.id)));
        }
        for o in &e.origins {
            check_origin_syntax(o)
                .map_err(|why| bad(format!("tools[{n}].origins {o:?}: {why}")))?;
            if tools.iter().any(|(x, _)| x.origins.contains(o)) {
                return Err(bad(format!(
                    "tools[{n}].origins {o:?} belongs to another tool"
                )));
            }
        }
        let mut scopes = Scopes::default();
        for s in &e.scopes {
            scopes = scopes.union(
                Scopes::from_name(s)
                    .ok_or_else(|| bad(format!("tools[{n}].scopes {s:?} is unknown")))?,
            );
        }
        let keys = match e.keys {
            None => Vec::new(),
            Some(k) => jwk::parse_public_set(&serde_json::json!({ "keys": k }).to_string())
                .map_err(|e| bad(format!("tools[{n}].keys: {e}")))?,
        };
        let tokens_per_hour = match e.tokens_per_hour {
            None => None,
            Some(q) => Some(
                u32::try_from(q)
                    .ok()
                    .filter(|q| (1..=100_000).contains(q))
                    .ok_or_else(|| {
                        bad(format!("tools[{n}].tokens_per_hour must be 1 to 100000"))
                    })?,
            ),
        };
        let date = |k: &str, v: &Option<String>| -> Result<Option<i64>, SignedError> {
            match v {
                None => Ok(None),
                Some(text) => crate::time::parse_rfc3339(text).map(Some).ok_or_else(|| {
                    bad(format!(
                        "tools[{n}].{k} must be an RFC 3339 date-time with an offset, e.g. 2027-01-31T00:00:00Z"
                    ))
                }),
            }
        };
        let not_before = date("not_before", &e.not_before)?;
        let expires = date("expires", &e.expires)?;
        // An expires in the past is fine (the registry is accepted, the tool refused); a window
        // that ends before it starts is a mistake the operator should hear about when signing.
        if let (Some(nb), Some(exp)) = (not_before, expires) {
            if exp <= nb {
                return Err(bad(format!("tools[{n}].expires must be after not_before")));
            }
        }
        tools.push((
            Tool {
                name: e.name.unwrap_or_else(|| e.id.clone()),
                id: e.id,
                origins: e.origins,
                scopes,
                revoked: e.revoked,
                tokens_per_hour,
                not_before,
                expires,
            },
            keys,
        ));
    }
    Ok(SignedRegistry {
        version: doc.version,
        tools,
    })
}

/// Verifies a signed registry with the operator's root key.
pub fn verify(root: &PublicJwk, jws: &[u8]) -> Result<SignedRegistry, SignedError> {
    let payload = verify_jws(root, jws.trim_ascii(), MAX_REGISTRY_BYTES)?;
    parse_payload(&payload)
}

/// Signs a registry payload (checked first) with the operator's root key.
pub fn sign(root: &PrivateJwk, payload: &[u8]) -> Result<String, SignedError> {
    parse_payload(payload)?;
    let header = serde_json::json!({ "alg": root.key.alg.name(), "kid": root.key.kid });
    let input = format!(
        "{}.{}",
        crate::b64::url_encode(header.to_string().as_bytes()),
        crate::b64::url_encode(payload)
    );
    let sig = super::mint::sign(root, input.as_bytes()).map_err(|e| bad(e.to_string()))?;
    Ok(format!("{input}.{}", crate::b64::url_encode(&sig)))
}

/// The version accepted last (0 when none was).
pub fn accepted_version(state_dir: &Path) -> u64 {
    crate::files::read_text_limited(
        &state_dir.join(VERSION_FILE),
        crate::files::limit::STATE_SMALL,
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

/// Refuses a registry older than the one accepted last.
pub fn check_rollback(state_dir: &Path, got: u64) -> Result<(), SignedError> {
    let have = accepted_version(state_dir);
    if got < have {
        return Err(SignedError::Rollback { have, got });
    }
    Ok(())
}

/// Records an accepted version (atomically: temporary file, fsync, rename).
fn record_version(state_dir: &Path, version: u64) -> Result<(), crate::files::FileError> {
    crate::files::write_atomic(
        &state_dir.join(VERSION_FILE),
        format!("{version}\n").as_bytes(),
        0o600,
    )
}

/// What both daemons do once a snapshot is accepted (at start and at each reload): remember its
/// registry version, so that [`check_rollback`] refuses an older one from then on. Written only
/// when it moves forward (a box reloads often and its flash wears). A failure is logged, not
/// fatal: the registry in force was checked already.
pub fn record_accepted(state_dir: &Path, version: Option<u64>) {
    let Some(v) = version else { return };
    if v <= accepted_version(state_dir) {
        return;
    }
    if let Err(e) = record_version(state_dir, v) {
        crate::log::event(
            "state_error",
            &[("error", &format!("registry version: {e}"))],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwk::Alg;
    use crate::auth::mint;

    #[test]
    fn sign_verify_and_tamper() {
        let root = mint::generate(Alg::EdDsa, "root").unwrap();
        let tool_key = mint::generate(Alg::Es256, "t1").unwrap();
        let payload = serde_json::json!({"version": 3, "tools": [{"id": "t", "origins": ["https://t.example"],
            "scopes": ["access"], "keys": [tool_key.key.to_json()]}]})
        .to_string();
        let jws = sign(&root, payload.as_bytes()).unwrap();
        let r = verify(&root.key, jws.as_bytes()).unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.tools[0].1[0].kid, "t1");
        let other = mint::generate(Alg::EdDsa, "root").unwrap();
        assert!(matches!(
            verify(&other.key, jws.as_bytes()),
            Err(SignedError::Signature(_))
        ));
        let mut parts: Vec<&str> = jws.split('.').collect();
        let forged =
            crate::b64::url_encode(payload.replace("\"version\":3", "\"version\":9").as_bytes());
        parts[1] = &forged;
        assert!(verify(&root.key, parts.join(".").as_bytes()).is_err());
        assert!(sign(&root, br#"{"version": 0, "tools": []}"#).is_err());
        assert!(sign(
            &root,
            br#"{"version": 1, "tools": [{"id": "a"}, {"id": "a"}]}"#
        )
        .is_err());
    }

    #[test]
    fn accepted_versions_only_move_forward() {
        let dir = std::env::temp_dir().join(format!("boxapi-signed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(accepted_version(&dir), 0);
        record_accepted(&dir, Some(3));
        assert_eq!(accepted_version(&dir), 3);
        record_accepted(&dir, Some(2));
        record_accepted(&dir, None);
        assert_eq!(accepted_version(&dir), 3);
        assert!(matches!(
            check_rollback(&dir, 2),
            Err(SignedError::Rollback { have: 3, got: 2 })
        ));
        assert!(check_rollback(&dir, 3).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn payload_error(json: &str) -> String {
        match parse_payload(json.as_bytes()) {
            Err(SignedError::Payload(why)) => why,
            other => panic!("{json}: expected a payload error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_members_are_refused_like_unknown_config_keys() {
        let ok = r#"{"version": 1, "tools": [{"id": "a", "name": "A", "origins": ["https://a.example"],
            "scopes": ["access"], "revoked": false, "tokens_per_hour": 10}]}"#;
        let r = parse_payload(ok.as_bytes()).unwrap();
        assert_eq!(r.tools[0].0.tokens_per_hour, Some(10));
        // A misspelt member would otherwise leave the tool trusted.
        let why = payload_error(r#"{"version": 1, "tools": [{"id": "a", "revokd": true}]}"#);
        assert!(why.starts_with("tools[0]: unknown field `revokd`"), "{why}");
        let why = payload_error(r#"{"version": 1, "tools": [], "signed_by": "x"}"#);
        assert!(why.contains("unknown field `signed_by`"), "{why}");
        // Wrong types are errors, not defaults.
        let why = payload_error(r#"{"version": 1, "tools": [{"id": "a", "revoked": "true"}]}"#);
        assert!(why.starts_with("tools[0]: invalid type"), "{why}");
        let why = payload_error(r#"{"version": 1, "tools": [{"id": "a b"}]}"#);
        assert_eq!(why, "tools[0].id must be 1-64 of A-Z a-z 0-9 . _ -");
        let why = payload_error(r#"{"version": 0, "tools": []}"#);
        assert_eq!(why, "\"version\" must be a positive integer");
    }

    #[test]
    fn validity_dates() {
        let r = parse_payload(
            br#"{"version": 1, "tools": [{"id": "a", "not_before": "2020-01-01T00:00:00Z",
                "expires": "2021-01-01T01:00:00+01:00"}, {"id": "b", "expires": null}]}"#,
        )
        .unwrap();
        assert_eq!(r.tools[0].0.not_before, Some(1_577_836_800));
        assert_eq!(r.tools[0].0.expires, Some(1_609_459_200));
        assert_eq!(r.tools[1].0.expires, None);
        for bad in [
            r#"{"version": 1, "tools": [{"id": "a", "expires": "2021-01-01"}]}"#,
            r#"{"version": 1, "tools": [{"id": "a", "expires": 1609459200}]}"#,
            r#"{"version": 1, "tools": [{"id": "a", "not_before": "2021-01-01T00:00:00Z", "expires": "2020-01-01T00:00:00Z"}]}"#,
        ] {
            assert!(parse_payload(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
