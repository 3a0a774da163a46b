//! Any datagram from nfnetlink_log through the reader and then as the daemon dispatches a
//! logged packet (ARP, spoofed source, refused flow): what is read is what the bytes say.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provisioner::core::events::FlowBlock;
use provisioner::firewall::nflog::{self, Arp, Flow};

fuzz_target!(|data: &[u8]| {
    for l in nflog::logged(data) {
        let p = &l.payload;
        if let Some(arp) = Arp::parse(p) {
            assert_eq!(arp.sender_mac.0, p[8..14]);
            assert_eq!(arp.target_ip.octets(), p[24..28]);
        }
        if let Some(f) = Flow::parse(p) {
            assert_eq!(f.src.octets(), p[12..16]);
            assert!(f.port.is_none() || f.proto == 6 || f.proto == 17);
        }
        if let Some(why) = l.prefix.strip_prefix(nflog::PREFIX_FLOW) {
            if let Some(b) = FlowBlock::from_name(why) {
                assert_eq!(b.as_str(), why);
            }
        }
    }
});
