//! The allow-list as the DNS path uses it, and the addresses learned from answers.
//!
//! * [`AllowList`]: which names may be resolved (exact names and `*.suffix` patterns) and on
//!   which protocol/ports their addresses may then be reached.
//! * [`RebindingGuard`]: the rebinding guard. An answer for an allowed name must never open a private,
//!   loopback, link-local, shared, multicast, reserved, documentation, broadcast or
//!   unspecified address, nor the router's own or a protected network's.
//! * [`Learned`]: what was learned, for which client and until when, so that a reload that
//!   removes a name can take its addresses out of the kernel at once.
//!
//! Learned addresses are per client (`MAC . address . protocol . port`): a device reaches
//! only what it resolved itself, which also keeps one maker's devices away from another's
//! cloud when allow-lists are bound to vendors.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::MacAddr;
use super::profile::{self, Profile};
use super::time::Instant;
use std::fmt;

/// A port or an inclusive range `8000-8100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// IANA protocol number, as the kernel stores `inet_proto`.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// An allow-listed name: exact (`setup.example.com`) or every name under a suffix
/// (`*.example.com`, which does not match `example.com` itself).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    Exact(String),
    Suffix(String),
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(n) => f.write_str(n),
            DomainPattern::Suffix(n) => write!(f, "*.{n}"),
        }
    }
}

/// One allow-list entry: destinations (static networks now, names resolved by the router's
/// DNS later) reachable with one protocol on some ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowEntry {
    pub name: String,
    pub domains: Vec<DomainPattern>,
    pub nets: Vec<Ipv4Net>,
    pub proto: Proto,
    pub ports: Vec<PortRange>,
    /// The vendor profile whose clients it is for (`option profile`); `None`: for clients
    /// of no profile (the default entries).
    pub profile: Option<String>,
}

/// Where an allowed name's addresses may be reached: (protocol, port) pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub ports: Vec<(Proto, u16)>,
}

#[derive(Clone, Debug, Default)]
pub struct AllowList {
    exact: HashMap<String, Vec<usize>>,
    /// `*.example.com` is stored under `example.com`.
    suffix: HashMap<String, Vec<usize>>,
    /// Per allow entry: its (protocol, port) pairs, ranges expanded.
    ports: Vec<Vec<(Proto, u16)>>,
    /// Per allow entry: the index of its profile in `profiles` (`None`: a default entry).
    owner: Vec<Option<usize>>,
    profiles: Vec<Profile>,
}

impl AllowList {
    /// Entries without vendor profiles (every client is of no profile).
    pub fn new(entries: &[AllowEntry]) -> Self {
        AllowList::with_profiles(entries, &[])
    }

    /// Entries bound to `profiles` by name (a name that is no profile's binds the entry to
    /// no client: the configuration refuses it before).
    pub fn with_profiles(entries: &[AllowEntry], profiles: &[Profile]) -> Self {
        let mut list = AllowList {
            profiles: profiles.to_vec(),
            ..AllowList::default()
        };
        for (i, e) in entries.iter().enumerate() {
            list.owner.push(e.profile.as_ref().map(|p| {
                profiles
                    .iter()
                    .position(|q| q.name == *p)
                    .unwrap_or(usize::MAX)
            }));
            list.ports.push(
                e.ports
                    .iter()
                    .flat_map(|r| (r.first..=r.last).map(move |p| (e.proto, p)))
                    .collect(),
            );
            for d in &e.domains {
                let (map, name) = match d {
                    DomainPattern::Exact(n) => (&mut list.exact, n),
                    DomainPattern::Suffix(n) => (&mut list.suffix, n),
                };
                map.entry(name.clone()).or_default().push(i);
            }
        }
        list
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffix.is_empty()
    }

