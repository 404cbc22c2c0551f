//! The TOML configuration: parsed and validated in one pass that reports every problem, never just the first.
mod enrolment;
mod problem;
mod tree;

pub use enrolment::{Acme, Dns, Enrolment};
pub use problem::{lines, Problem};

use crate::auth::registry::{check_origin_syntax, valid_tool_id, TOOL_ID_RULE};
use crate::auth::Scopes;
use crate::files;
use crate::privs::PrivError;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tree::{Table, Value};

#[derive(Clone, Debug)]
pub struct Config {
    /// The configuration file itself; relative paths inside it are resolved against its directory.
    pub path: PathBuf,
    pub server: Server,
    pub auth: Auth,
    pub tools: Vec<ToolConfig>,
    pub metrics: Metrics,
    /// The on-box authorization server (`[token_endpoint]`), when enabled.
    pub token_endpoint: Option<TokenEndpoint>,
    /// The operator-signed tool registry (`[registry]`), if any.
    pub registry: Option<SignedRegistryConfig>,
    /// Addresses of `boxapi authority` (the central token server); not used by `serve`.
    pub authority_listen: Vec<SocketAddr>,
    /// The box's own name and certificate from the operator's authority (`[enrol]`), if enabled.
    pub enrol: Option<Enrol>,
    /// The authority's enrolment of boxes (`[enrolment]`, `[acme]`, `[dns]`; authority only).
    pub enrolment: Option<Enrolment>,
    pub acme: Option<Acme>,
    pub dns: Option<Dns>,
    /// The rest of `[authority]` (shared store, locator, metrics); not used by `serve`.
    pub authority: AuthoritySettings,
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
}

/// Where the authority keeps single-use assertions, quotas and run-time revocations.
#[derive(Clone, Debug, Default)]
pub enum StoreConfig {
    /// In its own memory: one authority (the default).
    #[default]
    Memory,
    /// In Redis, shared by every replica.
    Redis(RedisConfig),
}

#[derive(Clone, Debug)]
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

/// `[enrol]`: how the box obtains and renews its own publicly trusted certificate (contract §10).
#[derive(Clone, Debug, PartialEq)]
pub struct Enrol {
    /// Base URL of the operator's authority; the box posts to `{authority}/v1/enrol`.
    pub authority: String,
    /// Trust anchors for the authority's TLS certificate (PEM).
    pub authority_ca: PathBuf,
    /// The device certificate (PEM, chain leaf first) and its key, provisioned at manufacture.
    pub device_cert: PathBuf,
    pub device_key: PathBuf,
    /// The operator's zone: the box's name is `<label>.<zone>`.
    pub zone: String,
    /// Renew when this fraction of the certificate's lifetime has passed (default two thirds).
    pub renew_fraction: f64,
    /// Backoff after a failed renewal: from `retry_min` doubling up to `retry_max`, jittered.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// A hosts file the box's own resolver reads (dnsmasq `hostsdir`), kept holding the box's
    /// name and LAN addresses so that LAN clients resolve it locally too.
    pub hosts_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct SignedRegistryConfig {
    /// The registry as a JWS signed by the operator's root key.
    pub file: PathBuf,
    /// The operator's root public key (JWK).
    pub root_key: PathBuf,
}

#[derive(Clone, Debug)]
pub struct TokenEndpoint {
    /// `iss` of the tokens the box issues (also accepted by the API); the endpoint is `{issuer}/v1/token`.
    pub issuer: String,
    /// Private JWK the box signs the tokens it issues with.
    pub signing_key: PathBuf,
    /// Tokens issued per tool and per hour (ARCEP: operators may cap tokens signed per tool).
    pub tokens_per_hour: u32,
}

#[derive(Clone, Debug)]
pub struct Server {
    pub listen_interfaces: Vec<String>,
    pub listen: Vec<SocketAddr>,
    pub port: u16,
    pub server_names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub max_connections: usize,
    /// Connection slots one terminal may hold (`max_connections_per_terminal`; default a quarter
    /// of `max_connections`, at least 1).
    pub max_connections_per_terminal: usize,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    /// Requests per second allowed per client address (0: no limit), with a burst allowance.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// How often interface addresses are re-read to follow DHCP and IPv6 prefix changes.
    pub interface_poll: Duration,
    /// How long per-tool activity is kept after a tool's last access (and the retention the
    /// access log should be given by the log system, which keeps it: docs/operations.md).
    pub activity_retention_days: u32,
    /// Unprivileged user (and group) to become once the sockets are bound, when started as root.
    pub user: Option<String>,
    pub group: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Auth {
    pub audience: String,
    pub issuers: Vec<String>,
    pub max_token_lifetime: u64,
    pub leeway: u64,
    pub issuer_keys: Option<PathBuf>,
    /// Where a central authorization server issues tokens (announced by discovery).
    pub central_token_endpoint: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ToolConfig {
    pub id: String,
    pub name: String,
    pub origins: Vec<String>,
    pub scopes: Scopes,
    pub keys: Vec<PathBuf>,
    pub revoked: bool,
    /// SHA-256 (hex) of the tool's client secret, for `client_secret_basic` at the token endpoint.
    pub client_secret_sha256: Option<[u8; 32]>,
    /// This tool's hourly token quota (else `[token_endpoint] tokens_per_hour`).
    pub tokens_per_hour: Option<u32>,
    /// The private key a token server signs this tool's tokens with (per-tool keys, so that boxes
    /// can drop one tool's key without touching any other).
    pub signing_key: Option<PathBuf>,
    /// The habilitation's validity window (Unix seconds), like the signed registry's.
    pub not_before: Option<i64>,
    pub expires: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub wan_interface: Option<String>,
    pub provider_file: Option<PathBuf>,
    pub provider_command: Option<PathBuf>,
    pub provider_timeout: Duration,
    /// Per-station Wi-Fi details for drivers without nl80211 (vendor stacks): a file, and a
    /// command printing the same JSON map (MAC address → `client.wifi` object); same limits.
    pub station_provider_file: Option<PathBuf>,
    pub station_provider_command: Option<PathBuf>,
    /// How long one `/v1/counters/stream` may last (the contract's 120 s at most; less for tests).
    pub stream_max: Duration,
    /// `[metrics.static]` as a JSON object (the lowest-precedence partial card).
    pub static_layer: serde_json::Value,
}

/// Walks one TOML table, remembering which keys were read so that the rest can be reported as unknown.
struct Section<'a> {
    name: &'a str,
    table: &'a Table,
    used: Vec<&'static str>,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Section<'a> {
    fn new(name: &'a str, table: &'a Table, problems: &'a mut Vec<Problem>) -> Self {
        Section {
            name,
            table,
            used: Vec::new(),
            problems,
        }
    }

    fn key(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    fn problem(&mut self, key: &str, why: impl std::fmt::Display) {
        let key = self.key(key);
        self.problems.push(Problem::invalid(key, why));
    }

    fn missing(&mut self, key: &str) {
        let key = self.key(key);
        self.problems.push(Problem::Missing { key });
    }

    fn wrong_type(&mut self, key: &str, expected: &'static str, found: &Value) {
        let key = self.key(key);
        self.problems.push(Problem::Type {
            key,
            expected,
            found: found.type_str(),
        });
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.table.get(key)
    }

    fn string(&mut self, key: &'static str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    fn required_string(&mut self, key: &'static str) -> String {
        let v = self.string(key);
        if v.is_none() && !self.table.contains_key(key) {
            self.missing(key);
        }
        v.unwrap_or_default()
    }

    fn strings(&mut self, key: &'static str) -> Vec<String> {
        match self.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.wrong_type(key, "strings", other),
                    }
                }
                out
            }
            Some(other) => {
                self.wrong_type(key, "an array of strings", other);
                Vec::new()
            }
        }
    }

