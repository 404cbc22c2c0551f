//! Reload (`ctl reload`, SIGHUP, a replaced certificate): a whole new snapshot, swapped in only
//! when it has no problem; else the running one stays and the problems are reported.
use super::current::{Current, Files};
use crate::cert::certificate_warning;
use crate::config::{self, Problem};
use crate::fair::Slots;
use crate::log;
use crate::trust::Trust;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What the kit needs of a daemon's snapshot.
pub trait Snapshot: Sized + Send + Sync + 'static {
    /// Reads and checks the configuration at `path` and every file it names; every problem on
    /// failure.
    fn load(path: &Path) -> Result<Self, Vec<Problem>>;
    /// The configuration file it was built from.
    fn path(&self) -> &Path;
    fn server(&self) -> &config::Server;
    fn trust(&self) -> &Trust;
    fn cert_not_after(&self) -> Option<i64>;
    /// The files whose replacement calls for a reload.
    fn files(&self) -> &Files;
    /// Settings of this daemon, beyond `[server]`'s, that only a restart applies: a reload that
    /// changes one is refused (each problem names the key).
    fn restart_only(&self, _new: &Self) -> Vec<Problem> {
        Vec::new()
    }
}

/// What the kit needs of a daemon's shared state.
pub trait Daemon: Send + Sync + 'static {
    type Snapshot: Snapshot;
    fn current(&self) -> &Current<Self::Snapshot>;
    fn slots(&self) -> &Slots;
    /// Takes up what a new snapshot says for state that outlives snapshots (rate limits), just
    /// before it is swapped in.
    fn adopt(&self, _new: &Self::Snapshot) {}
    /// Runs once a new snapshot is in force.
    fn adopted(&self) {}
}

/// `[server]` settings a running daemon cannot change (contract §7): its control socket and
/// where its state lives.
fn restart_only(old: &config::Server, new: &config::Server) -> Vec<Problem> {
    [
        (
            "server.control_socket",
            &old.control_socket,
            &new.control_socket,
        ),
        ("server.state_dir", &old.state_dir, &new.state_dir),
    ]
    .into_iter()
    .filter(|(_, was, now)| was != now)
    .map(|(key, was, now)| {
        Problem::invalid(
            key,
            format!(
                "changed from {} to {}: only a restart applies it, so nothing was reloaded",
                was.display(),
                now.display()
            ),
        )
    })
    .collect()
}

/// What follows the acceptance of a snapshot, at start and at each reload: the registry version
/// is remembered (an older registry is refused later: no rollback), and expiries are logged.
pub fn accepted<S: Snapshot>(snap: &S) {
    crate::auth::signed::record_accepted(&snap.server().state_dir, snap.trust().registry_version);
    if let Some(w) = certificate_warning(snap.cert_not_after()) {
        log::event("certificate_warning", &[("warning", &w)]);
    }
    warn_tool_expiry(snap.trust());
}

/// Logs each tool whose habilitation has lapsed or lapses within 30 days.
fn warn_tool_expiry(trust: &Trust) {
    let now = crate::time::unix_now() as i64;
    for t in trust.registry.tools() {
        if let Some(w) = t.expiry_warning(now) {
            log::event("tool_expiry_warning", &[("tool", &t.id), ("warning", &w)]);
        }
    }
}

/// Builds a whole new snapshot from the same configuration file and swaps it in; on any problem
/// the running one stays and the problems are returned (and logged). Reads files: call it off
/// the runtime (a blocking thread).
pub fn reload<D: Daemon>(app: &D) -> Result<(), Vec<Problem>> {
    let old = app.current().get();
    let path = old.path().to_path_buf();
    let checked = D::Snapshot::load(&path).and_then(|new| {
        let mut problems = restart_only(old.server(), new.server());
        problems.extend(old.restart_only(&new));
        if problems.is_empty() {
            Ok(new)
        } else {
            Err(problems)
        }
    });
    match checked {
        Ok(new) => {
            accepted(&new);
            let s = new.server();
            app.slots()
                .configure(s.max_connections, s.max_connections_per_terminal);
            app.adopt(&new);
            app.current().replace(new);
            app.adopted();
            log::event("reloaded", &[("config", &path.display().to_string())]);
            Ok(())
        }
        Err(problems) => {
            let lines = config::lines(&problems);
            log::event("reload_failed", &[("problems", &lines.join("; "))]);
            Err(problems)
        }
    }
}

/// The control socket's answer to `reload` (the problems as the lines check-config prints).
pub fn reply<D: Daemon>(app: &D) -> Value {
    match reload(app) {
        Ok(()) => json!({ "ok": true, "reloaded": true }),
        Err(problems) => json!({
            "ok": false,
            "error": "reload refused; still running on the previous configuration",
            "problems": config::lines(&problems),
        }),
    }
}

/// [`reload`] on a blocking thread.
async fn reload_off_runtime<D: Daemon>(app: &Arc<D>) {
    let app = app.clone();
    let _ = tokio::task::spawn_blocking(move || reload(&*app)).await;
}

/// How often the certificate and key files are checked for replacement.
const FILE_CHECK: Duration = Duration::from_secs(10);
/// Habilitation expiry is logged once a day (in checks of `FILE_CHECK`).
const TOOL_EXPIRY_CHECKS: u64 = 86_400 / FILE_CHECK.as_secs();
/// A certificate about to expire is logged every ten minutes (an expired one at every check).
const CERT_WARNING_CHECKS: u64 = 600 / FILE_CHECK.as_secs();

/// Starts the reload watchers: SIGHUP (its handler installed now, before any listener opens:
/// SIGHUP's default action would kill the daemon) and the certificate files, with the expiry
/// warnings. Must run inside the runtime.
pub fn watch<D: Daemon>(app: &Arc<D>) {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let app = app.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    reload_off_runtime(&app).await;
                }
            });
        }
        Err(e) => log::event("signal_error", &[("error", &e.to_string())]),
    }
    tokio::spawn(watch_files(app.clone()));
}

/// Reloads when the certificate or key file changes on disk; warns about expiries.
async fn watch_files<D: Daemon>(app: Arc<D>) {
    let mut checks: u64 = 0;
    loop {
        tokio::time::sleep(FILE_CHECK).await;
        checks += 1;
        let snap = app.current().get();
        // stat() and a reload read files: off the runtime.
        let (check, app2) = (snap.clone(), app.clone());
        let changed = tokio::task::spawn_blocking(move || {
            let changed = check.files().changed();
            if changed {
                log::event("certificate_changed", &[]);
                let _ = reload(&*app2);
            }
            changed
        })
        .await
        .unwrap_or(false);
        if changed {
            continue;
        }
        if checks % TOOL_EXPIRY_CHECKS == 0 {
            warn_tool_expiry(snap.trust());
        }
        let expired = snap
            .cert_not_after()
            .is_some_and(|na| na <= crate::time::unix_now() as i64);
        if expired || checks % CERT_WARNING_CHECKS == 0 {
            if let Some(w) = certificate_warning(snap.cert_not_after()) {
                let event = if expired {
                    "certificate_expired"
                } else {
                    "certificate_warning"
                };
                log::event(event, &[("warning", &w)]);
            }
        }
    }
}
