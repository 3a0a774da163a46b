//! Any line through the control protocol as the daemon reads a request (and as
//! provisionerctl reads a reply): a request read encodes and reads back the same, and so
//! does the error the daemon answers with and any reply.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provisioner::control::{Reply, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Request::decode(text.trim_end()) {
        Ok(request) => assert_eq!(Request::decode(&request.encode()), Ok(request)),
        Err(f) => {
            let reply = Reply::from(f);
            assert_eq!(Reply::decode(&reply.encode()).ok(), Some(reply));
        }
    }
    if let Ok(reply) = Reply::decode(text.trim_end()) {
        assert_eq!(Reply::decode(&reply.encode()).ok(), Some(reply));
    }
});