    fn int(&mut self, key: &'static str, default: i64, min: i64, max: i64) -> i64 {
        match self.get(key) {
            None => default,
            Some(Value::Integer(i)) if (min..=max).contains(i) => *i,
            Some(Value::Integer(i)) => {
                let key = self.key(key);
                self.problems.push(Problem::OutOfRange {
                    key,
                    value: *i,
                    min,
                    max,
                });
                default
            }
            Some(other) => {
                self.wrong_type(key, "an integer", other);
                default
            }
        }
    }

    fn boolean(&mut self, key: &'static str) -> bool {
        match self.get(key) {
            None => false,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.wrong_type(key, "true or false", other);
                false
            }
        }
    }

    fn float(&mut self, key: &'static str, default: f64, min: f64, max: f64) -> f64 {
        match self.get(key) {
            None => default,
            Some(Value::Float(f)) if *f > min && *f < max => *f,
            Some(Value::Float(f)) => {
                self.problem(
                    key,
                    format_args!("{f} is out of range ({min} to {max}, exclusive)"),
                );
                default
            }
            Some(other) => {
                self.problem(
                    key,
                    format_args!("expected a number, found {}", other.type_str()),
                );
                default
            }
        }
    }

    /// An RFC 3339 date-time with an offset, as a string or a TOML offset date-time.
    fn date(&mut self, key: &'static str) -> Option<i64> {
        let text = match self.get(key)? {
            Value::String(s) => s.clone(),
            Value::Datetime(d) => d.clone(),
            other => {
                self.wrong_type(key, "an RFC 3339 date-time", other);
                return None;
            }
        };
        let parsed = crate::time::parse_rfc3339(&text);
        if parsed.is_none() {
            self.problem(
                key,
                format_args!(
                    "{text:?} is not an RFC 3339 date-time with an offset (e.g. 2027-01-31T00:00:00Z)"
                ),
            );
        }
        parsed
    }

    fn path(&mut self, key: &'static str, dir: &Path) -> Option<PathBuf> {
        self.string(key).map(|p| dir.join(p))
    }

    fn table(&mut self, key: &'static str) -> Option<&'a Table> {
        match self.get(key)? {
            Value::Table(t) => Some(t),
            other => {
                self.wrong_type(key, "a table", other);
                None
            }
        }
    }

    /// Reports every key that was present but never read: typos must not silently weaken security.
    fn finish(self) {
        for k in self.table.keys() {
            if !self.used.contains(&k.as_str()) {
                let key = self.key(k);
                self.problems.push(Problem::UnknownKey { key });
            }
        }
    }
}

