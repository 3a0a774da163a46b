//! The router's neighbour (ARP) entries for leased addresses: permanent, with the MAC of
//! the lease. The kernel never lets ARP change a permanent entry, so a client that claims
//! another client's address (or a forged reply to the router's own request) cannot pull
//! that client's DNS answers and downloads to itself; the entry goes when the lease ends.

use std::net::Ipv4Addr;

use crate::core::MacAddr;
use crate::netlink::*;

use super::rtnl::{Rtnl, msg_index};

const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REPLACE: u16 = 0x100;
const NUD_PERMANENT: u16 = 0x80;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDMSG_LEN: usize = 12;

/// `struct ndmsg`: family, pad, pad, ifindex, state, flags, type.
fn put_ndmsg(buf: &mut Vec<u8>, ifindex: u32, state: u16) {
    buf.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    buf.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    buf.extend_from_slice(&state.to_ne_bytes());
    buf.extend_from_slice(&[0, 0]);
}

impl Rtnl {
    /// `ip neigh replace IP lladdr MAC nud permanent dev IFINDEX`.
    pub fn pin_neighbour(
        &mut self,
        ifindex: u32,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<(), NetlinkError> {
        let start = self.begin(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        put_ndmsg(&mut self.buf, ifindex, NUD_PERMANENT);
        put_attr(&mut self.buf, NDA_DST, &ip.octets());
        put_attr(&mut self.buf, NDA_LLADDR, &mac.0);
        self.ack(start, "add neighbour entry")
    }

    /// `ip neigh del IP dev IFINDEX`; an entry that is not there is not an error.
    pub fn unpin_neighbour(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let start = self.begin(RTM_DELNEIGH, NLM_F_ACK);
        put_ndmsg(&mut self.buf, ifindex, 0);
        put_attr(&mut self.buf, NDA_DST, &ip.octets());
        match self.ack(start, "delete neighbour entry") {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// The permanent IPv4 entries on `ifindex`: what a restarted daemon reconciles.
    pub fn pinned_neighbours(
        &mut self,
        ifindex: u32,
    ) -> Result<Vec<(Ipv4Addr, MacAddr)>, NetlinkError> {
        let start = self.begin(RTM_GETNEIGH, NLM_F_DUMP);
        put_ndmsg(&mut self.buf, 0, 0);
        let mut out = Vec::new();
        self.dump(start, "list neighbours", |ty, payload| {
            if ty == RTM_NEWNEIGH {
                out.extend(parse_pinned(payload, ifindex)?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// A neighbour message as (address, MAC), if it is a permanent IPv4 entry on `ifindex`.
/// Pure; never panics.
pub(super) fn parse_pinned(
    payload: &[u8],
    ifindex: u32,
) -> Result<Option<(Ipv4Addr, MacAddr)>, NetlinkError> {
    let index = msg_index(payload).ok_or(NetlinkError::Malformed("short ndmsg"))?;
    let state = ne_u16(payload, 8).ok_or(NetlinkError::Malformed("short ndmsg"))?;
    if payload[0] != libc::AF_INET as u8 || index as u32 != ifindex || state & NUD_PERMANENT == 0 {
        return Ok(None);
    }
    let t = attr_table::<3>(payload.get(NDMSG_LEN..).unwrap_or_default())?;
    let ip: Option<[u8; 4]> = t[usize::from(NDA_DST)].and_then(|p| p.try_into().ok());
    let mac: Option<[u8; 6]> = t[usize::from(NDA_LLADDR)].and_then(|p| p.try_into().ok());
    Ok(ip
        .zip(mac)
        .map(|(ip, mac)| (Ipv4Addr::from(ip), MacAddr(mac))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neigh_msg(ifindex: u32, state: u16, ip: [u8; 4], mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut b = Vec::new();
        put_ndmsg(&mut b, ifindex, state);
        put_attr(&mut b, NDA_DST, &ip);
        if let Some(m) = mac {
            put_attr(&mut b, NDA_LLADDR, &m);
        }
        b
    }

    #[test]
    fn only_permanent_entries_of_the_interface_are_read_back() {
        let ip = [192, 168, 250, 2];
        let mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(
            parse_pinned(&neigh_msg(5, NUD_PERMANENT, ip, Some(mac)), 5).unwrap(),
            Some((Ipv4Addr::from(ip), MacAddr(mac)))
        );
        // Learned by ARP (REACHABLE), another interface, no address yet (INCOMPLETE).
        assert_eq!(
            parse_pinned(&neigh_msg(5, 0x02, ip, Some(mac)), 5).unwrap(),
            None
        );
        assert_eq!(
            parse_pinned(&neigh_msg(6, NUD_PERMANENT, ip, Some(mac)), 5).unwrap(),
            None
        );
        assert_eq!(
            parse_pinned(&neigh_msg(5, NUD_PERMANENT, ip, None), 5).unwrap(),
            None
        );
        for n in 0..30 {
            let mut m = neigh_msg(5, NUD_PERMANENT, ip, Some(mac));
            m.truncate(n);
            let _ = parse_pinned(&m, 5);
        }
    }

    /// Not a test: writes the fuzz target's seeds from these samples (`cargo test --lib
    /// fuzz_seeds -- --ignored`; see README.md, "Fuzzing").
    #[test]
    #[ignore]
    fn fuzz_seeds() {
        let ip = [192, 168, 250, 9];
        let mut m = Vec::new();
        let s = begin_header(&mut m, RTM_NEWNEIGH, 2, 1);
        m.extend(neigh_msg(5, NUD_PERMANENT, ip, Some([2, 0, 0, 0, 0, 1])));
        end_msg(&mut m, s);
        crate::fuzz_seed("rtnetlink", "neighbours", &m);
    }
}
