//! The ruleset, as a pure function of the config and the state carried over: one table,
//! `inet provisioner`, that only ever *restricts* traffic touching the provisioning
//! interface. Everything else on the router passes our base chains untouched (policy accept)
//! and is left to the router's own firewall.
//!
//! Per-client and per-address state lives in sets (`leases`, `allow4_net`), never in one
//! rule per client. The script replaces the table in one transaction (`nft -f` applies a
//! file atomically), carrying the live set elements over, so there is no instant where the
//! table is missing or half-built.

use std::fmt::Write;

use crate::config::Config;
use crate::config::value::Rate;
use std::time::Duration;

use crate::core::Snapshot;
use crate::core::events::FlowBlock;
use crate::firewall::netlink::Counter;
use crate::firewall::nflog;

pub const TABLE: &str = "provisioner";

/// Netfilter hooks of our base chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    /// The arp family's input (`NF_ARP_IN`).
    ArpInput,
    /// The netdev family's, on one device: what it receives (`NF_NETDEV_INGRESS`) and what
    /// is sent through it (`NF_NETDEV_EGRESS`).
    Ingress,
    Egress,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input | Hook::ArpInput => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }

    /// The hook's number as the kernel reports it on read-back (`enum nf_inet_hooks`,
    /// `NF_ARP_*`).
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
            Hook::ArpInput => 0,
            Hook::Ingress => 0,
            Hook::Egress => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: &'static str,
    pub hook: Hook,
    pub priority: i32,
    /// The device a netdev chain hooks (`None` in the other families).
    pub device: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub base: Option<BaseChain>,
    pub rules: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub name: std::borrow::Cow<'static, str>,
    pub key: &'static str,
    pub flags: &'static str,
    /// More of the definition (`size`, `timeout`), a line each.
    pub settings: Vec<String>,
    pub elements: Vec<String>,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// An nftables address family our tables live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6: admission, anti-spoofing, the allow-list, NAT.
    Inet,
    /// The router's ARP input: only ARP whose sender a lease binds reaches its neighbour
    /// table.
    Arp,
    /// The provisioning device's own hooks: what must see every packet of a client, also
    /// those a flowtable carries past the forward hook (counts, rates, the DSCP mark).
    Netdev,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Netdev => "netdev",
        }
    }

    /// `NFPROTO_*`, as netlink carries it.
    pub fn number(self) -> u8 {
        match self {
            Family::Inet => crate::firewall::netlink::FAMILY_INET,
            Family::Arp => crate::firewall::netlink::FAMILY_ARP,
            Family::Netdev => crate::firewall::netlink::FAMILY_NETDEV,
        }
    }
}

/// One of our tables as data: rendered to an nft script to install, and compared with what
/// the kernel reports to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// Our tables, all named [`TABLE`]: installed, verified and restored together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub inet: Table,
    pub arp: Table,
    pub netdev: Table,
    /// The bindings whose traffic the `count_up`/`count_down` sets count (see
    /// [`Ruleset::with_counters`]).
    pub counted: Vec<(crate::core::MacAddr, std::net::Ipv4Addr)>,
    /// Where each client's daily quota is kept, and the network's.
    pub quotas: QuotaPlan,
    /// The admitted clients, whose quota elements the installed table gets.
    pub metered: Vec<crate::core::MacAddr>,
}

/// Which quota set a client's element goes in (its vendor profile's, with a quota of its
/// own, else the clients'), and the network's quota.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaPlan {
    profiles: Vec<crate::core::profile::Profile>,
    own: Vec<Option<u64>>,
    client: Option<u64>,
    pub network: Option<u64>,
}

