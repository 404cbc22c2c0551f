//! LAN-only by construction: which addresses to listen on (the LAN interfaces' own, followed as they
//! change), binding with SO_BINDTODEVICE, and refusing peers outside the LAN prefixes.
use boxapi_core::config::Server;
use boxapi_core::fair::Terminal;
use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::RwLock;
use tokio::net::{TcpListener, TcpSocket};

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IfAddr {
    pub device: String,
    pub ip: IpAddr,
    pub prefix: u8,
    pub scope_id: u32,
}

impl IfAddr {
    pub fn contains(&self, peer: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u32) {
            match a {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((net, width), (p, pw)) = (bits(self.ip), bits(peer));
        if width != pw || u32::from(self.prefix) > width {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        shift >= 128 || (net >> shift) == (p >> shift)
    }
}

/// Every address of every interface, now.
pub fn interface_addrs() -> Vec<IfAddr> {
    let Ok(iter) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ifa in iter {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let entry = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            (IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones(), 0)
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            (
                IpAddr::V6(a.ip()),
                u128::from(m.ip()).count_ones(),
                a.scope_id(),
            )
        } else {
            continue;
        };
        out.push(IfAddr {
            device: ifa.interface_name,
            ip: entry.0,
            prefix: entry.1 as u8,
            scope_id: entry.2,
        });
    }
    out.sort();
    out
}

/// The addresses the box's public name should resolve to: those of its LAN interfaces and its
/// explicit listen addresses that the authority accepts for a name
/// (`boxapi_core::names::publishable`: never loopback or link-local, which a browser could not
/// use), at most `names::MAX_ADDRESSES` of them: one address too many would get every
/// enrolment refused.
pub fn published_addrs(cfg: &Server, addrs: &[IfAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| cfg.listen_interfaces.contains(&a.device))
        .map(|a| a.ip)
        .chain(cfg.listen.iter().map(|l| l.ip()))
        .filter(boxapi_core::names::publishable)
        .collect();
    out.sort();
    out.dedup();
    out.truncate(boxapi_core::names::MAX_ADDRESSES);
    out
}

/// A socket to listen on: the address and, for interface addresses, the device to bind it to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub device: Option<String>,
}

/// The LAN as boxapi sees it now: the prefixes peers must come from.
#[derive(Default)]
pub struct Lan {
    nets: RwLock<Vec<IfAddr>>,
}

impl Lan {
    /// Recomputes the LAN prefixes and the endpoints to listen on from the interfaces' addresses.
    /// LAN prefixes are those of `listen_interfaces` and of interfaces holding an explicit `listen` IP.
    pub fn refresh(&self, cfg: &Server, addrs: &[IfAddr]) -> BTreeSet<Endpoint> {
        let mut nets = Vec::new();
        let mut endpoints = BTreeSet::new();
        for a in addrs {
            let on_lan_if = cfg.listen_interfaces.contains(&a.device);
            let explicit = cfg.listen.iter().any(|l| l.ip() == a.ip);
            if (on_lan_if || explicit) && !a.ip.is_loopback() {
                nets.push(a.clone());
            }
            if on_lan_if && !a.ip.is_loopback() {
                let addr = match a.ip {
                    IpAddr::V6(v6) => {
                        SocketAddr::V6(SocketAddrV6::new(v6, cfg.port, 0, a.scope_id))
                    }
                    v4 => SocketAddr::new(v4, cfg.port),
                };
                endpoints.insert(Endpoint {
                    addr,
                    device: Some(a.device.clone()),
                });
            }
        }
        for l in &cfg.listen {
            endpoints.insert(Endpoint {
                addr: *l,
                device: None,
            });
        }
        *self.nets.write().unwrap_or_else(|p| p.into_inner()) = nets;
        endpoints
    }

    /// Loopback, or inside a LAN prefix. Everything else is closed before the TLS handshake.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        peer.is_loopback() || self.device_of(peer).is_some()
    }

    /// The LAN interface whose prefix holds `peer`.
    pub fn device_of(&self, peer: IpAddr) -> Option<String> {
        let peer = peer.to_canonical();
        let nets = self.nets.read().unwrap_or_else(|p| p.into_inner());
        nets.iter()
            .find(|n| n.contains(peer))
            .map(|n| n.device.clone())
    }
}

