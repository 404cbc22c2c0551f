//! The authority's shared state: the configuration in force, the control state (suspension,
//! run-time revocations), the store of single-use assertions, quotas and shared revocations, the
//! metrics, connection slots, the ACME account.
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::store::Store;
use boxapi_core::control::{Control, State};
use boxapi_core::daemon::Current;
use boxapi_core::fair::Slots;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// This replica's copy of the shared (Redis) revocations, in `state_dir`: what it re-seeds into a
/// Redis that lost its data, even after a restart of everything.
const SHARED_REVOCATIONS: &str = "shared-revocations.json";
/// A list of tool ids; anything far larger is not ours.
const SHARED_REVOCATIONS_MAX_BYTES: u64 = 1 << 20;

pub struct App {
    pub current: Current<Snapshot>,
    pub control: Control,
    pub store: Store,
    pub metrics: Metrics,
    /// Connection slots: `server.max_connections`, a fair share per terminal.
    pub slots: Arc<Slots>,
    /// The ACME account and the bound on concurrent issuance (kept across reloads).
    pub issuer: crate::acme::Issuer,
    /// Device certificates refused at the handshake: counted, and logged within bounds.
    pub refusals: crate::handshake::Refusals,
    /// The signed fleet document boxes fetch (issue 23), if one was published.
    pub fleet: crate::fleet::Fleet,
}

impl App {
    pub fn new(snapshot: Snapshot, state: State, store: Store) -> Arc<App> {
        let s = &snapshot.config.common.server;
        let slots = Slots::new(s.max_connections, s.max_connections_per_terminal);
        Arc::new(App {
            current: Current::new(snapshot),
            control: Control::new(state),
            store,
            metrics: Metrics::new(),
            slots,
            issuer: Default::default(),
            refusals: Default::default(),
            fleet: Default::default(),
        })
    }

    /// The configuration in force now; a request keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.get()
    }

    /// Revoked at run time, here or (shared store) on any replica, as last known. For decisions
    /// that must not miss a revocation, the token endpoint also checks the copy is fresh.
    pub fn is_revoked(&self, tool: &str) -> bool {
        self.control.is_revoked(tool) || self.store.revoked_view().contains(tool)
    }
}

impl boxapi_core::daemon::Daemon for App {
    type Snapshot = Snapshot;

    fn current(&self) -> &Current<Snapshot> {
        &self.current
    }

    fn slots(&self) -> &Slots {
        &self.slots
    }

    /// The new registry's revocations reach the other replicas at once.
    fn adopted(&self) {
        note_registry(self);
    }
}

fn shared_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SHARED_REVOCATIONS)
}

/// The saved copy of the shared revocations (empty when there is none or it is unreadable).
pub fn load_shared_revocations(state_dir: &Path) -> BTreeSet<String> {
    boxapi_core::files::read_limited(&shared_path(state_dir), SHARED_REVOCATIONS_MAX_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Keeps the saved copy in step with the shared revocations (`files::write_atomic`).
pub async fn save_shared_revocations(app: Arc<App>, state_dir: PathBuf) {
    let Some(mut changes) = app.store.watch_revoked() else {
        return;
    };
    while changes.changed().await.is_ok() {
        let set = changes.borrow_and_update().clone();
        let path = shared_path(&state_dir);
        let text = serde_json::to_vec(&*set).unwrap_or_default();
        // fsyncs: off the runtime's threads.
        let written = tokio::task::spawn_blocking(move || {
            boxapi_core::files::write_atomic(&path, &text, 0o600).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = written {
            boxapi_core::log::event("state_error", &[("error", &e)]);
        }
    }
}

/// Follows the fleet document shared through the store (Redis): a newer one, published on another
/// replica, is fetched, verified and served here within `revocation_poll`; when the store holds an
/// older one or none (Redis lost its data), this replica's is offered to it again, as the
/// revocations are re-seeded.
pub async fn follow_shared_fleet(app: Arc<App>) {
    let Some(mut changes) = app.store.watch_fleet() else {
        return;
    };
    loop {
        let shared = *changes.borrow_and_update();
        let here = app.fleet.current();
        let outcome = match (shared, &here) {
            (Some(v), _) if here.as_ref().is_none_or(|h| h.version < v) => adopt(&app).await,
            (_, Some(h)) if shared.is_none_or(|v| v < h.version) => app
                .store
                .publish_fleet(h.version, &h.jws)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            boxapi_core::log::event("fleet_document_refused", &[("error", &e)]);
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Fetches the shared document and serves it when it verifies and is newer.
async fn adopt(app: &Arc<App>) -> Result<(), String> {
    let Some(jws) = app
        .store
        .fleet_document()
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let app = app.clone();
    // Verification and the fsynced write: off the runtime's threads.
    let adopted = tokio::task::spawn_blocking(move || {
        app.fleet
            .adopt(&app.snapshot(), &jws)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))?;
    if let Some(v) = adopted {
        boxapi_core::log::event(
            "fleet_published",
            &[("version", &v.to_string()), ("from", "store")],
        );
    }
    Ok(())
}

/// Tells the store the signed registry in force (at start and after each reload), so that its
/// revocations reach every replica within a second, before they reload it themselves.
pub fn note_registry(app: &App) {
    let snap = app.snapshot();
    let revoked: Vec<String> = snap
        .trust
        .registry
        .tools()
        .iter()
        .filter(|t| t.revoked)
        .map(|t| t.id.clone())
        .collect();
    app.store
        .note_registry(snap.trust.registry_version, &revoked);
}
