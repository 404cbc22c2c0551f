//! The operator-signed tool registry (the PKI of annex 2 §3): tools, origins, scopes, public
//! keys and revocations, as a JWS signed by the operator's root key, with a version number. A box
//! accepts a registry only if the signature verifies and the version is not older than the one it
//! already accepted (no rollback).
use super::jwk::{self, PrivateJwk, PublicJwk};
use super::registry::{Scopes, Tool};
use super::token::{verify_jws, TokenError};
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

/// Checks a registry payload (JSON) and returns it parsed.
pub fn parse_payload(payload: &[u8]) -> Result<SignedRegistry, SignedError> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| bad(format!("not JSON: {e}")))?;
    let version = v.get("version").and_then(Value::as_u64).filter(|&n| n > 0);
    let version = version.ok_or_else(|| bad("\"version\" must be a positive integer".into()))?;
    let items = v
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("\"tools\" must be an array".into()))?;
    let mut tools: Vec<(Tool, Vec<PublicJwk>)> = Vec::new();
    for (n, t) in items.iter().enumerate() {
        let field = |k: &str| t.get(k);
        let id = field("id").and_then(Value::as_str).unwrap_or("").to_owned();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(bad(format!(
                "tools[{n}].id is missing or not 1-64 of A-Z a-z 0-9 . _ -"
            )));
        }
        if tools.iter().any(|(x, _)| x.id == id) {
            return Err(bad(format!("tools[{n}].id {id:?} appears twice")));
        }
        let strings = |k: &str| -> Result<Vec<String>, SignedError> {
            match field(k) {
                None => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| bad(format!("tools[{n}].{k} must hold strings")))
                    })
                    .collect(),
                Some(_) => Err(bad(format!("tools[{n}].{k} must be an array"))),
            }
        };
        let origins = strings("origins")?;
        for o in &origins {
            crate::cors::check_origin_syntax(o)
                .map_err(|why| bad(format!("tools[{n}].origins {o:?}: {why}")))?;
            if tools.iter().any(|(x, _)| x.origins.contains(o)) {
                return Err(bad(format!(
                    "tools[{n}].origins {o:?} belongs to another tool"
                )));
            }
        }
        let mut scopes = Scopes::default();
        for s in strings("scopes")? {
            scopes = scopes.union(
                Scopes::from_name(&s)
                    .ok_or_else(|| bad(format!("tools[{n}].scopes {s:?} is unknown")))?,
            );
        }
        let keys = match field("keys") {
            None => Vec::new(),
            Some(k) => jwk::parse_public_set(&serde_json::json!({ "keys": k }).to_string())
                .map_err(|e| bad(format!("tools[{n}].keys: {e}")))?,
        };
        let name = field("name")
            .and_then(Value::as_str)
            .unwrap_or(&id)
            .to_owned();
        let revoked = field("revoked").and_then(Value::as_bool).unwrap_or(false);
        let tokens_per_hour = match field("tokens_per_hour") {
            None => None,
            Some(q) => Some(
                q.as_u64()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| bad(format!("tools[{n}].tokens_per_hour must be 1 to 100000")))?
                    as u32,
            ),
        };
        tools.push((
            Tool {
                id,
                name,
                origins,
                scopes,
                revoked,
                tokens_per_hour,
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
    std::fs::read_to_string(state_dir.join(VERSION_FILE))
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
pub fn record_version(state_dir: &Path, version: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = state_dir.join(format!(".{VERSION_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{version}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, state_dir.join(VERSION_FILE))?;
    std::fs::File::open(state_dir)?.sync_all()
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
}
