//! What a change of the allow-list closes. Established traffic is accepted by its conntrack
//! mark, not by the allow sets, so taking a destination out of the sets stops only new
//! connections; the ones already open must be ended too. This decides which: a client's
//! flow ends if the old allow-list granted it and the new one does not. The edge dumps the
//! conntrack table once and asks [`Closed::ends`] of every entry.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::allow::{AllowEntry, PortRange, Proto};

/// A conntrack entry's original direction, as far as the decision needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IANA protocol number.
    pub proto: u8,
    /// 0 for protocols without ports.
    pub dport: u16,
}

/// How an allow entry differs between two configurations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Present in both, with other destinations, protocol or ports.
    pub changed: Vec<String>,
}

impl AllowDiff {
    pub fn between(old: &[AllowEntry], new: &[AllowEntry]) -> AllowDiff {
        let mut d = AllowDiff::default();
        for o in old {
            match new.iter().find(|n| n.name == o.name) {
                None => d.removed.push(o.name.clone()),
                Some(n) if n != o => d.changed.push(o.name.clone()),
                Some(_) => {}
            }
        }
        for n in new {
            if !old.iter().any(|o| o.name == n.name) {
                d.added.push(n.name.clone());
            }
        }
        d
    }

    /// With `all` (the profiles' prefixes changed, so an entry's clients may have too),
    /// every entry of `old` still present counts as changed.
    pub fn with_all_changed(mut self, all: bool, old: &[AllowEntry]) -> AllowDiff {
        if all {
            for o in old {
                if !self.removed.contains(&o.name) && !self.changed.contains(&o.name) {
                    self.changed.push(o.name.clone());
                }
            }
        }
        self
    }

    /// The entries whose old grants may have closed: removed, then changed.
    pub fn closing(&self) -> impl Iterator<Item = &String> {
        self.removed.iter().chain(&self.changed)
    }
}

/// A learned element in terms of flows: this client address may reach `addr` on this
/// protocol and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LearnedFlow {
    pub client: Ipv4Addr,
    pub addr: Ipv4Addr,
    pub proto: Proto,
    pub port: u16,
}

/// The destinations an allow-list change took away, and what still grants them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    /// Only clients' flows are judged: their source is in the provisioning subnet.
    pub clients: Ipv4Net,
    /// The removed and changed entries (by name); [`Closed::ends`] answers an index here.
    pub names: Vec<String>,
    /// Which of `names` were removed (the rest changed).
    pub removed: usize,
    /// Static destinations the old entries granted, with the index of their entry and the
    /// profile it was for.
    statics: Vec<(Ipv4Net, Proto, PortRange, usize, Option<String>)>,
    /// Learned elements that were revoked, with the index of the entry they were for.
    revoked: Vec<(LearnedFlow, usize)>,
    /// What the new allow-list grants statically, and to which profile's clients.
    kept: Vec<(Ipv4Net, Proto, PortRange, Option<String>)>,
    /// Each client's profile (by its address) before and after the change; a client not
    /// here is of none in either.
    who: HashMap<Ipv4Addr, (Option<String>, Option<String>)>,
    /// Learned elements still granted whose address is in a closed static network: a
    /// client that resolved its way there keeps its connection.
    kept_learned: BTreeSet<LearnedFlow>,
}

impl Closed {
    /// `revoked`: elements taken out because their name is no longer granted on their
    /// port, with the old entry they were for (by name); `learned`: elements still held.
    pub fn new(
        clients: Ipv4Net,
        diff: &AllowDiff,
        old: &[AllowEntry],
        new: &[AllowEntry],
        revoked: &[(LearnedFlow, Option<String>)],
        learned: impl IntoIterator<Item = LearnedFlow>,
    ) -> Closed {
        let names: Vec<String> = diff.closing().cloned().collect();
        let index = |name: &str| names.iter().position(|n| n == name);
        let mut statics = Vec::new();
        for e in old {
            let Some(i) = index(&e.name) else { continue };
            for net in &e.nets {
                for ports in &e.ports {
                    statics.push((*net, e.proto, *ports, i, e.profile.clone()));
                }
            }
        }
        let kept = new
            .iter()
            .flat_map(|e| {
                e.nets.iter().flat_map(move |n| {
                    e.ports
                        .iter()
                        .map(move |p| (*n, e.proto, *p, e.profile.clone()))
                })
            })
            .collect();
        let revoked = revoked
            .iter()
            // An element of an entry that stayed unchanged (the name moved to another
            // entry's pattern, say) is put under the first closing entry.
            .filter_map(|(f, name)| {
                let i = name.as_deref().and_then(index);
                i.or((!names.is_empty()).then_some(0)).map(|i| (*f, i))
            })
            .collect();
        let kept_learned = learned
            .into_iter()
            .filter(|f| statics.iter().any(|(n, ..)| n.contains(&f.addr)))
            .collect();
        Closed {
            clients,
            removed: diff.removed.len(),
            names,
            statics,
            revoked,
            kept,
            kept_learned,
            who: HashMap::new(),
        }
    }

