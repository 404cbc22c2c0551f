//! JWK and JWKS files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = boxapi_core::auth::jwk::parse_public_set(text);
        let _ = boxapi_core::auth::jwk::parse_private(text);
    }
});
