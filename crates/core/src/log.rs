//! One JSON object per line on stderr (journald, syslog and procd all take it): access log, errors, reloads.
use serde_json::{Map, Value};
use std::io::Write;
use std::time::SystemTime;

fn emit(mut obj: Map<String, Value>) {
    obj.insert(
        "time".into(),
        Value::String(crate::time::rfc3339_millis(SystemTime::now())),
    );
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    // A closed stderr must not take the daemon down.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// An event with string fields.
pub fn event(name: &str, fields: &[(&str, &str)]) {
    let mut obj = Map::new();
    obj.insert("event".into(), name.into());
    for (k, v) in fields {
        obj.insert((*k).into(), (*v).into());
    }
    emit(obj);
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One access-log line. No token, no key, no client address. Written directly (it is on every
/// request's path), in the same shape as [`event`] lines.
pub fn access(tool: Option<&str>, method: &str, path: &str, status: u16, duration_us: u64) {
    let mut line = String::with_capacity(160);
    line.push_str("{\"duration_us\":");
    line.push_str(&duration_us.to_string());
    line.push_str(",\"event\":\"access\",\"method\":");
    push_json_str(&mut line, method);
    line.push_str(",\"path\":");
    push_json_str(&mut line, path);
    line.push_str(",\"status\":");
    line.push_str(&status.to_string());
    line.push_str(",\"time\":\"");
    line.push_str(&crate::time::rfc3339_millis(SystemTime::now()));
    line.push_str("\",\"tool\":");
    match tool {
        Some(t) => push_json_str(&mut line, t),
        None => line.push_str("null"),
    }
    line.push_str("}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\n\u{1}é");
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\n\u{1}é");
    }
}
