//! The in-memory store: one authority, no network, bounded maps. Its grants are core's
//! [`MemoryGrants`], the box's store.
use super::{in_window, Admission, Issuance, IssuanceTicket, RetryAfterSecs, Single, StoreError};
use boxapi_core::grants::MemoryGrants;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Bound of each tool's replay set. Assertions live at most 5 minutes and only granted ones are
/// recorded, so a tool reaches it only with a quota above 100,000 tokens per 5 minutes; then its
/// own requests (nobody else's) get 503 until some expire.
pub const MAX_JTI_PER_TOOL: usize = 100_000;
/// Bound of the devices with issuances in the window: a fleet renewing every two months over a
/// week-long window has about a tenth of its boxes there; past the bound, enrolments get 503
/// (a larger fleet runs the Redis store). Address updates (an hour's window) have their own table
/// under the same bound.
const MAX_DEVICES: usize = 1_000_000;

#[derive(Default)]
struct Inner {
    /// device → (when, ticket) of its certificate issuances, the old ones dropped lazily.
    issued: HashMap<String, Vec<(u64, u64)>>,
    /// device → (when, ticket) of its address updates, the same way.
    address_updates: HashMap<String, Vec<(u64, u64)>>,
    last_ticket: u64,
}

pub struct MemoryStore {
    /// Single use and quotas since the authority's start.
    grants: MemoryGrants,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new(max_jti: usize, since: u64) -> Self {
        MemoryStore {
            grants: MemoryGrants::new(max_jti, since),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Each update is one insert, so a panic while holding the lock cannot leave the maps
    /// half-updated in a way that matters: a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn admit(
        &self,
        tool: &str,
        single: Option<Single<'_>>,
        limit_per_hour: u32,
        now: u64,
    ) -> Result<Admission, StoreError> {
        Ok(self.grants.admit(tool, single, limit_per_hour, now)?)
    }
}

impl MemoryStore {
    pub fn reserve_issuance(
        &self,
        device: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Issuance, StoreError> {
        let mut inner = self.lock();
        let Inner {
            issued,
            last_ticket,
            ..
        } = &mut *inner;
        reserve(issued, last_ticket, device, limit, window, now)
    }

    pub fn release_issuance(&self, device: &str, ticket: IssuanceTicket) {
        if let Some(list) = self.lock().issued.get_mut(device) {
            list.retain(|&(_, t)| t != ticket.0);
        }
    }

    /// Counts one address update of `device` in its own rolling window (never released).
    pub fn count_address_update(
        &self,
        device: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Issuance, StoreError> {
        let mut inner = self.lock();
        let Inner {
            address_updates,
            last_ticket,
            ..
        } = &mut *inner;
        reserve(address_updates, last_ticket, device, limit, window, now)
    }
}

/// One more event for `device` in `table` if it had fewer than `limit` within the rolling
/// `window`; the table stays within `MAX_DEVICES` (old entries are dropped first, then 503).
fn reserve(
    table: &mut HashMap<String, Vec<(u64, u64)>>,
    last_ticket: &mut u64,
    device: &str,
    limit: u32,
    window: u64,
    now: u64,
) -> Result<Issuance, StoreError> {
    if !table.contains_key(device) && table.len() >= MAX_DEVICES {
        table.retain(|_, list| {
            list.retain(|&(at, _)| in_window(at, window, now));
            !list.is_empty()
        });
        if table.len() >= MAX_DEVICES {
            return Err(StoreError::Full(MAX_DEVICES));
        }
    }
    let list = table.entry(device.to_owned()).or_default();
    list.retain(|&(at, _)| in_window(at, window, now));
    if list.len() >= limit as usize {
        let oldest = list.iter().map(|&(at, _)| at).min().unwrap_or(now);
        return Ok(Issuance::LimitReached(RetryAfterSecs(
            oldest.saturating_add(window).saturating_sub(now).max(1),
        )));
    }
    *last_ticket += 1;
    list.push((now, *last_ticket));
    Ok(Issuance::Reserved(IssuanceTicket(*last_ticket)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HOUR;

    const T: u64 = 1_800_000_000 + 100; // 100 s into an hour window

    /// Grants are core's (tested there); this store answers them, and its bound is a 503.
    #[test]
    fn grants_answer_through_the_store() {
        let m = MemoryStore::new(1, T);
        let single = |jti| {
            Some(Single {
                jti,
                valid_until: T + 60,
                made_at: T,
            })
        };
        assert_eq!(
            m.admit("a", single("1"), 1, T).ok(),
            Some(Admission::Granted)
        );
        assert_eq!(
            m.admit("a", single("1"), 1, T).ok(),
            Some(Admission::Replayed)
        );
        assert_eq!(
            m.admit("b", None, 0, T).ok(),
            Some(Admission::QuotaSpent(RetryAfterSecs(3500)))
        );
        let full = m.admit("a", single("2"), 2, T);
        assert!(matches!(full, Err(StoreError::Full(1))), "{full:?}");
        assert_eq!(full.err().map(|e| e.retry_after_secs()), Some(30));
    }

    #[test]
    fn issuances_per_device_in_a_rolling_window() {
        const DAY: u64 = 86_400;
        let m = MemoryStore::new(10, T);
        let reserve = |dev, now| m.reserve_issuance(dev, 2, 7 * DAY, now).expect("room");
        assert!(matches!(reserve("a.box", T), Issuance::Reserved(_)));
        let Issuance::Reserved(second) = reserve("a.box", T + DAY) else {
            panic!("the second is reserved")
        };
        // The third waits until the first leaves the window; refusals count nothing.
        assert_eq!(
            reserve("a.box", T + 2 * DAY),
            Issuance::LimitReached(RetryAfterSecs(5 * DAY))
        );
        assert_eq!(
            reserve("a.box", T + 2 * DAY),
            Issuance::LimitReached(RetryAfterSecs(5 * DAY))
        );
        // Another device has its own count.
        assert!(matches!(reserve("b.box", T), Issuance::Reserved(_)));
        // A released (failed) issuance does not count.
        m.release_issuance("a.box", second);
        assert!(matches!(
            reserve("a.box", T + 2 * DAY),
            Issuance::Reserved(_)
        ));
        assert!(matches!(
            reserve("a.box", T + 2 * DAY),
            Issuance::LimitReached(_)
        ));
        // Rolling: a week after the first, its place is free again; the next waits for the one
        // of two days later.
        assert!(matches!(
            reserve("a.box", T + 7 * DAY),
            Issuance::Reserved(_)
        ));
        assert_eq!(
            reserve("a.box", T + 7 * DAY),
            Issuance::LimitReached(RetryAfterSecs(2 * DAY))
        );
    }

    #[test]
    fn address_updates_per_device_in_their_own_window() {
        let m = MemoryStore::new(10, T);
        let count = |dev, now| m.count_address_update(dev, 2, HOUR, now).expect("room");
        assert!(matches!(count("a.box", T), Issuance::Reserved(_)));
        assert!(matches!(count("a.box", T + 600), Issuance::Reserved(_)));
        // The third waits until the first leaves the hour; refusals count nothing.
        assert_eq!(
            count("a.box", T + 1200),
            Issuance::LimitReached(RetryAfterSecs(2400))
        );
        assert_eq!(
            count("a.box", T + 1200),
            Issuance::LimitReached(RetryAfterSecs(2400))
        );
        // Other devices, and the same device's issuances, have their own counts.
        assert!(matches!(count("b.box", T), Issuance::Reserved(_)));
        assert!(matches!(
            m.reserve_issuance("a.box", 1, 7 * 86_400, T + 1200)
                .expect("room"),
            Issuance::Reserved(_)
        ));
        // Rolling: an hour after the first, its place is free again.
        assert!(matches!(count("a.box", T + HOUR), Issuance::Reserved(_)));
        assert_eq!(
            count("a.box", T + HOUR),
            Issuance::LimitReached(RetryAfterSecs(600))
        );
    }
}
