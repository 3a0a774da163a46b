//! The SOCKS5 wire protocol (RFC 1928) as far as the forwarder speaks it: the greeting with
//! the "no authentication" method, and the request. Pure functions over what has arrived so
//! far: each says whether it is complete, how many bytes it took, or what is wrong with it
//! (and so which reply it earns). Untrusted input: fuzzed (fuzz/fuzz_targets/socks.rs).

use std::net::{Ipv4Addr, Ipv6Addr};

pub const VERSION: u8 = 5;
/// The one method offered: no authentication.
pub const NO_AUTH: u8 = 0x00;
/// "No acceptable methods".
pub const NO_METHOD: u8 = 0xff;

/// The greeting's answer when the client offered "no authentication".
pub const CHOSEN: [u8; 2] = [VERSION, NO_AUTH];
/// ...and when it did not (then the client closes).
pub const REFUSED: [u8; 2] = [VERSION, NO_METHOD];

/// The longest request: header, a 255-byte name with its length, the port.
pub const MAX_REQUEST: usize = 4 + 1 + 255 + 2;
/// The longest greeting: header and 255 methods.
pub const MAX_GREETING: usize = 2 + 255;

/// A reply's code (RFC 1928, section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Rep {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

/// A reply: `rep` and, for success, the address the router connected from (an IPv4 one:
/// the forwarder connects over IPv4 only). A refusal carries 0.0.0.0:0.
pub fn reply(rep: Rep, bound: Option<(Ipv4Addr, u16)>) -> [u8; 10] {
    let (ip, port) = bound.unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
    let [a, b, c, d] = ip.octets();
    let [p, q] = port.to_be_bytes();
    [VERSION, rep as u8, 0, 1, a, b, c, d, p, q]
}

/// What a parser makes of the bytes so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// More bytes needed.
    Incomplete,
    /// Complete, in the first `usize` bytes.
    Done(T, usize),
    Bad(Malformed),
}

/// What is wrong with a greeting or a request, and so how it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Not SOCKS version 5 (SOCKS4, TLS, HTTP...): closed without a reply, since there is
    /// none in its protocol.
    Version,
    /// A greeting offering no methods, or not "no authentication": [`REFUSED`].
    NoMethod,
    /// The reserved byte is not zero: general failure.
    Reserved,
    /// An address type that is none of RFC 1928's: "address type not supported".
    AddressType,
    /// A zero-length name, or one that is no host name: "not allowed" (it is on no
    /// allow-list).
    Name,
}

/// The greeting: the client offered "no authentication" among its methods.
pub fn greeting(buf: &[u8]) -> Parse<()> {
    let Some(&ver) = buf.first() else {
        return Parse::Incomplete;
    };
    if ver != VERSION {
        return Parse::Bad(Malformed::Version);
    }
    let Some(&n) = buf.get(1) else {
        return Parse::Incomplete;
    };
    let len = 2 + usize::from(n);
    let Some(methods) = buf.get(2..len) else {
        return Parse::Incomplete;
    };
    if methods.contains(&NO_AUTH) {
        Parse::Done((), len)
    } else {
        Parse::Bad(Malformed::NoMethod)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
    /// A command byte RFC 1928 does not define.
    Other(u8),
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "connect",
            Command::Bind => "bind",
            Command::UdpAssociate => "udp_associate",
            Command::Other(_) => "unknown_command",
        }
    }
}

/// Where the client wants to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    V4(Ipv4Addr),
    /// A host name, lower case and without a trailing dot (as the allow-list has names).
    Name(String),
    V6(Ipv6Addr),
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::V4(a) => write!(f, "{a}"),
            Dest::Name(n) => f.write_str(n),
            Dest::V6(a) => write!(f, "[{a}]"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub dest: Dest,
    pub port: u16,
}

