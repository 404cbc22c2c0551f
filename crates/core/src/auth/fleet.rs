//! The signed fleet document (issue 23): the tool registry plus an optional restriction, signed by
//! the operator's registry root key, that the authority serves to every box.
use super::jwk::{PrivateJwk, PublicJwk};
use super::signed::{self, SignedError, SignedRegistry, MAX_REGISTRY_BYTES};
use super::token::verify_jws;
use crate::control::{SUSPEND_RETRY_AFTER, SUSPEND_RETRY_AFTER_DEFAULT, SUSPEND_RETRY_AFTER_RULE};
use crate::kept::Kept;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A reason is read by operators in logs and `ctl status`, not a document.
pub const MAX_REASON_CHARS: usize = 200;
/// Firmware versions or models one restriction names; more is a list the operator should split.
pub const MAX_LIST: usize = 100;
/// As long as a card's `box.model` or `box.firmware_version` reasonably is.
pub const MAX_NAME_CHARS: usize = 64;
/// The signed document (the JWS as signed, published, fetched and kept; its payload is about
/// 3/4 of it): `fleet sign` and `publish-fleet` refuse more, as a box could never fetch it.
pub const MAX_SIGNED_BYTES: usize = MAX_REGISTRY_BYTES;

fn check_size(jws: &[u8]) -> Result<(), SignedError> {
    if jws.len() > MAX_SIGNED_BYTES {
        return Err(bad(format!(
            "the signed fleet document is {} bytes, over the {MAX_SIGNED_BYTES} a box fetches",
            jws.len()
        )));
    }
    Ok(())
}

/// A verified fleet document: the registry it carries and its restriction.
#[derive(Debug)]
pub struct FleetDocument {
    /// Its `version` is the document's, on the registry's anti-rollback floor
    /// ([`signed::check_rollback`]): one sequence for both.
    pub registry: SignedRegistry,
    pub restriction: Option<Restriction>,
}

/// The operator's restriction of the API (annex 2: a security flaw or a major bug), answered as
/// `ctl suspend` is (contract §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// `false` restricts nothing: the document lifts what an earlier one imposed.
    pub suspended: bool,
    /// The 503's `Retry-After`, in seconds.
    pub retry_after: u64,
    pub reason: Option<String>,
    /// Only boxes whose card's `box.firmware_version` is one of these (`None`: every one).
    pub firmware: Option<Vec<String>>,
    /// Only boxes whose card's `box.model` is one of these (`None`: every one).
    pub models: Option<Vec<String>>,
}

impl Restriction {
    /// Whether a box with this firmware version and model is suspended. A box that does not know
    /// a value a list limits by is restricted: it cannot tell it is outside the flawed set, and a
    /// security restriction fails closed.
    pub fn suspends(&self, firmware: Option<&str>, model: Option<&str>) -> bool {
        let within = |list: &Option<Vec<String>>, mine: Option<&str>| match (list, mine) {
            (None, _) | (Some(_), None) => true,
            (Some(l), Some(m)) => l.iter().any(|x| x == m),
        };
        self.suspended && within(&self.firmware, firmware) && within(&self.models, model)
    }
}

impl FleetDocument {
    pub fn version(&self) -> u64 {
        self.registry.version
    }

    /// The restriction in force on a box with this firmware version and model, if any.
    pub fn restriction_for(
        &self,
        firmware: Option<&str>,
        model: Option<&str>,
    ) -> Option<&Restriction> {
        self.restriction
            .as_ref()
            .filter(|r| r.suspends(firmware, model))
    }
}

/// Typed like the registry's tools: `"suspended": "true"` is an error, not a silent `false`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestrictionEntry {
    suspended: bool,
    retry_after: Option<u64>,
    reason: Option<String>,
    firmware: Option<Vec<String>>,
    models: Option<Vec<String>>,
}

fn bad(what: String) -> SignedError {
    SignedError::Payload(what)
}

