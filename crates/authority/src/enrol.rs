//! Enrolment of boxes (contract §10, docs/certificates.md): `POST /v1/enrol` (a certificate for
//! the box's own name, for its CSR) and `POST /v1/address` (the name's A/AAAA records only).
//!
//! The caller is a box authenticated by its device certificate (mutual TLS, verified against
//! `[enrolment] device_ca` and its CRLs by the listener). Its name is derived from that
//! certificate's key (`boxapi_core::names::box_name`), never taken from the request. Everything
//! the request carries is checked before anything changes; then the device's issuance limit (or,
//! for an address update, its address-update limit) in the shared store, then the DNS records,
//! then ACME.
use crate::acme::{self, Blame};
use crate::app::App;
use crate::enrol_settings::{IssuanceLimit, Settings};
use crate::store::{AddressUpdate, Issuance, IssuanceTicket, RetryAfterSecs, StoreError, HOUR};
use boxapi_core::{b64, log, names};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const ENROL_PATH: &str = "/v1/enrol";
pub const ADDRESS_PATH: &str = "/v1/address";
/// Request bodies are a CSR and a few addresses: at most this many bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// Addresses a box may publish under its name (the rule is shared with the box).
pub use names::MAX_ADDRESSES;
/// How long a request waits for one of the issuance slots before `503 busy`.
pub const SLOT_WAIT: Duration = Duration::from_secs(30);
/// `Retry-After` of a `503 busy`.
pub const BUSY_RETRY_AFTER: u32 = 10;

/// A refusal: status, the contract's `code`, a title, and a detail that names the cause (never
/// a key); `retry_after` for 503.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<u32>,
}

fn refuse(
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: impl Into<String>,
) -> Refusal {
    Refusal {
        status,
        code,
        title,
        detail: detail.into(),
        retry_after: None,
    }
}

pub fn invalid(detail: impl Into<String>) -> Refusal {
    refuse(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "Invalid request",
        detail,
    )
}

fn upstream(e: &acme::Error) -> Refusal {
    match e.blame() {
        Blame::Request => invalid(e.to_string()),
        Blame::Name => refuse(
            StatusCode::FORBIDDEN,
            "name_not_allowed",
            "Name not allowed",
            e.to_string(),
        ),
        Blame::Dns => refuse(
            StatusCode::BAD_GATEWAY,
            "dns_update_failed",
            "DNS update failed",
            e.to_string(),
        ),
        Blame::Acme => refuse(
            StatusCode::BAD_GATEWAY,
            "acme_failed",
            "Certificate issuance failed",
            e.to_string(),
        ),
    }
}

/// The device's name, from its verified client certificate.
pub fn device_name(settings: &Settings, device: Option<&[u8]>) -> Result<String, Refusal> {
    let Some(der) = device else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "device_certificate_required",
            "Device certificate required",
            "this endpoint is for boxes: connect with the box's device certificate (mutual TLS)",
        ));
    };
    names::box_name(der, &settings.zone).ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "device_certificate_required",
            "Device certificate required",
            "the device certificate's public key cannot be read",
        )
    })
}

/// Addresses a box may publish: private IPv4 (RFC 1918), IPv6 ULA (fc00::/7) or global unicast
/// (2000::/3); 1 to 8 of them, duplicates dropped.
pub fn check_addresses(v: &Value) -> Result<Vec<IpAddr>, Refusal> {
    let Some(items) = v.as_array() else {
        return Err(invalid("\"addresses\" must be an array of IP addresses"));
    };
    if items.is_empty() || items.len() > MAX_ADDRESSES {
        return Err(invalid(format!(
            "\"addresses\" must list 1 to {MAX_ADDRESSES} addresses, not {}",
            items.len()
        )));
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for item in items {
        let Some(ip) = item.as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
            return Err(invalid(format!("{item} is not an IP address")));
        };
        if !names::publishable(&ip) {
            return Err(invalid(format!(
                "{ip} cannot be a box's address: use private IPv4 (10/8, 172.16/12, 192.168/16), \
                 IPv6 ULA (fc00::/7) or global unicast IPv6 (2000::/3)"
            )));
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

fn parse_json(body: &[u8]) -> Result<serde_json::Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid("the body must be a JSON object")),
        Err(e) => Err(invalid(format!("the body is not JSON: {e}"))),
    }
}

