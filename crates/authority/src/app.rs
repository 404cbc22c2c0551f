//! The authority's shared state: the configuration in force, the control state (suspension,
//! run-time revocations), the token endpoint's replay cache and quotas, connection slots, the ACME
//! account.
use crate::snapshot::Snapshot;
use boxapi_core::control::{Control, State};
use std::sync::{Arc, RwLock};
use tokio::sync::Semaphore;

pub struct App {
    snapshot: RwLock<Arc<Snapshot>>,
    pub control: Control,
    pub authz: boxapi_core::authz::State,
    /// One permit per open connection (`server.max_connections`).
    pub connections: Arc<Semaphore>,
    /// The ACME account and the bound on concurrent issuance (kept across reloads).
    pub issuer: crate::acme::Issuer,
}

impl App {
    pub fn new(snapshot: Snapshot, state: State) -> Arc<App> {
        let connections = Arc::new(Semaphore::new(snapshot.config.server.max_connections));
        Arc::new(App {
            snapshot: RwLock::new(Arc::new(snapshot)),
            control: Control::new(state),
            authz: Default::default(),
            connections,
            issuer: Default::default(),
        })
    }

    /// The configuration in force now; a request keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace_snapshot(&self, new: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }
}
