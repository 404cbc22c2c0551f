//! Token parsing and validation: arbitrary bytes as a bearer token, and tokens signed with a real
//! key whose header and claims are arbitrary JSON (so the claim checks are reached).
#![no_main]
use boxapi_core::auth::jwk::{Alg, PrivateJwk};
use boxapi_core::auth::{mint, Registry, Rules, Scopes, Tool, Verifier};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Setup {
    verifier: Verifier,
    registry: Registry,
    key: PrivateJwk,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let key = mint::generate(Alg::EdDsa, "k").unwrap();
        let registry = Registry::new(vec![Tool {
            id: "t".into(),
            name: "t".into(),
            origins: vec![],
            scopes: Scopes::ACCESS,
            ..Tool::default()
        }]);
        let rules = Rules { audience: "a".into(), issuers: vec!["i".into()], max_lifetime: 900, leeway: 30 };
        Setup { verifier: Verifier::new(rules, vec![(key.key.clone(), 0)], vec![]), registry, key }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let never = |_: &str| false;
    let _ = s.verifier.verify(data, 1_800_000_000, &s.registry, &never);
    // Split the input into a header and a payload, sign them, and verify.
    if let Some(cut) = data.iter().position(|&b| b == 0) {
        let (h, p) = (&data[..cut], &data[cut + 1..]);
        let input = format!("{}.{}", boxapi_core::b64::url_encode(h), boxapi_core::b64::url_encode(p));
        if let Ok(sig) = mint::sign(&s.key, input.as_bytes()) {
            let token = format!("{input}.{}", boxapi_core::b64::url_encode(&sig));
            let _ = s.verifier.verify_cached(token.as_bytes(), 1_800_000_000, &s.registry, &never);
        }
    }
});