/// What [`valid_ifname`] accepts, as problems say it.
const IFNAME_RULE: &str =
    "1-15 printable ASCII characters, without '/', ':' or spaces, not . or ..";

/// A Linux interface name as the kernel's `dev_valid_name` accepts it (1 to 15 bytes, no '/',
/// ':' or whitespace, not "." or ".."), restricted further to printable ASCII: the names are
/// used as path components under /sys/class/net and given to SO_BINDTODEVICE.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// `server.state_dir` must be a directory, or be creatable: the nearest existing ancestor a
/// directory (whether the daemon may write there depends on the user it runs as; not judged).
fn check_state_dir(path: &Path) -> Result<(), String> {
    for p in path.ancestors() {
        if p.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) if p == path => return Err("exists and is not a directory".into()),
            Ok(_) => {
                return Err(format!(
                    "cannot be created: {} is not a directory",
                    p.display()
                ))
            }
            // Absent (or not reachable from here): its parent decides.
            Err(_) => continue,
        }
    }
    Ok(())
}

/// `[enrol] authority`: `https://host[:port]` and nothing else (no path, query, user info), the
/// host a DNS name, an IPv4 address or a bracketed IPv6 address; the box connects to exactly that.
pub fn check_authority_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("must be an https:// URL")?;
    if rest.contains(['/', '?', '#']) {
        return Err("must be https://host[:port], without a path, query or trailing '/'");
    }
    if rest.contains('@') {
        return Err("must not carry user information (user@)");
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ']'")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the bracketed host is not an IPv6 address");
        }
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .ok_or("only :port may follow the IPv6 address")?,
            ),
        };
        (None, port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(rest), None),
        }
    };
    if let Some(h) = host {
        let ok = h.parse::<std::net::Ipv4Addr>().is_ok() || valid_hostname(&h.to_ascii_lowercase());
        if !ok {
            return Err("the host is not a DNS name or an IP address");
        }
    }
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err("the port is not a number from 1 to 65535");
        }
    }
    Ok(())
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// 64 hex digits as 32 bytes. Works on bytes, never slicing the `str`: a multi-byte character
/// in a pushed config must be a reported problem, not a panic at a char boundary.
pub fn parse_sha256_hex(h: &str) -> Option<[u8; 32]> {
    let b = h.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Reads and parses the file at `path` (a regular file of at most [`files::limit::CONFIG`]);
/// `None` (with the problem) when it cannot be read or is not TOML.
pub fn load(path: &Path, problems: &mut Vec<Problem>) -> Option<Config> {
    match files::read_text_limited(path, files::limit::CONFIG) {
        Ok(text) => parse(&text, path, problems),
        Err(e) => {
            problems.push(Problem::Unreadable {
                path: path.to_path_buf(),
                why: match e {
                    // `Unreadable` already says "cannot read".
                    files::ReadError::Io(e) => e.to_string(),
                    other => other.to_string(),
                },
            });
            None
        }
    }
}

/// Reads a file that configuration key `key` names, within `limit` ([`files::limit`]); a
/// problem naming the key, the file and the reason when it is not a regular file, is too large
/// or cannot be read.
pub fn read_named(
    key: &str,
    path: &Path,
    limit: u64,
    problems: &mut Vec<Problem>,
) -> Option<Vec<u8>> {
    files::read_limited(path, limit)
        .map_err(|e| problems.push(Problem::file(key, path, e)))
        .ok()
}

/// Parses `text` (the file at `path`). Unless the TOML itself is broken, returns a best-effort
/// configuration even when it has mistakes, so that later checks (files, keys) can still report
/// their own problems; `problems` gets one entry per mistake.
pub fn parse(text: &str, path: &Path, problems: &mut Vec<Problem>) -> Option<Config> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let root: Table = match tree::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            problems.push(Problem::Syntax {
                path: path.to_path_buf(),
                why: msg.trim().to_owned(),
            });
            // Nothing more can be said of a file that does not parse.
            return None;
        }
    };
    let mut top = Section::new("", &root, problems);
    let server_t = top.table("server").cloned().unwrap_or_default();
    let auth_t = top.table("auth").cloned();
    let tools_v = top.get("tool").cloned();
    let metrics_t = top.table("metrics").cloned().unwrap_or_default();
    let token_t = top.table("token_endpoint").cloned();
    let registry_t = top.table("registry").cloned();
    let authority_t = top.table("authority").cloned();
    let enrol_t = top.table("enrol").cloned();
    let enrolment_t = top.table("enrolment").cloned();
    let acme_t = top.table("acme").cloned();
    let dns_t = top.table("dns").cloned();
    let (had_server, had_auth) = (root.contains_key("server"), auth_t.is_some());
    top.finish();
    for (key, had) in [("server", had_server), ("auth", had_auth)] {
        if !had {
            problems.push(Problem::MissingSection { key: key.into() });
        }
    }

    let server = parse_server(&server_t, &dir, problems);
    let auth = parse_auth(&auth_t.unwrap_or_default(), &dir, problems);
    let tools = parse_tools(tools_v.as_ref(), &dir, problems);
    let metrics = parse_metrics(&metrics_t, &dir, problems);
    let token_endpoint = token_t.and_then(|t| parse_token_endpoint(&t, &dir, problems));
    let registry = registry_t.and_then(|t| {
        let mut s = Section::new("registry", &t, problems);
        let (file, root_key) = (s.path("file", &dir), s.path("root_key", &dir));
        for (k, v) in [("file", &file), ("root_key", &root_key)] {
            if v.is_none() && !t.contains_key(k) {
                s.missing(k);
            }
        }
        s.finish();
        Some(SignedRegistryConfig {
            file: file?,
            root_key: root_key?,
        })
    });
    let enrol = enrol_t.and_then(|t| parse_enrol(&t, &dir, problems));
    let (authority_listen, authority) = authority_t
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
    // Checked here, where `[authority] listen` is known too.
    let nothing_to_listen_on = server.listen_interfaces.is_empty()
        && server.listen.is_empty()
        && authority_listen.is_empty()
        && !server_t.is_empty();
    if nothing_to_listen_on && !problems.iter().any(|p| p.key() == Some("server.listen")) {
        problems.push(Problem::invalid(
            "server",
            "set listen_interfaces or listen (nothing to listen on)",
        ));
    }
    Some(Config {
        enrol,
        authority_listen,
        enrolment,
        acme,
        dns,
        authority,
        registry,
        token_endpoint,
        path: path.to_path_buf(),
        server,
        auth,
        tools,
        metrics,
    })
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
    let mut trusted_proxies = Vec::new();
    for p in s.strings("trusted_proxies") {
        match parse_prefix(&p) {
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

fn parse_server(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> Server {
    let mut s = Section::new("server", t, problems);
    let listen_interfaces = s.strings("listen_interfaces");
    for i in &listen_interfaces {
        if !valid_ifname(i) {
            s.problem(
                "listen_interfaces",
                format_args!("{i:?} is not an interface name ({IFNAME_RULE})"),
            );
        }
    }
    let mut listen = Vec::new();
    let listen_raw = s.strings("listen");
    for a in &listen_raw {
        match a.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_unspecified() => s.problem(
                "listen",
                format_args!("{a} is an unspecified address; boxapi listens on LAN addresses only"),
            ),
            Ok(addr) if addr.ip().is_multicast() => {
                s.problem("listen", format_args!("{a} is a multicast address"))
            }
            Ok(addr) => listen.push(addr),
            Err(_) => s.problem("listen", format_args!("{a:?} is not an IP:port address")),
        }
    }
    let port = s.int("port", 443, 1, 65535) as u16;
    let server_names = s.strings("server_names");
    for n in &server_names {
        if !valid_hostname(n) {
            s.problem(
                "server_names",
                format_args!("{n:?} is not a lower-case host name"),
            );
        }
    }
    let cert = s.path("cert", dir);
    let key = s.path("key", dir);
    for (k, v) in [("cert", &cert), ("key", &key)] {
        if v.is_none() && !s.table.contains_key(k) {
            s.missing(k);
        }
    }
    let max_connections = s.int("max_connections", 64, 1, 100_000) as usize;
    let max_connections_per_terminal = s.int(
        "max_connections_per_terminal",
        (max_connections / 4).max(1) as i64,
        1,
        max_connections as i64,
    ) as usize;
    let state_dir = match s.string("state_dir") {
        Some(d) if d.trim().is_empty() => {
            s.problem("state_dir", "must not be empty");
            PathBuf::new()
        }
        Some(d) => dir.join(d),
        None => "/var/lib/boxapi".into(),
    };
    if !state_dir.as_os_str().is_empty() {
        if let Err(why) = check_state_dir(&state_dir) {
            s.problem("state_dir", format_args!("{}: {why}", state_dir.display()));
        }
    }
    let control_socket = s
        .path("control_socket", dir)
        .unwrap_or_else(|| "/run/boxapi/control.sock".into());
    let rate_limit_per_second = s.int("rate_limit_per_second", 20, 0, 1_000_000) as u32;
    let rate_limit_burst = s.int("rate_limit_burst", 40, 1, 1_000_000) as u32;
    let interface_poll =
        Duration::from_millis(s.int("interface_poll_ms", 2000, 100, 600_000) as u64);
    let activity_retention_days = s.int("activity_retention_days", 365, 1, 3650) as u32;
    let user = s.string("user");
    let group = s.string("group");
    if group.is_some() && user.is_none() {
        s.problem("group", "needs server.user as well");
    }
    if let Some(u) = &user {
        if let Err(e) = crate::privs::resolve(u, group.as_deref()) {
            s.problems.push(match e {
                PrivError::UnknownUser(name) => Problem::NoSuchAccount {
                    key: "server.user".into(),
                    kind: "user",
                    name,
                },
                PrivError::UnknownGroup(name) => Problem::NoSuchAccount {
                    key: "server.group".into(),
                    kind: "group",
                    name,
                },
                // `resolve` reports only unknown accounts; anything else still names the key.
                other => Problem::invalid("server.user", other),
            });
        }
    }
    s.finish();
    Server {
        listen_interfaces,
        listen,
        port,
        server_names,
        cert: cert.unwrap_or_default(),
        key: key.unwrap_or_default(),
        max_connections,
        max_connections_per_terminal,
        state_dir,
        control_socket,
        rate_limit_per_second,
        rate_limit_burst,
        interface_poll,
        activity_retention_days,
        user,
        group,
    }
}

fn parse_auth(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> Auth {
    let mut s = Section::new("auth", t, problems);
    let audience = if t.is_empty() {
        String::new()
    } else {
        s.required_string("audience")
    };
    // A token's `aud` must name this box; an empty one would name nothing.
    if matches!(t.get("audience"), Some(Value::String(a)) if a.trim().is_empty()) {
        s.problem("audience", "must not be empty");
    }
    let issuers = s.strings("issuers");
    if issuers.is_empty() && !t.is_empty() {
        s.problem("issuers", "at least one accepted issuer is required");
    }
    if issuers.iter().any(|i| i.trim().is_empty()) {
        s.problem("issuers", "an accepted issuer must not be empty");
    }
    let lifetime = s.get("max_token_lifetime").cloned();
    let max_token_lifetime = match lifetime {
        None => 900,
        Some(Value::Integer(i)) if (1..=900).contains(&i) => i as u64,
        Some(Value::Integer(i)) => {
            s.problem(
                "max_token_lifetime",
                format_args!("{i} is not allowed: tokens live at most 900 seconds (15 minutes)"),
            );
            900
        }
        Some(other) => {
            s.wrong_type("max_token_lifetime", "an integer", &other);
            900
        }
    };
    let leeway = s.int("leeway", 30, 0, 300) as u64;
    let issuer_keys = s.path("issuer_keys", dir);
    let central_token_endpoint = s.string("central_token_endpoint");
    if let Some(u) = &central_token_endpoint {
        if !u.starts_with("https://") {
            s.problem("central_token_endpoint", "must be an https:// URL");
        }
    }
    s.finish();
    Auth {
        audience,
        issuers,
        max_token_lifetime,
        leeway,
        issuer_keys,
        central_token_endpoint,
    }
}

fn parse_tools(v: Option<&Value>, dir: &Path, problems: &mut Vec<Problem>) -> Vec<ToolConfig> {
    let items = match v {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            problems.push(Problem::invalid(
                "tool",
                "use [[tool]] tables, one per tool",
            ));
            return Vec::new();
        }
    };
    let mut tools: Vec<ToolConfig> = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let Value::Table(t) = item else {
            problems.push(Problem::invalid(format!("tool[{n}]"), "expected a table"));
            continue;
        };
        let label = format!("tool[{n}]");
        let mut s = Section::new(&label, t, problems);
        let id = s.required_string("id");
        if !id.is_empty() && !valid_tool_id(&id) {
            s.problem("id", format_args!("{id:?} must be {TOOL_ID_RULE}"));
        }
        let name = s.string("name").unwrap_or_else(|| id.clone());
        let origins = s.strings("origins");
        for o in &origins {
            if let Err(why) = check_origin_syntax(o) {
                s.problem("origins", format_args!("{o:?}: {why}"));
            }
        }
        let mut scopes = Scopes::default();
        for name in s.strings("scopes") {
            match Scopes::from_name(&name) {
                Some(sc) => scopes = scopes.union(sc),
                None => s.problem(
                    "scopes",
                    format_args!("{name:?} is not a scope (access, counters)"),
                ),
            }
        }
        let keys = s.strings("keys").into_iter().map(|k| dir.join(k)).collect();
        let revoked = s.boolean("revoked");
        let not_before = s.date("not_before");
        let expires = s.date("expires");
        if let (Some(nb), Some(exp)) = (not_before, expires) {
            if exp <= nb {
                s.problem("expires", "must be after not_before");
            }
        }
        let signing_key = s.path("signing_key", dir);
        let tokens_per_hour = t
            .contains_key("tokens_per_hour")
            .then(|| s.int("tokens_per_hour", 60, 1, 100_000) as u32);
        let client_secret_sha256 =
            s.string("client_secret_sha256")
                .and_then(|h| match parse_sha256_hex(&h) {
                    Some(d) => Some(d),
                    None => {
                        s.problem(
                            "client_secret_sha256",
                            "expected 64 hex digits (the SHA-256 of the secret)",
                        );
                        None
                    }
                });
        s.finish();
        if tools.iter().any(|t| t.id == id) && !id.is_empty() {
            problems.push(Problem::invalid(
                format!("{label}.id"),
                format_args!("{id:?} is registered twice"),
            ));
        }
        for o in &origins {
            if let Some(other) = tools.iter().find(|t| t.origins.contains(o)) {
                problems.push(Problem::invalid(
                    format!("{label}.origins"),
                    format_args!("{o:?} already belongs to tool {:?}", other.id),
                ));
            }
        }
        tools.push(ToolConfig {
            id,
            name,
            origins,
            scopes,
            keys,
            revoked,
            client_secret_sha256,
            signing_key,
            tokens_per_hour,
            not_before,
            expires,
        });
    }
    tools
}

fn parse_metrics(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> Metrics {
    let mut s = Section::new("metrics", t, problems);
    let wan_interface = s.string("wan_interface");
    if let Some(w) = &wan_interface {
        if !valid_ifname(w) {
            s.problem(
                "wan_interface",
                format_args!("{w:?} is not an interface name ({IFNAME_RULE})"),
            );
        }
    }
    let provider_file = s.path("provider_file", dir);
    let provider_command = s.path("provider_command", dir);
    let provider_timeout =
        Duration::from_millis(s.int("provider_timeout_ms", 1000, 10, 60_000) as u64);
    let station_provider_file = s.path("station_provider_file", dir);
    let station_provider_command = s.path("station_provider_command", dir);
    let stream_max = Duration::from_secs(s.int("stream_max_seconds", 120, 1, 120) as u64);
    // Its shape is the card's, checked by the box (`card::validate_layer`).
    let static_layer = s.table("static").map_or(serde_json::Value::Null, |t| {
        Value::Table(t.clone()).to_json()
    });
    s.finish();
    Metrics {
        wan_interface,
        provider_file,
        provider_command,
        provider_timeout,
        station_provider_file,
        station_provider_command,
        stream_max,
        static_layer,
    }
}

fn parse_enrol(t: &Table, dir: &Path, problems: &mut Vec<Problem>) -> Option<Enrol> {
    let mut s = Section::new("enrol", t, problems);
    let authority = s.required_string("authority");
    if !authority.is_empty() {
        if let Err(why) = check_authority_url(&authority) {
            s.problem("authority", format_args!("{authority:?}: {why}"));
        }
    }
    let file = |s: &mut Section, key: &'static str| {
        let p = s.path(key, dir);
        if p.is_none() && !t.contains_key(key) {
            s.problem(key, "is required");
        }
        p
    };
    let authority_ca = file(&mut s, "authority_ca");
    let device_cert = file(&mut s, "device_cert");
    let device_key = file(&mut s, "device_key");
    let zone = s.required_string("zone");
    if !zone.is_empty() && !valid_hostname(&zone) {
        s.problem(
            "zone",
            format_args!("{zone:?} is not a lower-case DNS name"),
        );
    }
    let renew_fraction = s.float("renew_fraction", 2.0 / 3.0, 0.0, 1.0);
    let retry_min = Duration::from_secs(s.int("retry_min_secs", 60, 1, 86_400) as u64);
    let retry_max = Duration::from_secs(s.int("retry_max_secs", 6 * 3600, 1, 7 * 86_400) as u64);
    if retry_max < retry_min {
        s.problem("retry_max_secs", "must not be below retry_min_secs");
    }
    let hosts_file = s.path("hosts_file", dir);
    s.finish();
    Some(Enrol {
        authority,
        authority_ca: authority_ca?,
        device_cert: device_cert?,
        device_key: device_key?,
        zone,
        renew_fraction,
        retry_min,
        retry_max,
        hosts_file,
    })
}

fn parse_token_endpoint(
    t: &Table,
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<TokenEndpoint> {
    let mut s = Section::new("token_endpoint", t, problems);
    let enabled = s.boolean("enabled");
    let issuer = s.required_string("issuer");
    if !issuer.is_empty() && (!issuer.starts_with("https://") || issuer.ends_with('/')) {
        s.problem("issuer", "must be an https:// URL without a trailing '/'");
    }
    let signing_key = s.path("signing_key", dir);
    if signing_key.is_none() && !t.contains_key("signing_key") {
        s.missing("signing_key");
    }
    let tokens_per_hour = s.int("tokens_per_hour", 60, 1, 100_000) as u32;
    s.finish();
    enabled.then(|| TokenEndpoint {
        issuer,
        signing_key: signing_key.unwrap_or_default(),
        tokens_per_hour,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn enrol_authority_urls() {
        for ok in [
            "https://auth.example",
            "https://Auth.Example:8443",
            "https://127.0.0.1:1",
            "https://[::1]",
            "https://[fd00::1]:443",
        ] {
            assert_eq!(super::check_authority_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://auth.example",
            "https://",
            "https://auth.example/",
            "https://auth.example/v1",
            "https://auth.example?x",
            "https://auth.example#x",
            "https://user@auth.example",
            "https://user:pw@auth.example",
            "https://:443",
            "https://auth.example:",
            "https://auth.example:0",
            "https://auth.example:65536",
            "https://auth.example:+1",
            "https://auth example",
            "https://[::1",
            "https://[::1]x",
            "https://[nope]",
            "https://::1",
            "https://a..b",
        ] {
            assert!(super::check_authority_url(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    fn problems_of(text: &str) -> Vec<String> {
        let mut p = Vec::new();
        parse(text, Path::new("/etc/boxapi/boxapi.toml"), &mut p);
        lines(&p)
    }

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

    #[test]
    fn good_config_parses_with_defaults() {
        let mut p = Vec::new();
        let c = parse(GOOD, Path::new("/etc/boxapi/boxapi.toml"), &mut p).unwrap();
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.server.cert, Path::new("/etc/boxapi/cert.pem"));
        assert_eq!(c.server.max_connections, 64);
        assert_eq!(c.server.activity_retention_days, 365);
        assert_eq!(c.auth.max_token_lifetime, 900);
        assert_eq!(c.tools[0].keys[0], Path::new("/etc/boxapi/tools/nperf.jwk"));
        assert_eq!(c.tools[0].name, "nperf");
    }

    #[test]
    fn reports_every_mistake_at_once() {
        let bad = GOOD
            .replace(
                "listen = [\"127.0.0.1:8443\"]",
                "listen = [\"0.0.0.0:443\", \"[::]:443\"]\nlisen = 1",
            )
            .replace("issuers", "max_token_lifetime = 3600\nissuers")
            .replace("\"counters\"]", "\"admin\"]");
        let p = problems_of(&bad);
        let joined = p.join("\n");
        assert!(joined.contains("server.lisen: unknown key"), "{joined}");
        assert!(
            joined.contains("0.0.0.0:443 is an unspecified address"),
            "{joined}"
        );
        assert!(
            joined.contains("[::]:443 is an unspecified address"),
            "{joined}"
        );
        assert!(joined.contains("auth.max_token_lifetime: 3600"), "{joined}");
        assert!(joined.contains("tool[0].scopes: \"admin\""), "{joined}");
        assert_eq!(p.len(), 5, "{joined}");
    }

    #[test]
    fn problems_are_typed_and_name_their_keys() {
        let bad = GOOD
            .replace("key = \"key.pem\"", "port = \"443\"\nmax_connections = 0")
            .replace("id = \"nperf\"", "id = \"n perf\"\ncolour = 1");
        let mut p = Vec::new();
        parse(&bad, Path::new("/etc/boxapi/boxapi.toml"), &mut p);
        let want = [
            Problem::Type {
                key: "server.port".into(),
                expected: "an integer",
                found: "string",
            },
            Problem::OutOfRange {
                key: "server.max_connections".into(),
                value: 0,
                min: 1,
                max: 100_000,
            },
            Problem::Missing {
                key: "server.key".into(),
            },
            Problem::invalid("tool[0].id", "\"n perf\" must be 1-64 of A-Z a-z 0-9 . _ -"),
            Problem::UnknownKey {
                key: "tool[0].colour".into(),
            },
        ];
        for w in &want {
            assert!(p.contains(w), "{w} not in {:?}", lines(&p));
        }
        assert_eq!(p.len(), want.len(), "{:?}", lines(&p));
    }

    #[test]
    fn refuses_duplicates_and_bad_origins() {
        let two = format!("{GOOD}\n[[tool]]\nid = \"nperf\"\norigins = [\"https://www.nperf.com\", \"https://x.example/\"]\n");
        let joined = problems_of(&two).join("\n");
        assert!(joined.contains("registered twice"), "{joined}");
        assert!(joined.contains("already belongs to tool"), "{joined}");
        assert!(joined.contains("https://x.example/"), "{joined}");
    }

    #[test]
    fn tool_validity_dates_as_strings_or_toml_dates() {
        let text = format!(
            "{GOOD}not_before = 2020-01-01T00:00:00Z\nexpires = \"2021-01-01T00:00:00+01:00\"\n"
        );
        let mut p = Vec::new();
        let c = parse(&text, Path::new("/etc/boxapi/boxapi.toml"), &mut p).unwrap();
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.tools[0].not_before, Some(1_577_836_800));
        assert_eq!(c.tools[0].expires, Some(1_609_455_600));
        let bad = format!("{GOOD}not_before = \"2021-01-01T00:00:00Z\"\nexpires = 2020-01-01\n");
        let joined = problems_of(&bad).join("\n");
        assert!(
            joined.contains("tool[0].expires: \"2020-01-01\" is not an RFC 3339"),
            "{joined}"
        );
        let inverted = format!(
            "{GOOD}not_before = \"2021-01-01T00:00:00Z\"\nexpires = \"2020-01-01T00:00:00Z\"\n"
        );
        let joined = problems_of(&inverted).join("\n");
        assert!(
            joined.contains("tool[0].expires: must be after not_before"),
            "{joined}"
        );
    }

    #[test]
    fn non_ascii_secret_digest_is_a_problem_not_a_panic() {
        // 64 bytes, but 'é' is two of them: slicing by byte pairs would cut it in half.
        let secret = format!("{}é{}", "a".repeat(31), "b".repeat(31));
        assert_eq!(secret.len(), 64);
        let text = format!("{GOOD}client_secret_sha256 = \"{secret}\"\n");
        let joined = problems_of(&text).join("\n");
        assert!(joined.contains("tool[0].client_secret_sha256"), "{joined}");
        assert_eq!(parse_sha256_hex(&"0f".repeat(32)), Some([0x0f; 32]));
        assert_eq!(parse_sha256_hex(&"+f".repeat(32)), None);
        assert_eq!(parse_sha256_hex("ab"), None);
    }

    #[test]
    fn empty_audience_and_issuers_are_refused() {
        let joined = problems_of(&GOOD.replace("\"https://box\"", "\"\"")).join("\n");
        assert_eq!(joined, "auth.audience: must not be empty");
        let joined =
            problems_of(&GOOD.replace("[\"https://iss\"]", "[\"https://iss\", \" \"]")).join("\n");
        assert_eq!(joined, "auth.issuers: an accepted issuer must not be empty");
    }

    #[test]
    fn interface_names_follow_the_kernels_rule() {
        for ok in ["eth0", "br-lan", "wan.100", "a", "veth_0123456789"] {
            let text = format!("{GOOD}[metrics]\nwan_interface = \"{ok}\"\n");
            assert_eq!(problems_of(&text), Vec::<String>::new(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "eth0/x",
            "../x",
            "eth 0",
            "eth\t0",
            "eth0:1",
            "é",
            "veth_01234567890",
        ] {
            let text = format!("{GOOD}[metrics]\nwan_interface = \"{bad}\"\n");
            let joined = problems_of(&text).join("\n");
            assert!(
                joined.starts_with(&format!(
                    "metrics.wan_interface: {bad:?} is not an interface name ("
                )),
                "{bad:?}: {joined}"
            );
            let text = GOOD.replace(
                "[server]",
                &format!("[server]\nlisten_interfaces = [\"{bad}\"]"),
            );
            let joined = problems_of(&text).join("\n");
            assert!(
                joined.starts_with("server.listen_interfaces: "),
                "{bad:?}: {joined}"
            );
        }
    }

    #[test]
    fn state_dir_must_be_a_directory_or_creatable() {
        let dir = std::env::temp_dir().join(format!("boxapi-config-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        let with = |state: &Path| {
            problems_of(&GOOD.replace(
                "[auth]",
                &format!("state_dir = \"{}\"\n[auth]", state.display()),
            ))
        };
        assert_eq!(with(&dir), Vec::<String>::new());
        assert_eq!(with(&dir.join("new/deeper")), Vec::<String>::new());
        assert_eq!(
            with(&file),
            [format!(
                "server.state_dir: {}: exists and is not a directory",
                file.display()
            )]
        );
        assert_eq!(
            with(&file.join("sub")),
            [format!(
                "server.state_dir: {}: cannot be created: {} is not a directory",
                file.join("sub").display(),
                file.display()
            )]
        );
        assert_eq!(
            problems_of(&GOOD.replace("[auth]", "state_dir = \"\"\n[auth]")),
            ["server.state_dir: must not be empty"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_configuration_file_itself_is_read_safely() {
        let dir = std::env::temp_dir().join(format!("boxapi-config-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let big = dir.join("big.toml");
        let mut text = GOOD.to_owned();
        text.push_str(&"#".repeat(files::limit::CONFIG as usize));
        std::fs::write(&big, text).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = [fifo.clone(), big.clone()];
        std::thread::spawn(move || {
            for p in paths {
                let mut problems = Vec::new();
                let loaded = load(&p, &mut problems).is_some();
                let _ = tx.send((loaded, lines(&problems)));
            }
        });
        let next = || rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(
            next(),
            (
                false,
                vec![format!(
                    "{}: cannot read: not a regular file (a named pipe)",
                    fifo.display()
                )]
            )
        );
        assert_eq!(
            next(),
            (
                false,
                vec![format!(
                    "{}: cannot read: larger than 1 MiB, the limit for this file",
                    big.display()
                )]
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_toml_is_one_problem_naming_the_file() {
        let mut p = Vec::new();
        assert!(parse("[server\n", Path::new("/etc/boxapi/boxapi.toml"), &mut p).is_none());
        assert_eq!(p.len(), 1);
        assert!(matches!(p[0], Problem::Syntax { .. }));
        assert!(p[0]
            .to_string()
            .starts_with("/etc/boxapi/boxapi.toml: not valid TOML"));
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
}
