//! The operator-signed tool registry (the PKI of annex 2 §3): tools, origins, scopes, public
//! keys and revocations, as a JWS signed by the operator's root key, with a version number. A box
//! accepts a registry only if the signature verifies and the version is not older than the one it
//! already accepted (no rollback).
use super::jwk::{self, PrivateJwk, PublicJwk};
use super::registry::{check_origin_syntax, valid_tool_id, Scopes, Tool, TOOL_ID_RULE};
use super::token::{verify_jws, TokenError};
use crate::kept::Kept;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// A registry of a few hundred tools is far below this.
pub const MAX_REGISTRY_BYTES: usize = 1 << 20;
/// The last accepted version, in `state_dir`, kept with its previous good version.
pub const VERSION_FILE: &str = "registry.version";

#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    #[error("signature: {0}")]
    Signature(#[from] TokenError),
    #[error("payload: {0}")]
    Payload(String),
    #[error("version {got} is older than the accepted version {have}: rollback refused")]
    Rollback { have: u64, got: u64 },
    /// Every copy of the accepted version is damaged: any registry could be a rollback.
    #[error("the last accepted registry version is unknown ({0}): no registry is accepted until an operator checks this one and removes the damaged files (docs/authorization.md)")]
    FloorUnknown(String),
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
    registry(json(payload)?, "registry")
}

/// A payload as JSON.
pub(super) fn json(payload: &[u8]) -> Result<Value, SignedError> {
    serde_json::from_slice(payload).map_err(|e| bad(format!("not JSON: {e}")))
}

/// The registry's members and their checks, shared with the fleet document that carries them
/// ([`super::fleet`], which takes its own member out first): `what` names the document.
pub(super) fn registry(doc: Value, what: &str) -> Result<SignedRegistry, SignedError> {
    let Document {
        version,
        tools: items,
    } = Document::deserialize(doc).map_err(|e| bad(format!("not a {what}: {e}")))?;
    if version == 0 {
        return Err(bad("\"version\" must be a positive integer".into()));
    }
    let mut tools: Vec<(Tool, Vec<PublicJwk>)> = Vec::new();
    for (n, item) in items.into_iter().enumerate() {
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
    Ok(SignedRegistry { version, tools })
}

/// Verifies a signed registry with the operator's root key.
pub fn verify(root: &PublicJwk, jws: &[u8]) -> Result<SignedRegistry, SignedError> {
    let payload = verify_jws(root, jws.trim_ascii(), MAX_REGISTRY_BYTES)?;
    parse_payload(&payload)
}

/// Signs a registry payload (checked first) with the operator's root key.
pub fn sign(root: &PrivateJwk, payload: &[u8]) -> Result<String, SignedError> {
    parse_payload(payload)?;
    sign_checked(root, payload)
}

/// A compact JWS of a payload already checked.
pub(super) fn sign_checked(root: &PrivateJwk, payload: &[u8]) -> Result<String, SignedError> {
    let header = serde_json::json!({ "alg": root.key.alg.name(), "kid": root.key.kid });
    let input = format!(
        "{}.{}",
        crate::b64::url_encode(header.to_string().as_bytes()),
        crate::b64::url_encode(payload)
    );
    let sig = super::mint::sign(root, input.as_bytes()).map_err(|e| bad(e.to_string()))?;
    Ok(format!("{input}.{}", crate::b64::url_encode(&sig)))
}

/// The anti-rollback floor: the last accepted version, as [`VERSION_FILE`] and its previous good
/// version (`registry.version.prev`, [`Kept`]) tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// The highest version a good copy holds (0: none was ever accepted). `None` when no copy is
    /// good but one is damaged: the floor is unknown, and no registry is accepted (fail closed).
    pub version: Option<u64>,
    /// Why a copy could not be read, when one could not: `ctl status` warns
    /// [`DAMAGED_WARNING`] and the next acceptance rewrites both.
    pub damage: Option<String>,
}

/// What `ctl status` lists in `warnings` while a copy of the accepted version is damaged.
pub const DAMAGED_WARNING: &str = "registry_version_damaged";

fn copies(state_dir: &Path) -> Kept {
    Kept::new(state_dir, VERSION_FILE, crate::files::limit::STATE_SMALL)
}

/// The accepted version's two files (a daemon that drops root gives them to its user).
pub fn version_paths(state_dir: &Path) -> [std::path::PathBuf; 2] {
    let k = copies(state_dir);
    [k.file, k.prev]
}

fn parse_version(b: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| "not a version number".to_owned())
}

/// The floor the two copies give. Both are written with every version accepted, the previous
/// one first, so either good copy holds a version accepted, and the higher of the two is the
/// last: a damaged copy never lowers the floor below what the other holds.
pub fn floor(state_dir: &Path) -> Floor {
    let (version, damage) = copies(state_dir).newest(parse_version, |v| *v);
    Floor {
        // Nothing at all: no registry was ever accepted here.
        version: version.or(damage.is_none().then_some(0)),
        damage,
    }
}

/// Refuses a registry older than the one accepted last, and every registry while that one is
/// unknown ([`SignedError::FloorUnknown`]).
pub fn check_rollback(state_dir: &Path, got: u64) -> Result<(), SignedError> {
    floor(state_dir).check(got)
}