    /// Entries matching `name` (lower case, no trailing dot): an exact entry, or a wildcard
    /// on any proper suffix. Allocation-free.
    fn entries<'a>(&'a self, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        let exact = self.exact.get(name).into_iter().flatten().copied();
        let suffixes = name
            .match_indices('.')
            .map(move |(i, _)| &name[i + 1..])
            .filter_map(|s| self.suffix.get(s))
            .flatten()
            .copied();
        exact.chain(suffixes)
    }

    /// The indices (in the entries given to [`AllowList::new`]) of the entries that allow
    /// `name`.
    pub fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.entries(name)
    }

    /// Whether a client of no profile may resolve `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.allows_profile(None, name)
    }

    /// Whether `mac` may resolve `name`: an entry of its profile allows it.
    pub fn allows_for(&self, mac: MacAddr, name: &str) -> bool {
        self.allows_profile(self.profile_of(mac), name)
    }

    /// `mac`'s profile (index), by the longest matching prefix.
    pub fn profile_of(&self, mac: MacAddr) -> Option<usize> {
        profile::of(&self.profiles, mac)
    }

    fn allows_profile(&self, profile: Option<usize>, name: &str) -> bool {
        self.entries(name).any(|i| self.owner[i] == profile)
    }

    /// [`AllowList::grant_for`] a client of no profile.
    pub fn grant(&self, name: &str) -> Grant {
        self.grant_profile(None, name)
    }

    /// The (protocol, port) pairs under which `name`'s addresses may be reached by `mac`
    /// (by the entries of its profile); empty if the name is not allowed to it.
    pub fn grant_for(&self, mac: MacAddr, name: &str) -> Grant {
        self.grant_profile(self.profile_of(mac), name)
    }

    fn grant_profile(&self, profile: Option<usize>, name: &str) -> Grant {
        let mut ports: Vec<(Proto, u16)> = Vec::new();
        for i in self.entries(name).filter(|&i| self.owner[i] == profile) {
            for p in &self.ports[i] {
                if !ports.contains(p) {
                    ports.push(*p);
                }
            }
        }
        Grant { ports }
    }
}

/// Why an address in an answer may not be learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsafe {
    Unspecified,
    ThisNetwork,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    Documentation,
    Benchmarking,
    Multicast,
    Reserved,
    Broadcast,
    Router,
    Protected,
    ProvisioningSubnet,
}

impl Unsafe {
    pub fn as_str(self) -> &'static str {
        match self {
            Unsafe::Unspecified => "unspecified",
            Unsafe::ThisNetwork => "this-network",
            Unsafe::Loopback => "loopback",
            Unsafe::Private => "private",
            Unsafe::SharedCgnat => "shared-cgnat",
            Unsafe::LinkLocal => "link-local",
            Unsafe::Documentation => "documentation",
            Unsafe::Benchmarking => "benchmarking",
            Unsafe::Multicast => "multicast",
            Unsafe::Reserved => "reserved",
            Unsafe::Broadcast => "broadcast",
            Unsafe::Router => "router",
            Unsafe::Protected => "protected",
            Unsafe::ProvisioningSubnet => "provisioning-subnet",
        }
    }
}

/// The rebinding guard: public unicast addresses only, and never the router's own or a
/// protected network's.
#[derive(Clone, Debug, Default)]
pub struct RebindingGuard {
    router: Vec<Ipv4Addr>,
    subnet: Option<Ipv4Net>,
    protect: Vec<Ipv4Net>,
}

const fn net(a: u8, b: u8, c: u8, d: u8, len: u8) -> (u32, u8) {
    (u32::from_be_bytes([a, b, c, d]), len)
}

const SPECIAL: &[((u32, u8), Unsafe)] = &[
    (net(0, 0, 0, 0, 8), Unsafe::ThisNetwork),
    (net(10, 0, 0, 0, 8), Unsafe::Private),
    (net(100, 64, 0, 0, 10), Unsafe::SharedCgnat),
    (net(127, 0, 0, 0, 8), Unsafe::Loopback),
    (net(169, 254, 0, 0, 16), Unsafe::LinkLocal),
    (net(172, 16, 0, 0, 12), Unsafe::Private),
    (net(192, 0, 0, 0, 24), Unsafe::Reserved),
    (net(192, 0, 2, 0, 24), Unsafe::Documentation),
    (net(192, 88, 99, 0, 24), Unsafe::Reserved),
    (net(192, 168, 0, 0, 16), Unsafe::Private),
    (net(198, 18, 0, 0, 15), Unsafe::Benchmarking),
    (net(198, 51, 100, 0, 24), Unsafe::Documentation),
    (net(203, 0, 113, 0, 24), Unsafe::Documentation),
    (net(224, 0, 0, 0, 4), Unsafe::Multicast),
    (net(240, 0, 0, 0, 4), Unsafe::Reserved),
];

