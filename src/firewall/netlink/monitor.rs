//! The ruleset monitor: a listener on the nf_tables multicast group, so that the daemon
//! hears at once when someone deletes its table.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt,
};

use super::table::{NFT_MSG_DELTABLE, NFTA_TABLE_NAME};
use super::{FAMILY_ARP, FAMILY_INET, FAMILY_NETDEV, NFNL_SUBSYS_NFTABLES};
use crate::netlink::*;

/// The nf_tables multicast group: every committed ruleset change is announced on it.
const NFNLGRP_NFTABLES: u32 = 7;

/// Whether a datagram from [`Monitor`] announces that `table` (inet or arp) was deleted. Pure, for
/// tests and fuzzing; never panics.
pub fn announces_deletion(datagram: &[u8], table: &str) -> bool {
    let want = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE;
    Msgs::new(datagram).flatten().any(|m| {
        m.ty == want
            && m.payload
                .first()
                .is_some_and(|f| [FAMILY_INET, FAMILY_ARP, FAMILY_NETDEV].contains(f))
            && nfgen_attrs(m.payload)
                .and_then(attr_table::<2>)
                .is_ok_and(|t| t[usize::from(NFTA_TABLE_NAME)].map(cstr) == Some(table.as_bytes()))
    })
}

/// A listener on the nf_tables multicast group, for noticing at once when someone (an
/// `fw4 flush`, a hand-typed `nft flush ruleset`) deletes our table. Non-blocking.
pub struct Monitor {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Monitor {
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(io)?;
        socket::bind(
            fd.as_raw_fd(),
            &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)),
        )
        .map_err(io)?;
        // Ruleset churn (every set update is announced) must not drown a deletion: a big
        // buffer, and an overflow counts as "something may have been deleted".
        let _ = socket::setsockopt(&fd, sockopt::RcvBufForce, &(1 << 20));
        Ok(Monitor {
            fd,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Reads what is queued; `Ok(true)` if `table` may have been deleted (a deletion was
    /// announced, or announcements were lost). `WouldBlock` when nothing is queued.
    pub fn read(&mut self, table: &str) -> std::io::Result<bool> {
        let mut deleted = false;
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(deleted),
                Ok(n) => deleted |= announces_deletion(&self.buf[..n], table),
                Err(Errno::ENOBUFS) => deleted = true,
                Err(Errno::EAGAIN) if deleted => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsRawFd for Monitor {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_announcements_are_recognised() {
        // nlmsghdr + nfgenmsg(inet) + NFTA_TABLE_NAME "provisioner\0"
        let msg = |ty: u16, family: u8, name: &str| {
            let mut attr = Vec::new();
            let value = [name.as_bytes(), &[0]].concat();
            attr.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            attr.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
            attr.extend_from_slice(&value);
            while attr.len() % 4 != 0 {
                attr.push(0);
            }
            let mut m = Vec::new();
            let len = (NLMSG_HDRLEN + 4 + attr.len()) as u32;
            m.extend_from_slice(&len.to_ne_bytes());
            m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | ty).to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(&[family, 0, 0, 0]);
            m.extend_from_slice(&attr);
            m
        };
        assert!(announces_deletion(
            &msg(NFT_MSG_DELTABLE, FAMILY_INET, "provisioner"),
            "provisioner"
        ));
        assert!(!announces_deletion(
            &msg(NFT_MSG_DELTABLE, FAMILY_INET, "fw4"),
            "provisioner"
        ));
        assert!(!announces_deletion(
            &msg(NFT_MSG_DELTABLE, 2, "provisioner"),
            "provisioner"
        ));
        assert!(!announces_deletion(
            &msg(0, FAMILY_INET, "provisioner"),
            "provisioner"
        ));
        let two = [
            msg(0, FAMILY_INET, "x"),
            msg(NFT_MSG_DELTABLE, FAMILY_INET, "provisioner"),
        ]
        .concat();
        assert!(announces_deletion(&two, "provisioner"));
        for cut in 0..two.len() {
            let _ = announces_deletion(&two[..cut], "provisioner");
        }
    }
}
