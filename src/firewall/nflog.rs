//! What our drop rules saw, from the kernel: packets logged by `log group` rules of our
//! tables arrive over nfnetlink_log (`NETLINK_NETFILTER`, `NFNL_SUBSYS_ULOG`). The rules
//! rate-limit logging per sender and in total, so a flood cannot flood the daemon; this
//! reader only decodes (pure, bounds-checked, never panics) and hands them on.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::core::MacAddr;
use crate::netlink::*;

/// The nflog group our rules log to (one process may bind a group; ours, by its name).
pub const GROUP: u16 = 0x5052;

/// Prefix of the ARP table's rule for a sender that no lease binds.
pub const PREFIX_ARP: &str = "provisioner arp";

/// Prefix of the guard's rule for an IP packet whose source MAC and address no lease binds.
pub const PREFIX_SPOOF: &str = "provisioner spoof";

/// Prefixes of the rules that log a refused flow from a client (sampled), ending in why
/// it was refused (a [`crate::core::events::FlowBlock`]'s name).
pub const PREFIX_FLOW: &str = "provisioner flow ";

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_HWADDR: u16 = 8;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Enough of a packet for what the daemon reads: an ARP body, an IPv4 and a TCP/UDP header.
const COPY_RANGE: u32 = 128;

/// One logged packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The rule's prefix: which rule logged it.
    pub prefix: String,
    /// The frame's source MAC, when it came in with one.
    pub src: Option<MacAddr>,
    /// From the network header on, cut at [`COPY_RANGE`] bytes.
    pub payload: Vec<u8>,
}

/// An ARP body (Ethernet, IPv4), as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Reads an Ethernet/IPv4 ARP body; `None` for anything else.
    pub fn parse(b: &[u8]) -> Option<Arp> {
        if b.len() < 28 || b[..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        Some(Arp {
            op: u16::from_be_bytes([b[6], b[7]]),
            sender_mac: MacAddr(b[8..14].try_into().ok()?),
            sender_ip: ip(14),
            target_ip: ip(24),
        })
    }
}

/// An IPv4 packet's addresses, protocol and destination port, as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// TCP or UDP, and not a later fragment.
    pub port: Option<u16>,
}

impl Flow {
    /// Reads an IPv4 header (and a TCP/UDP destination port); `None` for anything else.
    pub fn parse(b: &[u8]) -> Option<Flow> {
        let ihl = usize::from(*b.first()? & 0x0f) * 4;
        if b[0] >> 4 != 4 || ihl < 20 || b.len() < ihl {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        let proto = b[9];
        let first_fragment = u16::from_be_bytes([b[6], b[7]]) & 0x1fff == 0;
        let port = (first_fragment && (proto == 6 || proto == 17))
            .then(|| b.get(ihl + 2..ihl + 4))
            .flatten()
            .map(|p| u16::from_be_bytes([p[0], p[1]]));
        Some(Flow {
            src: ip(12),
            dst: ip(16),
            proto,
            port,
        })
    }
}

/// A non-blocking nfnetlink_log listener bound to [`GROUP`].
pub struct Nflog {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Nflog {
    pub fn open(group: u16) -> Result<Self, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(io)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(io)?;
        set_netlink_opt(&fd, NETLINK_CAP_ACK)?;
        let mut log = Nflog {
            fd,
            buf: vec![0u8; 64 * 1024],
        };
        let mut cmd = Vec::new();
        config_msg(&mut cmd, 1, group, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
        log.configure(&cmd, "bind nflog group")?;
        cmd.clear();
        let mut mode = [0u8; 6];
        mode[..4].copy_from_slice(&COPY_RANGE.to_be_bytes());
        mode[4] = NFULNL_COPY_PACKET;
        config_msg(&mut cmd, 2, group, NFULA_CFG_MODE, &mode);
        log.configure(&cmd, "set nflog copy mode")?;
        // Each packet as it is logged: the kernel's default holds up to 100 for up to a
        // second, which an operator watching `events --follow` would see as lag.
        cmd.clear();
        config_msg(&mut cmd, 3, group, NFULA_CFG_QTHRESH, &1u32.to_be_bytes());
        log.configure(&cmd, "set nflog queue threshold")?;
        let flags = nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&log.fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io)?;
        // A burst the daemon reads late is better kept than lost.
        let _ = socket::setsockopt(&log.fd, socket::sockopt::RcvBufForce, &(256 * 1024));
        Ok(log)
    }

