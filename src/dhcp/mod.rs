//! The DHCP edge: packets in and out of UDP port 67 on the provisioning interface, in
//! dhcproto's wire format. Every decision is the core's ([`crate::core::leases`]); this only
//! translates.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{FromRawFd, IntoRawFd};

use dhcproto::v4::{
    DhcpOption, DhcpOptions, Flags, HType, Message, MessageType, Opcode, OptionCode,
};
use dhcproto::{Decodable, Encodable};
use ipnet::Ipv4Net;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};

use crate::config::IfName;
use crate::core::MacAddr;
use crate::core::leases::{DhcpReply, DhcpRequest};

/// What a reply needs from the request besides the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: u32,
    pub flags: Flags,
    pub chaddr: MacAddr,
    pub ciaddr: Ipv4Addr,
}

/// Reads a client's message; `None` for anything that is not a client request we serve
/// (replies, relayed messages, non-Ethernet, INFORM, garbage).
pub fn parse(buf: &[u8]) -> Option<(DhcpRequest, RequestHeader)> {
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
    let req = match msg.opts().msg_type()? {
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
        _ => return None,
    };
    Some((
        req,
        RequestHeader {
            xid: msg.xid(),
            flags: msg.flags(),
            chaddr: mac,
            ciaddr: msg.ciaddr(),
        },
    ))
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
pub fn reply(h: &RequestHeader, reply: DhcpReply, p: &Params) -> (Vec<u8>, SocketAddrV4) {
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
    msg.set_opcode(Opcode::BootReply).set_flags(h.flags);
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

/// A UDP socket on port 67 that only sees the provisioning interface (SO_BINDTODEVICE),
/// so another DHCP server on the router's other interfaces is not disturbed. `addr` is the
/// wildcard (broadcasts from clients without an address) or the router's address (unicast
/// renewals: a socket bound to the address gets them even when something else, such as
/// hostapd's wired driver, also listens on the wildcard).
pub fn socket(interface: &IfName, addr: Ipv4Addr) -> std::io::Result<tokio::net::UdpSocket> {
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
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(addr, 67)),
    )?;
    // SAFETY: the fd is a freshly created, owned, non-blocking UDP socket.
    let std = unsafe { std::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) };
    tokio::net::UdpSocket::from_std(std)
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
            parse(&d).unwrap().0,
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
        let (req, h) = parse(&r).unwrap();
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
            parse(&rel).unwrap().0,
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
            parse(&dec).unwrap().0,
            DhcpRequest::Decline {
                mac: MAC,
                requested: IP
            }
        );
        // Not served: INFORM, a release without an address, server messages.
        assert!(parse(&client_msg(MessageType::Inform, &[], IP)).is_none());
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
        let h = RequestHeader {
            xid: 7,
            flags: Flags::default(),
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
        let renew = RequestHeader { ciaddr: IP, ..h };
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
            if let Some((_, h)) = parse(&r) {
                prop_assert_eq!(h.chaddr.0[0] & 1, 0);
            }
        }
    }
}
