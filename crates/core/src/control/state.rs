//! The persisted control state (`state_dir/state.json`): written to a temporary file, fsynced,
//! renamed over the old one and the directory fsynced, so a power cut leaves the old or the new state.
use super::{Mode, State, Withheld};
use serde_json::{json, Value};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const FILE: &str = "state.json";
/// A state file is a few hundred bytes; anything far larger is not ours.
const MAX_BYTES: u64 = 1 << 20;

pub fn to_json(s: &State) -> Value {
    let (mode, retry) = match s.mode {
        Mode::Enabled => ("enabled", None),
        Mode::Disabled => ("disabled", None),
        Mode::Suspended { retry_after } => ("suspended", Some(retry_after)),
    };
    json!({ "version": 1, "state": mode, "retry_after": retry, "revoked": s.revoked,
            "withheld": s.withheld.to_json() })
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
    Some(State {
        mode,
        revoked,
        withheld,
    })
}

/// What loading found.
pub enum Loaded {
    /// No state yet (first start): enabled by default.
    Fresh(State),
    Read(State),
    /// Unreadable; the broken file was kept at the given path and the default state applies.
    Replaced {
        state: State,
        kept: PathBuf,
        why: String,
    },
}

/// Reads the state; never fails, but reports what it had to do.
pub fn load(dir: &Path) -> Loaded {
    let path = dir.join(FILE);
    // A regular file only: whatever else sits there (a pipe, a device) is set aside unopened.
    let why = match crate::files::read_limited(&path, MAX_BYTES) {
        Err(e) if e.is_not_found() => return Loaded::Fresh(State::default()),
        Err(e) => e.to_string(),
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(v) => match from_json(&v) {
                Some(s) => return Loaded::Read(s),
                None => "not a boxapi state object".to_owned(),
            },
            Err(e) => format!("not JSON: {e}"),
        },
    };
    let kept = dir.join(format!("{FILE}.broken-{}", crate::time::unix_now()));
    let _ = fs::rename(&path, &kept);
    Loaded::Replaced {
        state: State::default(),
        kept,
        why,
    }
}

/// Atomically replaces the state file.
pub fn save(dir: &Path, s: &State) -> io::Result<()> {
    let mut text = to_json(s).to_string();
    text.push('\n');
    crate::files::write_atomic(&dir.join(FILE), text.as_bytes(), 0o600).map_err(|e| e.source)
}

/// The state at start: the saved one, or the default when there is none; an unreadable file is
/// kept aside (logged) and replaced by the default.
/// Persists `new` first, then applies it to `control`: a failed write changes nothing, and a
/// change acknowledged survives a power cut (contract §7). `Err`: the reply's message (logged).
pub fn change(control: &super::Control, dir: &Path, new: &State) -> Result<(), String> {
    if let Err(e) = save(dir, new) {
        crate::log::event("state_error", &[("error", &e.to_string())]);
        return Err(format!(
            "cannot save the state in {}: {e}; nothing changed",
            dir.display()
        ));
    }
    control.update(|s| *s = new.clone());
    let mode = to_json(new);
    crate::log::event("state", &[("state", mode["state"].as_str().unwrap_or(""))]);
    Ok(())
}

pub fn load_or_default(dir: &Path) -> State {
    match load(dir) {
        Loaded::Fresh(s) | Loaded::Read(s) => s,
        Loaded::Replaced { state, kept, why } => {
            crate::log::event(
                "state_replaced",
                &[
                    ("error", &why),
                    ("kept", &kept.display().to_string()),
                    ("using", "enabled (default)"),
                ],
            );
            if let Err(e) = save(dir, &state) {
                crate::log::event("state_error", &[("error", &e.to_string())]);
            }
            state
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn broken_file_is_kept_and_replaced_by_default() {
        let d = dir("broken");
        fs::write(d.join(FILE), b"{\"state\": \"disab").unwrap();
        match load(&d) {
            Loaded::Replaced { state, kept, .. } => {
                assert_eq!(state, State::default());
                assert_eq!(fs::read(kept).unwrap(), b"{\"state\": \"disab");
            }
            _ => panic!("expected Replaced"),
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
