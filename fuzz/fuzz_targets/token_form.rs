//! Token-endpoint form bodies (application/x-www-form-urlencoded).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = boxapi_core::authz::parse_form(data);
});
