//! CORS (annex 2 §2): echo exactly one allow-listed origin, never `*`, never a list; refuse everything else.
use crate::auth::Registry;
use http::header::{self, HeaderMap, HeaderValue};

/// How long a browser may cache a successful preflight.
const MAX_AGE_SECS: &str = "600";

/// The request's `Origin`, judged against the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// No `Origin` header: a native agent; the token alone decides.
    Absent,
    /// Exactly a registered, non-revoked tool's origin.
    Allowed { tool: usize },
    /// Anything else, including `null`, near misses and repeated headers.
    Refused,
}

pub fn classify(
    headers: &HeaderMap,
    registry: &Registry,
    revoked: &dyn Fn(&str) -> bool,
) -> Origin {
    let mut all = headers.get_all(header::ORIGIN).iter();
    let (Some(value), None) = (all.next(), all.next()) else {
        return if headers.contains_key(header::ORIGIN) {
            Origin::Refused
        } else {
            Origin::Absent
        };
    };
    let tool = value.to_str().ok().and_then(|o| registry.by_origin(o));
    match tool.and_then(|i| registry.get(i).map(|t| (i, t))) {
        Some((i, t)) if !t.revoked && !revoked(&t.id) => Origin::Allowed { tool: i },
        _ => Origin::Refused,
    }
}

/// Headers every response to an allowed origin carries, success or error.
pub fn add_response_headers(out: &mut HeaderMap, origin: &HeaderValue) {
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
    out.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate, Retry-After"),
    );
}

/// Whether a preflight from an allowed origin asks for something boxapi serves (GET or HEAD).
/// (`token_endpoint`: the preflight is for `POST /v1/token` instead.)
pub fn preflight_method_ok(req: &HeaderMap, token_endpoint: bool) -> bool {
    let method = req
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .map(HeaderValue::as_bytes);
    if token_endpoint {
        method == Some(b"POST")
    } else {
        matches!(method, Some(b"GET") | Some(b"HEAD"))
    }
}

/// Headers of a successful preflight answer (on top of [`add_response_headers`]).
pub fn add_preflight_headers(req: &HeaderMap, out: &mut HeaderMap, token_endpoint: bool) {
    let (methods, headers) = if token_endpoint {
        ("POST", "Authorization, Content-Type")
    } else {
        ("GET, HEAD", "Authorization")
    };
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(headers),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    let pna = req
        .get("access-control-request-private-network")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if pna {
        out.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Scopes, Tool};

    #[test]
    fn classify_exact_only() {
        let tool = |id: &str, o: &str, revoked| Tool {
            id: id.into(),
            name: id.into(),
            origins: vec![o.into()],
            scopes: Scopes::ACCESS,
            revoked,
            ..Tool::default()
        };
        let r = Registry::new(vec![
            tool("a", "https://a.example", false),
            tool("b", "https://b.example", true),
        ]);
        let h = |vals: &[&str]| {
            let mut m = HeaderMap::new();
            for v in vals {
                m.append(header::ORIGIN, HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let never = |_: &str| false;
        assert_eq!(classify(&h(&[]), &r, &never), Origin::Absent);
        assert_eq!(
            classify(&h(&["https://a.example"]), &r, &never),
            Origin::Allowed { tool: 0 }
        );
        assert_eq!(
            classify(&h(&["https://b.example"]), &r, &never),
            Origin::Refused,
            "revoked in config"
        );
        assert_eq!(
            classify(&h(&["https://a.example"]), &r, &|id| id == "a"),
            Origin::Refused
        );
        assert_eq!(
            classify(&h(&["https://a.example", "https://a.example"]), &r, &never),
            Origin::Refused
        );
        for near in [
            "https://a.example.evil",
            "https://evil-a.example",
            "null",
            "HTTPS://A.EXAMPLE",
        ] {
            assert_eq!(classify(&h(&[near]), &r, &never), Origin::Refused, "{near}");
        }
    }
}
