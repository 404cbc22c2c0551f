//! The IPv6 neighbour table, read through rtnetlink (RTM_GETNEIGH dump): /proc/net/arp is IPv4 only.
//! Netlink is host-endian, hence `to_ne_bytes` everywhere (big-endian MIPS boxes included).
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const AF_INET6: u8 = 10;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// NUD_INCOMPLETE | NUD_FAILED: no usable link-layer address.
const NUD_UNUSABLE: u16 = 0x01 | 0x20;
/// A neighbour dump of a home LAN fits in a few reads; never loop beyond this.
const MAX_READS: usize = 64;

/// One neighbour: address, link-layer address, interface index.
pub type Neighbour = (Ipv6Addr, [u8; 6], u32);

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Parses the neighbour messages in one netlink read; returns false once the dump is over.
pub fn parse(mut buf: &[u8], out: &mut Vec<Neighbour>) -> bool {
    while buf.len() >= 16 {
        let (Some(len), Some(kind)) = (u32_at(buf, 0), u16_at(buf, 4)) else {
            return false;
        };
        let len = len as usize;
        if len < 16 || len > buf.len() {
            return false;
        }
        if kind == NLMSG_DONE || kind == NLMSG_ERROR {
            return false;
        }
        let msg = &buf[16..len];
        if kind == RTM_NEWNEIGH && msg.len() >= 12 && msg[0] == AF_INET6 {
            let ifindex = u32_at(msg, 4).unwrap_or(0);
            let state = u16_at(msg, 8).unwrap_or(0);
            let (mut dst, mut lladdr) = (None, None);
            let mut attrs = &msg[12..];
            while attrs.len() >= 4 {
                let alen = u16_at(attrs, 0).unwrap_or(0) as usize;
                let atype = u16_at(attrs, 2).unwrap_or(0);
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                let payload = &attrs[4..alen];
                match (atype, payload.len()) {
                    (NDA_DST, 16) => dst = <[u8; 16]>::try_from(payload).ok().map(Ipv6Addr::from),
                    (NDA_LLADDR, 6) => lladdr = <[u8; 6]>::try_from(payload).ok(),
                    _ => {}
                }
                attrs = attrs.get((alen + 3) & !3..).unwrap_or(&[]);
            }
            if let (Some(ip), Some(mac)) = (dst, lladdr) {
                if state & NUD_UNUSABLE == 0 {
                    out.push((ip, mac, ifindex));
                }
            }
        }
        buf = buf.get((len + 3) & !3..).unwrap_or(&[]);
    }
    true
}

/// Dumps the kernel's IPv6 neighbour table; empty on any error.
pub fn ipv6() -> Vec<Neighbour> {
    let mut out = Vec::new();
    let Ok(fd) = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    ) else {
        return out;
    };
    let _ = socket::setsockopt(
        &fd,
        socket::sockopt::ReceiveTimeout,
        &TimeVal::new(0, 200_000),
    );
    let mut req = Vec::with_capacity(28);
    req.extend(28u32.to_ne_bytes());
    req.extend(RTM_GETNEIGH.to_ne_bytes());
    req.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend(1u32.to_ne_bytes()); // sequence
    req.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    req.extend([AF_INET6, 0, 0, 0]);
    req.extend(0i32.to_ne_bytes()); // any interface
    req.extend([0u8; 4]); // state, flags, type
    if socket::sendto(
        fd.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .is_err()
    {
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
        assert!(!parse(&msg(NLMSG_DONE, &[0; 4]), &mut out));
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
