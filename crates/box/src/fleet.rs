//! The fleet document (issue 23) on the box: what it applied and its restriction, read by every
//! request; `fleet_poll` fetches it.
use boxapi_core::auth::fleet::Restriction;
use boxapi_core::log;
use boxapi_core::trust::Trust;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// What `ctl status` lists in `warnings` while a kept copy of the applied document is damaged.
pub const DAMAGED_WARNING: &str = "fleet_document_damaged";

/// The fleet document's standing on this box.
#[derive(Default)]
pub struct Fleet {
    /// The `Retry-After` of the restriction in force on this box, 0 when none: read by every
    /// request. 32 bits: MIPS32 boxes have no 64-bit atomics, and a `Retry-After` is at most a
    /// day.
    suspended: AtomicU32,
    state: Mutex<State>,
}

/// What the box holds of the fleet document and how its fetching goes (`ctl status`).
#[derive(Clone, Default)]
pub struct State {
    /// The version applied (kept in `state_dir`).
    pub version: Option<u64>,
    /// Its restriction, as signed (for the boxes it names).
    pub restriction: Option<Restriction>,
    /// Why a kept copy could not be read: with no version at all, the box is suspended.
    pub damage: Option<String>,
    /// The card's `box.firmware_version` and `box.model` as last read (`None`: not yet, and a
    /// restriction limited to some firmware or models holds, failing closed).
    pub(crate) facts: Option<(Option<String>, Option<String>)>,
    /// Unix seconds of the last answer from the authority, and the last failure since.
    pub last_fetch: Option<i64>,
    pub last_error: Option<String>,
    pub(crate) failures: u32,
}

impl Fleet {
    /// The `Retry-After` of the fleet restriction in force on this box, if one is.
    pub fn suspended(&self) -> Option<u64> {
        Some(u64::from(self.suspended.load(Ordering::Relaxed))).filter(|&r| r > 0)
    }

    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the state and puts in force what it now says, logging a change.
    pub(crate) fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        let (firmware, model) = s.facts.clone().unwrap_or_default();
        let retry = match &s.restriction {
            Some(r) if r.suspends(firmware.as_deref(), model.as_deref()) => r.retry_after,
            // Every copy damaged: what the box applied is unknown, and a restriction may be
            // among it.
            None if s.version.is_none() && s.damage.is_some() => {
                boxapi_core::control::SUSPEND_RETRY_AFTER_DEFAULT
            }
            _ => 0,
        };
        let retry = u32::try_from(retry).unwrap_or(u32::MAX);
        if self.suspended.swap(retry, Ordering::Relaxed) != retry {
            let version = s.version.map_or_else(String::new, |v| v.to_string());
            let reason = s.restriction.as_ref().and_then(|r| r.reason.as_deref());
            let state = if retry > 0 { "suspended" } else { "lifted" };
            log::event(
                "fleet_restriction",
                &[
                    ("state", state),
                    ("version", &version),
                    ("reason", reason.unwrap_or("")),
                ],
            );
        }
    }

    /// Takes up the document a snapshot's trust read from `state_dir` (at start and at each
    /// reload), unless the box already applied a newer one.
    pub fn adopt(&self, trust: &Trust) {
        self.update(|s| {
            let kept = trust.fleet.clone();
            if kept.as_ref().map(|k| k.0) >= s.version {
                (s.version, s.restriction) = kept.map_or((None, None), |(v, r)| (Some(v), r));
            }
            s.damage.clone_from(&trust.fleet_damage);
        });
    }
}
