//! The authority's enrolment sections (`[enrolment]`, `[acme]`, `[dns]`): per-box names and
//! certificates (contract §10, docs/certificates.md). Only their shape is checked here; the files
//! they name (CA bundles, CRLs, secrets) are read and checked by the authority itself.
use boxapi_core::config::{valid_hostname, Problem, Section, Table};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Enrolment {
    /// PEM bundle of the operator's device CA: box client certificates must chain to it.
    pub device_ca: PathBuf,
    /// PEM CRLs of the device CA (revoked boxes); empty: no revocation checking.
    pub device_crls: Vec<PathBuf>,
    /// The zone box names live under (`<label>.<zone>`), lower case, no trailing dot.
    pub zone: String,
}

#[derive(Clone, Debug)]
pub struct Acme {
    /// The ACME CA's directory URL (https).
    pub directory: String,
    /// The account's credentials (JSON, with its private key), created mode 0600 if missing.
    pub account: PathBuf,
    /// Contact URIs for a new account (`mailto:…`).
    pub contact: Vec<String>,
    /// PEM trust anchors for the CA's own HTTPS; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// External Account Binding key id and the file holding its MAC key (base64url).
    pub eab: Option<(String, PathBuf)>,
    /// Certificates one device (one box name) may get within `issuance_window`, renewals
    /// included: one box, buggy or compromised, must not spend the operator's whole allowance
    /// at the CA (Let's Encrypt counts certificates per registered domain).
    pub max_issuances_per_device: u32,
    /// The rolling window of `max_issuances_per_device` (`issuance_window_days`).
    pub issuance_window: Duration,
}

/// Defaults of `[acme] max_issuances_per_device` per `issuance_window_days`: a box renewing on
/// schedule needs one certificate every few weeks; five a week leaves room for a reinstalled or
/// repaired box and matches Let's Encrypt's own limit on duplicate certificates.
const MAX_ISSUANCES_PER_DEVICE: u32 = 5;
const ISSUANCE_WINDOW_DAYS: u32 = 7;

#[derive(Clone, Debug)]
pub struct Dns {
    /// The zone's primary (authoritative) server taking RFC 2136 updates.
    pub server: SocketAddr,
    pub tsig_name: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    pub tsig_algorithm: String,
    /// File holding the TSIG secret, base64 (as Knot and BIND print it).
    pub tsig_secret_file: PathBuf,
    /// TTL of the boxes' A/AAAA records and of the challenge TXT records, seconds.
    pub ttl: u32,
    /// `POST /v1/address` updates one device (one box name) may send to the DNS server within a
    /// rolling hour: one box, buggy or compromised, must not flood the operator's primary with
    /// RFC 2136 updates.
    pub max_address_updates_per_hour: u32,
}

/// Default of `[dns] max_address_updates_per_hour`: a box publishes only when its LAN addresses
/// change (a new IPv6 prefix, a DHCP lease) and backs off after a failure; twelve an hour (one
/// every five minutes on average) is far above that and still caps a looping box.
const MAX_ADDRESS_UPDATES_PER_HOUR: u32 = 12;

pub const TSIG_ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

fn required_path(s: &mut Section<'_>, key: &'static str, dir: &Path) -> PathBuf {
    let p = s.path(key, dir);
    if p.is_none() && !s.table.contains_key(key) {
        s.missing(key);
    }
    p.unwrap_or_default()
}

