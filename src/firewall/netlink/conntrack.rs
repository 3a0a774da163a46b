//! ctnetlink: ending the conntrack entries of addresses whose binding ended.
//!
//! One dump of the IPv4 conntrack table per call, however many addresses, filtered here;
//! then the entries found are deleted by their original tuple. The kernel can filter a
//! dump itself (`CTA_FILTER`), but only from Linux 5.8 and only for one address per dump;
//! an older kernel ignores the attribute and dumps everything, so the filtering here would
//! be needed anyway.

use std::net::Ipv4Addr;

use super::Netlink;
use crate::netlink::*;

// uapi, as in `linux/netfilter/nfnetlink_conntrack.h`.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_FLAG_CTA_IP_SRC: u32 = 1 << 0;

/// Up to this many addresses, one dump each that the kernel filters by original source
/// (`CTA_FILTER`, Linux 5.8+): under a DNS load the table holds tens of thousands of
/// entries, and a whole dump of them took 10-20 ms of an operator's `evict`. More
/// addresses (a reload ending many bindings) share one whole dump.
const FILTERED_DUMPS: usize = 4;

/// Deletes per send: keeps the send buffer and the queued acks (about 1 KiB of kernel
/// memory each) bounded when one client left thousands of entries behind.
const DELETES_PER_SEND: usize = 1024;

const fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

impl Netlink {
    /// Ends every IPv4 connection whose original source is one of `ips` (clients that are
    /// gone): their conntrack entries are deleted, so no reply of an old flow reaches them
    /// any more, a NAT mapping back to them is gone, and an offloaded flow (fw4's
    /// flowtable, which bypasses our chains) is torn down. One dump of the table for all of
    /// them. Returns how many entries were deleted.
    pub fn end_flows(&mut self, ips: &[Ipv4Addr]) -> Result<usize, NetlinkError> {
        let mut sources: Vec<[u8; 4]> = ips.iter().map(Ipv4Addr::octets).collect();
        sources.sort_unstable();
        sources.dedup();
        if sources.is_empty() {
            return Ok(0);
        }
        // The original tuples (and zones) of the entries to delete. What the kernel sends
        // is filtered here too: a kernel without CTA_FILTER ignores it and sends it all
        // (or a dump interrupted by changes may repeat entries: a delete of one already
        // gone is fine).
        let mut doomed: Vec<Flow> = Vec::new();
        let filters: Vec<Option<[u8; 4]>> = if sources.len() <= FILTERED_DUMPS {
            sources.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for source in filters {
            self.dump_conntrack(source, |payload| {
                if let Some(found) = flow_from(payload, &sources)? {
                    doomed.push(found);
                }
                Ok(())
            })?;
        }
        let mut deleted = 0;
        for flows in doomed.chunks(DELETES_PER_SEND) {
            deleted += self.delete_flows(flows)?;
        }
        Ok(deleted)
    }

    /// Ends every IPv4 connection for which `judge` names a tag (below `tags`), reading
    /// its original direction: one dump of the table, then the deletes. Returns how many
    /// entries were ended per tag. For destinations an allow-list change closed.
    pub fn end_flows_where(
        &mut self,
        tags: usize,
        mut judge: impl FnMut(&crate::core::closing::Flow) -> Option<usize>,
    ) -> Result<Vec<usize>, NetlinkError> {
        let mut per = vec![0; tags];
        let mut doomed: Vec<Flow> = Vec::new();
        self.dump_conntrack(None, |payload| {
            if let Some((flow, key)) = flow_key(payload)? {
                if let Some(n) = judge(&key).and_then(|tag| per.get_mut(tag)) {
                    *n += 1;
                    doomed.push(flow);
                }
            }
            Ok(())
        })?;
        for flows in doomed.chunks(DELETES_PER_SEND) {
            self.delete_flows(flows)?;
        }
        Ok(per)
    }

    /// Dumps the IPv4 conntrack table, or (a kernel with CTA_FILTER) only the entries whose
    /// original source is `source`, handing each message's payload to `each`.
    pub(super) fn dump_conntrack(
        &mut self,
        source: Option<[u8; 4]>,
        mut each: impl FnMut(&[u8]) -> Result<(), NetlinkError>,
    ) -> Result<(), NetlinkError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.send.clear();
        let start = begin_nfmsg(
            &mut self.send,
            ct_type(IPCTNL_MSG_CT_GET),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            libc::AF_INET as u8,
            0,
        );
        if let Some(src) = source {
            let tuple = begin_nest(&mut self.send, CTA_TUPLE_ORIG);
            let ip = begin_nest(&mut self.send, CTA_TUPLE_IP);
            put_attr(&mut self.send, CTA_IP_V4_SRC, &src);
            end_nest(&mut self.send, ip);
            end_nest(&mut self.send, tuple);
            let filter = begin_nest(&mut self.send, CTA_FILTER);
            put_attr(
                &mut self.send,
                CTA_FILTER_ORIG_FLAGS,
                &CTA_FILTER_FLAG_CTA_IP_SRC.to_ne_bytes(),
            );
            end_nest(&mut self.send, filter);
        }
        end_msg(&mut self.send, start);
        self.dump(seq, "dump conntrack", |msg| each(msg.payload))
            .map(drop)
    }

