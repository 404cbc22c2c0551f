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

/// One registered measurement tool.
#[derive(Clone, Debug)]
pub struct Tool {
    pub id: String,
    pub name: String,
    pub origins: Vec<String>,
    pub scopes: Scopes,
    /// Revoked in the configuration; revocations made at run time live in the control state.
    pub revoked: bool,
    /// This tool's own hourly token quota, overriding the token server's default.
    pub tokens_per_hour: Option<u32>,
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
    fn origin_lookup_is_exact() {
        let r = Registry::new(vec![Tool {
            id: "t".into(),
            name: "T".into(),
            origins: vec!["https://a.example".into()],
            scopes: Scopes::ACCESS,
            revoked: false,
            tokens_per_hour: None,
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