/// `POST /v1/enrol` for the device named `name`, once the body has arrived: checks, the device's
/// issuance limit, DNS update, issuance.
pub async fn enrol(
    app: &App,
    settings: &Settings,
    name: &str,
    body: &[u8],
) -> Result<Value, Refusal> {
    let req = parse_json(body)?;
    let csr = req
        .get("csr")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("\"csr\" (base64url of the PKCS#10 DER) is required"))?;
    let csr = b64::url_decode(csr.as_bytes())
        .ok_or_else(|| invalid("\"csr\" is not base64url without padding"))?;
    let addresses = check_addresses(req.get("addresses").unwrap_or(&Value::Null))?;
    acme::x509::check_csr(&csr, name).map_err(|e| upstream(&e))?;

    // One enrolment at a time per name, claimed before waiting for a slot: a device cannot take
    // every slot, nor queue requests for them.
    let Some(_claim) = app.issuer.claim(name) else {
        return Err(busy(
            "an enrolment for this name is already under way; retry later",
        ));
    };
    // Counted before the slot wait, so a device past its limit is refused at once.
    let ticket = reserve_issuance(app, &settings.limit, name).await?;
    let issued = async {
        let Some(_slot) = app.issuer.slot(SLOT_WAIT).await else {
            return Err(busy("every issuance slot is taken; retry later"));
        };
        acme::dns::update_addresses(&settings.dns, name, &addresses)
            .await
            .map_err(|e| upstream(&e))?;
        app.issuer
            .issue(&settings.acme, &settings.dns, &csr, name)
            .await
            .map_err(|e| upstream(&e))
    }
    .await;
    // A failure gave no certificate: it does not count. (A request cut off midway stays
    // counted: the CA may have issued, and a box must not be able to hide issuances so.)
    let issued = match issued {
        Ok(issued) => issued,
        Err(refusal) => {
            release_issuance(app, name, ticket).await;
            return Err(refusal);
        }
    };
    Ok(json!({
        "name": name,
        "chain": issued.chain,
        "renew_after": issued.renew_after.map(boxapi_core::time::rfc3339),
    }))
}

fn busy(detail: &str) -> Refusal {
    Refusal {
        retry_after: Some(BUSY_RETRY_AFTER),
        ..refuse(StatusCode::SERVICE_UNAVAILABLE, "busy", "Busy", detail)
    }
}

/// Records a store failure (metrics, log); the caller answers 503 or keeps the count, never an
/// uncounted issuance.
fn store_failed(app: &App, op: &'static str, e: &StoreError) {
    app.metrics.store_error(op, e);
    log::event("store_error", &[("op", op), ("error", &e.to_string())]);
}

/// `429 rate_limited` with the `Retry-After` the store computed.
fn rate_limited(title: &'static str, detail: String, retry: RetryAfterSecs) -> Refusal {
    Refusal {
        retry_after: Some(u32::try_from(retry.0).unwrap_or(u32::MAX)),
        ..refuse(StatusCode::TOO_MANY_REQUESTS, "rate_limited", title, detail)
    }
}

/// `503 temporarily_unavailable` when the store that counts `what` cannot say (recorded first).
fn store_unavailable(app: &App, op: &'static str, e: &StoreError, what: &str) -> Refusal {
    store_failed(app, op, e);
    Refusal {
        retry_after: Some(u32::try_from(e.retry_after_secs()).unwrap_or(u32::MAX)),
        ..refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "Temporarily unavailable",
            format!(
                "{what} is briefly unavailable (its shared state cannot be reached); retry after \
                 the Retry-After delay"
            ),
        )
    }
}

/// Counts one issuance for `name`, or refuses: `429 rate_limited` past the limit, `503` when the
/// store cannot say.
async fn reserve_issuance(
    app: &App,
    limit: &IssuanceLimit,
    name: &str,
) -> Result<IssuanceTicket, Refusal> {
    let window = limit.window.as_secs();
    let now = boxapi_core::time::unix_now();
    match app
        .store
        .reserve_issuance(name, limit.max, window, now)
        .await
    {
        Ok(Issuance::Reserved(ticket)) => Ok(ticket),
        Ok(Issuance::LimitReached(retry)) => Err(rate_limited(
            "Too many certificates for this device",
            format!(
                "this device has reached the operator's limit of {} certificates per {} days \
                 (renewals included); the next one can be issued in {} s",
                limit.max,
                window / 86_400,
                retry.0
            ),
            retry,
        )),
        Err(e) => Err(store_unavailable(
            app,
            "reserve_issuance",
            &e,
            "certificate issuance",
        )),
    }
}

