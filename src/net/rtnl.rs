//! One blocking `NETLINK_ROUTE` socket: requests acknowledged one by one, and dumps. Every
//! reply is produced synchronously by the kernel, so calls take microseconds.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use crate::netlink::*;

/// Safety net: the kernel answers at once, so waiting this long means a bug.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
    pub(super) buf: Vec<u8>,
    recv: Vec<u8>,
}

impl Rtnl {
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(io)?;
        // Connected to the kernel: nothing but its replies reaches this socket.
        socket::connect(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(io)?;
        set_netlink_opt(&fd, NETLINK_CAP_ACK)?;
        let _ = set_netlink_opt(&fd, NETLINK_EXT_ACK);
        let tv = TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv).map_err(io)?;
        Ok(Rtnl {
            fd,
            seq: 1,
            buf: Vec::with_capacity(256),
            recv: vec![0; 32 * 1024],
        })
    }

    /// Starts a request in the buffer: the `nlmsghdr` (the caller appends the family header
    /// and attributes, then calls [`Rtnl::ack`] or [`Rtnl::dump`]). Returns its offset.
    pub(super) fn begin(&mut self, ty: u16, flags: u16) -> usize {
        self.buf.clear();
        self.seq = self.seq.wrapping_add(1);
        begin_header(&mut self.buf, ty, NLM_F_REQUEST | flags, self.seq)
    }

    /// Sends the request (begun with `NLM_F_ACK`) and waits for its ack.
    pub(super) fn ack(&mut self, start: usize, op: &'static str) -> Result<(), NetlinkError> {
        end_msg(&mut self.buf, start);
        self.send()?;
        loop {
            let len = self.recv()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                if msg.seq != self.seq || msg.ty != NLMSG_ERROR {
                    continue;
                }
                return match parse_ack(&msg)? {
                    (0, _) => Ok(()),
                    (errno, message) => Err(NetlinkError::Kernel { errno, op, message }),
                };
            }
        }
    }

    /// Sends a (non-dump) get request and feeds its one reply's type and payload to `f`.
    pub(super) fn get(
        &mut self,
        start: usize,
        op: &'static str,
        mut f: impl FnMut(u16, &[u8]),
    ) -> Result<(), NetlinkError> {
        end_msg(&mut self.buf, start);
        self.send()?;
        loop {
            let len = self.recv()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                if msg.seq != self.seq {
                    continue;
                }
                if msg.ty == NLMSG_ERROR {
                    return match parse_ack(&msg)? {
                        (0, _) => Ok(()),
                        (errno, message) => Err(NetlinkError::Kernel { errno, op, message }),
                    };
                }
                f(msg.ty, msg.payload);
                return Ok(());
            }
        }
    }

    /// Sends the dump request and feeds each reply message's type and payload to `f`.
    pub(super) fn dump(
        &mut self,
        start: usize,
        op: &'static str,
        mut f: impl FnMut(u16, &[u8]) -> Result<(), NetlinkError>,
    ) -> Result<(), NetlinkError> {
        end_msg(&mut self.buf, start);
        self.send()?;
        loop {
            let len = self.recv()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                if msg.seq != self.seq {
                    continue;
                }
                match msg.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => match parse_ack(&msg)? {
                        (0, _) => {}
                        (errno, message) => {
                            return Err(NetlinkError::Kernel { errno, op, message });
                        }
                    },
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => return Err(NetlinkError::Overrun),
                    ty => f(ty, msg.payload)?,
                }
            }
        }
    }

    fn send(&mut self) -> Result<(), NetlinkError> {
        loop {
            match socket::send(self.fd.as_raw_fd(), &self.buf, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io(e)),
            }
        }
    }

    fn recv(&mut self) -> Result<usize, NetlinkError> {
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut self.recv, MsgFlags::MSG_TRUNC) {
                Ok(n) if n > self.recv.len() => {
                    return Err(NetlinkError::Malformed("reply larger than the buffer"));
                }
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => return Err(NetlinkError::Overrun),
                Err(Errno::EAGAIN) => return Err(NetlinkError::Timeout(RECV_TIMEOUT)),
                Err(e) => return Err(io(e)),
            }
        }
    }
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

/// `struct ifinfomsg`: family, pad, type, index, flags, change.
pub(super) fn put_ifinfomsg(buf: &mut Vec<u8>, family: u8, index: i32) {
    buf.extend_from_slice(&[family, 0, 0, 0]);
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

pub(super) const IFINFOMSG_LEN: usize = 16;

/// The index of an `ifinfomsg` (or `ndmsg`, where it sits at offset 4 too).
pub(super) fn msg_index(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?))
}

/// An interface's index by name, `None` if there is no such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}