impl QuotaPlan {
    pub fn of(cfg: &Config) -> QuotaPlan {
        QuotaPlan {
            profiles: cfg.profiles.iter().map(|p| p.profile.clone()).collect(),
            own: cfg.profiles.iter().map(|p| p.client_daily).collect(),
            client: cfg.limits.client_daily,
            network: cfg.limits.total_daily,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.network.is_none() && self.client_sets().is_empty()
    }

    /// The set `mac`'s quota is kept in, and its daily bytes.
    pub fn client_set(&self, mac: crate::core::MacAddr) -> Option<(String, u64)> {
        if let Some(i) = crate::core::profile::of(&self.profiles, mac) {
            if let Some(bytes) = self.own[i] {
                return Some((quota_profile(i), bytes));
            }
        }
        self.client.map(|b| (QUOTA_CLIENT.to_owned(), b))
    }

    /// Every client quota set.
    pub fn client_sets(&self) -> Vec<String> {
        let own = self.own.iter().enumerate();
        own.filter(|(_, b)| b.is_some())
            .map(|(i, _)| quota_profile(i))
            .chain(self.client.map(|_| QUOTA_CLIENT.to_owned()))
            .collect()
    }
}

/// The sets that count each client's traffic in the kernel (`firewall::counters`): up by
/// its MAC/IP pair, down by its address.
pub const COUNT_UP: &str = "count_up";
pub const COUNT_DOWN: &str = "count_down";

/// The daily quota sets (netdev table): the clients' (`ether_addr`, each client's bytes
/// both ways), a vendor profile's own ([`quota_profile`]), and the network's (one `ip`
/// element: every client's bytes). Their elements time out when the day ends.
pub const QUOTA_CLIENT: &str = "quota_c";
pub const QUOTA_NETWORK: &str = "quota_n";

/// The quota set of the `i`th vendor profile (with a `client_daily` of its own).
pub fn quota_profile(i: usize) -> String {
    format!("quota_p{i}")
}

/// Our device chains run before anything else on those hooks, fw4's flowtable included
/// (it hooks ingress at priority 0): a flow it offloads still passes them.
const PRIO_DEVICE: i32 = -500;

/// ` comment "name"` for an element, if the name is safe to quote (DNS names as the
/// resolver normalises them always are).
fn nft_comment(name: &str) -> String {
    let safe = !name.is_empty()
        && name.len() <= crate::firewall::netlink::MAX_COMMENT_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if safe {
        format!(" comment \"{name}\"")
    } else {
        String::new()
    }
}

/// A network as nft writes it: a single address without `/32`.
fn nft_net(n: &ipnet::Ipv4Net) -> String {
    if n.prefix_len() == 32 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

// nft's named priorities, as numbers (the kernel reports numbers).
const PRIO_RAW: i32 = -300;
const PRIO_DSTNAT: i32 = -100;
const PRIO_FILTER: i32 = 0;
/// Our filter chains run just before the router's (fw4's, at `filter`), never tied with
/// them: on a tie the kernel runs hooks in the order they were registered, which changes
/// with every fw4 reload. Before fw4, our restrictions hold whatever fw4 says, a refused
/// router service is dropped (no reset, nothing to fingerprint) before fw4 could answer
/// it, and the mark below is set by the time fw4 looks.
const PRIO_OURS: i32 = PRIO_FILTER - 10;

/// The firewall mark bit set on every packet this table lets out of the provisioning
/// network. On OpenWrt, fw4 forwards provisioning traffic to the WAN only with this bit set,
/// so without our table (not installed yet, flushed on purpose) nothing gets out: closed at
/// both levels.
pub const ALLOW_MARK: u32 = 0x4000_0000;
const PRIO_SRCNAT: i32 = 100;

/// R11: provisioning traffic goes at a lower priority than the home's, both ways. DSCP
/// CS1 is what Wi-Fi (WMM) sends as background and SQM/cake (diffserv) queues as bulk.
const LOWER_EFFORT: &str = "ip dscp set cs1";

/// R10: the rate rules for traffic from (upload) and to (download) the provisioning
/// network, each client's (by its address) before the whole network's, so that a client
/// over its own rate takes nothing from the others. Over a rate, packets are dropped
/// (policing: TCP slows down to it). The kernel's bucket holds a second's worth plus the
/// burst, a quarter second's worth here (at least 16 KB): after a pause a device may send
/// that much at once, then the rate holds.
///
/// A vendor profile with rates of its own holds its clients to them instead of the
/// network's per-client ones: upload by the client's MAC (the profile's intervals, one rule
/// per profile, never per client), download by the addresses its clients sent from in the
/// last minute (a set the upload rule fills in the kernel: the forward hook has no MAC of a
/// packet's receiver).
fn rate_rules(cfg: &Config) -> (Vec<String>, Vec<String>, Vec<Set>) {
    let l = &cfg.limits;
    let limit = |r: Rate| {
        let burst = (r.bytes_per_sec / 4).max(16_000);
        format!(
            "limit rate over {} bytes/second burst {burst} bytes",
            r.bytes_per_sec
        )
    };
    let dynamic = |name: String| Set {
        name: name.into(),
        key: "ipv4_addr",
        flags: "dynamic,timeout",
        settings: strs(&["size 4096", "timeout 1m"]),
        elements: Vec::new(),
    };
    let (mut up, mut down, mut sets) = (Vec::new(), Vec::new(), Vec::new());
    // The profiles with rates of their own, with their MACs as an nft set expression.
    let profiles: Vec<_> = cfg.profiles.iter().map(|p| p.profile.clone()).collect();
    let parts = crate::core::profile::partition(&profiles);
    let macs = |i: usize| -> Option<String> {
        let mine: Vec<String> = parts
            .iter()
            .filter(|(.., owner)| *owner == Some(i))
            .map(|&(a, b, _)| {
                let (a, b) = (
                    crate::core::profile::mac_of(a),
                    crate::core::profile::mac_of(b),
                );
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        (!mine.is_empty()).then(|| format!("{{ {} }}", mine.join(", ")))
    };
    let mut own_up = Vec::new();
    let mut own_down = Vec::new();
    for (i, p) in cfg.profiles.iter().enumerate() {
        let Some(m) = macs(i) else { continue };
        let name = &p.profile.name;
        if p.client_rate_down.is_some() {
            up.push(format!("ether saddr {m} update @seen_p{i} {{ ip saddr }}"));
            sets.push(dynamic(format!("seen_p{i}")));
        }
        if let Some(r) = p.client_rate_up {
            up.push(format!(
                "ether saddr {m} update @rate_up_p{i} {{ ip saddr {} }} counter drop comment \"over profile {name}'s client upload rate\"",
                limit(r)
            ));
            sets.push(dynamic(format!("rate_up_p{i}")));
            own_up.push(m.trim_matches(['{', '}', ' ']).to_owned());
        }
        if let Some(r) = p.client_rate_down {
            down.push(format!(
                "ip daddr @seen_p{i} update @rate_down_p{i} {{ ip daddr {} }} counter drop comment \"over profile {name}'s client download rate\"",
                limit(r)
            ));
            sets.push(dynamic(format!("rate_down_p{i}")));
            own_down.push(format!("ip daddr != @seen_p{i} "));
        }
    }
    if let Some(r) = l.client_rate_up {
        let others = if own_up.is_empty() {
            String::new()
        } else {
            format!("ether saddr != {{ {} }} ", own_up.join(", "))
        };
        up.push(format!(
            "{others}update @rate_up {{ ip saddr {} }} counter drop comment \"over the client's upload rate\"",
            limit(r)
        ));
    }
    if let Some(r) = l.client_rate_down {
        down.push(format!(
            "{}update @rate_down {{ ip daddr {} }} counter drop comment \"over the client's download rate\"",
            own_down.concat(),
            limit(r)
        ));
    }
    for (total, v, way) in [
        (l.total_rate_up, &mut up, "upload"),
        (l.total_rate_down, &mut down, "download"),
    ] {
        if let Some(r) = total {
            v.push(format!(
                "{} counter drop comment \"over the network's {way} rate\"",
                limit(r)
            ));
        }
    }
    (up, down, sets)
}

/// The provisioning device's own table (netdev family): each client's counts, rates and
/// lower-effort mark, on the device's ingress (what clients send, before routing) and
/// egress (what is sent to them, after it). Netfilter's forward hook is skipped by a flow
/// that a flowtable (fw4's `flow_offloading`) has taken over, but the device hooks are
/// not: software offload receives at the device's ingress, after our chain, and transmits
/// through the device, so its egress. Home traffic never passes these hooks at all.
///
/// Only a bound pair is looked up further (`count_up`/`count_down` hold the bindings), so
/// strangers and spoofers, which the inet table drops, fill no rate set; DHCP and DNS, the
/// router's own service, are neither policed nor marked.
fn device_table(
    cfg: &Config,
    counted: &[(crate::core::MacAddr, std::net::Ipv4Addr)],
    up: Vec<String>,
    down: Vec<String>,
    rate_sets: Vec<Set>,
) -> Table {
    let dev = |hook| {
        Some(BaseChain {
            kind: "filter",
            hook,
            priority: PRIO_DEVICE,
            device: Some(cfg.network.interface.to_string()),
        })
    };
    let mut sets: Vec<Set> = count_sets(counted, |_, _| None).into();
    // Each client's rate, by its address, in a set the rules fill as packets pass
    // (an element leaves a minute after the client's last packet).
    for (name, per_client) in [
        ("rate_up", cfg.limits.client_rate_up),
        ("rate_down", cfg.limits.client_rate_down),
    ] {
        if per_client.is_some() {
            sets.push(Set {
                name: name.into(),
                key: "ipv4_addr",
                flags: "dynamic,timeout",
                settings: strs(&["size 4096", "timeout 1m"]),
                elements: Vec::new(),
            });
        }
    }
    sets.extend(rate_sets);
    // Daily quotas, both ways, in the kernel: an element per client (in its profile's set
    // if that has a quota of its own) and one for the network, each counting down what
    // passes and timing out at the day's end, when the daemon adds new ones. Over its quota,
    // a client's traffic is dropped here even while the daemon is away.
    let mut quota_up = Vec::new();
    let mut quota_down = Vec::new();
    let quota_set = |name: String, key: &'static str, bytes: u64| Set {
        name: name.into(),
        key,
        flags: "timeout",
        settings: vec![format!("quota over {bytes} bytes")],
        elements: Vec::new(),
    };
    let mut client_quota = |name: String, bytes: u64, whose: &str| {
        sets.push(quota_set(name.clone(), "ether_addr", bytes));
        quota_up.push(format!(
            "ether saddr @{name} counter drop comment \"over {whose} daily quota\""
        ));
        quota_down.push(format!(
            "ether daddr @{name} counter drop comment \"over {whose} daily quota\""
        ));
    };
    for (i, p) in cfg.profiles.iter().enumerate() {
        if let Some(bytes) = p.client_daily {
            client_quota(quota_profile(i), bytes, "its profile's");
        }
    }
    if let Some(bytes) = cfg.limits.client_daily {
        client_quota(QUOTA_CLIENT.to_owned(), bytes, "the client's");
    }
    if let Some(bytes) = cfg.limits.total_daily {
        sets.push(quota_set(QUOTA_NETWORK.to_owned(), "ether_type", bytes));
        for v in [&mut quota_up, &mut quota_down] {
            v.push(format!(
                "meta protocol @{QUOTA_NETWORK} counter drop comment \"over the network's daily quota\""
            ));
        }
    }
    let service_up = "meta l4proto udp udp dport 67 return".to_owned();
    let dns_up = "meta l4proto { tcp, udp } th dport 53 return".to_owned();
    let service_down = "meta l4proto udp udp sport 67 return".to_owned();
    let dns_down = "meta l4proto { tcp, udp } th sport 53 return".to_owned();
    let chains = vec![
        Chain {
            name: "ingress",
            base: dev(Hook::Ingress),
            // Positive lookups, which count the element they find (a negated one, `!=
            // @set`, counts nothing: see the kernel test), never per-client rules.
            rules: vec![format!(
                "ether saddr . ip saddr @{COUNT_UP} jump from_client"
            )],
        },
        Chain {
            name: "from_client",
            base: None,
            rules: [service_up, dns_up]
                .into_iter()
                .chain(quota_up)
                .chain(up)
                .chain([LOWER_EFFORT.to_owned()])
                .collect(),
        },
        Chain {
            name: "egress",
            base: dev(Hook::Egress),
            rules: vec![format!("ip daddr @{COUNT_DOWN} jump to_client")],
        },
        Chain {
            name: "to_client",
            base: None,
            rules: [service_down, dns_down]
                .into_iter()
                .chain(quota_down)
                .chain(down)
                .chain([LOWER_EFFORT.to_owned()])
                .collect(),
        },
    ];
    Table {
        family: Family::Netdev,
        sets,
        chains,
    }
}

/// Logs a packet about to be dropped for `why` to the daemon (the audit log's
/// flow_blocked), sampled in the kernel: a few a second per client, 64 a second per rule in
/// all, so a scan or a flood costs the daemon next to nothing.
fn sampled(why: FlowBlock) -> String {
    format!(
        "update @flow_logged {{ ether saddr limit rate 2/second burst 4 packets }} limit rate 64/second log prefix \"{}{}\" group {}",
        nflog::PREFIX_FLOW,
        why.as_str(),
        nflog::GROUP
    )
}

/// The static allow set's key, the rule's match on it, and its elements. Without vendor
/// profiles: `address . protocol . port`. With them, the client's MAC comes first, as an
/// interval per profile ([`crate::core::profile::partition`]: the longest prefix's, the
/// default entries' outside every prefix): a new connection still costs one lookup, and no
/// element or rule is per client.
fn static_allow(cfg: &Config) -> (&'static str, &'static str, Vec<String>) {
    let mut allow: Vec<String> = Vec::new();
    let points = |owner: Option<&str>| -> Vec<String> {
        cfg.allow
            .iter()
            .filter(|e| e.profile.as_deref() == owner)
            .flat_map(|entry| {
                entry.nets.iter().flat_map(move |n| {
                    entry
                        .ports
                        .iter()
                        .map(move |p| format!("{} . {} . {p}", nft_net(n), entry.proto.as_str()))
                })
            })
            .collect()
    };
    if cfg.profiles.is_empty() {
        for e in points(None) {
            if !allow.contains(&e) {
                allow.push(e);
            }
        }
        return (
            "ipv4_addr . inet_proto . inet_service",
            "ip daddr . meta l4proto . th dport",
            allow,
        );
    }
    let profiles: Vec<_> = cfg.profiles.iter().map(|p| p.profile.clone()).collect();
    for (first, last, owner) in crate::core::profile::partition(&profiles) {
        let macs = if first == last {
            crate::core::profile::mac_of(first).to_string()
        } else {
            format!(
                "{}-{}",
                crate::core::profile::mac_of(first),
                crate::core::profile::mac_of(last)
            )
        };
        let owner = owner.map(|i| profiles[i].name.as_str());
        for e in points(owner) {
            let e = format!("{macs} . {e}");
            if !allow.contains(&e) {
                allow.push(e);
            }
        }
    }
    (
        "ether_addr . ipv4_addr . inet_proto . inet_service",
        "ether saddr . ip daddr . meta l4proto . th dport",
        allow,
    )
}

impl Ruleset {
    /// The table for `cfg`, carrying the live elements of `state` over.
    pub fn build(cfg: &Config, state: &Snapshot) -> Ruleset {
        let (leases, learned) = (&state.leases, &state.learned);
        let net = &cfg.network;
        let prov = format!("\"{}\"", net.interface);
        let wan = format!("\"{}\"", net.wan);
        let router = net.router;
        let socks = cfg.socks.map(|s| s.port);
        let base = |kind, hook, priority| {
            Some(BaseChain {
                kind,
                hook,
                priority,
                device: None,
            })
        };
        let r = |s: &str| s.to_owned();
        // What we accept as new is marked twice: the packet, for fw4 (below), and the
        // connection, so that later packets are accepted as ours (see `ours`).
        let allowed = format!(
            "ct mark set ct mark | {ALLOW_MARK:#x} meta mark set meta mark | {ALLOW_MARK:#x} accept"
        );
        // Established traffic is accepted only for connections one of our rules accepted
        // (or the router opened): a flow that began while our table was missing (flushed,
        // not yet restored) stays unmarked and is judged as if new, so a restored table
        // stops it at once. Related traffic only as ICMP errors about such a connection: a
        // conntrack helper's expectation (FTP data, SIP media) must pass the allow-list
        // like any connection.
        let ours = [
            format!("ct state established ct mark & {ALLOW_MARK:#x} == {ALLOW_MARK:#x} accept"),
            format!(
                "ct state related meta l4proto icmp ct mark & {ALLOW_MARK:#x} == {ALLOW_MARK:#x} accept"
            ),
        ];

        let (allow_key, allow_match, allow) = static_allow(cfg);
        // Allowed, a new connection still waits its turn: a client opens at most
        // `connection_rate` a second (twice that at once), so that a flood of SYNs or of
        // UDP flows from made-up ports through an allow-list entry cannot fill the router's
        // conntrack table (shared with the home network's NAT).
        let rate = cfg.limits.connection_rate;
        let accept_new = "goto accept_new";
        let mut accept_new_rules = Vec::new();
        if rate > 0 {
            accept_new_rules.push(format!(
                "ct state new update @connection_rate {{ ip saddr limit rate over {rate}/second burst {} packets }} goto refuse_connection_rate",
                rate.saturating_mul(2)
            ));
        }
        accept_new_rules.push(allowed.clone());

        let ms = |d: &Duration| d.as_millis();
        let (up, down, profile_rate_sets) = rate_rules(cfg);
        let mut sets = vec![
            // Admitted clients, each until its session ends: the kernel closes the door
            // then even if the daemon is gone. The comment keeps the admission time.
            Set {
                name: "clients".into(),
                key: "ether_addr",
                flags: "timeout",
                settings: Vec::new(),
                elements: state
                    .clients
                    .iter()
                    .filter(|(_, left)| !left.is_zero())
                    .map(|(c, left)| {
                        format!(
                            "{} timeout {}ms comment \"since={}\"",
                            c.mac,
                            ms(left),
                            c.since.as_millis()
                        )
                    })
                    .collect(),
            },
            // Evicted, expired and turned-away stations, each until its cooldown ends.
            Set {
                name: "banned".into(),
                key: "ether_addr",
                flags: "timeout",
                settings: Vec::new(),
                elements: state
                    .bans
                    .iter()
                    .filter(|(_, left)| !left.is_zero())
                    .map(|(mac, left)| format!("{mac} timeout {}ms", ms(left)))
                    .collect(),
            },
            // Anti-spoofing: the MAC/IP pairs DHCP bound, each timing out with its lease.
            leases_set(leases),
            // Static allow-list entries: address or CIDR, protocol, port or range.
            Set {
                name: "allow4_net".into(),
                key: allow_key,
                flags: "interval",
                settings: Vec::new(),
                elements: allow,
            },
            // Addresses learned from DNS answers, per client: this MAC may reach this
            // address on this protocol and port, until the answer's (clamped) TTL runs out.
            // The comment is the name it was learned for.
            Set {
                name: "learned4".into(),
                key: "ether_addr . ipv4_addr . inet_proto . inet_service",
                flags: "timeout",
                settings: Vec::new(),
                elements: learned
                    .iter()
                    .filter(|(_, left, _)| !left.is_zero())
                    .map(|(k, left, name)| {
                        format!(
                            "{} . {} . {} . {} timeout {}ms{}",
                            k.mac,
                            k.ip,
                            k.proto.as_str(),
                            k.port,
                            left.as_millis(),
                            nft_comment(name)
                        )
                    })
                    .collect(),
            },
            // Never reachable from the provisioning network, whatever the allow-list says.
            Set {
                name: "protect4".into(),
                key: "ipv4_addr",
                flags: "interval",
                settings: Vec::new(),
                elements: net
                    .protect
                    .iter()
                    .map(|n| n.to_string().replace("/32", ""))
                    .collect(),
            },
        ];
        if rate > 0 {
            sets.push(Set {
                name: "connection_rate".into(),
                key: "ipv4_addr",
                flags: "dynamic,timeout",
                settings: strs(&["size 4096", "timeout 1m"]),
                elements: Vec::new(),
            });
        }
        // Clients whose refused flows were logged lately (see `sampled`).
        sets.push(Set {
            name: "flow_logged".into(),
            key: "ether_addr",
            flags: "dynamic,timeout",
            settings: strs(&["size 1024", "timeout 1m"]),
            elements: Vec::new(),
        });
        // Clients whose packets from an address not theirs were logged lately.
        sets.push(Set {
            name: "spoof_logged".into(),
            key: "ether_addr",
            flags: "dynamic,timeout",
            settings: strs(&["size 1024", "timeout 1m"]),
            elements: Vec::new(),
        });

        let chains = vec![
            // Before conntrack: spoofed and IPv6 packets never create state or reach NAT.
            Chain {
                name: "prerouting",
                base: base("filter", Hook::Prerouting, PRIO_RAW),
                rules: vec![format!("iifname {prov} jump guard")],
            },
            Chain {
                name: "guard",
                base: None,
                rules: vec![
                    r(
                        "meta nfproto ipv6 counter drop comment \"IPv6 is off on the provisioning network\"",
                    ),
                    r("ether saddr @banned counter drop comment \"banned (cooldown)\""),
                    // DHCP is how a client gets its binding, so it cannot need one. (Without a
                    // radio it is also how a station joins; with one, the daemon answers only
                    // admitted stations.)
                    format!(
                        "ip daddr {{ 255.255.255.255, {router} }} udp sport 68 udp dport 67 accept"
                    ),
                    r("ether saddr != @clients counter drop comment \"not an admitted client\""),
                    r("ether saddr . ip saddr @leases return"),
                    // The daemon grades what it was (another client's address, a second
                    // one, nobody's): spoofing, sampled as refused flows are.
                    format!(
                        "update @spoof_logged {{ ether saddr limit rate 2/second burst 4 packets }} limit rate 64/second log prefix \"{}\" group {}",
                        nflog::PREFIX_SPOOF,
                        nflog::GROUP
                    ),
                    r("counter drop comment \"MAC/IP pair without a lease\""),
                ],
            },
            // DNS to any resolver is answered by the router's (never leaks past it).
            Chain {
                name: "dstnat",
                base: base("nat", Hook::Prerouting, PRIO_DSTNAT),
                rules: vec![format!(
                    "iifname {prov} meta l4proto {{ tcp, udp }} th dport 53 redirect to :53"
                )],
            },
            Chain {
                name: "input",
                base: base("filter", Hook::Input, PRIO_OURS),
                // The SOCKS forwarder is the provisioning network's: the router's
                // provisioning address on its port, arriving anywhere else (the kernel
                // delivers it from any interface), is dropped.
                rules: socks
                    .iter()
                    .map(|port| {
                        format!(
                            "iifname != {prov} ip daddr {router} tcp dport {port} counter drop comment \"SOCKS only from the provisioning network\""
                        )
                    })
                    .chain([format!("iifname {prov} jump input_prov")])
                    .collect(),
            },
            // The router's own services: DHCP and DNS only. (Replies to connections the
            // router opened itself, e.g. an operator's ping, are not a service.)
            Chain {
                name: "input_prov",
                base: None,
                rules: [
                    r("udp sport 68 udp dport 67 accept"),
                    format!("ip daddr {router} meta l4proto {{ tcp, udp }} th dport 53 accept"),
                ]
                .into_iter()
                // (Only admitted clients with a leased pair get this far: the guard.)
                .chain(
                    socks
                        .iter()
                        .map(|port| format!("ip daddr {router} tcp dport {port} accept")),
                )
                .chain(ours.iter().cloned())
                .chain([
                    sampled(FlowBlock::Router),
                    r("counter drop comment \"router service not offered to provisionees\""),
                ])
                .collect(),
            },
            Chain {
                name: "forward",
                base: base("filter", Hook::Forward, PRIO_OURS),
                rules: vec![
                    format!("iifname {prov} jump forward_from_prov"),
                    format!("oifname {prov} jump forward_to_prov"),
                ],
            },
            Chain {
                name: "forward_from_prov",
                base: None,
                rules: [
                    // Out the WAN only: not the home LAN, not back to another client. (Each
                    // match once: the sample and the drop are in the chain it goes to, so
                    // allowed traffic pays no second compare or lookup.)
                    format!("oifname != {wan} goto refuse_not_wan"),
                ]
                .into_iter()
                // An open connection of ours goes on at once: its first packet passed what
                // follows (no allow-list entry overlaps a protected network, and a reload
                // that removes one ends its connections).
                .chain(ours.iter().cloned())
                .chain([
                    r("ip daddr @protect4 goto refuse_protected"),
                    format!("{allow_match} @allow4_net {accept_new}"),
                    format!(
                        "ether saddr . ip daddr . meta l4proto . th dport @learned4 {accept_new}"
                    ),
                    sampled(FlowBlock::NotAllowed),
                    r("counter drop comment \"not allow-listed\""),
                ])
                .collect(),
            },
            Chain {
                name: "refuse_not_wan",
                base: None,
                rules: vec![
                    sampled(FlowBlock::NotWan),
                    r("counter drop comment \"not towards the WAN\""),
                ],
            },
            Chain {
                name: "refuse_protected",
                base: None,
                rules: vec![
                    sampled(FlowBlock::Protected),
                    r("counter drop comment \"protected network\""),
                ],
            },
            Chain {
                name: "accept_new",
                base: None,
                rules: accept_new_rules,
            },
            Chain {
                name: "refuse_connection_rate",
                base: None,
                rules: vec![
                    sampled(FlowBlock::ConnectionRate),
                    r("counter drop comment \"over the client's new-connection rate\""),
                ],
            },
            // Inbound: replies to what a client opened, from the WAN, and nothing else.
            Chain {
                name: "forward_to_prov",
                base: None,
                rules: [format!(
                    "iifname != {wan} counter drop comment \"not from the WAN\""
                )]
                .into_iter()
                .chain(ours.iter().cloned())
                .chain([r("counter drop comment \"unsolicited inbound\"")])
                .collect(),
            },
            // No IPv6 of the router's own (router advertisements, DHCPv6) onto the network;
            // a connection the router opens to a client (an operator's ping) is ours.
            Chain {
                name: "output",
                base: base("filter", Hook::Output, PRIO_OURS),
                rules: vec![
                    format!("oifname {prov} meta nfproto ipv6 drop"),
                    format!("oifname {prov} ct state new ct mark set ct mark | {ALLOW_MARK:#x}"),
                ],
            },
            Chain {
                name: "srcnat",
                base: base("nat", Hook::Postrouting, PRIO_SRCNAT),
                rules: vec![format!("oifname {wan} ip saddr {} masquerade", net.subnet)],
            },
        ];
        let arp = Table {
            family: Family::Arp,
            sets: vec![
                leases_set(leases),
                // Senders whose refused ARP was logged lately: at most a few a second each
                // reach the daemon, and at most 64 a second in all.
                Set {
                    name: "arp_logged".into(),
                    key: "ether_addr",
                    flags: "dynamic,timeout",
                    settings: strs(&["size 1024", "timeout 1m"]),
                    elements: Vec::new(),
                },
            ],
            chains: vec![
                Chain {
                    name: "input",
                    base: base("filter", Hook::ArpInput, PRIO_OURS),
                    rules: vec![format!("iifname {prov} jump arp_from_prov")],
                },
                Chain {
                    name: "arp_from_prov",
                    base: None,
                    rules: vec![
                        // An address probe (RFC 5227) claims nothing.
                        r("arp saddr ip 0.0.0.0 accept"),
                        // The frame's source and the ARP sender are both the MAC that the
                        // lease of the sender address binds (one lease per address: the
                        // same MAC).
                        r(
                            "ether saddr . arp saddr ip @leases arp saddr ether . arp saddr ip @leases accept",
                        ),
                        format!(
                            "update @arp_logged {{ ether saddr limit rate 2/second burst 4 packets }} limit rate 64/second log prefix \"{}\" group {}",
                            nflog::PREFIX_ARP,
                            nflog::GROUP
                        ),
                        r("counter drop comment \"ARP sender without a lease\""),
                    ],
                },
            ],
        };
        let counted: Vec<_> = leases
            .iter()
            .filter(|l| !l.remaining.is_zero())
            .map(|l| (l.mac, l.ip))
            .collect();
        let netdev = device_table(cfg, &counted, up, down, profile_rate_sets);
        Ruleset {
            inet: Table {
                family: Family::Inet,
                sets,
                chains,
            },
            arp,
            netdev,
            counted,
            quotas: QuotaPlan::of(cfg),
            metered: state
                .clients
                .iter()
                .filter(|(_, left)| !left.is_zero())
                .map(|(c, _)| c.mac)
                .collect(),
        }
    }

    /// The same tables with the counts in `carried` (keyed by binding: up, down) written
    /// into the counting sets' elements, so that a rebuilt table goes on counting from
    /// where the old one was.
    pub fn with_counters(
        mut self,
        carried: impl Fn(crate::core::MacAddr, std::net::Ipv4Addr) -> Option<(Counter, Counter)>,
    ) -> Ruleset {
        let new = count_sets(&self.counted, carried);
        for set in new {
            if let Some(old) = self.netdev.sets.iter_mut().find(|s| s.name == set.name) {
                *old = set;
            }
        }
        self
    }

    pub fn tables(&self) -> [&Table; 3] {
        [&self.inet, &self.arp, &self.netdev]
    }

    /// The nft script that replaces the tables atomically: create-if-missing, delete,
    /// define, all in one transaction.
    pub fn script(&self) -> String {
        let mut s = String::with_capacity(4096);
        for t in self.tables() {
            let _ = writeln!(s, "table {} {TABLE} {{}}", t.family.name());
        }
        for t in self.tables() {
            let _ = writeln!(s, "delete table {} {TABLE}", t.family.name());
        }
        for t in self.tables() {
            t.define(&mut s);
        }
        s
    }
}

impl Table {
    fn define(&self, s: &mut String) {
        let _ = writeln!(s, "table {} {TABLE} {{", self.family.name());
        for set in &self.sets {
            let _ = writeln!(s, "\tset {} {{", set.name);
            let _ = writeln!(s, "\t\ttype {}", set.key);
            if !set.flags.is_empty() {
                let _ = writeln!(s, "\t\tflags {}", set.flags);
            }
            for line in &set.settings {
                let _ = writeln!(s, "\t\t{line}");
            }
            if !set.elements.is_empty() {
                let _ = writeln!(s, "\t\telements = {{ {} }}", set.elements.join(",\n\t\t\t"));
            }
            let _ = writeln!(s, "\t}}");
        }
        for chain in &self.chains {
            let _ = writeln!(s, "\tchain {} {{", chain.name);
            if let Some(b) = &chain.base {
                let device = b
                    .device
                    .as_ref()
                    .map(|d| format!(" device \"{d}\""))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "\t\ttype {} hook {}{device} priority {}; policy accept;",
                    b.kind,
                    b.hook.name(),
                    b.priority
                );
            }
            for rule in &chain.rules {
                let _ = writeln!(s, "\t\t{rule}");
            }
            let _ = writeln!(s, "\t}}");
        }
        let _ = writeln!(s, "}}");
    }
}

/// ` counter packets N bytes M`: a counting element's start, if it has counted anything.
fn nft_counter(c: Option<Counter>) -> String {
    match c {
        Some(c) if c != Counter::default() => {
            format!(" counter packets {} bytes {}", c.packets, c.bytes)
        }
        _ => String::new(),
    }
}

/// `count_up` (MAC . IP) and `count_down` (IP), one element per binding, each starting
/// from what `carried` says it had counted. No timeouts: an element's count would not
/// survive the delete-and-add that refreshes a timeout; the daemon removes it with the
/// binding.
fn count_sets(
    counted: &[(crate::core::MacAddr, std::net::Ipv4Addr)],
    carried: impl Fn(crate::core::MacAddr, std::net::Ipv4Addr) -> Option<(Counter, Counter)>,
) -> [Set; 2] {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for &(mac, ip) in counted {
        let c = carried(mac, ip);
        up.push(format!("{mac} . {ip}{}", nft_counter(c.map(|c| c.0))));
        down.push(format!("{ip}{}", nft_counter(c.map(|c| c.1))));
    }
    [
        Set {
            name: COUNT_UP.into(),
            key: "ether_addr . ipv4_addr",
            flags: "",
            settings: strs(&["counter"]),
            elements: up,
        },
        Set {
            name: COUNT_DOWN.into(),
            key: "ipv4_addr",
            flags: "",
            settings: strs(&["counter"]),
            elements: down,
        },
    ]
}

/// The MAC/IP pairs DHCP bound, each timing out with its lease: one set in each table.
fn leases_set(leases: &[crate::core::leases::Binding]) -> Set {
    Set {
        name: "leases".into(),
        key: "ether_addr . ipv4_addr",
        flags: "timeout",
        settings: Vec::new(),
        elements: leases
            .iter()
            .filter(|l| !l.remaining.is_zero())
            .map(|l| format!("{} . {} timeout {}ms", l.mac, l.ip, l.remaining.as_millis()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    pub(crate) const CONFIG: &str = "
config network
\toption interface 'prov0'
\toption wan 'wan0'
\tlist protect '192.168.1.0/24'
config allow 'acme'
\tlist address '11.1.0.10'
\tlist address '11.2.0.0/16'
\tlist port '443'
\tlist port '8000-8100'
config allow 'dup'
\tlist address '11.1.0.10'
config allow 'ntp'
\tlist address '11.1.0.10'
\toption proto 'udp'
\tlist port '123'
";

    fn ruleset() -> Ruleset {
        let cfg = Config::parse("t", CONFIG, false).unwrap();
        let mac: crate::core::MacAddr = "02:00:00:00:00:01".parse().unwrap();
        Ruleset::build(
            &cfg,
            &Snapshot {
                clients: vec![(
                    crate::core::ClientRecord {
                        mac,
                        since: crate::core::time::Instant::from_millis(123_456),
                    },
                    Duration::from_secs(600),
                )],
                bans: vec![(
                    "02:00:00:00:00:09".parse().unwrap(),
                    Duration::from_secs(30),
                )],
                leases: vec![crate::core::leases::Binding {
                    mac,
                    ip: "192.168.250.2".parse().unwrap(),
                    remaining: Duration::from_millis(290_500),
                }],
                learned: vec![(
                    crate::core::allow::LearnKey {
                        mac,
                        ip: "11.1.0.10".parse().unwrap(),
                        proto: crate::config::Proto::Tcp,
                        port: 443,
                    },
                    Duration::from_secs(60),
                    "setup.acme.example".into(),
                )],
            },
        )
    }

    /// With profiles, the static set is keyed by the client's MAC first: each profile's
    /// prefixes as intervals (the longer prefix cut out of the shorter), the default
    /// entries on everything else, randomised MACs included; and the rule matches it.
    #[test]
    fn with_profiles_static_elements_are_per_mac_interval() {
        let cfg = Config::parse(
            "t",
            "config network\n option interface prov0\n option wan wan0\nconfig profile 'acme'\n list oui '00:11:22'\nconfig profile 'pro'\n list oui '00:11:22:8'\nconfig allow 'a'\n list address 11.1.0.10\n option profile 'acme'\nconfig allow 'p'\n list address 11.1.0.20\n option profile 'pro'\nconfig allow 'open'\n list address 11.1.0.30\n",
            false,
        )
        .unwrap();
        let r = Ruleset::build(&cfg, &Snapshot::default());
        let set = r.inet.sets.iter().find(|s| s.name == "allow4_net").unwrap();
        assert_eq!(
            set.key,
            "ether_addr . ipv4_addr . inet_proto . inet_service"
        );
        assert_eq!(
            set.elements,
            [
                "00:00:00:00:00:00-00:11:21:ff:ff:ff . 11.1.0.30 . tcp . 443",
                "00:11:22:00:00:00-00:11:22:7f:ff:ff . 11.1.0.10 . tcp . 443",
                "00:11:22:80:00:00-00:11:22:8f:ff:ff . 11.1.0.20 . tcp . 443",
                "00:11:22:90:00:00-00:11:22:ff:ff:ff . 11.1.0.10 . tcp . 443",
                "00:11:23:00:00:00-ff:ff:ff:ff:ff:ff . 11.1.0.30 . tcp . 443",
            ]
        );
        assert!(rules(&r.inet, "forward_from_prov").iter().any(|l| {
            l.starts_with("ether saddr . ip daddr . meta l4proto . th dport @allow4_net")
        }));
    }

    /// A profile's rates: its upload rule by its MACs, its download by the addresses its
    /// upload was seen from, and the network's per-client rules for everyone else.
    #[test]
    fn a_profiles_rates_replace_the_networks_for_its_macs() {
        let cfg = Config::parse(
            "t",
            "config network\n option interface prov0\n option wan wan0\nconfig limits\n option client_rate_up 1mbit\n option client_rate_down 1mbit\nconfig profile 'acme'\n list oui '00:11:22'\n option client_rate_up 4mbit\n option client_rate_down 8mbit\n",
            false,
        )
        .unwrap();
        let r = Ruleset::build(&cfg, &Snapshot::default());
        let up = rules(&r.netdev, "from_client");
        let down = rules(&r.netdev, "to_client");
        let macs = "{ 00:11:22:00:00:00-00:11:22:ff:ff:ff }";
        let pos = |v: &[String], needle: &str| {
            v.iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle} in {v:#?}"))
        };
        assert!(
            up[pos(&up, "@seen_p0")].starts_with(&format!("ether saddr {macs} update @seen_p0"))
        );
        assert!(up[pos(&up, "@rate_up_p0")].contains("500000 bytes/second"));
        assert!(
            up[pos(&up, "@rate_up ")]
                .starts_with(&format!("ether saddr != {macs} update @rate_up "))
        );
        assert!(down[pos(&down, "@rate_down_p0")].starts_with("ip daddr @seen_p0 update"));
        assert!(
            down[pos(&down, "@rate_down ")].starts_with("ip daddr != @seen_p0 update @rate_down ")
        );
        assert!(pos(&up, "@rate_up_p0") < pos(&up, LOWER_EFFORT));
        for set in [
            "seen_p0",
            "rate_up_p0",
            "rate_down_p0",
            "rate_up",
            "rate_down",
        ] {
            assert!(r.netdev.sets.iter().any(|s| s.name == set), "{set}");
        }
    }

    #[test]
    fn allow_list_elements_are_deduplicated_cidrs_and_ranges() {
        let r = ruleset();
        let allow = &r
            .inet
            .sets
            .iter()
            .find(|s| s.name == "allow4_net")
            .unwrap()
            .elements;
        assert_eq!(
            allow,
            &[
                "11.1.0.10 . tcp . 443",
                "11.1.0.10 . tcp . 8000-8100",
                "11.2.0.0/16 . tcp . 443",
                "11.2.0.0/16 . tcp . 8000-8100",
                "11.1.0.10 . udp . 123",
            ]
        );
    }

    #[test]
    #[cfg(feature = "socks")]
    fn the_socks_port_opens_only_when_enabled_and_only_from_the_provisioning_network() {
        let rules = |cfg: &str| {
            let cfg = Config::parse("t", cfg, false).unwrap();
            let r = Ruleset::build(&cfg, &Snapshot::default());
            let of = |name: &str| {
                r.inet
                    .chains
                    .iter()
                    .find(|c| c.name == name)
                    .unwrap()
                    .rules
                    .clone()
            };
            (of("input"), of("input_prov"))
        };
        let (input, prov) = rules(CONFIG);
        assert!(
            !input.iter().chain(&prov).any(|r| r.contains("1080")),
            "{input:?} {prov:?}"
        );
        let (input, prov) = rules(&format!(
            "{CONFIG}\nconfig socks\n\toption enabled 1\n\toption port 1081\n"
        ));
        assert_eq!(
            input[0],
            "iifname != \"prov0\" ip daddr 192.168.250.1 tcp dport 1081 counter drop comment \"SOCKS only from the provisioning network\""
        );
        assert!(
            prov.contains(&"ip daddr 192.168.250.1 tcp dport 1081 accept".to_owned()),
            "{prov:?}"
        );
    }

    #[test]
    fn leases_carry_over_with_remaining_time() {
        let r = ruleset();
        let leases = &r
            .inet
            .sets
            .iter()
            .find(|s| s.name == "leases")
            .unwrap()
            .elements;
        assert_eq!(
            leases,
            &["02:00:00:00:00:01 . 192.168.250.2 timeout 290500ms"]
        );
    }

    #[test]
    fn clients_and_bans_carry_over() {
        let r = ruleset();
        let set = |n| {
            r.inet
                .sets
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .elements
                .clone()
        };
        assert_eq!(
            set("clients"),
            ["02:00:00:00:00:01 timeout 600000ms comment \"since=123456\""]
        );
        assert_eq!(set("banned"), ["02:00:00:00:00:09 timeout 30000ms"]);
    }

    #[test]
    fn learned_elements_carry_over_with_their_name() {
        let r = ruleset();
        let learned = &r
            .inet
            .sets
            .iter()
            .find(|s| s.name == "learned4")
            .unwrap()
            .elements;
        assert_eq!(
            learned,
            &[
                "02:00:00:00:00:01 . 11.1.0.10 . tcp . 443 timeout 60000ms comment \"setup.acme.example\""
            ]
        );
        assert_eq!(nft_comment("a\"b"), "");
    }

    #[test]
    fn rates_police_each_client_before_the_network_and_everything_goes_lower_effort() {
        let chain = |rs: &Ruleset, name: &str| rules(&rs.netdev, name);
        let pos = |rules: &[String], what: &str| {
            rules
                .iter()
                .position(|r| r.contains(what))
                .unwrap_or_else(|| panic!("no rule with {what:?} in {rules:#?}"))
        };
        // Unlimited: no rate rule or set, and still the lower priority both ways, after the
        // router's own DHCP and DNS went their way.
        let plain = ruleset();
        assert!(
            !plain
                .tables()
                .iter()
                .flat_map(|t| &t.chains)
                .flat_map(|c| &c.rules)
                .any(|r| r.contains("limit rate")
                    && !r.contains("@connection_rate")
                    && !r.contains(nflog::PREFIX_FLOW)
                    && !r.contains(nflog::PREFIX_SPOOF)
                    && !r.contains(nflog::PREFIX_ARP))
        );
        assert!(
            !plain
                .tables()
                .iter()
                .flat_map(|t| &t.sets)
                .any(|s| s.name.starts_with("rate_"))
        );
        for (name, port) in [("from_client", "dport"), ("to_client", "sport")] {
            let rules = chain(&plain, name);
            assert_eq!(rules.last().unwrap(), LOWER_EFFORT);
            assert!(pos(&rules, &format!("udp {port} 67 return")) < rules.len() - 1);
            assert!(pos(&rules, &format!("th {port} 53 return")) < rules.len() - 1);
        }
        // The inet table no longer rewrites anything.
        assert!(
            !plain
                .inet
                .chains
                .iter()
                .flat_map(|c| &c.rules)
                .any(|r| r.contains("dscp"))
        );

        let limited = format!(
            "{CONFIG}config limits\n\toption client_rate_up '1mbit'\n\toption total_rate_up '4mbit'\n\toption client_rate_down '2mbit'\n"
        );
        let cfg = Config::parse("t", &limited, false).unwrap();
        let rs = Ruleset::build(&cfg, &Snapshot::default());
        let up = chain(&rs, "from_client");
        let client = pos(
            &up,
            "update @rate_up { ip saddr limit rate over 125000 bytes/second",
        );
        let total = pos(&up, "limit rate over 500000 bytes/second");
        // A client over its own rate spends none of the network's; DHCP and DNS are neither.
        assert!(pos(&up, "th dport 53 return") < client && client < total);
        assert!(total < pos(&up, LOWER_EFFORT));
        let down = chain(&rs, "to_client");
        let client = pos(
            &down,
            "update @rate_down { ip daddr limit rate over 250000 bytes/second",
        );
        assert!(pos(&down, "th sport 53 return") < client);
        assert!(
            !down.iter().any(|r| r.starts_with("limit rate")),
            "no total_rate_down"
        );
        let sets: Vec<_> = rs.netdev.sets.iter().map(|s| &*s.name).collect();
        assert!(sets.contains(&"rate_up") && sets.contains(&"rate_down"));
        assert!(
            rs.script()
                .contains("flags dynamic,timeout\n\t\tsize 4096\n\t\ttimeout 1m")
        );
    }

    #[test]
    fn each_binding_is_counted_both_ways_on_the_device_and_counts_carry_over() {
        let r = ruleset();
        let set = |r: &Ruleset, n| r.netdev.sets.iter().find(|s| s.name == n).unwrap().clone();
        let up = set(&r, COUNT_UP);
        assert_eq!(up.key, "ether_addr . ipv4_addr");
        assert_eq!(up.elements, ["02:00:00:00:00:01 . 192.168.250.2"]);
        assert_eq!(set(&r, COUNT_DOWN).elements, ["192.168.250.2"]);
        assert!(r.script().contains(
            "\tset count_down {\n\t\ttype ipv4_addr\n\t\tcounter\n\t\telements = { 192.168.250.2 }\n\t}"
        ));
        // Counted on the provisioning device's own hooks, before anything else there (a
        // flowtable cannot carry a packet past them), each way by a positive lookup (a
        // negated one counts nothing).
        for (name, hook, rule) in [
            (
                "ingress",
                Hook::Ingress,
                "ether saddr . ip saddr @count_up jump from_client",
            ),
            (
                "egress",
                Hook::Egress,
                "ip daddr @count_down jump to_client",
            ),
        ] {
            let c = r.netdev.chains.iter().find(|c| c.name == name).unwrap();
            let base = c.base.as_ref().unwrap();
            assert_eq!(
                (base.hook, base.priority, base.device.as_deref()),
                (hook, PRIO_DEVICE, Some("prov0"))
            );
            assert_eq!(c.rules, [rule]);
        }
        assert!(r.script().contains(
            "\tchain egress {\n\t\ttype filter hook egress device \"prov0\" priority -500; policy accept;"
        ));
        // Nothing counts in the inet table any more.
        assert!(!r.inet.sets.iter().any(|s| s.name.starts_with("count_")));

        let mac: crate::core::MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let c = |packets, bytes| Counter { packets, bytes };
        let carried = r.clone().with_counters(|m, ip| {
            (m == mac && ip == std::net::Ipv4Addr::new(192, 168, 250, 2))
                .then_some((c(3, 300), c(5, 1_000_000)))
        });
        assert_eq!(
            set(&carried, COUNT_UP).elements,
            ["02:00:00:00:00:01 . 192.168.250.2 counter packets 3 bytes 300"]
        );
        assert_eq!(
            set(&carried, COUNT_DOWN).elements,
            ["192.168.250.2 counter packets 5 bytes 1000000"]
        );
        // Nothing else changes; nothing carried, nothing written.
        assert_eq!(carried.netdev.chains, r.netdev.chains);
        assert_eq!(r.clone().with_counters(|_, _| None), r);
    }

    #[test]
    fn script_replaces_the_table_in_one_file() {
        let s = ruleset().script();
        let lines: Vec<_> = s.lines().take(7).collect();
        assert_eq!(
            lines,
            [
                "table inet provisioner {}",
                "table arp provisioner {}",
                "table netdev provisioner {}",
                "delete table inet provisioner",
                "delete table arp provisioner",
                "delete table netdev provisioner",
                "table inet provisioner {"
            ]
        );
        assert!(s.contains("\ntable arp provisioner {\n"));
        assert!(s.contains("\ntable netdev provisioner {\n"));
        // Only our tables are ever named.
        for line in s.lines().filter(|l| l.contains("table ")) {
            assert!(
                ["inet", "arp", "netdev"]
                    .iter()
                    .any(|f| line.contains(&format!("table {f} provisioner"))),
                "{line}"
            );
        }
        assert!(s.contains("iifname \"prov0\" jump guard"));
        assert!(s.contains("@allow4_net goto accept_new"));
        assert!(s.contains(
            "\n\t\tct mark set ct mark | 0x40000000 meta mark set meta mark | 0x40000000 accept"
        ));
        assert!(s.contains("type filter hook forward priority -10; policy accept;"));
        assert!(s.contains("oifname \"wan0\" ip saddr 192.168.250.0/24 masquerade"));
        assert!(s.contains("ip daddr 192.168.250.1 meta l4proto { tcp, udp } th dport 53 accept"));
    }

    fn rules(t: &Table, name: &str) -> Vec<String> {
        t.chains
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no chain {name}"))
            .rules
            .clone()
    }

    #[test]
    fn new_connections_through_the_allow_list_are_held_to_the_clients_rate() {
        let r = ruleset();
        let accept = rules(&r.inet, "accept_new");
        assert_eq!(
            accept[0],
            "ct state new update @connection_rate { ip saddr limit rate over 20/second burst 40 packets } goto refuse_connection_rate"
        );
        let refuse = rules(&r.inet, "refuse_connection_rate");
        assert!(refuse[0].contains("connection_rate"), "{refuse:?}");
        assert!(refuse[1].ends_with("drop comment \"over the client's new-connection rate\""));
        let set = r.inet.sets.iter().find(|s| s.name == "connection_rate");
        assert!(set.is_some_and(|s| s.flags == "dynamic,timeout"));
        // Off: accepted at once, and no set.
        let mut cfg = Config::parse("t", CONFIG, false).unwrap();
        cfg.limits.connection_rate = 0;
        let off = Ruleset::build(&cfg, &Snapshot::default());
        assert_eq!(rules(&off.inet, "accept_new").len(), 1);
        assert!(!off.inet.sets.iter().any(|s| s.name == "connection_rate"));
    }

    #[test]
    fn established_traffic_is_accepted_only_for_connections_we_marked() {
        let r = ruleset();
        for name in ["forward_from_prov", "forward_to_prov", "input_prov"] {
            let chain = rules(&r.inet, name);
            for rule in chain.iter().filter(|r| r.contains("ct state")) {
                // Every ct-state accept demands our connection mark, and related traffic
                // is only ICMP: a helper's expectation is judged like a new connection.
                assert!(
                    rule.contains("ct mark & 0x40000000 == 0x40000000"),
                    "{name}: {rule}"
                );
                if rule.contains("related") {
                    assert!(!rule.contains("established"), "{name}: {rule}");
                    assert!(rule.contains("meta l4proto icmp"), "{name}: {rule}");
                }
            }
            assert_eq!(chain.iter().filter(|r| r.contains("ct state")).count(), 2);
        }
        // Whatever the allow-list accepts marks its connection; the router's own new
        // connections onto the network are marked too.
        let from = rules(&r.inet, "forward_from_prov");
        let granted: Vec<_> = from
            .iter()
            .filter(|r| r.contains("@allow4_net") || r.contains("@learned4"))
            .collect();
        assert_eq!(granted.len(), 2);
        assert!(granted.iter().all(|r| r.ends_with("goto accept_new")));
        let accept = rules(&r.inet, "accept_new");
        assert!(
            accept
                .last()
                .unwrap()
                .contains("ct mark set ct mark | 0x40000000")
        );
        assert!(
            accept
                .iter()
                .all(|r| r.contains("accept") || r.contains("refuse"))
        );
        let out = rules(&r.inet, "output");
        assert!(out.contains(
            &"oifname \"prov0\" ct state new ct mark set ct mark | 0x40000000".to_owned()
        ));
    }

    #[test]
    fn arp_from_the_network_is_accepted_only_from_bound_senders() {
        let r = ruleset();
        assert_eq!(r.arp.family, Family::Arp);
        // The ARP table's bindings are the same elements as the inet table's.
        let leases = |t: &Table| t.sets.iter().find(|s| s.name == "leases").unwrap().clone();
        assert_eq!(leases(&r.arp), leases(&r.inet));
        assert_eq!(
            rules(&r.arp, "input"),
            ["iifname \"prov0\" jump arp_from_prov"]
        );
        let chain = rules(&r.arp, "arp_from_prov");
        assert_eq!(chain[0], "arp saddr ip 0.0.0.0 accept");
        assert!(chain[1].contains("ether saddr . arp saddr ip @leases"));
        assert!(chain[1].contains("arp saddr ether . arp saddr ip @leases accept"));
        // Then: logged (rate-limited per sender and in all) and dropped.
        assert!(
            chain[2].contains("limit rate 2/second") && chain[2].contains("limit rate 64/second")
        );
        assert!(chain[2].contains(&format!("group {}", nflog::GROUP)));
        assert!(chain[3].contains("drop"));
    }

    #[test]
    fn every_base_chain_accepts_by_default_and_only_provisioning_traffic_is_judged() {
        for c in ruleset().tables().iter().flat_map(|t| t.chains.clone()) {
            if let Some(base) = &c.base {
                // A netdev chain hooks the provisioning device alone.
                if base.device.is_some() {
                    assert_eq!(base.device.as_deref(), Some("prov0"));
                    continue;
                }
                // A base chain's rules all match on the provisioning interface (or the WAN
                // for masquerade), so the rest of the router's traffic is not ours to judge.
                for rule in &c.rules {
                    assert!(
                        rule.contains("\"prov0\"") || rule.contains("\"wan0\""),
                        "{rule}"
                    );
                }
            }
        }
    }
}
