//! Any datagram through the hostapd event and station-table parsers: never a panic, and a
//! MAC they return is always spelled in the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provisioner::radio::hostapd::{Event, parse_event, parse_sta};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).to_ascii_lowercase();
    if let Event::StaConnected(mac) | Event::StaDisconnected(mac) = parse_event(data) {
        assert!(text.contains(&mac.to_string()));
    }
    if let Some(station) = parse_sta(data) {
        assert!(text.contains(&station.mac.to_string()));
    }
});
