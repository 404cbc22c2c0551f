//! DER: a certificate's validity, as read for status and expiry warnings.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = boxapi_core::cert::validity(data);
    let _ = boxapi_core::der::read_any(data);
});
