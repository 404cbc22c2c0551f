//! The authority's own configuration: the shared sections (`boxapi_core::config`) and the
//! authority's `[authority]` (listeners, store, locator, metrics, proxies) and `[enrolment]`,
//! `[acme]`, `[dns]`; the box's sections are unknown here.
mod enrolment;

pub use enrolment::{Acme, Dns, Enrolment};

use boxapi_core::config::{self as core, Common, Problem, Section, Table};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The top-level sections the authority parses itself.
const OWN: [&str; 4] = ["authority", "enrolment", "acme", "dns"];

#[derive(Clone, Debug)]
pub struct Config {
    pub common: Common,
    /// `[authority] listen`: where it serves (any address, the unspecified ones included).
    pub listen: Vec<SocketAddr>,
    /// The rest of `[authority]` (shared store, locator, metrics).
    pub authority: AuthoritySettings,
    /// The enrolment of boxes (`[enrolment]`, `[acme]`, `[dns]`: the three come together).
    pub enrolment: Option<Enrolment>,
    pub acme: Option<Acme>,
    pub dns: Option<Dns>,
}

/// The central authority's settings beyond `listen`. Plain data: what uses them (Redis, metrics)
/// lives in the authority's crate only.
#[derive(Clone, Debug, Default)]
pub struct AuthoritySettings {
    /// Plain-HTTP listener answering `GET /metrics` (Prometheus), when set.
    pub metrics_listen: Option<SocketAddr>,
    /// Tokens' `aud` is the caller's own box (its URL, from the locator) instead of `[auth] audience`.
    pub per_box_audience: bool,
    /// Peers (address, prefix length) whose `client_address_header` tells the caller's address:
    /// the operator's load balancers. Nobody else's header is believed.
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// Lower-case header name, `x-forwarded-for` by default.
    pub client_address_header: String,
    pub store: StoreConfig,
    pub locator: Option<LocatorConfig>,
    /// How far back a box counts for the fleet document version it fetched (metrics, `ctl
    /// status`): the boxes' poll interval.
    pub fleet_window: Duration,
}

/// Where the authority keeps single-use assertions, quotas and run-time revocations.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum StoreConfig {
    /// In its own memory: one authority (the default).
    #[default]
    Memory,
    /// In Redis, shared by every replica.
    Redis(RedisConfig),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS); never with a password in it.
    pub url: String,
    /// ACL user (Redis 6+).
    pub username: Option<String>,
    /// File holding the password (the first line), so it stays out of the configuration.
    pub password_file: Option<PathBuf>,
    /// PEM CA of Redis' certificate when it is not under a system root (rediss:// only).
    pub tls_ca_file: Option<PathBuf>,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    /// Bounds every store call: a token request waits at most this long on Redis.
    pub response_timeout: Duration,
    /// How often each replica re-reads the shared revocations.
    pub revocation_poll: Duration,
}

/// The operator's mapping from a caller's public address to its box (`GET /v1/locate`).
#[derive(Clone, Debug)]
pub enum LocatorConfig {
    /// A JSON object, address → box URL or host name; re-read when it changes.
    File(PathBuf),
    /// An executable given the address as its argument, printing the box URL or host name.
    Command { path: PathBuf, timeout: Duration },
    /// Keys `<key_prefix>locate:<address>` in the store's Redis.
    Redis,
}

/// Reads and parses the authority's configuration at `path`; `None` (with the problem) when it
/// cannot be read or is not TOML, else a best-effort configuration and one problem per mistake.
pub fn load(path: &Path, problems: &mut Vec<Problem>) -> Option<Config> {
    let (common, own) = core::load(path, &OWN, problems)?;
    Some(build(common, &own, problems))
}

/// [`load`] of a text, for tests.
pub fn parse(text: &str, path: &Path, problems: &mut Vec<Problem>) -> Option<Config> {
    let (common, own) = core::parse(text, path, &OWN, problems)?;
    Some(build(common, &own, problems))
}

