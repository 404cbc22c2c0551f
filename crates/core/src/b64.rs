//! Base64 (RFC 4648): the URL-safe unpadded alphabet of JOSE, and the standard one for PEM.

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_with(alphabet: &[u8; 64], input: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Unpadded base64url, as in JWS compact serialisation and JWK members.
pub fn url_encode(input: &[u8]) -> String {
    encode_with(URL, input, false)
}

/// Padded standard base64, as in PEM bodies.
pub fn std_encode(input: &[u8]) -> String {
    encode_with(STD, input, true)
}

fn url_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    } as u32)
}

/// Decodes padded standard base64 (HTTP Basic credentials).
pub fn std_decode(input: &[u8]) -> Option<Vec<u8>> {
    let trimmed = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    if input.len() % 4 != 0 {
        return None;
    }
    let url: Vec<u8> = trimmed
        .iter()
        .map(|&c| match c {
            b'+' => Some(b'-'),
            b'/' => Some(b'_'),
            b'-' | b'_' | b'=' => None,
            c => Some(c),
        })
        .collect::<Option<_>>()?;
    url_decode(&url)
}

/// Decodes unpadded base64url, rejecting padding, other alphabets and non-canonical trailing bits.
pub fn url_decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= url_value(c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let len = chunk.len() - 1;
        // Bits below the last full byte must be zero, so each token has one encoding only.
        if len < 3 && n & ((1 << (8 * (3 - len))) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..len]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        for len in 0..40u8 {
            let data: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(250))
                .collect();
            let enc = url_encode(&data);
            assert!(!enc.contains('='));
            assert_eq!(url_decode(enc.as_bytes()).as_deref(), Some(&data[..]));
        }
    }

    #[test]
    fn known_vectors() {
        assert_eq!(std_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(std_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(std_encode(b"foob"), "Zm9vYg==");
        assert_eq!(url_encode(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn standard_alphabet_with_padding() {
        assert_eq!(std_decode(b"Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        assert_eq!(std_decode(b"Zm9vYmE=").as_deref(), Some(&b"fooba"[..]));
        assert_eq!(std_decode(b"+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(std_decode(b"Zm9vYg"), None);
        assert_eq!(std_decode(b"-_8="), None);
    }

    #[test]
    fn rejects_padding_other_alphabet_and_loose_bits() {
        assert_eq!(url_decode(b"Zm9vYg=="), None);
        assert_eq!(url_decode(b"+/8"), None);
        assert_eq!(url_decode(b"Zm9vYh"), None); // trailing bits set
        assert_eq!(url_decode(b"A"), None);
    }
}
