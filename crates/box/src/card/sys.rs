//! What boxapi reads from Linux itself: interface counters and speeds, the neighbour table, the
//! bridge forwarding database, and which interfaces are wireless.
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::{self, File};
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which radios exist changes when the operator reconfigures Wi-Fi, not between two requests.
const LAYER_TTL: Duration = Duration::from_secs(10);
/// A terminal's port changes when it is re-plugged or roams; a page polls every few hundred ms.
const CLIENT_TTL: Duration = Duration::from_secs(5);
/// Bounds the per-address cache (a LAN has a few dozen terminals).
const MAX_CLIENTS: usize = 256;

/// Linux's /proc and /sys, under a root that tests can replace with a fake tree. Walking sysfs
/// paths is what a request costs most (kernfs lookups), so the slow-changing answers are cached
/// briefly and counter files stay open and are re-read with one pread each.
#[derive(Debug)]
pub struct Sys {
    root: PathBuf,
    /// Ask the kernel (rtnetlink) for IPv6 neighbours; off for fake trees in tests.
    live: bool,
    layer: Mutex<Option<(Instant, Arc<Value>)>>,
    clients: Mutex<HashMap<IpAddr, (Instant, Client)>>,
    counter_files: Mutex<HashMap<String, (File, File)>>,
}

impl Default for Sys {
    fn default() -> Self {
        Sys::new(PathBuf::from("/"), true)
    }
}

fn read_counter(f: &File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).ok()?;
    parse_counter(&buf[..n])
}

/// A sysfs counter: decimal digits and a newline. Read from the bytes (twice per card: no UTF-8
/// check and no `str::parse` machinery); `None` on anything else or on overflow.
fn parse_counter(text: &[u8]) -> Option<u64> {
    let digits = text.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// How the terminal that sent a request reaches the box.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    /// `ethernet`, `wifi` or `unknown`.
    pub connection: &'static str,
    /// The box-side interface (the bridge port when the LAN is bridged).
    pub interface: Option<String>,
    pub link_kbps: Option<u64>,
    /// The interface whose counters are the terminal's own (it is alone on it).
    pub counters_interface: Option<String>,
    /// Its link-layer address, from the neighbour table (what identifies an IPv6 terminal).
    pub mac: Option<[u8; 6]>,
}

impl Client {
    /// Nothing known (loopback, or a lookup that failed).
    pub fn unknown() -> Client {
        Client {
            connection: "unknown",
            ..Client::default()
        }
    }
}

/// (rx_bytes, tx_bytes) as the box's interface sees them.
pub type Counters = (u64, u64);

