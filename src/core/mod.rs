//! The pure core: state machines over an injected clock. Nothing in here touches a socket;
//! the edges feed it events with `now` and carry out what it returns.

pub mod allow;
pub mod events;
pub mod leases;
pub mod ratelimit;
pub mod stations;
pub mod time;
pub mod window;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use crate::config::Config;
use allow::{AllowList, Guard, LearnChange, LearnKey, Learned, TtlPolicy};
use events::{DnsRefusal, Event};
use leases::{Binding, DhcpReply, DhcpRequest, LeaseChange, Leases};
use ratelimit::{DnsLimits, Repeats};
use time::Instant;

/// A change to one of the kernel's sets, applied in one batch before anything that depends
/// on it (a DHCP ACK, a DNS answer) leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetChange {
    Lease(LeaseChange),
    Learn(LearnChange),
}

/// What the core decided about a DHCP message: apply `changes`, then send `reply`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhcpDecision {
    pub changes: Vec<SetChange>,
    pub reply: Option<DhcpReply>,
}

/// What to do with a DNS question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsVerdict {
    /// Resolve it (A for an allowed name) and pass the answer to [`Core::dns_answer`].
    Resolve {
        mac: MacAddr,
    },
    /// Allowed name, but nothing to say: AAAA while IPv6 is off.
    NoData,
    Refused,
}

/// DNS query types the core tells apart.
pub const QTYPE_A: u16 = 1;
pub const QTYPE_AAAA: u16 = 28;

/// Every decision the provisioner takes, driven by inputs stamped with `now`. The daemon
/// applies what comes back and logs the events drained from [`Core::drain_events`].
#[derive(Debug, Clone)]
pub struct Core {
    router: Ipv4Addr,
    leases: Leases,
    allow: AllowList,
    guard: Guard,
    ttl: TtlPolicy,
    learned: Learned,
    limits: DnsLimits,
    refusals: Repeats,
    events: Vec<Event>,
}

impl Core {
    pub fn new(cfg: &Config) -> Self {
        Core {
            router: cfg.network.router,
            leases: Leases::new(
                cfg.dhcp.pool_start,
                cfg.limits.max_clients,
                cfg.dhcp.lease_time,
            ),
            allow: AllowList::new(&cfg.allow),
            guard: Guard::new(cfg, &[]),
            ttl: TtlPolicy::from_config(cfg),
            learned: Learned::default(),
            limits: DnsLimits::new(cfg.dns.client_qps, cfg.dns.total_qps),
            refusals: Repeats::default(),
            events: Vec::new(),
        }
    }

    /// The router's other addresses (WAN, LAN): never learned from an answer.
    pub fn set_router_addresses(&mut self, cfg: &Config, addrs: &[Ipv4Addr]) {
        self.guard = Guard::new(cfg, addrs);
    }

    /// Takes over what a previous run left in the kernel: bindings, so a restart keeps
    /// every client's address, and learned addresses with the names they were learned for.
    /// Bindings that no longer fit (outside the pool, duplicates) are revoked; since the
    /// daemon rebuilds the table from the core's state, they simply do not come back.
    /// Returns how many bindings were kept.
    pub fn restore(
        &mut self,
        bindings: &[Binding],
        learned: &[(LearnKey, std::time::Duration, Arc<str>)],
        now: Instant,
    ) -> usize {
        let mut kept = 0;
        for &Binding { mac, ip, remaining } in bindings {
            if self.leases.restore(mac, ip, now + remaining, now) {
                self.events.push(Event::LeaseRestored { mac, ip });
                kept += 1;
            } else {
                self.events.push(Event::LeaseRevoked { mac, ip });
            }
        }
        for (key, remaining, name) in learned {
            if self.leases.is_bound(key.mac, now) {
                self.learned.restore(*key, name.clone(), now + *remaining);
            }
        }
        // Whatever the allow-list no longer grants does not come back either.
        self.learned.revoke(&self.allow, &mut Vec::new());
        kept
    }

    pub fn handle_dhcp(&mut self, req: DhcpRequest, now: Instant) -> DhcpDecision {
        let d = self.leases.handle(req, self.router, now, &mut self.events);
        let mut changes: Vec<SetChange> = d.changes.iter().map(|c| SetChange::Lease(*c)).collect();
        self.forget_departed(&d.changes, now, &mut changes);
        DhcpDecision {
            changes,
            reply: d.reply,
        }
    }

