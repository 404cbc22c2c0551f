//! Operator-signed registry payloads (after signature verification, but validated as untrusted).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = boxapi_core::auth::signed::parse_payload(data);
});
