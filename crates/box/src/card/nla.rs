//! Netlink message and attribute walkers over borrowed bytes, and the socket, shared by the
//! rtnetlink neighbour reader (`neigh`) and the nl80211 reader (`nl80211`, `wifi`).
//!
//! Netlink is host-endian, hence `from_ne_bytes`/`to_ne_bytes` everywhere (big-endian MIPS boxes
//! included). Every read goes through `get` and checked arithmetic: a truncated, oversized or
//! garbage buffer ends the iteration (or gives `None`); it never panics and never allocates.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;
use std::os::fd::{AsRawFd, OwnedFd};

/// `struct nlmsghdr` is 16 bytes, `struct genlmsghdr` 4, `struct nlattr` 4.
pub const NLMSG_HDRLEN: usize = 16;
pub const GENL_HDRLEN: usize = 4;
pub const NLA_HDRLEN: usize = 4;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;

/// Strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Rounds up to the 4-byte alignment of netlink messages and attributes.
fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

pub fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)?
        .try_into()
        .ok()
        .map(u16::from_ne_bytes)
}

pub fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_ne_bytes)
}

/// One netlink message: header fields and the payload after the 16-byte header.
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

impl<'a> NlMsg<'a> {
    /// For `NLMSG_ERROR`: the (negative) errno, 0 for an acknowledgement.
    pub fn error_code(&self) -> Option<i32> {
        if self.ty != NLMSG_ERROR {
            return None;
        }
        ne_u32(self.payload, 0).map(|v| v as i32)
    }

    /// Generic netlink: the command and the attributes after `genlmsghdr`.
    pub fn genl(&self) -> Option<(u8, &'a [u8])> {
        let cmd = *self.payload.first()?;
        Some((cmd, self.payload.get(GENL_HDRLEN..)?))
    }
}

/// The netlink messages in one receive buffer.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    buf: &'a [u8],
    malformed: bool,
}

pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages {
        buf,
        malformed: false,
    }
}

impl Messages<'_> {
    /// Whether the iteration stopped at a message whose length lies (shorter than its header or
    /// longer than the buffer); a buffer that merely ends is not malformed.
    pub fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = NlMsg<'a>;
    fn next(&mut self) -> Option<NlMsg<'a>> {
        let b = self.buf;
        let len = ne_u32(b, 0)? as usize;
        let (ty, flags, seq) = (ne_u16(b, 4)?, ne_u16(b, 6)?, ne_u32(b, 8)?);
        ne_u32(b, 12)?; // the sender's port id: only a complete header counts
        let Some(payload) = b.get(NLMSG_HDRLEN..len).filter(|_| len >= NLMSG_HDRLEN) else {
            self.buf = &[];
            self.malformed = true;
            return None;
        };
        let next = align4(len).unwrap_or(usize::MAX).min(b.len());
        self.buf = b.get(next..).unwrap_or(&[]);
        Some(NlMsg {
            ty,
            flags,
            seq,
            payload,
        })
    }
}

/// One attribute: its type (flags masked off) and payload.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub ty: u16,
    pub data: &'a [u8],
}

/// A run of attributes (a message body or a nested attribute's payload).
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    buf: &'a [u8],
}

pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;
    fn next(&mut self) -> Option<Attr<'a>> {
        let b = self.buf;
        let len = ne_u16(b, 0)? as usize;
        let ty = ne_u16(b, 2)? & NLA_TYPE_MASK;
        let Some(data) = b.get(NLA_HDRLEN..len).filter(|_| len >= NLA_HDRLEN) else {
            self.buf = &[];
            return None;
        };
        let next = align4(len).unwrap_or(usize::MAX).min(b.len());
        self.buf = b.get(next..).unwrap_or(&[]);
        Some(Attr { ty, data })
    }
}

impl<'a> Attr<'a> {
    pub fn u8(&self) -> Option<u8> {
        self.data.first().copied()
    }
    pub fn i8(&self) -> Option<i8> {
        self.u8().map(|v| v as i8)
    }
    pub fn u16(&self) -> Option<u16> {
        ne_u16(self.data, 0)
    }
    pub fn u32(&self) -> Option<u32> {
        ne_u32(self.data, 0)
    }
    pub fn u64(&self) -> Option<u64> {
        self.data.get(0..8)?.try_into().ok().map(u64::from_ne_bytes)
    }
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.data.get(0..6)?.try_into().ok()
    }
    /// A NUL-terminated string (the terminator is optional); `None` if not UTF-8.
    pub fn str(&self) -> Option<&'a str> {
        let d = self.data;
        let end = d.iter().position(|&c| c == 0).unwrap_or(d.len());
        std::str::from_utf8(d.get(..end)?).ok()
    }
    pub fn nested(&self) -> Attrs<'a> {
        attrs(self.data)
    }
}

