//! Any bytes through the UCI reader and the schema: an error or a config, never a panic.
//! Bytes, not only UTF-8: libuci reads any (comments need not be text), and so do we.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = provisioner::config::Config::parse_bytes("fuzz", data, false);
});
