//! The authority's run-time state (issue 15): single-use client-assertion `jti`s, per-tool hourly
//! token quotas, run-time revocations, each device's recent certificate issuances and address
//! updates, and the published fleet document (issue 23), either in
//! this process's memory (one authority) or in Redis (replicas behind a load balancer, no
//! stickiness needed).
//!
//! Every store error means "not checked": the token endpoint answers 503 with
//! `Retry-After: StoreError::retry_after_secs()` and never issues a token it could not check.
//!
//! An enum rather than a trait object: two known implementations, async methods without boxing,
//! and dispatch stays explicit.
pub mod error;
pub mod memory;
pub mod redis;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use redis::{FleetPublish, RedisStore};

use crate::config::StoreConfig;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::watch;

pub(crate) use boxapi_core::grants::{hour_window, HOUR};
pub use boxapi_core::grants::{Admission, RetryAfterSecs, Single};

/// One certificate issuance counted against a device's limit, until the issuance fails and it is
/// released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuanceTicket(pub(crate) u64);

/// The store's answer to a device asking for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuance {
    /// Within the limit: counted now (release it if the issuance fails).
    Reserved(IssuanceTicket),
    /// The device had its `limit` certificates within the window: 429 with this `Retry-After`
    /// (until the oldest of them leaves the window).
    LimitReached(RetryAfterSecs),
}

/// The store's answer to a device publishing its addresses (`POST /v1/address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressUpdate {
    /// Within the limit: counted now, whatever the DNS server then answers (the update reached
    /// it, or may have).
    Counted,
    /// The device sent its `limit` updates within the window: 429 with this `Retry-After` (until
    /// the oldest of them leaves the window).
    LimitReached(RetryAfterSecs),
}

impl From<Issuance> for AddressUpdate {
    fn from(i: Issuance) -> Self {
        match i {
            Issuance::Reserved(_) => AddressUpdate::Counted,
            Issuance::LimitReached(r) => AddressUpdate::LimitReached(r),
        }
    }
}

/// Whether an issuance made at `at` still counts at `now`, in a rolling window of `window` s.
pub(crate) fn in_window(at: u64, window: u64, now: u64) -> bool {
    at.saturating_add(window) > now
}

pub enum Store {
    /// Boxed: its tables make it far larger than the Redis handle, and there is one store.
    Memory(Box<MemoryStore>),
    Redis(RedisStore),
}

impl Store {
    /// Builds the store the configuration names. For Redis this does not wait for the server (an
    /// authority started while Redis is down answers 503 until it is up); `password` is read from
    /// `password_file` by the caller; `revoked` is this replica's last known copy of the shared
    /// revocations (re-seeded into a Redis that lost its data). Must run inside a tokio runtime.
    pub fn open(
        config: &StoreConfig,
        password: Option<String>,
        revoked: BTreeSet<String>,
        now: u64,
    ) -> Result<Self, StoreError> {
        Ok(match config {
            StoreConfig::Memory => {
                Store::Memory(Box::new(MemoryStore::new(memory::MAX_JTI_PER_TOOL, now)))
            }
            StoreConfig::Redis(r) => Store::Redis(RedisStore::connect(r, password, revoked)?),
        })
    }

    /// When the shared memory of used assertions began (Redis; unix seconds), for `ctl status`.
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r.epoch()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// Single use and quota in one atomic step, with the answers and order of
    /// [`boxapi_core::grants::MemoryGrants::admit`] (the box's store, and this one's memory kind):
    /// a replay is refused first, then a spent quota; only a granted request records its
    /// assertion and counts against the quota.
    pub async fn admit(
        &self,
        tool: &str,
        single: Option<Single<'_>>,
        limit_per_hour: u32,
        now: u64,
    ) -> Result<Admission, StoreError> {
        match self {
            Store::Memory(m) => m.admit(tool, single, limit_per_hour, now),
            Store::Redis(r) => r.admit(tool, single, limit_per_hour, now).await,
        }
    }