fn read_trimmed(path: PathBuf) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl Sys {
    fn new(root: PathBuf, live: bool) -> Self {
        Sys {
            root,
            live,
            layer: Mutex::default(),
            clients: Mutex::default(),
            counter_files: Mutex::default(),
        }
    }

    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Sys::new(root.into(), false)
    }

    fn net(&self, iface: &str, leaf: &str) -> PathBuf {
        self.root.join("sys/class/net").join(iface).join(leaf)
    }

    fn exists(&self, iface: &str, leaf: &str) -> bool {
        self.net(iface, leaf).exists()
    }

    /// Byte counters of an interface, read fresh: one pread per counter on files kept open
    /// (reopened if the interface went away and came back, e.g. a PPP link).
    pub fn counters(&self, iface: &str) -> Option<Counters> {
        let mut files = self.counter_files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((rx, tx)) = files.get(iface) {
            if let (Some(r), Some(t)) = (read_counter(rx), read_counter(tx)) {
                return Some((r, t));
            }
            files.remove(iface);
        }
        let rx = File::open(self.net(iface, "statistics/rx_bytes")).ok()?;
        let tx = File::open(self.net(iface, "statistics/tx_bytes")).ok()?;
        let value = (read_counter(&rx)?, read_counter(&tx)?);
        if files.len() < MAX_CLIENTS {
            files.insert(iface.to_owned(), (rx, tx));
        }
        Some(value)
    }

    /// Link speed in kbit/s, when the driver knows it (sysfs gives Mbit/s, -1 when unknown).
    pub fn link_kbps(&self, iface: &str) -> Option<u64> {
        let mbps: i64 = read_trimmed(self.net(iface, "speed"))?.parse().ok()?;
        (mbps > 0).then(|| mbps as u64 * 1000)
    }

    pub fn is_wireless(&self, iface: &str) -> bool {
        self.exists(iface, "wireless") || self.exists(iface, "phy80211")
    }

    /// IPv4 neighbours from /proc/net/arp: (ip, mac, device) of complete entries.
    fn arp(&self) -> Vec<(IpAddr, [u8; 6], String)> {
        let Ok(text) = fs::read_to_string(self.root.join("proc/net/arp")) else {
            return Vec::new();
        };
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (ip, flags, mac, dev) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?);
                // ATF_COM (0x2): the entry is resolved.
                let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
                (flags & 0x2 != 0).then_some(())?;
                Some((ip.parse().ok()?, parse_mac(mac)?, (*dev).to_owned()))
            })
            .collect()
    }

    /// The neighbour table of the peer's address family: (ip, mac, device).
    fn neighbours(&self, peer: IpAddr) -> Vec<(IpAddr, [u8; 6], String)> {
        if peer.is_ipv4() {
            return self.arp();
        }
        if !self.live {
            return Vec::new();
        }
        let names: Vec<(u32, String)> = fs::read_dir(self.root.join("sys/class/net"))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        Some((read_trimmed(e.path().join("ifindex"))?.parse().ok()?, name))
                    })
                    .collect()
            })
            .unwrap_or_default();
        super::neigh::ipv6()
            .into_iter()
            .filter_map(|(ip, mac, index)| {
                let name = names.iter().find(|(i, _)| *i == index)?.1.clone();
                Some((IpAddr::V6(ip), mac, name))
            })
            .collect()
    }

    /// Non-local entries of a bridge's forwarding database: (mac, port number).
    fn fdb(&self, bridge: &str) -> Vec<([u8; 6], u16)> {
        let Ok(raw) = fs::read(self.net(bridge, "brforward")) else {
            return Vec::new();
        };
        raw.chunks_exact(16)
            .filter(|e| e[7] == 0)
            .map(|e| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&e[..6]);
                (mac, u16::from(e[6]) | (u16::from(e[12]) << 8))
            })
            .collect()
    }

    /// The bridge port interface with this port number.
    fn port_name(&self, bridge: &str, port_no: u16) -> Option<String> {
        let dir = fs::read_dir(self.net(bridge, "brif")).ok()?;
        dir.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let text = read_trimmed(e.path().join("port_no"))?;
            let n = u16::from_str_radix(text.trim_start_matches("0x"), 16).ok()?;
            (n == port_no).then_some(name)
        })
    }

    /// The terminal with address `peer` if it was looked up recently; never blocks.
    pub fn client_cached(&self, peer: IpAddr) -> Option<Client> {
        let cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&peer)
            .filter(|(at, _)| at.elapsed() < CLIENT_TTL)
            .map(|(_, c)| c.clone())
    }

    /// Finds the terminal with address `peer`. `lan_device` is the LAN interface whose prefix
    /// holds the peer, used when the neighbour table has no entry (e.g. IPv6). Reads /proc, sysfs
    /// and rtnetlink: call it off the runtime (a blocking thread), once per connection.
    pub fn client(&self, peer: IpAddr, lan_device: Option<&str>) -> Client {
        if let Some(c) = self.client_cached(peer) {
            return c;
        }
        // Looked up without the lock: other connections' cached answers are not held up.
        let found = self.find_client(peer, lan_device);
        let now = Instant::now();
        let mut cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CLIENTS {
            cache.retain(|_, (at, _)| now.duration_since(*at) < CLIENT_TTL);
            if cache.len() >= MAX_CLIENTS {
                cache.clear();
            }
        }
        cache.insert(peer, (now, found.clone()));
        found
    }

    fn find_client(&self, peer: IpAddr, lan_device: Option<&str>) -> Client {
        if peer.is_loopback() {
            return Client {
                connection: "unknown",
                ..Client::default()
            };
        }
        let table = self.neighbours(peer);
        let entry = table.iter().find(|(ip, _, _)| *ip == peer);
        let Some(device) = entry.map(|(_, _, d)| d.as_str()).or(lan_device) else {
            return Client {
                connection: "unknown",
                ..Client::default()
            };
        };
        let mac = entry.map(|(_, m, _)| *m);
        let (port, alone) = if self.exists(device, "bridge") {
            let fdb = self.fdb(device);
            let found = mac
                .and_then(|m| fdb.iter().find(|(fm, _)| *fm == m))
                .map(|(_, p)| *p);
            match found.and_then(|p| Some((p, self.port_name(device, p)?))) {
                Some((p, name)) => (name, fdb.iter().filter(|(_, fp)| *fp == p).count() == 1),
                // Bridged but the port is unknown: the bridge itself, the medium unknown.
                None => {
                    return Client {
                        connection: "unknown",
                        interface: Some(device.to_owned()),
                        mac,
                        ..Client::default()
                    }
                }
            }
        } else {
            let mut macs: Vec<[u8; 6]> = table
                .iter()
                .filter(|(_, _, d)| d == device)
                .map(|(_, m, _)| *m)
                .collect();
            macs.sort_unstable();
            macs.dedup();
            (device.to_owned(), mac.is_some() && macs.len() == 1)
        };
        Client {
            mac,
            connection: if self.is_wireless(&port) {
                "wifi"
            } else {
                "ethernet"
            },
            link_kbps: self.link_kbps(&port),
            counters_interface: alone.then(|| port.clone()),
            interface: Some(port),
        }
    }

    /// The system's own partial card: Wi-Fi radios found in sysfs (one per phy), if any.
    pub fn layer(&self) -> Arc<Value> {
        let mut cache = self.layer.lock().unwrap_or_else(|p| p.into_inner());
        match cache.as_ref() {
            Some((at, v)) if at.elapsed() < LAYER_TTL => v.clone(),
            _ => {
                let v = Arc::new(self.read_layer());
                *cache = Some((Instant::now(), v.clone()));
                v
            }
        }
    }

    fn read_layer(&self) -> Value {
        let Ok(dir) = fs::read_dir(self.root.join("sys/class/net")) else {
            return Value::Null;
        };
        let mut phys: Vec<(String, bool)> = Vec::new();
        for e in dir.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if !self.is_wireless(&name) {
                continue;
            }
            let phy = fs::read_link(self.net(&name, "phy80211"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or(name.clone());
            let up = read_trimmed(self.net(&name, "operstate")).as_deref() == Some("up");
            match phys.iter_mut().find(|(p, _)| *p == phy) {
                Some((_, u)) => *u |= up,
                None => phys.push((phy, up)),
            }
        }
        if phys.is_empty() {
            return Value::Null;
        }
        phys.sort();
        let radios: Vec<Value> = phys
            .iter()
            .map(|(_, up)| json!({ "enabled": up }))
            .collect();
        json!({ "wifi": { "enabled": phys.iter().any(|(_, up)| *up), "radios": radios } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_as_decimal_digits_only() {
        assert_eq!(parse_counter(b"0\n"), Some(0));
        assert_eq!(parse_counter(b"18446744073709551615\n"), Some(u64::MAX));
        assert_eq!(parse_counter(b"18446744073709551616\n"), None);
        for bad in [&b""[..], b"\n", b"-1\n", b"+1", b"1 2", b"12a", b"\xff"] {
            assert_eq!(parse_counter(bad), None, "{bad:?}");
        }
    }

    struct Tree(PathBuf);
    impl Tree {
        fn new(name: &str) -> Tree {
            let p = std::env::temp_dir().join(format!("boxapi-sys-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            Tree(p)
        }
        fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
            self
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const ARP_HEAD: &str =
        "IP address       HW type     Flags       HW address            Mask     Device\n";

    fn fdb_entry(mac: [u8; 6], port: u16, local: bool) -> Vec<u8> {
        let mut e = mac.to_vec();
        e.extend([
            port as u8,
            local as u8,
            0,
            0,
            0,
            0,
            (port >> 8) as u8,
            0,
            0,
            0,
        ]);
        e
    }

    #[test]
    fn bridged_wifi_terminal_alone_on_its_port() {
        let t = Tree::new("bridge");
        let mac = [0xaa, 0xbb, 0xcc, 0, 0, 1];
        let mut fdb = fdb_entry(mac, 3, false);
        fdb.extend(fdb_entry([2, 0, 0, 0, 0, 9], 1, false));
        fdb.extend(fdb_entry([2, 0, 0, 0, 0, 8], 3, true)); // the port's own address
        t.file(
            "proc/net/arp",
            format!("{ARP_HEAD}192.168.1.20 0x1 0x2 aa:bb:cc:00:00:01 * br-lan\n"),
        )
        .file("sys/class/net/br-lan/bridge/bridge_id", "x")
        .file("sys/class/net/br-lan/brforward", fdb)
        .file("sys/class/net/br-lan/brif/lan1/port_no", "0x1\n")
        .file("sys/class/net/br-lan/brif/wlan0/port_no", "0x3\n")
        .file("sys/class/net/wlan0/wireless/x", "")
        .file("sys/class/net/wlan0/speed", "-1\n");
        let c = Sys::with_root(&t.0).client("192.168.1.20".parse().unwrap(), None);
        assert_eq!(c.connection, "wifi");
        assert_eq!(c.interface.as_deref(), Some("wlan0"));
        assert_eq!(c.link_kbps, None);
        assert_eq!(c.counters_interface.as_deref(), Some("wlan0"));
    }

    #[test]
    fn direct_ethernet_and_shared_port() {
        let t = Tree::new("direct");
        t.file(
            "proc/net/arp",
            format!(
                "{ARP_HEAD}10.0.0.2 0x1 0x2 02:00:00:00:00:02 * lan0\n10.0.0.3 0x1 0x2 02:00:00:00:00:03 * lan0\n10.0.0.4 0x1 0x0 00:00:00:00:00:00 * lan0\n"
            ),
        )
        .file("sys/class/net/lan0/speed", "1000\n")
        .file("sys/class/net/lan0/statistics/rx_bytes", "10\n")
        .file("sys/class/net/lan0/statistics/tx_bytes", "20\n");
        let s = Sys::with_root(&t.0);
        let c = s.client("10.0.0.2".parse().unwrap(), None);
        assert_eq!(
            (c.connection, c.interface.as_deref(), c.link_kbps),
            ("ethernet", Some("lan0"), Some(1_000_000))
        );
        assert_eq!(c.counters_interface, None, "two terminals share lan0");
        assert_eq!(s.counters("lan0"), Some((10, 20)));
        assert_eq!(s.counters("nope"), None);
        let unresolved = s.client("10.0.0.4".parse().unwrap(), None);
        assert_eq!(unresolved.connection, "unknown");
        let v6 = s.client("fd00::5".parse().unwrap(), Some("lan0"));
        assert_eq!(v6.interface.as_deref(), Some("lan0"));
        assert_eq!(v6.counters_interface, None);
        assert_eq!(
            s.client("127.0.0.1".parse().unwrap(), None).connection,
            "unknown"
        );
    }

    #[test]
    fn wifi_layer_groups_interfaces_by_phy() {
        let t = Tree::new("wifi");
        t.file("sys/class/net/wlan0/wireless/x", "")
            .file("sys/class/net/wlan0/operstate", "up\n")
            .file("sys/class/net/wlan1/wireless/x", "")
            .file("sys/class/net/wlan1/operstate", "down\n")
            .file("sys/class/net/eth0/operstate", "up\n");
        let v = Sys::with_root(&t.0).layer();
        assert_eq!(v["wifi"]["enabled"], true);
        assert_eq!(v["wifi"]["radios"].as_array().unwrap().len(), 2);
        assert!(Sys::with_root("/nonexistent").layer().is_null());
    }
}
