//! The daemon's life: start-up (state, control socket, signal and certificate watchers, first
//! listeners, privilege drop), reload, and the run until a stop signal.
use crate::activity::Activity;
use crate::app::App;
use crate::control;
use crate::enrol::{failed_event, secs};
use crate::server;
use crate::snapshot::Snapshot;
use boxapi_core::control::{error_reply, parse_command, socket, state, Command, Mode};
use boxapi_core::daemon::reload;
use boxapi_core::daemon::start::{self, StartError};
use boxapi_core::log;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One control line: reload is the daemon's; every other command is `control`'s.
fn command(app: &Arc<App>, line: &[u8]) -> Value {
    match parse_command(line) {
        Ok(Command::Reload) => reload::reply(&**app),
        Ok(cmd) => control::execute(app, cmd),
        Err(e) => error_reply(&e),
    }
}

/// The first whole Unix second at least `wait` from now: the loop attempts once the (whole)
/// clock reaches it, so a Retry-After of 5 s never turns into 4.1 s. Taken when the answer came,
/// not when the attempt started: an enrolment can wait 30 s for a slot before it is told `busy`.
fn hold_after(wait: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    secs(now.saturating_add(wait))
}

/// How often the LAN addresses behind the box's name are compared with what was published.
const ADDRESS_CHECK: Duration = Duration::from_secs(10);

/// What the renewal task did under one `[enrol]`: forgotten when `[enrol]` changes (another
/// authority, zone or device has not been told the addresses).
#[derive(Default)]
struct Publication {
    published: Option<Vec<std::net::IpAddr>>,
    /// A failed publication backs off like a renewal (a fleet must not retry every few seconds
    /// while the authority is down); a new set of addresses is tried at once.
    failures: u32,
    hold: Option<(Vec<std::net::IpAddr>, i64)>,
}

/// The box's entry in `[enrol] hosts_file`: the file, the name and the lines written there.
#[derive(Clone, PartialEq)]
struct HostsEntry {
    file: std::path::PathBuf,
    name: String,
    lines: String,
}

/// Makes the hosts file say what `want` says. What the box wrote under a previous `[enrol]` (or
/// box name) is taken out when `[enrol]` goes, or its `hosts_file` or the name changes: a LAN
/// device must not go on resolving a name the box no longer answers to. Other lines of the file
/// are never touched.
fn sync_hosts(written: &mut Option<HostsEntry>, want: Option<HostsEntry>) {
    if let Some(old) = written.take() {
        let same_place = want
            .as_ref()
            .is_some_and(|w| w.file == old.file && w.name == old.name);
        if same_place {
            *written = Some(old);
        } else {
            // Tried once, then forgotten: an old file the box can no longer change is reported,
            // not retried every few seconds into the log for as long as the daemon runs.
            let file = old.file.display().to_string();
            match crate::enrol::update_hosts_file(&old.file, &old.name, "") {
                Ok(()) => log::event("hosts_entry_removed", &[("file", &file)]),
                Err(err) => log::event("hosts_file_error", &[("error", &err.to_string())]),
            }
        }
    }
    if let Some(want) = want {
        if written.as_ref() != Some(&want) {
            // Err: tried again at the next turn of the renewal loop (within seconds).
            match crate::enrol::update_hosts_file(&want.file, &want.name, &want.lines) {
                Ok(()) => *written = Some(want),
                Err(err) => log::event("hosts_file_error", &[("error", &err.to_string())]),
            }
        }
    }
}

