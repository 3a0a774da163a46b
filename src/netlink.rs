//! Netlink framing shared by the daemon's netlink clients (nf_tables sets and read-back,
//! ctnetlink, nfnetlink_log in `firewall`; links and neighbours in `net`): message and
//! attribute encoding, bounds-checked decoding that never panics, acks and errors, and the
//! `nfgenmsg` header every `NETLINK_NETFILTER` subsystem shares.
//!
//! Wire format (`linux/netlink.h`): every message is a `struct nlmsghdr` (native endian)
//! followed by a family header (`nfgenmsg`, `ifinfomsg`, `ndmsg`, ...) and attributes
//! (`struct nlattr`: native-endian length and type, payload padded to 4 bytes).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{self, GetSockOpt, SetSockOpt};

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
/// In an `NLMSG_ERROR`: the original message was not echoed (`NETLINK_CAP_ACK`).
pub(crate) const NLM_F_CAPPED: u16 = 0x100;
/// In an `NLMSG_ERROR`: extended-ack TLVs follow.
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;

pub(crate) const NLA_HDRLEN: usize = 4;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
pub(crate) const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

pub(crate) const SOL_NETLINK: libc::c_int = 270;
pub(crate) const NETLINK_CAP_ACK: libc::c_int = 10;
pub(crate) const NETLINK_EXT_ACK: libc::c_int = 11;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused a request. `op` names the message that failed; `message` is the
    /// kernel's extended-ack text, if it gave one.
    #[error("{op}: {}", kernel_text(*errno, message.as_deref()))]
    Kernel {
        errno: i32,
        op: &'static str,
        message: Option<String>,
    },
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
    /// The caller passed something the kernel cannot be asked (caught before sending).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The socket's receive queue overflowed and replies were lost. The outcome of the
    /// request is unknown: read the state back before relying on it.
    #[error(
        "netlink receive buffer overrun (ENOBUFS): replies were lost, outcome of the request unknown"
    )]
    Overrun,
    #[error("batch of {len} bytes exceeds the socket send buffer limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("no reply from the kernel within {0:?}")]
    Timeout(Duration),
    #[error("dump kept changing under ruleset changes or a set resizing ({0} attempts)")]
    DumpInterrupted(u32),
}

impl NetlinkError {
    /// The kernel's errno, for [`NetlinkError::Kernel`].
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// "ENOENT: no such table/set/element", with the nf_tables meaning where it is not obvious.
pub(crate) fn kernel_text(errno: i32, message: Option<&str>) -> String {
    let e = Errno::from_raw(errno);
    let meaning = match e {
        Errno::ENOENT => "no such table/set/element",
        Errno::EEXIST => "already exists",
        Errno::EBUSY => "busy (object in use, or element exists with different data)",
        Errno::EINVAL => "invalid argument (e.g. key length does not match the set)",
        Errno::EPERM => "operation not permitted (CAP_NET_ADMIN needed)",
        Errno::ENOSPC => "set is full",
        Errno::ERANGE => "value out of range (e.g. timeout too large)",
        Errno::EOPNOTSUPP => "operation not supported by this set/kernel",
        _ => e.desc(),
    };
    let mut s = if e == Errno::UnknownErrno {
        format!("errno {errno}: {meaning}")
    } else {
        format!("{e:?}: {meaning}")
    };
    if let Some(m) = message {
        s.push_str(" (kernel: ");
        s.push_str(m);
        s.push(')');
    }
    s
}

pub(crate) fn io(e: Errno) -> NetlinkError {
    NetlinkError::Io(e.into())
}

pub(crate) fn set_netlink_opt(fd: &OwnedFd, opt: libc::c_int) -> Result<(), NetlinkError> {
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_NETLINK,
            opt,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop).map_err(io)
}

/// Raises a socket buffer to at least `bytes` (the kernel doubles what it is given). The
/// `*Force` variant ignores `net.core.[rw]mem_max` but needs CAP_NET_ADMIN, which the daemon
/// has anyway; without it the capped plain option is tried. Returns the new size.
pub(crate) fn grow_buf<F, P>(
    fd: &OwnedFd,
    force: F,
    plain: P,
    bytes: usize,
) -> Result<usize, NetlinkError>
where
    F: SetSockOpt<Val = usize>,
    P: SetSockOpt<Val = usize> + GetSockOpt<Val = usize> + Copy,
{
    // Headroom (next power of two) so slowly growing batches do not resize every time.
    let half = (bytes.next_power_of_two() / 2).min(i32::MAX as usize / 2);
    if socket::setsockopt(fd, force, &half).is_err() {
        let _ = socket::setsockopt(fd, plain, &half);
    }
    socket::getsockopt(fd, plain).map_err(io)
}

// --- encoding ---

/// Netlink alignment. Saturating: lengths read from the socket may be absurd.
pub(crate) const fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

pub(crate) fn pad4(buf: &mut Vec<u8>) {
    buf.resize(align4(buf.len()), 0);
}