    /// One delete per entry, all in one send; an entry that ended meanwhile is fine.
    fn delete_flows(&mut self, flows: &[Flow]) -> Result<usize, NetlinkError> {
        self.send.clear();
        let first = self.seq;
        for (tuple, zone) in flows {
            let start = begin_nfmsg(
                &mut self.send,
                ct_type(IPCTNL_MSG_CT_DELETE),
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
        self.reserve_buffers(self.send.len(), flows.len())?;
        self.drain_stale();
        self.send_request()?;
        let (mut acked, mut deleted) = (0, 0);
        while acked < flows.len() {
            let len = self.recv_datagram()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                if msg.ty != NLMSG_ERROR || msg.seq.wrapping_sub(first) as usize >= flows.len() {
                    continue;
                }
                acked += 1;
                match parse_ack(&msg)? {
                    (0, _) => deleted += 1,
                    (libc::ENOENT, _) => {}
                    (errno, message) => {
                        self.dirty = acked < flows.len();
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
}

/// A conntrack entry to delete: its original tuple (nested attributes) and its zone.
pub(super) type Flow = (Vec<u8>, Option<Vec<u8>>);

/// A conntrack dump message as a [`Flow`], if its original source address is one of
/// `sources` (sorted). Pure; never panics.
pub(super) fn flow_from(payload: &[u8], sources: &[[u8; 4]]) -> Result<Option<Flow>, NetlinkError> {
    let t = attr_table::<19>(nfgen_attrs(payload)?)?;
    let Some(tuple) = t[usize::from(CTA_TUPLE_ORIG)] else {
        return Ok(None);
    };
    let ip = attr_table::<2>(tuple)?[usize::from(CTA_TUPLE_IP)];
    let Some(ip) = ip else {
        return Ok(None);
    };
    let source = attr_table::<2>(ip)?[usize::from(CTA_IP_V4_SRC)];
    let ours = source
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .is_some_and(|s| sources.binary_search(&s).is_ok());
    if !ours {
        return Ok(None);
    }
    Ok(Some((
        tuple.to_vec(),
        t[usize::from(CTA_ZONE)].map(<[u8]>::to_vec),
    )))
}

/// A conntrack dump message as a [`Flow`] to delete and its original direction's
/// addresses, protocol and destination port (0 without ports). Pure; never panics.
pub(super) fn flow_key(
    payload: &[u8],
) -> Result<Option<(Flow, crate::core::closing::Flow)>, NetlinkError> {
    let t = attr_table::<19>(nfgen_attrs(payload)?)?;
    let Some(tuple) = t[usize::from(CTA_TUPLE_ORIG)] else {
        return Ok(None);
    };
    let parts = attr_table::<3>(tuple)?;
    let (Some(ip), Some(proto)) = (
        parts[usize::from(CTA_TUPLE_IP)],
        parts[usize::from(CTA_TUPLE_PROTO)],
    ) else {
        return Ok(None);
    };
    let ip = attr_table::<3>(ip)?;
    let addr = |ty: u16| ip[usize::from(ty)].and_then(|a| <[u8; 4]>::try_from(a).ok());
    let (Some(src), Some(dst)) = (addr(CTA_IP_V4_SRC), addr(CTA_IP_V4_DST)) else {
        return Ok(None);
    };
    let proto = attr_table::<4>(proto)?;
    let Some(&[num]) = proto[usize::from(CTA_PROTO_NUM)] else {
        return Ok(None);
    };
    let dport = proto[usize::from(CTA_PROTO_DST_PORT)]
        .and_then(|p| <[u8; 2]>::try_from(p).ok())
        .map_or(0, u16::from_be_bytes);
    Ok(Some((
        (tuple.to_vec(), t[usize::from(CTA_ZONE)].map(<[u8]>::to_vec)),
        crate::core::closing::Flow {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            proto: num,
            dport,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ours = [[10, 0, 0, 1], [192, 168, 250, 2], [192, 168, 250, 9]];
        let (got, zone) = flow_from(&payload, &ours).unwrap().unwrap();
        assert_eq!(got, tuple);
        assert_eq!(zone.as_deref(), Some(&[0u8, 5][..]));
        assert!(
            flow_from(&payload, &[[192, 168, 250, 3]])
                .unwrap()
                .is_none()
        );
        assert!(flow_from(&payload, &[]).unwrap().is_none());
        for cut in 0..payload.len() {
            let _ = flow_from(&payload[..cut], &ours);
        }
    }

    #[test]
    fn conntrack_entries_are_read_as_their_original_direction() {
        let nest = |ty: u16, inner: &[u8]| {
            let mut a = Vec::new();
            put_attr(&mut a, ty | NLA_F_NESTED, inner);
            a
        };
        let mut ips = Vec::new();
        put_attr(&mut ips, CTA_IP_V4_SRC, &[192, 168, 250, 2]);
        put_attr(&mut ips, CTA_IP_V4_DST, &[11, 1, 0, 20]);
        let mut proto = Vec::new();
        put_attr(&mut proto, CTA_PROTO_NUM, &[6]);
        put_attr(&mut proto, 2, &[0xc0, 0x00]);
        put_attr(&mut proto, CTA_PROTO_DST_PORT, &[0x23, 0x28]);
        let mut tuple = nest(CTA_TUPLE_IP, &ips);
        tuple.extend(nest(CTA_TUPLE_PROTO, &proto));
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(nest(CTA_TUPLE_ORIG, &tuple));
        let ((got, zone), key) = flow_key(&payload).unwrap().unwrap();
        assert_eq!(got, tuple);
        assert_eq!(zone, None);
        assert_eq!(
            key,
            crate::core::closing::Flow {
                src: Ipv4Addr::new(192, 168, 250, 2),
                dst: Ipv4Addr::new(11, 1, 0, 20),
                proto: 6,
                dport: 9000,
            }
        );
        for cut in 0..payload.len() {
            let _ = flow_key(&payload[..cut]);
        }
    }

    /// Not a test: writes the fuzz target's seeds from these samples (`cargo test --lib
    /// fuzz_seeds -- --ignored`; see README.md, "Fuzzing").
    #[test]
    #[ignore]
    fn fuzz_seeds() {
        let nest = |ty: u16, inner: &[u8]| {
            let mut a = Vec::new();
            put_attr(&mut a, ty | NLA_F_NESTED, inner);
            a
        };
        let mut ips = Vec::new();
        put_attr(&mut ips, CTA_IP_V4_SRC, &[192, 168, 250, 2]);
        put_attr(&mut ips, CTA_IP_V4_DST, &[11, 1, 0, 20]);
        let mut proto = Vec::new();
        put_attr(&mut proto, CTA_PROTO_NUM, &[6]);
        put_attr(&mut proto, CTA_PROTO_DST_PORT, &[0x23, 0x28]);
        let mut tuple = nest(CTA_TUPLE_IP, &ips);
        tuple.extend(nest(CTA_TUPLE_PROTO, &proto));
        let mut dump = Vec::new();
        for zone in [None, Some([0, 5])] {
            let s = begin_nfmsg(&mut dump, ct_type(0), 2, 9, 2, 0); // IPCTNL_MSG_CT_NEW
            dump.extend(nest(CTA_TUPLE_ORIG, &tuple));
            if let Some(z) = zone {
                put_attr(&mut dump, CTA_ZONE, &z);
            }
            end_msg(&mut dump, s);
        }
        let s = begin_nfmsg(&mut dump, NLMSG_DONE, 2, 9, 0, 0);
        end_msg(&mut dump, s);
        crate::fuzz_seed("conntrack", "dump", &dump);
        crate::fuzz_seed(
            "conntrack",
            "acks",
            &[
                error_msg(NLM_F_CAPPED, 0, &[], None),
                error_msg(NLM_F_CAPPED | NLM_F_ACK_TLVS, -libc::ENOENT, &[], Some("x")),
            ]
            .concat(),
        );
    }
}