/// Printable and bounded: these strings reach logs and `ctl status`.
fn check_text(what: &str, text: &str, max: usize) -> Result<(), SignedError> {
    let n = text.chars().count();
    if n == 0 || n > max || text.chars().any(char::is_control) {
        return Err(bad(format!(
            "{what} must be 1 to {max} characters, none a control character"
        )));
    }
    Ok(())
}

fn check_list(what: &str, list: &Option<Vec<String>>) -> Result<(), SignedError> {
    let Some(list) = list else { return Ok(()) };
    // An empty list would restrict no box at all: surely not what a restriction meant.
    if list.is_empty() || list.len() > MAX_LIST {
        return Err(bad(format!(
            "restriction.{what} must list 1 to {MAX_LIST} values (omit it to restrict every box)"
        )));
    }
    for (n, x) in list.iter().enumerate() {
        check_text(&format!("restriction.{what}[{n}]"), x, MAX_NAME_CHARS)?;
        if list[..n].contains(x) {
            return Err(bad(format!("restriction.{what}[{n}] {x:?} appears twice")));
        }
    }
    Ok(())
}

fn restriction(v: Value) -> Result<Restriction, SignedError> {
    let r = RestrictionEntry::deserialize(v).map_err(|e| bad(format!("restriction: {e}")))?;
    let retry_after = r.retry_after.unwrap_or(SUSPEND_RETRY_AFTER_DEFAULT);
    if !SUSPEND_RETRY_AFTER.contains(&retry_after) {
        return Err(bad(format!("restriction.{SUSPEND_RETRY_AFTER_RULE}")));
    }
    if let Some(reason) = &r.reason {
        check_text("restriction.reason", reason, MAX_REASON_CHARS)?;
    }
    check_list("firmware", &r.firmware)?;
    check_list("models", &r.models)?;
    Ok(Restriction {
        suspended: r.suspended,
        retry_after,
        reason: r.reason,
        firmware: r.firmware,
        models: r.models,
    })
}

/// Checks a fleet document payload (JSON) and returns it parsed.
///
/// Its members are the registry's, and `restriction`, which must be present (`null`: none).
/// Required so that neither document passes for the other: a registry (no `restriction`) served
/// as a fleet document would lift a restriction the operator never lifted, and a fleet document
/// with one is refused as a registry (an unknown member there).
pub fn parse_payload(payload: &[u8]) -> Result<FleetDocument, SignedError> {
    let mut doc = signed::json(payload)?;
    let restriction = doc
        .as_object_mut()
        .and_then(|m| m.remove("restriction"))
        .ok_or_else(|| bad("not a fleet document: missing field `restriction`".into()))?;
    Ok(FleetDocument {
        registry: signed::registry(doc, "fleet document")?,
        restriction: match restriction {
            Value::Null => None,
            r => Some(self::restriction(r)?),
        },
    })
}

/// Verifies a signed fleet document with the operator's registry root key. The version is the
/// caller's to check against its floor ([`signed::Floor::check`]).
pub fn verify(root: &PublicJwk, jws: &[u8]) -> Result<FleetDocument, SignedError> {
    let jws = jws.trim_ascii();
    check_size(jws)?;
    parse_payload(&verify_jws(root, jws, MAX_SIGNED_BYTES)?)
}

/// Signs a fleet document payload (checked first) with the operator's registry root key.
pub fn sign(root: &PrivateJwk, payload: &[u8]) -> Result<String, SignedError> {
    parse_payload(payload)?;
    let jws = signed::sign_checked(root, payload)?;
    check_size(jws.as_bytes())?;
    Ok(jws)
}

/// The document a box applied, in its `state_dir`, kept with its previous good version ([`Kept`]).
pub const APPLIED: &str = "fleet-applied.jws";

fn copies(state_dir: &Path) -> Kept {
    Kept::new(state_dir, APPLIED, MAX_SIGNED_BYTES as u64)
}

/// The applied document's two files (a daemon that drops root gives them to its user).
pub fn applied_paths(state_dir: &Path) -> [PathBuf; 2] {
    let k = copies(state_dir);
    [k.file, k.prev]
}

