//! The Redis store: state shared by every replica of the authority.
//!
//! Connection handling: one `redis::aio::ConnectionManager` per replica (a multiplexed connection
//! that reconnects by itself), and on top of it:
//! - every call is wrapped in `tokio::time::timeout(response_timeout)`, connection wait
//!   included, because the manager's own response timeout does not cover the time spent awaiting
//!   a reconnection in progress;
//! - the manager only reconnects on I/O errors; a handshake that fails for another reason
//!   (WRONGPASS while an operator fixes the ACL, LOADING while Redis loads its dump, READONLY
//!   after a failover) would stay failed forever, so on those errors the manager is dropped and
//!   rebuilt (at most once a second);
//! - a background task re-reads the revocation set every `revocation_poll` (250 ms). It also keeps
//!   the connection exercised, so a Redis that comes back is noticed without waiting for a token
//!   request.
//!
//! Redis need not persist anything (see docs/authorization.md): an `epoch` key records when the
//! shared memory began. When it is missing, Redis has lost its data: the first replica to notice
//! sets a new epoch and re-seeds the revocations it last knew; assertions made before the epoch
//! are refused, since their earlier use may have been forgotten.
use super::{
    hour_window, Admission, Issuance, IssuanceTicket, RetryAfterSecs, Single, StoreError, HOUR,
};
use crate::config::RedisConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, RedisResult, Script, Value};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Single use and quota in one atomic step, exact across replicas. KEYS: quota, epoch, jti (the
/// jti key is not touched without an assertion). ARGV: limit, quota key expiry, "1" with an
/// assertion, jti expiry, when the assertion was made at the earliest.
/// Answers: 1 granted, 0 replayed, -1 no epoch (Redis lost its data: sync, then retry), -2 made
/// before the epoch, -3 quota spent. A replay is refused before the quota is looked at; only a
/// grant records its jti and counts, so refusals change nothing. Checking the epoch in the same
/// script closes the window between Redis coming back empty and this replica noticing. The quota
/// key lives a little past its window (ARGV[2]).
const ADMIT_LUA: &str = r#"
local single = ARGV[3] == '1'
if single then
  local epoch = redis.call('GET', KEYS[2])
  if not epoch then return -1 end
  if tonumber(ARGV[5]) < tonumber(epoch) then return -2 end
  if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
end
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return -3 end
if single then redis.call('SET', KEYS[3], '1', 'EXAT', ARGV[4]) end
redis.call('INCR', KEYS[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1
"#;

/// A device's certificate issuances (or address updates) in a rolling window, exact across
/// replicas. KEYS: the device's sorted set (member: ticket, score: when), the ticket sequence.
/// ARGV: now, window, limit. Answers {1, ticket} reserved, or {0, seconds until the oldest leaves the window}; a
/// refusal adds nothing. The set expires a little after its newest entry leaves the window.
const ISSUANCE_LUA: &str = r#"
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(oldest[2]) + window - now)}
end
local ticket = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], now, ticket)
redis.call('EXPIREAT', KEYS[1], now + window + 300)
return {1, ticket}
"#;

/// Reads the epoch and the revocations; when the epoch is missing, first sets it and re-seeds
/// this replica's last known `ctl` revocations (ARGV[4..]), atomically, so no replica ever reads
/// the emptied set as the truth. Also publishes this replica's signed-registry revocations
/// (version ARGV[2], tools ARGV[3], space-separated) when its registry is newer than the one
/// published, so a new registry taken by one replica revokes on all of them at their next read.
/// KEYS: epoch, revoked, registry, fleet. Also answers the published fleet document's version
/// ('' without one), so that every replica learns of a new one within `revocation_poll`.
const SYNC_LUA: &str = r#"
local reset = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  for i = 4, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
  reset = 1
end
local published = tonumber(redis.call('HGET', KEYS[3], 'version') or '-1')
if tonumber(ARGV[2]) > published then
  redis.call('HSET', KEYS[3], 'version', ARGV[2], 'revoked', ARGV[3])
end
return {redis.call('GET', KEYS[1]), redis.call('SMEMBERS', KEYS[2]), reset,
        redis.call('HGET', KEYS[3], 'revoked') or '', redis.call('HGET', KEYS[4], 'version') or ''}
"#;