impl RebindingGuard {
    /// `router`: the router's provisioning address; `router_addrs`: every other address it
    /// has.
    pub fn new(
        router: Ipv4Addr,
        subnet: Ipv4Net,
        protect: &[Ipv4Net],
        router_addrs: &[Ipv4Addr],
    ) -> Self {
        let mut all = router_addrs.to_vec();
        all.push(router);
        RebindingGuard {
            router: all,
            subnet: Some(subnet),
            protect: protect.to_vec(),
        }
    }

    /// Whether `ip` is one of the router's own addresses.
    pub fn is_router(&self, ip: Ipv4Addr) -> bool {
        self.router.contains(&ip)
    }

    pub fn check(&self, ip: Ipv4Addr) -> Result<(), Unsafe> {
        if ip.is_unspecified() {
            return Err(Unsafe::Unspecified);
        }
        if ip.is_broadcast() {
            return Err(Unsafe::Broadcast);
        }
        if ip.is_loopback() {
            return Err(Unsafe::Loopback);
        }
        if self.router.contains(&ip) {
            return Err(Unsafe::Router);
        }
        if self.subnet.is_some_and(|s| s.contains(&ip)) {
            return Err(Unsafe::ProvisioningSubnet);
        }
        if self.protect.iter().any(|p| p.contains(&ip)) {
            return Err(Unsafe::Protected);
        }
        let a = u32::from(ip);
        for &((base, len), why) in SPECIAL {
            let mask = u32::MAX << (32 - u32::from(len));
            if a & mask == base {
                return Err(why);
            }
        }
        Ok(())
    }
}

/// Lifetime of a learned address: the record's TTL clamped to [floor, cap], plus grace.
/// The client is told `min(ttl, cap)`, so its cached answer never outlives the element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    pub floor: Duration,
    pub cap: Duration,
    pub grace: Duration,
}

impl TtlPolicy {
    /// How long the kernel keeps the element.
    pub fn element_timeout(&self, ttl: u32) -> Duration {
        Duration::from_secs(u64::from(ttl)).clamp(self.floor, self.cap) + self.grace
    }

    /// How much of an element's life may be used up before an answer writes it again.
    pub fn refresh_slack(&self) -> Duration {
        self.grace / 2
    }

    /// The TTL the client is told.
    pub fn answer_ttl(&self, ttl: u32) -> u32 {
        ttl.min(u32::try_from(self.cap.as_secs()).unwrap_or(u32::MAX))
    }
}

/// One learned element: this client may reach this address on this protocol and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LearnKey {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub proto: Proto,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LearnChange {
    /// Add the element, or refresh its timeout; `name` is what it was learned for (the
    /// element's comment in `nft list`, and how a restarted daemon knows it again).
    Add {
        key: LearnKey,
        timeout: Duration,
        name: Arc<str>,
    },
    Remove {
        key: LearnKey,
    },
}

#[derive(Clone, Debug)]
struct LearnedEntry {
    expires: Instant,
    /// The name the address was learned for (the latest one if several), to decide on a
    /// reload whether it is still allowed.
    name: Arc<str>,
}

/// What was learned, for whom and until when.
#[derive(Clone, Debug, Default)]
pub struct Learned {
    /// Ordered: what is removed or carried over comes out the same way every time.
    map: BTreeMap<LearnKey, LearnedEntry>,
    /// No entry expires before this; lets `expire` skip the scan most of the time.
    next_expiry: Option<Instant>,
}

