//! Link announcements (`RTNLGRP_LINK`): a port that joins the provisioning bridge (netifd
//! adding a Wi-Fi interface or a wired port, a bridge recreated on a network restart) is
//! noticed at once, so it is isolated before a client on it can reach another.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::netlink::{Msgs, NetlinkError, io};

const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;

/// A non-blocking listener on the link announcements.
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
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, RTMGRP_LINK)).map_err(io)?;
        Ok(LinkMonitor {
            fd,
            buf: vec![0u8; 32 * 1024],
        })
    }

    /// Reads what is queued; `Ok(true)` if a link appeared or changed (or announcements were
    /// lost, so something may have). `WouldBlock` when nothing is queued.
    pub fn read(&mut self) -> std::io::Result<bool> {
        let mut changed = false;
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(changed),
                Ok(n) => changed |= announces_new_link(&self.buf[..n]),
                Err(Errno::ENOBUFS) => changed = true,
                Err(Errno::EAGAIN) if changed => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether a datagram announces a new or changed link. Pure; never panics.
pub fn announces_new_link(datagram: &[u8]) -> bool {
    Msgs::new(datagram).flatten().any(|m| m.ty == RTM_NEWLINK)
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}
