//! Who may call the API: the tool registry, verification keys, and JWT access-token checks.
pub mod cache;
pub mod fleet;
pub mod jwk;
pub mod mint;
pub mod registry;
pub mod signed;
pub mod token;

pub use registry::{Registry, Scopes, Tool};
pub use token::{Assertion, Grant, Remembered, Rules, TokenError, Verifier, Window};

#[cfg(test)]
mod tests {
    use super::jwk::{parse_private, parse_public_set, Alg};
    use super::mint::{self, TokenSpec};
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn setup() -> (
        Verifier,
        Registry,
        jwk::PrivateJwk,
        jwk::PrivateJwk,
        jwk::PrivateJwk,
    ) {
        let a = mint::generate(Alg::Es256, "a-key").unwrap();
        let b = mint::generate(Alg::EdDsa, "b-key").unwrap();
        let issuer = mint::generate(Alg::Es256, "issuer-key").unwrap();
        let tool = |id: &str| Tool {
            id: id.into(),
            name: id.into(),
            origins: vec![],
            scopes: Scopes::ACCESS.union(Scopes::COUNTERS),
            ..Tool::default()
        };
        let mut c = tool("c");
        c.scopes = Scopes::COUNTERS;
        let registry = Registry::new(vec![tool("a"), tool("b"), c]);
        let rules = Rules {
            audience: "https://box".into(),
            issuers: vec!["https://iss".into()],
            max_lifetime: 900,
            leeway: 30,
        };
        let v = Verifier::new(
            rules,
            vec![(a.key.clone(), 0), (b.key.clone(), 1)],
            vec![issuer.key.clone()],
        );
        (v, registry, a, b, issuer)
    }

