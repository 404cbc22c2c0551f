//! Operator-signed fleet document payloads (after signature verification, but validated as
//! untrusted: a box parses what the authority relays).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = boxapi_core::auth::fleet::parse_payload(data) {
        let _ = d.restriction_for(Some("1.2.3"), None);
    }
});