fn build(common: Common, own: &Table, problems: &mut Vec<Problem>) -> Config {
    let dir = common.dir().to_path_buf();
    let mut top = Section::new("", own, problems);
    let authority_t = top.table("authority").cloned();
    let enrolment_t = top.table("enrolment").cloned();
    let acme_t = top.table("acme").cloned();
    let dns_t = top.table("dns").cloned();
    top.finish();
    let (listen, authority) = authority_t
        .map(|t| parse_authority(&t, &dir, problems))
        .unwrap_or_default();
    let enrolment = enrolment_t.map(|t| enrolment::parse_enrolment(&t, &dir, problems));
    let acme = acme_t.map(|t| enrolment::parse_acme(&t, &dir, problems));
    let dns = dns_t.map(|t| enrolment::parse_dns(&t, &dir, problems));
    if enrolment.is_some() || acme.is_some() || dns.is_some() {
        for (key, present) in [
            ("enrolment", enrolment.is_some()),
            ("acme", acme.is_some()),
            ("dns", dns.is_some()),
        ] {
            if !present {
                problems.push(Problem::invalid(
                    key,
                    "[enrolment] needs [acme] and [dns]; the three come together",
                ));
            }
        }
    }
    common.require_listener(!listen.is_empty(), problems);
    Config {
        common,
        listen,
        authority,
        enrolment,
        acme,
        dns,
    }
}

/// `address` or `address/length`.
fn parse_prefix(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((addr, len))
}

fn parse_authority(
    t: &Table,
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> (Vec<SocketAddr>, AuthoritySettings) {
    let mut s = Section::new("authority", t, problems);
    let mut listen = Vec::new();
    for a in s.strings("listen") {
        // A data-centre server: any address, the unspecified ones included.
        match a.parse::<SocketAddr>() {
            Ok(addr) => listen.push(addr),
            Err(_) => s.problem("listen", format_args!("{a:?} is not an IP:port address")),
        }
    }
    let metrics_listen = s
        .string("metrics_listen")
        .and_then(|a| match a.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                s.problem(
                    "metrics_listen",
                    format_args!("{a:?} is not an IP:port address"),
                );
                None
            }
        });
    let per_box_audience = s.boolean("per_box_audience");
    // Five minutes: the boxes' default poll interval.
    let fleet_window =
        Duration::from_millis(s.int("fleet_window_ms", 300_000, 1_000, 86_400_000) as u64);
    let mut trusted_proxies = Vec::new();
    for p in s.strings("trusted_proxies") {
        match parse_prefix(&p) {
            // "0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96": every client's X-Forwarded-For believed
            // and no client with a connection share (a typo, never a load balancer).
            Some((addr, len)) if len == 0 || (addr.to_canonical().is_ipv4() && len <= 96 && addr.is_ipv6()) => s.problem(
                "trusted_proxies",
                format_args!("{p:?} would trust every client: name the load balancers' own addresses or prefixes"),
            ),
            Some(prefix) => trusted_proxies.push(prefix),
            None => s.problem(
                "trusted_proxies",
                format_args!("{p:?} is not an address or address/length"),
            ),
        }
    }
    let client_address_header = s
        .string("client_address_header")
        .unwrap_or_else(|| "x-forwarded-for".into())
        .to_ascii_lowercase();
    if http::HeaderName::from_bytes(client_address_header.as_bytes()).is_err() {
        s.problem("client_address_header", "is not a header name");
    }
    let store = match s.table("store") {
        None => StoreConfig::Memory,
        Some(st) => parse_store(st, dir, s.problems),
    };
    let locator = s
        .table("locator")
        .and_then(|lt| parse_locator(lt, dir, s.problems));
    if per_box_audience && locator.is_none() {
        s.problem(
            "per_box_audience",
            "needs [authority.locator] to know each caller's box",
        );
    }
    if matches!(locator, Some(LocatorConfig::Redis)) && !matches!(store, StoreConfig::Redis(_)) {
        s.problems.push(Problem::invalid(
            "authority.locator.redis",
            "needs [authority.store] kind = \"redis\"",
        ));
    }
    s.finish();
    (
        listen,
        AuthoritySettings {
            metrics_listen,
            per_box_audience,
            trusted_proxies,
            client_address_header,
            store,
            locator,
            fleet_window,
        },
    )
}