    /// Each client's profile (by its address), before and after the change: a static
    /// destination closes for the clients its old entry was for, and stays open for those
    /// a new entry is for.
    pub fn with_profiles(
        mut self,
        who: HashMap<Ipv4Addr, (Option<String>, Option<String>)>,
    ) -> Closed {
        self.who = who;
        self
    }

    /// Nothing was removed or changed: no flow can have lost its grant.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether this flow must end, and for which of [`Closed::names`]: a client's flow the
    /// old allow-list granted and the new one does not.
    pub fn ends(&self, f: &Flow) -> Option<usize> {
        if !self.clients.contains(&f.src) {
            return None;
        }
        let proto = match f.proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            _ => return None,
        };
        let covers = |net: &Ipv4Net, p: Proto, r: &PortRange| {
            p == proto && net.contains(&f.dst) && (r.first..=r.last).contains(&f.dport)
        };
        let as_learned = LearnedFlow {
            client: f.src,
            addr: f.dst,
            proto,
            port: f.dport,
        };
        let (was, is) = self.who.get(&f.src).cloned().unwrap_or_default();
        let by = self
            .statics
            .iter()
            .find(|(n, p, r, _, of)| *of == was && covers(n, *p, r))
            .map(|s| s.3)
            .or_else(|| {
                self.revoked
                    .iter()
                    .find(|(l, _)| *l == as_learned)
                    .map(|r| r.1)
            })?;
        let still = self
            .kept
            .iter()
            .any(|(n, p, r, of)| *of == is && covers(n, *p, r))
            || self.kept_learned.contains(&as_learned);
        (!still).then_some(by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, nets: &[&str], proto: Proto, ports: &[(u16, u16)]) -> AllowEntry {
        AllowEntry {
            name: name.into(),
            domains: vec![],
            nets: nets
                .iter()
                .map(|n| match n.contains('/') {
                    true => n.parse().unwrap(),
                    false => format!("{n}/32").parse().unwrap(),
                })
                .collect(),
            proto,
            ports: ports
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
            profile: None,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn flow(src: &str, dst: &str, proto: u8, dport: u16) -> Flow {
        Flow {
            src: ip(src),
            dst: ip(dst),
            proto,
            dport,
        }
    }

    const CLIENTS: &str = "192.168.250.0/24";

    #[test]
    fn diff_names_added_removed_and_changed() {
        let a = entry("a", &["11.1.0.10"], Proto::Tcp, &[(443, 443)]);
        let b = entry("b", &["11.1.0.20"], Proto::Tcp, &[(443, 443)]);
        let b2 = entry("b", &["11.1.0.20"], Proto::Tcp, &[(8443, 8443)]);
        let c = entry("c", &["11.1.0.30"], Proto::Udp, &[(123, 123)]);
        let d = AllowDiff::between(&[a.clone(), b], &[b2, c]);
        assert_eq!(d.added, ["c"]);
        assert_eq!(d.removed, ["a"]);
        assert_eq!(d.changed, ["b"]);
        assert_eq!(
            AllowDiff::between(std::slice::from_ref(&a), std::slice::from_ref(&a)),
            AllowDiff::default()
        );
    }

    #[test]
    fn a_removed_entry_ends_its_clients_flows_and_nothing_else() {
        let keep = entry("keep", &["11.1.0.10"], Proto::Tcp, &[(443, 443)]);
        let gone = entry(
            "gone",
            &["11.1.0.20", "11.2.0.0/16"],
            Proto::Tcp,
            &[(443, 443), (9000, 9010)],
        );
        let old = [keep.clone(), gone];
        let new = [keep];
        let diff = AllowDiff::between(&old, &new);
        let c = Closed::new(CLIENTS.parse().unwrap(), &diff, &old, &new, &[], []);
        assert!(!c.is_empty());
        assert_eq!(c.names, ["gone"]);
        assert_eq!(c.removed, 1);
        let cl = "192.168.250.2";
        assert_eq!(c.ends(&flow(cl, "11.1.0.20", 6, 443)), Some(0));
        assert_eq!(c.ends(&flow(cl, "11.2.3.4", 6, 9005)), Some(0));
        // The twin that stayed, another port, another protocol, another client network,
        // an address outside.
        assert_eq!(c.ends(&flow(cl, "11.1.0.10", 6, 443)), None);
        assert_eq!(c.ends(&flow(cl, "11.1.0.20", 6, 8443)), None);
        assert_eq!(c.ends(&flow(cl, "11.1.0.20", 17, 443)), None);
        assert_eq!(c.ends(&flow(cl, "11.1.0.20", 1, 0)), None);
        assert_eq!(c.ends(&flow("11.0.0.2", "11.1.0.20", 6, 443)), None);
        assert_eq!(c.ends(&flow(cl, "11.3.0.1", 6, 443)), None);
    }

    #[test]
    fn what_another_entry_still_grants_stays_open() {
        let wide = entry("wide", &["11.1.0.0/24"], Proto::Tcp, &[(443, 443)]);
        let narrow = entry(
            "narrow",
            &["11.1.0.20"],
            Proto::Tcp,
            &[(443, 443), (80, 80)],
        );
        let old = [wide.clone(), narrow];
        let new = [wide];
        let diff = AllowDiff::between(&old, &new);
        let c = Closed::new(CLIENTS.parse().unwrap(), &diff, &old, &new, &[], []);
        let cl = "192.168.250.2";
        assert_eq!(
            c.ends(&flow(cl, "11.1.0.20", 6, 443)),
            None,
            "wide grants it"
        );
        assert_eq!(c.ends(&flow(cl, "11.1.0.20", 6, 80)), Some(0));
    }

    #[test]
    fn a_changed_entry_ends_only_what_it_no_longer_grants() {
        let old = [entry(
            "a",
            &["11.1.0.20"],
            Proto::Tcp,
            &[(443, 443), (80, 80)],
        )];
        let new = [entry("a", &["11.1.0.20"], Proto::Tcp, &[(443, 443)])];
        let diff = AllowDiff::between(&old, &new);
        let c = Closed::new(CLIENTS.parse().unwrap(), &diff, &old, &new, &[], []);
        assert_eq!(c.removed, 0);
        assert_eq!(c.names, ["a"]);
        let cl = "192.168.250.2";
        assert_eq!(c.ends(&flow(cl, "11.1.0.20", 6, 80)), Some(0));
        assert_eq!(c.ends(&flow(cl, "11.1.0.20", 6, 443)), None);
    }

    #[test]
    fn revoked_learned_addresses_end_and_kept_ones_do_not() {
        let mut named = entry("named", &[], Proto::Tcp, &[(443, 443)]);
        named.domains = vec![crate::core::allow::DomainPattern::Exact("a.example".into())];
        let mut other = entry("other", &["11.9.0.0/16"], Proto::Tcp, &[(443, 443)]);
        other.domains = vec![crate::core::allow::DomainPattern::Exact("b.example".into())];
        let old = [named, other];
        let new = [entry("other2", &[], Proto::Tcp, &[])];
        let diff = AllowDiff::between(&old, &new);
        let l = |client: &str, addr: &str| LearnedFlow {
            client: ip(client),
            addr: ip(addr),
            proto: Proto::Tcp,
            port: 443,
        };
        let revoked = [(l("192.168.250.2", "11.5.0.1"), Some("named".to_owned()))];
        // Client 3 learned 11.9.0.7 for a name still allowed (by a new entry, say).
        let held = [
            l("192.168.250.3", "11.9.0.7"),
            l("192.168.250.3", "11.6.0.1"),
        ];
        let c = Closed::new(CLIENTS.parse().unwrap(), &diff, &old, &new, &revoked, held);
        assert_eq!(c.names, ["named", "other"]);
        assert_eq!(c.ends(&flow("192.168.250.2", "11.5.0.1", 6, 443)), Some(0));
        // Learned by client 2 only: client 3's flow there was never granted by it.
        assert_eq!(c.ends(&flow("192.168.250.3", "11.5.0.1", 6, 443)), None);
        assert_eq!(c.ends(&flow("192.168.250.2", "11.9.0.7", 6, 443)), Some(1));
        assert_eq!(c.ends(&flow("192.168.250.3", "11.9.0.7", 6, 443)), None);
    }

    #[test]
    fn no_change_closes_nothing() {
        let a = [entry("a", &["11.1.0.20"], Proto::Tcp, &[(443, 443)])];
        let diff = AllowDiff::between(&a, &a);
        let c = Closed::new(CLIENTS.parse().unwrap(), &diff, &a, &a, &[], []);
        assert!(c.is_empty());
        assert_eq!(c.ends(&flow("192.168.250.2", "11.1.0.20", 6, 443)), None);
    }
}
