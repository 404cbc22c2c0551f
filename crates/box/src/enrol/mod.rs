//! The box's own publicly trusted certificate (contract §10): a key made here, a CSR for the box's
//! name sent to the operator's authority over mutual TLS (the device certificate says which box
//! asks), the returned chain checked (our name, our key, valid now) and installed atomically.
//! The authority does the ACME and DNS work; none of that code is in the box.
pub mod client;
pub mod csr;
pub mod pair;

use crate::config::{Config, Enrol};
use boxapi_core::files::{self, limit, read_limited};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("enrol: the configuration has no [enrol] section")]
    NotConfigured,
    #[error("enrol.device_cert ({0}): {1}")]
    DeviceCert(String, String),
    #[error("enrol: {0}")]
    Key(#[from] csr::KeyError),
    #[error("{0}")]
    Client(#[from] client::ClientError),
    /// The authority answered with something the box must not install.
    #[error("refused the authority's answer: {0}")]
    BadChain(String),
    #[error("cannot install the certificate: {0}")]
    Install(String),
    #[error("no LAN address to publish (listen_interfaces have no usable address yet)")]
    NoAddress,
}

impl EnrolError {
    /// How long the authority asked the box to wait before the next attempt (`Retry-After` of a
    /// 429 or 503), when it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            EnrolError::Client(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// The box's name, `<label>.<zone>`, from its device certificate.
pub fn box_name(e: &Enrol) -> Result<String, EnrolError> {
    let path = e.device_cert.display().to_string();
    let pem = read_limited(&e.device_cert, limit::PEM)
        .map_err(|err| EnrolError::DeviceCert(path.clone(), err.to_string()))?;
    let leaf = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| EnrolError::DeviceCert(path.clone(), "no CERTIFICATE block".into()))?
        .map_err(|err| EnrolError::DeviceCert(path.clone(), err.to_string()))?;
    boxapi_core::names::box_name(&leaf, &e.zone)
        .ok_or_else(|| EnrolError::DeviceCert(path, "not a readable X.509 certificate".into()))
}

/// What an enrolment installed.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub name: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The CA's suggested renewal time (ACME ARI), when the authority passed one on.
    pub renew_after: Option<i64>,
}

/// Certificates a served chain may have: a leaf and a few intermediates (public CAs send 2 or 3).
/// Every one is sent in each TLS handshake, so a long chain is refused, not installed.
pub const MAX_CHAIN: usize = 5;

