//! The IPv6 neighbour table, read through rtnetlink (RTM_GETNEIGH dump): /proc/net/arp is IPv4 only.
//! Messages are walked with `nla` (host-endian, bounds-checked), as nl80211's are.
use super::nla;
use nix::sys::socket::{self, MsgFlags, SockProtocol};
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const AF_INET6: u8 = 10;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// NUD_INCOMPLETE | NUD_FAILED: no usable link-layer address.
const NUD_UNUSABLE: u16 = 0x01 | 0x20;
/// A neighbour dump of a home LAN fits in a few reads; never loop beyond this.
const MAX_READS: usize = 64;

/// One neighbour: address, link-layer address, interface index.
pub type Neighbour = (Ipv6Addr, [u8; 6], u32);

/// Parses the neighbour messages in one netlink read; returns false once the dump is over (or a
/// message's length lies: nothing after it can be trusted).
pub fn parse(buf: &[u8], out: &mut Vec<Neighbour>) -> bool {
    let mut msgs = nla::messages(buf);
    for m in msgs.by_ref() {
        if m.ty == nla::NLMSG_DONE || m.ty == nla::NLMSG_ERROR {
            return false;
        }
        if m.ty != RTM_NEWNEIGH || m.payload.first() != Some(&AF_INET6) {
            continue;
        }
        // struct ndmsg: family, pad, pad, ifindex (4), state (2), flags, type; then attributes.
        let (Some(ifindex), Some(state), Some(attrs)) = (
            nla::ne_u32(m.payload, 4),
            nla::ne_u16(m.payload, 8),
            m.payload.get(12..),
        ) else {
            continue;
        };
        let (mut dst, mut lladdr) = (None, None);
        for a in nla::attrs(attrs) {
            match (a.ty, a.data.len()) {
                (NDA_DST, 16) => dst = <[u8; 16]>::try_from(a.data).ok().map(Ipv6Addr::from),
                (NDA_LLADDR, 6) => lladdr = a.mac(),
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (dst, lladdr) {
            if state & NUD_UNUSABLE == 0 {
                out.push((ip, mac, ifindex));
            }
        }
    }
    !msgs.malformed()
}

/// Dumps the kernel's IPv6 neighbour table; empty on any error.
pub fn ipv6() -> Vec<Neighbour> {
    let mut out = Vec::new();
    let Ok(fd) = nla::kernel_socket(SockProtocol::NetlinkRoute, Duration::from_millis(200)) else {
        return out;
    };
    let mut ndmsg = vec![AF_INET6, 0, 0, 0];
    ndmsg.extend(0i32.to_ne_bytes()); // any interface
    ndmsg.extend([0u8; 4]); // state, flags, type
    let req = nla::request(
        RTM_GETNEIGH,
        nla::NLM_F_REQUEST | nla::NLM_F_DUMP,
        1,
        &ndmsg,
    );
    if socket::send(fd.as_raw_fd(), &req, MsgFlags::empty()).is_err() {
        return out;
    }
    let mut buf = vec![0u8; 32 * 1024];
    for _ in 0..MAX_READS {
        match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) if n > 0 && parse(&buf[..n], &mut out) => continue,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn neigh(ip: Ipv6Addr, mac: [u8; 6], ifindex: u32, state: u16) -> Vec<u8> {
        let mut b = vec![AF_INET6, 0, 0, 0];
        b.extend(ifindex.to_ne_bytes());
        b.extend(state.to_ne_bytes());
        b.extend([0, 0]);
        b.extend(20u16.to_ne_bytes());
        b.extend(NDA_DST.to_ne_bytes());
        b.extend(ip.octets());
        b.extend(10u16.to_ne_bytes());
        b.extend(NDA_LLADDR.to_ne_bytes());
        b.extend(mac);
        b.extend([0, 0]);
        msg(RTM_NEWNEIGH, &b)
    }

    #[test]
    fn parses_a_dump_and_skips_unusable_entries() {
        let a: Ipv6Addr = "fd00::2".parse().unwrap();
        let b: Ipv6Addr = "fd00::3".parse().unwrap();
        let mut buf = neigh(a, [2, 0, 0, 0, 0, 2], 4, 0x02);
        buf.extend(neigh(b, [2, 0, 0, 0, 0, 3], 4, 0x20));
        let mut out = Vec::new();
        assert!(parse(&buf, &mut out));
        assert_eq!(out, vec![(a, [2, 0, 0, 0, 0, 2], 4)]);
        assert!(!parse(&msg(nla::NLMSG_DONE, &[0; 4]), &mut out));
    }

    #[test]
    fn truncated_or_lying_lengths_stop_parsing() {
        let mut buf = neigh("fd00::2".parse().unwrap(), [1; 6], 1, 2);
        buf[0] = 0xff; // length beyond the buffer
        let mut out = Vec::new();
        assert!(!parse(&buf, &mut out));
        assert!(out.is_empty());
        assert!(parse(&[1, 2, 3], &mut out));
    }
}
