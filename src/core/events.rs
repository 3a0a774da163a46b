//! Audit events: every decision the core takes, in the product's words, graded by threat
//! level (R12). The daemon logs each one as a `key=value` line (and later serves them on
//! the control socket).

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::MacAddr;
use super::allow::Unsafe;
use super::oui::MacPrefix;

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

/// Why the kernel refused a client's flow (the drop rule that logged it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowBlock {
    /// Towards the internet, to a destination no allow-list grants.
    NotAllowed,
    /// Towards a protected network (the home LAN...).
    Protected,
    /// Not out the WAN: another interface of the router (the LAN, another client).
    NotWan,
    /// A service of the router itself other than DHCP and DNS.
    Router,
    /// Allowed, but over the client's rate of new connections (`connection_rate`).
    ConnectionRate,
}

impl FlowBlock {
    pub const ALL: [FlowBlock; 5] = [
        FlowBlock::NotAllowed,
        FlowBlock::Protected,
        FlowBlock::NotWan,
        FlowBlock::Router,
        FlowBlock::ConnectionRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlowBlock::NotAllowed => "not_allowed",
            FlowBlock::Protected => "protected",
            FlowBlock::NotWan => "not_wan",
            FlowBlock::Router => "router",
            FlowBlock::ConnectionRate => "connection_rate",
        }
    }

    pub fn from_name(s: &str) -> Option<FlowBlock> {
        FlowBlock::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

/// An IP protocol's name as nft writes it (`tcp`, `udp`, `icmp`), else its number.
pub fn proto_name(p: u8) -> std::borrow::Cow<'static, str> {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        132 => "sctp".into(),
        n => n.to_string().into(),
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
    /// A threat response: repeated violations or a flood.
    Abuse,
    /// A threat response: spoofing.
    Spoofing,
    /// The window is open for named devices only (`window open --for`), and this is none.
    NotExpected,
    /// Its vendor profile has as many clients as its `max_clients`.
    ProfileFull,
    /// It used up its daily data quota (banned until the day ends).
    Quota,
}

/// Why the activation window closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowClosure {
    /// An operator closed it.
    Operator,
    /// Its time ran out.
    Timeout,
    /// The devices it was opened for completed their setup.
    Completed,
    /// Its schedule's span ended, or a new configuration closed it.
    Schedule,
}