    /// A client whose binding ended keeps nothing it learned.
    fn forget_departed(
        &mut self,
        lease_changes: &[LeaseChange],
        now: Instant,
        out: &mut Vec<SetChange>,
    ) {
        let mut learn = Vec::new();
        for c in lease_changes {
            if let LeaseChange::Unbind { mac, .. } = *c {
                if !self.leases.is_bound(mac, now) {
                    self.learned.forget_client(mac, &mut learn);
                }
            }
        }
        out.extend(learn.into_iter().map(SetChange::Learn));
    }

    /// Called at (or after) [`Core::next_deadline`].
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<SetChange> {
        let ended = self.leases.expire(now, &mut self.events);
        let mut changes: Vec<SetChange> = ended.iter().map(|c| SetChange::Lease(*c)).collect();
        self.forget_departed(&ended, now, &mut changes);
        // The kernel times learned elements out by itself; this only forgets them.
        self.learned.expire(now);
        self.limits.forget_idle(now);
        self.refusals.flush(now, &mut self.events);
        changes
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.leases.next_deadline(),
            self.learned.next_deadline(),
            self.refusals.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Adopts a new config. Bindings it ends (outside a smaller or moved pool) are revoked,
    /// and so is every learned address whose name the new allow-list no longer grants; both
    /// leave the kernel when the table is rebuilt from the core's state.
    pub fn reconfigure(&mut self, cfg: &Config, now: Instant) {
        self.router = cfg.network.router;
        let ended = self.leases.reconfigure(
            cfg.dhcp.pool_start,
            cfg.limits.max_clients,
            cfg.dhcp.lease_time,
            now,
        );
        for change in &ended {
            if let LeaseChange::Unbind { mac, ip } = *change {
                self.events.push(Event::LeaseRevoked { mac, ip });
            }
        }
        self.forget_departed(&ended, now, &mut Vec::new());
        self.allow = AllowList::new(&cfg.allow);
        self.guard = Guard::new(cfg, &[]);
        self.ttl = TtlPolicy::from_config(cfg);
        self.limits = DnsLimits::new(cfg.dns.client_qps, cfg.dns.total_qps);
        self.learned.revoke(&self.allow, &mut Vec::new());
    }

    /// Live bindings with the time they have left, to carry into a rebuilt table.
    pub fn bindings(&self, now: Instant) -> Vec<Binding> {
        self.leases
            .bound(now)
            .map(|l| Binding {
                mac: l.mac,
                ip: l.ip,
                remaining: l.expires.saturating_since(now),
            })
            .collect()
    }

    /// Live learned elements, with time left and name, to carry into a rebuilt table.
    pub fn learned(&self, now: Instant) -> Vec<(LearnKey, std::time::Duration, Arc<str>)> {
        self.learned.elements(now).collect()
    }

    /// A DNS question from `client` for `name` (lower case, no trailing dot).
    pub fn dns_question(
        &mut self,
        client: Ipv4Addr,
        name: &str,
        qtype: u16,
        now: Instant,
    ) -> DnsVerdict {
        // Only clients with a lease are served (the anti-spoof rule makes the source
        // address trustworthy); the router's other networks are not ours to answer.
        let Some(mac) = self.leases.mac_of(client, now) else {
            return DnsVerdict::Refused;
        };
        if !self.limits.allow(mac, now, &mut self.events) {
            return DnsVerdict::Refused;
        }
        let refuse = |core: &mut Core, reason| {
            if core
                .refusals
                .report(mac, (name, qtype), now, &mut core.events)
            {
                core.events.push(Event::DnsRefused {
                    mac,
                    name: name.into(),
                    qtype,
                    reason,
                });
            }
            DnsVerdict::Refused
        };
        match qtype {
            QTYPE_A | QTYPE_AAAA if !self.allow.allows(name) => {
                refuse(self, DnsRefusal::NotAllowed)
            }
            QTYPE_A => DnsVerdict::Resolve { mac },
            // IPv6 is off on the provisioning network: an allowed name has no AAAA here.
            QTYPE_AAAA => DnsVerdict::NoData,
            _ => refuse(self, DnsRefusal::QueryType),
        }
    }

    /// The A records of an answer for an allowed `name` asked by `mac`: `keep[i]` says
    /// whether `addrs[i]` may stay in the answer (the rebinding guard); every kept address
    /// is learned for the client, and the kernel changes are pushed onto `changes`.
    pub fn dns_answer(
        &mut self,
        mac: MacAddr,
        name: &Arc<str>,
        addrs: &[(Ipv4Addr, u32)],
        now: Instant,
        keep: &mut Vec<bool>,
        changes: &mut Vec<SetChange>,
    ) {
        keep.clear();
        let grant = self.allow.grant(name);
        let mut learn = Vec::new();
        for &(addr, ttl) in addrs {
            if let Err(why) = self.guard.check(addr) {
                keep.push(false);
                self.events.push(Event::DnsRebinding {
                    mac,
                    name: name.clone(),
                    addr,
                    why,
                });
                continue;
            }
            keep.push(true);
            if grant.ports.is_empty() {
                continue;
            }
            let before = learn.len();
            self.learned.learn(
                mac,
                name,
                addr,
                &grant,
                self.ttl.element_timeout(ttl),
                self.ttl.refresh_slack(),
                now,
                &mut learn,
            );
            if learn.len() > before {
                self.events.push(Event::AddressLearned {
                    mac,
                    name: name.clone(),
                    addr,
                    ttl: self.ttl.answer_ttl(ttl),
                });
            }
        }
        changes.extend(learn.into_iter().map(SetChange::Learn));
    }

    /// The TTL to tell the client for a record with `ttl`.
    pub fn answer_ttl(&self, ttl: u32) -> u32 {
        self.ttl.answer_ttl(ttl)
    }

    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }
}

