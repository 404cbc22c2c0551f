//! The control protocol both daemons speak on their Unix socket: the API's mode (enabled, disabled,
//! suspended) and run-time revocations, their persistence, and the command lines.
pub mod socket;
pub mod state;

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
}

impl Default for State {
    fn default() -> Self {
        State {
            mode: Mode::Enabled,
            revoked: BTreeSet::new(),
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    cmd: String,
    tool: Option<String>,
    retry_after: Option<u64>,
}

/// One control command, as parsed from a line of the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    Enable,
    Disable,
    Suspend { retry_after: u64 },
    Resume,
    Revoke(String),
    Unrevoke(String),
    Reload,
}

/// Parses a control line; the error is the reply's message.
pub fn parse_command(line: &[u8]) -> Result<Command, String> {
    let req: Request =
        serde_json::from_slice(line).map_err(|e| format!("not a command object: {e}"))?;
    let tool = || {
        req.tool
            .clone()
            .ok_or_else(|| "this command needs \"tool\"".to_owned())
    };
    Ok(match req.cmd.as_str() {
        "status" => Command::Status,
        "enable" => Command::Enable,
        "disable" => Command::Disable,
        "resume" => Command::Resume,
        "suspend" => match req.retry_after.unwrap_or(300) {
            r @ 1..=86_400 => Command::Suspend { retry_after: r },
            _ => return Err("retry_after must be 1 to 86400 seconds".into()),
        },
        "revoke" => Command::Revoke(tool()?),
        "unrevoke" => Command::Unrevoke(tool()?),
        "reload" => Command::Reload,
        other => return Err(format!("unknown command {other:?}")),
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
        for bad in [
            &b"{"[..],
            br#"{"cmd":"revoke"}"#,
            br#"{"cmd":"suspend","retry_after":0}"#,
            br#"{"cmd":"x"}"#,
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