/// Publishes a fleet document (ARGV: version, JWS) unless an older one is offered. KEYS: fleet.
/// Versions are compared as decimal strings (length, then text), exact for every u64, which a Lua
/// number is not. Answers {1, version} published or the same document already there, {0, held}
/// older than the one held, {-1, held} another document of the version held.
const FLEET_PUBLISH_LUA: &str = r#"
local held = redis.call('HGET', KEYS[1], 'version')
if held then
  if #ARGV[1] < #held or (#ARGV[1] == #held and ARGV[1] < held) then return {0, held} end
  if ARGV[1] == held then
    if redis.call('HGET', KEYS[1], 'jws') == ARGV[2] then return {1, held} end
    return {-1, held}
  end
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'jws', ARGV[2])
return {1, ARGV[1]}
"#;

/// The shared store's answer to a fleet document offered (`publish_fleet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetPublish {
    /// Published, or the same document was there already.
    Published,
    /// Older than the document held, of this version.
    Older(u64),
    /// Another document of the version held.
    SameVersion,
}

/// After this long without a successful read, the local revocation view is not trusted (the
/// contract: a revocation reaches every replica within a second).
const REVOCATIONS_STALE_AFTER: Duration = Duration::from_secs(1);
/// Rebuild the connection manager at most this often (see the module comment).
const MIN_RESET_INTERVAL: Duration = Duration::from_secs(1);

struct Inner {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    /// `None` until first used or after a reset. A tokio mutex because building a manager is
    /// async; held only to clone the manager, or while connecting (bounded by the caller's timeout).
    manager: tokio::sync::Mutex<Option<ConnectionManager>>,
    last_reset: Mutex<Option<Instant>>,
    prefix: String,
    response_timeout: Duration,
    admit: Script,
    issuance: Script,
    sync: Script,
    fleet_publish: Script,
    /// The version of the fleet document in the store, as last read (`None`: none there).
    fleet_tx: watch::Sender<Option<u64>>,
    /// The shared `ctl` revocations as last read (initially this replica's saved copy): what is
    /// saved in `state_dir` and re-seeded.
    revoked_tx: watch::Sender<Arc<BTreeSet<String>>>,
    /// This replica's signed registry: (version, revoked tools), -1 without one.
    registry: Mutex<(i64, String)>,
    /// What requests are judged by: the `ctl` revocations and those of the newest published
    /// registry.
    effective: Mutex<Arc<BTreeSet<String>>>,
    /// When the revocations were last read successfully (`None`: never).
    last_refresh: Mutex<Option<Instant>>,
    created: Instant,
    epoch: AtomicU64,
}

