//! Operator and subscriber control: whether the API is enabled, disabled or suspended, which tools
//! are revoked at run time, reloads, and the daemon's start-up around them.
pub mod client;
pub mod socket;
pub mod state;

use crate::log;
use crate::server::{self, App};
use crate::snapshot::Snapshot;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::UnixListener;
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

/// Persists a state change first, then applies it: a failed write changes nothing.
fn change(app: &App, f: impl FnOnce(&mut State)) -> Value {
    let mut new = app.control.state();
    f(&mut new);
    let dir = app.snapshot().config.server.state_dir.clone();
    if let Err(e) = state::save(&dir, &new) {
        log::event("state_error", &[("error", &e.to_string())]);
        return error_reply(&format!(
            "cannot save the state in {}: {e}; nothing changed",
            dir.display()
        ));
    }
    app.control.update(|s| *s = new.clone());
    app.snapshot().verifier.forget_verified();
    let mode = state::to_json(&new);
    log::event("state", &[("state", mode["state"].as_str().unwrap_or(""))]);
    json!({ "ok": true, "state": mode["state"], "retry_after": mode["retry_after"], "revoked": mode["revoked"] })
}

/// Runs one control command (a JSON line) and returns the reply.
pub fn execute(app: &App, line: &[u8]) -> Value {
    let cmd = match parse_command(line) {
        Ok(c) => c,
        Err(e) => return error_reply(&e),
    };
    match cmd {
        Command::Status => status(app),
        Command::Enable | Command::Resume => change(app, |s| s.mode = Mode::Enabled),
        Command::Disable => change(app, |s| s.mode = Mode::Disabled),
        Command::Suspend { retry_after } => {
            change(app, |s| s.mode = Mode::Suspended { retry_after })
        }
        Command::Revoke(id) if app.snapshot().registry.index_of(&id).is_none() => {
            error_reply(&format!("no tool {id:?} is registered"))
        }
        Command::Revoke(id) => change(app, |s| {
            s.revoked.insert(id);
        }),
        Command::Unrevoke(id) => change(app, |s| {
            s.revoked.remove(&id);
        }),
        Command::Reload => match reload(app) {
            Ok(()) => json!({ "ok": true, "reloaded": true }),
            Err(problems) => {
                json!({ "ok": false, "error": "reload refused; still running on the previous configuration", "problems": problems })
            }
        },
    }
}

/// Days before expiry from which status and the log warn.
const EXPIRY_WARNING_DAYS: i64 = 14;

fn certificate_warning(not_after: Option<i64>) -> Option<String> {
    let na = not_after?;
    let left = na - crate::time::unix_now() as i64;
    if left <= 0 {
        Some(format!(
            "the server certificate EXPIRED at {}",
            crate::time::rfc3339(na)
        ))
    } else if left < EXPIRY_WARNING_DAYS * 86_400 {
        Some(format!(
            "the server certificate expires in {} days ({})",
            left / 86_400,
            crate::time::rfc3339(na)
        ))
    } else {
        None
    }
}

