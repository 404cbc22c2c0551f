//! The box's own configuration: the shared sections (`boxapi_core::config`) and the box's
//! `[metrics]` (with `[metrics.static]`) and `[enrol]`; the authority's sections are unknown here.
use crate::privs::{self, PrivError};
use boxapi_core::config::{
    self as core, valid_hostname, valid_ifname, Common, Problem, Section, Table, Value, IFNAME_RULE,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The top-level sections the box parses itself.
const OWN: [&str; 2] = ["metrics", "enrol"];

#[derive(Clone, Debug)]
pub struct Config {
    pub common: Common,
    pub metrics: Metrics,
    /// The box's own name and certificate from the operator's authority (`[enrol]`), if enabled.
    pub enrol: Option<Enrol>,
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
    /// How often the box fetches the fleet document (with `[registry]`), jittered ±20 %.
    pub fleet_poll: Duration,
}

/// Reads and parses the box's configuration at `path`; `None` (with the problem) when it cannot
/// be read or is not TOML, else a best-effort configuration and one problem per mistake.
pub fn load(path: &Path, problems: &mut Vec<Problem>) -> Option<Config> {
    let (common, own) = core::load(path, &OWN, problems)?;
    Some(build(common, &own, problems))
}

/// [`load`] of a text, for tests and tools.
pub fn parse(text: &str, path: &Path, problems: &mut Vec<Problem>) -> Option<Config> {
    let (common, own) = core::parse(text, path, &OWN, problems)?;
    Some(build(common, &own, problems))
}

fn build(common: Common, own: &Table, problems: &mut Vec<Problem>) -> Config {
    let dir = common.dir().to_path_buf();
    check_accounts(&common, problems);
    let mut top = Section::new("", own, problems);
    let metrics_t = top.table("metrics").cloned().unwrap_or_default();
    let enrol_t = top.table("enrol").cloned();
    top.finish();
    let metrics = parse_metrics(&metrics_t, &dir, problems);
    let enrol = enrol_t.and_then(|t| parse_enrol(&t, &dir, problems));
    common.require_listener(false, problems);
    Config {
        common,
        metrics,
        enrol,
    }
}

/// `server.user` and `server.group` must name accounts of this system: the box becomes them
/// once its sockets are bound (`privs`).
fn check_accounts(common: &Common, problems: &mut Vec<Problem>) {
    let server = &common.server;
    let (user, group) = (&server.user, &server.group);
    if let Some(u) = &user {
        if let Err(e) = privs::resolve(u, group.as_deref()) {
            problems.push(match e {
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
    let fleet_poll = Duration::from_secs(s.int("fleet_poll_secs", 300, 1, 86_400) as u64);
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
        fleet_poll,
    })
}

/// `[enrol] authority`: `https://host[:port]` and nothing else (no path, query, user info), the
/// host a DNS name, an IPv4 address or a bracketed IPv6 address; the box connects to exactly that.
pub(crate) fn check_authority_url(url: &str) -> Result<(), &'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(check_authority_url(bad).is_err(), "{bad}");
        }
    }

    const GOOD: &str = r#"
        [server]
        listen = ["127.0.0.1:8443"]
        cert = "cert.pem"
        key = "key.pem"
        [auth]
        audience = "https://box"
        issuers = ["https://iss"]
    "#;

    fn problems_of(text: &str) -> Vec<String> {
        let mut p = Vec::new();
        parse(text, Path::new("/etc/boxapi/boxapi.toml"), &mut p);
        core::lines(&p)
    }

    #[test]
    fn box_sections_parse_with_defaults() {
        let text = format!(
            "{GOOD}[metrics]\nwan_interface = \"eth0\"\n[metrics.static]\nbox = {{ model = \"B\" }}\n\
             [enrol]\nauthority = \"https://auth.example\"\nauthority_ca = \"ca.pem\"\n\
             device_cert = \"d.pem\"\ndevice_key = \"d.key\"\nzone = \"box.isp.example\"\n"
        );
        let mut p = Vec::new();
        let c = parse(&text, Path::new("/etc/boxapi/boxapi.toml"), &mut p).unwrap();
        assert!(p.is_empty(), "{:?}", core::lines(&p));
        assert_eq!(c.metrics.wan_interface.as_deref(), Some("eth0"));
        assert_eq!(c.metrics.stream_max, Duration::from_secs(120));
        assert_eq!(c.metrics.static_layer["box"]["model"], "B");
        let e = c.enrol.unwrap();
        assert_eq!(e.authority_ca, Path::new("/etc/boxapi/ca.pem"));
        assert!((e.renew_fraction - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(e.fleet_poll, Duration::from_secs(300));
        assert_eq!(c.common.server.listen.len(), 1);
        // Out of range: every problem at once, each naming its key.
        let bad = text.replace(
            "zone = ",
            "fleet_poll_secs = 0\nretry_min_secs = 0\nzone = ",
        );
        assert_eq!(
            problems_of(&bad),
            [
                "enrol.retry_min_secs: 0 is out of range (1 to 86400)",
                "enrol.fleet_poll_secs: 0 is out of range (1 to 86400)"
            ]
        );
    }

    /// The point of config by owner: the authority's sections in a box's file are mistakes
    /// (a misplaced section must not pass `check-config` silently), each named once.
    #[test]
    fn authority_sections_are_unknown_here() {
        let text = format!(
            "{GOOD}[authority]\nlisten = [\"127.0.0.1:9443\"]\n[enrolment]\nzone = \"z.example\"\n\
             [acme]\ndirectory = \"https://a\"\n[dns]\nserver = \"192.0.2.1:53\"\n"
        );
        assert_eq!(
            problems_of(&text),
            [
                "acme: unknown key",
                "authority: unknown key",
                "dns: unknown key",
                "enrolment: unknown key"
            ]
        );
        assert_eq!(
            problems_of(&GOOD.replacen("[server]", "metrics = 1\n[server]", 1)),
            ["metrics: expected a table, found integer"]
        );
    }

    #[test]
    fn nothing_to_listen_on_is_a_problem_of_the_box() {
        let text = GOOD.replace("listen = [\"127.0.0.1:8443\"]", "");
        assert_eq!(
            problems_of(&text),
            ["server: set listen_interfaces or listen (nothing to listen on)"]
        );
        // A listen address with its own problem is not reported twice.
        let text = GOOD.replace("127.0.0.1:8443", "0.0.0.0:443");
        assert_eq!(problems_of(&text).len(), 1, "{:?}", problems_of(&text));
    }

    #[test]
    fn the_user_to_become_must_exist() {
        let text = GOOD.replace("[auth]", "user = \"no-such-user-boxapi\"\n[auth]");
        assert_eq!(
            problems_of(&text),
            ["server.user \"no-such-user-boxapi\": no such user"]
        );
        let text = GOOD.replace(
            "[auth]",
            "user = \"root\"\ngroup = \"no-such-group-boxapi\"\n[auth]",
        );
        assert_eq!(
            problems_of(&text),
            ["server.group \"no-such-group-boxapi\": no such group"]
        );
        assert_eq!(
            problems_of(&GOOD.replace("[auth]", "user = \"root\"\n[auth]")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn wan_interface_names_follow_the_kernels_rule() {
        for ok in ["eth0", "br-lan", "wan.100", "a", "veth_0123456789"] {
            let text = format!("{GOOD}[metrics]\nwan_interface = \"{ok}\"\n");
            assert_eq!(problems_of(&text), Vec::<String>::new(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "eth0/x",
            "eth 0",
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
        }
    }
}