/// Who a connection belongs to (contract §4, rev. 3): the terminal's link-layer address
/// whenever the box knows it, for IPv4 and IPv6 alike (many addresses behind one MAC are one
/// terminal), else its IP address.
pub fn terminal(ip: IpAddr, mac: Option<[u8; 6]>) -> Terminal {
    match mac {
        Some(mac) => Terminal::Mac(mac),
        None => Terminal::of_ip(ip),
    }
}

/// Binds a listening socket; interface endpoints are tied to their device (SO_BINDTODEVICE), so
/// packets arriving on any other interface never reach it, whatever their destination address.
pub fn bind(ep: &Endpoint) -> io::Result<TcpListener> {
    if ep.addr.ip().is_unspecified() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to listen on an unspecified address",
        ));
    }
    let socket = if ep.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if let Some(dev) = &ep.device {
        socket.bind_device(Some(dev.as_bytes()))?;
    }
    socket.bind(ep.addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(dev: &str, ip: &str, prefix: u8) -> IfAddr {
        IfAddr {
            device: dev.into(),
            ip: ip.parse().unwrap(),
            prefix,
            scope_id: 0,
        }
    }

    /// Contract §4 (rev. 3): an IPv4 terminal is its MAC too when the box knows it (it was its
    /// address before, so one host with two IPv4 addresses held two shares).
    #[test]
    fn a_terminal_is_its_mac_whenever_known() {
        let mac = [2, 0, 0, 0, 0, 1];
        for ip in [
            "192.168.1.10",
            "192.168.1.11",
            "fd00::10",
            "::ffff:192.168.1.10",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(terminal(ip, Some(mac)), Terminal::Mac(mac), "{ip}");
        }
        let v4: IpAddr = "192.168.1.10".parse().unwrap();
        assert_eq!(terminal(v4, None), Terminal::V4([192, 168, 1, 10]));
        let mapped: IpAddr = "::ffff:192.168.1.10".parse().unwrap();
        assert_eq!(terminal(mapped, None), Terminal::V4([192, 168, 1, 10]));
    }

    #[test]
    fn prefix_membership() {
        let n = net("br-lan", "192.168.1.1", 24);
        assert!(n.contains("192.168.1.254".parse().unwrap()));
        assert!(!n.contains("192.168.2.1".parse().unwrap()));
        assert!(!n.contains("fd00::1".parse().unwrap()));
        let v6 = net("br-lan", "fd00:1:2:3::1", 64);
        assert!(v6.contains("fd00:1:2:3:abcd::9".parse().unwrap()));
        assert!(!v6.contains("fd00:1:2:4::1".parse().unwrap()));
        assert!(net("x", "10.0.0.1", 0).contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn lan_follows_configured_interfaces_only() {
        let mut p = Vec::new();
        let cfg = crate::config::parse(
            "[server]\nlisten_interfaces=[\"br-lan\"]\nlisten=[\"127.0.0.1:8443\"]\nport=443\ncert=\"c\"\nkey=\"k\"\n",
            std::path::Path::new("/x.toml"),
            &mut p,
        )
        .unwrap()
        .common
        .server;
        let lan = Lan::default();
        let eps = lan.refresh(
            &cfg,
            &[
                net("br-lan", "192.168.1.1", 24),
                net("eth0", "203.0.113.7", 24),
                net("lo", "127.0.0.1", 8),
            ],
        );
        let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, vec!["127.0.0.1:8443", "192.168.1.1:443"]);
        assert!(lan.allows("192.168.1.77".parse().unwrap()));
        assert!(lan.allows("::ffff:192.168.1.77".parse().unwrap()));
        assert!(lan.allows("127.0.0.1".parse().unwrap()));
        assert!(!lan.allows("203.0.113.9".parse().unwrap()), "WAN prefix");
        assert_eq!(
            lan.device_of("192.168.1.5".parse().unwrap()).as_deref(),
            Some("br-lan")
        );
    }

    #[tokio::test]
    async fn bind_refuses_unspecified() {
        let ep = Endpoint {
            addr: "0.0.0.0:0".parse().unwrap(),
            device: None,
        };
        assert!(bind(&ep).is_err());
        let ep = Endpoint {
            addr: "127.0.0.1:0".parse().unwrap(),
            device: None,
        };
        assert!(bind(&ep).is_ok());
    }
}
