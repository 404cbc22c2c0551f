//! Authority metrics for `GET /metrics` (served on its own listen address), built with
//! `prometheus-client` rather than formatted by hand. Label values are bounded: tool ids come
//! from the registry (callers must pass a registered id, or "unknown"), reasons and kinds are
//! fixed enums/strings, so the series count cannot be inflated by clients.
use crate::store::StoreError;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// Content-Type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a token request was refused (the RFC 6749 error plus the quota and the store).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefusedReason {
    invalid_request,
    invalid_client,
    replayed_assertion,
    revoked,
    invalid_scope,
    unsupported_grant_type,
    quota,
    /// 503: the shared store could not be consulted (fail closed).
    store_unavailable,
    /// Per-box audiences: no box is known for the caller's address.
    invalid_target,
    /// 503: the operator suspended token issuance.
    suspended,
}

/// Why the handshake refused a device certificate (`handshake`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CertRefusal {
    /// Not issued by `enrolment.device_ca`.
    unknown_ca,
    /// In one of `enrolment.device_crls`.
    revoked,
    expired,
    not_yet_valid,
    /// No CRL covers it.
    unknown_revocation_status,
    /// A CRL past its next update.
    crl_expired,
    /// Not for TLS client authentication (extended key usage).
    not_for_client_auth,
    /// Anything else the verifier refused (malformed, bad signature, ...).
    invalid,
}

impl CertRefusal {
    /// The label's text, for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            CertRefusal::unknown_ca => "unknown_ca",
            CertRefusal::revoked => "revoked",
            CertRefusal::expired => "expired",
            CertRefusal::not_yet_valid => "not_yet_valid",
            CertRefusal::unknown_revocation_status => "unknown_revocation_status",
            CertRefusal::crl_expired => "crl_expired",
            CertRefusal::not_for_client_auth => "not_for_client_auth",
            CertRefusal::invalid => "invalid",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertRefusalLabels {
    reason: CertRefusal,
}

/// What `GET /v1/locate` found.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LocateResult {
    found,
    not_found,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LocateLabels {
    result: LocateResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    tool: String,
    reason: RefusedReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreErrorLabels {
    op: &'static str,
    kind: &'static str,
}

/// A fleet document version: only versions this replica served within the window, so a few.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetLabels {
    version: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// 0.5 ms … ~4 s: a token request is sub-millisecond with the memory store, a round trip or
/// two with Redis, and bounded by the store's response timeout (500 ms by default).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    issued: Family<ToolLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    store_errors: Family<StoreErrorLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    located: Family<LocateLabels, Counter>,
    cert_refused: Family<CertRefusalLabels, Counter>,
    fleet_boxes: Family<FleetLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("boxapi_authority");
        let issued = Family::<ToolLabels, Counter>::default();
        let refused = Family::<RefusedLabels, Counter>::default();
        let store_errors = Family::<StoreErrorLabels, Counter>::default();
        let latency: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        // Counters get the `_total` suffix from the encoder.
        registry.register(
            "tokens_issued",
            "Access tokens issued, per tool",
            issued.clone(),
        );
        registry.register(
            "tokens_refused",
            "Token requests refused, per tool and reason",
            refused.clone(),
        );
        registry.register(
            "store_errors",
            "Shared-store (Redis) calls that failed, per operation and kind",
            store_errors.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time to answer a request, per endpoint",
            Unit::Seconds,
            latency.clone(),
        );
        let located = Family::<LocateLabels, Counter>::default();
        registry.register("locate", "Box locator answers, per result", located.clone());
        let cert_refused = Family::<CertRefusalLabels, Counter>::default();
        registry.register(
            "device_certificates_refused",
            "Mutual-TLS handshakes that refused a device certificate, per reason",
            cert_refused.clone(),
        );
        let fleet_boxes = Family::<FleetLabels, Gauge>::default();
        registry.register(
            "fleet_boxes",
            "Boxes (device identities) whose last GET /v1/fleet within [authority] fleet_window_ms got this document version, at this replica",
            fleet_boxes.clone(),
        );
        Metrics {
            fleet_boxes,
            cert_refused,
            located,
            registry,
            issued,
            refused,
            store_errors,
            latency,
        }
    }

    pub fn token_issued(&self, tool: &str) {
        self.issued
            .get_or_create(&ToolLabels {
                tool: tool.to_owned(),
            })
            .inc();
    }

    pub fn token_refused(&self, tool: &str, reason: RefusedReason) {
        self.refused
            .get_or_create(&RefusedLabels {
                tool: tool.to_owned(),
                reason,
            })
            .inc();
    }

    /// `op` is a fixed name of the store operation ("use_jti", "take_token", ...).
    pub fn store_error(&self, op: &'static str, e: &StoreError) {
        self.store_errors
            .get_or_create(&StoreErrorLabels { op, kind: e.kind() })
            .inc();
    }

    pub fn observe_latency(&self, endpoint: &'static str, took: Duration) {
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    pub fn located(&self, result: LocateResult) {
        self.located.get_or_create(&LocateLabels { result }).inc();
    }

    pub fn device_certificate_refused(&self, reason: CertRefusal) {
        self.cert_refused
            .get_or_create(&CertRefusalLabels { reason })
            .inc();
    }

    /// Sets the boxes per fleet document version (`fleet::Seen::counts`), before an encoding.
    pub fn fleet_boxes(&self, counts: &std::collections::BTreeMap<u64, u64>) {
        self.fleet_boxes.clear();
        for (&version, &n) in counts {
            self.fleet_boxes
                .get_or_create(&FleetLabels { version })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The registry in OpenMetrics text (ends with `# EOF`), served with [`CONTENT_TYPE`].
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_openmetrics_text() {
        let m = Metrics::new();
        m.token_issued("nperf");
        m.token_issued("nperf");
        m.token_refused("nperf", RefusedReason::quota);
        m.store_error("use_jti", &StoreError::Timeout(Duration::from_millis(500)));
        m.observe_latency("token", Duration::from_millis(3));
        m.device_certificate_refused(CertRefusal::revoked);
        m.fleet_boxes(&std::collections::BTreeMap::from([(3, 7)]));
        let text = m.encode().expect("encode");
        for want in [
            "boxapi_authority_fleet_boxes{version=\"3\"} 7",
            "# TYPE boxapi_authority_tokens_issued counter",
            "boxapi_authority_tokens_issued_total{tool=\"nperf\"} 2",
            "boxapi_authority_tokens_refused_total{tool=\"nperf\",reason=\"quota\"} 1",
            "boxapi_authority_store_errors_total{op=\"use_jti\",kind=\"timeout\"} 1",
            "# UNIT boxapi_authority_request_duration_seconds seconds",
            "boxapi_authority_request_duration_seconds_bucket{le=\"0.004\",endpoint=\"token\"} 1",
            "boxapi_authority_request_duration_seconds_count{endpoint=\"token\"} 1",
            "boxapi_authority_device_certificates_refused_total{reason=\"revoked\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
