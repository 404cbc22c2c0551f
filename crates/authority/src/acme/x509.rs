//! CSR admission and chain checks (x509-parser, signatures through ring).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::{Error, Result};

/// Checks that `csr_der` is a well-signed PKCS#10 request for exactly `name` (the subject's CN,
/// if any, and every subjectAltName are `name`, which is asked for at least once) with an
/// ECDSA P-256 key. Returns the DER SubjectPublicKeyInfo. Nothing here touches the network.
pub fn check_csr(csr_der: &[u8], name: &str) -> Result<Vec<u8>> {
    let bad = |why: String| Error::CsrMalformed(why);
    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| bad(format!("not a DER PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the request".into()));
    }
    csr.verify_signature()
        .map_err(|e| bad(format!("bad self-signature: {e}")))?;
    let info = &csr.certification_request_info;
    let mut asked = Vec::new();
    for cn in info.subject.iter_common_name() {
        let cn = cn
            .as_str()
            .map_err(|_| bad("unreadable subject CN".into()))?;
        asked.push(cn.to_ascii_lowercase());
    }
    let sans = requested_names(&csr)?;
    let only_own = !(sans.is_empty() && asked.is_empty())
        && sans
            .iter()
            .chain(asked.iter())
            .all(|n| n.eq_ignore_ascii_case(name));
    asked.extend(sans.iter().map(|n| n.to_ascii_lowercase()));
    asked.dedup();
    if !only_own {
        return Err(Error::NameNotAllowed {
            asked,
            allowed: name.to_owned(),
        });
    }
    let alg = &info.subject_pki.algorithm;
    let curve_ok = alg
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .is_some_and(|oid| oid == OID_EC_P256);
    if alg.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || !curve_ok {
        return Err(bad("the key is not ECDSA P-256".into()));
    }
    Ok(info.subject_pki.raw.to_vec())
}

/// Every subjectAltName entry the request asks for: dNSNames as themselves (lower-cased), any
/// other kind (IP address, e-mail, URI…) in x509-parser's display, so that it never matches.
/// An extension that does not parse is refused: the CA might read names into it that we did not.
fn requested_names(csr: &X509CertificationRequest<'_>) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for gn in &san.general_names {
                    match gn {
                        GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                        other => names.push(format!("{other}")),
                    }
                }
            }
            ParsedExtension::ParseError { error } => {
                return Err(Error::CsrMalformed(format!(
                    "a requested extension does not parse: {error}"
                )))
            }
            _ => {}
        }
    }
    Ok(names)
}

/// Checks the CA's answer: PEM chain, leaf for exactly `name`, leaf key = CSR key,
/// currently valid, each certificate signed by the next one. Returns the leaf (DER).
pub(crate) fn check_chain(pem: &str, name: &str, csr_spki: &[u8]) -> Result<Vec<u8>> {
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Chain(format!("PEM: {e}")))?;
    if ders.is_empty() {
        return Err(Error::Chain("no certificate".into()));
    }
    let certs = ders
        .iter()
        .map(|d| X509Certificate::from_der(d.as_ref()).map(|(_, c)| c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Chain(format!("DER: {e}")))?;
    let leaf = &certs[0];
    if leaf.public_key().raw != csr_spki {
        return Err(Error::Chain("leaf key is not the CSR's key".into()));
    }
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| Error::Chain(format!("SAN: {e}")))?
        .ok_or_else(|| Error::Chain("leaf has no SAN".into()))?;
    let mut names = Vec::new();
    for gn in &san.value.general_names {
        match gn {
            GeneralName::DNSName(d) => names.push((*d).to_owned()),
            other => return Err(Error::Chain(format!("unexpected SAN entry {other}"))),
        }
    }
    if names.len() != 1 || !names[0].eq_ignore_ascii_case(name) {
        return Err(Error::Chain(format!(
            "leaf names {names:?}, expected [{name:?}]"
        )));
    }
    if !leaf.validity().is_valid() {
        return Err(Error::Chain("leaf not currently valid".into()));
    }
    for pair in certs.windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .map_err(|e| {
                Error::Chain(format!(
                    "{} not signed by {}: {e}",
                    pair[0].subject(),
                    pair[1].subject()
                ))
            })?;
    }
    Ok(ders[0].to_vec())
}

/// Checks that `crl` (DER) parses and is signed by one of `cas`: a CRL that matches no CA would
/// leave every device's status unknown, and so refuse them all. Returns why not.
pub fn check_crl(crl: &[u8], cas: &[CertificateDer<'_>]) -> Result<(), String> {
    let (_, crl) =
        CertificateRevocationList::from_der(crl).map_err(|e| format!("not a DER CRL: {e}"))?;
    let signed_by_one = cas.iter().any(|ca| {
        X509Certificate::from_der(ca.as_ref()).is_ok_and(|(_, ca)| {
            ca.subject() == crl.issuer() && crl.verify_signature(ca.public_key()).is_ok()
        })
    });
    if signed_by_one {
        Ok(())
    } else {
        Err(format!(
            "the CRL of {} is not signed by a certificate of enrolment.device_ca",
            crl.issuer()
        ))
    }
}
