//! The DHCP edge: packets in and out of UDP port 67 on the provisioning interface, in
//! dhcproto's wire format. Every decision is the core's ([`crate::core::leases`]); this only
//! translates.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use dhcproto::v4::{
    DhcpOption, DhcpOptions, Flags, HType, Message, MessageType, Opcode, OptionCode,
};
use dhcproto::{Decodable, Encodable};
use ipnet::Ipv4Net;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};

use crate::config::IfName;
use crate::core::MacAddr;
use crate::core::leases::{DhcpReply, DhcpRequest};
use crate::core::outbox::DhcpTransaction;

/// A client's message, reduced to what the core decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientMessage {
    pub request: DhcpRequest,
    /// What a reply needs from the request besides the decision.
    pub to: DhcpTransaction,
    /// The client identifier (option 61) when it is a MAC (hardware type 1).
    pub client_id: Option<MacAddr>,
}

/// Reads a client's message; `None` for anything that is not a client message (replies,
/// relayed messages, non-Ethernet, garbage).
pub fn parse(buf: &[u8]) -> Option<ClientMessage> {
    let msg = Message::from_bytes(buf).ok()?;
    if msg.opcode() != Opcode::BootRequest
        || msg.htype() != HType::Eth
        || msg.hlen() != 6
        || !msg.giaddr().is_unspecified()
    {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    // A group address is never a station.
    if mac[0] & 1 == 1 {
        return None;
    }
    let mac = MacAddr(mac);
    let opt_ip = |code| match msg.opts().get(code) {
        Some(DhcpOption::RequestedIpAddress(ip)) | Some(DhcpOption::ServerIdentifier(ip)) => {
            Some(*ip)
        }
        _ => None,
    };
    let requested = opt_ip(OptionCode::RequestedIpAddress);
    let ciaddr = Some(msg.ciaddr()).filter(|a| !a.is_unspecified());
    let request = match msg.opts().msg_type()? {
        MessageType::Discover => DhcpRequest::Discover { mac, requested },
        MessageType::Request => DhcpRequest::Request {
            mac,
            server_id: opt_ip(OptionCode::ServerIdentifier),
            requested,
            ciaddr,
        },
        MessageType::Release => DhcpRequest::Release {
            mac,
            ciaddr: ciaddr?,
        },
        MessageType::Decline => DhcpRequest::Decline {
            mac,
            requested: requested?,
        },
        MessageType::Inform => DhcpRequest::Inform { mac },
        _ => return None,
    };
    let client_id = match msg.opts().get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) if id.len() == 7 && id[0] == 1 => {
            Some(MacAddr(id[1..].try_into().ok()?))
        }
        _ => None,
    };
    Some(ClientMessage {
        request,
        to: DhcpTransaction {
            xid: msg.xid(),
            flags: u16::from(msg.flags()),
            chaddr: mac,
            ciaddr: msg.ciaddr(),
        },
        client_id,
    })
}

/// The network parameters every offer and ack carries.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub router: Ipv4Addr,
    pub subnet: Ipv4Net,
}

/// Encodes the reply and says where it goes (RFC 2131 §4.1): to a renewing client's own
/// address, else broadcast. (A server may always broadcast when it cannot unicast to a
/// client that has no address yet; we do not poke the ARP cache to do so.)
pub fn reply(h: &DhcpTransaction, reply: DhcpReply, p: &Params) -> (Vec<u8>, SocketAddrV4) {
    let (kind, yiaddr, lease) = match reply {
        DhcpReply::Offer { ip, lease } => (MessageType::Offer, ip, Some(lease)),
        DhcpReply::Ack { ip, lease } => (MessageType::Ack, ip, Some(lease)),
        DhcpReply::Nak => (MessageType::Nak, Ipv4Addr::UNSPECIFIED, None),
    };
    let ciaddr = if kind == MessageType::Nak {
        Ipv4Addr::UNSPECIFIED
    } else {
        h.ciaddr
    };
    let mut msg = Message::new_with_id(
        h.xid,
        ciaddr,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &h.chaddr.0,
    );
    msg.set_opcode(Opcode::BootReply)
        .set_flags(Flags::new(h.flags));
    let mut opts = DhcpOptions::new();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(p.router));
    if let Some(lease) = lease {
        let secs = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX);
        opts.insert(DhcpOption::AddressLeaseTime(secs));
        opts.insert(DhcpOption::Renewal(secs / 2));
        opts.insert(DhcpOption::Rebinding(secs / 8 * 7));
        opts.insert(DhcpOption::SubnetMask(p.subnet.netmask()));
        opts.insert(DhcpOption::Router(vec![p.router]));
        opts.insert(DhcpOption::DomainNameServer(vec![p.router]));
    }
    msg.set_opts(opts);
    let bytes = msg
        .to_vec()
        .expect("a reply built from valid fields encodes");
    let dest = if kind != MessageType::Nak && !h.ciaddr.is_unspecified() {
        h.ciaddr
    } else {
        Ipv4Addr::BROADCAST
    };
    (bytes, SocketAddrV4::new(dest, 68))
}

