//! The SOCKS5 forwarder's policy (`config socks`): who may have a connection opened for
//! them, to where, and what ends it. The protocol and the relay are the edge's
//! (`crate::socks`); every yes or no is the provisioner's, by the same allow-list, learned
//! addresses and rebinding guard as forwarded traffic.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::MacAddr;
use super::allow::{AllowEntry, Proto};

/// Why a SOCKS connection was not made (the `socks_refused` event's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not SOCKS5, a bad reserved byte, a name that is no host name.
    Malformed,
    /// The greeting did not offer "no authentication".
    NoMethod,
    /// The handshake did not complete within the handshake timeout.
    Stalled,
    /// BIND, UDP ASSOCIATE or an unknown command: CONNECT only.
    Command,
    /// An IPv6 destination (IPv6 is off on the provisioning network).
    Ipv6,
    /// The source is no admitted client with a lease.
    NotAClient,
    /// The name is on none of the client's allow entries.
    NameNotAllowed,
    /// The name or address is allowed, but not on this port.
    PortNotAllowed,
    /// The address is neither learned by the client nor in a static entry of its own.
    AddressNotAllowed,
    /// The address is one the provisioning network may never reach (the rebinding guard:
    /// private, loopback, the router's own...).
    Unsafe,
    /// The name resolved to no address the client may reach (none, or only ones the
    /// rebinding guard removed), or not in time.
    NoAddress,
    /// The destination did not take the connection.
    Unreachable,
    /// The client holds `socks client_connections` already.
    ClientLimit,
    /// The forwarder holds `socks total_connections` already.
    TotalLimit,
    /// The daemon's loop had no room for the question (a flood): try again.
    Busy,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::NoMethod => "no_method",
            Refusal::Stalled => "stalled",
            Refusal::Command => "command",
            Refusal::Ipv6 => "ipv6",
            Refusal::NotAClient => "not_a_client",
            Refusal::NameNotAllowed => "name_not_allowed",
            Refusal::PortNotAllowed => "port_not_allowed",
            Refusal::AddressNotAllowed => "address_not_allowed",
            Refusal::Unsafe => "unsafe_address",
            Refusal::NoAddress => "no_address",
            Refusal::Unreachable => "unreachable",
            Refusal::ClientLimit => "client_limit",
            Refusal::TotalLimit => "total_limit",
            Refusal::Busy => "busy",
        }
    }

    /// A refusal of the allow-list (what forwarded traffic would have had dropped): a
    /// violation, graded as blocked flows are.
    pub fn is_violation(self) -> bool {
        matches!(
            self,
            Refusal::NameNotAllowed
                | Refusal::PortNotAllowed
                | Refusal::AddressNotAllowed
                | Refusal::Unsafe
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What let a connection be made, and so what must still hold for it to stay open: the
/// name it was resolved for (its entries may be edited or removed) or a static entry's
/// network. Not the learned element itself: that runs out with the answer's TTL, and an
/// idle connection is not cut before its session ends (as forwarded ones are not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Name(Arc<str>),
    Static,
}

/// A connection the forwarder may open for `mac`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub mac: MacAddr,
    pub via: Via,
}

/// Whether a static entry (a network) of the client's profile (`profile`: its name, `None`
/// for the default entries) opens `ip` on TCP `port`.
pub fn static_allows(
    entries: &[AllowEntry],
    profile: Option<&str>,
    ip: Ipv4Addr,
    port: u16,
) -> StaticMatch {
    let mut other_port = false;
    for e in entries.iter().filter(|e| e.profile.as_deref() == profile) {
        if !e.nets.iter().any(|n| n.contains(&ip)) {
            continue;
        }
        if e.proto == Proto::Tcp && e.ports.iter().any(|r| (r.first..=r.last).contains(&port)) {
            return StaticMatch::Allowed;
        }
        other_port = true;
    }
    if other_port {
        StaticMatch::OtherPort
    } else {
        StaticMatch::No
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaticMatch {
    Allowed,
    /// In a network of the client's, but not on this protocol and port.
    OtherPort,
    No,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::allow::PortRange;

    fn entry(net: &str, proto: Proto, ports: (u16, u16), profile: Option<&str>) -> AllowEntry {
        AllowEntry {
            name: "e".into(),
            domains: Vec::new(),
            nets: vec![net.parse().unwrap()],
            proto,
            ports: vec![PortRange {
                first: ports.0,
                last: ports.1,
            }],
            profile: profile.map(str::to_owned),
        }
    }

    #[test]
    fn static_entries_by_profile_protocol_and_port() {
        let ip: Ipv4Addr = "198.51.100.7".parse().unwrap();
        let entries = [
            entry("198.51.100.0/24", Proto::Tcp, (8000, 8100), None),
            entry("198.51.100.0/24", Proto::Udp, (443, 443), None),
            entry("203.0.113.0/24", Proto::Tcp, (443, 443), Some("acme")),
        ];
        assert_eq!(
            static_allows(&entries, None, ip, 8050),
            StaticMatch::Allowed
        );
        // UDP 443 is no TCP 443.
        assert_eq!(
            static_allows(&entries, None, ip, 443),
            StaticMatch::OtherPort
        );
        assert_eq!(
            static_allows(&entries, None, "198.51.101.7".parse().unwrap(), 8050),
            StaticMatch::No
        );
        // Another profile's network is not this client's.
        let acme: Ipv4Addr = "203.0.113.9".parse().unwrap();
        assert_eq!(static_allows(&entries, None, acme, 443), StaticMatch::No);
        assert_eq!(
            static_allows(&entries, Some("acme"), acme, 443),
            StaticMatch::Allowed
        );
    }
}
