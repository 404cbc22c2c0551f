//! The fleet document's polling (issue 23): fetched from the operator's authority with the
//! device certificate, verified with `[registry] root_key`, kept in `state_dir`, applied at once.
use crate::app::App;
use crate::enrol::client;
use boxapi_core::auth::fleet;
use boxapi_core::auth::jwk::PublicJwk;
use boxapi_core::auth::signed;
use boxapi_core::log;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A fetch that came to nothing new: why, and the `Retry-After` the authority asked for.
type Failure = (String, Option<Duration>);

/// `f` off the runtime's only thread: file reads, and writes with their fsyncs.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err((e.to_string(), None)))
}

/// A fetched document verified, checked against the anti-rollback floor, kept, recorded as
/// accepted and applied (unless it is the version held).
fn accept(
    app: &App,
    root: &PublicJwk,
    jws: &[u8],
    state_dir: &Path,
    held: Option<u64>,
) -> Result<(), Failure> {
    let refused = |why: String| {
        log::event("fleet_document_refused", &[("error", &why)]);
        (format!("refused the fleet document: {why}"), None)
    };
    let doc = fleet::verify(root, jws).map_err(|e| refused(e.to_string()))?;
    let version = doc.version();
    if Some(version) == held {
        return Ok(());
    }
    match signed::check_rollback(state_dir, version) {
        // Every copy of the floor damaged: a document the root key signed is the best evidence
        // of it there is (record_accepted repairs it), and refusing it would refuse a restriction.
        Ok(()) | Err(signed::SignedError::FloorUnknown(_)) => {}
        Err(e) => return Err(refused(e.to_string())),
    }
    fleet::keep_applied(state_dir, jws)
        .map_err(|e| (format!("cannot keep the fleet document: {e}"), None))?;
    signed::record_accepted(state_dir, Some(version));
    app.fleet.update(|s| {
        s.version = Some(version);
        s.restriction = doc.restriction;
    });
    let version = version.to_string();
    log::event("fleet_applied", &[("version", &version)]);
    // Its tools and revocations: the registry reload's path (a new trust; open streams end at
    // their next line). On failure they apply at the next reload that succeeds; the restriction
    // is in force already.
    if boxapi_core::daemon::reload::reload(app).is_err() {
        log::event("fleet_tools_not_applied", &[("version", &version)]);
    }
    Ok(())
}

/// The longest a fleet fetch waits for its answer (never more than `fleet_poll`): an authority,
/// or a network, dripping its answer must not hold the emergency channel for the client's
/// 300 s exchange.
const FETCH_DEADLINE: Duration = Duration::from_secs(30);

/// One `GET /v1/fleet`; a new document verified, kept and applied. `Ok`: the authority answered
/// (a new document, none newer, or none published). A reload seen on `reloads` while it waits
/// for the answer abandons it: the box may now be pointed at another authority.
async fn fetch(
    app: &Arc<App>,
    e: &crate::config::Enrol,
    mut reloads: tokio::sync::watch::Receiver<()>,
) -> Result<(), Failure> {
    let snap = app.snapshot();
    let Some(root_key) = snap
        .config
        .common
        .registry
        .as_ref()
        .map(|r| r.root_key.clone())
    else {
        return Ok(());
    };
    let e2 = e.clone();
    let (root, identity) = blocking(move || {
        let mut problems = Vec::new();
        let root = boxapi_core::trust::load_keys(&root_key, "registry.root_key", &mut problems);
        let root = root.into_iter().next().ok_or_else(|| {
            let lines = boxapi_core::config::lines(&problems);
            (lines.join("; "), None)
        })?;
        let identity = client::Identity::load(&e2.authority_ca, &e2.device_cert, &e2.device_key)
            .map_err(|err| (err.to_string(), None))?;
        Ok((root, identity))
    })
    .await?;
    let held = app.fleet.state().version;
    let deadline = FETCH_DEADLINE.min(e.fleet_poll);
    let max = fleet::MAX_SIGNED_BYTES;
    let request = client::request(&identity, &e.authority, "/v1/fleet", None, held, max);
    let answer = tokio::select! {
        answer = request => answer,
        () = tokio::time::sleep(deadline) => {
            return Err((format!("no answer within {} s", deadline.as_secs()), None))
        }
        _ = reloads.changed() => return Err(("abandoned for a reload".into(), None)),
    }
    .map_err(|err| (err.to_string(), err.retry_after()))?;
    match answer.status {
        // Unchanged, or nothing published: what the box holds stays.
        304 | 404 => return Ok(()),
        200 => {}
        _ => {
            let err = client::refused(answer);
            return Err((err.to_string(), err.retry_after()));
        }
    }
    let state_dir = snap.config.common.server.state_dir.clone();
    let app = app.clone();
    blocking(move || accept(&app, &root, &answer.body, &state_dir, held)).await
}

