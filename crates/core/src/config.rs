//! The TOML configuration's shared part: the sections both daemons read (`[server]`, `[auth]`,
//! `[[tool]]`, `[token_endpoint]`, `[registry]`), parsed in one pass that reports every problem.
//! Each daemon claims its own top-level sections by name and parses them itself (its `config`).
mod problem;
mod section;
mod tree;

use crate::auth::registry::{check_origin_syntax, valid_tool_id, TOOL_ID_RULE};
use crate::auth::Scopes;
use crate::files;
pub use problem::{lines, Problem};
pub use section::Section;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use tree::{Table, Value};

/// The sections of a configuration file that both daemons read.
#[derive(Clone, Debug)]
pub struct Common {
    /// The configuration file itself; relative paths inside it are resolved against its directory.
    pub path: PathBuf,
    pub server: Server,
    pub auth: Auth,
    pub tools: Vec<ToolConfig>,
    /// The token endpoint (`[token_endpoint]`), when enabled.
    pub token_endpoint: Option<TokenEndpoint>,
    /// The operator-signed tool registry (`[registry]`), if any.
    pub registry: Option<SignedRegistryConfig>,
    /// Whether `[server]` holds any key: an empty or absent one has its own problem, not
    /// "nothing to listen on" as well.
    server_given: bool,
}

impl Common {
    /// The directory relative paths in the file are resolved against.
    pub fn dir(&self) -> &Path {
        crate::files::parent(&self.path)
    }

    /// Reports a `[server]` with no address to listen on, unless the daemon listens elsewhere
    /// (`also_listens`: the authority's `[authority] listen`) or `server.listen` already has a
    /// problem of its own.
    pub fn require_listener(&self, also_listens: bool, problems: &mut Vec<Problem>) {
        let s = &self.server;
        let nothing = s.listen_interfaces.is_empty()
            && s.listen.is_empty()
            && !also_listens
            && self.server_given;
        if nothing && !problems.iter().any(|p| p.key() == Some("server.listen")) {
            problems.push(Problem::invalid(
                "server",
                "set listen_interfaces or listen (nothing to listen on)",
            ));
        }
    }
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
    /// Unprivileged user (and group) the box becomes once the sockets are bound, when started as
    /// root (the box checks that the accounts exist: `boxapi::config`).
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

/// What [`valid_ifname`] accepts, as problems say it.
pub const IFNAME_RULE: &str =
    "1-15 printable ASCII characters, without '/', ':' or spaces, not . or ..";

/// A Linux interface name as the kernel's `dev_valid_name` accepts it (1 to 15 bytes, no '/',
/// ':' or whitespace, not "." or ".."), restricted further to printable ASCII: the names are
/// used as path components under /sys/class/net and given to SO_BINDTODEVICE.
pub fn valid_ifname(name: &str) -> bool {
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

/// A lower-case DNS name: labels of 1-63 of a-z 0-9 -, 253 bytes at most.
pub fn valid_hostname(name: &str) -> bool {
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

/// What [`load`] and [`parse`] give a daemon: the shared sections, and the top-level entries of
/// the sections it claimed (by name, as written; absent ones are not there) for it to parse.
pub type Parsed = (Common, Table);

/// Reads and parses the file at `path` (a regular file of at most [`files::limit::CONFIG`]),
/// `own` naming the top-level sections the calling daemon parses itself; `None` (with the
/// problem) when it cannot be read or is not TOML.
pub fn load(path: &Path, own: &[&'static str], problems: &mut Vec<Problem>) -> Option<Parsed> {
    match files::read_text_limited(path, files::limit::CONFIG) {
        Ok(text) => parse(&text, path, own, problems),
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
/// their own problems; `problems` gets one entry per mistake. A top-level key that is neither a
/// shared section nor one of `own` is unknown: another daemon's section is a mistake here.
pub fn parse(
    text: &str,
    path: &Path,
    own: &[&'static str],
    problems: &mut Vec<Problem>,
) -> Option<Parsed> {
    let dir = crate::files::parent(path).to_path_buf();
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
    let token_t = top.table("token_endpoint").cloned();
    let registry_t = top.table("registry").cloned();
    let mut claimed = Table::new();
    for &name in own {
        if let Some(v) = top.get(name) {
            claimed.insert(name.to_owned(), v.clone());
        }
    }
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
    let common = Common {
        path: path.to_path_buf(),
        server,
        auth,
        tools,
        token_endpoint,
        registry,
        server_given: !server_t.is_empty(),
    };
    Some((common, claimed))
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
    use super::*;

    fn problems_of(text: &str) -> Vec<String> {
        let mut p = Vec::new();
        parse(text, Path::new("/etc/boxapi/boxapi.toml"), &[], &mut p);
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
        let (c, _) = parse(GOOD, Path::new("/etc/boxapi/boxapi.toml"), &[], &mut p).unwrap();
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.server.cert, Path::new("/etc/boxapi/cert.pem"));
        assert_eq!(c.server.max_connections, 64);
        assert_eq!(c.server.activity_retention_days, 365);
        assert_eq!(c.auth.max_token_lifetime, 900);
        assert_eq!(c.tools[0].keys[0], Path::new("/etc/boxapi/tools/nperf.jwk"));
        assert_eq!(c.tools[0].name, "nperf");
    }

    /// `--config boxapi.toml`, a bare name: what it names is beside it, in "." (the authority
    /// refused `account = "acme-account.json"` so, its directory being the empty path).
    #[test]
    fn a_bare_config_name_names_files_in_the_current_directory() {
        let mut p = Vec::new();
        let (c, _) = parse(GOOD, Path::new("boxapi.toml"), &[], &mut p).unwrap();
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.dir(), Path::new("."));
        assert_eq!(c.server.cert, Path::new("./cert.pem"));
        assert_eq!(c.server.cert.parent(), Some(Path::new(".")));
        assert!(c.server.cert.parent().is_some_and(Path::is_dir));
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
        parse(&bad, Path::new("/etc/boxapi/boxapi.toml"), &[], &mut p);
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
        let (c, _) = parse(&text, Path::new("/etc/boxapi/boxapi.toml"), &[], &mut p).unwrap();
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
            assert!(valid_ifname(ok), "{ok}");
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
            assert!(!valid_ifname(bad), "{bad:?}");
            let text = GOOD.replace(
                "[server]",
                &format!("[server]\nlisten_interfaces = [\"{bad}\"]"),
            );
            let joined = problems_of(&text).join("\n");
            assert!(
                joined.starts_with(&format!(
                    "server.listen_interfaces: {bad:?} is not an interface name ("
                )),
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
                let loaded = load(&p, &[], &mut problems).is_some();
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
        assert!(parse(
            "[server\n",
            Path::new("/etc/boxapi/boxapi.toml"),
            &[],
            &mut p
        )
        .is_none());
        assert_eq!(p.len(), 1);
        assert!(matches!(p[0], Problem::Syntax { .. }));
        assert!(p[0]
            .to_string()
            .starts_with("/etc/boxapi/boxapi.toml: not valid TOML"));
    }
}
