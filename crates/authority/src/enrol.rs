//! Enrolment of boxes (contract §10, docs/certificates.md): `POST /v1/enrol` (a certificate for
//! the box's own name, for its CSR) and `POST /v1/address` (the name's A/AAAA records only).
//!
//! The caller is a box authenticated by its device certificate (mutual TLS, verified against
//! `[enrolment] device_ca` and its CRLs by the listener). Its name is derived from that
//! certificate's key (`boxapi_core::names::box_name`), never taken from the request. Everything
//! the request carries is checked before anything changes; then the device's issuance limit (in
//! the shared store), then the DNS records, then ACME.
use crate::acme::{self, AcmeSettings, Blame, DnsSettings, Eab, Tsig};
use crate::app::App;
use crate::store::{Issuance, IssuanceTicket, StoreError};
use boxapi_core::config::{Config, Problem};
use boxapi_core::{b64, log, names};
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hyper::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
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

/// Enrolment as configured: built whole from `[enrolment]`, `[acme]`, `[dns]` and the files they
/// name, or not at all.
pub struct Settings {
    pub zone: String,
    pub acme: AcmeSettings,
    pub dns: DnsSettings,
    /// Verifies device certificates (device CA, CRLs); lets clients without one through, for
    /// `/v1/token`.
    pub verifier: Arc<dyn ClientCertVerifier>,
    pub limit: IssuanceLimit,
}

/// How many certificates one device may get: `[acme] max_issuances_per_device` within a rolling
/// `issuance_window_days`, renewals included.
#[derive(Debug, Clone, Copy)]
pub struct IssuanceLimit {
    pub max: u32,
    pub window: Duration,
}

fn file_problem(problems: &mut Vec<Problem>, key: &str, path: &Path, why: impl std::fmt::Display) {
    problems.push(Problem::file(key, path, why));
}

fn read_file(problems: &mut Vec<Problem>, key: &str, path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            file_problem(problems, key, path, format_args!("cannot read: {e}"));
            None
        }
    }
}

/// Every certificate of a PEM bundle; a problem when there is none or one does not parse.
fn pem_certs(
    problems: &mut Vec<Problem>,
    key: &str,
    path: &Path,
) -> Option<Vec<CertificateDer<'static>>> {
    let pem = read_file(problems, key, path)?;
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            file_problem(problems, key, path, "no CERTIFICATE block");
            None
        }
        Err(e) => {
            file_problem(problems, key, path, format_args!("not PEM: {e}"));
            None
        }
    }
}

/// A secret file's text, decoded; the problem never quotes the content.
fn secret(
    problems: &mut Vec<Problem>,
    key: &str,
    path: &Path,
    decode: fn(&[u8]) -> Option<Vec<u8>>,
    what: &str,
    min_len: usize,
) -> Option<Vec<u8>> {
    let raw = read_file(problems, key, path)?;
    let text: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    match decode(&text) {
        Some(s) if s.len() >= min_len => Some(s),
        Some(_) => {
            file_problem(
                problems,
                key,
                path,
                format_args!("the secret is shorter than {min_len} bytes"),
            );
            None
        }
        None => {
            file_problem(problems, key, path, format_args!("not {what}"));
            None
        }
    }
}

fn url_decode_lenient(text: &[u8]) -> Option<Vec<u8>> {
    let unpadded: &[u8] = {
        let mut t = text;
        while let Some(rest) = t.strip_suffix(b"=") {
            t = rest;
        }
        t
    };
    b64::url_decode(unpadded)
}

