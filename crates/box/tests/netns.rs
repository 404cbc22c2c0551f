//! Privileged (root) tests: a box in a network namespace with a LAN side and a WAN side, clients on
//! each, routing between them. Proves LAN-only binding, peer filtering, client discovery through the
//! neighbour table and the bridge forwarding database, and following address changes.
mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh_out(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Namespaces named after this test; deleted (with their veths) on drop.
struct Net {
    names: Vec<String>,
}

impl Net {
    fn new(tag: &str, roles: &[&str]) -> Net {
        let id = std::process::id() % 100_000;
        let names: Vec<String> = roles.iter().map(|r| format!("bx{tag}{r}{id}")).collect();
        for n in &names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            sh(&format!("ip netns add {n} && ip -n {n} link set lo up"));
        }
        Net { names }
    }
    fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

struct BoxDaemon {
    child: Child,
    dir: PathBuf,
}

impl BoxDaemon {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for BoxDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Certificates for the box's LAN names, and a config listening on `lan_if`.
fn start_box(ns: &str, name: &str, lan_if: &str, sans: &[&str]) -> BoxDaemon {
    start_box_with(ns, name, lan_if, sans, "")
}

/// `start_box` with lines added to `[metrics]` (they may name files in the box's directory,
/// which is passed as `{dir}`).
fn start_box_with(ns: &str, name: &str, lan_if: &str, sans: &[&str], metrics: &str) -> BoxDaemon {
    start_box_configured(ns, name, lan_if, sans, "", metrics)
}

/// `start_box_with`, with lines added to `[server]` too.
fn start_box_configured(
    ns: &str,
    name: &str,
    lan_if: &str,
    sans: &[&str],
    server: &str,
    metrics: &str,
) -> BoxDaemon {
    let dir = temp_dir(name);
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let certs = dir.join("certs");
    let out = Command::new(root.join("certs/make-dev-certs.sh"))
        .arg(&certs)
        .args(sans)
        .output()
        .unwrap();
    assert!(out.status.success());
    let f = fixtures();
    let text = format!(
        r#"[server]
listen_interfaces = ["{lan_if}"]
port = 8443
server_names = ["box.test"]
cert = "certs/server.pem"
key = "certs/server.key"
state_dir = "state"
control_socket = "control.sock"
interface_poll_ms = 200
{server}
[auth]
audience = "{AUD}"
issuers = ["{ISS}"]
[[tool]]
id = "a"
origins = ["https://a.example"]
scopes = ["access", "counters"]
keys = ["{d}/a.jwk"]
[metrics]
wan_interface = "wan0"
{metrics}
"#,
        d = f.dir.display(),
        metrics = metrics.replace("{dir}", &dir.display().to_string())
    );
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, bin(), "serve", "--config"])
        .arg(dir.join("boxapi.toml"))
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let sock = dir.join("control.sock");
    assert!(
        wait_for(Duration::from_secs(10), || sock.exists()),
        "box daemon did not start"
    );
    BoxDaemon { child, dir }
}

/// curl from a client namespace; returns (exit ok, http code, body).
fn curl(ns: &str, dir: &Path, ip: &str, path: &str, token: &str) -> (bool, String, String) {
    curl_with(ns, dir, ip, path, token, "")
}

/// `curl` with more of its options (e.g. `--interface SOURCE`).
fn curl_with(
    ns: &str,
    dir: &Path,
    ip: &str,
    path: &str,
    token: &str,
    options: &str,
) -> (bool, String, String) {
    let target = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let cmd = format!(
        "ip netns exec {ns} curl -sS --max-time 4 {options} --cacert {ca} --resolve box.test:8443:{target} \
         -H 'Authorization: Bearer {token}' -w '\\n%{{http_code}}' https://box.test:8443{path}",
        ca = dir.join("certs/ca.pem").display()
    );
    let (ok, out) = sh_out(&cmd);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (ok, code.to_owned(), body.to_owned())
}