fn status(app: &App) -> Value {
    let snap = app.snapshot();
    let st = app.control.state();
    let tools: Vec<Value> = snap
        .registry
        .tools()
        .iter()
        .map(|t| {
            let by = if t.revoked {
                json!("config")
            } else if st.revoked.contains(&t.id) {
                json!("ctl")
            } else {
                Value::Null
            };
            json!({ "id": t.id, "name": t.name, "origins": t.origins, "scopes": t.scopes.names(),
                    "revoked": !by.is_null(), "revoked_by": by })
        })
        .collect();
    let mode = state::to_json(&st);
    let warnings: Vec<String> = certificate_warning(snap.cert_not_after)
        .into_iter()
        .collect();
    json!({
        "ok": true,
        "state": mode["state"],
        "retry_after": mode["retry_after"],
        "tools": tools,
        "cert_not_after": snap.cert_not_after.map(crate::time::rfc3339),
        "warnings": warnings,
        "config": snap.config.path.display().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// Builds a whole new snapshot from the same config file and swaps it in; on any problem the
/// running one stays and the problems are returned (and logged).
pub fn reload(app: &App) -> Result<(), Vec<String>> {
    let path = app.snapshot().config.path.clone();
    match Snapshot::load(&path) {
        Ok(new) => {
            record_registry_version(&new);
            if let Some(w) = certificate_warning(new.cert_not_after) {
                log::event("certificate_warning", &[("warning", &w)]);
            }
            app.replace_snapshot(new);
            log::event("reloaded", &[("config", &path.display().to_string())]);
            Ok(())
        }
        Err(problems) => {
            log::event("reload_failed", &[("problems", &problems.join("; "))]);
            Err(problems)
        }
    }
}

/// How often the certificate and key files are checked for replacement.
const CERT_CHECK: Duration = Duration::from_secs(10);

/// Reloads when the certificate or key file changes on disk; warns about expiry.
async fn watch_certificate(app: Arc<App>) {
    let mut checks: u64 = 0;
    loop {
        tokio::time::sleep(CERT_CHECK).await;
        checks += 1;
        let snap = app.snapshot();
        if snap.files_changed() {
            log::event("certificate_changed", &[]);
            let _ = reload(&app);
            continue;
        }
        // An expired certificate is logged at every check; one about to expire every ten minutes.
        let expired = snap
            .cert_not_after
            .is_some_and(|na| na <= crate::time::unix_now() as i64);
        if expired || checks % 60 == 0 {
            if let Some(w) = certificate_warning(snap.cert_not_after) {
                log::event(
                    if expired {
                        "certificate_expired"
                    } else {
                        "certificate_warning"
                    },
                    &[("warning", &w)],
                );
            }
        }
    }
}

async fn sighup(app: Arc<App>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        let _ = reload(&app);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("state_dir {0}: {1}")]
    StateDir(String, std::io::Error),
    #[error("control_socket {0}: {1}")]
    Socket(String, std::io::Error),
    #[error("control_socket {0}: another boxapi is running (it answers on this socket)")]
    AlreadyRunning(String),
    #[error("listen: {0}")]
    Bind(std::io::Error),
}

fn bind_control_socket(path: &Path) -> Result<UnixListener, StartError> {
    let name = path.display().to_string();
    let err = |e| StartError::Socket(name.clone(), e);
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(StartError::AlreadyRunning(name));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // The socket is created with mode 0600 from the start: no window where others could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    bound.map_err(err)
}

/// Remembers the accepted registry version, so that an older one is refused later (no rollback).
fn record_registry_version(snap: &Snapshot) {
    if let Some(v) = snap.registry_version {
        if let Err(e) = crate::auth::signed::record_version(&snap.config.server.state_dir, v) {
            log::event(
                "state_error",
                &[("error", &format!("registry version: {e}"))],
            );
        }
    }
}

/// Start-up around the server loop: state, control socket, signal and certificate watchers, and
/// the first listeners. Must run inside the runtime.
pub fn start(snapshot: Snapshot, authority: bool) -> Result<(Arc<App>, server::Bound), StartError> {
    let server_cfg = &snapshot.config.server;
    let dir = server_cfg.state_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| StartError::StateDir(dir.display().to_string(), e))?;
    let initial = match state::load(&dir) {
        state::Loaded::Fresh(s) | state::Loaded::Read(s) => s,
        state::Loaded::Replaced { state, kept, why } => {
            log::event(
                "state_replaced",
                &[
                    ("error", &why),
                    ("kept", &kept.display().to_string()),
                    ("using", "enabled (default)"),
                ],
            );
            if let Err(e) = state::save(&dir, &state) {
                log::event("state_error", &[("error", &e.to_string())]);
            }
            state
        }
    };
    let control = bind_control_socket(&server_cfg.control_socket)?;
    record_registry_version(&snapshot);
    if let Some(w) = certificate_warning(snapshot.cert_not_after) {
        log::event("certificate_warning", &[("warning", &w)]);
    }
    let app = App::new(snapshot, initial, authority);
    tokio::spawn(socket::serve(app.clone(), control));
    // Installed now, before any listener opens: SIGHUP's default action would kill the daemon.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            tokio::spawn(sighup(app.clone(), hup));
        }
        Err(e) => log::event("signal_error", &[("error", &e.to_string())]),
    }
    tokio::spawn(watch_certificate(app.clone()));
    let listeners = server::bind_initial(&app).map_err(StartError::Bind)?;
    if app.control.mode() == Mode::Disabled {
        log::event("disabled", &[("hint", "boxapi ctl enable")]);
    }
    Ok((app, listeners))
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
