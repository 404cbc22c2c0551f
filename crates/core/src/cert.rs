//! Reading X.509 certificates: just what status and renewal need (the validity period).
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

/// The (notBefore, notAfter) of a DER certificate, as Unix seconds.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = der::read(der::SEQUENCE, cert)?;
    let (tbs, _) = der::read(der::SEQUENCE, cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der::read(0xa0, rest)?.1;
    }
    let (_, _, rest) = der::read_any(rest)?; // serial
    let (_, _, rest) = der::read_any(rest)?; // signature algorithm
    let (_, _, rest) = der::read_any(rest)?; // issuer
    let (validity, _) = der::read(der::SEQUENCE, rest)?;
    let (t1, nb, rest) = der::read_any(validity)?;
    let (t2, na, _) = der::read_any(rest)?;
    Some((parse_time(t1, nb)?, parse_time(t2, na)?))
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