    /// Sends one config message and waits for its ack (the socket is still blocking).
    fn configure(&mut self, msg: &[u8], op: &'static str) -> Result<(), NetlinkError> {
        socket::send(self.fd.as_raw_fd(), msg, MsgFlags::empty()).map_err(io)?;
        let seq = ne_u32(msg, 8).unwrap_or_default();
        loop {
            let n =
                socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()).map_err(io)?;
            for m in Msgs::new(&self.buf[..n]) {
                let m = m?;
                if m.ty == NLMSG_ERROR && m.seq == seq {
                    return match parse_ack(&m)? {
                        (0, _) => Ok(()),
                        (errno, message) => Err(NetlinkError::Kernel { errno, op, message }),
                    };
                }
            }
        }
    }

    /// Appends what is queued to `out`. `WouldBlock` when nothing is; a lost burst (the
    /// queue overflowed) is not an error: the rules' counters still count it.
    pub fn read(&mut self, out: &mut Vec<Logged>) -> std::io::Result<()> {
        let mut any = false;
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    any = true;
                    out.extend(logged(&self.buf[..n]));
                }
                Err(Errno::ENOBUFS) => any = true,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) if any => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsRawFd for Nflog {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// An `NFULNL_MSG_CONFIG` for `group` with one attribute, acked.
fn config_msg(buf: &mut Vec<u8>, seq: u32, group: u16, attr: u16, value: &[u8]) {
    let ty = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let start = begin_nfmsg(buf, ty, flags, seq, libc::AF_UNSPEC as u8, group);
    put_attr(buf, attr, value);
    end_msg(buf, start);
}

/// The logged packets in a datagram from the kernel. Pure (for tests and fuzzing); never
/// panics.
pub fn logged(datagram: &[u8]) -> impl Iterator<Item = Logged> + '_ {
    Msgs::new(datagram).flatten().filter_map(|m| {
        (m.ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)
            .then(|| parse_packet(m.payload))
            .flatten()
    })
}