pub(crate) fn end_msg(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

pub(crate) fn put_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    // Callers keep payloads far below 64 KiB (names <= 255, keys <= 64 bytes).
    buf.extend_from_slice(&((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    pad4(buf);
}

/// A NUL-terminated string attribute (`NLA_STRING` as nftables sends it).
pub(crate) fn put_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    buf.extend_from_slice(&((NLA_HDRLEN + s.len() + 1) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
    pad4(buf);
}

pub(crate) fn begin_nest(buf: &mut Vec<u8>, ty: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes()); // length, patched by end_nest
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    start
}

pub(crate) fn end_nest(buf: &mut [u8], start: usize) {
    let len = buf.len() - start;
    debug_assert!(
        len <= u16::MAX as usize,
        "nest overflow is prevented by the encoder"
    );
    buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
}

// --- decoding: pure, bounds-checked, never panics ---

/// One netlink message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
}

pub(crate) fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of a datagram. Yields one `Err` and stops at the first bad header.
pub(crate) struct Msgs<'a> {
    rest: &'a [u8],
}

impl<'a> Msgs<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Msgs { rest: buf }
    }
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Result<Msg<'a>, NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.rest);
        let len = ne_u32(buf, 0).map_or(0, |l| l as usize);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Some(Err(NetlinkError::Malformed("bad netlink message length")));
        }
        let msg = Msg {
            ty: ne_u16(buf, 4)?,
            flags: ne_u16(buf, 6)?,
            seq: ne_u32(buf, 8)?,
            payload: &buf[NLMSG_HDRLEN..len],
        };
        self.rest = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(msg))
    }
}

/// The attributes in a buffer, as (type without flag bits, payload). Yields one `Err` and
/// stops at the first bad header.
pub(crate) struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Attrs { rest: buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.rest);
        let len = ne_u16(buf, 0).map_or(0, usize::from);
        if len < NLA_HDRLEN || len > buf.len() {
            return Some(Err(NetlinkError::Malformed("bad attribute length")));
        }
        let ty = ne_u16(buf, 2)? & NLA_TYPE_MASK;
        self.rest = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok((ty, &buf[NLA_HDRLEN..len])))
    }
}

/// Attributes indexed by type (last one wins; unknown types ignored).
pub(crate) fn attr_table<const N: usize>(buf: &[u8]) -> Result<[Option<&[u8]>; N], NetlinkError> {
    let mut t = [None; N];
    for a in Attrs::new(buf) {
        let (ty, payload) = a?;
        if let Some(slot) = t.get_mut(usize::from(ty)) {
            *slot = Some(payload);
        }
    }
    Ok(t)
}

pub(crate) fn be_u32(p: &[u8]) -> Result<u32, NetlinkError> {
    p.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| NetlinkError::Malformed("u32 attribute of wrong size"))
}

pub(crate) fn be_u64(p: &[u8]) -> Result<u64, NetlinkError> {
    p.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| NetlinkError::Malformed("u64 attribute of wrong size"))
}

/// A string attribute's bytes, up to the first NUL.
pub(crate) fn cstr(p: &[u8]) -> &[u8] {
    p.split(|&b| b == 0).next().unwrap_or(p)
}

pub(crate) fn string(p: &[u8]) -> String {
    String::from_utf8_lossy(cstr(p)).into_owned()
}

/// An `NLMSG_ERROR` message: (errno, 0 for an ack; extended-ack message, if any).
pub(crate) fn parse_ack(msg: &Msg<'_>) -> Result<(i32, Option<String>), NetlinkError> {
    let p = msg.payload;
    let error = ne_u32(p, 0).ok_or(NetlinkError::Malformed("short NLMSG_ERROR"))? as i32;
    // Then the header of our request, and its payload too unless the kernel capped it.
    let mut tlv_at = 4 + NLMSG_HDRLEN;
    if msg.flags & NLM_F_CAPPED == 0 {
        let orig_len = ne_u32(p, 4).ok_or(NetlinkError::Malformed("short NLMSG_ERROR"))?;
        tlv_at = align4((orig_len as usize).max(NLMSG_HDRLEN)).saturating_add(4);
    }
    let mut message = None;
    let tlvs = match msg.flags & NLM_F_ACK_TLVS {
        0 => &[][..],
        _ => p.get(tlv_at..).unwrap_or_default(),
    };
    for a in Attrs::new(tlvs) {
        let (ty, payload) = a?;
        if ty == NLMSGERR_ATTR_MSG {
            message = Some(string(payload));
        }
    }
    Ok((error.wrapping_neg(), message))
}

/// Appends an `nlmsghdr` (its length patched by [`end_msg`]); returns its offset.
pub(crate) fn begin_header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_msg
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills in ours
    start
}

// --- nfnetlink: the header of every NETLINK_NETFILTER subsystem (nf_tables, ctnetlink, nflog) ---

