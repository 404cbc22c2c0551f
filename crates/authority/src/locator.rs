//! The box locator (`GET /v1/locate`): which box serves the caller's line, from a mapping the
//! operator owns (boxapi only reads it): a JSON file, a command, or Redis keys. A value is a box
//! URL (`https://…`) or a host name (the box's name under the operator's zone, `https://` added).
//!
//! Keys are addresses as the caller's public address appears to the authority: an IPv4 address,
//! or for IPv6 the address or one of its /64, /56, /48 prefixes (`2001:db8:1:2::/64`), since a
//! line's terminals pick their own addresses inside the prefix delegated to the box.
use crate::config::LocatorConfig;
use crate::store::{Store, StoreError};
use boxapi_core::config::Problem;
use boxapi_core::log;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

/// A mapping file above this size is refused (operators with millions of lines use Redis or a
/// command, which need no copy in each replica's memory).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// The file's modification time is looked at no more often than this.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A command prints one URL or name.
const MAX_COMMAND_OUTPUT: usize = 4096;
/// Commands running at once; more callers wait (within the command timeout).
const MAX_COMMANDS: usize = 16;
/// IPv6 prefixes tried after the exact address, most specific first.
const V6_PREFIXES: [u8; 3] = [64, 56, 48];

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the locator command failed: {0}")]
    Command(String),
    #[error("the operator's mapping for this address is not a box URL or name: {0:?}")]
    BadValue(String),
}

impl LocateError {
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            LocateError::Store(e) => e.retry_after_secs(),
            LocateError::Command(_) => 5,
            LocateError::BadValue(_) => 60,
        }
    }
}

struct FileMap {
    path: PathBuf,
    map: RwLock<Arc<HashMap<String, String>>>,
    /// (when last looked at, the (mtime, len) the map was read from).
    seen: Mutex<(Instant, Option<(SystemTime, u64)>)>,
}

enum Source {
    File(FileMap),
    Command {
        path: PathBuf,
        timeout: Duration,
        slots: Semaphore,
    },
    Redis,
}

pub struct Locator {
    source: Source,
}

/// The lookup keys for `addr`, most specific first.
pub fn keys(addr: IpAddr) -> Vec<String> {
    match addr.to_canonical() {
        IpAddr::V4(v4) => vec![v4.to_string()],
        IpAddr::V6(v6) => {
            let mut out = vec![v6.to_string()];
            for len in V6_PREFIXES {
                let mask = u128::MAX << (128 - u32::from(len));
                let net = Ipv6Addr::from(u128::from(v6) & mask);
                out.push(format!("{net}/{len}"));
            }
            out
        }
    }
}

/// An address or prefix as written by the operator, in the form [`keys`] produces.
fn canonical_key(k: &str) -> Option<String> {
    match k.split_once('/') {
        None => k
            .parse::<IpAddr>()
            .ok()
            .map(|a| a.to_canonical().to_string()),
        Some((a, len)) => {
            let v6: Ipv6Addr = a.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            V6_PREFIXES.contains(&len).then(|| {
                let mask = u128::MAX << (128 - u32::from(len));
                format!("{}/{len}", Ipv6Addr::from(u128::from(v6) & mask))
            })
        }
    }
}

fn valid_host(name: &str) -> bool {
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (name, None),
    };
    port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
        && !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The box URL for a mapping value: `https://name[:port]` as is, or a bare name made one.
pub fn box_url(value: &str) -> Result<String, LocateError> {
    let v = value.trim();
    let host = v.strip_prefix("https://").unwrap_or(v);
    let host = host.strip_suffix('/').unwrap_or(host);
    if valid_host(host) {
        Ok(format!("https://{host}"))
    } else {
        Err(LocateError::BadValue(v.chars().take(100).collect()))
    }
}

