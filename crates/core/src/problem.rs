//! RFC 9457 problem details, as both daemons write them: `type`, `title`, `status`, `detail` and
//! the machine-readable `code` of the contract's error table (§6).
use serde_json::{json, Value};

/// The `application/problem+json` body of one refusal.
pub fn body(code: &str, title: &str, status: u16, detail: &str) -> Value {
    json!({
        "type": format!("urn:boxapi:problem:{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    })
}

pub const CONTENT_TYPE: &str = "application/problem+json";
