//! The persisted control state (`state_dir/state.json` and its previous good version beside it),
//! each replaced atomically; a damaged file fails closed (contract §7): never loosens what it held.
use super::{Mode, State, Withheld};
use crate::kept::{Copy, Kept};
use serde_json::{json, Value};
use std::io;
use std::path::{Path, PathBuf};

pub const FILE: &str = "state.json";
/// The previous good version ([`Kept`]), written whole before [`FILE`] is replaced: a power cut
/// between the two writes leaves two good files, each with every acknowledged change, and a
/// damaged [`FILE`] takes its revocations and withholdings from this one.
pub const PREV: &str = "state.json.prev";
/// A state file is a few hundred bytes; anything far larger is not ours.
const MAX_BYTES: u64 = 1 << 20;
/// What `ctl status` lists in `warnings` while the state is [`State::damaged`].
pub const DAMAGED_WARNING: &str = "state_damaged";

pub fn to_json(s: &State) -> Value {
    let (mode, retry) = match s.mode {
        Mode::Enabled => ("enabled", None),
        Mode::Disabled => ("disabled", None),
        Mode::Suspended { retry_after } => ("suspended", Some(retry_after)),
    };
    json!({ "version": 1, "state": mode, "retry_after": retry, "revoked": s.revoked,
            "withheld": s.withheld.to_json(), "damaged": s.damaged })
}

