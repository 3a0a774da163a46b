//! ctnetlink: ending the conntrack entries of addresses whose binding ended.

use super::Netlink;
use crate::netlink::*;

// uapi, as in `linux/netfilter/nfnetlink_conntrack.h`.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_ZONE: u16 = 18;

impl Netlink {
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
        let (got, zone) = flow_from(&payload, [192, 168, 250, 2]).unwrap().unwrap();
        assert_eq!(got, tuple);
        assert_eq!(zone.as_deref(), Some(&[0u8, 5][..]));
        assert!(flow_from(&payload, [192, 168, 250, 3]).unwrap().is_none());
        for cut in 0..payload.len() {
            let _ = flow_from(&payload[..cut], [192, 168, 250, 2]);
        }
    }
}