/// The chain is a leaf and at most `MAX_CHAIN - 1` intermediates, every one an X.509
/// certificate.
fn check_chain_shape(chain: &[CertificateDer<'_>]) -> Result<(), EnrolError> {
    if chain.is_empty() {
        return Err(EnrolError::BadChain("the chain is empty".into()));
    }
    if chain.len() > MAX_CHAIN {
        return Err(EnrolError::BadChain(format!(
            "the chain has {} certificates, more than {MAX_CHAIN}",
            chain.len()
        )));
    }
    if let Some(i) = chain
        .iter()
        .position(|c| boxapi_core::cert::validity(c).is_none())
    {
        return Err(EnrolError::BadChain(format!(
            "certificate {} of the chain is not X.509",
            i + 1
        )));
    }
    Ok(())
}

/// Checks the leaf the authority returned: for our name only, for our key, valid now.
fn check_leaf(
    leaf: &[u8],
    key: &csr::EcKey,
    name: &str,
    now: i64,
) -> Result<(i64, i64), EnrolError> {
    let bad = |why: String| EnrolError::BadChain(why);
    let spki = boxapi_core::cert::spki(leaf)
        .ok_or_else(|| bad("the certificate cannot be read".into()))?;
    if spki != key.spki().as_slice() {
        return Err(bad("the certificate is not for this box's key".into()));
    }
    let names = boxapi_core::cert::dns_names(leaf).unwrap_or_default();
    if names != [name.to_owned()] {
        return Err(bad(format!(
            "the certificate names {names:?}, not exactly {name:?}"
        )));
    }
    let (nb, na) = boxapi_core::cert::validity(leaf)
        .ok_or_else(|| bad("the certificate's validity cannot be read".into()))?;
    // A few minutes of skew between the CA's clock and the box's are normal.
    if nb > now + 300 || na <= now {
        return Err(bad(format!(
            "the certificate is not valid now ({} to {})",
            boxapi_core::time::rfc3339(nb),
            boxapi_core::time::rfc3339(na)
        )));
    }
    Ok((nb, na))
}

pub(crate) fn install_err(e: files::FileError) -> EnrolError {
    EnrolError::Install(e.to_string())
}

/// One enrolment (or renewal) now: key, CSR, authority, checks, install. On any error nothing is
/// written and the current certificate stays.
pub async fn enrol(config: &Config, addresses: &[IpAddr]) -> Result<Enrolled, EnrolError> {
    let e = config.enrol.as_ref().ok_or(EnrolError::NotConfigured)?;
    if addresses.is_empty() {
        return Err(EnrolError::NoAddress);
    }
    let identity = client::Identity::load(&e.authority_ca, &e.device_cert, &e.device_key)?;
    let name = box_name(e)?;
    let key = csr::EcKey::generate()?;
    let request = csr::csr(&key, &name)?;
    let body = json!({
        "csr": boxapi_core::b64::url_encode(&request),
        "addresses": addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    });
    let answer = client::post_json(&identity, &e.authority, "/v1/enrol", &body).await?;
    let chain_pem = answer["chain"]
        .as_str()
        .ok_or_else(|| EnrolError::BadChain("no \"chain\" in the answer".into()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|err| EnrolError::BadChain(format!("the chain is not PEM: {err}")))?;
    check_chain_shape(&chain)?;
    let leaf = &chain[0];
    let now = boxapi_core::time::unix_now() as i64;
    let (not_before, not_after) = check_leaf(leaf, &key, &name, now)?;
    let renew_after = answer["renew_after"]
        .as_str()
        .and_then(boxapi_core::time::parse_rfc3339);
    // The key first: a reader that sees the new certificate then also finds its key (the daemon
    // reloads only a pair that fits, and retries otherwise).
    let key_pem = boxapi_core::cert::pem("PRIVATE KEY", &key.pkcs8);
    let mut chain_text = String::new();
    for c in &chain {
        chain_text.push_str(&boxapi_core::cert::pem("CERTIFICATE", c));
    }
    pair::install(
        &config.common.server.key,
        key_pem.as_bytes(),
        &config.common.server.cert,
        chain_text.as_bytes(),
    )?;
    Ok(Enrolled {
        name,
        not_before,
        not_after,
        renew_after,
    })
}

/// Tells the authority the box's current LAN addresses (its name's A/AAAA records).
pub async fn publish_addresses(e: &Enrol, addresses: &[IpAddr]) -> Result<(), EnrolError> {
    if addresses.is_empty() {
        return Err(EnrolError::NoAddress);
    }
    let identity = client::Identity::load(&e.authority_ca, &e.device_cert, &e.device_key)?;
    let body = json!({ "addresses": addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>() });
    client::post_json(&identity, &e.authority, "/v1/address", &body).await?;
    Ok(())
}

/// The hosts-file lines that make the box's resolver answer its name with its LAN addresses.
pub fn hosts_lines(name: &str, addresses: &[IpAddr]) -> String {
    addresses.iter().map(|a| format!("{a} {name}\n")).collect()
}

/// Whether a hosts-file line is one the box writes for `name`: exactly `address name`. A line
/// the operator wrote with the same name and aliases, or a comment, is not ours to touch.
fn is_our_hosts_line(line: &[u8], name: &str) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    let mut fields = text.split_ascii_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(addr), Some(host), None) => {
            addr.parse::<IpAddr>().is_ok() && host.eq_ignore_ascii_case(name)
        }
        _ => false,
    }
}