pub(super) fn parse_enrolment(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> Enrolment {
    let mut s = Section::new("enrolment", t, problems);
    let device_ca = required_path(&mut s, "device_ca", dir);
    let device_crls = s
        .strings("device_crls")
        .into_iter()
        .map(|p| dir.join(p))
        .collect();
    let raw = s.required_string("zone");
    let zone = raw.trim_end_matches('.').to_owned();
    if !raw.is_empty() && (!valid_hostname(&zone) || !zone.contains('.')) {
        s.problem(
            "zone",
            format_args!("{raw:?} is not a lower-case DNS zone such as \"box.isp.example\""),
        );
    }
    s.finish();
    Enrolment {
        device_ca,
        device_crls,
        zone,
    }
}

pub(super) fn parse_acme(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> Acme {
    let mut s = Section::new("acme", t, problems);
    let directory = s.required_string("directory");
    if !directory.is_empty() && !directory.starts_with("https://") {
        s.problem("directory", "must be an https:// URL");
    }
    let account = required_path(&mut s, "account", dir);
    let contact = s.strings("contact");
    for c in &contact {
        if !c.starts_with("mailto:") || c.len() <= "mailto:".len() {
            s.problem("contact", format_args!("{c:?} is not a mailto: URI"));
        }
    }
    let ca = s.path("ca", dir);
    let eab_kid = s.string("eab_kid");
    let eab_file = s.path("eab_hmac_key_file", dir);
    let eab = match (eab_kid, eab_file) {
        (Some(kid), Some(file)) if !kid.is_empty() => Some((kid, file)),
        (Some(_), Some(_)) => {
            s.problem("eab_kid", "is empty");
            None
        }
        (Some(_), None) if !t.contains_key("eab_hmac_key_file") => {
            s.problem("eab_hmac_key_file", "is required with eab_kid");
            None
        }
        (None, Some(_)) if !t.contains_key("eab_kid") => {
            s.problem("eab_kid", "is required with eab_hmac_key_file");
            None
        }
        _ => None,
    };
    let max_issuances_per_device = s.int(
        "max_issuances_per_device",
        MAX_ISSUANCES_PER_DEVICE.into(),
        1,
        1000,
    ) as u32;
    let days = s.int("issuance_window_days", ISSUANCE_WINDOW_DAYS.into(), 1, 90) as u64;
    s.finish();
    Acme {
        directory,
        account,
        contact,
        ca,
        eab,
        max_issuances_per_device,
        issuance_window: Duration::from_secs(days * 86_400),
    }
}

pub(super) fn parse_dns(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> Dns {
    let mut s = Section::new("dns", t, problems);
    let server_raw = s.required_string("server");
    let server = match server_raw.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() || a.port() == 0 => {
            s.problem(
                "server",
                format_args!("{server_raw:?} is not a server's address"),
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) if server_raw.is_empty() => None,
        Err(_) => {
            s.problem(
                "server",
                format_args!("{server_raw:?} is not an IP:port address"),
            );
            None
        }
    };
    let raw_name = s.required_string("tsig_name");
    let tsig_name = raw_name.trim_end_matches('.').to_ascii_lowercase();
    if !raw_name.is_empty() && !valid_hostname(&tsig_name) {
        s.problem(
            "tsig_name",
            format_args!("{raw_name:?} is not a DNS key name"),
        );
    }
    let tsig_algorithm = s
        .string("tsig_algorithm")
        .unwrap_or_else(|| TSIG_ALGORITHMS[0].to_owned());
    if !TSIG_ALGORITHMS.contains(&tsig_algorithm.as_str()) {
        s.problem(
            "tsig_algorithm",
            format_args!(
                "{tsig_algorithm:?} is not one of {}",
                TSIG_ALGORITHMS.join(", ")
            ),
        );
    }
    let tsig_secret_file = required_path(&mut s, "tsig_secret_file", dir);
    let ttl = s.int("ttl", 60, 1, 86_400) as u32;
    let max_address_updates_per_hour = s.int(
        "max_address_updates_per_hour",
        MAX_ADDRESS_UPDATES_PER_HOUR.into(),
        1,
        3600,
    ) as u32;
    s.finish();
    Dns {
        server: server.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 53))),
        tsig_name,
        tsig_algorithm,
        tsig_secret_file,
        ttl,
        max_address_updates_per_hour,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use std::path::Path;

    const BASE: &str = r#"
        [server]
        cert = "cert.pem"
        key = "key.pem"
        [auth]
        audience = "https://box"
        issuers = ["https://iss"]
        [authority]
        listen = ["127.0.0.1:9443"]
    "#;

    const ENROL: &str = r#"
        [enrolment]
        device_ca = "device-ca.pem"
        device_crls = ["device.crl"]
        zone = "box.isp.example"
        [acme]
        directory = "https://acme.example/dir"
        account = "acme-account.json"
        contact = ["mailto:ops@isp.example"]
        [dns]
        server = "192.0.2.53:53"
        tsig_name = "boxapi-update."
        tsig_secret_file = "tsig.key"
    "#;

    fn problems_of(text: &str) -> Vec<String> {
        let mut p = Vec::new();
        parse(text, Path::new("/etc/boxapi/authority.toml"), &mut p);
        p.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn enrolment_sections_parse_with_defaults() {
        let mut p = Vec::new();
        let c = parse(
            &format!("{BASE}{ENROL}"),
            Path::new("/etc/boxapi/authority.toml"),
            &mut p,
        )
        .unwrap();
        assert!(p.is_empty(), "{p:?}");
        let e = c.enrolment.unwrap();
        assert_eq!(e.zone, "box.isp.example");
        assert_eq!(e.device_crls, [Path::new("/etc/boxapi/device.crl")]);
        let d = c.dns.unwrap();
        assert_eq!(d.tsig_algorithm, "hmac-sha256");
        assert_eq!(d.tsig_name, "boxapi-update");
        assert_eq!(d.ttl, 60);
        assert_eq!(d.max_address_updates_per_hour, 12);
        let a = c.acme.unwrap();
        assert!(a.eab.is_none());
        assert_eq!(a.max_issuances_per_device, 5);
        assert_eq!(a.issuance_window.as_secs(), 7 * 86_400);
    }

    #[test]
    fn every_enrolment_mistake_at_once() {
        let bad = ENROL
            .replace("box.isp.example", "Box..example")
            .replace("https://acme.example/dir", "http://acme.example/dir")
            .replace("mailto:ops@isp.example", "ops@isp.example")
            .replace("192.0.2.53:53", "dns.example")
            .replace(
                "tsig_name",
                "tsig_algorithm = \"hmac-md5\"\nmax_address_updates_per_hour = 0\ntsig_nam",
            )
            .replace(
                "[acme]",
                "[acme]\neab_kid = \"kid-1\"\nretries = 3\nmax_issuances_per_device = 0\nissuance_window_days = 91",
            );
        let p = problems_of(&format!("{BASE}{bad}"));
        let joined = p.join("\n");
        for want in [
            "enrolment.zone:",
            "acme.directory: must be an https:// URL",
            "acme.contact:",
            "acme.eab_hmac_key_file: is required with eab_kid",
            "acme.retries: unknown key",
            "acme.max_issuances_per_device:",
            "acme.issuance_window_days:",
            "dns.server:",
            "dns.tsig_algorithm:",
            "dns.max_address_updates_per_hour:",
            "dns.tsig_nam: unknown key",
            "dns.tsig_name: is required",
        ] {
            assert!(joined.contains(want), "{want} not in:\n{joined}");
        }
        assert_eq!(p.len(), 12, "{joined}");
    }

    #[test]
    fn sections_come_together() {
        let only = ENROL.split("[acme]").next().unwrap();
        let joined = problems_of(&format!("{BASE}{only}")).join("\n");
        assert!(joined.contains("acme: [enrolment] needs"), "{joined}");
        assert!(joined.contains("dns: [enrolment] needs"), "{joined}");
    }
}
