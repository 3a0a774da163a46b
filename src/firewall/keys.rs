//! The keys of our sets, written and read in one place.
//!
//! nft stores a key as the values of its fields in network byte order, one after another.
//! In a concatenation (`ether_addr . ipv4_addr`) every field fills whole 32-bit registers,
//! so it is padded with zeros to a multiple of 4 bytes; a key of one field is not padded
//! (an `ether_addr` set's key is 6 bytes). [`Concat`] and [`Fields`] are that rule; each
//! key type below lists its fields, and no byte offset is written anywhere else.

use std::net::Ipv4Addr;

use crate::config::Proto;
use crate::core::MacAddr;
use crate::core::allow::LearnKey;

/// The longest key of our sets: `learned4`'s, 8 + 4 + 4 + 4 bytes.
pub const MAX_LEN: usize = 20;

/// An encoded key. Inline, so batching a turn's changes allocates nothing per element.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// A value that is the key of one of our sets.
///
/// | type | sets |
/// | --- | --- |
/// | [`MacAddr`]: `ether_addr` | `clients`, `banned` |
/// | `(MacAddr, Ipv4Addr)`: `ether_addr . ipv4_addr` | `leases` (inet and arp) |
/// | `Ipv4Addr`: `ipv4_addr` | `count_down` (`count_up` is keyed like `leases`) |
/// | [`LearnKey`]: `ether_addr . ipv4_addr . inet_proto . inet_service` | `learned4` |
/// | `(Ipv4Addr, Proto, u16)`: `ipv4_addr . inet_proto . inet_service` | a point of `allow4_net` (nft writes its ranges) |
pub trait SetKey: Sized {
    /// The key's type as the set declares it (`type ...`).
    const TYPE: &'static str;

    fn encode(&self) -> Key;

    /// `None` unless `key` is a key of this type: the exact length, a protocol we know.
    /// Padding is not looked at, as nft does not look at it either. Never panics.
    fn decode(key: &[u8]) -> Option<Self>;
}

impl SetKey for MacAddr {
    const TYPE: &'static str = "ether_addr";

    fn encode(&self) -> Key {
        single(&self.0)
    }

    fn decode(key: &[u8]) -> Option<Self> {
        key.try_into().ok().map(MacAddr)
    }
}

impl SetKey for (MacAddr, Ipv4Addr) {
    const TYPE: &'static str = "ether_addr . ipv4_addr";

    fn encode(&self) -> Key {
        let (mac, ip) = self;
        Concat::new().field(&mac.0).field(&ip.octets()).key
    }

    fn decode(key: &[u8]) -> Option<Self> {
        let mut f = Fields(key);
        let v = (MacAddr(f.next()?), Ipv4Addr::from(f.next::<4>()?));
        f.end(v)
    }
}

/// `count_down`'s key: a client's address.
impl SetKey for Ipv4Addr {
    const TYPE: &'static str = "ipv4_addr";

    fn encode(&self) -> Key {
        single(&self.octets())
    }

    fn decode(key: &[u8]) -> Option<Self> {
        <[u8; 4]>::try_from(key).ok().map(Ipv4Addr::from)
    }
}

impl SetKey for LearnKey {
    const TYPE: &'static str = "ether_addr . ipv4_addr . inet_proto . inet_service";

    fn encode(&self) -> Key {
        Concat::new()
            .field(&self.mac.0)
            .field(&self.ip.octets())
            .field(&[self.proto.number()])
            .field(&self.port.to_be_bytes())
            .key
    }

    fn decode(key: &[u8]) -> Option<Self> {
        let mut f = Fields(key);
        let v = LearnKey {
            mac: MacAddr(f.next()?),
            ip: Ipv4Addr::from(f.next::<4>()?),
            proto: proto(f.next()?)?,
            port: u16::from_be_bytes(f.next()?),
        };
        f.end(v)
    }
}

impl SetKey for (Ipv4Addr, Proto, u16) {
    const TYPE: &'static str = "ipv4_addr . inet_proto . inet_service";

    fn encode(&self) -> Key {
        let (ip, proto, port) = self;
        Concat::new()
            .field(&ip.octets())
            .field(&[proto.number()])
            .field(&port.to_be_bytes())
            .key
    }

    fn decode(key: &[u8]) -> Option<Self> {
        let mut f = Fields(key);
        let v = (
            Ipv4Addr::from(f.next::<4>()?),
            proto(f.next()?)?,
            u16::from_be_bytes(f.next()?),
        );
        f.end(v)
    }
}

/// `inet_proto`, for the protocols an allow entry can name.
fn proto([n]: [u8; 1]) -> Option<Proto> {
    [Proto::Tcp, Proto::Udp]
        .into_iter()
        .find(|p| p.number() == n)
}

/// A key of one field: its bytes as they are.
fn single(value: &[u8]) -> Key {
    let mut key = Key {
        bytes: [0; MAX_LEN],
        len: value.len() as u8,
    };
    key.bytes[..value.len()].copy_from_slice(value);
    key
}

