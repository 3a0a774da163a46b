//! Any datagram through the DNS question parser and the reply encoder: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provisioner::dns::wire::{Parsed, parse, respond};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Question(q) = parse(data) {
        let _ = respond(&q, hickory_proto::op::ResponseCode::Refused, Vec::new(), false);
    }
});