/// Handle on the Redis store. Dropping it stops its background task.
pub struct RedisStore {
    inner: Arc<Inner>,
    poller: JoinHandle<()>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Lengths make keys unambiguous whatever the tool id or jti contain (`a:b`+`c` vs `a`+`b:c`).
fn jti_key(prefix: &str, tool: &str, jti: &str) -> String {
    format!("{prefix}jti:{}:{tool}:{jti}", tool.len())
}

fn quota_key(prefix: &str, tool: &str, window: u64) -> String {
    format!("{prefix}quota:{}:{tool}:{window}", tool.len())
}

/// A box name is one DNS name: no separator can make two of them collide.
fn issued_key(prefix: &str, device: &str) -> String {
    format!("{prefix}issued:{device}")
}

fn address_key(prefix: &str, device: &str) -> String {
    format!("{prefix}addressed:{device}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> u64 {
    boxapi_core::time::unix_now()
}

/// Errors after which the current connection (or connection attempt) cannot get better by
/// itself: the manager reconnects only on I/O errors.
fn needs_new_manager(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(
            e.code(),
            Some("WRONGPASS" | "NOAUTH" | "LOADING" | "READONLY" | "MASTERDOWN")
        )
}

impl RedisStore {
    /// Builds the client and starts the revocation poller. Does not wait for Redis.
    pub fn connect(
        settings: &RedisConfig,
        password: Option<String>,
        revoked: BTreeSet<String>,
    ) -> Result<Self, StoreError> {
        let config = |m: String| StoreError::Config(m);
        let tls = settings.url.starts_with("rediss://");
        if tls {
            // The redis crate builds its rustls config from the process-wide provider; installing
            // ring explicitly keeps working if another dependency ever enables aws-lc-rs too.
            // Err = already installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| config(format!("url: {e}")))?;
        // No CLIENT SETINFO at each connection: one round trip less, and one command less for the
        // ACL user (Redis 7.0 does not know it).
        let mut redis_info = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(user) = &settings.username {
            redis_info = redis_info.set_username(user);
        }
        if let Some(pw) = &password {
            redis_info = redis_info.set_password(pw);
        }
        let info = info.set_redis_settings(redis_info);
        let client = match &settings.tls_ca_file {
            None => redis::Client::open(info),
            Some(path) => {
                let pem = boxapi_core::files::read_limited(path, boxapi_core::files::limit::PEM)
                    .map_err(|e| config(format!("tls_ca_file {}: {e}", path.display())))?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
        }
        .map_err(|e| config(e.to_string()))?;

        // One connection attempt per reconnection round, no backoff inside the manager: its
        // retries also retry authentication failures (a caller would only ever see a timeout, not
        // "wrong password"), and a Redis that is back would be noticed only after a backoff
        // sleep. Rounds are driven by our calls and by the poller instead.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(0);

        let effective = Mutex::new(Arc::new(revoked.clone()));
        let (revoked_tx, _) = watch::channel(Arc::new(revoked));
        let inner = Arc::new(Inner {
            client,
            manager_config,
            manager: tokio::sync::Mutex::new(None),
            last_reset: Mutex::new(None),
            prefix: settings.key_prefix.clone(),
            response_timeout: settings.response_timeout,
            admit: Script::new(ADMIT_LUA),
            issuance: Script::new(ISSUANCE_LUA),
            sync: Script::new(SYNC_LUA),
            fleet_publish: Script::new(FLEET_PUBLISH_LUA),
            fleet_tx: watch::channel(None).0,
            revoked_tx,
            registry: Mutex::new((-1, String::new())),
            effective,
            last_refresh: Mutex::new(None),
            created: Instant::now(),
            epoch: AtomicU64::new(0),
        });
        let poller = tokio::spawn(poll(Arc::downgrade(&inner), settings.revocation_poll));
        Ok(RedisStore { inner, poller })
    }

    /// One round trip: readiness checks and start-up logs.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let cmd = redis::cmd("PING");
        let _: Value = self.inner.query(&cmd).await?;
        Ok(())
    }

    pub async fn admit(
        &self,
        tool: &str,
        single: Option<Single<'_>>,
        limit_per_hour: u32,
        now: u64,
    ) -> Result<Admission, StoreError> {
        let window = hour_window(now);
        let prefix = &self.inner.prefix;
        let mut inv = self.inner.admit.key(quota_key(prefix, tool, window));
        inv.key(self.inner.key("epoch"));
        // 5 minutes past the window end: replicas whose clocks differ a little still share it.
        inv.arg(limit_per_hour).arg(window + HOUR + 300);
        match single {
            // An expiry in the past would make SET delete the key at once and let every replay
            // through: keep it at least a second ahead.
            Some(a) => inv
                .key(jti_key(prefix, tool, a.jti))
                .arg(1)
                .arg(a.valid_until.max(now + 1))
                .arg(a.made_at),
            None => inv.key(self.inner.key("jti:-")).arg(0).arg(0).arg(0),
        };
        for _ in 0..2 {
            let answer: i64 = self.inner.invoke(&inv).await?;
            return Ok(match answer {
                1 => Admission::Granted,
                0 => Admission::Replayed,
                -2 => Admission::PredatesStore,
                -3 => Admission::QuotaSpent(RetryAfterSecs(
                    (window + HOUR).saturating_sub(now).max(1),
                )),
                // Redis lost its data: set a new epoch (and re-seed revocations), then retry.
                -1 => {
                    self.inner.sync().await?;
                    continue;
                }
                other => {
                    return Err(StoreError::Protocol(format!(
                        "the admission script answered {other}"
                    )))
                }
            });
        }
        Err(StoreError::Protocol(
            "the epoch vanished twice in a row".into(),
        ))
    }

    pub async fn reserve_issuance(
        &self,
        device: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Issuance, StoreError> {
        let key = issued_key(&self.inner.prefix, device);
        self.reserve(key, "issued-seq", limit, window, now).await
    }

    /// The issuances' rolling-window script over the device's own set of address updates
    /// (`<prefix>addressed:<name>`).
    pub async fn count_address_update(
        &self,
        device: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Issuance, StoreError> {
        let key = address_key(&self.inner.prefix, device);
        self.reserve(key, "addressed-seq", limit, window, now).await
    }

    /// One more entry in the rolling-window set `key` (`ISSUANCE_LUA`), its ticket from the
    /// sequence `seq` (a ticket only makes each entry a distinct member).
    async fn reserve(
        &self,
        key: String,
        seq: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Issuance, StoreError> {
        let mut inv = self.inner.issuance.key(key);
        inv.key(self.inner.key(seq)).arg(now).arg(window).arg(limit);
        let (reserved, value): (i64, u64) = self.inner.invoke(&inv).await?;
        Ok(match reserved {
            1 => Issuance::Reserved(IssuanceTicket(value)),
            _ => Issuance::LimitReached(RetryAfterSecs(value.max(1))),
        })
    }

    /// The bound on one call (`response_timeout`, connection wait included).
    pub fn call_limit(&self) -> Duration {
        self.inner.response_timeout
    }

    pub async fn release_issuance(
        &self,
        device: &str,
        ticket: IssuanceTicket,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(issued_key(&self.inner.prefix, device))
            .arg(ticket.0);
        let _: i64 = self.inner.query(&cmd).await?;
        Ok(())
    }

    /// Adds or removes a tool in the shared set, then re-reads it so this replica's view changes
    /// at once (the others see it at their next poll). Synced first, so that a change made just
    /// after Redis lost its data is not undone by the re-seed.
    pub async fn set_revoked(&self, tool: &str, revoked: bool) -> Result<(), StoreError> {
        self.inner.sync().await?;
        let mut cmd = redis::cmd(if revoked { "SADD" } else { "SREM" });
        cmd.arg(self.inner.key("revoked")).arg(tool);
        let _: i64 = self.inner.query(&cmd).await?;
        self.inner.sync().await
    }

    /// The revocation set as last read, or `Stale` when it has not been read successfully for a
    /// second: the caller must then fail closed rather than miss a revocation.
    pub fn revoked(&self) -> Result<Arc<BTreeSet<String>>, StoreError> {
        let last = *lock(&self.inner.last_refresh);
        let age = last.map_or_else(|| self.inner.created.elapsed(), |t| t.elapsed());
        if last.is_none() || age > REVOCATIONS_STALE_AFTER {
            return Err(StoreError::Stale(age));
        }
        Ok(self.revoked_view())
    }

    /// The revocations as last read, however old (for CORS answers, status).
    pub fn revoked_view(&self) -> Arc<BTreeSet<String>> {
        lock(&self.inner.effective).clone()
    }

    /// Tells the store this replica's signed registry (at start and after each reload); the
    /// next read (within `revocation_poll`) publishes its revocations if it is the newest.
    pub fn note_registry(&self, version: Option<u64>, revoked: &[String]) {
        let version = version.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        *lock(&self.inner.registry) = (version, revoked.join(" "));
    }

    pub fn watch_revoked(&self) -> watch::Receiver<Arc<BTreeSet<String>>> {
        self.inner.revoked_tx.subscribe()
    }

    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.inner.sync().await
    }

    /// Offers a verified fleet document to every replica ([`FLEET_PUBLISH_LUA`]).
    pub async fn publish_fleet(
        &self,
        version: u64,
        jws: &[u8],
    ) -> Result<FleetPublish, StoreError> {
        let mut inv = self.inner.fleet_publish.key(self.inner.key("fleet"));
        inv.arg(version.to_string()).arg(jws);
        let (answer, held): (i64, String) = self.inner.invoke(&inv).await?;
        let held = held.parse().map_err(|_| {
            StoreError::Protocol(format!(
                "fleet version {held:?} in the store is not a number"
            ))
        })?;
        Ok(match answer {
            1 => {
                self.inner.fleet_tx.send_if_modified(|v| {
                    let newer = v.is_none_or(|v| v < held);
                    if newer {
                        *v = Some(held);
                    }
                    newer
                });
                FleetPublish::Published
            }
            0 => FleetPublish::Older(held),
            _ => FleetPublish::SameVersion,
        })
    }

    /// The fleet document in the store, as stored (the caller verifies it).
    pub async fn fleet_document(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.inner.key("fleet")).arg("jws");
        self.inner.query(&cmd).await
    }

    /// The version of the fleet document in the store, as read every `revocation_poll`.
    pub fn watch_fleet(&self) -> watch::Receiver<Option<u64>> {
        self.inner.fleet_tx.subscribe()
    }

    /// When the shared memory of used assertions began (unix seconds; 0 before the first read).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Relaxed)
    }

    /// `GET` of the first of `keys` (under `<prefix>locate:`) that is set, in one round trip.
    pub async fn locate(&self, keys: &[String]) -> Result<Option<String>, StoreError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.inner.key(&format!("locate:{k}")));
        }
        let found: Vec<Option<String>> = self.inner.query(&cmd).await?;
        Ok(found.into_iter().flatten().next())
    }
}