/// A netlink socket of `protocol` that hears the kernel only: bound, then connected to port 0, so
/// that the kernel refuses other processes' unicasts to it (any local program could otherwise
/// send "replies" to a port id it guessed). Each receive waits at most `timeout` (under 1 s).
pub fn kernel_socket(protocol: SockProtocol, timeout: std::time::Duration) -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    connect(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    let tv = TimeVal::new(0, timeout.subsec_micros() as _);
    setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
    Ok(fd)
}

/// Appends one attribute to a request (payloads here are a few bytes: the length always fits).
pub fn put_attr(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = u16::try_from(data.len().saturating_add(NLA_HDRLEN)).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(data);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// A netlink request: `nlmsghdr` (the kernel fills in the port id) and `body`.
pub fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = body.len().saturating_add(NLMSG_HDRLEN);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn walks_messages_and_attributes() {
        let mut body = vec![7, 1, 0, 0]; // genl: command 7, version 1
        put_attr(&mut body, 3, &5u32.to_ne_bytes());
        put_attr(&mut body, 4 | 0x8000, b"wlan0\0");
        let mut buf = request(0x20, NLM_F_MULTI, 9, &body);
        buf.extend(request(NLMSG_DONE, 0, 9, &[0; 4]));
        let msgs: Vec<NlMsg> = messages(&buf).collect();
        assert_eq!(msgs.len(), 2);
        let (cmd, a) = msgs[0].genl().unwrap();
        assert_eq!(cmd, 7);
        let a: Vec<Attr> = attrs(a).collect();
        assert_eq!((a[0].ty, a[0].u32()), (3, Some(5)));
        assert_eq!((a[1].ty, a[1].str()), (4, Some("wlan0")));
        assert_eq!(msgs[1].ty, NLMSG_DONE);
    }

    #[test]
    fn lying_lengths_end_the_walk() {
        let mut buf = request(0x20, 0, 1, &[0; 8]);
        let mut m = messages(&buf);
        assert!(m.next().is_some() && m.next().is_none() && !m.malformed());
        buf[0] = 0xff;
        let mut m = messages(&buf);
        assert!(m.next().is_none() && m.malformed());
        buf[0] = 3; // shorter than its own header
        let mut m = messages(&buf);
        assert!(m.next().is_none() && m.malformed());
        assert_eq!(attrs(&[0, 0, 1, 0]).count(), 0);
        assert_eq!(attrs(&[0xff, 0xff, 1, 0, 0]).count(), 0);
        // A one-byte attribute (length 5, type 1), in this host's order as the kernel sends it.
        let mut one = [5u16.to_ne_bytes(), 1u16.to_ne_bytes()].concat();
        one.push(9);
        assert_eq!(attrs(&one).next().map(|a| a.u8()), Some(Some(9)));
        let a = Attr { ty: 0, data: &[] };
        assert_eq!(
            (a.u8(), a.u16(), a.u32(), a.u64(), a.mac()),
            (None, None, None, None, None)
        );
        assert_eq!(a.str(), Some(""));
    }

    #[test]
    fn a_kernel_socket_refuses_other_processes_messages() {
        use nix::sys::socket::{getsockname, sendto, MsgFlags};
        let ours = kernel_socket(
            SockProtocol::NetlinkRoute,
            std::time::Duration::from_millis(100),
        )
        .unwrap();
        let port = getsockname::<NetlinkAddr>(ours.as_raw_fd()).unwrap().pid();
        let other = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .unwrap();
        bind(other.as_raw_fd(), &NetlinkAddr::new(0, 0)).unwrap();
        let fake = request(NLMSG_DONE, 0, 1, &[0; 4]);
        let sent = sendto(
            other.as_raw_fd(),
            &fake,
            &NetlinkAddr::new(port, 0),
            MsgFlags::empty(),
        );
        assert_eq!(sent, Err(nix::errno::Errno::ECONNREFUSED));
    }
}
