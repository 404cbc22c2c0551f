//! DER: a certificate's validity, as read for status and expiry warnings.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = boxapi::x509::validity(data);
    let _ = boxapi::der::read_any(data);
});
