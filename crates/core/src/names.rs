//! Each box's own DNS name, `<label>.<zone>`: the label is derived from the public key of the
//! box's device certificate, so it is stable, unique per box, and says nothing about the
//! subscriber (names are public in certificate-transparency logs). The box and the authority
//! derive it the same way, so the authority can check that a CSR asks for the caller's name only.

/// Characters of the label: 16 base32 characters carry 80 bits of the key's SHA-256, which
/// leaves collisions out of reach for any fleet (a birthday bound of about 10^12 boxes).
pub const LABEL_LEN: usize = 16;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The label of a device whose certificate carries this SubjectPublicKeyInfo (DER).
pub fn label(device_spki: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, device_spki);
    let mut out = String::with_capacity(LABEL_LEN);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in digest.as_ref() {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < LABEL_LEN {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

/// `<label>.<zone>` for a device certificate (DER); `None` when it cannot be read.
pub fn box_name(device_cert: &[u8], zone: &str) -> Option<String> {
    Some(format!("{}.{zone}", label(crate::cert::spki(device_cert)?)))
}

/// Addresses one box name may carry (the authority refuses more).
pub const MAX_ADDRESSES: usize = 8;

/// Whether a box's name may resolve to `ip`: private IPv4 (RFC 1918), IPv6 ULA (fc00::/7) or
/// global unicast (2000::/3). One rule for both sides: the box publishes only such addresses
/// and the authority accepts only them.
pub fn publishable(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_private(),
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            first & 0xfe00 == 0xfc00 || first & 0xe000 == 0x2000
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_lowercase_and_distinct() {
        let a = label(b"key a");
        assert_eq!(a, label(b"key a"));
        assert_eq!(a.len(), LABEL_LEN);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(a, label(b"key b"));
        // A DNS label may not start with a digit in some old resolvers' eyes; ours may, which
        // RFC 1123 allows. It never has a hyphen or an upper-case letter.
        assert!(!a.contains('-'));
    }
}
