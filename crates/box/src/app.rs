//! The daemon's shared state: the configuration snapshot in force, the control state, the LAN
//! view, rate limits and connection slots. The request path reads it; only the daemon and the
//! control commands change it.
use crate::activity::Activity;
use crate::lan::{self, Endpoint, Lan};
use crate::ratelimit::Limiter;
use crate::server::Active;
use crate::snapshot::Snapshot;
use boxapi_core::control::{Control, Mode, State};
use boxapi_core::fair::Slots;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Everything the request path shares.
pub struct App {
    snapshot: RwLock<Arc<Snapshot>>,
    pub control: Control,
    pub lan: Lan,
    pub limiter: Limiter,
    /// The box's own certificate: when it renews next and what went wrong last (`ctl status`).
    pub renewal: std::sync::Mutex<Renewal>,
    /// Replay cache and quotas of the on-box token endpoint.
    pub authz: boxapi_core::authz::State,
    /// Which tools read the card and when, for the subscriber (`ctl tools`).
    pub activity: Activity,
    /// Connection slots: `server.max_connections`, a fair share per terminal.
    pub slots: Arc<Slots>,
    /// The terminals with a counters stream open (one each).
    pub streams: Arc<crate::stream::Streams>,
    /// The listeners open now (the server loop and `ctl enable` both open them).
    listeners: Mutex<BTreeMap<Endpoint, Active>>,
}

/// Where the box's own certificate renewal stands.
#[derive(Debug, Clone, Default)]
pub struct Renewal {
    /// When the next renewal is due (Unix seconds), once `[enrol]` is configured.
    pub renew_at: Option<i64>,
    /// The CA's suggested renewal time (ACME ARI) from the last enrolment.
    pub ari: Option<i64>,
    /// The last renewal error, cleared by a success.
    pub last_error: Option<String>,
    /// Failed attempts in a row, and when to try again (jittered exponential backoff).
    pub failures: u32,
    pub retry_at: Option<i64>,
}

impl App {
    pub fn new(snapshot: Snapshot, state: State, activity: Activity) -> Arc<App> {
        let s = &snapshot.config.server;
        let limiter = Limiter::new(s.rate_limit_per_second, s.rate_limit_burst);
        let slots = Slots::new(s.max_connections, s.max_connections_per_terminal);
        Arc::new(App {
            snapshot: RwLock::new(Arc::new(snapshot)),
            control: Control::new(state),
            lan: Lan::default(),
            limiter,
            activity,
            authz: Default::default(),
            renewal: Default::default(),
            slots,
            streams: Arc::default(),
            listeners: Mutex::default(),
        })
    }

    /// The configuration in force now; a request keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a new, fully built configuration.
    pub fn replace_snapshot(&self, new: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    pub(crate) fn listeners(&self) -> MutexGuard<'_, BTreeMap<Endpoint, Active>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoints to listen on now (none while disabled), refreshing the LAN prefixes.
    pub fn desired_endpoints(&self) -> Vec<Endpoint> {
        if self.control.mode() == Mode::Disabled {
            let _ = self.endpoints();
            return Vec::new();
        }
        self.endpoints()
    }

    /// The endpoints the configuration asks for, whatever the mode, refreshing the LAN prefixes.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let snap = self.snapshot();
        let server = &snap.config.server;
        // Interface addresses matter only for listen_interfaces and for explicit non-loopback
        // addresses (whose interface prefix is the LAN); a loopback-only daemon needs none.
        let needs_interfaces = !server.listen_interfaces.is_empty()
            || server.listen.iter().any(|l| !l.ip().is_loopback());
        let addrs = if needs_interfaces {
            lan::interface_addrs()
        } else {
            Vec::new()
        };
        self.lan.refresh(server, &addrs).into_iter().collect()
    }
}
