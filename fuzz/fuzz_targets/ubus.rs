//! Any bytes from ubusd, cut into reads of any size, through the session's framing and
//! call decoding (src/ubus/fuzz.rs): never a panic, and a call accepted is a control
//! request that round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| provisioner::ubus::fuzz::session(data));
