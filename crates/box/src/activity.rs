//! Per-tool activity, so that the subscriber can see which tools read the line's data and when
//! (CNIL API guidance: transparency towards the person concerned): first and last access and a
//! request count per tool. No address, no token, nothing per request.
//!
//! Recorded in memory on the request path (a lock and a map lookup); saved atomically in
//! `state_dir/activity.json` by a task, only when something changed (a box's state often sits on
//! flash) and at most once a minute: the first change after a quiet minute is saved at once, later
//! ones a minute after the previous save; once more on shutdown. A kill -9 or a power cut loses at
//! most the last minute. Bounded: one entry per registered tool (at most
//! [`MAX_TOOLS`]), dropped when the tool leaves the registry or has not been seen for
//! `server.activity_retention_days`.
//!
//! The file's lines have a fixed width (the count is padded with JSON whitespace), so its size
//! depends on the tools seen, never on how many requests they made.
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub const FILE: &str = "activity.json";
/// Far above any registry; bounds the map whatever happens.
pub const MAX_TOOLS: usize = 4096;
/// Saved at most this often.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);
/// An activity file of `MAX_TOOLS` entries is under 1 MiB; anything larger is not ours.
const MAX_BYTES: u64 = 1 << 20;

/// One tool's activity: Unix seconds and a request count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub first: i64,
    pub last: i64,
    pub requests: u64,
}

#[derive(Default)]
struct Inner {
    tools: BTreeMap<String, Entry>,
    /// Changed since the last save.
    dirty: bool,
}

#[derive(Default)]
pub struct Activity {
    inner: Mutex<Inner>,
    /// Woken when there is something new to save.
    changed: tokio::sync::Notify,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    /// Not a regular file, larger than 1 MiB, or unreadable.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: boxapi_core::files::ReadError,
    },
    #[error("{}: not a boxapi activity file: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
    #[error(transparent)]
    Write(#[from] boxapi_core::files::FileError),
}

