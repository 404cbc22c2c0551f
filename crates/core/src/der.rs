//! Minimal DER reading: enough for a key's scalar or a certificate's validity and names (the
//! box's writers, for its CSR and the demo's certificates, are in its own `der` module).

pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0c;
pub const UTC_TIME: u8 = 0x17;
pub const GENERALIZED_TIME: u8 = 0x18;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const BOOLEAN: u8 = 0x01;

/// Reads one element with the expected tag; returns (content, rest).
pub fn read(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// Reads any one element; returns (tag, content, rest).
pub fn read_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let (content, rest) = read(tag, input)?;
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_input_is_refused() {
        assert_eq!(read(SEQUENCE, &[0x30, 0x05, 1, 2]), None);
        assert_eq!(read(SEQUENCE, &[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(read(SEQUENCE, &[]), None);
    }
}
