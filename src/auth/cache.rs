//! Tokens already verified, so that a page polling /v1/counters costs a hash and a lookup, not a
//! signature check. Keyed by the token's SHA-256; bounded; an entry is used only until the
//! token's own expiry, and the cache lives in one configuration snapshot (a reload empties it).
//! Revocation is checked on every hit, so a revoked tool's cached tokens stop working at once.
use super::token::Grant;
use std::collections::HashMap;
use std::sync::Mutex;

/// A home LAN has a handful of tools and tabs; far more distinct valid tokens is not normal use.
pub const MAX_ENTRIES: usize = 1024;

pub type Digest = [u8; 32];

#[derive(Default)]
pub struct TokenCache {
    map: Mutex<HashMap<Digest, Grant>>,
}

pub fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TokenCache {
    /// The grant of a token verified before, if it is still within `exp + leeway`.
    pub fn get(&self, key: &Digest, now: u64, leeway: u64) -> Option<Grant> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(g) if now < g.exp.saturating_add(leeway) => Some(*g),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: Digest, grant: Grant, now: u64, leeway: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, g| now < g.exp.saturating_add(leeway));
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, grant);
    }

    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scopes;

    fn grant(exp: u64) -> Grant {
        Grant {
            tool: 0,
            scopes: Scopes::ACCESS,
            exp,
        }
    }

    #[test]
    fn entries_expire_with_their_token() {
        let c = TokenCache::default();
        let k = digest(b"a.b.c");
        c.insert(k, grant(100), 50, 30);
        assert_eq!(c.get(&k, 129, 30), Some(grant(100)));
        assert_eq!(c.get(&k, 130, 30), None);
        assert!(c.is_empty(), "expired entry evicted on lookup");
    }

    #[test]
    fn stays_bounded() {
        let c = TokenCache::default();
        for i in 0..(MAX_ENTRIES as u32 * 3) {
            c.insert(digest(&i.to_be_bytes()), grant(1_000), 0, 0);
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
