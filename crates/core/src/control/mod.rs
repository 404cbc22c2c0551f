//! The control protocol both daemons speak on their Unix socket: the API's mode (enabled, disabled,
//! suspended), run-time revocations and the subscriber's withholdings, their persistence, and the
//! command lines.
pub mod socket;
pub mod state;
pub mod withheld;

pub use withheld::{Section, Sections, Withheld};

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::RwLock;
use tokio::sync::watch;

/// The API's state as the subscriber and the operator set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enabled,
    /// The subscriber's switch-off: listeners closed.
    Disabled,
    /// The operator's emergency restriction: every API request gets 503 with this Retry-After.
    Suspended {
        retry_after: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub mode: Mode,
    pub revoked: BTreeSet<String>,
    /// Card sections the subscriber does not share.
    pub withheld: Withheld,
    /// Started from a damaged state file (`ctl status` warns `state_damaged`); cleared by the
    /// next `ctl enable` (state::change), persisted until then.
    pub damaged: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            mode: Mode::Enabled,
            revoked: BTreeSet::new(),
            withheld: Withheld::default(),
            damaged: false,
        }
    }
}

/// The live state; listeners watch `changes` to open or close.
pub struct Control {
    state: RwLock<State>,
    changes: watch::Sender<State>,
}

impl Control {
    pub fn new(state: State) -> Self {
        let (changes, _) = watch::channel(state.clone());
        Control {
            state: RwLock::new(state),
            changes,
        }
    }

    pub fn state(&self) -> State {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn mode(&self) -> Mode {
        self.state.read().unwrap_or_else(|p| p.into_inner()).mode
    }

    pub fn is_revoked(&self, tool: &str) -> bool {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .revoked
            .contains(tool)
    }

    /// The card sections withheld from this tool now (read on every request).
    pub fn withheld_for(&self, tool: &str) -> Sections {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .withheld
            .for_tool(tool)
    }

    /// Applies a change and tells the watchers.
    pub fn update(&self, f: impl FnOnce(&mut State)) -> State {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
        let new = guard.clone();
        drop(guard);
        self.changes.send_replace(new.clone());
        new
    }

    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.changes.subscribe()
    }
}

pub fn error_reply(msg: &str) -> Value {
    json!({ "ok": false, "error": msg })
}

/// One control line as sent: the members every command may carry (the wire format both daemons
/// and `boxapi ctl` share, contract §7). A daemon's own commands read it through
/// [`Command::Other`].
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub cmd: String,
    pub tool: Option<String>,
    pub retry_after: Option<u64>,
    pub section: Option<String>,
    /// A file the daemon reads: the authority's `publish_fleet` document.
    pub file: Option<String>,
}

impl Request {
    /// The tool the command names; the error is the reply's message.
    pub fn tool(&self) -> Result<String, String> {
        self.tool
            .clone()
            .ok_or_else(|| "this command needs \"tool\"".to_owned())
    }

    /// The reply's message for a command this daemon does not have.
    pub fn unknown(&self) -> String {
        format!("unknown command {:?}", self.cmd)
    }
}

/// One control command both daemons answer, as parsed from a line of the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    /// The API on again: ends a suspension (and, on a box, the subscriber's switch-off).
    Enable,
    Suspend {
        retry_after: u64,
    },
    Resume,
    Revoke(String),
    Unrevoke(String),
    Reload,
    /// Any other command: the daemon's own (the box's `disable`, `tools`, `withhold`, `allow`),
    /// parsed by the daemon, or unknown there ([`Request::unknown`]).
    Other(Request),
}

/// A suspension's `Retry-After` when none is given, and the values allowed: the same for
/// `ctl suspend` and a fleet restriction ([`crate::auth::fleet`]), which answer alike.
pub const SUSPEND_RETRY_AFTER_DEFAULT: u64 = 300;
pub const SUSPEND_RETRY_AFTER: std::ops::RangeInclusive<u64> = 1..=86_400;
pub const SUSPEND_RETRY_AFTER_RULE: &str = "retry_after must be 1 to 86400 seconds";

/// Parses a control line; the error is the reply's message.
pub fn parse_command(line: &[u8]) -> Result<Command, String> {
    let req: Request =
        serde_json::from_slice(line).map_err(|e| format!("not a command object: {e}"))?;
    Ok(match req.cmd.as_str() {
        "status" => Command::Status,
        "enable" => Command::Enable,
        "resume" => Command::Resume,
        "suspend" => match req.retry_after.unwrap_or(SUSPEND_RETRY_AFTER_DEFAULT) {
            r if SUSPEND_RETRY_AFTER.contains(&r) => Command::Suspend { retry_after: r },
            _ => return Err(SUSPEND_RETRY_AFTER_RULE.into()),
        },
        "revoke" => Command::Revoke(req.tool()?),
        "unrevoke" => Command::Unrevoke(req.tool()?),
        "reload" => Command::Reload,
        _ => Command::Other(req),
    })
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is called
/// (not when first polled), so a signal that arrives during start-up is not lost.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_refuses_the_rest() {
        assert_eq!(parse_command(br#"{"cmd":"status"}"#), Ok(Command::Status));
        assert_eq!(
            parse_command(br#"{"cmd":"suspend"}"#),
            Ok(Command::Suspend { retry_after: 300 })
        );
        assert_eq!(
            parse_command(br#"{"cmd":"revoke","tool":"a"}"#),
            Ok(Command::Revoke("a".into()))
        );
        // A daemon's own commands come through whole, for it to parse.
        let Ok(Command::Other(req)) = parse_command(br#"{"cmd":"withhold","section":"wifi"}"#)
        else {
            panic!("withhold is a daemon's own command")
        };
        assert_eq!(req.section.as_deref(), Some("wifi"));
        assert_eq!(
            parse_command(br#"{"cmd":"x"}"#).map(|c| match c {
                Command::Other(r) => r.unknown(),
                other => format!("{other:?}"),
            }),
            Ok("unknown command \"x\"".to_owned())
        );
        for bad in [
            &br#"{"cmd":"withhold","section":3}"#[..],
            b"{",
            br#"{"cmd":"revoke"}"#,
            br#"{"cmd":"suspend","retry_after":0}"#,
            br#"{"cmd":"status","y":1}"#,
            br#"[]"#,
        ] {
            assert!(
                parse_command(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
