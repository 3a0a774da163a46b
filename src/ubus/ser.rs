//! A serde serializer that writes blobmsg straight into a buffer: the control protocol's
//! reply types become what `ubus call` prints, with no JSON text or value tree between.
//!
//! JSON's shapes map as rpcd's exec plugins map them (rpcd's plugin.c): objects are
//! tables, arrays arrays, strings strings, booleans int8, integers int32 where they fit and
//! int64 otherwise, floats doubles, and null (a `None`) an unspec attribute with no
//! payload, which ubus prints as `null`. Enums take serde_json's shapes (a unit variant is
//! its name; others a table of one entry).

use serde::ser::{self, Serialize};

use super::blob::{self, ARRAY, DOUBLE, INT8, INT32, INT64, STRING, TABLE, UNSPEC};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Custom(String),
    #[error("a map key that is not a string")]
    Key,
    #[error("bytes have no blobmsg form here")]
    Bytes,
    #[error("an attribute over 16 MB")]
    TooLong,
}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Error {
        Error::Custom(msg.to_string())
    }
}

/// Writes `value` (a map or struct) as the blobmsg attributes of a table, without the
/// table's own header: the payload of ubus's data attribute.
pub fn write_fields<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    let mut key = String::new();
    let mut enc = Encoder { buf, key: &mut key };
    value.serialize(Top(&mut enc)).map(drop)
}

struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
    /// The pending map key (reused: keys are written through it, not allocated).
    key: &'b mut String,
}

impl Encoder<'_> {
    /// One named (or, in an array, unnamed) attribute holding `value`.
    fn attr<T: Serialize + ?Sized>(&mut self, name: &[u8], value: &T) -> Result<(), Error> {
        let at = blob::msg_start(self.buf, name);
        let ty = value.serialize(&mut *self)?;
        if blob::end(self.buf, at, blob::msg_word(ty)) {
            Ok(())
        } else {
            Err(Error::TooLong)
        }
    }

    /// An attribute named by the pending key.
    fn keyed<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = std::mem::take(self.key);
        let r = self.attr(key.as_bytes(), value);
        *self.key = key;
        r
    }

    fn int(&mut self, v: i64) -> u8 {
        match i32::try_from(v) {
            Ok(small) => {
                self.buf.extend_from_slice(&small.to_be_bytes());
                INT32
            }
            Err(_) => {
                self.buf.extend_from_slice(&v.to_be_bytes());
                INT64
            }
        }
    }

    fn string(&mut self, s: &[u8]) -> u8 {
        self.buf.extend_from_slice(s);
        self.buf.push(0);
        STRING
    }
}

/// The top level: only a map or struct, written as bare fields.
struct Top<'a, 'b>(&'a mut Encoder<'b>);

/// Serializer methods that refuse: `$ok` is their `Ok`, `$err` the error.
macro_rules! refuse {
    ($ok:ty, $err:expr; $($f:ident($($t:ty),*)),*) => {$(
        fn $f(self, $(_: $t),*) -> Result<$ok, Error> {
            Err($err)
        }
    )*};
}

fn not_a_table() -> Error {
    Error::Custom("a reply is a table".into())
}

impl<'a, 'b> ser::Serializer for Top<'a, 'b> {
    type Ok = u8;
    type Error = Error;
    type SerializeSeq = ser::Impossible<u8, Error>;
    type SerializeTuple = ser::Impossible<u8, Error>;
    type SerializeTupleStruct = ser::Impossible<u8, Error>;
    type SerializeTupleVariant = ser::Impossible<u8, Error>;
    type SerializeMap = Fields<'a, 'b>;
    type SerializeStruct = Fields<'a, 'b>;
    type SerializeStructVariant = ser::Impossible<u8, Error>;