/// Uncounts an issuance that failed; if the store cannot be told, it stays counted (the safe
/// side: the device waits longer, the CA is never asked more).
async fn release_issuance(app: &App, name: &str, ticket: IssuanceTicket) {
    if let Err(e) = app.store.release_issuance(name, ticket).await {
        store_failed(app, "release_issuance", &e);
    }
}

/// `POST /v1/address`: the A/AAAA records of the device named `name`, nothing else. Counted
/// against `[dns] max_address_updates_per_hour` once the request is known good, before the DNS
/// server is asked; an update the DNS server then refuses stays counted (it reached the server,
/// which is what the limit spares).
pub async fn address(
    app: &App,
    settings: &Settings,
    name: &str,
    body: &[u8],
) -> Result<Value, Refusal> {
    let req = parse_json(body)?;
    let addresses = check_addresses(req.get("addresses").unwrap_or(&Value::Null))?;
    let limit = settings.max_address_updates_per_hour;
    let now = boxapi_core::time::unix_now();
    match app.store.count_address_update(name, limit, HOUR, now).await {
        Ok(AddressUpdate::Counted) => {}
        Ok(AddressUpdate::LimitReached(retry)) => {
            return Err(rate_limited(
                "Too many address updates for this device",
                format!(
                    "this device has reached the operator's limit of {limit} address updates per \
                     hour; the next one can be made in {} s",
                    retry.0
                ),
                retry,
            ))
        }
        Err(e) => {
            return Err(store_unavailable(
                app,
                "count_address_update",
                &e,
                "address publication",
            ))
        }
    }
    acme::dns::update_addresses(&settings.dns, name, &addresses)
        .await
        .map_err(|e| upstream(&e))?;
    Ok(json!({ "name": name, "addresses": addresses }))
}

/// The longest `POST /v1/enrol` may take once its body has arrived, from the bounds of each of
/// its steps: the store's count (and, on failure, its release), the wait for an issuance slot,
/// the A/AAAA update, the whole issuance, the withdrawal of its one challenge record (the order
/// names one identifier) and the renewal-window (ARI) request after it. `store_call` bounds
/// one store call. The listener must not cut an enrolment sooner: the issuance would stay
/// counted and the box would get nothing.
pub fn max_duration(settings: &Settings, store_call: Duration) -> Duration {
    let (dns, acme) = (&settings.dns, &settings.acme);
    store_call * 2
        + SLOT_WAIT
        + dns.request_timeout
        + acme.total_timeout
        + dns.request_timeout
        + acme.request_timeout
}

/// The one log event of an enrolment or address update: name, result, duration; no key.
pub fn log_outcome(event: &str, name: &str, result: &Result<Value, Refusal>, started: Instant) {
    let ms = started.elapsed().as_millis().to_string();
    match result {
        Ok(_) => log::event(
            event,
            &[("name", name), ("result", "ok"), ("duration_ms", &ms)],
        ),
        Err(r) => log::event(
            event,
            &[
                ("name", name),
                ("result", r.code),
                ("status", r.status.as_str()),
                ("duration_ms", &ms),
                ("detail", &r.detail),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Result<Vec<IpAddr>, Refusal> {
        check_addresses(&json!(list))
    }

    #[test]
    fn box_addresses_are_private_ula_or_global() {
        let ok = addrs(&[
            "10.0.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "fd00::1",
            "fc12::1",
            "2a01:e0a::1",
            "192.168.1.1",
        ])
        .unwrap();
        assert_eq!(ok.len(), 6, "duplicates dropped");
        for bad in [
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.1",
            "ff02::1",
            "0.0.0.0",
            "::",
            "8.8.8.8",
            "172.32.0.1",
            "::ffff:192.168.1.1",
            "192.168.1.1:80",
            "box",
        ] {
            let r = addrs(&[bad]).unwrap_err();
            assert_eq!(r.code, "invalid_request", "{bad}");
        }
        assert!(addrs(&[]).is_err());
        assert!(addrs(&["10.0.0.1"; 9]).is_err());
        assert!(check_addresses(&json!("10.0.0.1")).is_err());
        assert!(check_addresses(&json!([1])).is_err());
    }
}
