//! The tool registry: which measurement tools exist, their browser origins, and the scopes they may use.
use std::collections::HashMap;

/// A set of API scopes as bits; scopes boxapi does not know are dropped when read from a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub const ACCESS: Scopes = Scopes(1);
    pub const COUNTERS: Scopes = Scopes(2);
    const ALL: [(&'static str, Scopes); 2] =
        [("access", Scopes::ACCESS), ("counters", Scopes::COUNTERS)];

    pub fn from_name(name: &str) -> Option<Scopes> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// Reads a space-separated `scope` claim, keeping only scopes boxapi knows.
    pub fn from_claim(claim: &str) -> Scopes {
        claim
            .split(' ')
            .filter_map(Scopes::from_name)
            .fold(Scopes::default(), |a, b| a.union(b))
    }

    pub fn union(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    pub fn intersect(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    pub fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn names(self) -> Vec<&'static str> {
        Self::ALL
            .iter()
            .filter(|(_, s)| self.contains(*s))
            .map(|(n, _)| *n)
            .collect()
    }
}

/// The tool-id rule in words, for error messages.
pub const TOOL_ID_RULE: &str = "1-64 of A-Z a-z 0-9 . _ -";

/// A character allowed in a tool id (and in a key id that names files): safe in a URL, a file
/// name, a log line and a JSON string without escaping.
pub fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-".contains(&b)
}

/// A tool id (the tokens' `client_id`), the same rule in `[[tool]]` and the signed registry.
pub fn valid_tool_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(is_id_char)
}

/// Checks that a tool's registered origin is a serialised origin exactly as browsers send it
/// (CORS then compares them byte for byte), in `[[tool]]` and in the signed registry alike.
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

/// One registered measurement tool.
#[derive(Clone, Debug, Default)]
pub struct Tool {
    pub id: String,
    pub name: String,
    pub origins: Vec<String>,
    pub scopes: Scopes,
    /// Revoked in the configuration; revocations made at run time live in the control state.
    pub revoked: bool,
    /// This tool's own hourly token quota, overriding the token server's default.
    pub tokens_per_hour: Option<u32>,
    /// The habilitation's validity window (Unix seconds): its tokens are refused before
    /// `not_before` and from `expires` on, whatever they say themselves.
    pub not_before: Option<i64>,
    pub expires: Option<i64>,
}

/// Where a tool stands in its validity window at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Valid,
    NotYetValid(i64),
    Expired(i64),
}

/// From this many days before a habilitation expires, status and the log warn about it.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

impl Tool {
    /// The habilitation's standing at `now` (Unix seconds). No leeway: these are administrative
    /// dates set by the operator, judged by the box's clock alone.
    pub fn validity(&self, now: i64) -> Validity {
        match (self.not_before, self.expires) {
            (Some(nb), _) if now < nb => Validity::NotYetValid(nb),
            (_, Some(exp)) if now >= exp => Validity::Expired(exp),
            _ => Validity::Valid,
        }
    }

    /// A warning when the habilitation has expired or expires within [`EXPIRY_WARNING_DAYS`].
    pub fn expiry_warning(&self, now: i64) -> Option<String> {
        let exp = self.expires?;
        let when = crate::time::rfc3339(exp);
        let left = exp - now;
        if left <= 0 {
            Some(format!(
                "tool {:?}: its authorisation expired at {when}; its tokens are refused",
                self.id
            ))
        } else if left < EXPIRY_WARNING_DAYS * 86_400 {
            Some(format!(
                "tool {:?}: its authorisation expires in {} days ({when})",
                self.id,
                left / 86_400
            ))
        } else {
            None
        }
    }
}

/// Tools indexed by id and by origin; built once per configuration snapshot.
#[derive(Debug, Default)]
pub struct Registry {
    tools: Vec<Tool>,
    by_id: HashMap<String, usize>,
    by_origin: HashMap<String, usize>,
}

impl Registry {
    /// Builds the indexes; the configuration has already refused duplicate ids and origins.
    pub fn new(tools: Vec<Tool>) -> Registry {
        let mut by_id = HashMap::new();
        let mut by_origin = HashMap::new();
        for (i, t) in tools.iter().enumerate() {
            by_id.insert(t.id.clone(), i);
            for o in &t.origins {
                by_origin.insert(o.clone(), i);
            }
        }
        Registry {
            tools,
            by_id,
            by_origin,
        }
    }

    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    pub fn get(&self, index: usize) -> Option<&Tool> {
        self.tools.get(index)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The tool owning exactly this origin (byte-for-byte; no normalisation on purpose).
    pub fn by_origin(&self, origin: &str) -> Option<usize> {
        self.by_origin.get(origin).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_from_claims() {
        let s = Scopes::from_claim("access counters admin");
        assert!(s.contains(Scopes::ACCESS) && s.contains(Scopes::COUNTERS));
        assert_eq!(Scopes::from_claim("accessx  COUNTERS"), Scopes::default());
        assert_eq!(s.intersect(Scopes::COUNTERS).names(), vec!["counters"]);
    }

    #[test]
    fn tool_ids() {
        for good in ["nperf", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(valid_tool_id(good), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", "a:b", &"x".repeat(65)] {
            assert!(!valid_tool_id(bad), "{bad}");
        }
    }

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
    fn validity_window_and_warnings() {
        let t = Tool {
            id: "t".into(),
            not_before: Some(1000),
            expires: Some(1000 + 40 * 86_400),
            ..Tool::default()
        };
        assert_eq!(t.validity(999), Validity::NotYetValid(1000));
        assert_eq!(t.validity(1000), Validity::Valid);
        assert_eq!(
            t.validity(1000 + 40 * 86_400),
            Validity::Expired(1000 + 40 * 86_400)
        );
        assert_eq!(t.expiry_warning(1000), None);
        let soon = t.expiry_warning(1000 + 20 * 86_400).unwrap();
        assert!(soon.contains("expires in 20 days"), "{soon}");
        let past = t.expiry_warning(1000 + 41 * 86_400).unwrap();
        assert!(past.contains("expired at"), "{past}");
        assert_eq!(Tool::default().validity(0), Validity::Valid);
    }

    #[test]
    fn origin_lookup_is_exact() {
        let r = Registry::new(vec![Tool {
            id: "t".into(),
            name: "T".into(),
            origins: vec!["https://a.example".into()],
            scopes: Scopes::ACCESS,
            ..Tool::default()
        }]);
        assert_eq!(r.by_origin("https://a.example"), Some(0));
        for near in [
            "https://a.example/",
            "https://A.example",
            "http://a.example",
            "https://a.example:443",
            "null",
        ] {
            assert_eq!(r.by_origin(near), None, "{near}");
        }
    }
}
