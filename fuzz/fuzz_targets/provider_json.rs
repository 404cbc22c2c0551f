//! Provider output (partial cards): validation, merging and projection.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if boxapi::card::validate_layer(&v).is_empty() {
            let mut base = serde_json::json!({"access": {"technology": "ftth"}});
            boxapi::card::merge(&mut base, &v);
            let _ = boxapi::card::project(&base);
        }
    }
});
