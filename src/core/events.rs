//! Audit events: every decision the core takes, in the product's words, graded by threat
//! level (R12). The daemon logs each one as a `key=value` line (and later serves them on
//! the control socket).

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::MacAddr;
use super::allow::Unsafe;

/// R12's grades. What each costs the client is decided by policy; this only says how bad
/// it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Threat {
    Routine,
    /// A refused name, a blocked flow, an answer that tried to open a private address.
    Violation,
    /// Repeated violations, flooding.
    Abuse,
    /// MAC/IP mismatch, DHCP abuse.
    Spoofing,
}

impl Threat {
    pub fn as_str(self) -> &'static str {
        match self {
            Threat::Routine => "routine",
            Threat::Violation => "violation",
            Threat::Abuse => "abuse",
            Threat::Spoofing => "spoofing",
        }
    }
}

/// Why a DNS question was answered REFUSED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsRefusal {
    /// The name is on no allow-list.
    NotAllowed,
    /// Only A and AAAA are answered: anything else could carry a tunnel.
    QueryType,
}

impl DnsRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRefusal::NotAllowed => "not_allowed",
            DnsRefusal::QueryType => "query_type",
        }
    }
}

/// A DHCP message's claim that does not match the frame it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpClaim {
    /// `chaddr` is another MAC than the frame's source.
    Chaddr(MacAddr),
    /// The client identifier (hardware type 1) is another MAC than the frame's source.
    ClientId(MacAddr),
}

/// Why a station was turned away, evicted or banned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StationReason {
    /// Every spot is taken by a client younger than `min_age`.
    Full,
    /// Evicted to make room for a newcomer.
    MakeRoom,
    SessionEnded,
    WindowClosed,
    /// Still in its cooldown.
    Banned,
    /// Full, and as many newcomers as may wait for a spot already do.
    Busy,
    /// Waited for a spot without completing DHCP.
    NoDhcp,
    /// The configuration now allows fewer clients than there are.
    Limit,
    /// An operator's order (provisionerctl evict or ban).
    Operator,
}