impl Inner {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn manager(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut slot = self.manager.lock().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m =
            ConnectionManager::new_with_config(self.client.clone(), self.manager_config.clone())
                .await?;
        *slot = Some(m.clone());
        Ok(m)
    }

    /// Drops the manager so the next call connects afresh (rate-limited).
    async fn reset(&self) {
        {
            let mut last = lock(&self.last_reset);
            if last.is_some_and(|t| t.elapsed() < MIN_RESET_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        *self.manager.lock().await = None;
    }

    /// Runs one operation under the response timeout. A connection refusal is retried once: it
    /// comes from a reconnection round that already failed (the command was never sent), and the
    /// retry awaits the round the manager has just started, so the first request after Redis
    /// comes back succeeds instead of failing on a stale error.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let mut retried = false;
            loop {
                let result = match self.manager().await {
                    Ok(con) => op(con).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(v) => return Ok(v),
                    Err(e) if !retried && e.is_connection_refusal() => retried = true,
                    Err(e) => {
                        if needs_new_manager(&e) {
                            self.reset().await;
                        }
                        return Err(StoreError::from_redis(e, self.response_timeout));
                    }
                }
            }
        };
        match tokio::time::timeout(self.response_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.response_timeout)),
        }
    }

    /// One command, under `call`'s timeout and reconnection rules.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.call(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// One script, under `call`'s timeout and reconnection rules.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// Reads the epoch and the revocations (re-seeding them if Redis lost its data).
    async fn sync(&self) -> Result<(), StoreError> {
        let mut inv = self.sync.key(self.key("epoch"));
        inv.key(self.key("revoked"))
            .key(self.key("registry"))
            .key(self.key("fleet"))
            .arg(unix_now());
        {
            let registry = lock(&self.registry);
            inv.arg(registry.0).arg(&registry.1);
        }
        for tool in self.revoked_tx.borrow().iter() {
            inv.arg(tool);
        }
        let (epoch, set, reset, registry, fleet): (u64, BTreeSet<String>, i64, String, String) =
            self.invoke(&inv).await?;
        // Not a number (written by hand?): as if none, which changes nothing on any replica.
        let fleet = fleet.parse().ok();
        self.fleet_tx.send_if_modified(|v| {
            let changed = *v != fleet;
            *v = fleet;
            changed
        });
        if reset == 1 {
            boxapi_core::log::event(
                "store_reset",
                &[
                    ("epoch", &epoch.to_string()),
                    ("revocations_reseeded", &set.len().to_string()),
                ],
            );
        }
        self.epoch.store(epoch, Ordering::Relaxed);
        let mut effective = set.clone();
        effective.extend(
            registry
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
        {
            let mut cur = lock(&self.effective);
            if **cur != effective {
                *cur = Arc::new(effective);
            }
        }
        *lock(&self.last_refresh) = Some(Instant::now());
        self.revoked_tx.send_if_modified(|cur| {
            if **cur == set {
                false
            } else {
                *cur = Arc::new(set);
                true
            }
        });
        Ok(())
    }
}

/// Polling rather than pub/sub: a read of a small set every 250 ms per replica is negligible load
/// for Redis, needs no subscription state to restore after a reconnection (a message published
/// while a replica was reconnecting would be lost and need a re-read anyway), and bounds
/// propagation by `revocation_poll` + one round trip. Ends when the store is dropped.
async fn poll(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        // Failures show as a stale view (`revoked()` → Stale) and in the callers' errors.
        let _ = inner.sync().await;
    }
}
