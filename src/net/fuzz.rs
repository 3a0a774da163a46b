//! Entry point for the cargo-fuzz target (fuzz/; feature `fuzzing`, never in the daemon): a
//! datagram on the rtnetlink socket read as the daemon reads one. Every decoder sees every
//! message, whatever its type, so the fuzzer need not find the types first.

use super::bridge::parse_port;
use super::monitor::announces;
use super::neighbours::parse_pinned;
use super::rtnl::msg_index;
use crate::netlink::*;

/// Replies (acks, a bridge fdb entry), dumps (bridge ports, neighbours) and the link
/// monitor's multicast announcements. What is read is what the message says.
pub fn rtnetlink(datagram: &[u8]) {
    for msg in Msgs::new(datagram) {
        let Ok(msg) = msg else { break };
        if msg.ty == NLMSG_ERROR {
            let _ = parse_ack(&msg);
            continue;
        }
        let index = msg_index(msg.payload);
        for bridge in [0, 3] {
            if let Ok(Some(port)) = parse_port(msg.payload, bridge) {
                assert_eq!(Some(port.index as i32), index);
            }
        }
        if let Some(i) = index {
            if let Ok(Some((ip, mac))) = parse_pinned(msg.payload, i as u32) {
                let p = msg.payload;
                assert!(p.windows(4).any(|w| w == ip.octets()));
                assert!(p.windows(6).any(|w| w == mac.0));
            }
        }
        let _ = parse_pinned(msg.payload, 5);
    }
    let _ = announces(datagram);
}
