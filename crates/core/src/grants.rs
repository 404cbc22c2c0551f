//! The token endpoints' one grant store: each client assertion used once, and each tool's tokens
//! counted per hour. The answers are shared; this is the in-memory store (the box, one authority).
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

pub const HOUR: u64 = 3600;
/// Bound of the tables: one entry per tool, tools come from the registry.
const MAX_TOOLS: usize = 10_000;

/// A refused quota: seconds until the current hour window ends (the `Retry-After` of the 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfterSecs(pub u64);

/// A client assertion to use once.
#[derive(Debug, Clone, Copy)]
pub struct Single<'a> {
    pub jti: &'a str,
    /// Remember it until then (unix seconds, inclusive): its `exp` plus the leeway it is
    /// accepted with.
    pub valid_until: u64,
    /// The earliest it can have been made ([`made_at`]).
    pub made_at: u64,
}

/// A store's answer to a token grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the quota and (with an assertion) its first use: counted and recorded, sign.
    Granted,
    /// The assertion was used before: `invalid_client`.
    Replayed,
    /// The assertion was made before the store's memory of used assertions began (the daemon
    /// started, or Redis came back empty): it may have been used before, so it is refused.
    PredatesStore,
    /// The tool's quota for the hour is spent: 429 with this `Retry-After`.
    QuotaSpent(RetryAfterSecs),
}

/// The in-memory store could not check: refusing is safer than forgetting a used `jti`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("the in-memory grant store is full ({0} entries)")]
    Full(usize),
}

impl GrantError {
    /// A full replay set drains as its assertions expire (at most 5 minutes, usually sooner).
    pub fn retry_after_secs(&self) -> u64 {
        30
    }
}

/// Start of the fixed hour window containing `now` (unix seconds). Windows are aligned on the
/// hour so every replica computes the same one from its own (NTP-synchronised) clock.
pub fn hour_window(now: u64) -> u64 {
    now - now % HOUR
}

/// The earliest time an assertion can have been made: its `iat`, else (RFC 7523 makes `iat`
/// optional) its `exp` minus the longest assertion life, which is when it could first have been
/// accepted.
pub fn made_at(iat: Option<u64>, valid_until: u64, max_life: u64) -> u64 {
    iat.unwrap_or_else(|| valid_until.saturating_sub(max_life))
}

#[derive(Default)]
struct Inner {
    /// tool → jti → until when it is remembered (unix seconds, inclusive).
    jti: HashMap<String, HashMap<String, u64>>,
    /// tool → (window start, tokens issued in it).
    quota: HashMap<String, (u64, u32)>,
    /// When this memory began: assertions made earlier may have been used with a previous
    /// process and are refused.
    since: u64,
}

pub struct MemoryGrants {
    inner: Mutex<Inner>,
    max_jti_per_tool: usize,
    /// When the store was made, by the monotonic clock: dates `since` once the wall clock is
    /// set, when it was not at start (a box boots at the epoch until NTP answers).
    made: Instant,
}

impl MemoryGrants {
    /// A store whose memory begins at `since` (unix seconds: now, normally), remembering at most
    /// `max_jti_per_tool` live assertions per tool.
    pub fn new(max_jti_per_tool: usize, since: u64) -> Self {
        MemoryGrants {
            inner: Mutex::new(Inner {
                since,
                ..Inner::default()
            }),
            max_jti_per_tool,
            made: Instant::now(),
        }
    }