fn parse_store(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> StoreConfig {
    let mut s = Section::new("authority.store", t, problems);
    let kind = s.string("kind").unwrap_or_else(|| "memory".into());
    let url = s.string("url");
    let username = s.string("username");
    let password_file = s.path("password_file", dir);
    let tls_ca_file = s.path("tls_ca_file", dir);
    let key_prefix = s.string("key_prefix").unwrap_or_else(|| "boxapi:".into());
    let ms = |s: &mut Section, key, default, min, max| {
        Duration::from_millis(s.int(key, default, min, max) as u64)
    };
    let connect_timeout = ms(&mut s, "connect_timeout_ms", 1000, 10, 60_000);
    let response_timeout = ms(&mut s, "response_timeout_ms", 500, 10, 10_000);
    // The contract: a revocation reaches every replica within a second.
    let revocation_poll = ms(&mut s, "revocation_poll_ms", 250, 10, 750);
    let config = match (kind.as_str(), url) {
        ("memory", None) => StoreConfig::Memory,
        ("memory", Some(_)) => {
            s.problem("url", "is for kind = \"redis\"");
            StoreConfig::Memory
        }
        ("redis", None) => {
            s.problem("url", "is required with kind = \"redis\"");
            StoreConfig::Memory
        }
        ("redis", Some(url)) => {
            let (scheme, authority) = url.split_once("://").map_or(("", ""), |(sch, rest)| {
                (sch, rest.split('/').next().unwrap_or(""))
            });
            if scheme != "redis" && scheme != "rediss" {
                s.problem("url", "must use the scheme redis (plain) or rediss (TLS)");
            } else if authority.contains('@') {
                // URLs end up in logs and process listings; a secret belongs in a 0600 file.
                s.problem(
                    "url",
                    "must not carry credentials: use username and password_file",
                );
            }
            if tls_ca_file.is_some() && scheme != "rediss" {
                s.problem("tls_ca_file", "needs a url with the TLS scheme rediss");
            }
            StoreConfig::Redis(RedisConfig {
                url,
                username,
                password_file,
                tls_ca_file,
                key_prefix,
                connect_timeout,
                response_timeout,
                revocation_poll,
            })
        }
        (other, _) => {
            s.problem(
                "kind",
                format_args!("{other:?} is not \"memory\" or \"redis\""),
            );
            StoreConfig::Memory
        }
    };
    s.finish();
    config
}

fn parse_locator(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> Option<LocatorConfig> {
    let mut s = Section::new("authority.locator", t, problems);
    let file = s.path("file", dir);
    let command = s.path("command", dir);
    let timeout = Duration::from_millis(s.int("command_timeout_ms", 1000, 10, 60_000) as u64);
    let redis = s.boolean("redis");
    let out = match (file, command, redis) {
        (Some(f), None, false) => Some(LocatorConfig::File(f)),
        (None, Some(path), false) => Some(LocatorConfig::Command { path, timeout }),
        (None, None, true) => Some(LocatorConfig::Redis),
        _ => {
            s.problems.push(Problem::invalid(
                "authority.locator",
                "set exactly one of file, command or redis = true",
            ));
            None
        }
    };
    s.finish();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [server]
        listen = ["127.0.0.1:8443"]
        cert = "cert.pem"
        key = "key.pem"
        [auth]
        audience = "https://box"
        issuers = ["https://iss"]
        [[tool]]
        id = "nperf"
        origins = ["https://www.nperf.com"]
        scopes = ["access", "counters"]
        keys = ["tools/nperf.jwk"]
    "#;

    fn problems_of(text: &str) -> Vec<String> {
        let mut p = Vec::new();
        parse(text, Path::new("/etc/boxapi/boxapi.toml"), &mut p);
        core::lines(&p)
    }

    #[test]
    fn authority_store_locator_and_metrics() {
        let ok = format!(
            "{GOOD}\n[authority]\nlisten = [\"0.0.0.0:443\"]\nmetrics_listen = \"127.0.0.1:9100\"\nper_box_audience = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[authority.store]\nkind = \"redis\"\nurl = \"rediss://r.internal:6380/0\"\npassword_file = \"redis.pw\"\n[authority.locator]\nredis = true\n"
        );
        let mut p = Vec::new();
        let c = parse(&ok, Path::new("/etc/boxapi/boxapi.toml"), &mut p).unwrap();
        assert!(p.is_empty(), "{p:?}");
        let a = &c.authority;
        assert_eq!(a.trusted_proxies.len(), 2);
        assert_eq!(a.client_address_header, "x-forwarded-for");
        let StoreConfig::Redis(r) = &a.store else {
            panic!("redis expected")
        };
        assert_eq!(
            r.password_file.as_deref(),
            Some(Path::new("/etc/boxapi/redis.pw"))
        );
        assert_eq!(r.response_timeout, Duration::from_millis(500));
        assert!(matches!(a.locator, Some(LocatorConfig::Redis)));

        let bad = format!(
            "{GOOD}\n[authority]\nper_box_audience = true\ntrusted_proxies = [\"10.0.0.0/33\"]\n[authority.store]\nkind = \"redis\"\nurl = \"redis://u:pw@r:6379\"\nrevocation_poll_ms = 5000\ntimeout = 1\n[authority.locator]\nfile = \"a.json\"\nredis = true\n"
        );
        let joined = problems_of(&bad).join("\n");
        for want in [
            "authority.trusted_proxies: \"10.0.0.0/33\"",
            "authority.store.url: must not carry credentials",
            "authority.store.revocation_poll_ms: 5000 is out of range",
            "authority.store.timeout: unknown key",
            "authority.locator: set exactly one of file, command or redis = true",
            "authority.per_box_audience: needs [authority.locator]",
        ] {
            assert!(joined.contains(want), "missing {want:?} in\n{joined}");
        }
    }

    /// A prefix that holds every client makes every X-Forwarded-For believed and takes every
    /// client's connection share away: refused (found by attack: "0.0.0.0/0" passed).
    #[test]
    fn trusted_proxies_that_trust_everyone_are_refused() {
        for every in [
            "0.0.0.0/0",
            "::/0",
            "::ffff:0.0.0.0/96",
            "::ffff:0.0.0.0/90",
        ] {
            let text = format!(
                "{GOOD}\n[authority]\nlisten = [\"0.0.0.0:443\"]\ntrusted_proxies = [\"10.0.0.0/24\", \"{every}\"]\n"
            );
            let joined = problems_of(&text).join("\n");
            assert!(
                joined.contains(&format!(
                    "authority.trusted_proxies: \"{every}\" would trust every client"
                )),
                "{every}: {joined}"
            );
        }
        let mapped = format!(
            "{GOOD}\n[authority]\nlisten = [\"0.0.0.0:443\"]\ntrusted_proxies = [\"::ffff:10.0.0.0/104\", \"2001:db8::/32\"]\n"
        );
        assert!(problems_of(&mapped).is_empty());
    }

    /// The box's sections in the authority's file are mistakes, each named once; the listener
    /// check knows `[authority] listen`.
    #[test]
    fn box_sections_are_unknown_here() {
        let text = format!(
            "{GOOD}[metrics]\nwan_interface = \"eth0\"\n[metrics.static]\nbox = {{ model = \"B\" }}\n\
             [enrol]\nzone = \"box.isp.example\"\n"
        );
        assert_eq!(
            problems_of(&text),
            ["enrol: unknown key", "metrics: unknown key"]
        );
        let no_listen = GOOD.replace("listen = [\"127.0.0.1:8443\"]", "");
        assert_eq!(
            problems_of(&no_listen),
            ["server: set listen_interfaces or listen (nothing to listen on)"]
        );
        let authority = format!("{no_listen}[authority]\nlisten = [\"0.0.0.0:443\"]\n");
        let mut p = Vec::new();
        let c = parse(&authority, Path::new("/etc/boxapi/boxapi.toml"), &mut p).unwrap();
        assert!(p.is_empty(), "{:?}", core::lines(&p));
        assert_eq!(c.listen, ["0.0.0.0:443".parse::<SocketAddr>().unwrap()]);
    }
}