/// Writes a concatenation, each field padded with zeros to a multiple of 4 bytes. Only the
/// fixed layouts above use it, all within [`MAX_LEN`].
struct Concat {
    key: Key,
}

impl Concat {
    fn new() -> Self {
        Concat {
            key: Key {
                bytes: [0; MAX_LEN],
                len: 0,
            },
        }
    }

    fn field(mut self, value: &[u8]) -> Self {
        let at = usize::from(self.key.len);
        self.key.bytes[at..at + value.len()].copy_from_slice(value);
        self.key.len += value.len().next_multiple_of(4) as u8;
        self
    }
}

/// Reads a concatenation field by field; `None` once the bytes run out.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn next<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (field, rest) = self.0.split_at_checked(N.next_multiple_of(4))?;
        self.0 = rest;
        field[..N].try_into().ok()
    }

    /// `v`, if every byte was read: a longer key is another type.
    fn end<T>(self, v: T) -> Option<T> {
        self.0.is_empty().then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(MacAddr)
    }

    fn ip() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    fn proto() -> impl Strategy<Value = Proto> {
        prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)]
    }

    fn learn_key() -> impl Strategy<Value = LearnKey> {
        (mac(), ip(), proto(), any::<u16>()).prop_map(|(mac, ip, proto, port)| LearnKey {
            mac,
            ip,
            proto,
            port,
        })
    }

    /// `decode` takes back what `encode` wrote, and what it accepts is what `encode`
    /// writes (padding aside): the two are one codec.
    fn round_trip<K: SetKey + PartialEq + std::fmt::Debug>(k: K, len: usize) {
        let key = k.encode();
        assert_eq!(key.len(), len, "{}", K::TYPE);
        assert_eq!(K::decode(&key), Some(k));
    }

    fn never_panics_and_is_canonical<K: SetKey>(bytes: &[u8]) {
        if let Some(k) = K::decode(bytes) {
            let key = k.encode();
            assert_eq!(key.len(), bytes.len());
            // Equal but for the padding, which encode writes as zeros.
            for (got, want) in key.iter().zip(bytes) {
                assert!(got == want || *got == 0, "{key:?} from {bytes:02x?}");
            }
        }
    }

    proptest! {
        #[test]
        fn keys_round_trip(mac in mac(), ip in ip(), lk in learn_key(), proto in proto(), port in any::<u16>()) {
            round_trip(mac, 6);
            round_trip((mac, ip), 12);
            round_trip(lk, 20);
            round_trip((ip, proto, port), 12);
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..=24)) {
            never_panics_and_is_canonical::<MacAddr>(&bytes);
            never_panics_and_is_canonical::<(MacAddr, Ipv4Addr)>(&bytes);
            never_panics_and_is_canonical::<LearnKey>(&bytes);
            never_panics_and_is_canonical::<(Ipv4Addr, Proto, u16)>(&bytes);
        }
    }

    /// The layouts, byte by byte: what `nft list set` is checked against in the kernel
    /// test (`firewall::kernel_tests`).
    #[test]
    fn layouts_are_nfts() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let ip = Ipv4Addr::new(192, 168, 250, 5);
        assert_eq!(mac.encode().as_bytes(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            (mac, ip).encode().as_bytes(),
            [2, 0, 0, 0, 0, 1, 0, 0, 192, 168, 250, 5]
        );
        let lk = LearnKey {
            mac,
            ip,
            proto: Proto::Udp,
            port: 0x1bb,
        };
        assert_eq!(
            lk.encode().as_bytes(),
            [
                2, 0, 0, 0, 0, 1, 0, 0, 192, 168, 250, 5, 17, 0, 0, 0, 1, 0xbb, 0, 0
            ]
        );
        assert_eq!(
            (ip, Proto::Tcp, 443).encode().as_bytes(),
            [192, 168, 250, 5, 6, 0, 0, 0, 1, 0xbb, 0, 0]
        );
        assert_eq!(format!("{:?}", mac.encode()), "Key(020000000001)");
    }

    #[test]
    fn other_bytes_are_no_key() {
        let lk = LearnKey {
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(11, 1, 0, 10),
            proto: Proto::Tcp,
            port: 443,
        };
        let mut key = lk.encode().as_bytes().to_vec();
        key[12] = 1; // icmp: no allow entry names it
        assert_eq!(LearnKey::decode(&key), None);
        // One byte short or long: another type, not a misread key.
        let lease = (lk.mac, lk.ip).encode();
        assert_eq!(<(MacAddr, Ipv4Addr)>::decode(&lease[..11]), None);
        assert_eq!(
            <(MacAddr, Ipv4Addr)>::decode(&[lease.as_bytes(), &[0]].concat()),
            None
        );
        assert_eq!(MacAddr::decode(&lease), None, "a lease key is no MAC");
        assert_eq!(MacAddr::decode(&[]), None);
    }
}
