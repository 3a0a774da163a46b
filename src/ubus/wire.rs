//! ubusd's messages (ubusmsg.h): an 8-byte header (version 0, type, sequence number, peer;
//! big endian) and one blob attribute (id 0) holding ubus's own attributes.

use super::blob::{self, Attr, Attrs};

pub const HEADER: usize = 8;
/// The header and the top attribute's word: what tells a message's length.
pub const PREFIX: usize = HEADER + 4;

// Message types.
pub const HELLO: u8 = 0;
pub const STATUS: u8 = 1;
pub const DATA: u8 = 2;
pub const INVOKE: u8 = 5;
pub const ADD_OBJECT: u8 = 6;

// Attributes.
pub const ATTR_STATUS: u8 = 1;
pub const ATTR_OBJPATH: u8 = 2;
pub const ATTR_OBJID: u8 = 3;
pub const ATTR_METHOD: u8 = 4;
pub const ATTR_SIGNATURE: u8 = 6;
pub const ATTR_DATA: u8 = 7;
pub const ATTR_NO_REPLY: u8 = 10;
const ATTR_MAX: usize = 14;

// Status codes.
pub const OK: u32 = 0;
pub const INVALID_ARGUMENT: u32 = 2;
pub const METHOD_NOT_FOUND: u32 = 3;
pub const NOT_FOUND: u32 = 4;
pub const UNKNOWN_ERROR: u32 = 9;

/// ubusd's own limit on a message (UBUS_MAX_MSGLEN): a longer one ends the connection.
pub const MAX_MSGLEN: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    pub seq: u16,
    pub peer: u32,
}

/// A message's header and its full length on the wire (header included), from its first
/// [`PREFIX`] bytes; `None` if they cannot start a message (another version, a top
/// attribute shorter than its own word).
pub fn prefix(b: &[u8; PREFIX]) -> Option<(Header, usize)> {
    let h = Header {
        version: b[0],
        kind: b[1],
        seq: u16::from_be_bytes([b[2], b[3]]),
        peer: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    };
    let raw = (u32::from_be_bytes([b[8], b[9], b[10], b[11]]) & blob::LEN_MASK) as usize;
    (h.version == 0 && raw >= 4).then_some((h, HEADER + raw))
}

/// ubus's attributes of a message (the top attribute's payload), by id; the last of an id
/// wins, unknown ids are ignored.
pub fn attrs(payload: &[u8]) -> [Option<Attr<'_>>; ATTR_MAX] {
    let mut out = [None; ATTR_MAX];
    for a in Attrs::new(payload) {
        if let Some(slot) = out.get_mut(a.id as usize) {
            *slot = Some(a);
        }
    }
    out
}

/// Starts a message at the end of `buf`; returns where its top attribute starts, for
/// [`end`].
pub fn begin(buf: &mut Vec<u8>, kind: u8, seq: u16, peer: u32) -> usize {
    buf.extend_from_slice(&[0, kind]);
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&peer.to_be_bytes());
    blob::start(buf)
}

/// Ends the message begun at `at`; false if it is over ubusd's limit.
pub fn end(buf: &mut Vec<u8>, at: usize) -> bool {
    // The top attribute's children are padded: its length is a multiple of 4, so what
    // goes out is exactly its raw length, as ubusd reads it.
    blob::end(buf, at, blob::word(0)) && buf.len() - at <= MAX_MSGLEN
}

/// A whole STATUS message: `status` for the request `seq` from `peer` to object `objid`.
pub fn status(buf: &mut Vec<u8>, seq: u16, peer: u32, objid: u32, status: u32) {
    let at = begin(buf, STATUS, seq, peer);
    blob::put_u32(buf, ATTR_STATUS, status);
    blob::put_u32(buf, ATTR_OBJID, objid);
    end(buf, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_message_is_what_libubus_sends() {
        let mut b = Vec::new();
        status(&mut b, 0x0102, 0x0a0b0c0d, 0x11223344, INVALID_ARGUMENT);
        assert_eq!(
            b,
            [
                0,
                STATUS,
                1,
                2,
                0x0a,
                0x0b,
                0x0c,
                0x0d, // header
                0,
                0,
                0,
                20, // top attribute: 4 + 2 * 8
                ATTR_STATUS,
                0,
                0,
                8,
                0,
                0,
                0,
                2, // status
                ATTR_OBJID,
                0,
                0,
                8,
                0x11,
                0x22,
                0x33,
                0x44,
            ]
        );
        let (h, len) = prefix(b[..PREFIX].try_into().unwrap()).unwrap();
        assert_eq!(
            (h.kind, h.seq, h.peer, len),
            (STATUS, 0x0102, 0x0a0b0c0d, b.len())
        );
        let a = attrs(&b[PREFIX..]);
        assert_eq!(a[ATTR_STATUS as usize].unwrap().u32(), Some(2));
        assert_eq!(a[ATTR_OBJID as usize].unwrap().u32(), Some(0x11223344));
        assert!(a[ATTR_DATA as usize].is_none());
    }

    #[test]
    fn prefixes_that_cannot_start_a_message_are_refused() {
        let mut p = [0u8; PREFIX];
        p[11] = 3; // a top attribute shorter than its word
        assert!(prefix(&p).is_none());
        p[11] = 4;
        assert_eq!(prefix(&p).map(|(_, l)| l), Some(PREFIX));
        p[0] = 1; // another version
        assert!(prefix(&p).is_none());
    }
}
