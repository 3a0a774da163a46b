//! A small, hand-rolled nfnetlink client for the one thing the daemon does with nftables at
//! run time: change set elements of its own table and read the table back.
//!
//! The ruleset itself is installed with `nft -f -`; everything here goes over ONE long-lived
//! `NETLINK_NETFILTER` socket, so the DNS hot path never forks a process.
//!
//! Wire format, in brief (see `linux/netlink.h`, `linux/netfilter/nfnetlink.h` and
//! `linux/netfilter/nf_tables.h`):
//!
//! * every message is a `struct nlmsghdr` (native endian) followed by a `struct nfgenmsg`
//!   (family, version, big-endian `res_id`) and a list of attributes (`struct nlattr`: native
//!   endian length and type, payload padded to 4 bytes). nftables *values* are big endian.
//! * changes travel in a batch: `NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END`.
//!   The kernel runs the whole batch as one transaction. It parses a batch out of a single
//!   `sendmsg()` (one skb), so a batch can NOT be split over several sends: we raise
//!   `SO_SNDBUF` instead. All acks are queued on our socket before `sendmsg()` even
//!   returns, so `SO_RCVBUF` is raised to hold them, or the kernel drops them (`ENOBUFS`).
//! * the kernel keeps processing a batch after an error so that it can report every error;
//!   it then aborts the whole transaction. With `NLM_F_ACK` on every message we get exactly
//!   one ack (error 0 or `-errno`) per message; failures of the batch as a whole (commit
//!   errors, `EPERM`) are reported against the `BATCH_BEGIN` sequence number, before the
//!   per-message acks.
//! * a batch cut in two `sendmsg()` calls is NOT rejected as a whole: the first part is acked
//!   message by message and then silently aborted (no `BATCH_END` seen), and the lone end
//!   gets `EINVAL`. Another reason to always send a batch in one piece.
//!
//! Decoding is bounds-checked everywhere: the parsers are pure functions over `&[u8]` that
//! return [`NetlinkError::Malformed`] instead of panicking, whatever the kernel sends.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt,
};
use nix::sys::time::TimeVal;

pub use crate::netlink::NetlinkError;
use crate::netlink::*;

/// `NFPROTO_INET`: the only family the daemon uses.
pub const FAMILY_INET: u8 = 1;
/// `NFPROTO_ARP`: the ARP table (the router's own ARP input).
pub const FAMILY_ARP: u8 = 3;

/// Netfilter hook numbers as reported in [`ChainInfo::hook`] (`enum nf_inet_hooks`).
pub const HOOK_PREROUTING: u32 = 0;
pub const HOOK_INPUT: u32 = 1;
pub const HOOK_FORWARD: u32 = 2;
pub const HOOK_OUTPUT: u32 = 3;
pub const HOOK_POSTROUTING: u32 = 4;
pub const HOOK_INGRESS: u32 = 5;

/// Base chain policies as reported in [`ChainInfo::policy`] (`NF_DROP`, `NF_ACCEPT`).
pub const POLICY_DROP: u32 = 0;
pub const POLICY_ACCEPT: u32 = 1;

/// Set flags as reported in [`SetInfo::flags`] (`enum nft_set_flags`).
pub const SET_F_ANONYMOUS: u32 = 0x1;
pub const SET_F_CONSTANT: u32 = 0x2;
pub const SET_F_INTERVAL: u32 = 0x4;
pub const SET_F_MAP: u32 = 0x8;
pub const SET_F_TIMEOUT: u32 = 0x10;
pub const SET_F_EVAL: u32 = 0x20;
pub const SET_F_CONCAT: u32 = 0x80;

/// Longest key the kernel accepts (`NFT_DATA_VALUE_MAXLEN`).
pub const MAX_KEY_LEN: usize = 64;
/// Longest table/set name, without the NUL (`NFT_NAME_MAXLEN` - 1).
pub const MAX_NAME_LEN: usize = 255;

// --- uapi constants, kept local so this file reads side by side with the kernel headers ---

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_ZONE: u16 = 18;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// libnftnl's user-data TLV type for an element comment (what `nft list` shows as
/// `comment "..."`), stored NUL-terminated.
const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;
/// nft refuses longer comments.
pub const MAX_COMMENT_LEN: usize = 128;
const NFTA_DATA_VALUE: u16 = 1;

/// nfnetlink message type of an nf_tables command.
const fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

// --- tuning ---

/// Large enough for any single datagram: the kernel caps dump chunks at about 32 KiB, and acks
/// are small because `NETLINK_CAP_ACK` stops it from echoing our requests.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Estimated kernel memory charged per queued ack (skb truesize); used to size `SO_RCVBUF`.
const ACK_TRUESIZE: usize = 1024;
/// `netlink_sendmsg()` rejects a datagram longer than `sk_sndbuf - 32` with `EMSGSIZE`.
const SNDBUF_SLACK: usize = 32;
/// Safety net: every reply is produced synchronously, so waiting this long means a bug.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// A dump racing with ruleset changes is flagged `NLM_F_DUMP_INTR`; retry this often.
const DUMP_ATTEMPTS: u32 = 3;

/// One set-element change. Keys are the raw nft key bytes (concatenations already padded by
/// the caller: each field rounded up to 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp<'a> {
    /// Adds the element; an existing element is not an error (no `NLM_F_EXCL`). The
    /// comment (cut to [`MAX_COMMENT_LEN`] bytes) is what `nft list` shows with it.
    Add {
        set: &'a str,
        key: &'a [u8],
        timeout: Option<Duration>,
        comment: Option<&'a str>,
    },
    /// Deletes the element; a missing element fails the whole batch with `ENOENT`.
    Delete { set: &'a str, key: &'a [u8] },
}

impl<'a> SetOp<'a> {
    pub fn set(&self) -> &'a str {
        match *self {
            SetOp::Add { set, .. } | SetOp::Delete { set, .. } => set,
        }
    }

    fn key(&self) -> &'a [u8] {
        match *self {
            SetOp::Add { key, .. } | SetOp::Delete { key, .. } => key,
        }
    }

    fn is_add(&self) -> bool {
        matches!(self, SetOp::Add { .. })
    }

    /// Encoded size of this op's `NFTA_LIST_ELEM` nest.
    fn elem_len(&self) -> usize {
        let key = NLA_HDRLEN + NLA_HDRLEN + align4(self.key().len());
        let timeout = match self {
            SetOp::Add {
                timeout: Some(_), ..
            } => NLA_HDRLEN + 8,
            _ => 0,
        };
        let comment = match self {
            SetOp::Add {
                comment: Some(c), ..
            } => NLA_HDRLEN + align4(2 + comment_bytes(c).len() + 1),
            _ => 0,
        };
        NLA_HDRLEN + key + timeout + comment
    }
}

/// A set element as dumped by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    pub key: Vec<u8>,
    /// The element's own timeout. The kernel omits it when it equals the set's default
    /// timeout (our sets have none).
    pub timeout: Option<Duration>,
    /// Time left until the element expires.
    pub expires: Option<Duration>,
    /// The element's comment, if it has one.
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub name: String,
    /// `HOOK_*`; `None` for a regular (non-base) chain.
    pub hook: Option<u32>,
    pub priority: Option<i32>,
    /// `POLICY_*`; base chains only.
    pub policy: Option<u32>,
    pub rules: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    pub name: String,
    pub key_len: u32,
    /// `SET_F_*`. Anonymous sets created by rules (`SET_F_ANONYMOUS`) are listed too.
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub chains: Vec<ChainInfo>,
    pub sets: Vec<SetInfo>,
}

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
                .is_some_and(|f| *f == FAMILY_INET || *f == FAMILY_ARP)
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

/// A `NETLINK_NETFILTER` socket plus reusable buffers. Blocking, but every reply is produced
/// synchronously by the kernel, so calls take microseconds to milliseconds.
pub struct Netlink {
    fd: OwnedFd,
    /// Next sequence number to use.
    seq: u32,
    send: Vec<u8>,
    recv: Vec<u8>,
    /// Op name of each data message of the batch being sent (index = seq - begin - 1).
    batch_ops: Vec<&'static str>,
    /// Current `sk_sndbuf` / `sk_rcvbuf` as the kernel reports them.
    sndbuf: usize,
    rcvbuf: usize,
    /// An earlier request was abandoned with replies possibly still queued.
    dirty: bool,
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(io)?;
        // Connecting to the kernel (port 0) makes the kernel refuse unicasts to us from any
        // other socket, so every datagram we read is a kernel reply.
        socket::connect(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(io)?;
        // CAP_ACK: error acks carry only our header, not our whole (possibly 64 KiB) message.
        set_netlink_opt(&fd, NETLINK_CAP_ACK)?;
        // EXT_ACK: error acks carry the kernel's explanation. Best effort (Linux >= 4.12).
        let _ = set_netlink_opt(&fd, NETLINK_EXT_ACK);
        let tv = TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(io)?;
        let sndbuf = socket::getsockopt(&fd, sockopt::SndBuf).map_err(io)?;
        let rcvbuf = socket::getsockopt(&fd, sockopt::RcvBuf).map_err(io)?;
        Ok(Netlink {
            fd,
            seq: 1,
            send: Vec::with_capacity(4096),
            recv: vec![0; RECV_BUF_LEN],
            batch_ops: Vec::new(),
            sndbuf,
            rcvbuf,
            dirty: false,
        })
    }