impl WindowClosure {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowClosure::Operator => "operator",
            WindowClosure::Timeout => "timeout",
            WindowClosure::Completed => "completed",
            WindowClosure::Schedule => "schedule",
        }
    }
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
            StationReason::Abuse => "abuse",
            StationReason::Quota => "quota",
            StationReason::Spoofing => "spoofing",
            StationReason::NotExpected => "not_expected",
            StationReason::ProfileFull => "profile_full",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A station associated with the radio (hostapd's AP-STA-CONNECTED); what is decided
    /// about it follows (admitted, waiting, turned_away).
    Joined {
        mac: MacAddr,
    },
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
    /// The activation window opened (`secs`: for how long; `None`: always or by schedule);
    /// `expected`: the devices it was opened for (MACs and prefixes) and how many of them
    /// must complete before it closes (`None`: for everyone).
    WindowOpened {
        secs: Option<u64>,
        expected: Option<(Arc<[MacPrefix]>, u32)>,
    },
    WindowClosed {
        why: WindowClosure,
    },
    /// A device the window was opened for left after reaching its cloud: `done` of the
    /// `count` it waits for have.
    SetupCompleted {
        mac: MacAddr,
        done: u32,
        count: u32,
    },
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
    /// DNS-over-TCP connections refused at a bound (`limit`: client or total, `max` open
    /// at once); `closed`: how many since the last such report.
    DnsTcpLimit {
        addr: std::net::IpAddr,
        limit: &'static str,
        max: usize,
        closed: u64,
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
    /// An IP packet from `mac` with source `ip` that no lease binds to it: `owner` holds
    /// the address (another client), `own` is the address `mac` does hold. Dropped in the
    /// kernel; seen from its log (sampled).
    IpSpoofed {
        mac: MacAddr,
        ip: Ipv4Addr,
        owner: Option<MacAddr>,
        own: Option<Ipv4Addr>,
    },
    /// Repeated violations (`cause` "violations") or a flood ("dns_flood", "dhcp_flood"):
    /// `count` sightings within the policy's window. The response follows (evicted, banned).
    Abuse {
        mac: MacAddr,
        cause: &'static str,
        count: u32,
    },
    /// Spoofing the policy answers with a suspension: the alarm (the operator's
    /// `alarm_command` is run with this event). `cause`: the spoofing event's kind; `ip`
    /// the address claimed; `secs` the suspension.
    Alarm {
        mac: MacAddr,
        cause: &'static str,
        ip: Option<Ipv4Addr>,
        owner: Option<MacAddr>,
        secs: u64,
    },
    /// A client (`mac`) or the whole network (`mac` none) used up its daily quota: `used`
    /// of `limit` bytes, both ways. The kernel drops its traffic from then on (the
    /// network's: all but DHCP and DNS) until the day ends (`secs` from now).
    QuotaExceeded {
        mac: Option<MacAddr>,
        used: u64,
        limit: u64,
        secs: u64,
    },
    /// The quotas' day began: every quota is whole again.
    QuotaReset,
    /// Spoofing reports of the last minute that were not reported one by one.
    SpoofingSuppressed {
        mac: MacAddr,
        count: u32,
    },
    /// The kernel dropped a flow of this client's (sampled: the rule logs a few a second
    /// per client, and each destination is reported once a minute).
    FlowBlocked {
        mac: MacAddr,
        dst: Ipv4Addr,
        proto: u8,
        port: Option<u16>,
        why: FlowBlock,
    },
    /// Blocked flows of the last minute that were not reported one by one.
    FlowsBlockedMore {
        mac: MacAddr,
        count: u32,
    },
    /// The kernel refused a batch of set changes: the `undone` additions in it were taken
    /// back (the tables are rebuilt from what is left).
    BatchRefused {
        undone: usize,
    },
    /// The config file was read and applied at start...
    ConfigLoaded {
        file: Arc<str>,
    },
    /// ...read again and applied (SIGHUP, `provisionerctl reload`, an allow-list change).
    ConfigReloaded {
        file: Arc<str>,
    },
    /// A config file that was refused: the running configuration stays.
    ConfigRejected {
        file: Arc<str>,
        error: Arc<str>,
    },
    /// A port of the provisioning bridge was isolated from the others (R4).
    PortIsolated {
        port: Arc<str>,
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
    /// A SOCKS request refused (`dest`: the name or address asked for; reported once per
    /// client, destination and minute, as blocked flows are).
    SocksRefused {
        mac: MacAddr,
        ip: Ipv4Addr,
        dest: Arc<str>,
        port: u16,
        reason: super::socks::Refusal,
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
            Event::Joined { .. } => "joined",
            Event::Admitted { .. } => "admitted",
            Event::TurnedAway { .. } => "turned_away",
            Event::Evicted { .. } => "evicted",
            Event::Left { .. } => "left",
            Event::Banned { .. } => "banned",
            Event::BanEnded { .. } => "ban_ended",
            Event::Unbanned { .. } => "unbanned",
            Event::ClientRestored { .. } => "client_restored",
            Event::WindowOpened { .. } => "window_opened",
            Event::WindowClosed { .. } => "window_closed",
            Event::SetupCompleted { .. } => "setup_completed",
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
            Event::DnsTcpLimit { .. } => "dns_tcp_limit",
            Event::AddressLearned { .. } => "address_learned",
            Event::SocksRefused { .. } => "socks_refused",
            Event::Waiting { .. } => "waiting",
            Event::DhcpSpoofed { .. } => "dhcp_spoofed",
            Event::ArpSpoofed { .. } => "arp_spoofed",
            Event::MacFlood { .. } => "mac_flood",
            Event::SpoofingSuppressed { .. } => "spoofing_more",
            Event::BatchRefused { .. } => "batch_refused",
            Event::FlowBlocked { .. } => "flow_blocked",
            Event::FlowsBlockedMore { .. } => "flow_blocked_more",
            Event::ConfigLoaded { .. } => "config_loaded",
            Event::ConfigReloaded { .. } => "config_reloaded",
            Event::IpSpoofed { .. } => "ip_spoofed",
            Event::Abuse { .. } => "abuse",
            Event::QuotaExceeded { .. } => "quota_exceeded",
            Event::QuotaReset => "quota_reset",
            Event::Alarm { .. } => "alarm",
            Event::ConfigRejected { .. } => "config_rejected",
            Event::PortIsolated { .. } => "port_isolated",
            Event::AllowAdded { .. } => "allow_added",
            Event::AllowRemoved { .. } => "allow_removed",
            Event::AllowChanged { .. } => "allow_changed",
        }
    }

    pub fn threat(&self) -> Threat {
        match self {
            Event::DnsRefused { .. }
            | Event::DnsRefusalsSuppressed { .. }
            | Event::DnsRebinding { .. }
            | Event::FlowBlocked { .. }
            | Event::FlowsBlockedMore { .. } => Threat::Violation,
            Event::SocksRefused { reason, .. } if reason.is_violation() => Threat::Violation,
            Event::DnsRateLimited { .. } | Event::MacFlood { .. } | Event::DnsTcpLimit { .. } => {
                Threat::Abuse
            }
            Event::Abuse { .. }
            | Event::Evicted {
                reason: StationReason::Abuse,
                ..
            }
            | Event::Banned {
                reason: StationReason::Abuse,
                ..
            } => Threat::Abuse,
            Event::DhcpSpoofed { .. }
            | Event::ArpSpoofed { .. }
            | Event::IpSpoofed { .. }
            | Event::Alarm { .. }
            | Event::Evicted {
                reason: StationReason::Spoofing,
                ..
            }
            | Event::Banned {
                reason: StationReason::Spoofing,
                ..
            }
            | Event::SpoofingSuppressed { .. } => Threat::Spoofing,
            _ => Threat::Routine,
        }
    }

    /// The station it is about (window events are about the network).
    pub fn mac(&self) -> Option<MacAddr> {
        Some(match self {
            Event::WindowOpened { .. }
            | Event::WindowClosed { .. }
            | Event::BatchRefused { .. }
            | Event::ConfigLoaded { .. }
            | Event::ConfigReloaded { .. }
            | Event::ConfigRejected { .. }
            | Event::PortIsolated { .. }
            | Event::QuotaReset
            | Event::DnsTcpLimit { .. } => {
                return None;
            }
            Event::QuotaExceeded { mac, .. } => return *mac,
            Event::AllowAdded { .. } | Event::AllowRemoved { .. } | Event::AllowChanged { .. } => {
                return None;
            }
            Event::ClientRestored { mac, .. }
            | Event::Joined { mac }
            | Event::Admitted { mac, .. }
            | Event::TurnedAway { mac, .. }
            | Event::Evicted { mac, .. }
            | Event::Left { mac, .. }
            | Event::SetupCompleted { mac, .. }
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
            | Event::IpSpoofed { mac, .. }
            | Event::Abuse { mac, .. }
            | Event::Alarm { mac, .. }
            | Event::MacFlood { mac, .. }
            | Event::SpoofingSuppressed { mac, .. }
            | Event::FlowBlocked { mac, .. }
            | Event::SocksRefused { mac, .. }
            | Event::FlowsBlockedMore { mac, .. } => *mac,
        })
    }

    /// Events that happen on every answer: logged at debug level, not info.
    /// Why it happened, for the events that say (the `reason` or `why` field): what the
    /// metrics count decisions by.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Event::TurnedAway { reason, .. }
            | Event::Evicted { reason, .. }
            | Event::Banned { reason, .. } => reason.as_str(),
            Event::DnsRefused { reason, .. } => reason.as_str(),
            Event::FlowBlocked { why, .. } => why.as_str(),
            Event::DnsRebinding { why, .. } => why.as_str(),
            Event::SocksRefused { reason, .. } => reason.as_str(),
            Event::Abuse { cause, .. } | Event::Alarm { cause, .. } => cause,
            Event::WindowClosed { why } => why.as_str(),
            _ => return None,
        })
    }

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

