//! Any frame through the raw listener's IPv4/UDP reader and any datagram through the DHCP
//! request parser: a request or nothing, never a panic; and every reply the daemon can
//! build for a request read encodes, goes back to that client and is no client message.
#![no_main]
use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::Decodable;
use dhcproto::v4::{Message, Opcode};
use libfuzzer_sys::fuzz_target;
use provisioner::core::leases::DhcpReply;
use provisioner::dhcp::{self, Params};

fuzz_target!(|data: &[u8]| {
    if let Some(r) = dhcp::udp_payload(data) {
        assert!(r.start >= 28 && r.start <= r.end && r.end <= data.len());
        request(&data[r]);
    }
    request(data);
});

fn request(datagram: &[u8]) {
    let Some(m) = dhcp::parse(datagram) else {
        return;
    };
    let p = Params {
        router: Ipv4Addr::new(10, 42, 0, 1),
        subnet: "10.42.0.0/24".parse().unwrap(),
    };
    let ip = Ipv4Addr::new(10, 42, 0, 7);
    for reply in [
        DhcpReply::Offer {
            ip,
            lease: Duration::from_secs(3600),
        },
        DhcpReply::Ack {
            ip,
            lease: Duration::MAX,
        },
        DhcpReply::Nak,
    ] {
        let (bytes, _) = dhcp::reply(&m.to, reply, &p);
        assert!(
            dhcp::parse(&bytes).is_none(),
            "a reply is no client message"
        );
        let back = Message::from_bytes(&bytes).expect("our reply decodes");
        assert_eq!(back.opcode(), Opcode::BootReply);
        assert_eq!(back.xid(), m.to.xid);
        assert_eq!(back.chaddr()[..6], m.to.chaddr.0);
    }
}
