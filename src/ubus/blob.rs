//! libubox's blob and blobmsg formats, as ubusd speaks them on its socket.
//!
//! A blob attribute is a 32-bit word (big endian: bit 31 "extended", i.e. blobmsg; bits
//! 24-30 the id or type; bits 0-23 the length including the word) and its payload, padded
//! to 4 bytes (the padding is not in the length). A blobmsg attribute is an extended one
//! whose payload starts with a name: a big-endian u16 length, the bytes, a NUL, padded to
//! 4. Tables and arrays hold blobmsg attributes (an array's are unnamed); strings end in a
//! NUL; integers are big endian; bool is int8.

/// Blob attribute word: the extended flag, the id, the length.
pub const EXTENDED: u32 = 0x8000_0000;
const ID_MASK: u32 = 0x7f00_0000;
const ID_SHIFT: u32 = 24;
pub const LEN_MASK: u32 = 0x00ff_ffff;
pub const ALIGN: usize = 4;

/// Plain blob attribute types (for ubus's own attributes).
pub const BLOB_NESTED: u8 = 1;
pub const BLOB_STRING: u8 = 3;
pub const BLOB_INT8: u8 = 4;
pub const BLOB_INT32: u8 = 6;

/// blobmsg types.
pub const UNSPEC: u8 = 0;
pub const ARRAY: u8 = 1;
pub const TABLE: u8 = 2;
pub const STRING: u8 = 3;
pub const INT64: u8 = 4;
pub const INT32: u8 = 5;
pub const INT16: u8 = 6;
pub const INT8: u8 = 7;
pub const DOUBLE: u8 = 8;

pub const fn pad(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

// ---- writing ----------------------------------------------------------------------------

/// Starts an attribute at the end of `buf` (which must be 4-aligned there): its word, to
/// be set by [`end`]; returns where it starts.
pub fn start(buf: &mut Vec<u8>) -> usize {
    debug_assert_eq!(buf.len() % ALIGN, 0);
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    at
}

/// Ends the attribute started at `at`: its word (the length is up to here), then the
/// padding. False if it is longer than a blob length can say.
pub fn end(buf: &mut Vec<u8>, at: usize, word: u32) -> bool {
    let len = buf.len() - at;
    if len > LEN_MASK as usize {
        return false;
    }
    let w = word | len as u32;
    buf[at..at + 4].copy_from_slice(&w.to_be_bytes());
    buf.resize(pad(buf.len()), 0);
    true
}

/// A plain blob attribute's word for `id`.
pub fn word(id: u8) -> u32 {
    (u32::from(id) << ID_SHIFT) & ID_MASK
}

/// A blobmsg attribute's word for `ty`.
pub fn msg_word(ty: u8) -> u32 {
    EXTENDED | word(ty)
}

pub fn put_u32(buf: &mut Vec<u8>, id: u8, v: u32) {
    let at = start(buf);
    buf.extend_from_slice(&v.to_be_bytes());
    end(buf, at, word(id));
}

pub fn put_str(buf: &mut Vec<u8>, id: u8, s: &str) {
    let at = start(buf);
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
    end(buf, at, word(id));
}

/// Starts a blobmsg attribute named `name` (empty in an array): its word, then the name
/// header. The payload follows; [`end`] with [`msg_word`] closes it.
pub fn msg_start(buf: &mut Vec<u8>, name: &[u8]) -> usize {
    let at = start(buf);
    // Names longer than a u16 are cut: ours are a method's or a field's.
    let name = &name[..name.len().min(u16::MAX as usize)];
    buf.extend_from_slice(&(name.len() as u16).to_be_bytes());
    buf.extend_from_slice(name);
    buf.push(0);
    buf.resize(pad(buf.len()), 0);
    at
}

// ---- reading ----------------------------------------------------------------------------

/// One attribute, borrowed from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attr<'a> {
    pub id: u8,
    pub extended: bool,
    /// The payload (without the word).
    pub data: &'a [u8],
}

/// The attributes in `bytes`, one after the other; stops at the first that does not fit
/// (as libubox's blob_for_each_attr does), never reads out of bounds.
#[derive(Clone, Copy, Debug)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(bytes: &'a [u8]) -> Attrs<'a> {
        Attrs { rest: bytes }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;
    fn next(&mut self) -> Option<Attr<'a>> {
        let head: [u8; 4] = self.rest.get(..4)?.try_into().ok()?;
        let w = u32::from_be_bytes(head);
        let len = (w & LEN_MASK) as usize;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let attr = Attr {
            id: ((w & ID_MASK) >> ID_SHIFT) as u8,
            extended: w & EXTENDED != 0,
            data: &self.rest[4..len],
        };
        self.rest = &self.rest[pad(len).min(self.rest.len())..];
        Some(attr)
    }
}

