//! The ports of the provisioning bridge, and their isolation.
//!
//! An isolated port forwards to non-isolated ports only (`bridge link set dev X isolated
//! on`); the bridge itself, where the router listens, is not a port. With every port
//! isolated, a client on any port (a wired port, a second SSID's interface, a mesh link)
//! can reach the router and nobody else, for every kind of frame, and hairpin forwarding
//! back out of the port it came in on is refused as well. netifd sets the same flag (a
//! wifi-iface's `bridge_isolate`, a device's `isolate`), which is why this and not a
//! bridge-family nft table: matching the bridge there needs `nft_meta_bridge`, which not
//! every kernel has, and the table would be a hook on every frame of the home LAN's
//! bridge too.

use crate::core::MacAddr;
use crate::netlink::*;

use super::rtnl::{IFINFOMSG_LEN, Rtnl, msg_index, put_ifinfomsg};

const AF_BRIDGE: u8 = libc::AF_BRIDGE as u8;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_BRPORT_ISOLATED: u16 = 33;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NDA_LLADDR: u16 = 2;
const NDA_MASTER: u16 = 9;

/// A port of a bridge, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub index: u32,
    pub name: String,
    pub isolated: bool,
}

impl Rtnl {
    /// The ports of the bridge with index `bridge` (none if it is no bridge).
    pub fn bridge_ports(&mut self, bridge: u32) -> Result<Vec<Port>, NetlinkError> {
        let start = self.begin(RTM_GETLINK, NLM_F_DUMP);
        put_ifinfomsg(&mut self.buf, AF_BRIDGE, 0);
        let mut ports = Vec::new();
        self.dump(start, "list bridge ports", |ty, payload| {
            if ty == RTM_NEWLINK {
                ports.extend(parse_port(payload, bridge)?);
            }
            Ok(())
        })?;
        Ok(ports)
    }