impl StationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StationReason::Full => "full",
            StationReason::MakeRoom => "make_room",
            StationReason::SessionEnded => "session_ended",
            StationReason::WindowClosed => "window_closed",
            StationReason::Banned => "banned",
            StationReason::Busy => "busy",
            StationReason::NoDhcp => "no_dhcp",
            StationReason::Limit => "limit",
            StationReason::Operator => "operator",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A station was let in; `age`: seconds since its session began (non-zero when it came
    /// back within its session).
    Admitted {
        mac: MacAddr,
        age: u64,
    },
    TurnedAway {
        mac: MacAddr,
        reason: StationReason,
    },
    Evicted {
        mac: MacAddr,
        reason: StationReason,
        age: u64,
    },
    /// Left on its own.
    Left {
        mac: MacAddr,
        age: u64,
    },
    Banned {
        mac: MacAddr,
        secs: u64,
        reason: StationReason,
    },
    /// An operator lifted its ban early.
    Unbanned {
        mac: MacAddr,
    },
    BanEnded {
        mac: MacAddr,
    },
    /// A client read back from the kernel after a restart, with its session clock.
    ClientRestored {
        mac: MacAddr,
        age: u64,
    },
    /// The activation window opened (`secs`: for how long; `None`: always or by schedule).
    WindowOpened {
        secs: Option<u64>,
    },
    WindowClosed,
    LeaseGranted {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    LeaseRenewed {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    LeaseReleased {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    LeaseExpired {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    LeaseDeclined {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    /// A REQUEST for an address the client may not have (NAK).
    LeaseRefused {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    /// Every address of the pool (one per client allowed) is taken.
    PoolExhausted {
        mac: MacAddr,
    },
    /// A binding read back from the kernel after a restart.
    LeaseRestored {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    /// A binding ended because the configuration no longer has room for it.
    LeaseRevoked {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    /// A question refused (reported once per client, question and minute).
    DnsRefused {
        mac: MacAddr,
        name: Arc<str>,
        qtype: u16,
        reason: DnsRefusal,
    },
    /// Refusals of the last minute that were not reported one by one.
    DnsRefusalsSuppressed {
        mac: MacAddr,
        count: u32,
    },
    /// An answer for an allowed name held an address that must never be opened; it was
    /// removed from the answer and not learned.
    DnsRebinding {
        mac: MacAddr,
        name: Arc<str>,
        addr: Ipv4Addr,
        why: Unsafe,
    },
    /// A client went over its query rate; `refused` questions since the last such event.
    DnsRateLimited {
        mac: MacAddr,
        refused: u32,
    },
    /// A newcomer would have to evict someone: it waits until it completes DHCP.
    Waiting {
        mac: MacAddr,
    },
    /// A DHCP message (`msg`: discover, request, release, decline, inform) sent by `mac`
    /// (the frame's source) on bridge port `port` that speaks for another MAC.
    DhcpSpoofed {
        mac: MacAddr,
        claim: DhcpClaim,
        msg: &'static str,
        ip: Option<Ipv4Addr>,
        port: u32,
    },
    /// ARP from `mac` (the frame's source) claiming `ip` for `sender` (the ARP sender MAC),
    /// though no lease binds them: `owner` is whom the address belongs to (the router, a
    /// client, or nobody). Dropped in the kernel; seen from its log.
    ArpSpoofed {
        mac: MacAddr,
        sender: MacAddr,
        ip: Ipv4Addr,
        owner: Option<MacAddr>,
        router: bool,
    },
    /// More new MACs from one bridge port than a port of real devices brings: flooding
    /// (e.g. DHCP starvation with random MACs). `mac` and later newcomers on the port are
    /// ignored for a while.
    MacFlood {
        mac: MacAddr,
        port: u32,
        macs: usize,
    },
    /// Spoofing reports of the last minute that were not reported one by one.
    SpoofingSuppressed {
        mac: MacAddr,
        count: u32,
    },
    /// The kernel refused a batch of set changes: the `undone` additions in it were taken
    /// back (the tables are rebuilt from what is left).
    BatchRefused {
        undone: usize,
    },
    /// An allow entry came into force (`provisionerctl allow add`, or a reload).
    AllowAdded {
        name: String,
    },
    /// An allow entry went: `flows_ended` connections that were open to what only it
    /// granted were ended (`None`: ending them failed, see the daemon's log).
    AllowRemoved {
        name: String,
        flows_ended: Option<usize>,
    },
    /// An allow entry now grants other destinations, protocol or ports (a reload); the
    /// connections it no longer grants were ended.
    AllowChanged {
        name: String,
        flows_ended: Option<usize>,
    },
    /// A client may now reach `addr` (for `ttl` seconds as it was told).
    AddressLearned {
        mac: MacAddr,
        name: Arc<str>,
        addr: Ipv4Addr,
        ttl: u32,
    },
}

impl Event {
    /// A stable, greppable name for the event kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Admitted { .. } => "admitted",
            Event::TurnedAway { .. } => "turned_away",
            Event::Evicted { .. } => "evicted",
            Event::Left { .. } => "left",
            Event::Banned { .. } => "banned",
            Event::BanEnded { .. } => "ban_ended",
            Event::Unbanned { .. } => "unbanned",
            Event::ClientRestored { .. } => "client_restored",
            Event::WindowOpened { .. } => "window_opened",
            Event::WindowClosed => "window_closed",
            Event::LeaseGranted { .. } => "lease_granted",
            Event::LeaseRenewed { .. } => "lease_renewed",
            Event::LeaseReleased { .. } => "lease_released",
            Event::LeaseExpired { .. } => "lease_expired",
            Event::LeaseDeclined { .. } => "lease_declined",
            Event::LeaseRefused { .. } => "lease_refused",
            Event::PoolExhausted { .. } => "pool_exhausted",
            Event::LeaseRestored { .. } => "lease_restored",
            Event::LeaseRevoked { .. } => "lease_revoked",
            Event::DnsRefused { .. } => "dns_refused",
            Event::DnsRefusalsSuppressed { .. } => "dns_refused_more",
            Event::DnsRebinding { .. } => "dns_rebinding",
            Event::DnsRateLimited { .. } => "dns_rate_limited",
            Event::AddressLearned { .. } => "address_learned",
            Event::Waiting { .. } => "waiting",
            Event::DhcpSpoofed { .. } => "dhcp_spoofed",
            Event::ArpSpoofed { .. } => "arp_spoofed",
            Event::MacFlood { .. } => "mac_flood",
            Event::SpoofingSuppressed { .. } => "spoofing_more",
            Event::BatchRefused { .. } => "batch_refused",
            Event::AllowAdded { .. } => "allow_added",
            Event::AllowRemoved { .. } => "allow_removed",
            Event::AllowChanged { .. } => "allow_changed",
        }
    }

    pub fn threat(&self) -> Threat {
        match self {
            Event::DnsRefused { .. }
            | Event::DnsRefusalsSuppressed { .. }
            | Event::DnsRebinding { .. } => Threat::Violation,
            Event::DnsRateLimited { .. } | Event::MacFlood { .. } => Threat::Abuse,
            Event::DhcpSpoofed { .. }
            | Event::ArpSpoofed { .. }
            | Event::SpoofingSuppressed { .. } => Threat::Spoofing,
            _ => Threat::Routine,
        }
    }

    /// The station it is about (window events are about the network).
    pub fn mac(&self) -> Option<MacAddr> {
        Some(match self {
            Event::WindowOpened { .. } | Event::WindowClosed | Event::BatchRefused { .. } => {
                return None;
            }
            Event::AllowAdded { .. } | Event::AllowRemoved { .. } | Event::AllowChanged { .. } => {
                return None;
            }
            Event::ClientRestored { mac, .. }
            | Event::Admitted { mac, .. }
            | Event::TurnedAway { mac, .. }
            | Event::Evicted { mac, .. }
            | Event::Left { mac, .. }
            | Event::Banned { mac, .. }
            | Event::BanEnded { mac }
            | Event::Unbanned { mac }
            | Event::LeaseGranted { mac, .. }
            | Event::LeaseRenewed { mac, .. }
            | Event::LeaseReleased { mac, .. }
            | Event::LeaseExpired { mac, .. }
            | Event::LeaseDeclined { mac, .. }
            | Event::LeaseRefused { mac, .. }
            | Event::PoolExhausted { mac }
            | Event::LeaseRestored { mac, .. }
            | Event::LeaseRevoked { mac, .. }
            | Event::DnsRefused { mac, .. }
            | Event::DnsRefusalsSuppressed { mac, .. }
            | Event::DnsRebinding { mac, .. }
            | Event::DnsRateLimited { mac, .. }
            | Event::AddressLearned { mac, .. }
            | Event::Waiting { mac }
            | Event::DhcpSpoofed { mac, .. }
            | Event::ArpSpoofed { mac, .. }
            | Event::MacFlood { mac, .. }
            | Event::SpoofingSuppressed { mac, .. } => *mac,
        })
    }

    /// Events that happen on every answer: logged at debug level, not info.
    pub fn is_chatty(&self) -> bool {
        matches!(
            self,
            Event::AddressLearned { .. } | Event::LeaseRenewed { .. }
        )
    }
}

/// DNS type names for the types people see; others as RFC 3597 `TYPEn`.
pub fn qtype_name(t: u16) -> String {
    let known = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        10 => "NULL",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "ANY",
        _ => return format!("TYPE{t}"),
    };
    known.to_owned()
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event={}", self.kind())?;
        if let Some(mac) = self.mac() {
            write!(f, " mac={mac}")?;
        }
        match self {
            Event::LeaseGranted { ip, .. }
            | Event::LeaseRenewed { ip, .. }
            | Event::LeaseReleased { ip, .. }
            | Event::LeaseExpired { ip, .. }
            | Event::LeaseDeclined { ip, .. }
            | Event::LeaseRefused { ip, .. }
            | Event::LeaseRestored { ip, .. }
            | Event::LeaseRevoked { ip, .. } => write!(f, " ip={ip}")?,
            Event::PoolExhausted { .. }
            | Event::BanEnded { .. }
            | Event::Unbanned { .. }
            | Event::WindowClosed => {}
            Event::ClientRestored { age, .. } => write!(f, " age={age}")?,
            Event::WindowOpened { secs } => match secs {
                Some(s) => write!(f, " secs={s}")?,
                None => write!(f, " secs=unlimited")?,
            },
            Event::Admitted { age, .. } | Event::Left { age, .. } => write!(f, " age={age}")?,
            Event::TurnedAway { reason, .. } => write!(f, " reason={}", reason.as_str())?,
            Event::Evicted { reason, age, .. } => {
                write!(f, " reason={} age={age}", reason.as_str())?
            }
            Event::Banned { secs, reason, .. } => {
                write!(f, " secs={secs} reason={}", reason.as_str())?
            }
            Event::DnsRefused {
                name,
                qtype,
                reason,
                ..
            } => write!(
                f,
                " name={name} type={} reason={}",
                qtype_name(*qtype),
                reason.as_str()
            )?,
            Event::DnsRefusalsSuppressed { count, .. } => write!(f, " count={count}")?,
            Event::DnsRebinding {
                name, addr, why, ..
            } => write!(f, " name={name} addr={addr} why={}", why.as_str())?,
            Event::DnsRateLimited { refused, .. } => write!(f, " refused={refused}")?,
            Event::AddressLearned {
                name, addr, ttl, ..
            } => write!(f, " name={name} addr={addr} ttl={ttl}")?,
            Event::Waiting { .. } => {}
            Event::DhcpSpoofed {
                claim,
                msg,
                ip,
                port,
                ..
            } => {
                match claim {
                    DhcpClaim::Chaddr(m) => write!(f, " chaddr={m}")?,
                    DhcpClaim::ClientId(m) => write!(f, " client_id={m}")?,
                }
                write!(f, " msg={msg}")?;
                if let Some(ip) = ip {
                    write!(f, " ip={ip}")?;
                }
                write!(f, " port={port}")?;
            }
            Event::ArpSpoofed {
                sender,
                ip,
                owner,
                router,
                ..
            } => {
                write!(f, " sender={sender} ip={ip}")?;
                match (router, owner) {
                    (true, _) => write!(f, " owner=router")?,
                    (false, Some(o)) => write!(f, " owner={o}")?,
                    (false, None) => write!(f, " owner=none")?,
                }
            }
            Event::MacFlood { port, macs, .. } => write!(f, " port={port} macs={macs}")?,
            Event::SpoofingSuppressed { count, .. } => write!(f, " count={count}")?,
            Event::BatchRefused { undone } => write!(f, " undone={undone}")?,
            Event::AllowAdded { name } => write!(f, " name={name}")?,
            Event::AllowRemoved { name, flows_ended }
            | Event::AllowChanged { name, flows_ended } => {
                write!(f, " name={name}")?;
                match flows_ended {
                    Some(n) => write!(f, " flows_ended={n}")?,
                    None => write!(f, " flows_ended=failed")?,
                }
            }
        }
        if self.threat() != Threat::Routine {
            write!(f, " threat={}", self.threat().as_str())?;
        }
        Ok(())
    }
}