impl Learned {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records that `mac` may reach `ip` under `grant` for `timeout` (from
    /// [`TtlPolicy::element_timeout`]) and pushes the kernel changes.
    ///
    /// An element that still has `timeout - slack` to live is not written again: with
    /// `slack` at most half the grace it still outlives the answer the client is given
    /// (at most the clamped TTL), so repeated answers cost no kernel work.
    #[allow(clippy::too_many_arguments)]
    pub fn learn(
        &mut self,
        mac: MacAddr,
        name: &Arc<str>,
        ip: Ipv4Addr,
        grant: &Grant,
        timeout: Duration,
        slack: Duration,
        now: Instant,
        out: &mut Vec<LearnChange>,
    ) {
        let expires = now + timeout;
        for &(proto, port) in &grant.ports {
            let key = LearnKey {
                mac,
                ip,
                proto,
                port,
            };
            match self.map.get_mut(&key) {
                Some(e) if e.expires + slack >= expires => {
                    if *e.name != **name {
                        e.name = name.clone();
                    }
                }
                _ => {
                    self.map.insert(
                        key,
                        LearnedEntry {
                            expires,
                            name: name.clone(),
                        },
                    );
                    out.push(LearnChange::Add {
                        key,
                        timeout,
                        name: name.clone(),
                    });
                    self.next_expiry = Some(self.next_expiry.map_or(expires, |n| n.min(expires)));
                }
            }
        }
    }

    /// Forgets one element (the kernel does not have it: the next answer writes it again).
    /// The name `key` was learned for, if it is learned (expired or not: see
    /// [`Learned::expire`]).
    pub fn name_of(&self, key: &LearnKey) -> Option<&Arc<str>> {
        self.map.get(key).map(|e| &e.name)
    }

    /// Whether `mac` learned `ip` on any protocol and port.
    pub fn has_address(&self, mac: MacAddr, ip: Ipv4Addr) -> bool {
        let key = |proto, port| LearnKey {
            mac,
            ip,
            proto,
            port,
        };
        self.map
            .range(key(Proto::Tcp, 0)..=key(Proto::Udp, u16::MAX))
            .next()
            .is_some()
    }

    pub fn forget(&mut self, key: &LearnKey) {
        self.map.remove(key);
    }

    /// Forgets what the kernel has already timed out.
    pub fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|n| n > now) {
            return;
        }
        self.map.retain(|_, e| e.expires > now);
        self.next_expiry = self.map.values().map(|e| e.expires).min();
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// Everything learned for a client that is gone.
    pub fn forget_client(&mut self, mac: MacAddr, out: &mut Vec<LearnChange>) {
        self.map.retain(|key, _| {
            if key.mac == mac {
                out.push(LearnChange::Remove { key: *key });
                false
            } else {
                true
            }
        });
    }

    /// After an allow-list change: removes every element whose name no longer grants its
    /// protocol and port to its client (whose profile may have changed too).
    pub fn revoke(&mut self, allow: &AllowList, out: &mut Vec<LearnChange>) {
        let mut named = Vec::new();
        self.revoke_named(allow, &mut named);
        out.extend(
            named
                .into_iter()
                .map(|(key, _)| LearnChange::Remove { key }),
        );
    }

    /// As [`Learned::revoke`], saying for each element removed the name it was learned for.
    pub fn revoke_named(&mut self, allow: &AllowList, out: &mut Vec<(LearnKey, Arc<str>)>) {
        let mut grants: HashMap<(Arc<str>, Option<usize>), Grant> = HashMap::new();
        self.map.retain(|key, e| {
            let profile = allow.profile_of(key.mac);
            let grant = grants
                .entry((e.name.clone(), profile))
                .or_insert_with(|| allow.grant_profile(profile, &e.name));
            let keep = grant.ports.contains(&(key.proto, key.port));
            if !keep {
                out.push((*key, e.name.clone()));
            }
            keep
        });
    }

