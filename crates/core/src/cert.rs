//! Reading X.509 certificates: just what status, enrolment and renewal need (validity period,
//! public key, DNS names), with no signature checking: callers check keys and names they expect.
use crate::der;

fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (der::UTC_TIME, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (der::GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<u32>().ok();
    let (mo, d, h, mi, s) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = crate::time::days_from_civil(year, mo, d);
    Some(days * 86_400 + i64::from(h * 3600 + mi * 60 + s))
}

/// The parts of a certificate's TBSCertificate that boxapi reads.
struct Tbs<'a> {
    validity: &'a [u8],
    /// SubjectPublicKeyInfo, whole (tag and length included).
    spki: &'a [u8],
    /// The content of the `[3]` extensions wrapper, if any.
    extensions: Option<&'a [u8]>,
}

fn tbs(cert: &[u8]) -> Option<Tbs<'_>> {
    let (cert, _) = der::read(der::SEQUENCE, cert)?;
    let (tbs, _) = der::read(der::SEQUENCE, cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der::read(0xa0, rest)?.1;
    }
    let (_, _, rest) = der::read_any(rest)?; // serial
    let (_, _, rest) = der::read_any(rest)?; // signature algorithm
    let (_, _, rest) = der::read_any(rest)?; // issuer
    let (validity, rest) = der::read(der::SEQUENCE, rest)?;
    let (_, _, rest) = der::read_any(rest)?; // subject
    let (_, after_spki) = der::read(der::SEQUENCE, rest)?;
    let spki = &rest[..rest.len() - after_spki.len()];
    let mut rest = after_spki;
    let mut extensions = None;
    while let Some((tag, content, next)) = der::read_any(rest) {
        if tag == 0xa3 {
            extensions = Some(content);
        }
        rest = next;
    }
    Some(Tbs {
        validity,
        spki,
        extensions,
    })
}

/// The (notBefore, notAfter) of a DER certificate, as Unix seconds.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let validity = tbs(cert)?.validity;
    let (t1, nb, rest) = der::read_any(validity)?;
    let (t2, na, _) = der::read_any(rest)?;
    Some((parse_time(t1, nb)?, parse_time(t2, na)?))
}

/// The certificate's SubjectPublicKeyInfo as DER (what a key is compared and named by).
pub fn spki(cert: &[u8]) -> Option<&[u8]> {
    Some(tbs(cert)?.spki)
}

const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// The dNSName entries of the subjectAltName extension (lower-cased); `None` when the
/// certificate cannot be read.
pub fn dns_names(cert: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let Some(exts) = tbs(cert)?.extensions else {
        return Some(names);
    };
    let (mut list, _) = der::read(der::SEQUENCE, exts)?;
    while !list.is_empty() {
        let (ext, next) = der::read(der::SEQUENCE, list)?;
        list = next;
        let (oid, mut rest) = der::read(der::OID, ext)?;
        if oid != OID_SAN {
            continue;
        }
        if rest.first() == Some(&der::BOOLEAN) {
            rest = der::read(der::BOOLEAN, rest)?.1;
        }
        let (value, _) = der::read(der::OCTET_STRING, rest)?;
        let (mut general, _) = der::read(der::SEQUENCE, value)?;
        while !general.is_empty() {
            let (tag, content, next) = der::read_any(general)?;
            general = next;
            // dNSName is [2] IMPLICIT IA5String.
            if tag == 0x82 {
                names.push(std::str::from_utf8(content).ok()?.to_ascii_lowercase());
            }
        }
    }
    Some(names)
}

/// PEM text of one DER object (`CERTIFICATE`, `PRIVATE KEY`).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = crate::b64::std_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Days before expiry from which status and the log warn.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

pub fn certificate_warning(not_after: Option<i64>) -> Option<String> {
    let na = not_after?;
    let left = na - crate::time::unix_now() as i64;
    if left <= 0 {
        Some(format!(
            "the server certificate EXPIRED at {}",
            crate::time::rfc3339(na)
        ))
    } else if left < EXPIRY_WARNING_DAYS * 86_400 {
        Some(format!(
            "the server certificate expires in {} days ({})",
            left / 86_400,
            crate::time::rfc3339(na)
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_has_no_validity() {
        assert_eq!(validity(b"not a certificate"), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0xa0]), None);
    }
}
