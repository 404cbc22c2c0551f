//! Enrolment as configured (`[enrolment]`, `[acme]`, `[dns]` and the files they name): checked
//! once, all problems reported, into what `enrol` serves with. Apart from `enrol` so that the
//! snapshot, which holds it, does not depend on the request handling.
use crate::acme::{self, AcmeSettings, DnsSettings, Eab, Tsig};
use crate::config::Config;
use boxapi_core::b64;
use boxapi_core::config::Problem;
use boxapi_core::files::{limit, read_limited};
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
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
    /// `[dns] max_address_updates_per_hour`: `POST /v1/address` updates one device may send
    /// within a rolling hour.
    pub max_address_updates_per_hour: u32,
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

/// A regular file of at most `limit` bytes ([`limit`]); a problem naming `key` otherwise.
fn read_file(problems: &mut Vec<Problem>, key: &str, path: &Path, limit: u64) -> Option<Vec<u8>> {
    boxapi_core::config::read_named(key, path, limit, problems)
}

/// Every certificate of a PEM bundle; a problem when there is none or one does not parse.
fn pem_certs(
    problems: &mut Vec<Problem>,
    key: &str,
    path: &Path,
) -> Option<Vec<CertificateDer<'static>>> {
    let pem = read_file(problems, key, path, limit::PEM)?;
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
    let raw = read_file(problems, key, path, limit::SECRET)?;
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
            let Some(pem) = read_file(problems, "enrolment.device_crls", path, limit::CRL) else {
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
        match read_limited(&a.account, limit::SECRET) {
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
            Err(err) if err.is_not_found() => {
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
            max_address_updates_per_hour: d.max_address_updates_per_hour,
        })
    }
}
