//! Configuration parsing and validation of arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut problems = Vec::new();
        let _ = boxapi_core::config::parse(text, std::path::Path::new("/fuzz/boxapi.toml"), &mut problems);
    }
});