    /// Counts one certificate issuance for `device` (its box name) if it had fewer than `limit`
    /// within the last `window` seconds, in one atomic step (exact across replicas with Redis).
    /// Refusals count nothing.
    pub async fn reserve_issuance(
        &self,
        device: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Issuance, StoreError> {
        match self {
            Store::Memory(m) => m.reserve_issuance(device, limit, window, now),
            Store::Redis(r) => r.reserve_issuance(device, limit, window, now).await,
        }
    }

    /// Uncounts a reserved issuance that did not produce a certificate.
    pub async fn release_issuance(
        &self,
        device: &str,
        ticket: IssuanceTicket,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.release_issuance(device, ticket);
                Ok(())
            }
            Store::Redis(r) => r.release_issuance(device, ticket).await,
        }
    }

    /// Counts one address update for `device` if it sent fewer than `limit` within the last
    /// `window` seconds, in one atomic step (exact across replicas with Redis), in a count of its
    /// own (issuances are not address updates). Refusals count nothing.
    pub async fn count_address_update(
        &self,
        device: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<AddressUpdate, StoreError> {
        match self {
            Store::Memory(m) => m.count_address_update(device, limit, window, now),
            Store::Redis(r) => r.count_address_update(device, limit, window, now).await,
        }
        .map(AddressUpdate::from)
    }

    /// The longest one store call may take (Redis: `response_timeout`; memory: no wait): part of
    /// the time an enrolment is allowed.
    pub fn call_limit(&self) -> std::time::Duration {
        match self {
            Store::Memory(_) => std::time::Duration::ZERO,
            Store::Redis(r) => r.call_limit(),
        }
    }

    /// Whether run-time revocations are shared through this store (Redis) rather than kept in
    /// this authority's own control state (memory).
    pub fn shares_revocations(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    pub async fn set_revoked(&self, tool: &str, revoked: bool) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => r.set_revoked(tool, revoked).await,
        }
    }

    /// Tools revoked through the store (empty for memory: the control state holds them). Cheap
    /// (a local copy); with Redis it fails (`Stale`) when the copy could not be refreshed for a
    /// second, so that a revocation made on another replica is never missed.
    pub fn revoked(&self) -> Result<Arc<BTreeSet<String>>, StoreError> {
        match self {
            Store::Memory(_) => Ok(Arc::default()),
            Store::Redis(r) => r.revoked(),
        }
    }

    /// The revocations as last read, however old: for CORS answers and status (the token
    /// endpoint uses [`Store::revoked`], which refuses a stale copy).
    pub fn revoked_view(&self) -> Arc<BTreeSet<String>> {
        match self {
            Store::Memory(_) => Arc::default(),
            Store::Redis(r) => r.revoked_view(),
        }
    }

    /// This replica's signed registry (version and revoked tools): with Redis, published for all
    /// replicas at the next read when it is the newest.
    pub fn note_registry(&self, version: Option<u64>, revoked: &[String]) {
        if let Store::Redis(r) = self {
            r.note_registry(version, revoked);
        }
    }

    /// Changes of the shared `ctl` revocations, whichever replica made them.
    pub fn watch_revoked(&self) -> Option<watch::Receiver<Arc<BTreeSet<String>>>> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r.watch_revoked()),
        }
    }

    /// Offers a verified fleet document to the other replicas (Redis), refused when the store
    /// holds a newer one or another of the same version. Memory: nothing to share.
    pub async fn publish_fleet(
        &self,
        version: u64,
        jws: &[u8],
    ) -> Result<FleetPublish, StoreError> {
        match self {
            Store::Memory(_) => Ok(FleetPublish::Published),
            Store::Redis(r) => r.publish_fleet(version, jws).await,
        }
    }

    /// The fleet document another replica published (Redis), unverified.
    pub async fn fleet_document(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(_) => Ok(None),
            Store::Redis(r) => r.fleet_document().await,
        }
    }

    /// Changes of the shared fleet document's version, whichever replica published it.
    pub fn watch_fleet(&self) -> Option<watch::Receiver<Option<u64>>> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r.watch_fleet()),
        }
    }

    /// The box name or URL mapped to `keys` (most specific first), from Redis.
    pub async fn locate(&self, keys: &[String]) -> Result<Option<String>, StoreError> {
        match self {
            Store::Memory(_) => Ok(None),
            Store::Redis(r) => r.locate(keys).await,
        }
    }

    /// Reads the shared state now (the poller does it every `revocation_poll`): at start, so the
    /// first requests find a fresh copy.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => r.refresh().await,
        }
    }

    /// Readiness: `Ok` when the store can be used now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => r.ping().await,
        }
    }
}
