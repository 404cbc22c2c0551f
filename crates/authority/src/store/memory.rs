//! The in-memory store: one authority, no network, bounded maps.
use super::{hour_window, JtiUse, RetryAfterSecs, StoreError, HOUR};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Bound of the replay cache. Assertions live at most 5 minutes, so this is the number of token
/// requests per 5 minutes one authority can absorb (over 300 a second); past it requests get 503.
pub const MAX_JTI: usize = 100_000;
/// Bound of the quota table: one entry per tool, tools come from the registry.
const MAX_TOOLS: usize = 10_000;

#[derive(Default)]
struct Inner {
    /// (tool, jti) → until when it is remembered (unix seconds).
    jti: HashMap<(String, String), u64>,
    /// tool → (window start, tokens issued in it).
    quota: HashMap<String, (u64, u32)>,
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_jti: usize,
    /// When this memory began (the authority's start): assertions made earlier may have been
    /// used with a previous process and are refused.
    since: u64,
}

impl MemoryStore {
    pub fn new(max_jti: usize, since: u64) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            max_jti,
            since,
        }
    }

    /// Each update is one insert, so a panic while holding the lock cannot leave the maps
    /// half-updated in a way that matters: a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn use_jti(
        &self,
        tool: &str,
        jti: &str,
        valid_until: u64,
        made_at: u64,
        now: u64,
    ) -> Result<JtiUse, StoreError> {
        if made_at < self.since {
            return Ok(JtiUse::PredatesStore);
        }
        let mut inner = self.lock();
        let key = (tool.to_owned(), jti.to_owned());
        if inner.jti.get(&key).is_some_and(|&until| until >= now) {
            return Ok(JtiUse::Replayed);
        }
        if inner.jti.len() >= self.max_jti {
            inner.jti.retain(|_, until| *until >= now);
            if inner.jti.len() >= self.max_jti {
                // Refusing is safer than forgetting a used jti.
                return Err(StoreError::Full(self.max_jti));
            }
        }
        inner.jti.insert(key, valid_until);
        Ok(JtiUse::Fresh)
    }

    pub fn take_token(
        &self,
        tool: &str,
        limit_per_hour: u32,
        now: u64,
    ) -> Result<Result<(), RetryAfterSecs>, StoreError> {
        let window = hour_window(now);
        let mut inner = self.lock();
        if !inner.quota.contains_key(tool) && inner.quota.len() >= MAX_TOOLS {
            inner.quota.retain(|_, (start, _)| *start >= window);
            if inner.quota.len() >= MAX_TOOLS {
                return Err(StoreError::Full(MAX_TOOLS));
            }
        }
        let entry = inner.quota.entry(tool.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= limit_per_hour {
            return Ok(Err(RetryAfterSecs(
                (window + HOUR).saturating_sub(now).max(1),
            )));
        }
        entry.1 += 1;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000 + 100; // 100 s into an hour window

    #[test]
    fn jti_single_use_and_bounded() {
        let m = MemoryStore::new(3, T);
        let use_ = |tool, jti, until| m.use_jti(tool, jti, until, T, T).expect("room");
        assert_eq!(use_("a", "1", T + 60), JtiUse::Fresh);
        assert_eq!(use_("a", "1", T + 60), JtiUse::Replayed);
        assert_eq!(use_("b", "1", T + 60), JtiUse::Fresh);
        assert_eq!(use_("a", "2", T + 60), JtiUse::Fresh);
        // Full of live entries: refuse (fail closed) rather than forget one.
        assert!(matches!(
            m.use_jti("a", "3", T + 60, T, T),
            Err(StoreError::Full(3))
        ));
        // Expired entries make room again.
        let m = MemoryStore::new(3, T);
        for j in ["1", "2", "3"] {
            assert_eq!(m.use_jti("a", j, T - 1, T, T).expect("room"), JtiUse::Fresh);
        }
        assert_eq!(
            m.use_jti("a", "4", T + 60, T, T).expect("room"),
            JtiUse::Fresh
        );
        // Made before this memory began: may have been used with the previous process.
        assert_eq!(
            m.use_jti("a", "5", T + 60, T - 1, T).expect("room"),
            JtiUse::PredatesStore
        );
    }

    #[test]
    fn quota_window_and_retry_after() {
        let m = MemoryStore::new(10, T);
        assert_eq!(m.take_token("a", 2, T).expect("ok"), Ok(()));
        assert_eq!(m.take_token("a", 2, T).expect("ok"), Ok(()));
        assert_eq!(
            m.take_token("a", 2, T).expect("ok"),
            Err(RetryAfterSecs(3500))
        );
        assert_eq!(m.take_token("a", 2, T + 3500).expect("ok"), Ok(()));
        assert_eq!(m.take_token("b", 1, T).expect("ok"), Ok(()));
    }
}