impl Settings {
    /// `None` when `[enrolment]` is not configured, or (with the problems pushed) when it cannot
    /// be used.
    pub fn load(config: &Config, problems: &mut Vec<Problem>) -> Option<Settings> {
        let (Some(e), Some(a), Some(d)) = (&config.enrolment, &config.acme, &config.dns) else {
            return None;
        };
        let before = problems.len();

        // Device CA and CRLs: the client-certificate verifier.
        let ca_certs = pem_certs(problems, "enrolment.device_ca", &e.device_ca).unwrap_or_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in &ca_certs {
            if let Err(err) = roots.add(cert.clone()) {
                file_problem(problems, "enrolment.device_ca", &e.device_ca, err);
            }
        }
        let mut crls = Vec::new();
        for path in &e.device_crls {
            let Some(pem) = read_file(problems, "enrolment.device_crls", path) else {
                continue;
            };
            match CertificateRevocationListDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>()
            {
                Ok(list) if !list.is_empty() => {
                    for crl in &list {
                        if let Err(why) = acme::x509::check_crl(crl, &ca_certs) {
                            file_problem(problems, "enrolment.device_crls", path, why);
                        }
                    }
                    crls.extend(list)
                }
                Ok(_) => file_problem(problems, "enrolment.device_crls", path, "no X509 CRL block"),
                Err(err) => file_problem(
                    problems,
                    "enrolment.device_crls",
                    path,
                    format_args!("not PEM: {err}"),
                ),
            }
        }
        let verifier = if roots.is_empty() {
            None
        } else {
            let provider = Arc::new(boxapi_core::tls::provider());
            match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .with_crls(crls)
                .allow_unauthenticated()
                .build()
            {
                Ok(v) => Some(v),
                Err(err) => {
                    problems.push(Problem::invalid(
                        "enrolment.device_crls",
                        format_args!("cannot be used with enrolment.device_ca: {err}"),
                    ));
                    None
                }
            }
        };

        // ACME: the account's credentials (if already there), the CA's trust anchors, EAB.
        match std::fs::read(&a.account) {
            Ok(bytes) => {
                if let Err(why) = acme::parse_credentials(&bytes, &a.directory) {
                    file_problem(problems, "acme.account", &a.account, why);
                }
                if let Ok(meta) = std::fs::metadata(&a.account) {
                    use std::os::unix::fs::PermissionsExt;
                    if meta.permissions().mode() & 0o077 != 0 {
                        file_problem(
                            problems,
                            "acme.account",
                            &a.account,
                            "holds the account's private key: must not be readable by others (chmod 600)",
                        );
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let dir = a.account.parent().unwrap_or(Path::new("."));
                if !dir.is_dir() {
                    file_problem(
                        problems,
                        "acme.account",
                        &a.account,
                        "does not exist and its directory does not either",
                    );
                }
            }
            Err(err) => file_problem(problems, "acme.account", &a.account, err),
        }
        let https_roots =
            a.ca.as_ref()
                .map(|p| pem_certs(problems, "acme.ca", p).unwrap_or_default());
        let eab = a.eab.as_ref().and_then(|(kid, path)| {
            let key = secret(
                problems,
                "acme.eab_hmac_key_file",
                path,
                url_decode_lenient,
                "base64url",
                16,
            )?;
            Some(Eab {
                key_id: kid.clone(),
                hmac_key: key,
            })
        });

        // DNS: the TSIG key.
        let tsig_secret = secret(
            problems,
            "dns.tsig_secret_file",
            &d.tsig_secret_file,
            b64::std_decode,
            "base64",
            16,
        );
        let algorithm = match d.tsig_algorithm.as_str() {
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            _ => TsigAlgorithm::HmacSha256,
        };

        if problems.len() > before {
            return None;
        }
        let mut acme = AcmeSettings::new(a.directory.clone(), a.account.clone());
        acme.contact = a.contact.clone();
        acme.eab = eab;
        acme.https_roots = https_roots;
        let mut dns = DnsSettings::new(
            d.server,
            e.zone.clone(),
            Tsig {
                name: d.tsig_name.clone(),
                algorithm,
                secret: tsig_secret?,
            },
        );
        dns.ttl = d.ttl;
        Some(Settings {
            zone: e.zone.clone(),
            acme,
            dns,
            verifier: verifier?,
            limit: IssuanceLimit {
                max: a.max_issuances_per_device,
                window: a.issuance_window,
            },
        })
    }
}

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
        Ok(Issuance::LimitReached(retry)) => Err(Refusal {
            retry_after: Some(u32::try_from(retry.0).unwrap_or(u32::MAX)),
            ..refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many certificates for this device",
                format!(
                    "this device has reached the operator's limit of {} certificates per {} days \
                     (renewals included); the next one can be issued in {} s",
                    limit.max,
                    window / 86_400,
                    retry.0
                ),
            )
        }),
        Err(e) => {
            store_failed(app, "reserve_issuance", &e);
            Err(Refusal {
                retry_after: Some(u32::try_from(e.retry_after_secs()).unwrap_or(u32::MAX)),
                ..refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "Temporarily unavailable",
                    "certificate issuance is briefly unavailable (its shared state cannot be \
                     reached); retry after the Retry-After delay",
                )
            })
        }
    }
}

/// Uncounts an issuance that failed; if the store cannot be told, it stays counted (the safe
/// side: the device waits longer, the CA is never asked more).
async fn release_issuance(app: &App, name: &str, ticket: IssuanceTicket) {
    if let Err(e) = app.store.release_issuance(name, ticket).await {
        store_failed(app, "release_issuance", &e);
    }
}

/// `POST /v1/address`: the A/AAAA records of the device named `name`, nothing else.
pub async fn address(settings: &Settings, name: &str, body: &[u8]) -> Result<Value, Refusal> {
    let req = parse_json(body)?;
    let addresses = check_addresses(req.get("addresses").unwrap_or(&Value::Null))?;
    acme::dns::update_addresses(&settings.dns, name, &addresses)
        .await
        .map_err(|e| upstream(&e))?;
    Ok(json!({ "name": name, "addresses": addresses }))
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