impl Floor {
    /// [`check_rollback`] against this floor.
    pub fn check(&self, got: u64) -> Result<(), SignedError> {
        match self.version {
            None => Err(SignedError::FloorUnknown(
                self.damage.clone().unwrap_or_default(),
            )),
            Some(have) if got < have => Err(SignedError::Rollback { have, got }),
            Some(_) => Ok(()),
        }
    }
}

/// What both daemons do once a snapshot is accepted (at start and at each reload): remember its
/// registry version, so that [`check_rollback`] refuses an older one from then on. Written only
/// when it moves forward (a box reloads often and its flash wears) or a copy is damaged (then
/// both are rewritten: the repair). A failure is logged, not fatal: the registry in force was
/// checked already.
pub fn record_accepted(state_dir: &Path, version: Option<u64>) {
    let Some(v) = version else { return };
    let f = floor(state_dir);
    if f.damage.is_none() && f.version.is_some_and(|have| v <= have) {
        return;
    }
    // Never below a good copy: the write repairs, it does not lower.
    let v = f.version.map_or(v, |have| have.max(v));
    if let Err(e) = copies(state_dir).save(format!("{v}\n").as_bytes(), 0o600) {
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

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("boxapi-signed-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn known(v: u64) -> Floor {
        Floor {
            version: Some(v),
            damage: None,
        }
    }

    #[test]
    fn accepted_versions_only_move_forward() {
        let dir = temp("forward");
        assert_eq!(floor(&dir), known(0));
        record_accepted(&dir, Some(3));
        assert_eq!(floor(&dir), known(3));
        let prev = dir.join(format!("{VERSION_FILE}.prev"));
        assert_eq!(
            std::fs::read(&prev).unwrap(),
            b"3\n",
            "previous version kept"
        );
        record_accepted(&dir, Some(2));
        record_accepted(&dir, None);
        assert_eq!(floor(&dir), known(3));
        assert!(matches!(
            check_rollback(&dir, 2),
            Err(SignedError::Rollback { have: 3, got: 2 })
        ));
        assert!(check_rollback(&dir, 3).is_ok());
        // A file from before the previous version was kept: its version alone.
        std::fs::remove_file(&prev).unwrap();
        assert_eq!(floor(&dir), known(3));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A damaged version file never lowers the anti-rollback floor (issue 21): it read as 0
    /// once, and a registry that undoes a revocation was accepted.
    #[test]
    fn a_damaged_version_file_never_lowers_the_floor() {
        let dir = temp("damaged");
        record_accepted(&dir, Some(3));
        for damage in [&b""[..], b"x", b"\xff\xfe", b"-1\n", b"3x\n"] {
            std::fs::write(dir.join(VERSION_FILE), damage).unwrap();
            assert!(
                matches!(
                    check_rollback(&dir, 2),
                    Err(SignedError::Rollback { have: 3, got: 2 })
                ),
                "{damage:?}: version 2 accepted"
            );
            assert!(check_rollback(&dir, 3).is_ok(), "{damage:?}");
        }
        let f = floor(&dir);
        assert_eq!(f.version, Some(3));
        assert!(f.damage.unwrap().contains("not a version number"));
        // The next acceptance repairs both copies, even when it does not move forward.
        record_accepted(&dir, Some(3));
        assert_eq!(floor(&dir), known(3));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A cut between the two writes leaves the previous version one ahead: the higher counts.
    /// The previous version damaged, the file good: the file's, warned.
    #[test]
    fn the_higher_good_copy_is_the_floor() {
        let dir = temp("higher");
        record_accepted(&dir, Some(3));
        let prev = dir.join(format!("{VERSION_FILE}.prev"));
        std::fs::write(&prev, b"5\n").unwrap();
        assert_eq!(floor(&dir), known(5));
        std::fs::remove_file(dir.join(VERSION_FILE)).unwrap();
        assert_eq!(floor(&dir), known(5));
        record_accepted(&dir, Some(4));
        assert_eq!(floor(&dir), known(5), "never lowered by a write");
        record_accepted(&dir, Some(6));
        std::fs::write(&prev, b"").unwrap();
        let f = floor(&dir);
        assert_eq!(f.version, Some(6));
        assert!(f.damage.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// No good copy, one damaged: no floor is known, and no registry is accepted, however
    /// new, until an operator removes the damaged files.
    #[test]
    fn without_a_good_copy_every_registry_is_refused() {
        let dir = temp("unknown");
        std::fs::write(dir.join(VERSION_FILE), b"\x00\x00").unwrap();
        let f = floor(&dir);
        assert_eq!(f.version, None);
        for v in [1, 3, u64::MAX] {
            let e = check_rollback(&dir, v).unwrap_err();
            assert!(matches!(e, SignedError::FloorUnknown(_)), "{v}: {e}");
            assert!(
                e.to_string()
                    .contains("registry.version: not a version number"),
                "{e}"
            );
        }
        // The previous version damaged and the file missing: the same.
        let prev = dir.join(format!("{VERSION_FILE}.prev"));
        std::fs::rename(dir.join(VERSION_FILE), &prev).unwrap();
        assert_eq!(floor(&dir).version, None);
        // Removed by hand: a first start.
        std::fs::remove_file(&prev).unwrap();
        assert!(check_rollback(&dir, 1).is_ok());
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