    /// All ops in ONE batch (`NFNL_MSG_BATCH_BEGIN` .. `NFNL_MSG_BATCH_END`), every message
    /// with `NLM_F_ACK`; waits for every ack. The kernel applies the batch atomically: on any
    /// error nothing is applied and the first error is returned. Empty slice = no syscall.
    ///
    /// Runs of consecutive ops of the same kind on the same set share one message; the kernel
    /// handles the elements of a message in order, so this keeps the exact op order.
    pub fn apply(&mut self, table: &str, ops: &[SetOp]) -> Result<(), NetlinkError> {
        self.apply_families(table, &[(FAMILY_INET, ops)])
    }

    /// Like [`Netlink::apply`], for the tables named `table` of several families (`inet`,
    /// `arp`) in ONE batch: one transaction, so the tables never disagree.
    pub fn apply_families(
        &mut self,
        table: &str,
        groups: &[(u8, &[SetOp])],
    ) -> Result<(), NetlinkError> {
        if groups.iter().all(|(_, ops)| ops.is_empty()) {
            return Ok(());
        }
        for (_, ops) in groups {
            validate_ops(table, ops)?;
        }
        let mut batch = BatchWriter::new(&mut self.send, &mut self.batch_ops, self.seq);
        for &(family, ops) in groups {
            encode_set_ops(&mut batch, family, table, ops);
        }
        let (begin, used) = batch.finish();
        self.seq = self.seq.wrapping_add(used);
        self.transact(begin)
    }

    /// Dump a set's elements (`NFT_MSG_GETSETELEM` with `NLM_F_DUMP`), including timeout and
    /// remaining expiration. A missing table or set gives `Kernel { errno: ENOENT, .. }`.
    pub fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Vec<SetElement>, NetlinkError> {
        check_name(table)?;
        check_name(set)?;
        let mut out = Vec::new();
        for _ in 0..DUMP_ATTEMPTS {
            out.clear();
            let seq = self.request(FAMILY_INET, NFT_MSG_GETSETELEM, NLM_F_DUMP, |buf| {
                put_str(buf, NFTA_SET_ELEM_LIST_TABLE, table);
                put_str(buf, NFTA_SET_ELEM_LIST_SET, set);
            });
            let intr = self.dump(seq, "list set elements", |msg| {
                if msg.ty == nft_type(NFT_MSG_NEWSETELEM) {
                    parse_setelem_msg(msg.payload, &mut out)?;
                }
                Ok(())
            })?;
            if !intr {
                return Ok(out);
            }
        }
        Err(NetlinkError::DumpInterrupted(DUMP_ATTEMPTS))
    }