pub fn from_json(v: &Value) -> Option<State> {
    let mode = match v.get("state")?.as_str()? {
        "enabled" => Mode::Enabled,
        "disabled" => Mode::Disabled,
        "suspended" => Mode::Suspended {
            retry_after: v.get("retry_after")?.as_u64()?,
        },
        _ => return None,
    };
    let revoked = v
        .get("revoked")?
        .as_array()?
        .iter()
        .map(|t| t.as_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    // Absent in files written before the subscriber could withhold anything.
    let withheld = match v.get("withheld") {
        None => Withheld::default(),
        Some(w) => Withheld::from_json(w)?,
    };
    // Absent in files written before damage was recorded.
    let damaged = match v.get("damaged") {
        None => false,
        Some(d) => d.as_bool()?,
    };
    Some(State {
        mode,
        revoked,
        withheld,
        damaged,
    })
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No state yet (first start): enabled by default.
    Fresh(State),
    Read(State),
    /// [`FILE`] is damaged: the state is disabled and marked damaged, with the revocations and
    /// withholdings of [`PREV`] when that one is good (`from_prev`). The damaged file was kept
    /// at `kept` (when there was one to keep).
    Damaged {
        state: State,
        kept: Option<PathBuf>,
        why: String,
        from_prev: bool,
    },
}

/// The state file and its previous good version.
fn copies(dir: &Path) -> Kept {
    Kept::new(dir, FILE, MAX_BYTES)
}

fn parse(b: &[u8]) -> Result<State, String> {
    match serde_json::from_slice::<Value>(b) {
        Ok(v) => from_json(&v).ok_or_else(|| "not a boxapi state object".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// Reads the state; never fails, but reports what it had to do. Only reads, except that a
/// damaged [`FILE`] gets a second name (`state.json.broken-<time>`) so that it is kept.
pub fn load(dir: &Path) -> Loaded {
    let files = copies(dir);
    let (file, prev) = files.read(parse);
    let why = match file {
        Copy::Good(s) => return Loaded::Read(s),
        Copy::Missing => match prev {
            Copy::Missing => return Loaded::Fresh(State::default()),
            // Only a cut during the very first save leaves this: the change in flight, which
            // loosens nothing the box had acknowledged.
            Copy::Good(s) => return Loaded::Read(s),
            Copy::Damaged(ref why) => format!("missing, and {PREV} is damaged: {why}"),
        },
        Copy::Damaged(why) => why,
    };
    let kept = files.keep_aside();
    let (state, from_prev) = match prev {
        Copy::Good(p) => (
            State {
                mode: Mode::Disabled,
                damaged: true,
                ..p
            },
            true,
        ),
        _ => (
            State {
                mode: Mode::Disabled,
                damaged: true,
                ..State::default()
            },
            false,
        ),
    };
    Loaded::Damaged {
        state,
        kept,
        why,
        from_prev,
    }
}

/// Atomically replaces the state file, its previous good version first (see [`PREV`]).
pub fn save(dir: &Path, s: &State) -> io::Result<()> {
    copies(dir)
        .save(text(s).as_bytes(), 0o600)
        .map_err(|e| e.source)
}

fn text(s: &State) -> String {
    let mut text = to_json(s).to_string();
    text.push('\n');
    text
}

/// Persists `new` first, then applies it to `control`: a failed write changes nothing, and a
/// change acknowledged survives a power cut (contract §7). Enabling clears [`State::damaged`]
/// (the contract's "until the next `ctl enable`"). `Err`: the reply's message (logged).
pub fn change(control: &super::Control, dir: &Path, new: &State) -> Result<(), String> {
    let mut new = new.clone();
    if new.mode == Mode::Enabled {
        new.damaged = false;
    }
    if let Err(e) = save(dir, &new) {
        crate::log::event("state_error", &[("error", &e.to_string())]);
        return Err(format!(
            "cannot save the state in {}: {e}; nothing changed",
            dir.display()
        ));
    }
    let mode = to_json(&new);
    control.update(|s| *s = new);
    crate::log::event("state", &[("state", mode["state"].as_str().unwrap_or(""))]);
    Ok(())
}

/// The state at start: the saved one, or the default when there is none. A damaged file is kept
/// aside (logged) and the state it leaves is written over it, but not over [`PREV`], which stays
/// the last good version until the next change.
pub fn load_at_start(dir: &Path) -> State {
    match load(dir) {
        Loaded::Fresh(s) | Loaded::Read(s) => s,
        Loaded::Damaged {
            state,
            kept,
            why,
            from_prev,
        } => {
            let kept = kept.map(|k| k.display().to_string()).unwrap_or_default();
            let using = if from_prev {
                "disabled, revocations and withholdings of the previous version"
            } else {
                "disabled, no previous version"
            };
            crate::log::event(
                DAMAGED_WARNING,
                &[("error", &why), ("kept", &kept), ("using", using)],
            );
            if let Err(e) = copies(dir).save_file_only(text(&state).as_bytes(), 0o600) {
                crate::log::event("state_error", &[("error", &e.source.to_string())]);
            }
            state
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("boxapi-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_and_defaults() {
        let d = dir("rt");
        assert!(matches!(load(&d), Loaded::Fresh(s) if s.mode == Mode::Enabled));
        let mut s = State {
            mode: Mode::Suspended { retry_after: 120 },
            ..State::default()
        };
        s.revoked.insert("nperf".into());
        s.withheld
            .set(super::super::Section::Wifi, Some("nperf"), false)
            .unwrap();
        save(&d, &s).unwrap();
        assert!(matches!(load(&d), Loaded::Read(r) if r == s));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reads_files_from_before_withholding() {
        let v: Value = serde_json::from_str(
            r#"{"version":1,"state":"disabled","retry_after":null,"revoked":["a"]}"#,
        )
        .unwrap();
        let s = from_json(&v).unwrap();
        assert_eq!(s.mode, Mode::Disabled);
        assert_eq!(s.withheld, Withheld::default());
    }

    /// A state with something to lose: a revocation and a withholding.
    fn held() -> State {
        let mut s = State {
            mode: Mode::Disabled,
            ..State::default()
        };
        s.revoked.insert("nperf".into());
        s.withheld
            .set(super::super::Section::Wifi, None, false)
            .unwrap();
        s
    }

    fn assert_closed(loaded: Loaded, from: &State, with_prev: bool) {
        match loaded {
            Loaded::Damaged {
                state, from_prev, ..
            } => {
                assert_eq!(state.mode, Mode::Disabled);
                assert!(state.damaged);
                assert_eq!(from_prev, with_prev);
                assert_eq!(state.revoked, from.revoked);
                assert_eq!(state.withheld, from.withheld);
            }
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    #[test]
    fn save_keeps_the_previous_version_and_a_good_file_is_used() {
        let d = dir("prev");
        save(&d, &held()).unwrap();
        assert_eq!(
            fs::read(d.join(PREV)).unwrap(),
            fs::read(d.join(FILE)).unwrap()
        );
        assert!(matches!(load(&d), Loaded::Read(r) if r == held()));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_file_fails_closed_with_the_previous_version() {
        for (name, bytes) in [
            ("truncated", &b"{\"version\":1,\"state\": \"disab"[..]),
            ("empty", b""),
            ("not-json", b"\x00\xff garbage"),
            (
                "wrong-shape",
                b"{\"version\":1,\"state\":\"enabled\",\"revoked\":7}",
            ),
        ] {
            let d = dir(&format!("damaged-{name}"));
            save(&d, &held()).unwrap();
            fs::write(d.join(FILE), bytes).unwrap();
            let loaded = load(&d);
            if let Loaded::Damaged { kept: Some(k), .. } = &loaded {
                assert_eq!(fs::read(k).unwrap(), bytes, "{name}: damaged file kept");
            } else {
                panic!("{name}: nothing kept: {loaded:?}");
            }
            assert_closed(loaded, &held(), true);
            fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn unreadable_file_fails_closed() {
        let d = dir("unreadable");
        save(&d, &held()).unwrap();
        fs::remove_file(d.join(FILE)).unwrap();
        fs::create_dir(d.join(FILE)).unwrap();
        assert_closed(load(&d), &held(), true);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_file_without_previous_version_is_disabled_and_empty() {
        let d = dir("damaged-alone");
        fs::write(d.join(FILE), b"{\"state\": \"disab").unwrap();
        assert_closed(load(&d), &State::default(), false);
        // Both damaged: the same.
        fs::write(d.join(PREV), b"{\"sta").unwrap();
        fs::write(d.join(FILE), b"{\"state\": \"disab").unwrap();
        assert_closed(load(&d), &State::default(), false);
        // No state.json and a damaged previous version: never the enabled default either.
        fs::remove_file(d.join(FILE)).unwrap();
        assert_closed(load(&d), &State::default(), false);
        fs::remove_dir_all(&d).unwrap();
    }

    /// A cut between the two writes of [`save`]: the previous version is the change in flight,
    /// state.json the last acknowledged one; either is good, state.json wins. A cut in the first
    /// save ever leaves only the previous version: the change in flight.
    #[test]
    fn a_cut_between_the_two_writes_leaves_good_state() {
        let d = dir("cut");
        save(&d, &State::default()).unwrap();
        crate::files::write_atomic(&d.join(PREV), text(&held()).as_bytes(), 0o600).unwrap();
        assert!(matches!(load(&d), Loaded::Read(r) if r == State::default()));
        fs::remove_file(d.join(FILE)).unwrap();
        assert!(matches!(load(&d), Loaded::Read(r) if r == held()));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn start_persists_the_closed_state_until_enable() {
        let d = dir("start");
        save(&d, &held()).unwrap();
        let prev = fs::read(d.join(PREV)).unwrap();
        fs::write(d.join(FILE), b"").unwrap();
        let s = load_at_start(&d);
        assert!(s.damaged && s.mode == Mode::Disabled);
        assert_eq!(
            fs::read(d.join(PREV)).unwrap(),
            prev,
            "previous version kept"
        );
        // A restart before `ctl enable` still warns and stays closed.
        assert!(matches!(load(&d), Loaded::Read(r) if r == s));
        let control = super::super::Control::new(s.clone());
        let mut revoke = s.clone();
        revoke.revoked.insert("other".into());
        change(&control, &d, &revoke).unwrap();
        assert!(control.state().damaged, "only enable clears it");
        let enable = State {
            mode: Mode::Enabled,
            ..control.state()
        };
        change(&control, &d, &enable).unwrap();
        assert!(!control.state().damaged);
        assert!(matches!(load(&d), Loaded::Read(r) if !r.damaged && r.revoked.contains("nperf")));
        fs::remove_dir_all(&d).unwrap();
    }
}