/// An Ethernet (802) MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("'{s}' is not a MAC address"))?;
            if p.len() != 2 {
                return Err(format!("'{s}' is not a MAC address"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("'{s}' is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("'{s}' is not a MAC address"));
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_clients: u16) -> Config {
        Config::parse(
            "t",
            &format!("config network\n option interface p\n option wan w\nconfig limits\n option max_clients {max_clients}\n"),
            false,
        )
        .unwrap()
    }

    #[test]
    fn restore_keeps_what_fits_and_reconfigure_revokes_what_no_longer_does() {
        let now = Instant::from_millis(1_000_000);
        let mut core = Core::new(&cfg(2));
        let b = |n: u8, secs| Binding {
            mac: MacAddr([2, 0, 0, 0, 0, n]),
            ip: Ipv4Addr::new(192, 168, 250, n),
            remaining: std::time::Duration::from_secs(secs),
        };
        // The pool is .2 and .3: .9 is outside it.
        assert_eq!(core.restore(&[b(2, 100), b(3, 50), b(9, 100)], &[], now), 2);
        let kinds: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert_eq!(
            kinds,
            [
                "event=lease_restored mac=02:00:00:00:00:02 ip=192.168.250.2",
                "event=lease_restored mac=02:00:00:00:00:03 ip=192.168.250.3",
                "event=lease_revoked mac=02:00:00:00:00:09 ip=192.168.250.9",
            ]
        );
        assert_eq!(core.bindings(now), [b(2, 100), b(3, 50)]);
        assert_eq!(
            core.next_deadline(),
            Some(now + std::time::Duration::from_secs(50))
        );
        core.reconfigure(&cfg(1), now);
        let kinds: Vec<_> = core.drain_events().map(|e| e.kind()).collect();
        assert_eq!(kinds, ["lease_revoked"]);
        assert_eq!(core.bindings(now), [b(2, 100)]);
    }

    #[test]
    fn mac_round_trip() {
        let m: MacAddr = "02:00:00:00:00:0A".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:00:00:00:0a");
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:00:01".parse::<MacAddr>().is_err());
        assert!("0g:00:00:00:00:00".parse::<MacAddr>().is_err());
    }
}

#[cfg(test)]
mod dns_tests {
    use super::*;

    #[test]
    fn a_repeated_refusal_is_reported_once_a_minute_and_summarised() {
        let cfg = Config::parse(
            "t",
            "config network\n option interface p\n option wan w\nconfig dns\n list upstream 1.1.1.1\nconfig allow a\n list domain 'ok.example'\n",
            false,
        )
        .unwrap();
        let mut core = Core::new(&cfg);
        let now = Instant::from_millis(1_000_000);
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let ip = Ipv4Addr::new(192, 168, 250, 2);
        core.restore(
            &[Binding {
                mac,
                ip,
                remaining: std::time::Duration::from_secs(300),
            }],
            &[],
            now,
        );
        core.drain_events().for_each(drop);
        for _ in 0..5 {
            assert_eq!(
                core.dns_question(ip, "bad.example", QTYPE_A, now),
                DnsVerdict::Refused
            );
        }
        let events: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert_eq!(
            events,
            [
                "event=dns_refused mac=02:00:00:00:00:01 name=bad.example type=A reason=not_allowed threat=violation"
            ]
        );
        let later = now + ratelimit::REPEAT_PERIOD;
        core.dns_question(ip, "bad.example", QTYPE_A, later);
        let events: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert_eq!(
            events,
            [
                "event=dns_refused_more mac=02:00:00:00:00:01 count=4 threat=violation",
                "event=dns_refused mac=02:00:00:00:00:01 name=bad.example type=A reason=not_allowed threat=violation"
            ]
        );
    }
}