/// One field of an event, borrowed: rendered as `key=value` for the log, as a JSON member
/// for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Str(&'a str),
    Num(u64),
    Mac(MacAddr),
    Ip(Ipv4Addr),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Num(n) => write!(f, "{n}"),
            Value::Mac(m) => write!(f, "{m}"),
            Value::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Event {
    /// Visits the event's fields after its kind, in their order: the MAC it is about
    /// first, the threat grade last (when not routine). The one description of an event
    /// that the `key=value` log, the JSON log and the control socket all render.
    pub fn fields(&self, visit: &mut dyn FnMut(&'static str, Value<'_>)) {
        use Value::{Ip, Mac, Num, Str};
        if let Some(mac) = self.mac() {
            visit("mac", Mac(mac));
        }
        match self {
            Event::LeaseGranted { ip, .. }
            | Event::LeaseRenewed { ip, .. }
            | Event::LeaseReleased { ip, .. }
            | Event::LeaseExpired { ip, .. }
            | Event::LeaseDeclined { ip, .. }
            | Event::LeaseRefused { ip, .. }
            | Event::LeaseRestored { ip, .. }
            | Event::LeaseRevoked { ip, .. } => visit("ip", Ip(*ip)),
            Event::PoolExhausted { .. }
            | Event::QuotaReset
            | Event::Joined { .. }
            | Event::BanEnded { .. }
            | Event::Unbanned { .. }
            | Event::Waiting { .. } => {}
            Event::WindowClosed { why } => visit("why", Str(why.as_str())),
            Event::SetupCompleted { done, count, .. } => {
                visit("done", Num(u64::from(*done)));
                visit("count", Num(u64::from(*count)));
            }
            Event::ClientRestored { age, .. }
            | Event::Admitted { age, .. }
            | Event::Left { age, .. } => visit("age", Num(*age)),
            Event::WindowOpened { secs, expected } => {
                match secs {
                    Some(s) => visit("secs", Num(*s)),
                    None => visit("secs", Str("unlimited")),
                }
                if let Some((prefixes, count)) = expected {
                    let list: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
                    visit("for", Str(&list.join(",")));
                    visit("count", Num(u64::from(*count)));
                }
            }
            Event::TurnedAway { reason, .. } => visit("reason", Str(reason.as_str())),
            Event::Evicted { reason, age, .. } => {
                visit("reason", Str(reason.as_str()));
                visit("age", Num(*age));
            }
            Event::Banned { secs, reason, .. } => {
                visit("secs", Num(*secs));
                visit("reason", Str(reason.as_str()));
            }
            Event::DnsRefused {
                name,
                qtype,
                reason,
                ..
            } => {
                visit("name", Str(name));
                visit("type", Str(&qtype_name(*qtype)));
                visit("reason", Str(reason.as_str()));
            }
            Event::DnsRefusalsSuppressed { count, .. }
            | Event::SpoofingSuppressed { count, .. }
            | Event::FlowsBlockedMore { count, .. } => visit("count", Num(u64::from(*count))),
            Event::FlowBlocked {
                dst,
                proto,
                port,
                why,
                ..
            } => {
                visit("dst", Ip(*dst));
                visit("proto", Str(&proto_name(*proto)));
                if let Some(p) = port {
                    visit("port", Num(u64::from(*p)));
                }
                visit("why", Str(why.as_str()));
            }
            Event::DnsRebinding {
                name, addr, why, ..
            } => {
                visit("name", Str(name));
                visit("addr", Ip(*addr));
                visit("why", Str(why.as_str()));
            }
            Event::DnsRateLimited { refused, .. } => visit("refused", Num(u64::from(*refused))),
            Event::AddressLearned {
                name, addr, ttl, ..
            } => {
                visit("name", Str(name));
                visit("addr", Ip(*addr));
                visit("ttl", Num(u64::from(*ttl)));
            }
            Event::DhcpSpoofed {
                claim,
                msg,
                ip,
                port,
                ..
            } => {
                match claim {
                    DhcpClaim::Chaddr(m) => visit("chaddr", Mac(*m)),
                    DhcpClaim::ClientId(m) => visit("client_id", Mac(*m)),
                }
                visit("msg", Str(msg));
                if let Some(ip) = ip {
                    visit("ip", Ip(*ip));
                }
                visit("port", Num(u64::from(*port)));
            }
            Event::ArpSpoofed {
                sender,
                ip,
                owner,
                router,
                ..
            } => {
                visit("sender", Mac(*sender));
                visit("ip", Ip(*ip));
                match (router, owner) {
                    (true, _) => visit("owner", Str("router")),
                    (false, Some(o)) => visit("owner", Mac(*o)),
                    (false, None) => visit("owner", Str("none")),
                }
            }
            Event::IpSpoofed { ip, owner, own, .. } => {
                visit("ip", Ip(*ip));
                match owner {
                    Some(o) => visit("owner", Mac(*o)),
                    None => visit("owner", Str("none")),
                }
                if let Some(own) = own {
                    visit("own", Ip(*own));
                }
            }
            Event::Abuse { cause, count, .. } => {
                visit("cause", Str(cause));
                visit("count", Num(u64::from(*count)));
            }
            Event::QuotaExceeded {
                mac,
                used,
                limit,
                secs,
            } => {
                if mac.is_none() {
                    visit("scope", Str("network"));
                }
                visit("used", Num(*used));
                visit("limit", Num(*limit));
                visit("secs", Num(*secs));
            }
            Event::Alarm {
                cause,
                ip,
                owner,
                secs,
                ..
            } => {
                visit("cause", Str(cause));
                if let Some(ip) = ip {
                    visit("ip", Ip(*ip));
                }
                if let Some(o) = owner {
                    visit("owner", Mac(*o));
                }
                visit("secs", Num(*secs));
            }
            Event::MacFlood { port, macs, .. } => {
                visit("port", Num(u64::from(*port)));
                visit("macs", Num(*macs as u64));
            }
            Event::BatchRefused { undone } => visit("undone", Num(*undone as u64)),
            Event::ConfigLoaded { file } | Event::ConfigReloaded { file } => {
                visit("file", Str(file))
            }
            Event::ConfigRejected { file, error } => {
                visit("file", Str(file));
                visit("error", Str(error));
            }
            Event::PortIsolated { port } => visit("port", Str(port)),
            Event::DnsTcpLimit {
                addr,
                limit,
                max,
                closed,
            } => {
                visit("addr", Str(&addr.to_string()));
                visit("limit", Str(limit));
                visit("max", Num(*max as u64));
                visit("closed", Num(*closed));
            }
            Event::SocksRefused {
                ip,
                dest,
                port,
                reason,
                ..
            } => {
                visit("ip", Ip(*ip));
                visit("dest", Str(dest));
                visit("port", Num(u64::from(*port)));
                visit("reason", Str(reason.as_str()));
            }
            Event::AllowAdded { name } => visit("name", Str(name)),
            Event::AllowRemoved { name, flows_ended }
            | Event::AllowChanged { name, flows_ended } => {
                visit("name", Str(name));
                match flows_ended {
                    Some(n) => visit("flows_ended", Num(*n as u64)),
                    None => visit("flows_ended", Str("failed")),
                }
            }
        }
        if self.threat() != Threat::Routine {
            visit("threat", Str(self.threat().as_str()));
        }
    }
}