impl<'a> Attr<'a> {
    pub fn u32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.data.get(..4)?.try_into().ok()?))
    }

    /// A plain string attribute: up to its first NUL (as C reads it), which must be there.
    pub fn str(&self) -> Option<&'a [u8]> {
        c_str(self.data)
    }

    /// This attribute as a blobmsg one: its name and value, if well formed.
    pub fn msg(&self) -> Option<(&'a [u8], Value<'a>)> {
        if !self.extended {
            return None;
        }
        let namelen = u16::from_be_bytes(self.data.get(..2)?.try_into().ok()?) as usize;
        let hdrlen = pad(2 + namelen + 1);
        if self.data.len() < hdrlen || self.data[2 + namelen] != 0 {
            return None;
        }
        let name = &self.data[2..2 + namelen];
        let p = &self.data[hdrlen..];
        let int = |n: usize| -> Option<i64> {
            let b = p.get(..n)?;
            Some(match n {
                1 => i64::from(b[0] as i8),
                2 => i64::from(i16::from_be_bytes(b.try_into().ok()?)),
                4 => i64::from(i32::from_be_bytes(b.try_into().ok()?)),
                _ => i64::from_be_bytes(b.try_into().ok()?),
            })
        };
        let value = match self.id {
            UNSPEC => Value::Unspec,
            ARRAY => Value::Array(Attrs::new(p)),
            TABLE => Value::Table(Attrs::new(p)),
            STRING => Value::Str(c_str(p)?),
            INT64 => Value::Int(int(8)?),
            INT32 => Value::Int(int(4)?),
            INT16 => Value::Int(int(2)?),
            INT8 => Value::Bool(int(1)? != 0),
            DOUBLE => Value::Double(f64::from_bits(u64::from_be_bytes(
                p.get(..8)?.try_into().ok()?,
            ))),
            _ => return None,
        };
        Some((name, value))
    }
}

fn c_str(b: &[u8]) -> Option<&[u8]> {
    let nul = b.iter().position(|&c| c == 0)?;
    Some(&b[..nul])
}

/// A blobmsg value; tables and arrays are read lazily.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Unspec,
    Table(Attrs<'a>),
    Array(Attrs<'a>),
    Str(&'a [u8]),
    /// int16, int32, int64.
    Int(i64),
    /// int8 (blobmsg's bool).
    Bool(bool),
    Double(f64),
}

impl Value<'_> {
    /// What a caller calls it, in an error.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Unspec => "null",
            Value::Table(_) => "a table",
            Value::Array(_) => "an array",
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Double(_) => "a double",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_big_endian_padded_and_read_back() {
        let mut b = Vec::new();
        put_u32(&mut b, 3, 0x0102_0304);
        put_str(&mut b, 4, "ab");
        assert_eq!(
            b,
            [
                0x03, 0, 0, 8, 1, 2, 3, 4, // id 3, length 8, the value
                0x04, 0, 0, 7, b'a', b'b', 0, 0, // id 4, length 7 (with the NUL), padded
            ]
        );
        let attrs: Vec<Attr> = Attrs::new(&b).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!((attrs[0].id, attrs[0].u32()), (3, Some(0x0102_0304)));
        assert_eq!((attrs[1].id, attrs[1].str()), (4, Some(&b"ab"[..])));

        // A blobmsg int32 named "port", as blobmsg_add_u32 writes it.
        let mut m = Vec::new();
        let at = msg_start(&mut m, b"port");
        m.extend_from_slice(&443u32.to_be_bytes());
        assert!(end(&mut m, at, msg_word(INT32)));
        assert_eq!(
            m,
            [
                0x85, 0, 0, 16, 0, 4, b'p', b'o', b'r', b't', 0, 0, 0, 0, 0x01, 0xbb
            ]
        );
        let a = Attrs::new(&m).next().unwrap();
        let (name, v) = a.msg().unwrap();
        assert_eq!(name, b"port");
        assert!(matches!(v, Value::Int(443)), "{v:?}");
    }

    #[test]
    fn malformed_attributes_end_the_walk_or_read_as_none() {
        // Length under the word, over the bytes, a name without its NUL, a string without
        // one, a short integer, an unknown type.
        for bytes in [&[0u8, 0, 0, 3][..], &[0, 0, 0, 9, 1, 2, 3, 4], &[0, 0][..]] {
            assert_eq!(Attrs::new(bytes).count(), 0, "{bytes:?}");
        }
        for bytes in [
            &[0x83u8, 0, 0, 12, 0, 3, b'a', b'b', b'c', 1, 0, 0][..],
            &[0x83, 0, 0, 9, 0, 0, 0, 0, b'x'],
            &[0x85, 0, 0, 10, 0, 0, 0, 0, 1, 2],
            &[0x8f, 0, 0, 8, 0, 0, 0, 0],
            &[0x03, 0, 0, 8, 0, 0, 0, 0],
        ] {
            let a = Attrs::new(bytes).next().unwrap();
            assert!(a.msg().is_none(), "{bytes:?}: {:?}", a.msg());
        }
    }
}