    /// Each update is one insert, so a panic while holding the lock cannot leave the maps
    /// half-updated in a way that matters: a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Single use and quota in one step: a replay (or an assertion predating this memory) is
    /// refused first, then a spent quota; only a grant records its assertion and counts, so a
    /// tool hammering after its quota is spent, or replaying, costs nobody anything. Each tool's
    /// replay set is its own: a tool that fills it locks out only itself.
    pub fn admit(
        &self,
        tool: &str,
        single: Option<Single<'_>>,
        limit_per_hour: u32,
        now: u64,
    ) -> Result<Admission, GrantError> {
        let mut inner = self.lock();
        if crate::time::clock_is_unset(inner.since) && !crate::time::clock_is_unset(now) {
            inner.since = now.saturating_sub(self.made.elapsed().as_secs());
        }
        if single.is_some_and(|a| a.made_at < inner.since) {
            return Ok(Admission::PredatesStore);
        }
        let Inner { jti, quota, .. } = &mut *inner;
        if !quota.contains_key(tool) && quota.len() >= MAX_TOOLS {
            return Err(GrantError::Full(MAX_TOOLS));
        }
        let set = jti.entry(tool.to_owned()).or_default();
        if let Some(a) = single {
            if set.get(a.jti).is_some_and(|&until| until >= now) {
                return Ok(Admission::Replayed);
            }
        }
        let window = hour_window(now);
        let entry = quota.entry(tool.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= limit_per_hour {
            return Ok(Admission::QuotaSpent(RetryAfterSecs(
                (window + HOUR).saturating_sub(now).max(1),
            )));
        }
        if let Some(a) = single {
            if set.len() >= self.max_jti_per_tool {
                set.retain(|_, until| *until >= now);
                if set.len() >= self.max_jti_per_tool {
                    return Err(GrantError::Full(self.max_jti_per_tool));
                }
            }
            set.insert(a.jti.to_owned(), a.valid_until);
        }
        entry.1 += 1;
        Ok(Admission::Granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000 + 100; // 100 s into an hour window

    fn single(jti: &str, valid_until: u64, made_at: u64) -> Option<Single<'_>> {
        Some(Single {
            jti,
            valid_until,
            made_at,
        })
    }

    #[test]
    fn single_use_per_tool_and_bounded() {
        let m = MemoryGrants::new(3, T);
        let admit = |tool, jti, until| m.admit(tool, single(jti, until, T), 100, T).expect("room");
        assert_eq!(admit("a", "1", T + 60), Admission::Granted);
        assert_eq!(admit("a", "1", T + 60), Admission::Replayed);
        assert_eq!(admit("b", "1", T + 60), Admission::Granted);
        assert_eq!(admit("a", "2", T + 60), Admission::Granted);
        assert_eq!(admit("a", "3", T + 60), Admission::Granted);
        // a's set is full of live entries: refuse (fail closed) rather than forget one...
        assert_eq!(
            m.admit("a", single("4", T + 60, T), 100, T),
            Err(GrantError::Full(3))
        );
        // ...and b is not locked out by a.
        assert_eq!(admit("b", "2", T + 60), Admission::Granted);
        // Expired entries make room again.
        assert_eq!(
            m.admit("a", single("4", T + 200, T), 100, T + 100)
                .expect("room"),
            Admission::Granted
        );
        // Made before this memory began: may have been used with the previous process.
        assert_eq!(
            m.admit("a", single("5", T + 60, T - 1), 100, T)
                .expect("room"),
            Admission::PredatesStore
        );
    }

    /// `valid_until` is inclusive: at that very second the assertion is still remembered (the
    /// box compared with `>` and forgot it one second early), and a full set keeps it too.
    #[test]
    fn an_assertion_is_remembered_through_its_last_second() {
        let m = MemoryGrants::new(1, T);
        let at = |jti, now| m.admit("a", single(jti, T + 60, T), 100, now);
        assert_eq!(at("1", T), Ok(Admission::Granted));
        assert_eq!(at("1", T + 60), Ok(Admission::Replayed));
        assert_eq!(at("2", T + 60), Err(GrantError::Full(1)));
        assert_eq!(at("1", T + 61), Ok(Admission::Granted));
    }

    #[test]
    fn quota_first_refusals_record_nothing() {
        let m = MemoryGrants::new(10, T);
        let admit = |jti, now| m.admit("a", single(jti, T + 60, T), 2, now).expect("ok");
        assert_eq!(admit("1", T), Admission::Granted);
        assert_eq!(admit("2", T), Admission::Granted);
        assert_eq!(admit("3", T), Admission::QuotaSpent(RetryAfterSecs(3500)));
        // A replay is a replay even when the quota is spent.
        assert_eq!(admit("1", T), Admission::Replayed);
        // "3" was not recorded: usable in the next window.
        assert_eq!(admit("3", T + 3500), Admission::Granted);
        // Without an assertion (client_secret_basic): the quota only.
        assert_eq!(m.admit("b", None, 1, T), Ok(Admission::Granted));
        assert_eq!(
            m.admit("b", None, 1, T),
            Ok(Admission::QuotaSpent(RetryAfterSecs(3500)))
        );
    }

    /// A store made while the wall clock was unset dates its memory once the clock is set: an
    /// assertion made before it, used with a previous process, is not let through.
    #[test]
    fn memory_made_before_the_clock_was_set_begins_when_it_was_made() {
        let m = MemoryGrants::new(10, 5);
        assert_eq!(
            m.admit("a", single("1", T + 60, T - 10), 100, T),
            Ok(Admission::PredatesStore)
        );
        assert_eq!(
            m.admit("a", single("2", T + 60, T), 100, T),
            Ok(Admission::Granted)
        );
    }
}