    fn spec(tool: &str) -> TokenSpec<'_> {
        TokenSpec {
            tool,
            scope: "access counters",
            audience: "https://box",
            issuer: "https://iss",
            ttl: 900,
            now: NOW,
        }
    }

    #[test]
    fn accepts_own_key_and_issuer_key() {
        let (v, r, a, b, issuer) = setup();
        let never = |_: &str| false;
        let g = v
            .verify(
                mint::token(&a, &spec("a")).unwrap().as_bytes(),
                NOW,
                &r,
                &never,
            )
            .unwrap();
        assert_eq!(g.tool, 0);
        assert_eq!(g.exp, NOW + 900);
        let g = v
            .verify(
                mint::token(&b, &spec("b")).unwrap().as_bytes(),
                NOW,
                &r,
                &never,
            )
            .unwrap();
        assert_eq!(g.tool, 1);
        let g = v
            .verify(
                mint::token(&issuer, &spec("c")).unwrap().as_bytes(),
                NOW,
                &r,
                &never,
            )
            .unwrap();
        assert_eq!(
            (g.tool, g.scopes),
            (2, Scopes::COUNTERS),
            "a token cannot exceed the registration"
        );
    }

    #[test]
    fn refuses_each_broken_rule() {
        let (v, r, a, _b, _) = setup();
        let never = |_: &str| false;
        let check = |t: &str, now: u64, want: TokenError| {
            assert_eq!(v.verify(t.as_bytes(), now, &r, &never), Err(want));
        };
        check(
            &mint::token(&a, &spec("b")).unwrap(),
            NOW,
            TokenError::KeyNotForTool,
        );
        check(
            &mint::token(&a, &spec("zz")).unwrap(),
            NOW,
            TokenError::UnknownTool,
        );
        check(
            &mint::token(&a, &spec("a")).unwrap(),
            NOW + 930,
            TokenError::Expired,
        );
        check(
            &mint::token(&a, &spec("a")).unwrap(),
            NOW - 31,
            TokenError::NotYetValid,
        );
        let mut s = spec("a");
        s.audience = "https://other";
        check(&mint::token(&a, &s).unwrap(), NOW, TokenError::Audience);
        let mut s = spec("a");
        s.issuer = "https://evil";
        check(&mint::token(&a, &s).unwrap(), NOW, TokenError::Issuer);
        let good = mint::token(&a, &spec("a")).unwrap();
        let mut tampered = good.clone().into_bytes();
        let n = tampered.len() - 5;
        tampered[n] = if tampered[n] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            v.verify(&tampered, NOW, &r, &never),
            Err(TokenError::BadSignature)
        );
        check(&"a".repeat(4097), NOW, TokenError::Oversized);
        check(
            "a.b",
            NOW,
            TokenError::Malformed("expected three dot-separated parts"),
        );
        assert_eq!(
            v.verify(good.as_bytes(), NOW, &r, &|id| id == "a"),
            Err(TokenError::Revoked)
        );
    }

    #[test]
    fn a_lapsed_habilitation_refuses_good_tokens_even_cached() {
        let (v, mut r, a, _, _) = setup();
        let never = |_: &str| false;
        let t = mint::token(&a, &spec("a")).unwrap();
        assert!(v.verify_cached(t.as_bytes(), NOW, &r, &never).is_ok());
        let mut tools = r.tools().to_vec();
        tools[0].expires = Some(NOW as i64 + 10);
        r = Registry::new(tools.clone());
        assert!(v.verify_cached(t.as_bytes(), NOW + 9, &r, &never).is_ok());
        let e = v.verify_cached(t.as_bytes(), NOW + 10, &r, &never);
        let window = |not_before, expires| Window {
            not_before,
            expires,
        };
        assert_eq!(
            e,
            Err(TokenError::ToolExpired(window(None, Some(NOW as i64 + 10))))
        );
        assert!(e.unwrap_err().to_string().contains("not valid now"));
        tools[0].expires = None;
        tools[0].not_before = Some(NOW as i64 + 100);
        r = Registry::new(tools);
        assert_eq!(
            v.verify(t.as_bytes(), NOW, &r, &never),
            Err(TokenError::ToolNotYetValid(window(
                Some(NOW as i64 + 100),
                None
            )))
        );
    }

    #[test]
    fn refuses_forged_headers() {
        let (v, r, a, _, _) = setup();
        let never = |_: &str| false;
        let good = mint::token(&a, &spec("a")).unwrap();
        let payload = good.split('.').nth(1).unwrap();
        let forge =
            |header: &str| format!("{}.{payload}.", crate::b64::url_encode(header.as_bytes()));
        let none = forge(r#"{"alg":"none","kid":"a-key"}"#);
        assert_eq!(
            v.verify(none.as_bytes(), NOW, &r, &never),
            Err(TokenError::Algorithm)
        );
        let hs = forge(r#"{"alg":"HS256","kid":"a-key"}"#);
        assert_eq!(
            v.verify(hs.as_bytes(), NOW, &r, &never),
            Err(TokenError::Algorithm)
        );
        let ed = forge(r#"{"alg":"EdDSA","kid":"a-key"}"#);
        assert_eq!(
            v.verify(ed.as_bytes(), NOW, &r, &never),
            Err(TokenError::AlgorithmMismatch)
        );
        let nokid = forge(r#"{"alg":"ES256"}"#);
        assert_eq!(
            v.verify(nokid.as_bytes(), NOW, &r, &never),
            Err(TokenError::MissingKid)
        );
        let typ = forge(r#"{"alg":"ES256","kid":"a-key","typ":"dpop+jwt"}"#);
        assert_eq!(
            v.verify(typ.as_bytes(), NOW, &r, &never),
            Err(TokenError::Type)
        );
    }

    #[test]
    fn cached_tokens_still_expire_and_honour_revocation() {
        let (v, r, a, _, _) = setup();
        let never = |_: &str| false;
        let t = mint::token(&a, &spec("a")).unwrap();
        assert!(v.verify_cached(t.as_bytes(), NOW, &r, &never).is_ok());
        assert!(
            v.verify_cached(t.as_bytes(), NOW + 1, &r, &never).is_ok(),
            "hit"
        );
        assert_eq!(
            v.verify_cached(t.as_bytes(), NOW + 1, &r, &|id| id == "a"),
            Err(TokenError::Revoked)
        );
        assert_eq!(
            v.verify_cached(t.as_bytes(), NOW + 930, &r, &never),
            Err(TokenError::Expired)
        );
        // A tampered token is a different key: verified in full, and refused.
        let bad = format!("{}x", &t[..t.len() - 1]);
        assert!(v.verify_cached(bad.as_bytes(), NOW, &r, &never).is_err());
    }

    #[test]
    fn a_connections_remembered_token_is_checked_like_a_cached_one() {
        let (v, mut r, a, _, _) = setup();
        let never = |_: &str| false;
        let mut memo = Remembered::default();
        let t = mint::token(&a, &spec("a")).unwrap();
        let first = v.verify_remembered(t.as_bytes(), NOW, &r, &never, &mut memo);
        assert!(first.is_ok());
        assert_eq!(
            v.verify_remembered(t.as_bytes(), NOW + 1, &r, &never, &mut memo),
            first
        );
        assert_eq!(
            v.verify_remembered(t.as_bytes(), NOW + 1, &r, &|id| id == "a", &mut memo),
            Err(TokenError::Revoked)
        );
        assert_eq!(
            v.verify_remembered(t.as_bytes(), NOW + 930, &r, &never, &mut memo),
            Err(TokenError::Expired)
        );
        let mut tools = r.tools().to_vec();
        tools[0].expires = Some(NOW as i64 + 10);
        r = Registry::new(tools);
        assert_eq!(
            v.verify_remembered(t.as_bytes(), NOW + 10, &r, &never, &mut memo),
            Err(TokenError::ToolExpired(Window {
                not_before: None,
                expires: Some(NOW as i64 + 10)
            }))
        );
        // Other bytes on the same connection are verified in full.
        let bad = format!("{}x", &t[..t.len() - 1]);
        assert!(v
            .verify_remembered(bad.as_bytes(), NOW, &r, &never, &mut memo)
            .is_err());
        // After a reload (another verifier; here its key "a-key" is another key) the token is
        // checked again.
        assert!(v
            .verify_remembered(t.as_bytes(), NOW, &r, &never, &mut memo)
            .is_ok());
        let (reloaded, r2, _, _, _) = setup();
        assert_eq!(
            reloaded.verify_remembered(t.as_bytes(), NOW, &r2, &never, &mut memo),
            Err(TokenError::BadSignature)
        );
    }

    /// A connection's remembered token answers what a fresh verification answers, whatever
    /// changed since it was remembered (time, revocation, the tool's validity window), and in
    /// particular says why when several things are wrong at once.
    #[test]
    fn a_remembered_token_answers_exactly_as_a_fresh_verification() {
        let (v, r, a, _, _) = setup();
        let t = mint::token(&a, &spec("a")).unwrap();
        let never = |_: &str| false;
        let revoked_a = |id: &str| id == "a";
        let mut windows = vec![Registry::new(r.tools().to_vec())];
        for (nb, ex) in [
            (None, Some(NOW as i64 + 10)),
            (Some(NOW as i64 + 2000), None),
        ] {
            let mut tools = r.tools().to_vec();
            tools[0].not_before = nb;
            tools[0].expires = ex;
            windows.push(Registry::new(tools));
        }
        let revocations: [&dyn Fn(&str) -> bool; 2] = [&never, &revoked_a];
        for reg in &windows {
            for revoked in revocations {
                for now in [NOW + 1, NOW + 10, NOW + 929, NOW + 930, NOW + 5000] {
                    let mut memo = Remembered::default();
                    v.verify_remembered(t.as_bytes(), NOW, &r, &never, &mut memo)
                        .unwrap();
                    let fresh = v.verify(t.as_bytes(), now, reg, revoked);
                    let remembered =
                        v.verify_remembered(t.as_bytes(), now, reg, revoked, &mut memo);
                    assert_eq!(remembered, fresh, "at NOW+{}", now - NOW);
                    assert_eq!(
                        v.verify_cached(t.as_bytes(), now, reg, revoked),
                        fresh,
                        "at NOW+{}",
                        now - NOW
                    );
                }
            }
        }
    }

    #[test]
    fn keys_round_trip_through_jwk_text() {
        for alg in [Alg::Es256, Alg::EdDsa] {
            let k = mint::generate(alg, "k").unwrap();
            let back = parse_private(&k.to_json().to_string()).unwrap();
            assert_eq!(back.key.public, k.key.public);
            assert_eq!(
                parse_public_set(&k.key.to_json().to_string()).unwrap()[0].public,
                k.key.public
            );
            assert!(mint::sign(&back, b"x").is_ok());
        }
    }
}