/// `NFNETLINK_V0`, the only version of `struct nfgenmsg`.
pub(crate) const NFNETLINK_V0: u8 = 0;

/// Appends an `nlmsghdr` + `nfgenmsg` (family, version, big-endian `res_id`); returns the
/// offset to pass to [`end_msg`].
pub(crate) fn begin_nfmsg(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let start = begin_header(buf, ty, flags, seq);
    buf.extend_from_slice(&[family, NFNETLINK_V0]);
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

/// The attributes of an nfnetlink message (after its `nfgenmsg`).
pub(crate) fn nfgen_attrs(payload: &[u8]) -> Result<&[u8], NetlinkError> {
    payload
        .get(4..)
        .ok_or(NetlinkError::Malformed("message shorter than nfgenmsg"))
}

/// An `NLMSG_ERROR` as the kernel sends it, for tests: `error` (0 or -errno) for a request
/// with seq 7, echoing `echo_payload` after the request's header, with an extended-ack
/// message if given.
#[cfg(test)]
pub(crate) fn error_msg(
    flags: u16,
    error: i32,
    echo_payload: &[u8],
    ext_msg: Option<&str>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let start = begin_header(&mut buf, NLMSG_ERROR, flags, 7);
    buf.extend_from_slice(&error.to_ne_bytes());
    // The echoed header (an nf_tables DELSETELEM): no nfgenmsg unless echoed.
    let orig = begin_header(&mut buf, (10 << 8) | 14, 5, 7);
    buf.extend_from_slice(echo_payload);
    end_msg(&mut buf, orig);
    pad4(&mut buf);
    if let Some(m) = ext_msg {
        put_str(&mut buf, NLMSGERR_ATTR_MSG, m);
        put_attr(&mut buf, 2, &40u32.to_ne_bytes()); // NLMSGERR_ATTR_OFFS
    }
    end_msg(&mut buf, start);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(buf: &[u8]) -> Vec<Msg<'_>> {
        Msgs::new(buf).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn kernel_errors_read_well() {
        let e = NetlinkError::Kernel {
            errno: libc::ENOENT,
            op: "delete set element",
            message: None,
        };
        assert_eq!(
            e.to_string(),
            "delete set element: ENOENT: no such table/set/element"
        );
        let e = NetlinkError::Kernel {
            errno: libc::EINVAL,
            op: "add set element",
            message: Some("bad key".into()),
        };
        assert!(e.to_string().ends_with("(kernel: bad key)"), "{e}");
        assert_eq!(e.errno(), Some(libc::EINVAL));
        let e = NetlinkError::Kernel {
            errno: 4242,
            op: "x",
            message: None,
        };
        assert!(e.to_string().starts_with("x: errno 4242"), "{e}");
    }

    #[test]
    fn acks_and_errors_decode() {
        let ack = error_msg(NLM_F_CAPPED, 0, &[], None);
        let m = msgs(&ack);
        assert_eq!(parse_ack(&m[0]).unwrap(), (0, None));

        let err = error_msg(
            NLM_F_CAPPED | NLM_F_ACK_TLVS,
            -libc::ENOENT,
            &[],
            Some("no such set"),
        );
        let m = msgs(&err);
        assert_eq!(m[0].seq, 7);
        let want = (libc::ENOENT, Some("no such set".to_string()));
        assert_eq!(parse_ack(&m[0]).unwrap(), want);

        // Without NETLINK_CAP_ACK the request is echoed before the TLVs.
        let err = error_msg(
            NLM_F_ACK_TLVS,
            -libc::EINVAL,
            &[1, 0, 0, 0, 9, 9, 9],
            Some("why"),
        );
        let m = msgs(&err);
        assert_eq!(
            parse_ack(&m[0]).unwrap(),
            (libc::EINVAL, Some("why".to_string()))
        );
    }

    #[test]
    fn truncated_headers_are_errors_not_panics() {
        let mut buf = Vec::new();
        let s = begin_nfmsg(&mut buf, (10 << 8) | 12, 2, 9, 1, 0);
        put_str(&mut buf, 1, "provisioner");
        end_msg(&mut buf, s);
        // Cutting inside the first message breaks its length: one error, then the end.
        let mut it = Msgs::new(&buf[..20]);
        assert!(matches!(it.next(), Some(Err(NetlinkError::Malformed(_)))));
        assert!(it.next().is_none());
        let mut it = Attrs::new(&[8, 0, 1, 0, 1]);
        assert!(matches!(it.next(), Some(Err(NetlinkError::Malformed(_)))));
        assert!(it.next().is_none());
        assert!(matches!(
            be_u32(&[1, 2, 3]),
            Err(NetlinkError::Malformed(_))
        ));
        assert!(nfgen_attrs(&[1, 0, 0]).is_err());
        assert_eq!(nfgen_attrs(&buf[NLMSG_HDRLEN..]).unwrap(), &buf[20..]);
    }
}