/// The request that follows the greeting.
pub fn request(buf: &[u8]) -> Parse<Request> {
    if buf.len() < 4 {
        return match buf.first() {
            Some(&v) if v != VERSION => Parse::Bad(Malformed::Version),
            _ => Parse::Incomplete,
        };
    }
    if buf[0] != VERSION {
        return Parse::Bad(Malformed::Version);
    }
    if buf[2] != 0 {
        return Parse::Bad(Malformed::Reserved);
    }
    let command = match buf[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        c => Command::Other(c),
    };
    let (addr_len, at) = match buf[3] {
        1 => (4, 4),
        4 => (16, 4),
        3 => match buf.get(4) {
            None => return Parse::Incomplete,
            Some(0) => return Parse::Bad(Malformed::Name),
            Some(&n) => (usize::from(n), 5),
        },
        _ => return Parse::Bad(Malformed::AddressType),
    };
    let end = at + addr_len + 2;
    let Some(rest) = buf.get(at..end) else {
        return Parse::Incomplete;
    };
    let (addr, port) = rest.split_at(addr_len);
    let port = u16::from_be_bytes([port[0], port[1]]);
    let dest = match buf[3] {
        1 => Dest::V4(Ipv4Addr::from(<[u8; 4]>::try_from(addr).expect("4 bytes"))),
        4 => Dest::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(addr).expect("16 bytes"),
        )),
        _ => match host_name(addr) {
            Some(n) => Dest::Name(n),
            None => return Parse::Bad(Malformed::Name),
        },
    };
    Parse::Done(
        Request {
            command,
            dest,
            port,
        },
        end,
    )
}

