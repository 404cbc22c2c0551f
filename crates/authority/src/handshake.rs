//! Refused device certificates: the mutual-TLS handshakes the client-certificate verifier failed
//! (another CA, revoked, expired), counted by reason and logged once per peer and reason a minute.
use crate::metrics::{CertRefusal, Metrics};
use boxapi_core::log;
use rustls::CertificateError as E;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A peer's refusals for one reason are logged at most once in this time; the others are counted
/// and said in its next line (`unlogged`).
const EVERY: Duration = Duration::from_secs(60);
/// Peers and reasons remembered: a flood from many addresses is counted, not logged, beyond it.
const MAX_REMEMBERED: usize = 4096;

/// When each (peer, reason) was last logged and how many refusals went unlogged since.
#[derive(Default)]
pub struct Refusals {
    seen: Mutex<HashMap<(IpAddr, CertRefusal), (Instant, u64)>>,
}

/// The verifier's reason when `e` (a failed `TlsAcceptor::accept`) is a refused client certificate.
pub fn certificate_error(e: &std::io::Error) -> Option<&E> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(c) => Some(c),
        _ => None,
    }
}

/// The reason as the log and the metric's label say it.
pub fn refusal(e: &E) -> CertRefusal {
    match e {
        E::UnknownIssuer => CertRefusal::unknown_ca,
        E::Revoked => CertRefusal::revoked,
        E::Expired | E::ExpiredContext { .. } => CertRefusal::expired,
        E::NotValidYet | E::NotValidYetContext { .. } => CertRefusal::not_yet_valid,
        E::UnknownRevocationStatus => CertRefusal::unknown_revocation_status,
        E::ExpiredRevocationList | E::ExpiredRevocationListContext { .. } => {
            CertRefusal::crl_expired
        }
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => CertRefusal::not_for_client_auth,
        _ => CertRefusal::invalid,
    }
}

impl Refusals {
    /// Counts and (bounded) logs a handshake from `peer` that failed with `e`, when `e` is the
    /// refusal of its certificate; any other failure (plain HTTP, an old TLS version, a reset) is
    /// no news to an operator and passes silently, as before.
    pub fn note(&self, metrics: &Metrics, peer: IpAddr, e: &std::io::Error) {
        let Some(cert) = certificate_error(e) else {
            return;
        };
        let reason = refusal(cert);
        metrics.device_certificate_refused(reason);
        let Some(unlogged) = self.due(peer, reason, Instant::now()) else {
            return;
        };
        log::event(
            "device_certificate_refused",
            &[
                ("peer", &peer.to_string()),
                ("reason", reason.as_str()),
                ("detail", &cert.to_string()),
                ("unlogged", &unlogged.to_string()),
            ],
        );
    }

    /// Whether a refusal of (`peer`, `reason`) at `now` is logged, and with how many unlogged
    /// before it.
    fn due(&self, peer: IpAddr, reason: CertRefusal, now: Instant) -> Option<u64> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((logged, unlogged)) = seen.get_mut(&(peer, reason)) {
            if now.duration_since(*logged) < EVERY {
                *unlogged += 1;
                return None;
            }
            let before = *unlogged;
            (*logged, *unlogged) = (now, 0);
            return Some(before);
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, (logged, _)| now.duration_since(*logged) < EVERY);
            if seen.len() >= MAX_REMEMBERED {
                return None;
            }
        }
        seen.insert((peer, reason), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_peer_and_reason_a_minute_and_bounded() {
        let r = Refusals::default();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t = Instant::now();
        assert_eq!(r.due(a, CertRefusal::unknown_ca, t), Some(0));
        assert_eq!(r.due(a, CertRefusal::unknown_ca, t), None);
        assert_eq!(r.due(a, CertRefusal::unknown_ca, t + EVERY / 2), None);
        // Another reason, another peer: news.
        assert_eq!(r.due(a, CertRefusal::revoked, t), Some(0));
        assert_eq!(r.due(b, CertRefusal::unknown_ca, t), Some(0));
        // A minute on: logged again, saying how many were not.
        assert_eq!(r.due(a, CertRefusal::unknown_ca, t + EVERY), Some(2));
        assert_eq!(r.due(a, CertRefusal::unknown_ca, t + EVERY), None);
        // Full of recent peers: new ones are counted only; room again once they are a minute old.
        let full = Refusals::default();
        for i in 0..MAX_REMEMBERED {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(i as u128));
            assert_eq!(full.due(ip, CertRefusal::expired, t), Some(0));
        }
        assert_eq!(full.due(a, CertRefusal::expired, t), None);
        assert_eq!(full.due(a, CertRefusal::expired, t + EVERY), Some(0));
        assert_eq!(full.seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn only_certificate_errors_are_refusals() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let revoked = io(rustls::Error::InvalidCertificate(E::Revoked));
        assert_eq!(certificate_error(&revoked), Some(&E::Revoked));
        assert_eq!(refusal(&E::UnknownIssuer), CertRefusal::unknown_ca);
        assert_eq!(refusal(&E::BadEncoding), CertRefusal::invalid);
        for other in [
            io(rustls::Error::DecryptError),
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        ] {
            assert_eq!(certificate_error(&other), None);
        }
    }
}
