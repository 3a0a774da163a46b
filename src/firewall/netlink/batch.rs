//! An nf_tables batch, written into the socket's buffer and sent as one transaction:
//!
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

use super::{NFNL_SUBSYS_NFTABLES, Netlink, nft_type};
use crate::netlink::*;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

/// Writes one batch into a reusable buffer, numbering messages from `begin`.
pub(super) struct BatchWriter<'a> {
    pub(super) buf: &'a mut Vec<u8>,
    ops: &'a mut Vec<&'static str>,
    begin: u32,
}

impl<'a> BatchWriter<'a> {
    pub(super) fn new(buf: &'a mut Vec<u8>, ops: &'a mut Vec<&'static str>, begin: u32) -> Self {
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
    pub(super) fn msg(&mut self, family: u8, cmd: u16, flags: u16, op: &'static str) -> usize {
        self.ops.push(op);
        let seq = self.begin.wrapping_add(self.ops.len() as u32);
        let flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        begin_nfmsg(self.buf, nft_type(cmd), flags, seq, family, 0)
    }

    /// Appends `BATCH_END`; returns (seq of `BATCH_BEGIN`, number of seqs used).
    pub(super) fn finish(self) -> (u32, u32) {
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

impl Netlink {
    /// Sends the batch in the send buffer and collects one ack per data message.
    pub(super) fn transact(&mut self, begin: u32) -> Result<(), NetlinkError> {
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
}