/// RFC 3339 in a fixed width (20 bytes) for any instant a box can see.
fn date(secs: i64) -> String {
    boxapi_core::time::rfc3339(secs.clamp(0, 253_402_300_799))
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One request answered with data for this tool, at `now` (Unix seconds).
    pub fn record(&self, tool: &str, now: i64) {
        let mut inner = self.lock();
        if let Some(e) = inner.tools.get_mut(tool) {
            e.last = e.last.max(now);
            e.requests = e.requests.saturating_add(1);
        } else if inner.tools.len() < MAX_TOOLS {
            let e = Entry {
                first: now,
                last: now,
                requests: 1,
            };
            inner.tools.insert(tool.to_owned(), e);
        } else {
            return;
        }
        if !inner.dirty {
            inner.dirty = true;
            self.changed.notify_one();
        }
    }

    /// Resolves once something changed since the last save (immediately if a change came while
    /// nobody was waiting).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn get(&self, tool: &str) -> Option<Entry> {
        self.lock().tools.get(tool).copied()
    }

    /// Drops the entries of tools no longer registered and of tools not seen for `retention`.
    pub fn prune(&self, registered: &HashSet<&str>, retention: Duration, now: i64) {
        let oldest = now.saturating_sub(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX));
        let mut inner = self.lock();
        let before = inner.tools.len();
        inner
            .tools
            .retain(|id, e| registered.contains(id.as_str()) && e.last >= oldest);
        if inner.tools.len() != before {
            inner.dirty = true;
        }
    }

    /// The file's content if something changed since the last call (which then counts as saved;
    /// [`Activity::mark_dirty`] undoes that when the write fails).
    pub fn take_changes(&self) -> Option<Vec<u8>> {
        let mut inner = self.lock();
        if !inner.dirty {
            return None;
        }
        inner.dirty = false;
        Some(serialize(&inner.tools))
    }

    pub fn mark_dirty(&self) {
        self.lock().dirty = true;
    }

    /// Reads `dir/activity.json`; a missing file is no activity yet.
    pub fn load(dir: &Path) -> Result<Activity, ActivityError> {
        let path = dir.join(FILE);
        let bytes = match boxapi_core::files::read_limited(&path, MAX_BYTES) {
            Err(e) if e.is_not_found() => return Ok(Activity::default()),
            Err(source) => return Err(ActivityError::Read { path, source }),
            Ok(b) => b,
        };
        let tools = parse(&bytes).map_err(|why| ActivityError::Invalid { path, why })?;
        Ok(Activity {
            inner: Mutex::new(Inner {
                tools,
                dirty: false,
            }),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Loads the activity at start; an unreadable file is kept aside (logged) and activity
    /// starts empty: it is a record for the subscriber, never a reason not to start.
    pub fn load_or_empty(dir: &Path) -> Activity {
        match Activity::load(dir) {
            Ok(a) => a,
            Err(e) => {
                let kept = dir.join(format!("{FILE}.broken-{}", boxapi_core::time::unix_now()));
                let _ = std::fs::rename(dir.join(FILE), &kept);
                boxapi_core::log::event(
                    "activity_replaced",
                    &[
                        ("error", &e.to_string()),
                        ("kept", &kept.display().to_string()),
                    ],
                );
                Activity::default()
            }
        }
    }
}

/// Writes the file (blocking: fsync); called off the request path.
pub fn save(dir: &Path, content: &[u8]) -> Result<(), ActivityError> {
    boxapi_core::files::write_atomic(&dir.join(FILE), content, 0o600)?;
    Ok(())
}

fn serialize(tools: &BTreeMap<String, Entry>) -> Vec<u8> {
    let mut out = String::from("{\"version\":1,\"tools\":[\n");
    for (i, (id, e)) in tools.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        // Tool ids are [A-Za-z0-9._-] (both registries check it); serde_json escapes anyway.
        let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
        // The count right-aligned in the 20 digits of u64::MAX: JSON allows the padding.
        out.push_str(&format!(
            "{{\"id\":{id},\"first_access\":\"{}\",\"last_access\":\"{}\",\"requests\":{:>20}}}",
            date(e.first),
            date(e.last),
            e.requests
        ));
    }
    out.push_str("\n]}\n");
    out.into_bytes()
}

fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Entry>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let items = v
        .get("tools")
        .and_then(Value::as_array)
        .ok_or("\"tools\" must be an array")?;
    let mut tools = BTreeMap::new();
    for item in items.iter().take(MAX_TOOLS) {
        let field = |k: &str| item.get(k).ok_or(format!("an entry lacks {k:?}"));
        let time = |k: &str| -> Result<i64, String> {
            field(k)?
                .as_str()
                .and_then(boxapi_core::time::parse_rfc3339)
                .ok_or(format!("{k:?} must be an RFC 3339 date-time"))
        };
        let id = field("id")?.as_str().ok_or("\"id\" must be a string")?;
        let entry = Entry {
            first: time("first_access")?,
            last: time("last_access")?,
            requests: field("requests")?
                .as_u64()
                .ok_or("\"requests\" must be a count")?,
        };
        tools.insert(id.to_owned(), entry);
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_bounded_and_round_trips() {
        let a = Activity::default();
        assert_eq!(a.take_changes(), None);
        a.record("t", 1_800_000_000);
        a.record("t", 1_800_000_060);
        a.record("u", 1_800_000_030);
        assert_eq!(
            a.get("t"),
            Some(Entry {
                first: 1_800_000_000,
                last: 1_800_000_060,
                requests: 2
            })
        );
        let bytes = a.take_changes().unwrap();
        assert_eq!(a.take_changes(), None, "saved: nothing new");
        let back = parse(&bytes).unwrap();
        assert_eq!(back.get("t"), a.get("t").as_ref());
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn the_file_size_does_not_depend_on_the_counts() {
        let a = Activity::default();
        a.record("t", 1_800_000_000);
        let one = a.take_changes().unwrap().len();
        for i in 0..10_000 {
            a.record("t", 1_800_000_000 + i);
        }
        a.get("t").unwrap();
        let many = a.take_changes().unwrap();
        assert_eq!(many.len(), one);
        let mut huge = BTreeMap::new();
        huge.insert(
            "t".to_owned(),
            Entry {
                first: 0,
                last: i64::MAX,
                requests: u64::MAX,
            },
        );
        assert_eq!(serialize(&huge).len(), one);
    }

    #[test]
    fn prune_follows_registry_and_retention() {
        let a = Activity::default();
        let day = 86_400;
        a.record("old", 0);
        a.record("kept", 100 * day);
        a.record("gone", 100 * day);
        let _ = a.take_changes();
        let registered: HashSet<&str> = ["old", "kept"].into_iter().collect();
        a.prune(&registered, Duration::from_secs(30 * day as u64), 120 * day);
        assert!(a.get("old").is_none() && a.get("gone").is_none());
        assert!(a.get("kept").is_some());
        assert!(a.take_changes().is_some(), "pruning is a change to save");
        for i in 0..MAX_TOOLS + 10 {
            a.record(&format!("t{i}"), 0);
        }
        assert_eq!(a.lock().tools.len(), MAX_TOOLS);
    }

    #[test]
    fn refuses_what_is_not_an_activity_file() {
        for bad in [
            &b"[]"[..],
            br#"{"tools": [{"id": "t"}]}"#,
            br#"{"tools": [{"id": "t", "first_access": "x", "last_access": "x", "requests": 1}]}"#,
            b"\xff",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Issue 21: a damaged activity file never stops a start. It is kept aside whole under
    /// `activity.json.broken-<time>`, the activity starts empty, and the next save writes a good
    /// file atomically (no staging file left beside it).
    #[test]
    fn a_damaged_file_is_kept_aside_and_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("boxapi-activity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = Activity::default();
        a.record("t", 1_800_000_000);
        let good = a.take_changes().unwrap();
        let damaged = &good[..good.len() / 2];
        std::fs::write(dir.join(FILE), damaged).unwrap();
        let loaded = Activity::load_or_empty(&dir);
        assert_eq!(loaded.get("t"), None);
        let names = || -> Vec<String> {
            let mut n: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        let kept = names();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].starts_with("activity.json.broken-"), "{kept:?}");
        assert_eq!(std::fs::read(dir.join(&kept[0])).unwrap(), damaged);
        save(&dir, &good).unwrap();
        assert_eq!(names().len(), 2, "{:?}", names());
        assert_eq!(Activity::load(&dir).unwrap().get("t"), a.get("t"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