/// Renews the box's own certificate by itself (contract §10): at its renewal time, or after a
/// failure when the backoff says so; the current certificate keeps serving until a new one is
/// installed. Also keeps the authority told of the box's LAN addresses (its name's A/AAAA).
///
/// Runs for the daemon's whole life and follows each reload: idle without `[enrol]`, started
/// when a reload brings it, idle again when one removes it, and on any change of `[enrol]` it
/// starts afresh (no backoff earned under the old values, e.g. a wrong authority, holds the new
/// ones back). An attempt under way when the configuration changes finishes first.
async fn renew_certificate(app: Arc<App>) {
    let mut reloads = app.current.watch();
    let mut under: Option<crate::config::Enrol> = None;
    let mut p = Publication::default();
    // Outlives each `[enrol]`: what one wrote is taken out when the next one differs.
    let mut hosts: Option<HostsEntry> = None;
    loop {
        reloads.borrow_and_update();
        let snap = app.snapshot();
        if snap.config.enrol != under {
            under = snap.config.enrol.clone();
            p = Publication::default();
            app.renewal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .restart();
        }
        let Some(e) = under.clone() else {
            sync_hosts(&mut hosts, None);
            // Err: the sender is gone with the app; nothing left to follow.
            if reloads.changed().await.is_err() {
                return;
            }
            continue;
        };
        let now = boxapi_core::time::unix_now() as i64;
        let due = {
            let mut r = app.renewal.lock().unwrap_or_else(|p| p.into_inner());
            // Serving the previous pair because the installed one is damaged: due at once
            // (within the hold), so a good pair is installed again.
            let cert = snap
                .cert_not_before
                .zip(snap.cert_not_after)
                .filter(|_| snap.identity_fallback.is_none());
            let due = r.due(cert, e.renew_fraction, now);
            r.renew_at = Some(due);
            due
        };
        let server = &snap.config.common.server;
        let addrs = crate::lan::published_addrs(server, &crate::lan::interface_addrs());
        let want = e
            .hosts_file
            .as_ref()
            .zip(snap.box_name.as_ref())
            .map(|(file, name)| HostsEntry {
                file: file.clone(),
                name: name.clone(),
                lines: crate::enrol::hosts_lines(name, &addrs),
            });
        sync_hosts(&mut hosts, want);
        if now >= due {
            // Installed files that the daemon cannot load count as a failure too (backoff),
            // so a broken pair never makes it ask the CA again and again.
            let result = match crate::enrol::enrol(&snap.config, &addrs).await {
                Ok(done) => {
                    // A reload reads and checks every file: off the runtime, like the watcher's.
                    let app2 = app.clone();
                    let loaded = tokio::task::spawn_blocking(move || reload::reload(&*app2))
                        .await
                        .unwrap_or_else(|join| {
                            Err(vec![boxapi_core::config::Problem::invalid("reload", join)])
                        });
                    loaded.map(|()| done).map_err(|problems| {
                        let why = format!(
                            "installed, but not loadable: {}",
                            boxapi_core::config::lines(&problems).join("; ")
                        );
                        (why, None)
                    })
                }
                Err(err) => Err((err.to_string(), err.retry_after())),
            };
            match result {
                Ok(done) => {
                    {
                        let mut r = app.renewal.lock().unwrap_or_else(|p| p.into_inner());
                        r.failures = 0;
                        r.hold_until = Some(now + secs(e.retry_min));
                        r.last_error = None;
                        r.ari = done.renew_after.map(|at| (done.not_after, at));
                    }
                    p.published = Some(addrs);
                    // New connections now get the new certificate; established ones keep theirs.
                    log::event(
                        "certificate_renewed",
                        &[
                            ("name", &done.name),
                            ("not_after", &boxapi_core::time::rfc3339(done.not_after)),
                        ],
                    );
                }
                Err((err, retry_after)) => {
                    let wait = {
                        let mut r = app.renewal.lock().unwrap_or_else(|p| p.into_inner());
                        let wait = crate::enrol::retry_wait(
                            r.failures,
                            e.retry_min,
                            e.retry_max,
                            retry_after,
                        );
                        r.failures = r.failures.saturating_add(1);
                        r.hold_until = Some(hold_after(wait));
                        r.last_error = Some(err.clone());
                        wait
                    };
                    failed_event("certificate_renewal_failed", &err, wait, retry_after);
                }
            }
            continue;
        }
        let held = p
            .hold
            .as_ref()
            .is_some_and(|(tried, until)| *tried == addrs && now < *until);
        if p.published.as_ref() != Some(&addrs) && !addrs.is_empty() && !held {
            match crate::enrol::publish_addresses(&e, &addrs).await {
                Ok(()) => {
                    log::event(
                        "addresses_published",
                        &[("count", &addrs.len().to_string())],
                    );
                    p.failures = 0;
                    p.hold = None;
                    p.published = Some(addrs);
                }
                Err(err) => {
                    let retry_after = err.retry_after();
                    let wait =
                        crate::enrol::retry_wait(p.failures, e.retry_min, e.retry_max, retry_after);
                    p.failures = p.failures.saturating_add(1);
                    failed_event(
                        "addresses_not_published",
                        &err.to_string(),
                        wait,
                        retry_after,
                    );
                    p.hold = Some((addrs, hold_after(wait)));
                }
            }
        }
        let until_due = Duration::from_secs((due - now).max(1) as u64);
        tokio::select! {
            _ = tokio::time::sleep(until_due.min(ADDRESS_CHECK)) => {}
            changed = reloads.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Start-up around the server loop: state, control socket, signal and certificate watchers, and
/// the first listeners. Must run inside the runtime.
pub fn start(snapshot: Snapshot) -> Result<(Arc<App>, server::Bound), StartError> {
    let (initial, control) = start::prepare(&snapshot.config.common.server)?;
    reload::accepted(&snapshot);
    let dir = snapshot.config.common.server.state_dir.clone();
    let activity = Activity::load_or_empty(&dir);
    let app = App::new(snapshot, initial, activity);
    let handler_app = app.clone();
    let handler = move |line: &[u8]| command(&handler_app, line);
    tokio::spawn(socket::serve(control, Arc::new(handler)));
    reload::watch(&app);
    tokio::spawn(save_activity_periodically(app.clone()));
    // Wi-Fi: one refresh now (bounded, before any listener opens, so the first card has it),
    // then in the background.
    app.wifi.refresh();
    app.wifi.start();
    // Always: idle without `[enrol]`, it starts renewing when a reload brings one.
    tokio::spawn(renew_certificate(app.clone()));
    // Always: applies the kept fleet document's restriction to the card's facts at once, and
    // fetches new ones with `[enrol]` and `[registry]`.
    tokio::spawn(crate::fleet_poll::follow(app.clone()));
    let listeners = server::bind_initial(&app).map_err(StartError::Bind)?;
    if app.control.mode() == Mode::Disabled {
        log::event("disabled", &[("hint", "boxapi ctl enable")]);
    }
    Ok((app, listeners))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Privileges(#[from] crate::privs::PrivError),
}

/// Runs the daemon on one thread until SIGTERM/SIGINT; `announce` gets the bound addresses.
pub fn run(snapshot: Snapshot, announce: impl FnOnce(&[SocketAddr])) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    rt.block_on(async {
        let stop = boxapi_core::control::stop_signal();
        let (app, listeners) = start(snapshot)?;
        let server = &app.snapshot().config.common.server;
        if let Some(user) = &server.user {
            // Every file of state_dir the daemon reads again after the drop: one written by root
            // before it (mode 0600) would read as damaged, and fail closed.
            let mut files: Vec<std::path::PathBuf> =
                [state::FILE, state::PREV, crate::activity::FILE]
                    .map(|f| server.state_dir.join(f))
                    .into_iter()
                    .chain(boxapi_core::auth::signed::version_paths(&server.state_dir))
                    .chain(boxapi_core::auth::fleet::applied_paths(&server.state_dir))
                    .collect();
            if app.snapshot().config.enrol.is_some() {
                files.extend(enrolled_pair_paths(server));
            }
            let writable: Vec<&std::path::Path> =
                [server.state_dir.as_path(), server.control_socket.as_path()]
                    .into_iter()
                    .chain(files.iter().map(|p| p.as_path()))
                    .collect();
            crate::privs::drop_to(user, server.group.as_deref(), &writable)?;
            log::event("privileges_dropped", &[("user", user)]);
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect();
        announce(&addrs);
        server::run(app.clone(), listeners, stop).await;
        // Blocking is fine now: nothing else runs any more.
        if let Some(content) = prune_activity(&app) {
            write_activity(&app, &content);
        }
        Ok(())
    })
}

/// What an enrolling box writes again after the privilege drop (each renewal installs a new pair,
/// keeping the old one): the pair written by root at the first start, its kept previous pair,
/// and their directory when it lies within `state_dir` (an installation rename needs it; a
/// directory outside, such as /etc/boxapi, is never given away: docs/operations.md says to keep
/// an enrolling box's pair under `state_dir`).
fn enrolled_pair_paths(server: &boxapi_core::config::Server) -> Vec<std::path::PathBuf> {
    let mut paths = vec![
        server.cert.clone(),
        server.key.clone(),
        crate::enrol::pair::previous_path(&server.key),
    ];
    let dir = boxapi_core::files::parent(&server.key).to_path_buf();
    if dir.starts_with(&server.state_dir) && dir != server.state_dir {
        paths.push(dir);
    }
    paths
}

/// Drops the activity of tools no longer registered or not seen for the retention period, and
/// returns the file's new content if anything changed since the last save.
fn prune_activity(app: &App) -> Option<Vec<u8>> {
    let snap = app.snapshot();
    let registered: HashSet<&str> = snap
        .trust
        .registry
        .tools()
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    let days = u64::from(snap.config.common.server.activity_retention_days);
    let now = boxapi_core::time::unix_now();
    // A box whose clock is not set yet would take every entry for decades old.
    if !boxapi_core::time::clock_is_unset(now) {
        app.activity
            .prune(&registered, Duration::from_secs(days * 86_400), now as i64);
    }
    app.activity.take_changes()
}

/// Writes the activity file (blocking); on failure it stays to be saved next time.
fn write_activity(app: &App, content: &[u8]) {
    let dir = app.snapshot().config.common.server.state_dir.clone();
    if let Err(e) = crate::activity::save(&dir, content) {
        app.activity.mark_dirty();
        log::event("state_error", &[("error", &format!("activity: {e}"))]);
    }
}

/// Saves the activity when it changed, at most once a minute: the first change after a quiet
/// minute at once (so a request is on disk within moments), later ones a minute after the previous
/// save. Each minute it also applies the retention, changes or not. The write and its fsync run on
/// the blocking pool, never on the runtime's one thread.
async fn save_activity_periodically(app: Arc<App>) {
    let mut last_attempt: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = app.activity.changed() => {}
            _ = tokio::time::sleep(crate::activity::SAVE_EVERY) => {}
        }
        if let Some(t) = last_attempt {
            tokio::time::sleep_until(t + crate::activity::SAVE_EVERY).await;
        }
        let Some(content) = prune_activity(&app) else {
            continue;
        };
        // Set on failures too: a failing disk is retried once a minute, not in a loop.
        last_attempt = Some(tokio::time::Instant::now());
        let writer = app.clone();
        let done = tokio::task::spawn_blocking(move || write_activity(&writer, &content)).await;
        if done.is_err() {
            app.activity.mark_dirty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_never_shorter_than_the_wait() {
        for ms in [0u64, 1, 999, 1_000, 1_001, 5_000] {
            let before = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            let hold = hold_after(Duration::from_millis(ms));
            let earliest = before + Duration::from_millis(ms);
            assert!(
                Duration::from_secs(hold as u64) >= earliest,
                "{ms} ms: {hold} < {earliest:?}"
            );
            assert!(Duration::from_secs(hold as u64) <= earliest + Duration::from_secs(2));
        }
    }
}