fn read_map(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = boxapi_core::files::read_limited(path, MAX_FILE_BYTES).map_err(|e| e.to_string())?;
    let raw: HashMap<String, String> = serde_json::from_slice(&text)
        .map_err(|e| format!("not a JSON object of address → box URL or name: {e}"))?;
    let mut map = HashMap::with_capacity(raw.len());
    for (k, v) in raw {
        let key = canonical_key(&k).ok_or_else(|| {
            format!("{k:?} is not an address (or an IPv6 /64, /56 or /48 prefix)")
        })?;
        box_url(&v).map_err(|e| format!("{k}: {e}"))?;
        map.insert(key, v);
    }
    Ok(map)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

impl Locator {
    /// Builds the locator; a mapping file must be readable and valid now.
    pub fn new(config: &LocatorConfig, problems: &mut Vec<Problem>) -> Option<Locator> {
        let source = match config {
            LocatorConfig::File(path) => {
                let seen = stamp(path);
                match read_map(path) {
                    Ok(map) => Source::File(FileMap {
                        path: path.clone(),
                        map: RwLock::new(Arc::new(map)),
                        seen: Mutex::new((Instant::now(), seen)),
                    }),
                    Err(e) => {
                        problems.push(Problem::file("authority.locator.file", path, e));
                        return None;
                    }
                }
            }
            LocatorConfig::Command { path, timeout } => {
                if let Err(e) = std::fs::metadata(path) {
                    problems.push(Problem::file("authority.locator.command", path, e));
                    return None;
                }
                Source::Command {
                    path: path.clone(),
                    timeout: *timeout,
                    slots: Semaphore::new(MAX_COMMANDS),
                }
            }
            LocatorConfig::Redis => Source::Redis,
        };
        Some(Locator { source })
    }

    /// The box URL serving `addr`, `None` when the operator maps nothing to it.
    pub async fn locate(&self, addr: IpAddr, store: &Store) -> Result<Option<String>, LocateError> {
        let keys = keys(addr);
        let value = match &self.source {
            Source::File(f) => {
                f.refresh().await;
                let map = f.map.read().unwrap_or_else(|p| p.into_inner()).clone();
                keys.iter().find_map(|k| map.get(k).cloned())
            }
            Source::Redis => store.locate(&keys).await?,
            Source::Command {
                path,
                timeout,
                slots,
            } => run_command(path, *timeout, slots, &keys[0]).await?,
        };
        value.map(|v| box_url(&v)).transpose()
    }
}

impl FileMap {
    /// Re-reads the file when it changed (looked at once a second at most); on a bad new file the
    /// previous mapping stays and the problem is logged.
    async fn refresh(&self) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.0.elapsed() < FILE_CHECK_EVERY {
                return;
            }
            seen.0 = Instant::now();
            let now = stamp(&self.path);
            if now == seen.1 {
                return;
            }
            seen.1 = now;
        }
        let path = self.path.clone();
        // A large file takes a while to parse: not on a runtime thread.
        match tokio::task::spawn_blocking(move || read_map(&path)).await {
            Ok(Ok(map)) => {
                let n = map.len();
                *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
                log::event("locator_reloaded", &[("entries", &n.to_string())]);
            }
            Ok(Err(e)) => log::event("locator_reload_failed", &[("error", &e)]),
            Err(e) => log::event("locator_reload_failed", &[("error", &e.to_string())]),
        }
    }
}

/// Runs `path ADDRESS`: exit 0 printing a URL or name → mapped; exit 1 (or nothing printed) →
/// not mapped; anything else, or no answer within `timeout`, is an error (killed on timeout).
async fn run_command(
    path: &Path,
    timeout: Duration,
    slots: &Semaphore,
    addr: &str,
) -> Result<Option<String>, LocateError> {
    let fail = |why: String| LocateError::Command(why);
    let work = async {
        let _slot = slots.acquire().await.map_err(|e| fail(e.to_string()))?;
        let mut child = tokio::process::Command::new(path)
            .arg(addr)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            stdout
                .take(MAX_COMMAND_OUTPUT as u64)
                .read_to_end(&mut out)
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        let status = child.wait().await.map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&out).trim().to_owned();
        match status.code() {
            Some(0) if !text.is_empty() => Ok(Some(text)),
            Some(0 | 1) => Ok(None),
            _ => Err(fail(format!("exited with {status}"))),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(fail(format!("no answer within {} ms", timeout.as_millis()))))
}

/// The caller's public address: the peer's, or, when the peer is one of the operator's trusted
/// proxies, the last address in `header` that is not itself a trusted proxy (addresses left of
/// it were written by the client and prove nothing). A proxy's own request (no header) is its
/// own; a header that cannot be read gives no address at all.
pub fn client_address(
    peer: IpAddr,
    headers: &http::HeaderMap,
    header: &str,
    trusted: &[(IpAddr, u8)],
) -> Option<IpAddr> {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let mut entries: Vec<&str> = Vec::new();
    for v in headers.get_all(header) {
        entries.extend(v.to_str().ok()?.split(',').map(str::trim));
    }
    if entries.is_empty() {
        return Some(peer);
    }
    for e in entries.iter().rev() {
        let addr = e
            .parse::<IpAddr>()
            .or_else(|_| e.parse::<std::net::SocketAddr>().map(|s| s.ip()))
            .ok()?
            .to_canonical();
        if !is_trusted(addr, trusted) {
            return Some(addr);
        }
    }
    None
}

