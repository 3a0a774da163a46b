//! Any bytes through the SOCKS5 greeting and request parsers, from every split point (the
//! bytes arrive in pieces): never a panic, never more taken than given, and the same
//! verdict whatever follows a complete or malformed prefix.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provisioner::socks::proto::{Parse, greeting, request};

fuzz_target!(|data: &[u8]| {
    let whole = request(data);
    if let Parse::Done(_, n) = &whole {
        assert!(*n <= data.len());
    }
    if let Parse::Done((), n) = greeting(data) {
        assert!(n <= data.len());
        // What a client sends after its greeting is its request.
        let _ = request(&data[n..]);
    }
    for i in 0..data.len() {
        match request(&data[..i]) {
            Parse::Incomplete => {}
            prefix => assert_eq!(prefix, whole, "a prefix decided otherwise"),
        }
    }
});
