//! Any datagram on the ctnetlink side of the socket: conntrack dumps and delete acks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| provisioner::firewall::netlink::fuzz::conntrack(data));