/// Whether `addr` is one of the operator's trusted proxies (`[authority] trusted_proxies`). An
/// IPv4-mapped prefix (`::ffff:10.0.0.0/104`) is the IPv4 prefix it maps (`10.0.0.0/8`): its
/// length, over 32, once made the IPv4 mask's shift underflow, which panicked each connection
/// (debug) or trusted every IPv4 client (release).
pub fn is_trusted(addr: IpAddr, trusted: &[(IpAddr, u8)]) -> bool {
    let addr = addr.to_canonical();
    trusted
        .iter()
        .any(|&(net, len)| match (addr, family_prefix(net, len)) {
            (IpAddr::V4(a), (IpAddr::V4(n), len)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), (IpAddr::V6(n), len)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        })
}

/// A prefix in its own family, its length within that family's bits: an IPv4-mapped prefix of
/// length 96 or more is IPv4; any other IPv6 prefix (`::/0` too) holds no IPv4 client, as
/// before.
fn family_prefix(net: IpAddr, len: u8) -> (IpAddr, u8) {
    match net {
        IpAddr::V4(_) => (net, len.min(32)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if len >= 96 => (IpAddr::V4(v4), (len - 96).min(32)),
            _ => (net, len.min(128)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes() {
        assert_eq!(keys("203.0.113.7".parse().unwrap()), ["203.0.113.7"]);
        assert_eq!(keys("::ffff:203.0.113.7".parse().unwrap()), ["203.0.113.7"]);
        assert_eq!(
            keys("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            [
                "2001:db8:1:2:3:4:5:6",
                "2001:db8:1:2::/64",
                "2001:db8:1::/56",
                "2001:db8:1::/48"
            ]
        );
        assert_eq!(
            canonical_key("2001:DB8:1:2:ffff::/64").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(canonical_key("2001:db8::/40"), None);
        assert_eq!(canonical_key("10.0.0.0/8"), None);
    }

    #[test]
    fn values_become_box_urls() {
        assert_eq!(
            box_url("b1.boxes.isp.example").unwrap(),
            "https://b1.boxes.isp.example"
        );
        assert_eq!(
            box_url("https://b1.test:8443/").unwrap(),
            "https://b1.test:8443"
        );
        assert!(box_url("http://b1.test").is_err());
        assert!(box_url("https://b1.test/x").is_err());
        assert!(box_url("B1.test").is_err());
        assert!(box_url("").is_err());
    }

    #[test]
    fn proxy_header_only_from_trusted_proxies() {
        let trusted = [
            ("10.0.0.0".parse().unwrap(), 8),
            ("::1".parse().unwrap(), 128),
        ];
        let mut h = http::HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.7".parse().unwrap(),
        );
        h.append("x-forwarded-for", "10.1.2.3".parse().unwrap());
        let peer: IpAddr = "10.9.9.9".parse().unwrap();
        let got = client_address(peer, &h, "x-forwarded-for", &trusted);
        assert_eq!(
            got,
            Some("203.0.113.7".parse().unwrap()),
            "rightmost untrusted"
        );
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_address(stranger, &h, "x-forwarded-for", &trusted),
            Some(stranger)
        );
        assert_eq!(
            client_address(peer, &http::HeaderMap::new(), "x-forwarded-for", &trusted),
            Some(peer)
        );
        let mut bad = http::HeaderMap::new();
        bad.append("x-forwarded-for", "nonsense".parse().unwrap());
        assert_eq!(
            client_address(peer, &bad, "x-forwarded-for", &trusted),
            None
        );
    }

    #[test]
    fn an_ipv4_mapped_prefix_is_the_ipv4_prefix_it_maps() {
        let p = |s: &str| s.parse::<IpAddr>().unwrap();
        let mapped = [(p("::ffff:10.0.0.0"), 104)];
        // Before: 32 - 104 underflowed (a panic per connection in debug; in release the mask
        // wrapped to nothing and every IPv4 client was a trusted proxy).
        assert!(is_trusted(p("10.1.2.3"), &mapped));
        assert!(is_trusted(p("::ffff:10.1.2.3"), &mapped));
        assert!(!is_trusted(p("203.0.113.7"), &mapped));
        assert!(!is_trusted(p("2001:db8::1"), &mapped));
        let whole = [(p("::ffff:0.0.0.0"), 96)];
        assert!(is_trusted(p("203.0.113.7"), &whole));
        // The IPv4 form takes mapped peers; an IPv6 prefix holds no IPv4 client.
        assert!(is_trusted(p("::ffff:10.1.2.3"), &[(p("10.0.0.0"), 8)]));
        assert!(!is_trusted(p("10.1.2.3"), &[(p("::"), 0)]));
        assert!(is_trusted(p("2001:db8::1"), &[(p("::"), 0)]));
        assert!(!is_trusted(p("10.1.2.3"), &[(p("::ffff:0:0"), 80)]));
    }
}