    /// Live elements with the time they have left and their name, to carry into a rebuilt
    /// table.
    pub fn elements(
        &self,
        now: Instant,
    ) -> impl Iterator<Item = (LearnKey, Duration, Arc<str>)> + '_ {
        self.map
            .iter()
            .filter(move |(_, e)| e.expires > now)
            .map(move |(k, e)| (*k, e.expires.saturating_since(now), e.name.clone()))
    }

    /// Re-creates an element read back from the kernel after a restart.
    pub fn restore(&mut self, key: LearnKey, name: Arc<str>, expires: Instant) {
        self.map.insert(key, LearnedEntry { expires, name });
        self.next_expiry = Some(self.next_expiry.map_or(expires, |n| n.min(expires)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use proptest::prelude::*;

    fn cfg(extra: &str) -> Config {
        Config::parse(
            "t",
            &format!(
                "config network\n option interface p\n option wan w\n list protect 192.168.1.0/24\n list protect 10.0.0.0/8\nconfig dns\n list upstream 1.1.1.1\n{extra}"
            ),
            false,
        )
        .unwrap()
    }

    const ALLOW: &str = "
config allow 'acme'
 list domain 'setup.acme.example'
 list domain '*.iot.acme.example'
 list port '443'
 list port '8883'
config allow 'ntp'
 list domain 'setup.acme.example'
 option proto 'udp'
 list port '123'
config allow 'range'
 list domain 'r.example'
 list port '8000-8002'
";

    #[test]
    fn exact_and_wildcard_names() {
        let c = cfg(ALLOW);
        let a = AllowList::new(&c.allow);
        assert!(a.allows("setup.acme.example"));
        assert!(a.allows("eu.iot.acme.example"));
        assert!(a.allows("a.b.iot.acme.example"));
        assert!(!a.allows("iot.acme.example"), "*.x does not match x itself");
        assert!(!a.allows("acme.example"));
        assert!(!a.allows("xsetup.acme.example"));
        assert!(!a.allows("setup.acme.example.evil"));
        assert!(!a.allows("eviliot.acme.example"));
        assert!(!a.allows(""));
        assert_eq!(
            a.grant("setup.acme.example").ports,
            [(Proto::Tcp, 443), (Proto::Tcp, 8883), (Proto::Udp, 123)]
        );
        assert_eq!(
            a.grant("x.iot.acme.example").ports,
            [(Proto::Tcp, 443), (Proto::Tcp, 8883)]
        );
        assert_eq!(
            a.grant("r.example").ports,
            [(Proto::Tcp, 8000), (Proto::Tcp, 8001), (Proto::Tcp, 8002)]
        );
        assert!(a.grant("nope.example").ports.is_empty());
    }

    #[test]
    fn guard_refuses_everything_but_public_unicast() {
        let c = cfg("");
        let g = RebindingGuard::new(
            c.network.router,
            c.network.subnet,
            &c.network.protect,
            &["11.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        );
        let cases = [
            ("0.0.0.0", Some(Unsafe::Unspecified)),
            ("0.1.2.3", Some(Unsafe::ThisNetwork)),
            ("127.0.0.1", Some(Unsafe::Loopback)),
            ("10.1.2.3", Some(Unsafe::Protected)),
            ("172.16.0.1", Some(Unsafe::Private)),
            ("192.168.1.10", Some(Unsafe::Protected)),
            ("192.168.7.7", Some(Unsafe::Private)),
            ("192.168.250.1", Some(Unsafe::Router)),
            ("192.168.250.20", Some(Unsafe::ProvisioningSubnet)),
            ("11.0.0.2", Some(Unsafe::Router)),
            ("100.64.1.1", Some(Unsafe::SharedCgnat)),
            ("169.254.1.1", Some(Unsafe::LinkLocal)),
            ("192.0.2.1", Some(Unsafe::Documentation)),
            ("198.51.100.1", Some(Unsafe::Documentation)),
            ("203.0.113.1", Some(Unsafe::Documentation)),
            ("198.18.0.1", Some(Unsafe::Benchmarking)),
            ("224.0.0.1", Some(Unsafe::Multicast)),
            ("239.255.255.250", Some(Unsafe::Multicast)),
            ("240.0.0.1", Some(Unsafe::Reserved)),
            ("255.255.255.255", Some(Unsafe::Broadcast)),
            ("11.1.0.10", None),
            ("52.94.236.248", None),
            ("8.8.8.8", None),
        ];
        for (ip, want) in cases {
            assert_eq!(g.check(ip.parse().unwrap()).err(), want, "{ip}");
        }
    }

    #[test]
    fn ttl_is_clamped_and_the_client_never_outlives_the_element() {
        let p = TtlPolicy {
            floor: Duration::from_secs(60),
            cap: Duration::from_secs(3600),
            grace: Duration::from_secs(120),
        };
        assert_eq!(p.element_timeout(5), Duration::from_secs(180));
        assert_eq!(p.element_timeout(600), Duration::from_secs(720));
        assert_eq!(p.element_timeout(86400), Duration::from_secs(3720));
        assert_eq!(p.answer_ttl(86400), 3600);
        assert_eq!(p.answer_ttl(5), 5);
    }

    proptest! {
        /// Whatever the record says, the element outlives the client's cached answer.
        #[test]
        fn element_outlives_answer(ttl in any::<u32>(), floor in 0u64..600, cap in 1u64..86400, grace in 0u64..600) {
            prop_assume!(floor <= cap);
            let p = TtlPolicy { floor: Duration::from_secs(floor), cap: Duration::from_secs(cap), grace: Duration::from_secs(grace) };
            prop_assert!(Duration::from_secs(u64::from(p.answer_ttl(ttl))) <= p.element_timeout(ttl));
        }

        /// However answers for one name repeat, every element written or kept outlives the
        /// answer the client was just given.
        #[test]
        fn kept_elements_outlive_answers(
            ttls in proptest::collection::vec((0u32..7200, 0u64..4000), 1..30),
            floor in 0u64..120, cap in 120u64..3600, grace in 0u64..300,
        ) {
            let p = TtlPolicy { floor: Duration::from_secs(floor), cap: Duration::from_secs(cap), grace: Duration::from_secs(grace) };
            let grant = Grant { ports: vec![(Proto::Tcp, 443)] };
            let name: Arc<str> = "a.example".into();
            let ip = Ipv4Addr::new(11, 1, 0, 10);
            let mut l = Learned::default();
            let mut now = Instant::from_millis(1);
            for (ttl, step) in ttls {
                now = now + Duration::from_secs(step);
                l.learn(mac(1), &name, ip, &grant, p.element_timeout(ttl), p.refresh_slack(), now, &mut vec![]);
                let (_, left, _) = l.elements(now).next().expect("element is live");
                prop_assert!(left >= Duration::from_secs(u64::from(p.answer_ttl(ttl))));
            }
        }

        /// A name matches only if it is listed or strictly under a listed wildcard.
        #[test]
        fn wildcard_matching(label in "[a-z0-9]{1,10}", other in "[a-z0-9]{1,10}") {
            let c = cfg("config allow 'x'\n list domain '*.dev.example'\n");
            let a = AllowList::new(&c.allow);
            let under = format!("{label}.dev.example");
            let deeper = format!("{other}.{label}.dev.example");
            let glued = format!("{label}dev.example");
            let beside = format!("{label}.dev.example.{other}");
            prop_assert!(a.allows(&under));
            prop_assert!(a.allows(&deeper));
            prop_assert!(!a.allows(&glued));
            prop_assert!(!a.allows(&beside));
        }
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn learn_refresh_expire_and_revoke() {
        let c = cfg(ALLOW);
        let a = AllowList::new(&c.allow);
        let name: Arc<str> = "setup.acme.example".into();
        let grant = a.grant(&name);
        let ip: Ipv4Addr = "11.1.0.10".parse().unwrap();
        let t0 = Instant::from_millis(1_000_000);
        let mut l = Learned::default();
        let mut out = vec![];
        let (timeout, slack) = (Duration::from_secs(100), Duration::from_secs(20));
        l.learn(mac(1), &name, ip, &grant, timeout, slack, t0, &mut out);
        assert_eq!(out.len(), 3, "one element per (protocol, port)");
        // Again within the slack: still fresh, nothing to do.
        out.clear();
        l.learn(
            mac(1),
            &name,
            ip,
            &grant,
            timeout,
            slack,
            t0 + Duration::from_secs(20),
            &mut out,
        );
        assert!(out.is_empty());
        // Past it: written again.
        l.learn(
            mac(1),
            &name,
            ip,
            &grant,
            timeout,
            slack,
            t0 + Duration::from_secs(21),
            &mut out,
        );
        assert_eq!(out.len(), 3);
        // Another client learns its own elements.
        out.clear();
        l.learn(
            mac(2),
            &name,
            ip,
            &grant,
            timeout,
            slack,
            t0 + Duration::from_secs(21),
            &mut out,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(l.len(), 6);

        // The ntp entry goes away: only the udp/123 elements are revoked.
        let c2 = cfg(&ALLOW.replace("config allow 'ntp'\n list domain 'setup.acme.example'\n option proto 'udp'\n list port '123'\n", ""));
        out.clear();
        l.revoke(&AllowList::new(&c2.allow), &mut out);
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|c| matches!(c, LearnChange::Remove { key } if key.proto == Proto::Udp))
        );
        assert_eq!(l.len(), 4);

        out.clear();
        l.forget_client(mac(2), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(l.len(), 2);

        l.expire(t0 + Duration::from_secs(120));
        assert_eq!(l.len(), 2);
        l.expire(t0 + Duration::from_secs(121));
        assert!(l.is_empty());
        assert_eq!(l.next_deadline(), None);
    }
}