/// A host name as the allow-list compares names: labels of letters, digits, `-` and `_`
/// (1-63 bytes each), lower-cased, one trailing dot dropped. Anything else is no name we
/// would resolve.
fn host_name(bytes: &[u8]) -> Option<String> {
    let bytes = bytes.strip_suffix(b".").unwrap_or(bytes);
    if bytes.is_empty() {
        return None;
    }
    for label in bytes.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
    }
    Some(String::from_utf8(bytes.to_ascii_lowercase()).expect("ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn connect_name(name: &[u8], port: u16) -> Vec<u8> {
        let mut v = vec![5, 1, 0, 3, name.len() as u8];
        v.extend_from_slice(name);
        v.extend_from_slice(&port.to_be_bytes());
        v
    }

    #[test]
    fn greetings() {
        assert_eq!(greeting(&[]), Parse::Incomplete);
        assert_eq!(greeting(&[5]), Parse::Incomplete);
        assert_eq!(greeting(&[5, 2, 2]), Parse::Incomplete);
        assert_eq!(greeting(&[5, 1, 0]), Parse::Done((), 3));
        assert_eq!(greeting(&[5, 2, 2, 0, 9]), Parse::Done((), 4));
        // Only username/password offered; no methods at all.
        assert_eq!(greeting(&[5, 1, 2]), Parse::Bad(Malformed::NoMethod));
        assert_eq!(greeting(&[5, 0]), Parse::Bad(Malformed::NoMethod));
        // SOCKS4, TLS, HTTP.
        for first in [4u8, 0x16, b'G'] {
            assert_eq!(greeting(&[first, 1, 0]), Parse::Bad(Malformed::Version));
        }
    }

    #[test]
    fn requests() {
        let v4 = [5, 1, 0, 1, 203, 0, 113, 7, 0x01, 0xbb];
        assert_eq!(
            request(&v4),
            Parse::Done(
                Request {
                    command: Command::Connect,
                    dest: Dest::V4(Ipv4Addr::new(203, 0, 113, 7)),
                    port: 443
                },
                10
            )
        );
        // Every proper prefix is incomplete.
        for i in 0..v4.len() {
            assert_eq!(request(&v4[..i]), Parse::Incomplete, "{i}");
        }
        let named = connect_name(b"Setup.Example.COM.", 8443);
        assert_eq!(
            request(&named),
            Parse::Done(
                Request {
                    command: Command::Connect,
                    dest: Dest::Name("setup.example.com".into()),
                    port: 8443
                },
                named.len()
            )
        );
        let mut v6 = vec![5, 3, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 53]);
        let Parse::Done(r, 22) = request(&v6) else {
            panic!("{:?}", request(&v6));
        };
        assert_eq!(
            (r.command, r.dest),
            (Command::UdpAssociate, Dest::V6(Ipv6Addr::LOCALHOST))
        );
        let bind = [5, 2, 0, 1, 0, 0, 0, 0, 0, 0];
        assert!(matches!(request(&bind), Parse::Done(r, 10) if r.command == Command::Bind));
        let other = [5, 9, 0, 1, 0, 0, 0, 0, 0, 0];
        assert!(matches!(request(&other), Parse::Done(r, 10) if r.command == Command::Other(9)));
    }

    #[test]
    fn bad_requests() {
        assert_eq!(request(&[4, 1, 0, 1]), Parse::Bad(Malformed::Version));
        assert_eq!(request(&[4]), Parse::Bad(Malformed::Version));
        assert_eq!(request(&[5, 1, 1, 1]), Parse::Bad(Malformed::Reserved));
        assert_eq!(request(&[5, 1, 0, 2]), Parse::Bad(Malformed::AddressType));
        assert_eq!(request(&[5, 1, 0, 3, 0]), Parse::Bad(Malformed::Name));
        for name in [
            &b"a..b"[..],
            b".",
            b"a b",
            b"a/b",
            b"caf\xc3\xa9.example",
            b"x\x00y",
        ] {
            assert_eq!(
                request(&connect_name(name, 443)),
                Parse::Bad(Malformed::Name),
                "{name:?}"
            );
        }
        let long = [b'a'; 64];
        assert_eq!(
            request(&connect_name(&long, 443)),
            Parse::Bad(Malformed::Name)
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            reply(Rep::CommandNotSupported, None),
            [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            reply(
                Rep::Succeeded,
                Some((Ipv4Addr::new(198, 51, 100, 2), 40000))
            ),
            [5, 0, 0, 1, 198, 51, 100, 2, 0x9c, 0x40]
        );
    }

    proptest! {
        // Whatever arrives: no panic, a completed parse never claims more than it was
        // given, and it is the same however much more follows.
        #[test]
        fn any_bytes(buf in proptest::collection::vec(any::<u8>(), 0..300), more in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut longer = buf.clone();
            longer.extend_from_slice(&more);
            match request(&buf) {
                Parse::Done(r, n) => {
                    prop_assert!(n <= buf.len() && n <= MAX_REQUEST);
                    prop_assert_eq!(request(&longer), Parse::Done(r, n));
                }
                Parse::Bad(m) => prop_assert_eq!(request(&longer), Parse::Bad(m)),
                Parse::Incomplete => prop_assert!(buf.len() < MAX_REQUEST),
            }
            match greeting(&buf) {
                Parse::Done((), n) => {
                    prop_assert!(n <= buf.len() && n <= MAX_GREETING);
                    prop_assert_eq!(greeting(&longer), Parse::Done((), n));
                }
                Parse::Bad(m) => prop_assert_eq!(greeting(&longer), Parse::Bad(m)),
                Parse::Incomplete => prop_assert!(buf.len() < MAX_GREETING),
            }
        }

        // Every name of valid labels comes back lower-cased, on any port.
        #[test]
        fn names_round_trip(labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,20}", 1..6), port: u16) {
            let name = labels.join(".");
            let Parse::Done(r, n) = request(&connect_name(name.as_bytes(), port)) else {
                return Err(TestCaseError::fail("not parsed"));
            };
            prop_assert_eq!(n, 7 + name.len());
            prop_assert_eq!(r.dest, Dest::Name(name.to_ascii_lowercase()));
            prop_assert_eq!(r.port, port);
        }
    }
}
