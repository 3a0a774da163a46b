//! Any text through the UCI parser and the schema: an error or a config, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = provisioner::config::Config::parse("fuzz", text, false);
    }
});
