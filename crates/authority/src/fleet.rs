//! The signed fleet document as the authority holds and serves it (issue 23): published with
//! `ctl publish-fleet FILE`, shared by replicas through the Redis store, kept in `state_dir`,
//! answered to boxes at `GET /v1/fleet`.
use crate::snapshot::Snapshot;
use boxapi_core::auth::fleet;
use boxapi_core::auth::jwk::PublicJwk;
use boxapi_core::auth::signed::SignedError;
use boxapi_core::files;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub const PATH: &str = "/v1/fleet";
/// The document in force, in `state_dir`: a restart serves it before anything is published.
pub const FILE: &str = "fleet.jws";
/// The media type of a compact JWS (RFC 7515 §9.2.1).
pub const CONTENT_TYPE: &str = "application/jose";

/// A verified document, as served.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    pub version: u64,
    /// The compact JWS, exactly as the operator signed it: the authority can forge nothing.
    pub jws: Bytes,
}

impl Published {
    /// The `ETag`: the version, which names one document only (publishing another document of
    /// the same version is refused).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// Whether an `If-None-Match` value names this document (RFC 9110 §13.1.2: weak comparison,
    /// a list, or `*`).
    pub fn matches(&self, if_none_match: &[u8]) -> bool {
        let etag = self.etag();
        if_none_match.split(|b| *b == b',').any(|tag| {
            let tag = tag.trim_ascii();
            let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
            tag == b"*" || tag == etag.as_bytes()
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("no [registry] root_key is configured: a fleet document is verified with the registry's root key")]
    NoRootKey,
    #[error("[registry] root_key: {0}")]
    RootKey(String),
    #[error("{0}: {1}")]
    File(PathBuf, String),
    #[error("{0}")]
    Signed(#[from] SignedError),
    #[error("version {got} is older than the published version {have}: rollback refused")]
    Rollback { have: u64, got: u64 },
    #[error(
        "version {0} is published already with other content: a new document needs a new version"
    )]
    SameVersion(u64),
    #[error("the shared store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}: {1}")]
    Save(PathBuf, String),
}

/// Boxes this replica remembers for [`Seen`]: 40 bytes each at most, so about 160 MB; far more
/// than one replica of a fleet of millions sees in a window. Past it, a box not seen yet is not
/// counted until older ones leave the window.
pub const MAX_SEEN: usize = 4_000_000;
/// A full table is swept of boxes out of the window at most this often: a sweep of 4 million
/// entries under the lock takes tens of milliseconds, and made on every poll of a box not yet
/// counted it would stall every poll of a replica seeing more boxes than it counts.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Which version each box fetched last, for the boxes seen within the window: how many boxes
/// have a version. A box is its device name's hash (64 bits: collisions are negligible at fleet
/// sizes), so memory does not grow with the names' length.
pub struct Seen {
    hasher: RandomState,
    boxes: Mutex<Table>,
    /// How many boxes it counts at most ([`MAX_SEEN`]; fewer in tests).
    cap: usize,
}

#[derive(Default)]
struct Table {
    boxes: HashMap<u64, (u64, Instant)>,
    /// Boxes per version in `boxes`, kept as they change: a count reads this, not the table.
    versions: BTreeMap<u64, u64>,
    /// When boxes out of the window were last removed.
    swept: Option<Instant>,
}

impl Table {
    /// Sweeps if the last sweep is [`SWEEP_EVERY`] old (or none was made).
    fn sweep_due(&mut self, now: Instant, window: Duration) {
        let due = self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
        if !due {
            return;
        }
        let versions = &mut self.versions;
        self.boxes.retain(|_, (version, at)| {
            let keep = now.duration_since(*at) < window;
            if !keep {
                uncount(versions, *version);
            }
            keep
        });
        self.swept = Some(now);
    }

    fn insert(&mut self, key: u64, version: u64, now: Instant) {
        if let Some((old, _)) = self.boxes.insert(key, (version, now)) {
            uncount(&mut self.versions, old);
        }
        *self.versions.entry(version).or_insert(0) += 1;
    }
}

fn uncount(versions: &mut BTreeMap<u64, u64>, version: u64) {
    if let Some(n) = versions.get_mut(&version) {
        *n -= 1;
        if *n == 0 {
            versions.remove(&version);
        }
    }
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            hasher: RandomState::new(),
            boxes: Mutex::default(),
            cap: MAX_SEEN,
        }
    }
}

impl Seen {
    /// `device` fetched (200) or confirmed (304) `version` at `now`.
    pub fn note(&self, device: &str, version: u64, now: Instant, window: Duration) {
        let key = self.hasher.hash_one(device);
        let mut table = self.boxes.lock().unwrap_or_else(|e| e.into_inner());
        if table.boxes.len() >= self.cap && !table.boxes.contains_key(&key) {
            table.sweep_due(now, window);
            if table.boxes.len() >= self.cap {
                return;
            }
        }
        table.insert(key, version, now);
    }