fn listening_sockets(ns: &str) -> Vec<String> {
    let (_, out) = sh_out(&format!("ip netns exec {ns} ss -ltnH"));
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn lan_client_gets_the_card_and_wan_client_gets_nothing() {
    require_root("for network namespaces");
    let net = Net::new("r", &["box", "lan", "wan"]);
    let (bx, lan, wan) = (net.ns(0), net.ns(1), net.ns(2));
    sh(&format!(
        "ip link add lan0 netns {bx} type veth peer name eth0 netns {lan}"
    ));
    sh(&format!(
        "ip link add wan0 netns {bx} type veth peer name eth0 netns {wan}"
    ));
    sh(&format!(
        "ip -n {bx} addr add 192.168.50.1/24 dev lan0 && ip -n {bx} addr add fd50::1/64 dev lan0 nodad && \
         ip -n {bx} addr add 10.99.0.1/24 dev wan0 && ip -n {bx} link set lan0 up && ip -n {bx} link set wan0 up && \
         ip netns exec {bx} sysctl -qw net.ipv4.ip_forward=1"
    ));
    sh(&format!(
        "ip -n {lan} addr add 192.168.50.2/24 dev eth0 && ip -n {lan} addr add fd50::2/64 dev eth0 nodad && \
         ip -n {lan} link set eth0 up && ip -n {lan} route add default via 192.168.50.1"
    ));
    sh(&format!(
        "ip -n {wan} addr add 10.99.0.2/24 dev eth0 && ip -n {wan} link set eth0 up && \
         ip -n {wan} route add 192.168.50.0/24 via 10.99.0.1"
    ));
    // Routing works: the WAN client reaches the LAN address (ping), so only boxapi's rules refuse it.
    sh(&format!(
        "ip netns exec {wan} ping -c1 -W2 192.168.50.1 >/dev/null"
    ));

    let d = start_box(
        bx,
        "netns",
        "lan0",
        &[
            "DNS:box.test",
            "IP:192.168.50.1",
            "IP:fd50::1",
            "IP:192.168.60.1",
        ],
    );
    let token = fixtures().a.token("a", "access counters");
    let ready = wait_for(Duration::from_secs(5), || {
        curl(lan, &d.dir, "192.168.50.1", "/v1/access", &token).1 == "200"
    });
    assert!(
        ready,
        "{:?}\n{}",
        curl(lan, &d.dir, "192.168.50.1", "/v1/access", &token),
        d.log()
    );
    let (_, code, body) = curl(lan, &d.dir, "192.168.50.1", "/v1/access", &token);
    assert_eq!(code, "200");
    let card: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(card["client"]["connection"], "ethernet", "{card}");
    assert_eq!(card["client"]["interface"], "lan0", "{card}");
    assert_eq!(
        card["client"]["link_kbps"], 10_000_000,
        "veth reports 10000 Mbit/s: {card}"
    );
    assert!(
        card["counters"]["wan"]["rx_bytes"].as_u64().unwrap() > 0,
        "ping crossed wan0: {card}"
    );

    let (_, code, body) = curl(lan, &d.dir, "192.168.50.1", "/v1/counters", &token);
    assert_eq!(code, "200");
    let c: Value = serde_json::from_str(&body).unwrap();
    assert!(
        c["client"]["rx_bytes"].as_u64().unwrap() > 0,
        "alone on lan0, so its counters are known: {c}"
    );

    // IPv6 from the LAN: no ARP entry, found through the LAN prefix.
    let (_, code, body) = curl(lan, &d.dir, "fd50::1", "/v1/access", &token);
    assert_eq!(code, "200", "{body}");
    let card: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(card["client"]["interface"], "lan0");

    // The WAN client, with a route to the LAN address, gets no HTTP answer at all.
    let (ok, code, _) = curl(wan, &d.dir, "192.168.50.1", "/v1/access", &token);
    assert!(!ok && (code == "000" || code.is_empty()), "WAN got {code}");

    // Nothing listens on an unspecified address.
    let socks = listening_sockets(bx);
    assert!(!socks.is_empty());
    for s in &socks {
        assert!(
            !s.starts_with("0.0.0.0:") && !s.starts_with("*:") && !s.starts_with("[::]:"),
            "{socks:?}"
        );
    }

    // A new LAN address (DHCP renumbering) is served without a restart; a removed one is closed.
    sh(&format!("ip -n {bx} addr add 192.168.60.1/24 dev lan0 && ip -n {lan} addr add 192.168.60.2/24 dev eth0"));
    assert!(
        wait_for(Duration::from_secs(5), || curl(
            lan,
            &d.dir,
            "192.168.60.1",
            "/v1/access",
            &token
        )
        .1 == "200"),
        "new address not served: {:?}",
        listening_sockets(bx)
    );
    sh(&format!("ip -n {bx} addr del 192.168.50.1/24 dev lan0"));
    assert!(wait_for(Duration::from_secs(5), || !listening_sockets(bx)
        .iter()
        .any(|s| s.starts_with("192.168.50.1:"))));
}

/// A bridge `br-lan` in the box's namespace with one port per client namespace (`lan1`, `lan2`,
/// ..., each a veth whose other end is the client's `eth0`), all up.
fn bridge(bx: &str, clients: &[&str]) {
    sh(&format!(
        "ip -n {bx} link add br-lan type bridge && ip -n {bx} link set br-lan up"
    ));
    for (i, c) in clients.iter().enumerate() {
        let port = format!("lan{}", i + 1);
        sh(&format!(
            "ip link add {port} netns {bx} type veth peer name eth0 netns {c} && \
             ip -n {bx} link set {port} master br-lan && ip -n {bx} link set {port} up && \
             ip -n {c} link set eth0 up"
        ));
    }
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn bridged_lan_reports_the_bridge_port() {
    require_root("for network namespaces");
    let net = Net::new("b", &["box", "c1", "c2"]);
    let (bx, c1, c2) = (net.ns(0), net.ns(1), net.ns(2));
    bridge(bx, &[c1, c2]);
    for (i, c) in [(1, c1), (2, c2)] {
        sh(&format!(
            "ip -n {c} addr add 192.168.70.{n}/24 dev eth0 && ip -n {c} addr add fd70::{n}/64 dev eth0 nodad",
            n = 10 + i
        ));
    }
    sh(&format!(
        "ip -n {bx} addr add 192.168.70.1/24 dev br-lan && ip -n {bx} addr add fd70::1/64 dev br-lan nodad && \
         ip -n {bx} link add wan0 type veth peer name wanp"
    ));
    let d = start_box(bx, "bridge", "br-lan", &["DNS:box.test", "IP:192.168.70.1"]);
    let token = fixtures().a.token("a", "access counters");
    for (i, c) in [(1, c1), (2, c2)] {
        assert!(wait_for(Duration::from_secs(5), || curl(
            c,
            &d.dir,
            "192.168.70.1",
            "/v1/access",
            &token
        )
        .1 == "200"));
        let (_, _, body) = curl(c, &d.dir, "192.168.70.1", "/v1/access", &token);
        let card: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(card["client"]["interface"], format!("lan{i}"), "{card}");
        assert_eq!(card["client"]["connection"], "ethernet");
        let (_, _, body) = curl(c, &d.dir, "192.168.70.1", "/v1/counters", &token);
        let counters: Value = serde_json::from_str(&body).unwrap();
        assert!(
            counters["client"]["tx_bytes"].as_u64().unwrap() > 0,
            "{counters}"
        );
    }
}

/// Holds one TLS connection from each of `sources` (connected 200 ms apart, handshake done, then
/// idle), waits `settle` seconds and prints how many the box still keeps open. Run in a client
/// namespace.
const HOLD: &str = r#"
import socket, ssl, sys, time
ca, server, settle, sources = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
ctx = ssl.create_default_context(cafile=ca)
held = []
for src in sources:
    try:
        raw = socket.create_connection((server, 8443), timeout=5, source_address=(src, 0))
        held.append(ctx.wrap_socket(raw, server_hostname="box.test"))
    except (OSError, ssl.SSLError):
        pass  # closed before its handshake ended: not held
    time.sleep(0.2)
time.sleep(settle)
still = 0
for t in held:
    t.setblocking(False)
    try:
        still += t.recv(1) != b""
    except ssl.SSLWantReadError:
        still += 1
    except (OSError, ssl.SSLError):
        pass
print(still, flush=True)
"#;

/// Contract §4 rev. 3 (issue 21): eight IPv4 addresses behind one MAC are one terminal. A host
/// with 8 aliases on one veth holds a connection from each; with a share of 2 per terminal the
/// box keeps at most 2 of them (it would keep all 8, one per address, if it counted addresses),
/// and serves the aliased host and another host meanwhile.
#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn eight_aliases_behind_one_mac_are_one_terminal() {
    require_root("for network namespaces");
    let net = Net::new("m", &["box", "c1", "c2"]);
    let (bx, c1, c2) = (net.ns(0), net.ns(1), net.ns(2));
    bridge(bx, &[c1, c2]);
    let aliases: Vec<String> = (11..19).map(|n| format!("192.168.80.{n}")).collect();
    for a in &aliases {
        sh(&format!("ip -n {c1} addr add {a}/24 dev eth0"));
    }
    sh(&format!(
        "ip -n {c2} addr add 192.168.80.21/24 dev eth0 && \
         ip -n {bx} addr add 192.168.80.1/24 dev br-lan && \
         ip -n {bx} link add wan0 type veth peer name wanp"
    ));
    let d = start_box_configured(
        bx,
        "aliases",
        "br-lan",
        &["DNS:box.test", "IP:192.168.80.1"],
        "max_connections = 16\nmax_connections_per_terminal = 2",
        "",
    );
    let token = fixtures().a.token("a", "access");
    assert!(
        wait_for(Duration::from_secs(5), || curl(
            c2,
            &d.dir,
            "192.168.80.1",
            "/v1/access",
            &token
        )
        .1 == "200"),
        "{}",
        d.log()
    );
    let script = d.dir.join("hold.py");
    std::fs::write(&script, HOLD).unwrap();
    let hold = Command::new("ip")
        .args(["netns", "exec", c1, "python3"])
        .arg(&script)
        .arg(d.dir.join("certs/ca.pem"))
        .args(["192.168.80.1", "2.5"])
        .args(&aliases)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (with its ssl module) runs the held connections");
    // While the aliases hold theirs: the other host, and the aliased host itself, are served.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, code, body) = curl(c2, &d.dir, "192.168.80.1", "/v1/access", &token);
    assert_eq!(code, "200", "the other host: {body}");
    let out = hold.wait_with_output().unwrap();
    assert!(out.status.success(), "hold.py failed");
    let still: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("hold.py prints a count");
    assert!(
        (1..=2).contains(&still),
        "{still} of the 8 aliases' connections held open: the box counted addresses, not the MAC\n{}",
        d.log()
    );
    let (_, code, body) = curl_with(
        c1,
        &d.dir,
        "192.168.80.1",
        "/v1/access",
        &token,
        "--interface 192.168.80.15",
    );
    assert_eq!(code, "200", "an alias: {body}");
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn after_the_root_drop_enable_and_new_addresses_still_bind_port_443() {
    require_root("for network namespaces");
    let net = Net::new("p", &["box", "lan"]);
    let (bx, lan) = (net.ns(0), net.ns(1));
    sh(&format!(
        "ip link add lan0 netns {bx} type veth peer name eth0 netns {lan} && \
         ip -n {bx} addr add 192.168.80.1/24 dev lan0 && ip -n {bx} link set lan0 up && \
         ip -n {lan} addr add 192.168.80.2/24 dev eth0 && ip -n {lan} addr add 192.168.81.2/24 dev eth0 && \
         ip -n {lan} link set eth0 up"
    ));
    let dir = temp_dir("privs443");
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let certs = dir.join("certs");
    assert!(Command::new(root.join("certs/make-dev-certs.sh"))
        .arg(&certs)
        .args(["DNS:box.test", "IP:192.168.80.1", "IP:192.168.81.1"])
        .output()
        .unwrap()
        .status
        .success());
    // The unprivileged user must be able to read its files.
    sh(&format!(
        "chmod -R a+rX {} {}",
        dir.display(),
        fixtures().dir.display()
    ));
    let text = format!(
        r#"[server]
listen_interfaces = ["lan0"]
port = 443
server_names = ["box.test"]
cert = "certs/server.pem"
key = "certs/server.key"
state_dir = "state"
control_socket = "control.sock"
interface_poll_ms = 200
user = "nobody"
group = "nogroup"
[auth]
audience = "{AUD}"
issuers = ["{ISS}"]
[[tool]]
id = "a"
origins = ["https://a.example"]
scopes = ["access", "counters"]
keys = ["{d}/a.jwk"]
"#,
        d = fixtures().dir.display()
    );
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", bx, bin(), "serve", "--config"])
        .arg(dir.join("boxapi.toml"))
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let d = BoxDaemon { child, dir };
    let sock = d.dir.join("control.sock");
    let ctl = |cmd: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", bx, bin(), "ctl", "--socket"])
            .arg(&sock)
            .arg(cmd)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // ss writes a device-bound socket as ADDR%DEVICE:PORT.
    let on_443 = |ip: &str| {
        listening_sockets(bx).iter().any(|s| {
            s.starts_with(&format!("{ip}%")) && s.ends_with(":443") || *s == format!("{ip}:443")
        })
    };
    assert!(
        wait_for(Duration::from_secs(10), || d
            .log()
            .contains("privileges_dropped")
            && on_443("192.168.80.1")),
        "{}",
        d.log()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && !l.contains("\t0\t")),
        "{status}"
    );
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    // CAP_NET_BIND_SERVICE (bit 10) only.
    assert_eq!(
        cap_eff.split_whitespace().nth(1),
        Some("0000000000000400"),
        "{cap_eff}"
    );

    assert_eq!(ctl("disable").0, Some(0));
    assert!(wait_for(Duration::from_secs(3), || !on_443("192.168.80.1")));
    let (code, err) = ctl("enable");
    assert_eq!(code, Some(0), "enable as nobody: {err}\n{}", d.log());
    assert!(on_443("192.168.80.1"), "{:?}", listening_sockets(bx));
    // A LAN address that appears after the drop is bound too.
    sh(&format!("ip -n {bx} addr add 192.168.81.1/24 dev lan0"));
    assert!(
        wait_for(Duration::from_secs(5), || on_443("192.168.81.1")),
        "{:?}\n{}",
        listening_sockets(bx),
        d.log()
    );
    let token = fixtures().a.token("a", "access");
    let cmd = format!(
        "ip netns exec {lan} curl -sS --max-time 4 --cacert {ca} --resolve box.test:443:192.168.81.1 \
         -H 'Authorization: Bearer {token}' -o /dev/null -w '%{{http_code}}' https://box.test/v1/access",
        ca = d.dir.join("certs/ca.pem").display()
    );
    assert_eq!(sh_out(&cmd).1, "200", "{}", d.log());
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn counters_stream_sees_wan_traffic() {
    require_root("for network namespaces");
    let net = Net::new("s", &["box", "lan", "wan"]);
    let (bx, lan, wan) = (net.ns(0), net.ns(1), net.ns(2));
    sh(&format!(
        "ip link add lan0 netns {bx} type veth peer name eth0 netns {lan} && \
         ip link add wan0 netns {bx} type veth peer name eth0 netns {wan} && \
         ip -n {bx} addr add 192.168.90.1/24 dev lan0 && ip -n {bx} addr add 10.98.0.1/24 dev wan0 && \
         ip -n {bx} link set lan0 up && ip -n {bx} link set wan0 up && \
         ip netns exec {bx} sysctl -qw net.ipv4.ip_forward=1 && \
         ip -n {lan} addr add 192.168.90.2/24 dev eth0 && ip -n {lan} link set eth0 up && \
         ip -n {lan} route add default via 192.168.90.1 && \
         ip -n {wan} addr add 10.98.0.2/24 dev eth0 && ip -n {wan} link set eth0 up && \
         ip -n {wan} route add 192.168.90.0/24 via 10.98.0.1"
    ));
    let d = start_box(bx, "stream", "lan0", &["DNS:box.test", "IP:192.168.90.1"]);
    let token = fixtures().a.token("a", "counters");
    assert!(
        wait_for(Duration::from_secs(5), || curl(
            lan,
            &d.dir,
            "192.168.90.1",
            "/v1/counters",
            &token
        )
        .1 == "200"),
        "{}",
        d.log()
    );
    // The terminal reads 3 s of lines at 100 ms while it sends traffic through the box's WAN
    // interface (pings of 1200 bytes to the WAN host: out on wan0 and back).
    let cmd = format!(
        "ip netns exec {lan} curl -sS -N --max-time 3 --cacert {ca} --resolve box.test:8443:192.168.90.1 \
         -H 'Authorization: Bearer {token}' 'https://box.test:8443/v1/counters/stream?interval_ms=100'",
        ca = d.dir.join("certs/ca.pem").display()
    );
    let reader = std::thread::spawn(move || sh_out(&cmd).1);
    std::thread::sleep(Duration::from_millis(500));
    sh(&format!(
        "ip netns exec {lan} ping -q -c 20 -i 0.05 -s 1200 -W 2 10.98.0.2 >/dev/null"
    ));
    let out = reader.join().unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        (15..=40).contains(&lines.len()),
        "{} lines:\n{out}\n{}",
        lines.len(),
        d.log()
    );
    let mono: Vec<u64> = lines
        .iter()
        .map(|v| v["monotonic_us"].as_u64().unwrap())
        .collect();
    let gaps: Vec<u64> = mono.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    // Due every 100 ms; one late read makes the next gap shorter (tests/stream.rs).
    assert!(gaps.iter().all(|g| *g >= 50_000), "{gaps:?}");
    let mean = gaps.iter().sum::<u64>() / gaps.len() as u64;
    assert!((95_000..=200_000).contains(&mean), "{gaps:?}");
    let (first, last) = (&lines[0]["wan"], &lines[lines.len() - 1]["wan"]);
    let moved = |k: &str| last[k].as_u64().unwrap() - first[k].as_u64().unwrap();
    assert!(
        moved("tx_bytes") >= 20 * 1200 && moved("rx_bytes") >= 20 * 1200,
        "first {first}, last {last}"
    );
    // The terminal is alone on lan0: its own counters are there too, and grew.
    assert!(
        lines[lines.len() - 1]["client"]["tx_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (make test does)"]
fn station_providers_describe_a_vendor_wifi_terminal() {
    require_root("for network namespaces");
    // A vendor Wi-Fi stack without nl80211: its port looks like Ethernet in sysfs (a veth here),
    // and the operator's station providers say what the driver knows of the terminal.
    let net = Net::new("w", &["box", "lan"]);
    let (bx, lan) = (net.ns(0), net.ns(1));
    sh(&format!(
        "ip link add lan0 netns {bx} type veth peer name eth0 netns {lan} && \
         ip -n {bx} addr add 192.168.91.1/24 dev lan0 && ip -n {bx} link set lan0 up && \
         ip -n {lan} link set eth0 address 02:aa:bb:cc:dd:01 && \
         ip -n {lan} addr add 192.168.91.2/24 dev eth0 && ip -n {lan} link set eth0 up"
    ));
    let dir = temp_dir("stations");
    // The file knows the band and rates; the command (higher precedence) knows better rates and
    // the signal, and has nothing for the standard (null: the file's value stays).
    std::fs::write(
        dir.join("stations.json"),
        r#"{"02:AA:BB:CC:DD:01": {"band": "5GHz", "standard": "ac", "tx_kbps": 100000, "rx_kbps": 200000},
            "02:aa:bb:cc:dd:99": {"band": "2.4GHz"}}"#,
    )
    .unwrap();
    let cmd = dir.join("stations.sh");
    std::fs::write(
        &cmd,
        "#!/bin/sh\necho '{\"02-aa-bb-cc-dd-01\": {\"signal_dbm\": -61, \"tx_kbps\": 390000, \"rx_kbps\": 866000, \"standard\": null, \"bogus\": 1}}'\n",
    )
    .unwrap();
    sh(&format!("chmod +x {}", cmd.display()));
    let metrics = format!(
        "station_provider_file = \"{f}\"\nstation_provider_command = \"{c}\"",
        f = dir.join("stations.json").display(),
        c = cmd.display()
    );
    let d = start_box_with(
        bx,
        "stations",
        "lan0",
        &["DNS:box.test", "IP:192.168.91.1"],
        &metrics,
    );
    let token = fixtures().a.token("a", "access");
    assert!(
        wait_for(Duration::from_secs(5), || curl(
            lan,
            &d.dir,
            "192.168.91.1",
            "/v1/access",
            &token
        )
        .1 == "200"),
        "{}",
        d.log()
    );
    let (_, _, body) = curl(lan, &d.dir, "192.168.91.1", "/v1/access", &token);
    let card: Value = serde_json::from_str(&body).unwrap();
    let c = &card["client"];
    assert_eq!(
        c["connection"], "wifi",
        "a station provider lists it: {card}"
    );
    assert_eq!(c["interface"], "lan0");
    assert_eq!(
        c["wifi"],
        serde_json::json!({"band": "5GHz", "standard": "ac", "signal_dbm": -61, "tx_kbps": 390000,
            "rx_kbps": 866000, "channel": null, "frequency_mhz": null, "channel_width_mhz": null}),
        "{card}"
    );
    assert_eq!(c["link_kbps"], 390_000, "the slower direction: {card}");
    // The unknown member was dropped, and said so.
    assert!(
        wait_for(Duration::from_secs(3), || d.log().contains("bogus")),
        "{}",
        d.log()
    );
}
