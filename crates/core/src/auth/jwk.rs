//! JSON Web Keys (RFC 7517/7518/8037): the ES256 (P-256) and EdDSA (Ed25519) keys tools and issuers sign with.
use crate::b64;
use serde_json::{json, Value};

/// The two signature algorithms boxapi accepts; nothing else can be expressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Es256,
    EdDsa,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JwkError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("neither a JWK nor a JWKS (an object with \"kty\" or with a \"keys\" array)")]
    NotAKey,
    #[error("the key set is empty")]
    Empty,
    #[error("key {kid:?}: {why}")]
    Key { kid: String, why: &'static str },
}

/// A public verification key ready for ring.
#[derive(Clone, Debug)]
pub struct PublicJwk {
    pub kid: String,
    pub alg: Alg,
    /// Uncompressed SEC1 point for P-256, 32 raw bytes for Ed25519.
    pub public: Vec<u8>,
}

/// A private signing key (operator tooling only; the daemon never loads one).
#[derive(Clone)]
pub struct PrivateJwk {
    pub key: PublicJwk,
    /// P-256 scalar or Ed25519 seed.
    pub secret: Vec<u8>,
}

fn member<'a>(obj: &'a Value, name: &str) -> Option<&'a str> {
    obj.get(name).and_then(Value::as_str)
}

fn bytes(obj: &Value, name: &str, len: usize, kid: &str) -> Result<Vec<u8>, JwkError> {
    let err = |why| JwkError::Key {
        kid: kid.to_owned(),
        why,
    };
    let text = member(obj, name).ok_or_else(|| err("a coordinate or key member is missing"))?;
    let raw = b64::url_decode(text.as_bytes()).ok_or_else(|| err("a member is not base64url"))?;
    if raw.len() != len {
        return Err(err("a member has the wrong length for its curve"));
    }
    Ok(raw)
}

/// Parses one JWK object; `private` says whether the secret member is expected.
fn parse_one(obj: &Value) -> Result<(PublicJwk, Option<Vec<u8>>), JwkError> {
    let kid = member(obj, "kid").unwrap_or("").to_owned();
    let err = |why| JwkError::Key {
        kid: kid.clone(),
        why,
    };
    if kid.is_empty() || kid.len() > 128 {
        return Err(err("every key needs a \"kid\" of 1 to 128 characters"));
    }
    if let Some(u) = member(obj, "use") {
        if u != "sig" {
            return Err(err("\"use\" must be \"sig\""));
        }
    }
    let alg = match (member(obj, "kty"), member(obj, "crv")) {
        (Some("EC"), Some("P-256")) => Alg::Es256,
        (Some("OKP"), Some("Ed25519")) => Alg::EdDsa,
        _ => {
            return Err(err(
                "only EC P-256 (ES256) and OKP Ed25519 (EdDSA) keys are accepted",
            ))
        }
    };
    if let Some(a) = obj.get("alg") {
        if a.as_str() != Some(alg.name()) {
            return Err(err(
                "\"alg\" does not match the key type (ES256 for P-256, EdDSA for Ed25519)",
            ));
        }
    }
    let public = match alg {
        Alg::Es256 => {
            let mut p = vec![4u8];
            p.extend(bytes(obj, "x", 32, &kid)?);
            p.extend(bytes(obj, "y", 32, &kid)?);
            p
        }
        Alg::EdDsa => bytes(obj, "x", 32, &kid)?,
    };
    let secret = match obj.get("d") {
        Some(_) => Some(bytes(obj, "d", 32, &kid)?),
        None => None,
    };
    Ok((PublicJwk { kid, alg, public }, secret))
}

fn parse_json(text: &str) -> Result<Value, JwkError> {
    serde_json::from_str(text).map_err(|e| JwkError::Json(e.to_string()))
}

/// Parses a public JWK or a JWKS. A private key is refused: verification keys must not carry secrets.
pub fn parse_public_set(text: &str) -> Result<Vec<PublicJwk>, JwkError> {
    let v = parse_json(text)?;
    let objs: Vec<&Value> = if let Some(keys) = v.get("keys") {
        keys.as_array().ok_or(JwkError::NotAKey)?.iter().collect()
    } else if v.get("kty").is_some() {
        vec![&v]
    } else {
        return Err(JwkError::NotAKey);
    };
    if objs.is_empty() {
        return Err(JwkError::Empty);
    }
    objs.into_iter()
        .map(|o| match parse_one(o)? {
            (k, None) => Ok(k),
            (k, Some(_)) => Err(JwkError::Key {
                kid: k.kid,
                why: "contains a private key (\"d\"); give the public key only",
            }),
        })
        .collect()
}

/// Parses a private JWK (as written by `boxapi keygen`).
pub fn parse_private(text: &str) -> Result<PrivateJwk, JwkError> {
    let v = parse_json(text)?;
    match parse_one(&v)? {
        (key, Some(secret)) => Ok(PrivateJwk { key, secret }),
        (key, None) => Err(JwkError::Key {
            kid: key.kid,
            why: "has no private member \"d\"",
        }),
    }
}

impl PublicJwk {
    pub fn to_json(&self) -> Value {
        match self.alg {
            Alg::Es256 => json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                "x": b64::url_encode(&self.public[1..33]),
                "y": b64::url_encode(&self.public[33..65]),
            }),
            Alg::EdDsa => json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
                "x": b64::url_encode(&self.public),
            }),
        }
    }
}

impl PrivateJwk {
    pub fn to_json(&self) -> Value {
        let mut v = self.key.to_json();
        v["d"] = Value::String(b64::url_encode(&self.secret));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC: &str = r#"{"kty":"EC","crv":"P-256","kid":"k1",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn parses_jwk_and_jwks() {
        let one = parse_public_set(EC).unwrap();
        assert_eq!(one[0].alg, Alg::Es256);
        assert_eq!(one[0].public.len(), 65);
        let set = parse_public_set(&format!("{{\"keys\":[{EC}]}}")).unwrap();
        assert_eq!(set[0].kid, "k1");
        let back = parse_public_set(&one[0].to_json().to_string()).unwrap();
        assert_eq!(back[0].public, one[0].public);
    }

    #[test]
    fn refuses_bad_keys() {
        assert!(matches!(parse_public_set("{"), Err(JwkError::Json(_))));
        assert_eq!(
            parse_public_set("{\"keys\":[]}").unwrap_err(),
            JwkError::Empty
        );
        assert_eq!(parse_public_set("[1]").unwrap_err(), JwkError::NotAKey);
        let no_kid = EC.replace("\"kid\":\"k1\",", "");
        assert!(parse_public_set(&no_kid).is_err());
        let rsa = r#"{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}"#;
        assert!(parse_public_set(rsa).is_err());
        let wrong_alg = EC.replace("\"kid\"", "\"alg\":\"HS256\",\"kid\"");
        assert!(parse_public_set(&wrong_alg).is_err());
        let private = EC.replace(
            "\"kid\"",
            "\"d\":\"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI\",\"kid\"",
        );
        assert!(parse_public_set(&private).is_err());
        assert!(parse_private(&private).is_ok());
        let short = EC.replace("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "f83O");
        assert!(parse_public_set(&short).is_err());
    }
}
