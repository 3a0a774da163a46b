//! Link and address announcements (`RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`): a port that
//! joins the provisioning bridge (netifd adding a Wi-Fi interface or a wired port, a bridge
//! recreated on a network restart) is noticed at once, so it is isolated before a client on
//! it can reach another; the bridge itself deleted and created again is followed (sockets,
//! device hooks), and so are the router's addresses (a new WAN address for the rebinding
//! guard).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::netlink::{Msgs, NetlinkError, io};

const RTMGRP_LINK: u32 = 1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;

/// What a read of the announcements saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Announced {
    /// A link appeared, changed or went.
    pub links: bool,
    /// An IPv4 address was added or removed.
    pub addresses: bool,
}

impl Announced {
    fn any(self) -> bool {
        self.links || self.addresses
    }
}

/// A non-blocking listener on the link and address announcements.
pub struct LinkMonitor {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl LinkMonitor {
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )
        .map_err(io)?;
        socket::bind(
            fd.as_raw_fd(),
            &NetlinkAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR),
        )
        .map_err(io)?;
        Ok(LinkMonitor {
            fd,
            buf: vec![0u8; 32 * 1024],
        })
    }

    /// Reads what is queued: which kinds of thing changed (both when announcements were
    /// lost, so anything may have). `WouldBlock` when nothing is queued.
    pub fn read(&mut self) -> std::io::Result<Announced> {
        let mut seen = Announced::default();
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(seen),
                Ok(n) => {
                    let a = announces(&self.buf[..n]);
                    seen.links |= a.links;
                    seen.addresses |= a.addresses;
                }
                Err(Errno::ENOBUFS) => {
                    seen = Announced {
                        links: true,
                        addresses: true,
                    }
                }
                Err(Errno::EAGAIN) if seen.any() => return Ok(seen),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What a datagram announces: links that appeared, changed or went, addresses added or
/// removed. Pure; never panics.
pub fn announces(datagram: &[u8]) -> Announced {
    let mut a = Announced::default();
    for m in Msgs::new(datagram).flatten() {
        match m.ty {
            RTM_NEWLINK | RTM_DELLINK => a.links = true,
            RTM_NEWADDR | RTM_DELADDR => a.addresses = true,
            _ => {}
        }
    }
    a
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}