/// One `NFULNL_MSG_PACKET` (after the `nlmsghdr`). Pure; never panics.
pub fn parse_packet(payload: &[u8]) -> Option<Logged> {
    let t = attr_table::<11>(nfgen_attrs(payload).ok()?).ok()?;
    let prefix = t[usize::from(NFULA_PREFIX)].map(string).unwrap_or_default();
    // struct nfulnl_msg_packet_hw: be16 length, u16 pad, u8[8] address.
    let src = t[usize::from(NFULA_HWADDR)].and_then(|hw| {
        let len = u16::from_be_bytes(hw.get(..2)?.try_into().ok()?);
        (len == 6).then(|| Some(MacAddr(hw.get(4..10)?.try_into().ok()?)))?
    });
    Some(Logged {
        prefix,
        src,
        payload: t[usize::from(NFULA_PAYLOAD)].unwrap_or_default().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_read_their_destination_and_nothing_past_the_buffer() {
        // IPv4, IHL 5, TCP, 192.168.250.10 -> 11.1.0.20, sport 40000, dport 443.
        let mut b = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        b.extend_from_slice(&[192, 168, 250, 10, 11, 1, 0, 20]);
        b.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        let f = Flow::parse(&b).unwrap();
        assert_eq!(
            (f.src, f.dst, f.proto, f.port),
            (
                "192.168.250.10".parse().unwrap(),
                "11.1.0.20".parse().unwrap(),
                6,
                Some(443)
            )
        );
        // A later fragment has no ports; ICMP none; a cut header no port; no IPv6, no junk.
        let mut frag = b.clone();
        frag[6] = 0x00;
        frag[7] = 0x10;
        assert_eq!(Flow::parse(&frag).unwrap().port, None);
        let mut icmp = b.clone();
        icmp[9] = 1;
        assert_eq!(Flow::parse(&icmp).unwrap().port, None);
        assert_eq!(Flow::parse(&b[..22]).unwrap().port, None);
        for bad in [&b[..19], &[0x65u8; 40][..], &[0x44u8; 40][..], &[][..]] {
            assert_eq!(Flow::parse(bad), None, "{bad:?}");
        }
    }

    fn arp_body(op: u16, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut b = vec![0, 1, 8, 0, 6, 4];
        b.extend_from_slice(&op.to_be_bytes());
        b.extend_from_slice(&sha);
        b.extend_from_slice(&spa);
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&tpa);
        b
    }

    /// A packet message as the kernel sends it (after the nlmsghdr).
    fn packet(prefix: &str, hw: Option<[u8; 6]>, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![libc::AF_UNSPEC as u8, 0, 0x50, 0x52];
        put_attr(&mut b, 1, &[0x08, 0x06, 1, 0]); // NFULA_PACKET_HDR: ARP, hook input
        if let Some(hw) = hw {
            let mut v = vec![0, 6, 0, 0];
            v.extend_from_slice(&hw);
            v.extend_from_slice(&[0, 0]);
            put_attr(&mut b, NFULA_HWADDR, &v);
        }
        put_attr(&mut b, NFULA_PAYLOAD, payload);
        put_str(&mut b, NFULA_PREFIX, prefix);
        b
    }

    #[test]
    fn a_logged_arp_packet_reads_back() {
        let body = arp_body(
            2,
            [2, 0, 0, 0, 0, 1],
            [192, 168, 250, 3],
            [192, 168, 250, 1],
        );
        let l = parse_packet(&packet(PREFIX_ARP, Some([2, 0, 0, 0, 0, 1]), &body)).unwrap();
        assert_eq!(l.prefix, PREFIX_ARP);
        assert_eq!(l.src, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(
            Arp::parse(&l.payload),
            Some(Arp {
                op: 2,
                sender_mac: MacAddr([2, 0, 0, 0, 0, 1]),
                sender_ip: Ipv4Addr::new(192, 168, 250, 3),
                target_ip: Ipv4Addr::new(192, 168, 250, 1),
            })
        );
        // Not Ethernet/IPv4, or cut short.
        assert_eq!(Arp::parse(&body[..27]), None);
        let mut other = body.clone();
        other[1] = 6;
        assert_eq!(Arp::parse(&other), None);
        // Without a hardware address, and garbage of every length.
        assert_eq!(parse_packet(&packet("x", None, &body)).unwrap().src, None);
        let whole = packet(PREFIX_ARP, Some([2, 0, 0, 0, 0, 1]), &body);
        for n in 0..whole.len() {
            let _ = parse_packet(&whole[..n]);
        }
    }

    #[test]
    fn config_messages_bind_the_group_and_copy_packets() {
        let mut b = Vec::new();
        config_msg(&mut b, 9, GROUP, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
        let m: Vec<_> = Msgs::new(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].ty, (4 << 8) | 1);
        assert_eq!(m[0].flags, NLM_F_REQUEST | NLM_F_ACK);
        // nfgenmsg: AF_UNSPEC, version 0, the group big endian; then CFG_CMD = BIND, in an
        // attribute whose header (length 5, type 1) is in host order.
        assert_eq!(&m[0].payload[..4], &[0, 0, 0x50, 0x52]);
        let mut attr = [5u16.to_ne_bytes(), 1u16.to_ne_bytes()].concat();
        attr.extend([NFULNL_CFG_CMD_BIND, 0, 0, 0]);
        assert_eq!(&m[0].payload[4..], &attr[..]);
    }

    /// Not a test: writes the fuzz target's seeds from these samples (`cargo test --lib
    /// fuzz_seeds -- --ignored`; see README.md, "Fuzzing").
    #[test]
    #[ignore]
    fn fuzz_seeds() {
        let msg = |payload: &[u8]| {
            let mut m = Vec::new();
            let s = begin_header(&mut m, (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET, 0, 0);
            m.extend_from_slice(payload);
            end_msg(&mut m, s);
            m
        };
        let arp = arp_body(
            1,
            [2, 0, 0, 0, 0, 1],
            [192, 168, 250, 9],
            [192, 168, 250, 1],
        );
        let hw = Some([2, 0, 0, 0, 0, 1]);
        crate::fuzz_seed("nflog", "arp", &msg(&packet(PREFIX_ARP, hw, &arp)));
        // An IPv4 header and a TCP destination port.
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[192, 168, 250, 9, 11, 1, 0, 20, 0x30, 0x39, 0x01, 0xbb]);
        let flow = format!(
            "{PREFIX_FLOW}{}",
            crate::core::events::FlowBlock::ALL[0].as_str()
        );
        let both = [
            msg(&packet(PREFIX_SPOOF, hw, &ip)),
            msg(&packet(&flow, None, &ip)),
        ];
        crate::fuzz_seed("nflog", "flows", &both.concat());
    }
}
