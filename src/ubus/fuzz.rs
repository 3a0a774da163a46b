//! Entry point for the cargo-fuzz target (fuzz/; feature `fuzzing`, never in the daemon):
//! bytes from ubusd read as a session reads them, through the same framing and decoders.

use super::wire::{self, Header};
use super::{Frame, Inbox, invoke};
use crate::control::Request;

/// The object id ubusd gave us (seeds for the fuzzer use it).
pub const OBJID: u32 = 0x2a;

/// `input[0]` is how many bytes each read returns (as a stream socket may cut them), the
/// rest what ubusd sends: registration replies and calls. A call the daemon accepts is a
/// control request that travels the control protocol unchanged.
pub fn session(input: &[u8]) {
    let Some((&chunk, stream)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut inbox = Inbox::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        loop {
            let frame = match inbox.frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return, // the session ends, as the daemon's does
            };
            out.clear();
            match frame {
                Frame::Skipped(h) if h.kind == wire::INVOKE => {
                    wire::status(&mut out, h.seq, h.peer, OBJID, wire::INVALID_ARGUMENT);
                }
                Frame::Skipped(_) => {}
                Frame::Message(h, n) => {
                    message(h, inbox.payload(n), &mut out);
                    inbox.consume(n);
                }
            }
        }
        let n = chunk
            .min(stream.len() - fed)
            .min(inbox.buf.len() - inbox.len);
        if n == 0 {
            return;
        }
        inbox.buf[inbox.len..inbox.len + n].copy_from_slice(&stream[fed..fed + n]);
        inbox.len += n;
        fed += n;
    }
}

fn message(h: Header, payload: &[u8], out: &mut Vec<u8>) {
    // Registration: the object id and the status, as Session::register reads them.
    let a = wire::attrs(payload);
    let _ = a[wire::ATTR_OBJID as usize].and_then(|a| a.u32());
    let _ = a[wire::ATTR_STATUS as usize].and_then(|a| a.u32());
    if h.kind != wire::INVOKE {
        return;
    }
    if let Some((request, _)) = invoke(OBJID, h, payload, out) {
        assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
}