/// The UDP socket replies leave by: port 67 on the provisioning interface
/// (SO_BINDTODEVICE), broadcasts allowed. It receives nothing (a filter drops everything
/// queued to it: requests come in through the [`Listener`], which sees who sent them); it
/// holds the port so that requests are not answered with ICMP port unreachable.
pub fn socket(interface: &IfName) -> std::io::Result<tokio::net::UdpSocket> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    socket::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(interface.as_str()),
    )?;
    attach_filter(&fd, &DROP_ALL)?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67)),
    )?;
    // SAFETY: the fd is a freshly created, owned, non-blocking UDP socket.
    let std = unsafe { std::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) };
    tokio::net::UdpSocket::from_std(std)
}

/// Classic BPF: accept nothing.
const DROP_ALL: [libc::sock_filter; 1] = [bpf(0x06, 0, 0, 0)];

/// Classic BPF over an IPv4 packet (a packet socket of type SOCK_DGRAM starts at the
/// network header): accept unfragmented UDP to port 67, nothing else, so the daemon never
/// sees the rest of the network's traffic.
const DHCP_ONLY: [libc::sock_filter; 9] = [
    bpf(0x30, 0, 0, 9),      // ldb [9]: protocol
    bpf(0x15, 0, 5, 17),     // jeq UDP, else drop
    bpf(0x28, 0, 0, 6),      // ldh [6]: flags, fragment offset
    bpf(0x45, 3, 0, 0x1fff), // jset fragment offset: drop
    bpf(0xb1, 0, 0, 0),      // ldxb 4*([0]&0xf): header length
    bpf(0x48, 0, 0, 2),      // ldh [x+2]: destination port
    bpf(0x15, 1, 0, 67),     // jeq 67: accept
    bpf(0x06, 0, 0, 0),      // drop
    bpf(0x06, 0, 0, 0xffff), // accept
];

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn attach_filter(fd: &impl AsRawFd, prog: &[libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at `prog`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

const PACKET_OUTGOING: u8 = 4;

/// Where DHCP requests come in: a packet socket on the provisioning interface, so that each
/// request arrives with the frame's source MAC, which the message itself cannot forge.
/// (Not the bridge port: a bridge passes frames up as its own; the bridge's forwarding
/// database says which port, see `net::Segment::port_of`.) Non-blocking.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

/// A request as it came in: who sent the frame, on which interface, and the DHCP payload's
/// place in the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub src: MacAddr,
    pub port: u32,
    pub payload: std::ops::Range<usize>,
}

impl Listener {
    pub fn open(interface: &IfName) -> std::io::Result<Listener> {
        let index = nix::net::if_::if_nametoindex(interface.as_str())?;
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain syscall; on success we own the new descriptor.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Filter before binding: nothing else is ever queued.
        attach_filter(&fd, &DHCP_ONLY)?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: sll is a valid sockaddr_ll of the stated size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Listener { fd })
    }

    /// The next request waiting, read into `buf`; `Ok(None)` for a frame that is not one
    /// (outgoing, not from an Ethernet source, a malformed header). `WouldBlock` when
    /// nothing waits.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<Frame>> {
        // SAFETY: as above.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and sll are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if sll.sll_pkttype == PACKET_OUTGOING || sll.sll_halen != 6 {
            return Ok(None);
        }
        let mut src = [0u8; 6];
        src.copy_from_slice(&sll.sll_addr[..6]);
        Ok(udp_payload(&buf[..n as usize]).map(|payload| Frame {
            src: MacAddr(src),
            port: sll.sll_ifindex as u32,
            payload,
        }))
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Where the payload of an unfragmented IPv4 UDP datagram to port 67 sits in `packet`
/// (which starts at the IPv4 header). Pure; never panics.
pub fn udp_payload(packet: &[u8]) -> Option<std::ops::Range<usize>> {
    let &v_ihl = packet.first()?;
    let ihl = usize::from(v_ihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
    if v_ihl >> 4 != 4 || ihl < 20 || total < ihl + 8 || total > packet.len() {
        return None;
    }
    // More fragments, or an offset: not a whole datagram.
    if frag & 0x3fff != 0 || *packet.get(9)? != 17 {
        return None;
    }
    let udp = &packet[ihl..total];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if dport != 67 || ulen < 8 || ulen > udp.len() {
        return None;
    }
    Some(ihl + 8..ihl + ulen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn client_msg(kind: MessageType, opts: &[DhcpOption], ciaddr: Ipv4Addr) -> Vec<u8> {
        let mut m = Message::new_with_id(
            0x1234_5678,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[2, 0, 0, 0, 0, 1],
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in opts {
            m.opts_mut().insert(o.clone());
        }
        m.to_vec().unwrap()
    }

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const IP: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 10);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 1);

    #[test]
    fn parses_the_four_client_messages() {
        let d = client_msg(
            MessageType::Discover,
            &[DhcpOption::RequestedIpAddress(IP)],
            Ipv4Addr::UNSPECIFIED,
        );
        assert_eq!(
            parse(&d).unwrap().request,
            DhcpRequest::Discover {
                mac: MAC,
                requested: Some(IP)
            }
        );
        let r = client_msg(
            MessageType::Request,
            &[
                DhcpOption::RequestedIpAddress(IP),
                DhcpOption::ServerIdentifier(ROUTER),
            ],
            Ipv4Addr::UNSPECIFIED,
        );
        let ClientMessage {
            request: req,
            to: h,
            ..
        } = parse(&r).unwrap();
        assert_eq!(
            req,
            DhcpRequest::Request {
                mac: MAC,
                server_id: Some(ROUTER),
                requested: Some(IP),
                ciaddr: None
            }
        );
        assert_eq!(h.xid, 0x1234_5678);
        let rel = client_msg(MessageType::Release, &[], IP);
        assert_eq!(
            parse(&rel).unwrap().request,
            DhcpRequest::Release {
                mac: MAC,
                ciaddr: IP
            }
        );
        let dec = client_msg(
            MessageType::Decline,
            &[DhcpOption::RequestedIpAddress(IP)],
            Ipv4Addr::UNSPECIFIED,
        );
        assert_eq!(
            parse(&dec).unwrap().request,
            DhcpRequest::Decline {
                mac: MAC,
                requested: IP
            }
        );
        // INFORM is read (its sender is checked like any other), not served.
        assert_eq!(
            parse(&client_msg(MessageType::Inform, &[], IP))
                .unwrap()
                .request,
            DhcpRequest::Inform { mac: MAC }
        );
        // Not client messages: a release without an address, garbage.
        assert!(
            parse(&client_msg(
                MessageType::Release,
                &[],
                Ipv4Addr::UNSPECIFIED
            ))
            .is_none()
        );
        assert!(parse(&[0u8; 10]).is_none());
    }

    #[test]
    fn ack_carries_the_network_and_goes_to_the_right_place() {
        let p = Params {
            router: ROUTER,
            subnet: "192.168.250.0/24".parse().unwrap(),
        };
        let h = DhcpTransaction {
            xid: 7,
            flags: 0,
            chaddr: MAC,
            ciaddr: Ipv4Addr::UNSPECIFIED,
        };
        let (bytes, dest) = reply(
            &h,
            DhcpReply::Ack {
                ip: IP,
                lease: Duration::from_secs(300),
            },
            &p,
        );
        assert_eq!(dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
        let m = Message::from_bytes(&bytes).unwrap();
        assert_eq!(
            (m.opcode(), m.xid(), m.yiaddr()),
            (Opcode::BootReply, 7, IP)
        );
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert!(matches!(
            m.opts().get(OptionCode::AddressLeaseTime),
            Some(DhcpOption::AddressLeaseTime(300))
        ));
        assert!(
            matches!(m.opts().get(OptionCode::Router), Some(DhcpOption::Router(r)) if r == &vec![ROUTER])
        );
        assert!(
            matches!(m.opts().get(OptionCode::DomainNameServer), Some(DhcpOption::DomainNameServer(r)) if r == &vec![ROUTER])
        );
        assert!(
            matches!(m.opts().get(OptionCode::SubnetMask), Some(DhcpOption::SubnetMask(mask)) if *mask == Ipv4Addr::new(255, 255, 255, 0))
        );
        // A renewing client is answered at its own address; a NAK is always broadcast.
        let renew = DhcpTransaction { ciaddr: IP, ..h };
        assert_eq!(
            reply(
                &renew,
                DhcpReply::Ack {
                    ip: IP,
                    lease: Duration::from_secs(300)
                },
                &p
            )
            .1,
            SocketAddrV4::new(IP, 68)
        );
        let (nak, dest) = reply(&renew, DhcpReply::Nak, &p);
        assert_eq!(dest.ip(), &Ipv4Addr::BROADCAST);
        let m = Message::from_bytes(&nak).unwrap();
        assert_eq!(
            (m.yiaddr(), m.ciaddr()),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        );
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        /// A valid header and magic cookie followed by random options: exercises every
        /// option decoder with every length.
        #[test]
        fn never_panics_on_garbage_options(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut m = client_msg(MessageType::Discover, &[], Ipv4Addr::UNSPECIFIED);
            m.truncate(240);
            m.extend_from_slice(&tail);
            let _ = parse(&m);
        }

        /// Valid messages with random fields: parse never panics and keeps the MAC.
        #[test]
        fn mutated_requests(flip in 0usize..300, byte in any::<u8>()) {
            let mut r = client_msg(MessageType::Request, &[DhcpOption::RequestedIpAddress(IP)], Ipv4Addr::UNSPECIFIED);
            if flip < r.len() { r[flip] = byte; }
            if let Some(m) = parse(&r) {
                prop_assert_eq!(m.to.chaddr.0[0] & 1, 0);
            }
        }
    }

    /// Not a test: writes the fuzz target's seeds from these samples (`cargo test --lib
    /// fuzz_seeds -- --ignored`; see README.md, "Fuzzing").
    #[test]
    #[ignore]
    fn fuzz_seeds() {
        let discover = client_msg(
            MessageType::Discover,
            &[
                DhcpOption::RequestedIpAddress(IP),
                DhcpOption::ClientIdentifier(vec![1, 2, 0, 0, 0, 0, 1]),
            ],
            Ipv4Addr::UNSPECIFIED,
        );
        crate::fuzz_seed("dhcp", "discover", &discover);
        let request = client_msg(
            MessageType::Request,
            &[
                DhcpOption::RequestedIpAddress(IP),
                DhcpOption::ServerIdentifier(ROUTER),
            ],
            Ipv4Addr::UNSPECIFIED,
        );
        crate::fuzz_seed("dhcp", "request", &request);
        crate::fuzz_seed(
            "dhcp",
            "release",
            &client_msg(MessageType::Release, &[], IP),
        );
        // As the raw listener reads it: IPv4 and UDP headers (0.0.0.0:68 -> 255.255.255.255:67).
        let len = (28 + discover.len()) as u16;
        let mut frame = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
        ];
        frame[2..4].copy_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&[0, 68, 0, 67]);
        frame.extend_from_slice(&(len - 20).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&discover);
        crate::fuzz_seed("dhcp", "frame", &frame);
    }
}
