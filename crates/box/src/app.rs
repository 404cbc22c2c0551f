//! The daemon's shared state: the configuration snapshot in force, the control state, the LAN
//! view, rate limits and connection slots. The request path reads it; only the daemon and the
//! control commands change it.
use crate::activity::Activity;
use crate::lan::{self, Endpoint, Lan};
use crate::ratelimit::Limiter;
use crate::snapshot::Snapshot;
use boxapi_core::control::{Control, Mode, State};
use boxapi_core::daemon::Current;
use boxapi_core::fair::Slots;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Everything the request path shares.
pub struct App {
    /// The snapshot in force; tasks that follow the configuration (the certificate renewal)
    /// watch its swaps rather than poll, so a reload reaches them at once.
    pub current: Current<Snapshot>,
    pub control: Control,
    pub lan: Lan,
    pub limiter: Limiter,
    /// The box's own certificate: when it renews next and what went wrong last (`ctl status`).
    pub renewal: std::sync::Mutex<Renewal>,
    /// Single use of assertions and quotas of the on-box token endpoint, since this start.
    pub grants: boxapi_core::grants::MemoryGrants,
    /// Which tools read the card and when, for the subscriber (`ctl tools`).
    pub activity: Activity,
    /// Connection slots: `server.max_connections`, a fair share per terminal.
    pub slots: Arc<Slots>,
    /// What nl80211 says of the radios and stations, refreshed in the background.
    pub wifi: Arc<crate::card::wifi::Wifi>,
    /// The terminals with a counters stream open (one each).
    pub streams: Arc<crate::streams::Streams>,
    /// The fleet document applied and its restriction (issue 23).
    pub fleet: crate::fleet::Fleet,
    /// The listeners open now (the server loop and `ctl enable` both open them).
    listeners: Mutex<Listeners>,
}

/// The listeners open now, by endpoint.
pub(crate) type Listeners = BTreeMap<Endpoint, Active>;

/// A listener being served: its address and its accept loop (the server loop starts and stops
/// them; `App` keeps the set, which `ctl enable` changes too).
pub(crate) struct Active {
    pub(crate) local: std::net::SocketAddr,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Where the box's own certificate renewal stands.
#[derive(Debug, Clone, Default)]
pub struct Renewal {
    /// When the next renewal is due (Unix seconds), once `[enrol]` is configured.
    pub renew_at: Option<i64>,
    /// The CA's suggested renewal time (ACME ARI) from the last enrolment, with the notAfter of
    /// the certificate it was given for: a certificate installed some other way (`boxapi enrol`)
    /// is not renewed on its predecessor's advice.
    pub ari: Option<(i64, i64)>,
    /// The last renewal error, cleared by a success.
    pub last_error: Option<String>,
    /// Failed attempts in a row (the backoff's exponent).
    pub failures: u32,
    /// No attempt before this time (Unix seconds): after a failure, the jittered backoff; after
    /// a success, `retry_min`, so that a certificate that is due again at once (a tiny
    /// `renew_fraction`, a CA hint in the past) never makes the box ask the CA in a loop.
    pub hold_until: Option<i64>,
}

impl Renewal {
    /// Forgets the schedule, backoff and error earned under a previous `[enrol]` (or none); the
    /// CA's hint stays, since it is tied to the certificate it was given for.
    pub fn restart(&mut self) {
        *self = Renewal {
            ari: self.ari,
            ..Renewal::default()
        };
    }

    /// When the next attempt is due for the certificate in force (`(notBefore, notAfter)`, `None`
    /// when unreadable: at once, within the hold).
    pub fn due(&self, cert: Option<(i64, i64)>, fraction: f64, now: i64) -> i64 {
        let scheduled = match cert {
            Some((nb, na)) => {
                let ari = self.ari.filter(|&(of, _)| of == na).map(|(_, at)| at);
                crate::enrol::renew_at(nb, na, fraction, ari)
            }
            None => now,
        };
        self.hold_until
            .map_or(scheduled, |hold| hold.max(scheduled))
    }
}

impl App {
    pub fn new(snapshot: Snapshot, state: State, activity: Activity) -> Arc<App> {
        let s = &snapshot.config.common.server;
        let limiter = Limiter::new(s.rate_limit_per_second, s.rate_limit_burst);
        let slots = Slots::new(s.max_connections, s.max_connections_per_terminal);
        let fleet = crate::fleet::Fleet::default();
        fleet.adopt(&snapshot.trust);
        Arc::new(App {
            current: Current::new(snapshot),
            control: Control::new(state),
            lan: Lan::default(),
            limiter,
            activity,
            grants: boxapi_core::grants::MemoryGrants::new(
                boxapi_core::authz::MAX_REPLAY_PER_TOOL,
                boxapi_core::time::unix_now(),
            ),
            renewal: Default::default(),
            slots,
            streams: Arc::default(),
            wifi: Arc::default(),
            listeners: Mutex::default(),
            fleet,
        })
    }

    /// The configuration in force now; a request keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.get()
    }

    pub(crate) fn listeners(&self) -> MutexGuard<'_, Listeners> {
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
        let server = &snap.config.common.server;
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

impl boxapi_core::daemon::Daemon for App {
    type Snapshot = Snapshot;

    fn current(&self) -> &Current<Snapshot> {
        &self.current
    }

    fn slots(&self) -> &Slots {
        &self.slots
    }

    fn adopt(&self, new: &Snapshot) {
        let s = &new.config.common.server;
        self.limiter
            .configure(s.rate_limit_per_second, s.rate_limit_burst);
        self.fleet.adopt(&new.trust);
    }
}

#[cfg(test)]
mod tests {
    use super::Renewal;

    #[test]
    fn renewal_is_held_after_a_success_and_a_failure() {
        let now = 1_000;
        let fresh = Renewal::default();
        // Due at two thirds of its life.
        assert_eq!(fresh.due(Some((0, 3_000)), 2.0 / 3.0, now), 2_000);
        // A certificate already due (renew_fraction 0) waits for the hold, not in a loop.
        let held = Renewal {
            hold_until: Some(now + 60),
            ..Renewal::default()
        };
        assert_eq!(held.due(Some((now, now + 3_000)), 0.0, now), now + 60);
        // The CA's hint counts for the certificate it was given for only.
        let hinted = Renewal {
            ari: Some((3_000, 1_500)),
            ..Renewal::default()
        };
        assert_eq!(hinted.due(Some((0, 3_000)), 2.0 / 3.0, now), 1_500);
        assert_eq!(hinted.due(Some((0, 4_500)), 2.0 / 3.0, now), 3_000);
        // A new `[enrol]` starts afresh: no hold, error or schedule of the old one; the hint stays.
        let mut failed = Renewal {
            renew_at: Some(now + 60),
            last_error: Some("refused".into()),
            failures: 4,
            hold_until: Some(now + 3_600),
            ari: Some((3_000, 1_500)),
        };
        failed.restart();
        assert_eq!(failed.due(Some((0, 3_000)), 2.0 / 3.0, now), 1_500);
        assert_eq!(
            (failed.renew_at, failed.last_error, failed.failures),
            (None, None, 0)
        );
    }
}
