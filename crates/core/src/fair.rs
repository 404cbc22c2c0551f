//! Fair shares: who a connection belongs to (its terminal). Connection slots and rate limits are
//! counted per terminal, so that one host cannot take what the others need.
use std::net::IpAddr;

/// One client device, as well as the network lets us tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Terminal {
    /// An IPv4 address (an IPv4-mapped IPv6 address counts as its IPv4 address).
    V4([u8; 4]),
    /// On the LAN: the link-layer address behind an IPv6 address (every LAN device shares one
    /// /64 and rotates privacy addresses, but keeps its MAC).
    Mac([u8; 6]),
    /// An IPv6 address whose MAC is unknown (loopback, not yet in the neighbour table), or on the
    /// internet-facing authority an IPv6 /64 (the address bits below it zeroed).
    V6(u128),
}

impl Terminal {
    /// The terminal of a peer address, before any neighbour lookup.
    pub fn of_ip(ip: IpAddr) -> Terminal {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Terminal::V4(v4.octets()),
            IpAddr::V6(v6) => Terminal::V6(u128::from(v6)),
        }
    }

    /// The terminal of an internet peer: IPv4 address, or IPv6 /64 (one subscriber's whole prefix).
    pub fn of_internet_ip(ip: IpAddr) -> Terminal {
        match Terminal::of_ip(ip) {
            Terminal::V6(bits) => Terminal::V6(bits & !((1u128 << 64) - 1)),
            t => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_of_addresses() {
        let p = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(Terminal::of_ip(p("10.0.0.1")), Terminal::V4([10, 0, 0, 1]));
        assert_eq!(
            Terminal::of_ip(p("::ffff:10.0.0.1")),
            Terminal::V4([10, 0, 0, 1])
        );
        assert_ne!(
            Terminal::of_ip(p("2001:db8::1")),
            Terminal::of_ip(p("2001:db8::2"))
        );
        assert_eq!(
            Terminal::of_internet_ip(p("2001:db8:0:1::1")),
            Terminal::of_internet_ip(p("2001:db8:0:1:ffff::2"))
        );
        assert_ne!(
            Terminal::of_internet_ip(p("2001:db8:0:1::1")),
            Terminal::of_internet_ip(p("2001:db8:0:2::1"))
        );
    }
}
