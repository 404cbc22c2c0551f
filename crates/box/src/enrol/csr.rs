//! The box's own key and its certificate signing request (PKCS#10, RFC 2986): an ECDSA P-256 key
//! made on the box, never sent anywhere, and a CSR naming exactly the box's DNS name.
use crate::der::{self, seq, tlv};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
/// PKCS#9 extensionRequest.
const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    KeyGen,
    #[error("signing failed")]
    Sign,
}

/// A generated ECDSA P-256 key with its PKCS#8 encoding.
pub struct EcKey {
    pub pkcs8: Vec<u8>,
    pub(crate) pair: EcdsaKeyPair,
}

impl EcKey {
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| KeyError::KeyGen)?;
        Self::from_pkcs8(doc.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
            .map_err(|_| KeyError::KeyGen)?;
        Ok(Self {
            pkcs8: pkcs8.to_vec(),
            pair,
        })
    }

    /// The SubjectPublicKeyInfo (DER), as a certificate for this key carries it.
    pub fn spki(&self) -> Vec<u8> {
        let mut bits = vec![0u8];
        bits.extend_from_slice(self.pair.public_key().as_ref());
        seq(&[
            &seq(&[&tlv(der::OID, OID_EC_PUBLIC_KEY), &tlv(der::OID, OID_P256)]),
            &tlv(der::BIT_STRING, &bits),
        ])
    }

    /// RFC 5280 method 1 key identifier: SHA-1 of the public key bits (an identifier, not a security use).
    pub fn key_id(&self) -> Vec<u8> {
        ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            self.pair.public_key().as_ref(),
        )
        .as_ref()
        .to_vec()
    }

    /// An ECDSA-SHA256 signature (ASN.1 DER) of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| KeyError::Sign)?;
        Ok(sig.as_ref().to_vec())
    }
}

/// A Name with one common name.
pub fn name(cn: &str) -> Vec<u8> {
    let atv = seq(&[
        &tlv(der::OID, OID_CN),
        &tlv(der::UTF8_STRING, cn.as_bytes()),
    ]);
    seq(&[&tlv(der::SET, &atv)])
}

/// A CSR (DER) for exactly `dns_name`: subject CN and one subjectAltName dNSName.
pub fn csr(key: &EcKey, dns_name: &str) -> Result<Vec<u8>, KeyError> {
    // [2] IMPLICIT IA5String dNSName inside GeneralNames.
    let san = seq(&[&tlv(0x82, dns_name.as_bytes())]);
    let extension = seq(&[&tlv(der::OID, OID_SAN), &tlv(der::OCTET_STRING, &san)]);
    let attribute = seq(&[
        &tlv(der::OID, OID_EXTENSION_REQUEST),
        &tlv(der::SET, &seq(&[&extension])),
    ]);
    let info = seq(&[
        &tlv(der::INTEGER, &[0]),
        &name(dns_name),
        &key.spki(),
        // attributes [0] IMPLICIT SET OF Attribute
        &tlv(0xa0, &attribute),
    ]);
    let sig = key.sign(&info)?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&sig);
    Ok(seq(&[
        &info,
        &seq(&[&tlv(der::OID, OID_ECDSA_SHA256)]),
        &tlv(der::BIT_STRING, &bits),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSR is checked by an independent implementation: openssl parses it and verifies its
    /// self-signature, and reads back the name.
    #[test]
    fn openssl_verifies_the_csr() {
        let key = EcKey::generate().unwrap();
        let der = csr(&key, "abcdefghijklmnop.box.test").unwrap();
        let dir = std::env::temp_dir().join(format!("boxapi-csr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("req.der");
        std::fs::write(&path, &der).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["req", "-inform", "DER", "-verify", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("verify OK"), "{text}");
        assert!(text.contains("DNS:abcdefghijklmnop.box.test"), "{text}");
        assert!(text.contains("CN = abcdefghijklmnop.box.test"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
