//! Origin and Host handling: origin syntax checks, origin classification, Host name extraction.
#![no_main]
use boxapi_core::auth::{Registry, Scopes, Tool};
use http::header::{HeaderMap, HeaderValue, ORIGIN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = boxapi_core::auth::registry::check_origin_syntax(s);
        let _ = boxapi::http::host_name(s);
    }
    let registry = Registry::new(vec![Tool {
        id: "t".into(),
        name: "t".into(),
        origins: vec!["https://a.example".into()],
        scopes: Scopes::ACCESS,
        ..Tool::default()
    }]);
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, v);
        let _ = boxapi_core::cors::classify(&h, &registry, &|_| false);
        let _ = boxapi_core::cors::preflight_method_ok(&h, false);
        let _ = boxapi_core::cors::preflight_method_ok(&h, true);
    }
});
