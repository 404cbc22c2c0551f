//! Tokens already verified, so that a page polling /v1/counters costs a hash and a lookup, not a
//! signature check. Keyed by the token's SHA-256; bounded; an entry is used only until the
//! token's own expiry, and the cache lives in one configuration snapshot (a reload empties it).
//! Revocation is checked on every hit, so a revoked tool's cached tokens stop working at once.
use std::collections::HashMap;
use std::sync::Mutex;

/// A home LAN has a handful of tools and tabs; far more distinct valid tokens is not normal use.
pub const MAX_ENTRIES: usize = 1024;

pub type Digest = [u8; 32];

/// Verified values (a token's grant) with the expiry of the token they came from.
pub struct TokenCache<V> {
    map: Mutex<HashMap<Digest, (V, u64)>>,
}

impl<V> Default for TokenCache<V> {
    fn default() -> Self {
        TokenCache {
            map: Mutex::default(),
        }
    }
}

pub fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl<V: Copy> TokenCache<V> {
    /// What a token verified before gave, if the token is still within `exp + leeway`.
    pub fn get(&self, key: &Digest, now: u64, leeway: u64) -> Option<V> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((v, exp)) if now < exp.saturating_add(leeway) => Some(*v),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: Digest, value: V, exp: u64, now: u64, leeway: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, exp)| now < exp.saturating_add(leeway));
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (value, exp));
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

    #[test]
    fn entries_expire_with_their_token() {
        let c = TokenCache::default();
        let k = digest(b"a.b.c");
        c.insert(k, 7u8, 100, 50, 30);
        assert_eq!(c.get(&k, 129, 30), Some(7));
        assert_eq!(c.get(&k, 130, 30), None);
        assert!(c.is_empty(), "expired entry evicted on lookup");
    }

    #[test]
    fn stays_bounded() {
        let c = TokenCache::default();
        for i in 0..(MAX_ENTRIES as u32 * 3) {
            c.insert(digest(&i.to_be_bytes()), i, 1_000, 0, 0);
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
