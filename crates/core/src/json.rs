//! JSON written on every request's path (the card's per-request members, the access-log line)
//! straight into a buffer: member names are literals, strings are escaped by serde_json.
//!
//! Why not `serde_json::to_writer` on a struct: in the box's size-tuned build (`opt-level = "z"`)
//! every member name went through serde_json's string escaper and a `Vec` write per fragment,
//! about 600 instructions a name and a third of a keep-alive request's own work
//! (docs/performance.md). Only strings that need an escape still go through serde_json, so its
//! escaping stays the only one.

/// Appends `s` as a JSON string. One that has nothing to escape (no control character, quote or
/// backslash, as nearly every method, path, name and time) is copied; any other is written by
/// serde_json.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail (no I/O, no map key).
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends `s` as a JSON string, or `null`.
pub fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `n`.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `n`, or `null`.
pub fn push_opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => push_u64(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends an array of strings.
pub fn push_str_array<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'a str>) {
    out.push(b'[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, s);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut samples: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        samples.extend(
            [
                "",
                "GET",
                "/v1/access",
                "é\u{2028}😀",
                "\u{7f}",
                "\"",
                "\\",
                "a\nb\tc\r\u{1}",
                "2026-12-04T14:29:32.123Z",
            ]
            .map(String::from),
        );
        for s in &samples {
            assert_eq!(
                written(|o| push_str(o, s)),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn numbers_options_and_arrays() {
        for n in [0, 1, 9, 10, 12345, u64::MAX] {
            assert_eq!(written(|o| push_u64(o, n)), n.to_string());
        }
        assert_eq!(written(|o| push_opt_u64(o, None)), "null");
        assert_eq!(written(|o| push_opt_u64(o, Some(7))), "7");
        assert_eq!(written(|o| push_opt_str(o, None)), "null");
        assert_eq!(written(|o| push_opt_str(o, Some("x\"y"))), r#""x\"y""#);
        assert_eq!(written(|o| push_str_array(o, [])), "[]");
        assert_eq!(
            written(|o| push_str_array(o, ["wifi", "a\\b"])),
            r#"["wifi","a\\b"]"#
        );
    }
}
