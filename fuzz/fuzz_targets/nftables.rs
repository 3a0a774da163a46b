//! Any datagram on the nf_tables socket and the ruleset monitor (src/firewall/netlink/
//! fuzz.rs): acks, dumps of chains, rules, sets and elements, deletion announcements.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| provisioner::firewall::netlink::fuzz::nftables(data));
