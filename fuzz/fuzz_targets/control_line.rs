//! Control-socket lines.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = boxapi_core::control::parse_command(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = boxapi_core::control::state::from_json(&v);
    }
});