/// Follows the fleet document for the daemon's whole life: the card's box facts each turn (a
/// restriction may name firmware versions or models), and, with `[enrol]` and `[registry]`, a
/// fetch soon after start and then every `fleet_poll_secs` (±20 %), after a failure sooner
/// (from `retry_min_secs`) but never later than `fleet_poll_secs` (+20 %), a `Retry-After`
/// honoured up to twice that: the fleet is the emergency channel, and a box that backed off like
/// the certificate renewal (to hours) or obeyed a day's `Retry-After` would apply a restriction
/// that late. A reload re-plans the next fetch with its `fleet_poll_secs`. A failure changes
/// nothing the box holds.
pub async fn follow(app: Arc<App>) {
    let mut reloads = app.current.watch();
    // The first fetch within two seconds of start: boxes that boot together spread a little.
    let mut due =
        tokio::time::Instant::now() + Duration::from_secs(2).mul_f64(crate::enrol::jitter());
    let mut reloaded = false;
    loop {
        reloads.borrow_and_update();
        let snap = app.snapshot();
        let facts = snap.sources().with_wifi(&app.wifi).box_facts().await;
        app.fleet.update(|s| s.facts = Some(facts));
        let wait = match snap
            .config
            .enrol
            .as_ref()
            .filter(|_| snap.config.common.registry.is_some())
        {
            None => None,
            Some(e) if std::mem::take(&mut reloaded) => {
                let next = crate::enrol::backoff(0, e.fleet_poll, e.fleet_poll);
                due = due.min(tokio::time::Instant::now() + next);
                continue;
            }
            Some(e) if tokio::time::Instant::now() >= due => {
                let result = fetch(&app, e, reloads.clone()).await;
                let now = boxapi_core::time::unix_now() as i64;
                let mut wait = crate::enrol::backoff(0, e.fleet_poll, e.fleet_poll);
                app.fleet.update(|s| match result {
                    Ok(()) => {
                        (s.last_fetch, s.last_error, s.failures) = (Some(now), None, 0);
                    }
                    Err((err, retry_after)) => {
                        let min = e.retry_min.min(e.fleet_poll);
                        let max = e.retry_max.min(e.fleet_poll);
                        let asked = retry_after.map(|r| r.min(e.fleet_poll * 2));
                        wait = crate::enrol::retry_wait(s.failures, min, max, asked);
                        s.failures = s.failures.saturating_add(1);
                        crate::enrol::failed_event("fleet_fetch_failed", &err, wait, retry_after);
                        s.last_error = Some(err);
                    }
                });
                due = tokio::time::Instant::now() + wait;
                Some(due)
            }
            Some(_) => Some(due),
        };
        tokio::select! {
            _ = sleep_until(wait) => {}
            changed = reloads.changed() => {
                if changed.is_err() {
                    return;
                }
                reloaded = true;
            }
        }
    }
}

/// Until `at`, or for ever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
