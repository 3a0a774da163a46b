//! Any datagram on the rtnetlink socket and the link monitor (src/net/fuzz.rs): acks, a
//! bridge fdb entry, dumps of bridge ports and neighbours, new-link announcements.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| provisioner::net::fuzz::rtnetlink(data));