/// `current` (a hosts file) with the box's lines for `name` replaced by `ours` (none: removed),
/// every other line kept as it was and where it was; the box's lines come last.
pub fn merge_hosts(current: &[u8], name: &str, ours: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(current.len() + ours.len());
    let body = current.strip_suffix(b"\n").unwrap_or(current);
    if !current.is_empty() {
        for line in body.split(|&b| b == b'\n') {
            if !is_our_hosts_line(line, name) {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
    }
    out.extend_from_slice(ours.as_bytes());
    out
}

/// Puts the box's lines for `name` in the hosts file at `path` (an empty `lines`: takes them out),
/// leaving every other line alone: the file may be shared (an operator's own entries, or
/// `/etc/hosts` itself), and the box must not erase what it did not write. Written atomically,
/// and only when something changes; a missing file is created only to add lines. An emptied
/// file stays (empty) rather than being deleted: dnsmasq's `hostsdir` re-reads a replaced file
/// in every version, while older ones miss a deleted one and keep answering its records.
pub fn update_hosts_file(path: &Path, name: &str, lines: &str) -> Result<(), EnrolError> {
    let current = match read_limited(path, limit::HOSTS) {
        Ok(c) => Some(c),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(EnrolError::Install(format!("{}: {e}", path.display()))),
    };
    let merged = merge_hosts(current.as_deref().unwrap_or_default(), name, lines);
    let unchanged = match &current {
        Some(c) => *c == merged,
        None => merged.is_empty(),
    };
    if unchanged {
        return Ok(());
    }
    files::write_atomic(path, &merged, 0o644).map_err(install_err)
}

/// When to renew a certificate valid from `not_before` to `not_after`: at `fraction` of its life,
/// or earlier when the CA's renewal information says so.
pub fn renew_at(not_before: i64, not_after: i64, fraction: f64, ari: Option<i64>) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    let by_fraction = not_before + (life * fraction) as i64;
    ari.map_or(by_fraction, |a| a.min(by_fraction))
}

/// A uniform draw in [0, 1]: the jitter of the waits below.
pub(crate) fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 2];
    let _ = ring::rand::SystemRandom::new().fill(&mut r);
    f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX)
}

/// The wait after `failures` failed attempts: doubling from `min`, capped at `max`, with ±20 %
/// jitter so that a fleet that failed together does not retry together.
pub fn backoff(
    failures: u32,
    min: std::time::Duration,
    max: std::time::Duration,
) -> std::time::Duration {
    retry_wait_with(failures, min, max, None, jitter())
}

/// The wait after a failed attempt: the backoff, but never shorter than the `Retry-After` the
/// authority gave with a 429 (this device's issuance allowance is spent until then: asking
/// sooner only gets another 429) or a 503 (busy, suspended).
pub fn retry_wait(
    failures: u32,
    min: std::time::Duration,
    max: std::time::Duration,
    retry_after: Option<std::time::Duration>,
) -> std::time::Duration {
    retry_wait_with(failures, min, max, retry_after, jitter())
}

/// `retry_wait` with its jitter `j` (0 to 1) given, so that its bounds can be tested.
fn retry_wait_with(
    failures: u32,
    min: std::time::Duration,
    max: std::time::Duration,
    retry_after: Option<std::time::Duration>,
    j: f64,
) -> std::time::Duration {
    let base = min.saturating_mul(1u32 << failures.min(20)).min(max);
    let backoff = base.mul_f64(0.8 + 0.4 * j);
    match retry_after {
        // Up to 20 % later, never earlier: the authority answers `busy` with the same
        // Retry-After to every box that came in at the same moment, and they must not all come
        // back in the same second.
        Some(asked) if asked >= backoff => asked.mul_f64(1.0 + 0.2 * j),
        _ => backoff,
    }
}

/// Whole seconds, rounded up: a wait of 0.8 s must not become "now".
pub(crate) fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
}

