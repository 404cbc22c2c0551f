//! Writing the demo's certificates: its local CA and the server certificate it signs.
use crate::der::{self, seq, tlv, uint};
use crate::enrol::csr::{name, OID_ECDSA_SHA256};
pub use crate::enrol::csr::{EcKey, KeyError as X509Error};
use ring::rand::{SecureRandom, SystemRandom};
use std::net::IpAddr;

const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
const OID_SKI: &[u8] = &[0x55, 0x1d, 0x0e];
const OID_AKI: &[u8] = &[0x55, 0x1d, 0x23];

/// What to put in a certificate.
pub struct CertSpec<'a> {
    pub common_name: &'a str,
    pub is_ca: bool,
    pub dns_names: &'a [&'a str],
    pub ips: &'a [IpAddr],
    pub not_before: i64,
    pub not_after: i64,
}

fn time(secs: i64) -> Vec<u8> {
    let (y, mo, d, h, mi, s) = boxapi_core::time::utc_parts(secs);
    if (1950..2050).contains(&y) {
        let text = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
        tlv(der::UTC_TIME, text.as_bytes())
    } else {
        let text = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
        tlv(der::GENERALIZED_TIME, text.as_bytes())
    }
}

fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let crit = tlv(der::BOOLEAN, &[0xff]);
    let oid = tlv(der::OID, oid);
    let value = tlv(der::OCTET_STRING, value);
    if critical {
        seq(&[&oid, &crit, &value])
    } else {
        seq(&[&oid, &value])
    }
}

/// Issues a certificate for `subject`, signed by `issuer` (itself for a root), as DER.
pub fn issue(
    spec: &CertSpec<'_>,
    subject: &EcKey,
    issuer: &EcKey,
    issuer_cn: &str,
) -> Result<Vec<u8>, X509Error> {
    let rng = SystemRandom::new();
    let mut serial = [0u8; 16];
    rng.fill(&mut serial).map_err(|_| X509Error::KeyGen)?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let alg = seq(&[&tlv(der::OID, OID_ECDSA_SHA256)]);

    let mut exts = Vec::new();
    let basic = if spec.is_ca {
        seq(&[&tlv(der::BOOLEAN, &[0xff])])
    } else {
        seq(&[])
    };
    exts.push(extension(OID_BASIC_CONSTRAINTS, true, &basic));
    // keyCertSign + cRLSign for a CA, digitalSignature for a server.
    let usage: &[u8] = if spec.is_ca {
        &[0x01, 0x06]
    } else {
        &[0x07, 0x80]
    };
    exts.push(extension(OID_KEY_USAGE, true, &tlv(der::BIT_STRING, usage)));
    exts.push(extension(
        OID_SKI,
        false,
        &tlv(der::OCTET_STRING, &subject.key_id()),
    ));
    if !spec.is_ca {
        exts.push(extension(
            OID_EXT_KEY_USAGE,
            false,
            &seq(&[&tlv(der::OID, OID_SERVER_AUTH)]),
        ));
        let mut names = Vec::new();
        for dns in spec.dns_names {
            names.extend(tlv(0x82, dns.as_bytes()));
        }
        for ip in spec.ips {
            match ip {
                IpAddr::V4(v4) => names.extend(tlv(0x87, &v4.octets())),
                IpAddr::V6(v6) => names.extend(tlv(0x87, &v6.octets())),
            }
        }
        exts.push(extension(OID_SAN, false, &tlv(der::SEQUENCE, &names)));
        exts.push(extension(
            OID_AKI,
            false,
            &seq(&[&tlv(0x80, &issuer.key_id())]),
        ));
    }
    let tbs = seq(&[
        &tlv(0xa0, &uint(&[2])),
        &uint(&serial),
        &alg,
        &name(issuer_cn),
        &seq(&[&time(spec.not_before), &time(spec.not_after)]),
        &name(spec.common_name),
        &subject.spki(),
        &tlv(0xa3, &tlv(der::SEQUENCE, &exts.concat())),
    ]);
    let sig = issuer.sign(&tbs)?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(sig.as_ref());
    Ok(seq(&[&tbs, &alg, &tlv(der::BIT_STRING, &bits)]))
}

/// PEM armour with 64-column lines.
pub use boxapi_core::cert::pem;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_has_the_requested_validity() {
        let ca = EcKey::generate().unwrap();
        let leaf = EcKey::generate().unwrap();
        let spec = CertSpec {
            common_name: "localhost",
            is_ca: false,
            dns_names: &["localhost"],
            ips: &["127.0.0.1".parse().unwrap()],
            not_before: 1_700_000_000,
            not_after: 2_600_000_000, // after 2050: GeneralizedTime
        };
        let der = issue(&spec, &leaf, &ca, "ca").unwrap();
        assert_eq!(
            boxapi_core::cert::validity(&der),
            Some((1_700_000_000, 2_600_000_000))
        );
        assert!(pem("CERTIFICATE", &der).starts_with("-----BEGIN CERTIFICATE-----\n"));
    }
}