/// Writes `key=value`, quoting a value that holds a space, a quote, `=` or a control
/// character (a refused DNS name is the client's choice of bytes), so one line stays one
/// event and every pair parses back.
pub fn write_pair(out: &mut dyn fmt::Write, key: &str, value: Value<'_>) -> fmt::Result {
    let Value::Str(s) = value else {
        return write!(out, " {key}={value}");
    };
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if plain {
        return write!(out, " {key}={s}");
    }
    write!(out, " {key}=\"")?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            c if c.is_control() => write!(out, "\\x{:02x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event={}", self.kind())?;
        let mut result = Ok(());
        self.fields(&mut |k, v| {
            if result.is_ok() {
                result = write_pair(f, k, v);
            }
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reason()` is the `reason` or `why` field the event renders, for every kind that has
    /// one, and nothing for the others.
    #[test]
    fn the_reason_is_the_field_the_event_shows() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let ip = Ipv4Addr::new(11, 1, 0, 20);
        for e in [
            Event::TurnedAway {
                mac,
                reason: StationReason::Full,
            },
            Event::Evicted {
                mac,
                reason: StationReason::Operator,
                age: 3,
            },
            Event::Banned {
                mac,
                secs: 60,
                reason: StationReason::MakeRoom,
            },
            Event::DnsRefused {
                mac,
                name: "x.example".into(),
                qtype: 16,
                reason: DnsRefusal::QueryType,
            },
            Event::FlowBlocked {
                mac,
                dst: ip,
                proto: 6,
                port: Some(443),
                why: FlowBlock::NotWan,
            },
            Event::DnsRebinding {
                mac,
                name: "x.example".into(),
                addr: ip,
                why: Unsafe::Protected,
            },
            Event::Admitted { mac, age: 0 },
            Event::LeaseGranted { mac, ip },
            Event::WindowClosed {
                why: WindowClosure::Completed,
            },
            Event::SetupCompleted {
                mac,
                done: 1,
                count: 2,
            },
            Event::TurnedAway {
                mac,
                reason: StationReason::NotExpected,
            },
        ] {
            let mut shown = None;
            e.fields(&mut |k, v| {
                if let ("reason" | "why", Value::Str(s)) = (k, v) {
                    shown = Some(s.to_owned());
                }
            });
            assert_eq!(e.reason().map(str::to_owned), shown, "{e}");
        }
    }

    #[test]
    fn a_window_for_devices_says_which_and_why_it_closed() {
        let opened = Event::WindowOpened {
            secs: Some(600),
            expected: Some((
                Arc::from(
                    &[
                        "00:11:22:33:44:55".parse::<MacPrefix>().unwrap(),
                        "00:11:2".parse().unwrap(),
                    ][..],
                ),
                2,
            )),
        };
        assert_eq!(
            opened.to_string(),
            "event=window_opened secs=600 for=00:11:22:33:44:55,00:11:2 count=2"
        );
        assert_eq!(
            Event::WindowClosed {
                why: WindowClosure::Timeout
            }
            .to_string(),
            "event=window_closed why=timeout"
        );
    }
}