    refuse!(u8, not_a_table();
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str)
    );

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<u8, Error> {
        v.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<u8, Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<u8, Error> {
        self.0.attr(variant.as_bytes(), v)?;
        Ok(TABLE)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_table())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_table())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_table())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_table())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Fields<'a, 'b>, Error> {
        Ok(Fields {
            enc: self.0,
            at: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields<'a, 'b>, Error> {
        Ok(Fields {
            enc: self.0,
            at: None,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_table())
    }
}

/// A value's payload; returns the blobmsg type it wrote.
impl<'a, 'b> ser::Serializer for &'a mut Encoder<'b> {
    type Ok = u8;
    type Error = Error;
    type SerializeSeq = Items<'a, 'b>;
    type SerializeTuple = Items<'a, 'b>;
    type SerializeTupleStruct = Items<'a, 'b>;
    type SerializeTupleVariant = Items<'a, 'b>;
    type SerializeMap = Fields<'a, 'b>;
    type SerializeStruct = Fields<'a, 'b>;
    type SerializeStructVariant = Fields<'a, 'b>;

    fn serialize_bool(self, v: bool) -> Result<u8, Error> {
        self.buf.push(u8::from(v));
        Ok(INT8)
    }
    fn serialize_i8(self, v: i8) -> Result<u8, Error> {
        Ok(self.int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<u8, Error> {
        Ok(self.int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<u8, Error> {
        Ok(self.int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<u8, Error> {
        Ok(self.int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<u8, Error> {
        Ok(self.int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<u8, Error> {
        Ok(self.int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<u8, Error> {
        Ok(self.int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<u8, Error> {
        // As json-c reads a number over i64's range: saturated.
        Ok(self.int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn serialize_f32(self, v: f32) -> Result<u8, Error> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<u8, Error> {
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
        Ok(DOUBLE)
    }
    fn serialize_char(self, v: char) -> Result<u8, Error> {
        Ok(self.string(v.encode_utf8(&mut [0; 4]).as_bytes()))
    }
    fn serialize_str(self, v: &str) -> Result<u8, Error> {
        Ok(self.string(v.as_bytes()))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<u8, Error> {
        Err(Error::Bytes)
    }
    fn serialize_none(self) -> Result<u8, Error> {
        Ok(UNSPEC)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<u8, Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<u8, Error> {
        Ok(UNSPEC)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<u8, Error> {
        Ok(UNSPEC)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<u8, Error> {
        Ok(self.string(variant.as_bytes()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<u8, Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<u8, Error> {
        self.attr(variant.as_bytes(), v)?;
        Ok(TABLE)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Items<'a, 'b>, Error> {
        Ok(Items {
            enc: self,
            at: None,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Items<'a, 'b>, Error> {
        Ok(Items {
            enc: self,
            at: None,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Items<'a, 'b>, Error> {
        Ok(Items {
            enc: self,
            at: None,
        })
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Items<'a, 'b>, Error> {
        let at = blob::msg_start(self.buf, variant.as_bytes());
        Ok(Items {
            enc: self,
            at: Some(at),
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Fields<'a, 'b>, Error> {
        Ok(Fields {
            enc: self,
            at: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields<'a, 'b>, Error> {
        Ok(Fields {
            enc: self,
            at: None,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Fields<'a, 'b>, Error> {
        let at = blob::msg_start(self.buf, variant.as_bytes());
        Ok(Fields {
            enc: self,
            at: Some(at),
        })
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, v: &T) -> Result<u8, Error> {
        // Formatted in place (a MAC, an address), not through a String.
        use std::io::Write;
        write!(self.buf, "{v}").map_err(|e| Error::Custom(e.to_string()))?;
        self.buf.push(0);
        Ok(STRING)
    }
}

/// A table's (or the top level's) entries. `at`: a variant's table, opened around them.
pub struct Fields<'a, 'b> {
    enc: &'a mut Encoder<'b>,
    at: Option<usize>,
}

/// An array's elements (unnamed attributes). `at` as in [`Fields`].
pub struct Items<'a, 'b> {
    enc: &'a mut Encoder<'b>,
    at: Option<usize>,
}

/// A variant's table around the value, closed.
fn close(enc: &mut Encoder<'_>, at: Option<usize>, ty: u8) -> Result<u8, Error> {
    match at {
        None => Ok(ty),
        Some(at) if blob::end(enc.buf, at, blob::msg_word(ty)) => Ok(TABLE),
        Some(_) => Err(Error::TooLong),
    }
}

impl ser::SerializeMap for Fields<'_, '_> {
    type Ok = u8;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.enc.key.clear();
        key.serialize(Key(self.enc.key))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.enc.keyed(value)
    }
    fn end(self) -> Result<u8, Error> {
        close(self.enc, self.at, TABLE)
    }
}

impl ser::SerializeStruct for Fields<'_, '_> {
    type Ok = u8;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.enc.attr(key.as_bytes(), value)
    }
    fn end(self) -> Result<u8, Error> {
        close(self.enc, self.at, TABLE)
    }
}

impl ser::SerializeStructVariant for Fields<'_, '_> {
    type Ok = u8;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.enc.attr(key.as_bytes(), value)
    }
    fn end(self) -> Result<u8, Error> {
        close(self.enc, self.at, TABLE)
    }
}

macro_rules! items {
    ($($t:ident::$f:ident),*) => {$(
        impl ser::$t for Items<'_, '_> {
            type Ok = u8;
            type Error = Error;
            fn $f<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                self.enc.attr(b"", v)
            }
            fn end(self) -> Result<u8, Error> {
                close(self.enc, self.at, ARRAY)
            }
        }
    )*};
}

items!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// A map key: a string (or something that shows as one), into the pending key.
struct Key<'k>(&'k mut String);

impl ser::Serializer for Key<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.0.push_str(v);
        Ok(())
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, v: &T) -> Result<(), Error> {
        use std::fmt::Write;
        write!(self.0, "{v}").map_err(|e| Error::Custom(e.to_string()))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Error> {
        self.serialize_str(v)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }

    refuse!((), Error::Key;
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str)
    );
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Error> {
        Err(Error::Key)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(Error::Key)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(Error::Key)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(Error::Key)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(Error::Key)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error::Key)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(Error::Key)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(Error::Key)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(Error::Key)
    }
}