    /// The port of bridge `bridge` that the bridge last saw `mac` on (its forwarding
    /// database, learned from the frame itself before the bridge passed it up): which port
    /// a request came in on. `None` if the bridge does not know it (or is no bridge).
    pub fn port_of(&mut self, bridge: u32, mac: MacAddr) -> Result<Option<u32>, NetlinkError> {
        let start = self.begin(RTM_GETNEIGH, 0);
        put_fdb_get(&mut self.buf, bridge, mac);
        let mut port = None;
        let r = self.get(start, "look up a bridge fdb entry", |ty, payload| {
            if ty == RTM_NEWNEIGH {
                port = msg_index(payload).map(|i| i as u32);
            }
        });
        match r {
            Ok(()) => Ok(port),
            Err(e)
                if matches!(
                    e.errno(),
                    Some(libc::ENOENT | libc::EINVAL | libc::EOPNOTSUPP)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Isolates the bridge port with index `port`.
    pub fn isolate_port(&mut self, port: u32) -> Result<(), NetlinkError> {
        let start = self.begin(RTM_SETLINK, NLM_F_ACK);
        put_isolate(&mut self.buf, port);
        self.ack(start, "isolate bridge port")
    }
}

/// `bridge fdb get MAC br BRIDGE`: an `ndmsg` of the bridge family, the MAC and the bridge.
fn put_fdb_get(buf: &mut Vec<u8>, bridge: u32, mac: MacAddr) {
    buf.extend_from_slice(&[AF_BRIDGE, 0, 0, 0]);
    buf.extend_from_slice(&0i32.to_ne_bytes());
    buf.extend_from_slice(&[0; 4]); // state, flags, type
    put_attr(buf, NDA_LLADDR, &mac.0);
    put_attr(buf, NDA_MASTER, &bridge.to_ne_bytes());
}

fn put_isolate(buf: &mut Vec<u8>, port: u32) {
    put_ifinfomsg(buf, AF_BRIDGE, port as i32);
    let nest = begin_nest(buf, IFLA_PROTINFO);
    put_attr(buf, IFLA_BRPORT_ISOLATED, &[1]);
    end_nest(buf, nest);
}

/// A bridge-family link message as a [`Port`], if it is a port of `bridge`. Pure; never
/// panics.
pub(super) fn parse_port(payload: &[u8], bridge: u32) -> Result<Option<Port>, NetlinkError> {
    let index = msg_index(payload).ok_or(NetlinkError::Malformed("short ifinfomsg"))?;
    let attrs = payload.get(IFINFOMSG_LEN..).unwrap_or_default();
    let t = attr_table::<13>(attrs)?;
    let master = t[usize::from(IFLA_MASTER)].and_then(|p| p.try_into().ok());
    if master.map(u32::from_ne_bytes) != Some(bridge) {
        return Ok(None);
    }
    let isolated = match t[usize::from(IFLA_PROTINFO)] {
        Some(info) => attr_table::<34>(info)?[usize::from(IFLA_BRPORT_ISOLATED)] == Some(&[1][..]),
        None => false,
    };
    Ok(Some(Port {
        index: index as u32,
        name: t[usize::from(IFLA_IFNAME)].map(string).unwrap_or_default(),
        isolated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bridge-family link message as the kernel sends it.
    fn link_msg(index: i32, name: &str, master: Option<u32>, isolated: Option<u8>) -> Vec<u8> {
        let mut b = Vec::new();
        put_ifinfomsg(&mut b, AF_BRIDGE, index);
        put_str(&mut b, IFLA_IFNAME, name);
        if let Some(m) = master {
            put_attr(&mut b, IFLA_MASTER, &m.to_ne_bytes());
        }
        if let Some(iso) = isolated {
            let n = begin_nest(&mut b, IFLA_PROTINFO);
            put_attr(&mut b, 1, &[3]); // IFLA_BRPORT_STATE: forwarding
            put_attr(&mut b, IFLA_BRPORT_ISOLATED, &[iso]);
            end_nest(&mut b, n);
        }
        b
    }

    #[test]
    fn ports_of_the_bridge_only_with_their_isolation() {
        let p = parse_port(&link_msg(7, "prov0-c1", Some(3), Some(0)), 3).unwrap();
        assert_eq!(
            p,
            Some(Port {
                index: 7,
                name: "prov0-c1".into(),
                isolated: false
            })
        );
        let p = parse_port(&link_msg(8, "lan1", Some(3), Some(1)), 3).unwrap();
        assert!(p.unwrap().isolated);
        // Another bridge's port, and the bridge itself (no master).
        assert_eq!(
            parse_port(&link_msg(9, "lan2", Some(4), Some(0)), 3).unwrap(),
            None
        );
        assert_eq!(
            parse_port(&link_msg(3, "prov0", None, None), 3).unwrap(),
            None
        );
        // Garbage never panics.
        for n in 0..40 {
            let mut m = link_msg(7, "prov0-c1", Some(3), Some(1));
            m.truncate(n);
            let _ = parse_port(&m, 3);
        }
    }

    #[test]
    fn isolate_is_setlink_with_the_brport_flag() {
        let mut b = Vec::new();
        put_isolate(&mut b, 7);
        // ifinfomsg for AF_BRIDGE and the port, then PROTINFO { ISOLATED = 1 }, nested.
        let mut want = vec![AF_BRIDGE, 0, 0, 0];
        want.extend_from_slice(&7i32.to_ne_bytes());
        want.extend_from_slice(&[0; 8]);
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&(IFLA_PROTINFO | NLA_F_NESTED).to_ne_bytes());
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&IFLA_BRPORT_ISOLATED.to_ne_bytes());
        want.extend_from_slice(&[1, 0, 0, 0]);
        assert_eq!(b, want);
    }

    /// Not a test: writes the fuzz target's seeds from these samples (`cargo test --lib
    /// fuzz_seeds -- --ignored`; see README.md, "Fuzzing").
    #[test]
    #[ignore]
    fn fuzz_seeds() {
        let msg = |ty: u16, payload: &[u8]| {
            let mut m = Vec::new();
            let s = begin_header(&mut m, ty, 2, 1);
            m.extend_from_slice(payload);
            end_msg(&mut m, s);
            m
        };
        let mut dump = msg(RTM_NEWLINK, &link_msg(7, "prov0-c1", Some(3), Some(0)));
        dump.extend(msg(RTM_NEWLINK, &link_msg(3, "prov0", None, None)));
        dump.extend(msg(crate::netlink::NLMSG_DONE, &[0; 4]));
        crate::fuzz_seed("rtnetlink", "ports", &dump);
        let mut fdb = Vec::new();
        put_fdb_get(&mut fdb, 3, MacAddr([2, 0, 0, 0, 0, 1]));
        crate::fuzz_seed("rtnetlink", "fdb", &msg(RTM_NEWNEIGH, &fdb));
        crate::fuzz_seed(
            "rtnetlink",
            "ack",
            &crate::netlink::error_msg(crate::netlink::NLM_F_CAPPED, 0, &[], None),
        );
    }
}
