//! Any datagram through the DHCP request parser: a request or nothing, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = provisioner::dhcp::parse(data);
});
