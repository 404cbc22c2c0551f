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

/// One access-log line. No token, no key, no client address.
pub fn access(tool: Option<&str>, method: &str, path: &str, status: u16, duration_us: u64) {
    let mut obj = Map::new();
    obj.insert("event".into(), "access".into());
    obj.insert("tool".into(), tool.map_or(Value::Null, Value::from));
    obj.insert("method".into(), method.into());
    obj.insert("path".into(), path.into());
    obj.insert("status".into(), status.into());
    obj.insert("duration_us".into(), duration_us.into());
    emit(obj);
}
