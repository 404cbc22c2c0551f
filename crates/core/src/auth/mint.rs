//! Operator tooling: key generation and token signing (`boxapi keygen`, `boxapi token`, the demo).
use super::jwk::{Alg, PrivateJwk, PublicJwk};
use crate::{b64, der};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the system random generator failed")]
    Random,
    #[error("the private key is not a valid {0} key")]
    BadKey(&'static str),
    #[error("--ttl must be between 1 and 900 seconds")]
    Ttl,
}

/// A key id that `boxapi keygen` may turn into file names (`KID.jwk`): the tool-id characters
/// (`registry::is_id_char`), 1-128 of them, and no leading `.` (no hidden or `..` names).
pub fn valid_file_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid.bytes().all(super::registry::is_id_char)
        && !kid.starts_with('.')
}

/// Generates a new signing key with the given key id.
pub fn generate(alg: Alg, kid: &str) -> Result<PrivateJwk, MintError> {
    let rng = SystemRandom::new();
    let (secret, public) = match alg {
        Alg::Es256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| MintError::Random)?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                    .map_err(|_| MintError::BadKey("ES256"))?;
            let secret = ec_scalar(doc.as_ref()).ok_or(MintError::BadKey("ES256"))?;
            (secret, pair.public_key().as_ref().to_vec())
        }
        Alg::EdDsa => {
            let mut seed = [0u8; 32];
            rng.fill(&mut seed).map_err(|_| MintError::Random)?;
            let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|_| MintError::BadKey("EdDSA"))?;
            (seed.to_vec(), pair.public_key().as_ref().to_vec())
        }
    };
    Ok(PrivateJwk {
        key: PublicJwk {
            kid: kid.to_owned(),
            alg,
            public,
        },
        secret,
    })
}

/// The private scalar inside ring's PKCS#8 (RFC 5208 wrapping an RFC 5915 ECPrivateKey).
fn ec_scalar(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let (body, _) = der::read(der::SEQUENCE, pkcs8)?;
    let (_, rest) = der::read(der::INTEGER, body)?;
    let (_, rest) = der::read(der::SEQUENCE, rest)?;
    let (inner, _) = der::read(der::OCTET_STRING, rest)?;
    let (ec, _) = der::read(der::SEQUENCE, inner)?;
    let (_, rest) = der::read(der::INTEGER, ec)?;
    let (d, _) = der::read(der::OCTET_STRING, rest)?;
    (d.len() == 32).then(|| d.to_vec())
}

/// Signs `message` as a JWS signature (raw r||s for ES256).
pub fn sign(key: &PrivateJwk, message: &[u8]) -> Result<Vec<u8>, MintError> {
    let rng = SystemRandom::new();
    match key.key.alg {
        Alg::Es256 => {
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.secret,
                &key.key.public,
                &rng,
            )
            .map_err(|_| MintError::BadKey("ES256"))?;
            Ok(pair
                .sign(&rng, message)
                .map_err(|_| MintError::Random)?
                .as_ref()
                .to_vec())
        }
        Alg::EdDsa => {
            let pair = Ed25519KeyPair::from_seed_and_public_key(&key.secret, &key.key.public)
                .map_err(|_| MintError::BadKey("EdDSA"))?;
            Ok(pair.sign(message).as_ref().to_vec())
        }
    }
}

/// The claims of an access token to mint.
pub struct TokenSpec<'a> {
    pub tool: &'a str,
    pub scope: &'a str,
    pub audience: &'a str,
    pub issuer: &'a str,
    pub ttl: u64,
    pub now: u64,
}

/// Mints a signed access token (typ at+jwt) valid for `ttl` seconds from `now`.
pub fn token(key: &PrivateJwk, spec: &TokenSpec<'_>) -> Result<String, MintError> {
    if !(1..=900).contains(&spec.ttl) {
        return Err(MintError::Ttl);
    }
    let mut jti = [0u8; 16];
    SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| MintError::Random)?;
    let header = json!({ "alg": key.key.alg.name(), "typ": "at+jwt", "kid": key.key.kid });
    let claims = json!({
        "iss": spec.issuer, "aud": spec.audience, "sub": spec.tool, "client_id": spec.tool,
        "scope": spec.scope, "iat": spec.now, "exp": spec.now + spec.ttl, "jti": b64::url_encode(&jti),
    });
    let signing_input = format!(
        "{}.{}",
        b64::url_encode(header.to_string().as_bytes()),
        b64::url_encode(claims.to_string().as_bytes())
    );
    let sig = sign(key, signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64::url_encode(&sig)))
}