/// The document a box applied last, as `state_dir` keeps it (the newer good copy), and why a
/// copy could not be read. A whole copy signed by another key than `root` (rotated since) is
/// not applied and is logged, not damage: a box must not stay suspended until a document of the
/// new key comes. No good copy but a damaged one: the caller fails closed.
pub fn applied(state_dir: &Path, root: &PublicJwk) -> (Option<FleetDocument>, Option<String>) {
    let (doc, damage) = copies(state_dir).newest(
        |b| match verify(root, b) {
            Ok(d) => Ok(Some(d)),
            Err(e @ SignedError::Signature(_)) if signed_whole(b) => {
                let why = format!("kept copy not applied, not signed by registry.root_key: {e}");
                crate::log::event("fleet_document_refused", &[("error", &why)]);
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        },
        |d| d.as_ref().map_or(0, FleetDocument::version),
    );
    (doc.flatten(), damage)
}

/// Whether a JWS is whole: a fleet document signed with a key this box does not hold, rather
/// than a damaged file.
fn signed_whole(jws: &[u8]) -> bool {
    let mut parts = jws.trim_ascii().split(|&b| b == b'.');
    let (Some(_), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !sig.is_empty()
        && crate::b64::url_decode(sig).is_some()
        && crate::b64::url_decode(payload).is_some_and(|p| parse_payload(&p).is_ok())
}

/// Keeps a verified document as the one applied (both copies replaced atomically).
pub fn keep_applied(state_dir: &Path, jws: &[u8]) -> Result<(), crate::files::FileError> {
    copies(state_dir).save(jws, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwk::Alg;
    use crate::auth::mint;

    fn payload_error(json: &str) -> String {
        match parse_payload(json.as_bytes()) {
            Err(SignedError::Payload(why)) => why,
            other => panic!("{json}: expected a payload error, got {other:?}"),
        }
    }

    const TOOLS: &str =
        r#""tools": [{"id": "t", "origins": ["https://t.example"], "scopes": ["access"]}]"#;

    #[test]
    fn sign_verify_and_tamper() {
        let root = mint::generate(Alg::EdDsa, "root").unwrap();
        let payload = format!(
            r#"{{"version": 4, {TOOLS}, "restriction": {{"suspended": true, "retry_after": 600,
                "reason": "CVE-2027-0001", "firmware": ["1.2.3"], "models": ["Box 8"]}}}}"#
        );
        let jws = sign(&root, payload.as_bytes()).unwrap();
        let d = verify(&root.key, jws.as_bytes()).unwrap();
        assert_eq!(d.version(), 4);
        assert_eq!(d.registry.tools[0].0.id, "t");
        let r = d.restriction.clone().unwrap();
        assert_eq!(
            r,
            Restriction {
                suspended: true,
                retry_after: 600,
                reason: Some("CVE-2027-0001".into()),
                firmware: Some(vec!["1.2.3".into()]),
                models: Some(vec!["Box 8".into()]),
            }
        );
        // Another key (a stale or rogue signer) is refused.
        let other = mint::generate(Alg::EdDsa, "root").unwrap();
        assert!(matches!(
            verify(&other.key, jws.as_bytes()),
            Err(SignedError::Signature(_))
        ));
        // The authority can forge nothing: a payload changed under the signature is refused.
        let mut parts: Vec<&str> = jws.split('.').collect();
        let lifted = crate::b64::url_encode(
            payload
                .replace("\"suspended\": true", "\"suspended\": false")
                .as_bytes(),
        );
        parts[1] = &lifted;
        assert!(matches!(
            verify(&root.key, parts.join(".").as_bytes()),
            Err(SignedError::Signature(_))
        ));
        // Nothing a box could not fetch is signed: a payload within MAX_REGISTRY_BYTES whose
        // JWS is over MAX_SIGNED_BYTES.
        let pad = " ".repeat(MAX_SIGNED_BYTES * 3 / 4);
        let big = format!(r#"{{"version": 4, {TOOLS}, "restriction": null{pad}}}"#);
        assert!(big.len() < MAX_REGISTRY_BYTES);
        let e = sign(&root, big.as_bytes()).map_or_else(|e| e.to_string(), |_| "signed".into());
        assert!(e.contains("a box fetches"), "{e}");
        let e = verify(&root.key, format!("{jws}{pad}{pad}x").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("a box fetches"), "{e}");
        // Nothing unchecked is signed.
        assert!(sign(
            &root,
            br#"{"version": 0, "tools": [], "restriction": null}"#
        )
        .is_err());
    }

    /// A registry is not a fleet document and a fleet document is not a registry, though both
    /// are signed by the same key: either, served as the other, could lift a restriction.
    #[test]
    fn neither_document_passes_for_the_other() {
        let root = mint::generate(Alg::EdDsa, "root").unwrap();
        let registry =
            signed::sign(&root, format!(r#"{{"version": 9, {TOOLS}}}"#).as_bytes()).unwrap();
        let e = verify(&root.key, registry.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("missing field `restriction`"), "{e}");
        let fleet = sign(
            &root,
            format!(r#"{{"version": 9, {TOOLS}, "restriction": null}}"#).as_bytes(),
        )
        .unwrap();
        let e = signed::verify(&root.key, fleet.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("unknown field `restriction`"), "{e}");
        let d = verify(&root.key, fleet.as_bytes()).unwrap();
        assert_eq!((d.version(), d.restriction), (9, None));
    }

    #[test]
    fn parsing_is_typed_and_strict() {
        let why = payload_error(r#"{"version": 1, "tools": [], "restriction": null, "extra": 1}"#);
        assert!(why.contains("unknown field `extra`"), "{why}");
        let why = payload_error(
            r#"{"version": 1, "tools": [], "restriction": {"suspended": true, "retry_afer": 5}}"#,
        );
        assert!(
            why.starts_with("restriction: unknown field `retry_afer`"),
            "{why}"
        );
        let why =
            payload_error(r#"{"version": 1, "tools": [], "restriction": {"suspended": "true"}}"#);
        assert!(why.starts_with("restriction: invalid type"), "{why}");
        let why =
            payload_error(r#"{"version": 1, "tools": [], "restriction": {"retry_after": 5}}"#);
        assert!(why.contains("missing field `suspended`"), "{why}");
        // The registry's own checks apply to the tools it carries.
        let why = payload_error(
            r#"{"version": 1, "tools": [{"id": "a", "revokd": true}], "restriction": null}"#,
        );
        assert!(why.starts_with("tools[0]: unknown field `revokd`"), "{why}");
        let why = payload_error(r#"{"version": 0, "tools": [], "restriction": null}"#);
        assert_eq!(why, "\"version\" must be a positive integer");
        for (restriction, expected) in [
            (
                r#"{"suspended": true, "retry_after": 0}"#,
                "restriction.retry_after must be 1 to 86400 seconds",
            ),
            (
                r#"{"suspended": true, "retry_after": 86401}"#,
                "restriction.retry_after must be 1 to 86400 seconds",
            ),
            (
                r#"{"suspended": true, "reason": ""}"#,
                "restriction.reason must be 1 to 200 characters, none a control character",
            ),
            (
                r#"{"suspended": true, "reason": "a\nb"}"#,
                "restriction.reason must be 1 to 200 characters, none a control character",
            ),
            (
                r#"{"suspended": true, "firmware": []}"#,
                "restriction.firmware must list 1 to 100 values (omit it to restrict every box)",
            ),
            (
                r#"{"suspended": true, "models": ["A", "A"]}"#,
                "restriction.models[1] \"A\" appears twice",
            ),
            (
                r#"{"suspended": true, "models": ["\u0007"]}"#,
                "restriction.models[0] must be 1 to 64 characters, none a control character",
            ),
        ] {
            let why = payload_error(&format!(
                r#"{{"version": 1, "tools": [], "restriction": {restriction}}}"#
            ));
            assert_eq!(why, expected, "{restriction}");
        }
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        let why = payload_error(&format!(
            r#"{{"version": 1, "tools": [], "restriction": {{"suspended": true, "reason": "{long}"}}}}"#
        ));
        assert!(why.starts_with("restriction.reason must be"), "{why}");
        // The default Retry-After is ctl suspend's.
        let d =
            parse_payload(br#"{"version": 1, "tools": [], "restriction": {"suspended": true}}"#)
                .unwrap();
        assert_eq!(d.restriction.unwrap().retry_after, 300);
    }

    /// The applied document's two copies: the newer good one counts, a damaged one is reported,
    /// and one that no longer verifies with the root key is damaged too.
    #[test]
    fn the_applied_document_is_kept_twice() {
        let dir = std::env::temp_dir().join(format!("boxapi-fleet-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = mint::generate(Alg::EdDsa, "root").unwrap();
        let doc = |v: u64| {
            let p =
                format!(r#"{{"version": {v}, "tools": [], "restriction": {{"suspended": true}}}}"#);
            sign(&root, p.as_bytes()).unwrap()
        };
        let (none, damage) = applied(&dir, &root.key);
        assert!(none.is_none() && damage.is_none());
        keep_applied(&dir, doc(3).as_bytes()).unwrap();
        let [file, prev] = applied_paths(&dir);
        std::fs::write(&file, doc(4)).unwrap();
        let (d, damage) = applied(&dir, &root.key);
        assert_eq!((d.unwrap().version(), damage), (4, None));
        std::fs::write(&file, "junk").unwrap();
        let (d, damage) = applied(&dir, &root.key);
        assert_eq!(d.unwrap().version(), 3);
        assert!(damage.unwrap().contains("signature"));
        // Another root key (rotated since): whole copies are not applied, and are not damage
        // (which would suspend the box until a document of the new key came).
        let other = mint::generate(Alg::EdDsa, "root").unwrap();
        std::fs::write(&file, doc(4)).unwrap();
        let (d, damage) = applied(&dir, &other.key);
        assert!(d.is_none() && damage.is_none(), "{damage:?}");
        // One that does not parse stays damaged (fail closed).
        std::fs::write(&file, "a.b.c").unwrap();
        let (d, damage) = applied(&dir, &other.key);
        assert!(d.is_none() && damage.is_some());
        std::fs::remove_file(&prev).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(applied(&dir, &root.key).0.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_restriction_limited_to_firmware_and_models() {
        let r = |firmware: Option<&[&str]>, models: Option<&[&str]>| Restriction {
            suspended: true,
            retry_after: 300,
            reason: None,
            firmware: firmware.map(|l| l.iter().map(|s| s.to_string()).collect()),
            models: models.map(|l| l.iter().map(|s| s.to_string()).collect()),
        };
        let every = r(None, None);
        assert!(every.suspends(None, None));
        assert!(every.suspends(Some("1.0"), Some("Box 8")));
        let fw = r(Some(&["1.2.3", "1.2.4"]), None);
        assert!(fw.suspends(Some("1.2.4"), Some("Box 8")));
        assert!(!fw.suspends(Some("1.2.5"), Some("Box 8")));
        // A box that cannot tell its firmware is restricted: fail closed.
        assert!(fw.suspends(None, Some("Box 8")));
        let both = r(Some(&["1.2.3"]), Some(&["Box 8"]));
        assert!(both.suspends(Some("1.2.3"), Some("Box 8")));
        assert!(!both.suspends(Some("1.2.3"), Some("Box 7")));
        assert!(!both.suspends(Some("1.2.2"), Some("Box 8")));
        let lifted = Restriction {
            suspended: false,
            ..every
        };
        assert!(!lifted.suspends(None, None));
        let doc = FleetDocument {
            registry: SignedRegistry {
                version: 2,
                tools: Vec::new(),
            },
            restriction: Some(both.clone()),
        };
        assert_eq!(
            doc.restriction_for(Some("1.2.3"), Some("Box 8")),
            Some(&both)
        );
        assert_eq!(doc.restriction_for(Some("1.2.3"), Some("Box 7")), None);
    }
}
