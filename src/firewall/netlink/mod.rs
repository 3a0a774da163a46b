//! A small, hand-rolled nfnetlink client for what the daemon does with nftables at run
//! time: change set elements of its own tables, read the tables back, hear of their
//! deletion, and end the conntrack entries of a client that is gone.
//!
//! The ruleset itself is installed with `nft -f -`; everything here goes over ONE long-lived
//! `NETLINK_NETFILTER` socket, so the DNS hot path never forks a process. This file is that
//! socket (single requests, dumps, buffer sizing); the rest is one file per object:
//!
//! * `batch`: an nf_tables batch, written and sent as one transaction;
//! * `elements`: set elements ([`SetOp`], [`SetElement`]), their encoding and comments;
//! * `table`: a table read back ([`TableInfo`]: chains, rules, sets) or deleted;
//! * `monitor`: the ruleset [`Monitor`] that hears of a table's deletion;
//! * `conntrack`: ctnetlink, ending the flows of addresses whose binding ended.
//!
//! Generic netlink framing (headers, attributes, acks, `nfgenmsg`) is `crate::netlink`.
//!
//! Wire format, in brief (see `linux/netlink.h`, `linux/netfilter/nfnetlink.h` and
//! `linux/netfilter/nf_tables.h`): every message is a `struct nlmsghdr` (native endian)
//! followed by a `struct nfgenmsg` (family, version, big-endian `res_id`) and a list of
//! attributes (`struct nlattr`: native endian length and type, payload padded to 4 bytes).
//! nftables *values* are big endian. How changes travel (one batch, one transaction, one
//! ack per message) is `batch`.
//!
//! Decoding is bounds-checked everywhere: the parsers are pure functions over `&[u8]` that
//! return [`NetlinkError::Malformed`] instead of panicking, whatever the kernel sends.

mod batch;
mod conntrack;
mod elements;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod monitor;
mod table;

#[cfg(test)]
mod kernel_tests;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt,
};
use nix::sys::time::TimeVal;

pub use crate::netlink::NetlinkError;
use crate::netlink::*;
pub use elements::{Counter, MAX_COMMENT_LEN, MAX_KEY_LEN, Quota, SetElement, SetOp};
pub use monitor::{Monitor, announces_deletion};
pub use table::{
    ChainInfo, HOOK_FORWARD, HOOK_INGRESS, HOOK_INPUT, HOOK_OUTPUT, HOOK_POSTROUTING,
    HOOK_PREROUTING, POLICY_ACCEPT, POLICY_DROP, SET_F_ANONYMOUS, SET_F_CONCAT, SET_F_CONSTANT,
    SET_F_EVAL, SET_F_INTERVAL, SET_F_MAP, SET_F_TIMEOUT, SetInfo, TableInfo,
};

/// `NFPROTO_INET`: the main table (IPv4 and IPv6).
pub const FAMILY_INET: u8 = 1;
/// `NFPROTO_ARP`: the ARP table (the router's own ARP input).
pub const FAMILY_ARP: u8 = 3;
/// `NFPROTO_NETDEV`: the provisioning device's ingress and egress hooks.
pub const FAMILY_NETDEV: u8 = 5;

/// Longest table/set name, without the NUL (`NFT_NAME_MAXLEN` - 1).
pub const MAX_NAME_LEN: usize = 255;

const NFNL_SUBSYS_NFTABLES: u16 = 10;

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
    /// Dumps requested, for the tests that count them.
    #[cfg(test)]
    dumps: usize,
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
            #[cfg(test)]
            dumps: 0,
        })
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

    /// Sends the dump request in the send buffer and feeds each reply message to `f` until
    /// `NLMSG_DONE`. Returns whether the kernel flagged the dump as inconsistent.
    fn dump(
        &mut self,
        seq: u32,
        op: &'static str,
        mut f: impl FnMut(&Msg<'_>) -> Result<(), NetlinkError>,
    ) -> Result<bool, NetlinkError> {
        #[cfg(test)]
        {
            self.dumps += 1;
        }
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

fn check_name(name: &str) -> Result<(), NetlinkError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
        return Err(NetlinkError::Invalid(
            "table/set name must be 1-255 bytes without NUL",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use batch::BatchWriter;
    use elements::*;
    use table::*;

    fn msgs(buf: &[u8]) -> Vec<Msg<'_>> {
        Msgs::new(buf).collect::<Result<_, _>>().unwrap()
    }

    fn encode(table: &str, ops: &[SetOp]) -> (Vec<u8>, Vec<&'static str>) {
        let (mut buf, mut names) = (Vec::new(), Vec::new());
        validate_ops(table, ops).unwrap();
        let mut batch = BatchWriter::new(&mut buf, &mut names, 100);
        encode_set_ops(&mut batch, FAMILY_INET, table, ops);
        batch.finish();
        (buf, names)
    }

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
                    comment: None,
                    counter: None,
                    quota: None,
                },
                SetElement {
                    key: vec![2; 12],
                    timeout: None,
                    expires: None,
                    comment: None,
                    counter: None,
                    quota: None,
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

    /// Not a test: writes the fuzz target's seeds from these samples (`cargo test --lib
    /// fuzz_seeds -- --ignored`; see README.md, "Fuzzing").
    #[test]
    #[ignore]
    fn fuzz_seeds() {
        crate::fuzz_seed("nftables", "dumps", &sample_replies());
        let mut acks = error_msg(NLM_F_ACK_TLVS, -libc::EINVAL, &[1, 0, 0, 0], Some("msg"));
        acks.extend(error_msg(NLM_F_CAPPED | NLM_F_ACK_TLVS, -1, &[], Some("x")));
        acks.extend(error_msg(NLM_F_CAPPED, 0, &[], None));
        crate::fuzz_seed("nftables", "acks", &acks);
        let k = [7u8; 12];
        let (batch, _) = encode(
            "provisioner",
            &[
                SetOp::Add {
                    set: "leases",
                    key: &k,
                    timeout: Some(Duration::from_secs(5)),
                    comment: Some("since 1700000000"),
                },
                SetOp::Add {
                    set: "leases",
                    key: &k[..4],
                    timeout: None,
                    comment: None,
                },
                SetOp::AddQuota {
                    set: "leases",
                    key: &k[..8],
                    timeout: Duration::from_secs(3600),
                    limit: 1 << 20,
                    used: 4096,
                },
            ],
        );
        crate::fuzz_seed("nftables", "elements", &batch);
        let mut del = Vec::new();
        let s = begin_nfmsg(&mut del, nft_type(2), 0, 0, FAMILY_INET, 0); // NFT_MSG_DELTABLE
        put_str(&mut del, 1, "provisioner"); // NFTA_TABLE_NAME
        end_msg(&mut del, s);
        crate::fuzz_seed("nftables", "deleted", &del);
    }
}