    /// Read back the table: its chains (hook, priority, policy, number of rules, via GETCHAIN
    /// and GETRULE dumps filtered to the table) and sets. `Ok(None)` if the table does not
    /// exist.
    pub fn describe_table(
        &mut self,
        family: u8,
        table: &str,
    ) -> Result<Option<TableInfo>, NetlinkError> {
        check_name(table)?;
        let tname = table.as_bytes();
        'attempt: for _ in 0..DUMP_ATTEMPTS {
            if !self.table_exists(family, table)? {
                return Ok(None);
            }

            let mut chains: Vec<ChainInfo> = Vec::new();
            // The kernel ignores a table filter on chain dumps: it lists every inet chain.
            let seq = self.request(family, NFT_MSG_GETCHAIN, NLM_F_DUMP, |buf| {
                put_str(buf, NFTA_CHAIN_TABLE, table)
            });
            let intr = self.dump(seq, "list chains", |msg| {
                if msg.ty == nft_type(NFT_MSG_NEWCHAIN) {
                    chains.extend(parse_chain(msg.payload, tname)?);
                }
                Ok(())
            })?;
            if intr {
                continue 'attempt;
            }

            let seq = self.request(family, NFT_MSG_GETRULE, NLM_F_DUMP, |buf| {
                put_str(buf, NFTA_RULE_TABLE, table)
            });
            let intr = self.dump(seq, "list rules", |msg| {
                if msg.ty != nft_type(NFT_MSG_NEWRULE) {
                    return Ok(());
                }
                if let Some(chain) = parse_rule_chain(msg.payload, tname)? {
                    // A rule of a chain created after the chain dump is not counted.
                    if let Some(c) = chains.iter_mut().find(|c| c.name.as_bytes() == chain) {
                        c.rules += 1;
                    }
                }
                Ok(())
            })?;
            if intr {
                continue 'attempt;
            }

            let mut sets = Vec::new();
            let seq = self.request(family, NFT_MSG_GETSET, NLM_F_DUMP, |buf| {
                put_str(buf, NFTA_SET_TABLE, table)
            });
            let res = self.dump(seq, "list sets", |msg| {
                if msg.ty == nft_type(NFT_MSG_NEWSET) {
                    sets.extend(parse_set(msg.payload, tname)?);
                }
                Ok(())
            });
            match res {
                Ok(false) => return Ok(Some(TableInfo { chains, sets })),
                Ok(true) => continue 'attempt,
                // The table went away between the dumps.
                Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(NetlinkError::DumpInterrupted(DUMP_ATTEMPTS))
    }

    /// Delete the table (and everything in it) in one batch. `Ok(false)` if it did not exist.
    pub fn delete_table(&mut self, family: u8, table: &str) -> Result<bool, NetlinkError> {
        check_name(table)?;
        let mut batch = BatchWriter::new(&mut self.send, &mut self.batch_ops, self.seq);
        let start = batch.msg(family, NFT_MSG_DELTABLE, 0, "delete table");
        put_str(batch.buf, NFTA_TABLE_NAME, table);
        end_msg(batch.buf, start);
        let (begin, used) = batch.finish();
        self.seq = self.seq.wrapping_add(used);
        match self.transact(begin) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `NFT_MSG_GETTABLE` for one table: a single reply, or `ENOENT`.
    fn table_exists(&mut self, family: u8, table: &str) -> Result<bool, NetlinkError> {
        let seq = self.request(family, NFT_MSG_GETTABLE, 0, |buf| {
            put_str(buf, NFTA_TABLE_NAME, table)
        });
        self.drain_stale();
        self.send_request()?;
        loop {
            let len = self.recv_datagram()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                match msg.ty {
                    NLMSG_ERROR => {
                        let (errno, message) = parse_ack(&msg)?;
                        if errno == 0 {
                            continue;
                        }
                        self.dirty = false;
                        if errno == libc::ENOENT {
                            return Ok(false);
                        }
                        let op = "get table";
                        return Err(NetlinkError::Kernel { errno, op, message });
                    }
                    NLMSG_OVERRUN => return Err(NetlinkError::Overrun),
                    t if t == nft_type(NFT_MSG_NEWTABLE) => {
                        self.dirty = false;
                        return Ok(true);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Ends every IPv4 connection whose original source is `ip` (a client that is gone):
    /// its conntrack entries are deleted, so no reply of an old flow reaches it any more,
    /// a NAT mapping back to it is gone, and an offloaded flow (fw4's flowtable, which
    /// bypasses our chains) is torn down. Returns how many were deleted.
    pub fn forget_flows(&mut self, ip: std::net::Ipv4Addr) -> Result<usize, NetlinkError> {
        // Dump the IPv4 conntrack table and keep the original tuples (and zones) to delete.
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.send.clear();
        let start = begin_nfmsg(
            &mut self.send,
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            libc::AF_INET as u8,
            0,
        );
        end_msg(&mut self.send, start);
        let mut doomed: Vec<Flow> = Vec::new();
        let want = ip.octets();
        self.dump(seq, "dump conntrack", |msg| {
            if let Some(found) = flow_from(msg.payload, want)? {
                doomed.push(found);
            }
            Ok(())
        })?;
        if doomed.is_empty() {
            return Ok(0);
        }
        // Then one delete per entry, all in one send; an entry that ended meanwhile is fine.
        self.send.clear();
        let first = self.seq;
        for (tuple, zone) in &doomed {
            let start = begin_nfmsg(
                &mut self.send,
                (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
                NLM_F_REQUEST | NLM_F_ACK,
                self.seq,
                libc::AF_INET as u8,
                0,
            );
            self.seq = self.seq.wrapping_add(1);
            put_attr(&mut self.send, CTA_TUPLE_ORIG | NLA_F_NESTED, tuple);
            if let Some(zone) = zone {
                put_attr(&mut self.send, CTA_ZONE, zone);
            }
            end_msg(&mut self.send, start);
        }
        self.reserve_buffers(self.send.len(), doomed.len())?;
        self.drain_stale();
        self.send_request()?;
        let (mut acked, mut deleted) = (0, 0);
        while acked < doomed.len() {
            let len = self.recv_datagram()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                if msg.ty != NLMSG_ERROR || msg.seq.wrapping_sub(first) as usize >= doomed.len() {
                    continue;
                }
                acked += 1;
                match parse_ack(&msg)? {
                    (0, _) => deleted += 1,
                    (libc::ENOENT, _) => {}
                    (errno, message) => {
                        self.dirty = acked < doomed.len();
                        return Err(NetlinkError::Kernel {
                            errno,
                            op: "delete conntrack entry",
                            message,
                        });
                    }
                }
            }
        }
        self.dirty = false;
        Ok(deleted)
    }

    /// Encodes a single (non-batch) request into the send buffer; returns its seq.
    fn request(
        &mut self,
        family: u8,
        cmd: u16,
        flags: u16,
        attrs: impl FnOnce(&mut Vec<u8>),
    ) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.send.clear();
        let start = begin_nfmsg(
            &mut self.send,
            nft_type(cmd),
            NLM_F_REQUEST | flags,
            seq,
            family,
            0,
        );
        attrs(&mut self.send);
        end_msg(&mut self.send, start);
        seq
    }

    /// Sends the batch in the send buffer and collects one ack per data message.
    fn transact(&mut self, begin: u32) -> Result<(), NetlinkError> {
        let n = self.batch_ops.len() as u32;
        self.reserve_buffers(self.send.len(), self.batch_ops.len())?;
        self.drain_stale();
        self.send_request()?;
        let mut acked = 0;
        // (offset from begin, errno, ext-ack message) of the earliest failed message.
        let mut first_err: Option<(u32, i32, Option<String>)> = None;
        while acked < n {
            let len = self.recv_datagram()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                let off = msg.seq.wrapping_sub(begin);
                if off > n + 1 {
                    continue; // a stale reply to an earlier, abandoned request
                }
                match msg.ty {
                    NLMSG_ERROR => {
                        let (errno, message) = parse_ack(&msg)?;
                        if off == 0 || off == n + 1 {
                            // Batch-level failure (e.g. EPERM, commit error), sent before
                            // any per-message ack.
                            if errno != 0 {
                                let op = "nftables batch";
                                return Err(NetlinkError::Kernel { errno, op, message });
                            }
                            continue;
                        }
                        acked += 1;
                        if errno != 0 && first_err.as_ref().is_none_or(|e| off < e.0) {
                            first_err = Some((off, errno, message));
                        }
                    }
                    NLMSG_OVERRUN => return Err(NetlinkError::Overrun),
                    _ => {}
                }
            }
        }
        self.dirty = false;
        match first_err {
            None => Ok(()),
            Some((off, errno, message)) => Err(NetlinkError::Kernel {
                errno,
                op: self.batch_ops[(off - 1) as usize],
                message,
            }),
        }
    }

    /// Sends the dump request in the send buffer and feeds each reply message to `f` until
    /// `NLMSG_DONE`. Returns whether the kernel flagged the dump as inconsistent.
    fn dump(
        &mut self,
        seq: u32,
        op: &'static str,
        mut f: impl FnMut(&Msg<'_>) -> Result<(), NetlinkError>,
    ) -> Result<bool, NetlinkError> {
        self.drain_stale();
        self.send_request()?;
        let mut interrupted = false;
        loop {
            let len = self.recv_datagram()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.ty {
                    NLMSG_DONE => {
                        self.dirty = false;
                        // nfnetlink puts the dump's final status (0 or -errno) here.
                        let errno = match msg.payload.get(..4) {
                            Some(b) => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).wrapping_neg(),
                            None => 0,
                        };
                        if errno != 0 {
                            return Err(NetlinkError::Kernel {
                                errno,
                                op,
                                message: None,
                            });
                        }
                        return Ok(interrupted);
                    }
                    NLMSG_ERROR => {
                        let (errno, message) = parse_ack(&msg)?;
                        if errno != 0 {
                            self.dirty = false; // a failed dump start sends nothing else
                            return Err(NetlinkError::Kernel { errno, op, message });
                        }
                    }
                    NLMSG_OVERRUN => return Err(NetlinkError::Overrun),
                    NLMSG_NOOP => {}
                    _ => f(&msg)?,
                }
            }
        }
    }

    fn send_request(&mut self) -> Result<(), NetlinkError> {
        self.dirty = true; // until every reply has been read
        loop {
            match socket::send(self.fd.as_raw_fd(), &self.send, MsgFlags::empty()) {
                Ok(n) if n == self.send.len() => return Ok(()),
                Ok(_) => return Err(NetlinkError::Malformed("short send on a netlink socket")),
                Err(Errno::EINTR) => continue,
                Err(Errno::EMSGSIZE) => {
                    return Err(NetlinkError::TooLarge {
                        len: self.send.len(),
                        limit: self.sndbuf.saturating_sub(SNDBUF_SLACK),
                    });
                }
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Reads one datagram into the receive buffer.
    fn recv_datagram(&mut self) -> Result<usize, NetlinkError> {
        loop {
            // MSG_TRUNC: return the real datagram length so truncation is detectable.
            match socket::recv(self.fd.as_raw_fd(), &mut self.recv, MsgFlags::MSG_TRUNC) {
                Ok(n) if n > self.recv.len() => {
                    return Err(NetlinkError::Malformed(
                        "reply larger than the receive buffer",
                    ));
                }
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => return Err(NetlinkError::Overrun),
                Err(Errno::EAGAIN) => return Err(NetlinkError::Timeout(RECV_TIMEOUT)),
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Discards replies left over from an abandoned request, so they cannot fill the queue.
    fn drain_stale(&mut self) {
        if !self.dirty {
            return;
        }
        // Stops at EAGAIN (queue empty) or any unexpected error.
        while let Ok(_) | Err(Errno::EINTR | Errno::ENOBUFS) =
            socket::recv(self.fd.as_raw_fd(), &mut self.recv, MsgFlags::MSG_DONTWAIT)
        {}
        self.dirty = false;
    }

    /// Grows the socket buffers for a batch of `len` bytes that will produce `acks` acks.
    fn reserve_buffers(&mut self, len: usize, acks: usize) -> Result<(), NetlinkError> {
        let need = len + SNDBUF_SLACK;
        if need > self.sndbuf {
            self.sndbuf = grow_buf(&self.fd, sockopt::SndBufForce, sockopt::SndBuf, need)?;
            if need > self.sndbuf {
                let limit = self.sndbuf.saturating_sub(SNDBUF_SLACK);
                return Err(NetlinkError::TooLarge { len, limit });
            }
        }
        // Best effort: a shortfall shows up as NetlinkError::Overrun.
        let need = acks.saturating_mul(ACK_TRUESIZE) + RECV_BUF_LEN;
        if need > self.rcvbuf {
            self.rcvbuf = grow_buf(&self.fd, sockopt::RcvBufForce, sockopt::RcvBuf, need)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.fd)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Writes one batch into a reusable buffer, numbering messages from `begin`.
struct BatchWriter<'a> {
    buf: &'a mut Vec<u8>,
    ops: &'a mut Vec<&'static str>,
    begin: u32,
}

impl<'a> BatchWriter<'a> {
    fn new(buf: &'a mut Vec<u8>, ops: &'a mut Vec<&'static str>, begin: u32) -> Self {
        buf.clear();
        ops.clear();
        let start = begin_nfmsg(
            buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            begin,
            libc::AF_UNSPEC as u8,
            NFNL_SUBSYS_NFTABLES,
        );
        end_msg(buf, start);
        BatchWriter { buf, ops, begin }
    }

    /// Starts an acked nf_tables message; `op` names it in errors.
    fn msg(&mut self, family: u8, cmd: u16, flags: u16, op: &'static str) -> usize {
        self.ops.push(op);
        let seq = self.begin.wrapping_add(self.ops.len() as u32);
        let flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        begin_nfmsg(self.buf, nft_type(cmd), flags, seq, family, 0)
    }

    /// Appends `BATCH_END`; returns (seq of `BATCH_BEGIN`, number of seqs used).
    fn finish(self) -> (u32, u32) {
        let n = self.ops.len() as u32;
        let seq = self.begin.wrapping_add(n + 1);
        let start = begin_nfmsg(
            self.buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            libc::AF_UNSPEC as u8,
            NFNL_SUBSYS_NFTABLES,
        );
        end_msg(self.buf, start);
        (self.begin, n + 2)
    }
}

fn check_name(name: &str) -> Result<(), NetlinkError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
        return Err(NetlinkError::Invalid(
            "table/set name must be 1-255 bytes without NUL",
        ));
    }
    Ok(())
}

fn validate_ops(table: &str, ops: &[SetOp]) -> Result<(), NetlinkError> {
    check_name(table)?;
    for op in ops {
        check_name(op.set())?;
        if op.key().is_empty() || op.key().len() > MAX_KEY_LEN {
            return Err(NetlinkError::Invalid("set element key must be 1-64 bytes"));
        }
    }
    Ok(())
}

/// NEWSETELEM/DELSETELEM messages for `ops` (already validated). Consecutive ops of the same
/// kind on the same set share a message, split where the elements nest (whose length is a
/// u16) would overflow.
fn encode_set_ops(batch: &mut BatchWriter<'_>, family: u8, table: &str, ops: &[SetOp]) {
    const NEST_MAX: usize = u16::MAX as usize;
    let mut i = 0;
    while i < ops.len() {
        let first = ops[i];
        let (cmd, flags, op) = if first.is_add() {
            // CREATE without EXCL: an existing element is not an error.
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add set element")
        } else {
            (NFT_MSG_DELSETELEM, 0, "delete set element")
        };
        let msg = batch.msg(family, cmd, flags, op);
        let buf = &mut *batch.buf;
        put_str(buf, NFTA_SET_ELEM_LIST_TABLE, table);
        put_str(buf, NFTA_SET_ELEM_LIST_SET, first.set());
        let nest = begin_nest(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
        let mut nest_len = NLA_HDRLEN;
        while let Some(op) = ops.get(i) {
            let elem_len = op.elem_len();
            if op.is_add() != first.is_add()
                || op.set() != first.set()
                || nest_len + elem_len > NEST_MAX
            {
                break;
            }
            encode_elem(buf, op);
            nest_len += elem_len;
            i += 1;
        }
        end_nest(buf, nest);
        end_msg(buf, msg);
    }
}

/// One `NFTA_LIST_ELEM`: key (nested `NFTA_DATA_VALUE`) and optional timeout.
fn encode_elem(buf: &mut Vec<u8>, op: &SetOp) {
    let elem = begin_nest(buf, NFTA_LIST_ELEM);
    let key = begin_nest(buf, NFTA_SET_ELEM_KEY);
    put_attr(buf, NFTA_DATA_VALUE, op.key());
    end_nest(buf, key);
    if let SetOp::Add {
        timeout: Some(t), ..
    } = op
    {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        put_attr(buf, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
    }
    if let SetOp::Add {
        comment: Some(c), ..
    } = op
    {
        let c = comment_bytes(c);
        let mut udata = [0u8; 2 + MAX_COMMENT_LEN + 1];
        udata[0] = NFTNL_UDATA_SET_ELEM_COMMENT;
        udata[1] = (c.len() + 1) as u8;
        udata[2..2 + c.len()].copy_from_slice(c);
        put_attr(buf, NFTA_SET_ELEM_USERDATA, &udata[..2 + c.len() + 1]);
    }
    end_nest(buf, elem);
}

/// A comment as stored: at most [`MAX_COMMENT_LEN`] bytes, cut at a character boundary,
/// without NULs (it is stored NUL-terminated).
fn comment_bytes(c: &str) -> &[u8] {
    let mut end = c.len().min(MAX_COMMENT_LEN);
    while !c.is_char_boundary(end) {
        end -= 1;
    }
    let c = &c.as_bytes()[..end];
    let nul = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    &c[..nul]
}

/// The comment in an element's user data (libnftnl TLVs: type, length, value).
fn parse_comment(mut udata: &[u8]) -> Option<String> {
    while let [ty, len, rest @ ..] = udata {
        let value = rest.get(..usize::from(*len))?;
        if *ty == NFTNL_UDATA_SET_ELEM_COMMENT {
            let value = value.split(|&b| b == 0).next().unwrap_or_default();
            return String::from_utf8(value.to_vec()).ok();
        }
        udata = &rest[usize::from(*len)..];
    }
    None
}

/// A conntrack entry to delete: its original tuple (nested attributes) and its zone.
type Flow = (Vec<u8>, Option<Vec<u8>>);

/// A conntrack dump message as a [`Flow`], if its original source address is `src`. Pure;
/// never panics.
fn flow_from(payload: &[u8], src: [u8; 4]) -> Result<Option<Flow>, NetlinkError> {
    let t = attr_table::<19>(nfgen_attrs(payload)?)?;
    let Some(tuple) = t[usize::from(CTA_TUPLE_ORIG)] else {
        return Ok(None);
    };
    let ip = attr_table::<2>(tuple)?[usize::from(CTA_TUPLE_IP)];
    let Some(ip) = ip else {
        return Ok(None);
    };
    let source = attr_table::<2>(ip)?[usize::from(CTA_IP_V4_SRC)];
    if source != Some(&src[..]) {
        return Ok(None);
    }
    Ok(Some((
        tuple.to_vec(),
        t[usize::from(CTA_ZONE)].map(<[u8]>::to_vec),
    )))
}

/// Appends the elements of one NEWSETELEM dump message. Elements without a key (catch-all)
/// are skipped.
fn parse_setelem_msg(payload: &[u8], out: &mut Vec<SetElement>) -> Result<(), NetlinkError> {
    let t = attr_table::<4>(nfgen_attrs(payload)?)?;
    let elems = t[usize::from(NFTA_SET_ELEM_LIST_ELEMENTS)].unwrap_or_default();
    for a in Attrs::new(elems) {
        let (ty, elem) = a?;
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let t = attr_table::<7>(elem)?;
        let Some(key) = t[usize::from(NFTA_SET_ELEM_KEY)] else {
            continue;
        };
        let [_, value] = attr_table::<2>(key)?;
        let key = value.ok_or(NetlinkError::Malformed("set element key without value"))?;
        let ms = |i: u16| -> Result<Option<Duration>, NetlinkError> {
            t[usize::from(i)]
                .map(|p| be_u64(p).map(Duration::from_millis))
                .transpose()
        };
        out.push(SetElement {
            key: key.to_vec(),
            timeout: ms(NFTA_SET_ELEM_TIMEOUT)?,
            expires: ms(NFTA_SET_ELEM_EXPIRATION)?,
            comment: t[usize::from(NFTA_SET_ELEM_USERDATA)].and_then(parse_comment),
        });
    }
    Ok(())
}

/// A NEWCHAIN dump message, if it belongs to `table`.
fn parse_chain(payload: &[u8], table: &[u8]) -> Result<Option<ChainInfo>, NetlinkError> {
    let t = attr_table::<6>(nfgen_attrs(payload)?)?;
    if t[usize::from(NFTA_CHAIN_TABLE)].map(cstr) != Some(table) {
        return Ok(None);
    }
    let name =
        t[usize::from(NFTA_CHAIN_NAME)].ok_or(NetlinkError::Malformed("chain without a name"))?;
    let (mut hook, mut priority) = (None, None);
    if let Some(h) = t[usize::from(NFTA_CHAIN_HOOK)] {
        let h = attr_table::<3>(h)?;
        hook = h[usize::from(NFTA_HOOK_HOOKNUM)].map(be_u32).transpose()?;
        priority = h[usize::from(NFTA_HOOK_PRIORITY)]
            .map(|p| be_u32(p).map(|v| v as i32))
            .transpose()?;
    }
    Ok(Some(ChainInfo {
        name: string(name),
        hook,
        priority,
        policy: t[usize::from(NFTA_CHAIN_POLICY)].map(be_u32).transpose()?,
        rules: 0,
    }))
}

/// The chain name of a NEWRULE dump message, if the rule belongs to `table`.
fn parse_rule_chain<'a>(payload: &'a [u8], table: &[u8]) -> Result<Option<&'a [u8]>, NetlinkError> {
    let t = attr_table::<3>(nfgen_attrs(payload)?)?;
    if t[usize::from(NFTA_RULE_TABLE)].map(cstr) != Some(table) {
        return Ok(None);
    }
    Ok(t[usize::from(NFTA_RULE_CHAIN)].map(cstr))
}

/// A NEWSET dump message, if it belongs to `table`.
fn parse_set(payload: &[u8], table: &[u8]) -> Result<Option<SetInfo>, NetlinkError> {
    let t = attr_table::<6>(nfgen_attrs(payload)?)?;
    if t[usize::from(NFTA_SET_TABLE)].map(cstr) != Some(table) {
        return Ok(None);
    }
    let name =
        t[usize::from(NFTA_SET_NAME)].ok_or(NetlinkError::Malformed("set without a name"))?;
    let u32_or_0 = |i: u16| {
        t[usize::from(i)]
            .map(be_u32)
            .transpose()
            .map(Option::unwrap_or_default)
    };
    Ok(Some(SetInfo {
        name: string(name),
        key_len: u32_or_0(NFTA_SET_KEY_LEN)?,
        flags: u32_or_0(NFTA_SET_FLAGS)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Proto;
    use crate::core::MacAddr;
    use crate::firewall::keys::{Key, SetKey};
    use std::net::Ipv4Addr;

    // --- helpers shared by the pure tests ---

    /// Keys through the one codec (`firewall::keys`), from the bytes the tests spell out.
    fn lease_key(mac: [u8; 6], ip: [u8; 4]) -> Key {
        (MacAddr(mac), Ipv4Addr::from(ip)).encode()
    }

    fn allow4_key(ip: [u8; 4], proto: Proto, port: u16) -> Key {
        (Ipv4Addr::from(ip), proto, port).encode()
    }

    fn encode(table: &str, ops: &[SetOp]) -> (Vec<u8>, Vec<&'static str>) {
        let (mut buf, mut names) = (Vec::new(), Vec::new());
        validate_ops(table, ops).unwrap();
        let mut batch = BatchWriter::new(&mut buf, &mut names, 100);
        encode_set_ops(&mut batch, FAMILY_INET, table, ops);
        let (begin, used) = batch.finish();
        assert_eq!((begin, used as usize), (100, names.len() + 2));
        (buf, names)
    }

    /// A decoded NEWSETELEM/DELSETELEM request: (message type, set name, keys, timeouts).
    type ElemMsg = (u16, String, Vec<Vec<u8>>, Vec<Option<Duration>>);

    fn decode_elem_msg(msg: &Msg<'_>) -> ElemMsg {
        let t = attr_table::<4>(nfgen_attrs(msg.payload).unwrap()).unwrap();
        let set = string(t[2].unwrap());
        let mut elems = Vec::new();
        // Requests and dump replies share the element layout, so the reply parser decodes them.
        parse_setelem_msg(msg.payload, &mut elems).unwrap();
        let keys = elems.iter().map(|e| e.key.clone()).collect();
        let timeouts = elems.iter().map(|e| e.timeout).collect();
        (msg.ty & 0xff, set, keys, timeouts)
    }

    fn msgs(buf: &[u8]) -> Vec<Msg<'_>> {
        Msgs::new(buf).collect::<Result<_, _>>().unwrap()
    }

    // --- encoding ---

    #[test]
    fn batch_layout_of_one_add() {
        let key = lease_key([2, 0, 0, 0, 0, 1], [192, 168, 250, 5]);
        let ops = [SetOp::Add {
            set: "leases",
            key: &key,
            timeout: Some(Duration::from_millis(30_500)),
            comment: None,
        }];
        let (buf, names) = encode("provisioner", &ops);
        assert_eq!(names, ["add set element"]);
        let m = msgs(&buf);
        assert_eq!(m.len(), 3);

        // BATCH_BEGIN/END: AF_UNSPEC, version 0, res_id = NFNL_SUBSYS_NFTABLES big endian.
        for (msg, ty, seq) in [(&m[0], 0x10, 100), (&m[2], 0x11, 102)] {
            assert_eq!((msg.ty, msg.flags, msg.seq), (ty, NLM_F_REQUEST, seq));
            assert_eq!(msg.payload, [0, 0, 0, 10]);
        }

        let d = &m[1];
        assert_eq!(d.ty, (10 << 8) | 12);
        assert_eq!(d.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(d.seq, 101);
        let mut want = vec![FAMILY_INET, 0, 0, 0]; // nfgenmsg
        let attr = |want: &mut Vec<u8>, len: u16, ty: u16| {
            want.extend_from_slice(&len.to_ne_bytes());
            want.extend_from_slice(&ty.to_ne_bytes());
        };
        attr(&mut want, 16, 1); // NFTA_SET_ELEM_LIST_TABLE
        want.extend_from_slice(b"provisioner\0");
        attr(&mut want, 11, 2); // NFTA_SET_ELEM_LIST_SET
        want.extend_from_slice(b"leases\0\0");
        attr(&mut want, 40, 3 | 0x8000); // NFTA_SET_ELEM_LIST_ELEMENTS, nested
        attr(&mut want, 36, 1 | 0x8000); // NFTA_LIST_ELEM
        attr(&mut want, 20, 1 | 0x8000); // NFTA_SET_ELEM_KEY
        attr(&mut want, 16, 1); // NFTA_DATA_VALUE
        want.extend_from_slice(&key);
        attr(&mut want, 12, 4); // NFTA_SET_ELEM_TIMEOUT, u64 big-endian milliseconds
        want.extend_from_slice(&30_500u64.to_be_bytes());
        assert_eq!(d.payload, &want[..]);
    }

    #[test]
    fn runs_of_the_same_kind_share_a_message_in_order() {
        let (a, b, c) = ([1; 12], [2; 12], [3; 12]);
        let t = Some(Duration::from_secs(60));
        let ops = [
            SetOp::Add {
                set: "leases",
                key: &a,
                timeout: t,
                comment: None,
            },
            SetOp::Add {
                set: "leases",
                key: &b,
                timeout: None,
                comment: None,
            },
            SetOp::Delete {
                set: "leases",
                key: &a,
            },
            SetOp::Add {
                set: "leases",
                key: &a,
                timeout: t,
                comment: None,
            },
            SetOp::Add {
                set: "allow4",
                key: &c,
                timeout: t,
                comment: None,
            },
            SetOp::Delete {
                set: "allow4",
                key: &c,
            },
            SetOp::Delete {
                set: "leases",
                key: &b,
            },
        ];
        let (buf, names) = encode("provisioner", &ops);
        let m = msgs(&buf);
        let got: Vec<_> = m[1..m.len() - 1].iter().map(decode_elem_msg).collect();
        let want: Vec<ElemMsg> = vec![
            (
                12,
                "leases".into(),
                vec![a.to_vec(), b.to_vec()],
                vec![t, None],
            ),
            (14, "leases".into(), vec![a.to_vec()], vec![None]),
            (12, "leases".into(), vec![a.to_vec()], vec![t]),
            (12, "allow4".into(), vec![c.to_vec()], vec![t]),
            (14, "allow4".into(), vec![c.to_vec()], vec![None]),
            (14, "leases".into(), vec![b.to_vec()], vec![None]),
        ];
        assert_eq!(got, want);
        assert_eq!(names.len(), 6);
        assert_eq!(names[1], "delete set element");
        let seqs: Vec<u32> = m.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (100..108).collect::<Vec<_>>());
    }

    #[test]
    fn long_runs_are_split_below_the_u16_nest_limit() {
        let keys: Vec<Key> = (0..5000u32)
            .map(|i| lease_key([2, 0, 0, 0, (i >> 8) as u8, i as u8], i.to_be_bytes()))
            .collect();
        let ops: Vec<SetOp> = keys
            .iter()
            .map(|k| SetOp::Add {
                set: "leases",
                key: k,
                timeout: Some(Duration::from_secs(1)),
                comment: None,
            })
            .collect();
        let (buf, names) = encode("provisioner", &ops);
        let m = msgs(&buf);
        assert_eq!(names.len(), m.len() - 2);
        assert!(
            names.len() > 1 && names.len() < 6,
            "{} messages",
            names.len()
        );
        let mut all = Vec::new();
        for msg in &m[1..m.len() - 1] {
            let elems = attr_table::<4>(nfgen_attrs(msg.payload).unwrap()).unwrap()[3].unwrap();
            assert!(elems.len() + NLA_HDRLEN <= u16::MAX as usize);
            all.extend(decode_elem_msg(msg).2);
        }
        let want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn bad_requests_are_rejected_before_sending() {
        let k = [0u8; 12];
        let big = [0u8; 65];
        let cases: [(&str, SetOp); 5] = [
            ("provisioner", SetOp::Delete { set: "", key: &k }),
            (
                "provisioner",
                SetOp::Delete {
                    set: "a\0b",
                    key: &k,
                },
            ),
            ("provisioner", SetOp::Delete { set: "s", key: &[] }),
            (
                "provisioner",
                SetOp::Delete {
                    set: "s",
                    key: &big,
                },
            ),
            ("", SetOp::Delete { set: "s", key: &k }),
        ];
        for (table, op) in cases {
            let r = validate_ops(table, &[op]);
            assert!(matches!(r, Err(NetlinkError::Invalid(_))), "{op:?}: {r:?}");
        }
        let long = "x".repeat(256);
        assert!(check_name(&long).is_err());
        assert!(check_name(&long[..255]).is_ok());
    }

    // --- decoding ---

    /// Kernel-style dump replies, built with the encoder.
    fn sample_replies() -> Vec<u8> {
        let mut buf = Vec::new();
        let s = begin_nfmsg(&mut buf, nft_type(NFT_MSG_NEWSETELEM), 2, 9, FAMILY_INET, 0);
        put_str(&mut buf, NFTA_SET_ELEM_LIST_TABLE, "provisioner");
        put_str(&mut buf, NFTA_SET_ELEM_LIST_SET, "leases");
        let n = begin_nest(&mut buf, NFTA_SET_ELEM_LIST_ELEMENTS);
        for (i, timeout) in [(1u8, true), (2, false)] {
            let e = begin_nest(&mut buf, NFTA_LIST_ELEM);
            let k = begin_nest(&mut buf, NFTA_SET_ELEM_KEY);
            put_attr(&mut buf, NFTA_DATA_VALUE, &[i; 12]);
            end_nest(&mut buf, k);
            if timeout {
                put_attr(&mut buf, NFTA_SET_ELEM_TIMEOUT, &60_000u64.to_be_bytes());
                put_attr(&mut buf, NFTA_SET_ELEM_EXPIRATION, &59_000u64.to_be_bytes());
            }
            end_nest(&mut buf, e);
        }
        // A catch-all element: flags, no key.
        let e = begin_nest(&mut buf, NFTA_LIST_ELEM);
        put_attr(&mut buf, 3, &2u32.to_be_bytes());
        end_nest(&mut buf, e);
        end_nest(&mut buf, n);
        end_msg(&mut buf, s);

        for (table, name, hook) in [
            ("provisioner", "forward", Some((2u32, -150i32))),
            ("provisioner", "helper", None),
            ("other", "forward", Some((2, 0))),
        ] {
            let s = begin_nfmsg(&mut buf, nft_type(NFT_MSG_NEWCHAIN), 2, 9, FAMILY_INET, 0);
            put_str(&mut buf, NFTA_CHAIN_TABLE, table);
            put_attr(&mut buf, 2, &7u64.to_be_bytes()); // NFTA_CHAIN_HANDLE
            put_str(&mut buf, NFTA_CHAIN_NAME, name);
            if let Some((num, prio)) = hook {
                let h = begin_nest(&mut buf, NFTA_CHAIN_HOOK);
                put_attr(&mut buf, NFTA_HOOK_HOOKNUM, &num.to_be_bytes());
                put_attr(&mut buf, NFTA_HOOK_PRIORITY, &prio.to_be_bytes());
                end_nest(&mut buf, h);
                put_attr(&mut buf, NFTA_CHAIN_POLICY, &1u32.to_be_bytes());
            }
            end_msg(&mut buf, s);
        }

        let s = begin_nfmsg(&mut buf, nft_type(NFT_MSG_NEWRULE), 2, 9, FAMILY_INET, 0);
        put_str(&mut buf, NFTA_RULE_TABLE, "provisioner");
        put_str(&mut buf, NFTA_RULE_CHAIN, "forward");
        end_msg(&mut buf, s);

        let s = begin_nfmsg(&mut buf, nft_type(NFT_MSG_NEWSET), 2, 9, FAMILY_INET, 0);
        put_str(&mut buf, NFTA_SET_TABLE, "provisioner");
        put_str(&mut buf, NFTA_SET_NAME, "leases");
        put_attr(
            &mut buf,
            NFTA_SET_FLAGS,
            &(SET_F_TIMEOUT | SET_F_CONCAT).to_be_bytes(),
        );
        put_attr(&mut buf, NFTA_SET_KEY_LEN, &12u32.to_be_bytes());
        end_msg(&mut buf, s);

        let s = begin_nfmsg(&mut buf, NLMSG_DONE, 2, 9, 0, 0);
        end_msg(&mut buf, s);
        buf
    }

    #[test]
    fn dump_replies_decode() {
        let buf = sample_replies();
        let m = msgs(&buf);
        let t = b"provisioner";

        let mut elems = Vec::new();
        parse_setelem_msg(m[0].payload, &mut elems).unwrap();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            elems,
            [
                SetElement {
                    key: vec![1; 12],
                    timeout: secs(60),
                    expires: secs(59),
                    comment: None
                },
                SetElement {
                    key: vec![2; 12],
                    timeout: None,
                    expires: None,
                    comment: None
                },
            ]
        );

        let forward = parse_chain(m[1].payload, t).unwrap().unwrap();
        let want = ChainInfo {
            name: "forward".into(),
            hook: Some(HOOK_FORWARD),
            priority: Some(-150),
            policy: Some(POLICY_ACCEPT),
            rules: 0,
        };
        assert_eq!(forward, want);
        let helper = parse_chain(m[2].payload, t).unwrap().unwrap();
        assert_eq!(
            (helper.hook, helper.priority, helper.policy),
            (None, None, None)
        );
        assert_eq!(parse_chain(m[3].payload, t).unwrap(), None, "other table");
        assert_eq!(
            parse_rule_chain(m[4].payload, t).unwrap(),
            Some(&b"forward"[..])
        );
        assert_eq!(parse_rule_chain(m[4].payload, b"provisione").unwrap(), None);
        let set = parse_set(m[5].payload, t).unwrap().unwrap();
        let want = SetInfo {
            name: "leases".into(),
            key_len: 12,
            flags: 0x90,
        };
        assert_eq!(set, want);
        assert_eq!(m[6].ty, NLMSG_DONE);
    }

    #[test]
    fn conntrack_entries_are_matched_by_original_source() {
        // nfgenmsg, CTA_TUPLE_ORIG { CTA_TUPLE_IP { CTA_IP_V4_SRC 192.168.250.2 } }, CTA_ZONE
        let nest = |ty: u16, inner: &[u8]| {
            let mut a = Vec::new();
            put_attr(&mut a, ty | NLA_F_NESTED, inner);
            a
        };
        let mut src = Vec::new();
        put_attr(&mut src, CTA_IP_V4_SRC, &[192, 168, 250, 2]);
        let tuple = nest(CTA_TUPLE_IP, &src);
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(nest(CTA_TUPLE_ORIG, &tuple));
        put_attr(&mut payload, CTA_ZONE, &[0, 5]);
        let (got, zone) = flow_from(&payload, [192, 168, 250, 2]).unwrap().unwrap();
        assert_eq!(got, tuple);
        assert_eq!(zone.as_deref(), Some(&[0u8, 5][..]));
        assert!(flow_from(&payload, [192, 168, 250, 3]).unwrap().is_none());
        for cut in 0..payload.len() {
            let _ = flow_from(&payload[..cut], [192, 168, 250, 2]);
        }
    }

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

    #[test]
    fn comments_parse_from_user_data() {
        assert_eq!(
            parse_comment(&[0, 4, b'a', b'b', b'c', 0]),
            Some("abc".into())
        );
        // Another TLV first, then the comment.
        assert_eq!(parse_comment(&[1, 1, 9, 0, 2, b'z', 0]), Some("z".into()));
        // Truncated: no panic, no comment.
        assert_eq!(parse_comment(&[0, 9, b'a']), None);
        assert_eq!(parse_comment(&[0]), None);
        assert_eq!(comment_bytes("a\0b"), b"a");
        assert_eq!(comment_bytes(&"é".repeat(100)).len(), 128);
    }

    /// Runs every decoder over `buf`; only panics matter, results are ignored.
    fn decode_everything(buf: &[u8]) {
        let mut elems = Vec::new();
        for msg in Msgs::new(buf).flatten() {
            let _ = parse_ack(&msg);
            let _ = parse_setelem_msg(msg.payload, &mut elems);
            let _ = parse_chain(msg.payload, b"provisioner");
            let _ = parse_rule_chain(msg.payload, b"provisioner");
            let _ = parse_set(msg.payload, b"provisioner");
        }
        // Also as bare payloads and attribute lists, with and without an nfgenmsg.
        let _ = parse_setelem_msg(buf, &mut elems);
        let _ = parse_chain(buf, b"provisioner");
        let _ = parse_set(buf, b"");
        let _ = attr_table::<8>(buf);
        for a in Attrs::new(buf).flatten() {
            let _ = attr_table::<8>(a.1);
        }
    }

    #[test]
    fn decoders_survive_truncated_and_random_bytes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = sample_replies();
        let mut acks = error_msg(NLM_F_ACK_TLVS, -libc::EINVAL, &[1, 0, 0, 0], Some("msg"));
        acks.extend(error_msg(NLM_F_CAPPED | NLM_F_ACK_TLVS, -1, &[], Some("x")));
        let k = [7u8; 12];
        let (batch, _) = encode(
            "provisioner",
            &[SetOp::Add {
                set: "leases",
                key: &k,
                timeout: Some(Duration::from_secs(5)),
                comment: None,
            }],
        );

        for sample in [&valid, &acks, &batch] {
            for cut in 0..=sample.len() {
                decode_everything(&sample[..cut]);
                decode_everything(&sample[cut..]);
            }
        }
        let mut buf = Vec::new();
        for round in 0..20_000 {
            buf.clear();
            if round % 2 == 0 {
                // Pure noise, with small length fields now and then so headers parse.
                let len = (rand() % 300) as usize;
                buf.extend((0..len).map(|_| rand() as u8));
                if buf.len() >= 4 && rand() % 2 == 0 {
                    buf[0] = (rand() % 64) as u8;
                    buf[1..4].fill(0);
                }
            } else {
                // A valid reply with a few random bytes flipped and a random cut.
                let sample = [&valid, &acks, &batch][(rand() % 3) as usize];
                buf.extend_from_slice(sample);
                for _ in 0..1 + rand() % 4 {
                    let i = (rand() as usize) % buf.len();
                    buf[i] = rand() as u8;
                }
                buf.truncate((rand() as usize) % (buf.len() + 1));
            }
            decode_everything(&buf);
        }
    }

    // --- against the kernel, each test in its own network namespace ---

    use nix::sched::{CloneFlags, unshare};
    use std::process::Command;

    const TABLE: &str = "provisioner";
    const RULESET: &str = r#"
table inet provisioner {
    set leases { type ether_addr . ipv4_addr; flags timeout; }
    set allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
    chain forward {
        type filter hook forward priority filter; policy accept;
        ether saddr . ip saddr @leases accept
        counter drop
    }
    chain input {
        type filter hook input priority -5; policy drop;
        iifname "lo" accept
    }
    chain prerouting { type filter hook prerouting priority mangle; }
    chain helper {
        counter
        ip daddr . meta l4proto . th dport @allow4 accept
        return
    }
}
table inet other {
    set leases { type ipv4_addr; }
    chain forward { type filter hook forward priority 0; counter; }
}
"#;

    /// Runs `f` on a thread that has its own, empty network namespace (gone when it ends),
    /// with RULESET loaded. Skips without root, and where PROVISIONER_SKIP_KERNEL_TESTS is
    /// set (`make cross-test`: qemu-user refuses NETLINK_NETFILTER sockets with
    /// EPROTONOSUPPORT; it translates only rtnetlink, audit and uevent).
    fn in_netns(test: &str, f: impl FnOnce(&mut Netlink) + Send + 'static) {
        if std::env::var_os("PROVISIONER_SKIP_KERNEL_TESTS").is_some() {
            eprintln!("{test}: skipped, PROVISIONER_SKIP_KERNEL_TESTS is set");
            return;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("{test}: skipped, needs root to create a network namespace");
            return;
        }
        let thread = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            nft_load(RULESET);
            let mut nl = Netlink::open().expect("open netlink");
            f(&mut nl);
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    fn nft_load(script: &str) {
        if let Err(e) = crate::firewall::run_nft(script) {
            panic!("{e}");
        }
    }

    fn nft_list_set(set: &str) -> String {
        let out = Command::new("nft")
            .args(["list", "set", "inet", TABLE, set])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn elements(nl: &mut Netlink, set: &str) -> Vec<SetElement> {
        let mut v = nl.set_elements(TABLE, set).unwrap();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    fn mac(i: u16) -> [u8; 6] {
        let [hi, lo] = i.to_be_bytes();
        [2, 0, 0, 0, hi, lo]
    }

    fn add<'a>(set: &'a str, key: &'a [u8], secs: u64) -> SetOp<'a> {
        SetOp::Add {
            set,
            key,
            timeout: Some(Duration::from_secs(secs)),
            comment: None,
        }
    }

    #[test]
    fn kernel_add_and_read_back() {
        in_netns("kernel_add_and_read_back", |nl| {
            let seq = nl.seq;
            nl.apply(TABLE, &[]).unwrap();
            assert_eq!(nl.seq, seq, "an empty apply sends nothing");

            let k1 = lease_key(mac(1), [192, 168, 250, 5]);
            let k2 = lease_key(mac(2), [192, 168, 250, 6]);
            let k3 = lease_key(mac(3), [192, 168, 250, 7]);
            let a1 = allow4_key([192, 168, 250, 5], Proto::Tcp, 443);
            let ops = [
                add("leases", &k1, 60),
                add("leases", &k2, 120),
                SetOp::Add {
                    set: "leases",
                    key: &k3,
                    timeout: None,
                    comment: None,
                },
                add("allow4", &a1, 30),
            ];
            nl.apply(TABLE, &ops).unwrap();

            let got = elements(nl, "leases");
            assert_eq!(got.len(), 3);
            for (e, key, secs) in [(&got[0], k1, Some(60)), (&got[1], k2, Some(120))] {
                assert_eq!(e.key, key.as_bytes());
                assert_eq!(e.timeout, secs.map(Duration::from_secs));
                let (t, x) = (e.timeout.unwrap(), e.expires.expect("expires"));
                assert!(x <= t && x > t - Duration::from_secs(10), "{e:?}");
            }
            assert_eq!(
                got[2],
                SetElement {
                    key: k3.to_vec(),
                    timeout: None,
                    expires: None,
                    comment: None
                }
            );
            let allow = elements(nl, "allow4");
            assert_eq!(allow.len(), 1);
            assert_eq!(allow[0].key, a1.as_bytes());

            // The key layout must be what nft itself means by these types.
            let text = nft_list_set("leases");
            assert!(text.contains("02:00:00:00:00:01 . 192.168.250.5"), "{text}");
            assert!(text.contains("02:00:00:00:00:03 . 192.168.250.7"), "{text}");
            let text = nft_list_set("allow4");
            assert!(text.contains("192.168.250.5 . tcp . 443"), "{text}");
        });
    }

    /// A comment travels as nft's own user data: `nft list` shows it, and a dump returns it.
    #[test]
    fn kernel_comments_read_back_and_show_in_nft() {
        in_netns("kernel_comments_read_back_and_show_in_nft", |nl| {
            let a1 = allow4_key([11, 1, 0, 10], Proto::Tcp, 443);
            let long = "x".repeat(200);
            let a2 = allow4_key([11, 1, 0, 11], Proto::Tcp, 443);
            let ops = [
                SetOp::Add {
                    set: "allow4",
                    key: &a1,
                    timeout: Some(Duration::from_secs(60)),
                    comment: Some("setup.acme.example"),
                },
                SetOp::Add {
                    set: "allow4",
                    key: &a2,
                    timeout: Some(Duration::from_secs(60)),
                    comment: Some(&long),
                },
            ];
            nl.apply(TABLE, &ops).unwrap();
            let got = elements(nl, "allow4");
            assert_eq!(got[0].comment.as_deref(), Some("setup.acme.example"));
            assert_eq!(got[1].comment.as_deref(), Some(&long[..MAX_COMMENT_LEN]));
            let text = nft_list_set("allow4");
            assert!(text.contains("comment \"setup.acme.example\""), "{text}");
        });
    }

    #[test]
    fn kernel_delete_and_re_add() {
        in_netns("kernel_delete_and_re_add", |nl| {
            let k = lease_key(mac(1), [10, 0, 0, 1]);
            nl.apply(TABLE, &[add("leases", &k, 60)]).unwrap();
            // Adding an element that exists is not an error (no NLM_F_EXCL), twice in a
            // batch or in a later one.
            nl.apply(TABLE, &[add("leases", &k, 60), add("leases", &k, 60)])
                .unwrap();
            nl.apply(TABLE, &[add("leases", &k, 60)]).unwrap();
            assert_eq!(elements(nl, "leases").len(), 1);

            nl.apply(
                TABLE,
                &[SetOp::Delete {
                    set: "leases",
                    key: &k,
                }],
            )
            .unwrap();
            assert!(elements(nl, "leases").is_empty());
            assert!(!nft_list_set("leases").contains("02:00:00:00:00:01"));
        });
    }

    #[test]
    fn kernel_add_delete_add_refreshes_the_timeout() {
        in_netns("kernel_add_delete_add_refreshes_the_timeout", |nl| {
            let (old, fresh) = (
                lease_key(mac(1), [10, 0, 0, 1]),
                lease_key(mac(2), [10, 0, 0, 2]),
            );
            nl.apply(TABLE, &[add("leases", &old, 10)]).unwrap();

            // For an existing element and for one that only appears inside the batch.
            for k in [&old, &fresh] {
                let refresh = [
                    add("leases", k, 600),
                    SetOp::Delete {
                        set: "leases",
                        key: k,
                    },
                    add("leases", k, 600),
                ];
                nl.apply(TABLE, &refresh).unwrap();
            }
            let got = elements(nl, "leases");
            assert_eq!(got.len(), 2);
            for e in &got {
                assert_eq!(e.timeout, Some(Duration::from_secs(600)), "{e:?}");
                assert!(e.expires.unwrap() > Duration::from_secs(590), "{e:?}");
            }
        });
    }

    #[test]
    fn kernel_plain_re_add_timeout_behaviour() {
        // Informational: kernels with element timeout updates (Linux 6.10+?) apply the new
        // timeout on a plain re-add, older ones keep the old one. Either way it succeeds.
        in_netns("kernel_plain_re_add_timeout_behaviour", |nl| {
            let k = lease_key(mac(1), [10, 0, 0, 1]);
            nl.apply(TABLE, &[add("leases", &k, 10)]).unwrap();
            nl.apply(TABLE, &[add("leases", &k, 600)]).unwrap();
            let e = &elements(nl, "leases")[0];
            assert!(
                [10, 600]
                    .map(Duration::from_secs)
                    .contains(&e.timeout.unwrap()),
                "{e:?}"
            );
            eprintln!("plain re-add with a longer timeout leaves: {e:?}");
        });
    }

    #[test]
    fn kernel_failed_batch_applies_nothing() {
        in_netns("kernel_failed_batch_applies_nothing", |nl| {
            let (a, missing, c) = (
                lease_key(mac(1), [10, 0, 0, 1]),
                lease_key(mac(2), [10, 0, 0, 2]),
                lease_key(mac(3), [10, 0, 0, 3]),
            );
            let ops = [
                add("leases", &a, 60),
                SetOp::Delete {
                    set: "leases",
                    key: &missing,
                },
                add("leases", &c, 60),
            ];
            let err = nl.apply(TABLE, &ops).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
            assert!(matches!(
                err,
                NetlinkError::Kernel {
                    op: "delete set element",
                    ..
                }
            ));
            assert!(
                err.to_string()
                    .contains("ENOENT: no such table/set/element"),
                "{err}"
            );
            assert!(
                elements(nl, "leases").is_empty(),
                "the batch was applied in part"
            );

            // Other kernel refusals; the socket stays usable after each.
            let short = [1u8; 8];
            let err = nl.apply(TABLE, &[add("leases", &short, 60)]).unwrap_err();
            eprintln!("wrong key length: {err}");
            assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
            let err = nl.apply(TABLE, &[add("nosuchset", &a, 60)]).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
            let err = nl
                .apply("nosuchtable", &[add("leases", &a, 60)])
                .unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
            let err = nl.set_elements(TABLE, "nosuchset").unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");

            nl.apply(TABLE, &[add("leases", &a, 60)]).unwrap();
            assert_eq!(elements(nl, "leases").len(), 1);
        });
    }

    #[test]
    fn kernel_5000_elements_in_one_batch() {
        in_netns("kernel_5000_elements_in_one_batch", |nl| {
            let keys: Vec<Key> = (0..5000u16)
                .map(|i| lease_key(mac(i), [10, 1, (i >> 8) as u8, i as u8]))
                .collect();
            let ops: Vec<SetOp> = keys.iter().map(|k| add("leases", k, 300)).collect();
            let start = std::time::Instant::now();
            nl.apply(TABLE, &ops).unwrap();
            eprintln!("5000 adds: {:?}", start.elapsed());
            let got = elements(nl, "leases");
            let got: Vec<&[u8]> = got.iter().map(|e| &e.key[..]).collect();
            let want: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            assert_eq!(got, want);
        });
    }

    #[test]
    fn kernel_refresh_of_many_keys_gets_every_ack() {
        // 1500 keys x (add, delete, add): only "add k2" can join "add k1", so 3001 messages
        // and as many acks, all queued before sendmsg() returns. Without growing SO_RCVBUF
        // this overruns (ENOBUFS); the batch also outgrows the default SO_SNDBUF.
        in_netns("kernel_refresh_of_many_keys_gets_every_ack", |nl| {
            let default_sndbuf = nl.sndbuf;
            let keys: Vec<Key> = (0..1500u16)
                .map(|i| allow4_key([10, 2, (i >> 8) as u8, i as u8], Proto::Tcp, i))
                .collect();
            let initial: Vec<SetOp> = keys.iter().map(|k| add("allow4", k, 10)).collect();
            nl.apply(TABLE, &initial).unwrap();
            let refresh: Vec<SetOp> = keys
                .iter()
                .flat_map(|k| {
                    [
                        add("allow4", k, 900),
                        SetOp::Delete {
                            set: "allow4",
                            key: k,
                        },
                        add("allow4", k, 900),
                    ]
                })
                .collect();
            let start = std::time::Instant::now();
            nl.apply(TABLE, &refresh).unwrap();
            let (msgs, bytes) = (nl.batch_ops.len(), nl.send.len());
            eprintln!(
                "{msgs} messages, {bytes} bytes: {:?}; SO_SNDBUF {} SO_RCVBUF {}",
                start.elapsed(),
                nl.sndbuf,
                nl.rcvbuf
            );
            assert_eq!(msgs, 3001);
            assert!(bytes > default_sndbuf, "the send buffer had to grow");
            let got = elements(nl, "allow4");
            assert_eq!(got.len(), keys.len());
            assert!(
                got.iter()
                    .all(|e| e.timeout == Some(Duration::from_secs(900)))
            );
        });
    }

    #[test]
    fn kernel_describe_table() {
        in_netns("kernel_describe_table", |nl| {
            let mut info = nl
                .describe_table(FAMILY_INET, TABLE)
                .unwrap()
                .expect("table exists");
            info.chains.sort_by(|a, b| a.name.cmp(&b.name));
            info.sets.sort_by(|a, b| a.name.cmp(&b.name));
            let chain = |name: &str, hook, priority, policy, rules| ChainInfo {
                name: name.into(),
                hook,
                priority,
                policy,
                rules,
            };
            let want = [
                chain(
                    "forward",
                    Some(HOOK_FORWARD),
                    Some(0),
                    Some(POLICY_ACCEPT),
                    2,
                ),
                chain("helper", None, None, None, 3),
                chain("input", Some(HOOK_INPUT), Some(-5), Some(POLICY_DROP), 1),
                chain(
                    "prerouting",
                    Some(HOOK_PREROUTING),
                    Some(-150),
                    Some(POLICY_ACCEPT),
                    0,
                ),
            ];
            assert_eq!(info.chains, want);
            let names: Vec<_> = info
                .sets
                .iter()
                .map(|s| (s.name.as_str(), s.key_len))
                .collect();
            assert_eq!(names, [("allow4", 12), ("leases", 12)]);
            assert!(
                info.sets.iter().all(|s| s.flags & SET_F_TIMEOUT != 0),
                "{:?}",
                info.sets
            );

            assert_eq!(nl.describe_table(FAMILY_INET, "nosuchtable").unwrap(), None);
            let other = nl.describe_table(FAMILY_INET, "other").unwrap().unwrap();
            assert_eq!(other.chains.len(), 1);
            assert_eq!(other.chains[0].rules, 1);
            assert_eq!(other.sets[0].key_len, 4);
        });
    }

    #[test]
    fn kernel_delete_table() {
        in_netns("kernel_delete_table", |nl| {
            let k = lease_key(mac(1), [10, 0, 0, 1]);
            nl.apply(TABLE, &[add("leases", &k, 60)]).unwrap();
            assert!(nl.delete_table(FAMILY_INET, TABLE).unwrap());
            assert_eq!(nl.describe_table(FAMILY_INET, TABLE).unwrap(), None);
            assert!(!nl.delete_table(FAMILY_INET, TABLE).unwrap());
            let err = nl.apply(TABLE, &[add("leases", &k, 60)]).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT));
            assert!(
                nl.describe_table(FAMILY_INET, "other").unwrap().is_some(),
                "only our table goes"
            );
        });
    }
}
