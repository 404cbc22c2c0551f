//! CORS (annex 2 §2): echo exactly one allow-listed origin, never `*`, never a list; refuse everything else.
use crate::auth::Registry;
use http::header::{self, HeaderMap, HeaderValue};

/// How long a browser may cache a successful preflight.
const MAX_AGE_SECS: &str = "600";

/// Checks that a configured origin is a serialised origin exactly as browsers send it.
pub fn check_origin_syntax(origin: &str) -> Result<(), &'static str> {
    let (rest, https) = if let Some(r) = origin.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = origin.strip_prefix("http://") {
        (r, false)
    } else {
        return Err("an origin starts with https:// (or http:// for a loopback host)");
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let end = v6.find(']').ok_or("unterminated IPv6 literal")?;
        if v6[..end].parse::<std::net::Ipv6Addr>().is_err() {
            return Err("invalid IPv6 literal");
        }
        (&rest[..end + 2], &v6[end + 1..])
    } else {
        match rest.find(':') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        }
    };
    if host.is_empty()
        || !host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("the host must be lower-case letters, digits, '-' and '.', with no path or trailing '/'");
    }
    if let Some(p) = port.strip_prefix(':') {
        let n: u16 = p
            .parse()
            .map_err(|_| "the port must be a number from 1 to 65535")?;
        if n == 0 || p.starts_with('0') {
            return Err("the port must be a number from 1 to 65535, without leading zeros");
        }
        if (https && n == 443) || (!https && n == 80) {
            return Err("browsers omit the default port; write the origin without it");
        }
    } else if !port.is_empty() {
        return Err("nothing may follow the host but :port");
    }
    if !https && !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return Err("http:// origins are allowed for loopback hosts only; a tool's page must be served over https");
    }
    Ok(())
}

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
    fn origin_syntax() {
        for ok in [
            "https://www.nperf.com",
            "https://a.example:8443",
            "http://localhost:8080",
            "https://[::1]:4443",
        ] {
            assert_eq!(check_origin_syntax(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://www.nperf.com/",
            "https://WWW.nperf.com",
            "https://a.example:443",
            "http://a.example",
            "null",
            "https://a.example:0",
            "https://a.example:08443",
            "https://a.example/path",
            "*",
            "https://",
        ] {
            assert!(check_origin_syntax(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classify_exact_only() {
        let tool = |id: &str, o: &str, revoked| Tool {
            id: id.into(),
            name: id.into(),
            origins: vec![o.into()],
            scopes: Scopes::ACCESS,
            revoked,
            tokens_per_hour: None,
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