/// A failed exchange with the authority: the error, when the next attempt comes and, when the
/// authority asked for one, its `Retry-After` (so the log shows why the wait is longer than the
/// backoff).
pub(crate) fn failed_event(
    event: &str,
    err: &str,
    wait: std::time::Duration,
    retry_after: Option<std::time::Duration>,
) {
    let wait = secs(wait).to_string();
    match retry_after {
        Some(asked) => {
            let asked = secs(asked).to_string();
            boxapi_core::log::event(
                event,
                &[
                    ("error", err),
                    ("retry_in_s", &wait),
                    ("retry_after_s", &asked),
                ],
            );
        }
        None => boxapi_core::log::event(event, &[("error", err), ("retry_in_s", &wait)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renewal_time_is_two_thirds_or_the_ca_hint() {
        assert_eq!(renew_at(0, 90, 2.0 / 3.0, None), 60);
        assert_eq!(renew_at(0, 90, 2.0 / 3.0, Some(30)), 30);
        assert_eq!(renew_at(0, 90, 2.0 / 3.0, Some(80)), 60);
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        for f in 0..30 {
            let d = backoff(f, min, max);
            let base = (60u64 << f.min(20)).min(3600) as f64;
            assert!(
                d.as_secs_f64() >= base * 0.79 && d.as_secs_f64() <= base * 1.21,
                "{f}: {d:?}"
            );
        }
    }

    #[test]
    fn a_retry_is_never_sooner_than_the_authoritys_retry_after() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(21_600));
        for j in [0.0, 0.25, 0.5, 1.0] {
            // No Retry-After: the backoff alone (60 s, 120 s, ... ±20 %).
            assert_eq!(
                retry_wait_with(1, min, max, None, j),
                backoff_base(1, min, max).mul_f64(0.8 + 0.4 * j)
            );
            // 429 after a first failure: an hour asked, the backoff would say about two minutes.
            let hour = Duration::from_secs(3_600);
            let w = retry_wait_with(1, min, max, Some(hour), j);
            assert!(w >= hour && w <= hour.mul_f64(1.2), "{j}: {w:?}");
            // A Retry-After shorter than the backoff changes nothing: the box never goes faster.
            let w = retry_wait_with(5, min, max, Some(Duration::from_secs(1)), j);
            assert_eq!(w, backoff_base(5, min, max).mul_f64(0.8 + 0.4 * j));
            // Above `retry_max` too: the authority's word wins over the box's cap.
            let day = super::client::MAX_RETRY_AFTER;
            let w = retry_wait_with(30, min, max, Some(day), j);
            assert!(w >= day && w <= day.mul_f64(1.2), "{j}: {w:?}");
        }
        // The random jitter stays within the same bounds.
        for _ in 0..100 {
            let w = retry_wait(0, min, max, Some(Duration::from_secs(600)));
            assert!(
                w.as_secs_f64() >= 600.0 && w.as_secs_f64() <= 720.0,
                "{w:?}"
            );
        }
    }

    #[test]
    fn only_a_refusal_carries_a_retry_after() {
        let refused = |retry_after| {
            EnrolError::Client(client::ClientError::Refused {
                status: 429,
                detail: "rate_limited: x".into(),
                retry_after,
            })
        };
        let hour = Duration::from_secs(3_600);
        assert_eq!(refused(Some(hour)).retry_after(), Some(hour));
        assert_eq!(refused(None).retry_after(), None);
        assert_eq!(EnrolError::NoAddress.retry_after(), None);
        let timeout = EnrolError::Client(client::ClientError::Timeout("a".into()));
        assert_eq!(timeout.retry_after(), None);
    }

    /// The backoff before its jitter.
    fn backoff_base(failures: u32, min: Duration, max: Duration) -> Duration {
        min.saturating_mul(1u32 << failures.min(20)).min(max)
    }

    #[test]
    fn the_box_changes_only_its_own_hosts_lines() {
        let name = "k3x9q2abcdefgh2x.box.test";
        let ours = hosts_lines(name, &["10.0.0.1".parse().unwrap()]);
        let others = "# operator's\n127.0.0.1 localhost\n10.0.0.9 k3x9q2abcdefgh2x.box.test alias\n\n10.0.0.7 other.box.test\n";
        // Added after the other lines, then replaced (new addresses), then taken out: the other
        // lines, the operator's line naming the box with an alias and the blank line included,
        // stay as they were.
        let added = merge_hosts(others.as_bytes(), name, &ours);
        assert_eq!(added, format!("{others}10.0.0.1 {name}\n").into_bytes());
        let moved = hosts_lines(
            name,
            &["192.168.1.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        );
        let replaced = merge_hosts(&added, name, &moved);
        assert_eq!(replaced, format!("{others}{moved}").into_bytes());
        assert_eq!(merge_hosts(&replaced, name, ""), others.as_bytes());
        // Another box name's lines are not ours (a name changed by a new zone removes the old
        // name's lines by that old name).
        let other = merge_hosts(&added, "aaaaaaaaaaaaaaaa.box.test", "");
        assert_eq!(other, added);
        // A last line without its newline keeps its text; lines differing in case are ours.
        assert_eq!(
            merge_hosts(
                format!("1.2.3.4 a\n10.0.0.1 {}", name.to_uppercase()).as_bytes(),
                name,
                ""
            ),
            b"1.2.3.4 a\n"
        );
        assert_eq!(merge_hosts(b"", name, ""), b"");
    }

    #[test]
    fn a_hosts_file_is_written_only_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("boxapi-hosts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (file, name) = (dir.join("hosts"), "a.box.test");
        // Nothing to take out of a file that is not there: none is created.
        update_hosts_file(&file, name, "").unwrap();
        assert!(!file.exists());
        update_hosts_file(&file, name, "10.0.0.1 a.box.test\n").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"10.0.0.1 a.box.test\n");
        std::fs::write(&file, "10.0.0.1 a.box.test\n10.0.0.2 mine\n").unwrap();
        update_hosts_file(&file, name, "").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"10.0.0.2 mine\n");
        // Unchanged: not rewritten (same inode; a rename would give a new one).
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&file).unwrap().ino();
        update_hosts_file(&file, name, "").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), ino);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_or_unreadable_chain_is_refused() {
        assert!(check_chain_shape(&[]).is_err());
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let e = check_chain_shape(&[junk]).unwrap_err();
        assert!(e.to_string().contains("not X.509"), "{e}");
        #[cfg(feature = "demo")]
        {
            use crate::demo::x509::{issue, CertSpec};
            let key = csr::EcKey::generate().unwrap();
            let spec = CertSpec {
                common_name: "x",
                is_ca: false,
                dns_names: &["a.box.test"],
                ips: &[],
                not_before: 0,
                not_after: 1,
            };
            let c = CertificateDer::from(issue(&spec, &key, &key, "ca").unwrap());
            assert!(check_chain_shape(&vec![c.clone(); MAX_CHAIN]).is_ok());
            let e = check_chain_shape(&vec![c; 1000]).unwrap_err();
            assert!(e.to_string().contains("1000 certificates"), "{e}");
        }
    }

    #[test]
    fn a_chain_for_another_name_or_key_is_refused() {
        let key = csr::EcKey::generate().unwrap();
        let other = csr::EcKey::generate().unwrap();
        let now = 1_800_000_000;
        // A certificate for our key and name, and one for another key: made by the demo's writer
        // when it is built, else skipped (the checks are also exercised end to end).
        #[cfg(feature = "demo")]
        {
            use crate::demo::x509::{issue, CertSpec};
            let spec = |names: &'static [&'static str]| CertSpec {
                common_name: "x",
                is_ca: false,
                dns_names: names,
                ips: &[],
                not_before: now - 10,
                not_after: now + 1000,
            };
            let good = issue(&spec(&["a.box.test"]), &key, &key, "ca").unwrap();
            assert!(check_leaf(&good, &key, "a.box.test", now).is_ok());
            assert!(
                check_leaf(&good, &other, "a.box.test", now).is_err(),
                "wrong key"
            );
            assert!(
                check_leaf(&good, &key, "b.box.test", now).is_err(),
                "wrong name"
            );
            let extra = issue(&spec(&["a.box.test", "b.box.test"]), &key, &key, "ca").unwrap();
            assert!(
                check_leaf(&extra, &key, "a.box.test", now).is_err(),
                "extra name"
            );
            assert!(
                check_leaf(&good, &key, "a.box.test", now + 2000).is_err(),
                "expired"
            );
        }
        let _ = (key, other, now);
    }
}