    /// Boxes per version among those seen within `window` of `now` (the others are forgotten),
    /// or up to [`SWEEP_EVERY`] more: a count (a metrics scrape, `ctl status`) sweeps the table
    /// at most as often as polls do, so scrapes cannot stall polls.
    pub fn counts(&self, now: Instant, window: Duration) -> BTreeMap<u64, u64> {
        let mut table = self.boxes.lock().unwrap_or_else(|e| e.into_inner());
        table.sweep_due(now, window);
        table.versions.clone()
    }
}

/// The document this authority serves, if one was published, and who fetched which.
#[derive(Default)]
pub struct Fleet {
    current: RwLock<Option<Arc<Published>>>,
    /// Held by [`Fleet::install`]: one check-and-write at a time.
    installing: Mutex<()>,
    pub seen: Seen,
}

impl Fleet {
    pub fn current(&self) -> Option<Arc<Published>> {
        // A poisoned lock still holds a verified document: a panic elsewhere must not stop it.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, p: Arc<Published>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    /// At start: the document kept in `state_dir`, verified again (the root key may have
    /// changed). One that no longer verifies is not served and is said in the log: boxes keep
    /// what they have until the operator publishes again.
    pub fn load(&self, snap: &Snapshot) {
        let path = state_file(snap);
        if !path.exists() {
            return;
        }
        let read = files::read_limited(&path, files::limit::REGISTRY)
            .map_err(|e| FleetError::File(path.clone(), e.to_string()));
        match read.and_then(|jws| verified(snap, &jws)) {
            Ok(p) => self.set(Arc::new(p)),
            Err(e) => {
                boxapi_core::log::event("fleet_document_refused", &[("error", &e.to_string())])
            }
        }
    }

    /// `ctl publish-fleet FILE`, first step: the document at `file`, verified with the
    /// registry's root key, unless it is older than the document in force or another of the same
    /// version. `None`: the same document is in force already.
    pub fn prepare(&self, snap: &Snapshot, file: &Path) -> Result<Option<Published>, FleetError> {
        let jws = files::read_limited(file, files::limit::REGISTRY)
            .map_err(|e| FleetError::File(file.to_owned(), e.to_string()))?;
        let new = verified(snap, &jws)?;
        self.newer(new)
    }

    fn newer(&self, new: Published) -> Result<Option<Published>, FleetError> {
        let Some(have) = self.current() else {
            return Ok(Some(new));
        };
        if new.version < have.version {
            return Err(FleetError::Rollback {
                have: have.version,
                got: new.version,
            });
        }
        if new.version == have.version {
            return if new.jws == have.jws {
                Ok(None)
            } else {
                Err(FleetError::SameVersion(new.version))
            };
        }
        Ok(Some(new))
    }

    /// Last step: checked again against the document in force, as one step with the write (a
    /// publish and a document from the store may arrive at once: the older must not win), keeps
    /// the document in `state_dir` (a failed write serves nothing new), then serves it.
    /// `None`: the same document is in force already.
    pub fn install(&self, state_dir: &Path, new: Published) -> Result<Option<u64>, FleetError> {
        let _one = self.installing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(new) = self.newer(new)? else {
            return Ok(None);
        };
        let path = state_dir.join(FILE);
        files::write_atomic(&path, &new.jws, 0o600)
            .map_err(|e| FleetError::Save(path, e.to_string()))?;
        let version = new.version;
        self.set(Arc::new(new));
        Ok(Some(version))
    }

    /// A document another replica published in the shared store: verified here too (the store
    /// is not trusted to forge nothing), installed when newer. `None`: not newer.
    pub fn adopt(&self, snap: &Snapshot, jws: &[u8]) -> Result<Option<u64>, FleetError> {
        let new = verified(snap, jws)?;
        match self.install(&snap.config.common.server.state_dir, new) {
            Err(FleetError::Rollback { .. }) => Ok(None),
            other => other,
        }
    }
}

fn state_file(snap: &Snapshot) -> PathBuf {
    snap.config.common.server.state_dir.join(FILE)
}

fn root_key(snap: &Snapshot) -> Result<PublicJwk, FleetError> {
    let rc = snap
        .config
        .common
        .registry
        .as_ref()
        .ok_or(FleetError::NoRootKey)?;
    let mut problems = Vec::new();
    let keys = boxapi_core::trust::load_keys(&rc.root_key, "registry.root_key", &mut problems);
    match (keys.into_iter().next(), problems.first()) {
        (Some(k), None) => Ok(k),
        (_, Some(p)) => Err(FleetError::RootKey(p.to_string())),
        (None, None) => Err(FleetError::RootKey("no key in the file".into())),
    }
}

fn verified(snap: &Snapshot, jws: &[u8]) -> Result<Published, FleetError> {
    let root = root_key(snap)?;
    let jws = Bytes::from(jws.trim_ascii().to_vec());
    let doc = fleet::verify(&root, &jws)?;
    Ok(Published {
        version: doc.version(),
        jws,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(version: u64, jws: &'static str) -> Published {
        Published {
            version,
            jws: Bytes::from_static(jws.as_bytes()),
        }
    }

    /// The check is made again with the write: an older document arriving second (a publish
    /// checked before a newer one came from the store) never replaces the newer.
    #[test]
    fn install_never_goes_back() {
        let dir = std::env::temp_dir().join(format!("boxapi-fleet-install-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fleet = Fleet::default();
        assert_eq!(fleet.install(&dir, published(3, "c")).unwrap(), Some(3));
        assert!(matches!(
            fleet.install(&dir, published(2, "b")),
            Err(FleetError::Rollback { have: 3, got: 2 })
        ));
        assert!(matches!(
            fleet.install(&dir, published(3, "x")),
            Err(FleetError::SameVersion(3))
        ));
        assert_eq!(fleet.install(&dir, published(3, "c")).unwrap(), None);
        assert_eq!(fleet.current().unwrap().version, 3);
        assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), b"c");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn boxes_count_once_for_their_last_version_within_the_window() {
        let seen = Seen::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(300);
        let at = |s| t0 + Duration::from_secs(s);
        seen.note("a.box.test", 1, at(0), w);
        seen.note("b.box.test", 1, at(10), w);
        seen.note("a.box.test", 1, at(20), w);
        assert_eq!(seen.counts(at(30), w), BTreeMap::from([(1, 2)]));
        // a fetches version 2: counted there only.
        seen.note("a.box.test", 2, at(40), w);
        assert_eq!(seen.counts(at(50), w), BTreeMap::from([(1, 1), (2, 1)]));
        // b is not seen again within the window: forgotten.
        assert_eq!(seen.counts(at(320), w), BTreeMap::from([(2, 1)]));
        assert_eq!(seen.counts(at(341), w), BTreeMap::new());
    }

    /// A full table is swept at most once a second: before, every poll of a box not yet counted
    /// swept it, tens of milliseconds under the lock with 4 million boxes, stalling every poll.
    /// Between sweeps a new box goes uncounted, even when older ones have left the window.
    #[test]
    fn a_full_table_is_swept_at_most_once_a_second() {
        let seen = Seen {
            cap: 2,
            ..Seen::default()
        };
        let t0 = Instant::now();
        let w = Duration::from_millis(500);
        let at = |ms| t0 + Duration::from_millis(ms);
        seen.note("a", 1, at(0), w);
        seen.note("b", 1, at(0), w);
        // Full; a and b have left the window: swept, c counted.
        seen.note("c", 1, at(600), w);
        seen.note("d", 1, at(650), w);
        // Full again; c has left the window, but the last sweep was 600 ms ago: e waits, and a
        // count does not sweep either (c still counted).
        seen.note("e", 1, at(1200), w);
        seen.note("d", 2, at(1200), w);
        assert_eq!(seen.counts(at(1300), w), BTreeMap::from([(1, 1), (2, 1)]));
        seen.note("f", 1, at(1350), w);
        // A second after the last sweep, a new box is counted again.
        seen.note("g", 1, at(2400), w);
        assert_eq!(seen.counts(at(2400), w), BTreeMap::from([(1, 1)]));
    }

    /// A count (every metrics scrape) sweeps at most once a second too: a sweep of 4 million
    /// boxes under the lock on every scrape stalled every poll meanwhile.
    #[test]
    fn counts_sweep_at_most_once_a_second() {
        let seen = Seen::default();
        let t0 = Instant::now();
        let w = Duration::from_millis(500);
        let at = |ms| t0 + Duration::from_millis(ms);
        let swept = || seen.boxes.lock().unwrap().swept;
        seen.note("a", 1, at(0), w);
        assert_eq!(seen.counts(at(0), w), BTreeMap::from([(1, 1)]));
        seen.note("b", 2, at(700), w);
        seen.note("c", 2, at(700), w);
        // a has left the window, but the last sweep was 800 ms ago: nothing is swept.
        assert_eq!(seen.counts(at(800), w), BTreeMap::from([(1, 1), (2, 2)]));
        assert_eq!(swept(), Some(at(0)));
        // b fetches version 3: counted there only, without a sweep.
        seen.note("b", 3, at(900), w);
        assert_eq!(
            seen.counts(at(900), w),
            BTreeMap::from([(1, 1), (2, 1), (3, 1)])
        );
        // A second after the last sweep: a is forgotten.
        assert_eq!(seen.counts(at(1000), w), BTreeMap::from([(2, 1), (3, 1)]));
        assert_eq!(swept(), Some(at(1000)));
    }

    #[test]
    fn if_none_match() {
        let p = Published {
            version: 12,
            jws: Bytes::from_static(b"x"),
        };
        assert_eq!(p.etag(), "\"12\"");
        for yes in [
            &b"\"12\""[..],
            b"W/\"12\"",
            b"\"3\", \"12\"",
            b"*",
            b" \"12\" ",
        ] {
            assert!(p.matches(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [&b"\"1\""[..], b"12", b"\"120\"", b"", b"\"12"] {
            assert!(!p.matches(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
