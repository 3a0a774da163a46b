//! DHCP leases as a pure state machine: which address a client is offered and bound to, for
//! how long, and when the binding ends. A binding is also the client's anti-spoofing pass:
//! every bind, renewal and end comes out as a [`LeaseChange`] that the firewall applies to
//! the `leases` set *before* the ACK leaves, so a client can never use an address the kernel
//! does not yet tie to its MAC.
//!
//! The pool holds `max_clients` addresses and a few more for newcomers waiting for a spot
//! (R2: the pool is bounded by the client limit; only admitted clients are bound, so at most
//! `max_clients` addresses are ever in use). Follows RFC 2131 §4.3 for the server's side of DISCOVER/REQUEST/RELEASE/DECLINE.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::MacAddr;
use super::events::Event;
use super::time::Instant;

/// How long an offered address is held for the client that was offered it.
pub const OFFER_HOLD: Duration = Duration::from_secs(30);

/// What the client asked, reduced to what a decision needs (the DHCP edge parses the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpRequest {
    Discover {
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
    },
    /// `server_id` is option 54 (present when the client is selecting an offer), `requested`
    /// option 50 (selecting, init-reboot), `ciaddr` the client's address (renewing).
    Request {
        mac: MacAddr,
        server_id: Option<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
        ciaddr: Option<Ipv4Addr>,
    },
    Release {
        mac: MacAddr,
        ciaddr: Ipv4Addr,
    },
    /// The client found the address already in use (ARP) and gave it back.
    Decline {
        mac: MacAddr,
        requested: Ipv4Addr,
    },
    /// Asks for configuration only. Not served (a provisioning client gets everything with
    /// its lease), but its sender is checked like any other's.
    Inform {
        mac: MacAddr,
    },
}

impl DhcpRequest {
    pub fn mac(&self) -> MacAddr {
        match *self {
            DhcpRequest::Discover { mac, .. }
            | DhcpRequest::Request { mac, .. }
            | DhcpRequest::Release { mac, .. }
            | DhcpRequest::Decline { mac, .. }
            | DhcpRequest::Inform { mac } => mac,
        }
    }

    /// The message's name, for the log.
    pub fn name(&self) -> &'static str {
        match self {
            DhcpRequest::Discover { .. } => "discover",
            DhcpRequest::Request { .. } => "request",
            DhcpRequest::Release { .. } => "release",
            DhcpRequest::Decline { .. } => "decline",
            DhcpRequest::Inform { .. } => "inform",
        }
    }

    /// The address it is about, if any.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        match *self {
            DhcpRequest::Discover { requested, .. } => requested,
            DhcpRequest::Request {
                requested, ciaddr, ..
            } => requested.or(ciaddr),
            DhcpRequest::Release { ciaddr, .. } => Some(ciaddr),
            DhcpRequest::Decline { requested, .. } => Some(requested),
            DhcpRequest::Inform { .. } => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpReply {
    Offer { ip: Ipv4Addr, lease: Duration },
    Ack { ip: Ipv4Addr, lease: Duration },
    Nak,
}

/// A change to the kernel's MAC <-> IP binding set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    /// Bind (or re-bind, refreshing the timeout) `mac` to `ip` for `timeout`.
    Bind {
        mac: MacAddr,
        ip: Ipv4Addr,
        timeout: Duration,
    },
    Unbind {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Apply these first; send `reply` only once the kernel acknowledged them.
    pub changes: Vec<LeaseChange>,
    pub reply: Option<DhcpReply>,
}

/// A binding with the time it has left: what the kernel's `leases` set holds, and what a
/// restarted daemon reads back from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub remaining: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub expires: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Offered {
        mac: MacAddr,
        until: Instant,
    },
    Bound {
        mac: MacAddr,
        until: Instant,
    },
    /// Declined by a client: someone else uses it. Kept out of the pool for a lease time.
    Quarantined {
        until: Instant,
    },
}

impl Holder {
    fn until(self) -> Instant {
        match self {
            Holder::Offered { until, .. }
            | Holder::Bound { until, .. }
            | Holder::Quarantined { until } => until,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Leases {
    pool_start: u32,
    pool_size: u32,
    lease_time: Duration,
    /// Indexed by pool offset: small (max_clients entries), so a scan is cheap and ordered.
    slots: Vec<Option<Holder>>,
    /// The last address each recently seen client had, so a returning client gets it back.
    previous: HashMap<MacAddr, Ipv4Addr>,
    /// Addresses whose binding ended and whose connections are being ended: offered to
    /// nobody until that is done, so that no new holder finds (and could use) an old
    /// holder's connections, nor loses its own to the cleanup.
    ending: Vec<Ipv4Addr>,
}

impl Leases {
    pub fn new(pool_start: Ipv4Addr, pool_size: u16, lease_time: Duration) -> Self {
        Leases {
            pool_start: u32::from(pool_start),
            pool_size: u32::from(pool_size),
            lease_time,
            slots: vec![None; usize::from(pool_size)],
            previous: HashMap::new(),
            ending: Vec::new(),
        }
    }

    /// `ips` are held (offered to nobody) until [`Leases::flows_ended`] says their
    /// connections are gone.
    pub fn hold_while_ending(&mut self, ips: &[Ipv4Addr]) {
        for ip in ips {
            if !self.ending.contains(ip) {
                self.ending.push(*ip);
            }
        }
    }

    pub fn flows_ended(&mut self, ips: &[Ipv4Addr]) {
        self.ending.retain(|ip| !ips.contains(ip));
    }

    fn is_ending(&self, slot: usize) -> bool {
        !self.ending.is_empty() && self.ending.contains(&self.ip(slot))
    }

    fn slot(&self, ip: Ipv4Addr) -> Option<usize> {
        let off = u32::from(ip).checked_sub(self.pool_start)?;
        (off < self.pool_size).then_some(off as usize)
    }

    fn ip(&self, slot: usize) -> Ipv4Addr {
        Ipv4Addr::from(self.pool_start + slot as u32)
    }

    /// A slot's holder, treating anything past its deadline as free.
    fn holder(&self, slot: usize, now: Instant) -> Option<Holder> {
        self.slots[slot].filter(|h| h.until() > now)
    }

    fn bound_slot(&self, mac: MacAddr, now: Instant) -> Option<usize> {
        (0..self.slots.len()).find(
            |&i| matches!(self.holder(i, now), Some(Holder::Bound { mac: m, .. }) if m == mac),
        )
    }

    fn offered_slot(&self, mac: MacAddr, now: Instant) -> Option<usize> {
        (0..self.slots.len()).find(
            |&i| matches!(self.holder(i, now), Some(Holder::Offered { mac: m, .. }) if m == mac),
        )
    }

    /// Free for `mac`: nobody holds it, or `mac` itself does.
    fn free_for(&self, slot: usize, mac: MacAddr, now: Instant) -> bool {
        match self.holder(slot, now) {
            None => !self.is_ending(slot),
            Some(Holder::Offered { mac: m, .. } | Holder::Bound { mac: m, .. }) => m == mac,
            Some(Holder::Quarantined { .. }) => false,
        }
    }

    /// Every binding that is still live.
    pub fn bound(&self, now: Instant) -> impl Iterator<Item = Lease> + '_ {
        (0..self.slots.len()).filter_map(move |i| match self.holder(i, now) {
            Some(Holder::Bound { mac, until }) => Some(Lease {
                mac,
                ip: self.ip(i),
                expires: until,
            }),
            _ => None,
        })
    }

    /// The client bound to `ip`, if any: what the DNS path uses to know who is asking
    /// (the anti-spoof rule makes the source address trustworthy).
    pub fn mac_of(&self, ip: Ipv4Addr, now: Instant) -> Option<MacAddr> {
        match self.holder(self.slot(ip)?, now) {
            Some(Holder::Bound { mac, .. }) => Some(mac),
            _ => None,
        }
    }

    /// Ends whatever `mac` holds (a station that was disconnected): its binding, to be
    /// removed from the kernel, and any offer.
    pub fn revoke(&mut self, mac: MacAddr, now: Instant) -> Option<LeaseChange> {
        if let Some(i) = self.offered_slot(mac, now) {
            self.slots[i] = None;
        }
        let i = self.bound_slot(mac, now)?;
        self.slots[i] = None;
        Some(LeaseChange::Unbind {
            mac,
            ip: self.ip(i),
        })
    }

    /// Whether `ip` is on offer to `mac`.
    pub fn offered(&self, mac: MacAddr, ip: Ipv4Addr, now: Instant) -> bool {
        self.offered_slot(mac, now)
            .is_some_and(|i| self.ip(i) == ip)
    }

    /// The address `mac` had last (bound now or not).
    pub fn previous_ip(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.previous.get(&mac).copied()
    }

    /// `mac`'s binding: its address and when it ends.
    pub fn binding_of(&self, mac: MacAddr, now: Instant) -> Option<(Ipv4Addr, Instant)> {
        let i = self.bound_slot(mac, now)?;
        Some((self.ip(i), self.slots[i].map(Holder::until)?))
    }

    /// A binding the kernel did not take: back to what it was, `prior` the end of the
    /// binding it renewed; a new one goes back to being offered, so that the client's next
    /// REQUEST can have it.
    pub fn take_back(&mut self, mac: MacAddr, ip: Ipv4Addr, prior: Option<Instant>, now: Instant) {
        let Some(i) = self.slot(ip) else { return };
        if !matches!(self.holder(i, now), Some(Holder::Bound { mac: m, .. }) if m == mac) {
            return;
        }
        self.slots[i] = Some(match prior {
            Some(until) => Holder::Bound { mac, until },
            None => Holder::Offered {
                mac,
                until: now + OFFER_HOLD,
            },
        });
    }

    pub fn is_bound(&self, mac: MacAddr, now: Instant) -> bool {
        self.bound_slot(mac, now).is_some()
    }

    /// When the offer to `mac` lapses, if it has one.
    pub fn offer_until(&self, mac: MacAddr, now: Instant) -> Option<Instant> {
        self.slots[self.offered_slot(mac, now)?].map(Holder::until)
    }

    pub fn lease_time(&self) -> Duration {
        self.lease_time
    }

    pub fn handle(
        &mut self,
        req: DhcpRequest,
        our_id: Ipv4Addr,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Decision {
        match req {
            DhcpRequest::Discover { mac, requested } => self.discover(mac, requested, now, events),
            DhcpRequest::Request {
                mac,
                server_id,
                requested,
                ciaddr,
            } => {
                if server_id.is_some_and(|id| id != our_id) {
                    // The client took another server's offer: release ours.
                    if let Some(i) = self.offered_slot(mac, now) {
                        self.slots[i] = None;
                    }
                    return Decision::default();
                }
                let Some(ip) = requested.or(ciaddr) else {
                    return Decision::default();
                };
                self.request(mac, ip, server_id.is_some(), now, events)
            }
            DhcpRequest::Release { mac, ciaddr } => {
                let mut d = Decision::default();
                if let Some(i) = self.slot(ciaddr) {
                    if matches!(self.holder(i, now), Some(Holder::Bound { mac: m, .. }) if m == mac)
                    {
                        self.slots[i] = None;
                        d.changes.push(LeaseChange::Unbind { mac, ip: ciaddr });
                        events.push(Event::LeaseReleased { mac, ip: ciaddr });
                    }
                }
                d
            }
            DhcpRequest::Inform { .. } => Decision::default(),
            DhcpRequest::Decline { mac, requested } => {
                let mut d = Decision::default();
                if let Some(i) = self.slot(requested) {
                    if self.free_for(i, mac, now) {
                        if matches!(self.holder(i, now), Some(Holder::Bound { .. })) {
                            d.changes.push(LeaseChange::Unbind { mac, ip: requested });
                        }
                        self.slots[i] = Some(Holder::Quarantined {
                            until: now + self.lease_time,
                        });
                        events.push(Event::LeaseDeclined { mac, ip: requested });
                    }
                }
                d
            }
        }
    }

    fn discover(
        &mut self,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Decision {
        // Preference: what it holds, what it asks for, what it had, the lowest free address.
        let pick = self
            .bound_slot(mac, now)
            .or_else(|| self.offered_slot(mac, now))
            .or_else(|| {
                requested
                    .and_then(|ip| self.slot(ip))
                    .filter(|&i| self.free_for(i, mac, now))
            })
            .or_else(|| {
                self.previous
                    .get(&mac)
                    .and_then(|&ip| self.slot(ip))
                    .filter(|&i| self.free_for(i, mac, now))
            })
            .or_else(|| {
                (0..self.slots.len()).find(|&i| self.holder(i, now).is_none() && !self.is_ending(i))
            });
        let Some(i) = pick else {
            events.push(Event::PoolExhausted { mac });
            return Decision::default();
        };
        if !matches!(self.holder(i, now), Some(Holder::Bound { .. })) {
            self.slots[i] = Some(Holder::Offered {
                mac,
                until: now + OFFER_HOLD,
            });
        }
        Decision {
            changes: Vec::new(),
            reply: Some(DhcpReply::Offer {
                ip: self.ip(i),
                lease: self.lease_time,
            }),
        }
    }

    fn request(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        selecting: bool,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Decision {
        let nak = |events: &mut Vec<Event>| {
            events.push(Event::LeaseRefused { mac, ip });
            Decision {
                changes: Vec::new(),
                reply: Some(DhcpReply::Nak),
            }
        };
        let Some(i) = self.slot(ip) else {
            return nak(events);
        };
        // Selecting must match our offer (or binding); init-reboot and renewal may also
        // claim any free address, which is how clients keep their address across a restart
        // of this daemon that lost an offer.
        let ours = matches!(
            self.holder(i, now),
            Some(Holder::Offered { mac: m, .. } | Holder::Bound { mac: m, .. }) if m == mac
        );
        if !(ours || (!selecting && self.free_for(i, mac, now))) {
            return nak(events);
        }
        let mut d = Decision::default();
        // One binding per client: moving to another address ends the old one.
        if let Some(old) = self.bound_slot(mac, now).filter(|&old| old != i) {
            self.slots[old] = None;
            d.changes.push(LeaseChange::Unbind {
                mac,
                ip: self.ip(old),
            });
        }
        // Any other offer to this client lapses.
        if let Some(o) = self.offered_slot(mac, now).filter(|&o| o != i) {
            self.slots[o] = None;
        }
        let renewal = matches!(self.holder(i, now), Some(Holder::Bound { .. }));
        self.slots[i] = Some(Holder::Bound {
            mac,
            until: now + self.lease_time,
        });
        self.previous.insert(mac, ip);
        if self.previous.len() > 4 * self.slots.len() + 16 {
            // Forget clients that are no longer bound; the map stays bounded.
            let keep: Vec<_> = self.bound(now).map(|l| l.mac).collect();
            self.previous.retain(|m, _| keep.contains(m));
        }
        d.changes.push(LeaseChange::Bind {
            mac,
            ip,
            timeout: self.lease_time,
        });
        d.reply = Some(DhcpReply::Ack {
            ip,
            lease: self.lease_time,
        });
        events.push(if renewal {
            Event::LeaseRenewed { mac, ip }
        } else {
            Event::LeaseGranted { mac, ip }
        });
        d
    }

    /// Re-creates a binding read back from the kernel after a restart. Ignored when the
    /// address is outside the pool or taken.
    pub fn restore(&mut self, mac: MacAddr, ip: Ipv4Addr, expires: Instant, now: Instant) -> bool {
        match self.slot(ip) {
            Some(i)
                if expires > now
                    && self.holder(i, now).is_none()
                    && self.bound_slot(mac, now).is_none() =>
            {
                self.slots[i] = Some(Holder::Bound {
                    mac,
                    until: expires,
                });
                self.previous.insert(mac, ip);
                true
            }
            _ => false,
        }
    }

    /// Ends bindings whose time is up (the kernel drops its set element on the same clock;
    /// the unbind makes sure of it) and frees lapsed offers and quarantines.
    pub fn expire(&mut self, now: Instant, events: &mut Vec<Event>) -> Vec<LeaseChange> {
        let mut changes = Vec::new();
        for i in 0..self.slots.len() {
            match self.slots[i] {
                Some(h) if h.until() <= now => {
                    if let Holder::Bound { mac, .. } = h {
                        let ip = self.ip(i);
                        changes.push(LeaseChange::Unbind { mac, ip });
                        events.push(Event::LeaseExpired { mac, ip });
                    }
                    self.slots[i] = None;
                }
                _ => {}
            }
        }
        changes
    }

    /// When [`Leases::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|h| h.until()).min()
    }

    /// Adopts a new pool and lease time: bindings outside the new pool end now, the rest
    /// keep their deadlines.
    pub fn reconfigure(
        &mut self,
        pool_start: Ipv4Addr,
        pool_size: u16,
        lease_time: Duration,
        now: Instant,
    ) -> Vec<LeaseChange> {
        let kept: Vec<Lease> = self.bound(now).collect();
        *self = Leases {
            previous: std::mem::take(&mut self.previous),
            ending: std::mem::take(&mut self.ending),
            ..Leases::new(pool_start, pool_size, lease_time)
        };
        let mut changes = Vec::new();
        for l in kept {
            if !self.restore(l.mac, l.ip, l.expires, now) {
                changes.push(LeaseChange::Unbind {
                    mac: l.mac,
                    ip: l.ip,
                });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 1);
    const START: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 10);
    const LEASE: Duration = Duration::from_secs(300);

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 250, n)
    }
    fn t(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    fn discover(l: &mut Leases, m: MacAddr, now: Instant) -> Option<Ipv4Addr> {
        match l
            .handle(
                DhcpRequest::Discover {
                    mac: m,
                    requested: None,
                },
                ROUTER,
                now,
                &mut vec![],
            )
            .reply
        {
            Some(DhcpReply::Offer { ip, .. }) => Some(ip),
            _ => None,
        }
    }

    fn select(l: &mut Leases, m: MacAddr, ip: Ipv4Addr, now: Instant) -> Decision {
        l.handle(
            DhcpRequest::Request {
                mac: m,
                server_id: Some(ROUTER),
                requested: Some(ip),
                ciaddr: None,
            },
            ROUTER,
            now,
            &mut vec![],
        )
    }

    #[test]
    fn discover_request_binds_and_changes_the_set_first() {
        let mut l = Leases::new(START, 4, LEASE);
        let offered = discover(&mut l, mac(1), t(0)).unwrap();
        assert_eq!(offered, ip(10));
        let d = select(&mut l, mac(1), offered, t(1));
        assert_eq!(
            d.changes,
            [LeaseChange::Bind {
                mac: mac(1),
                ip: ip(10),
                timeout: LEASE
            }]
        );
        assert_eq!(
            d.reply,
            Some(DhcpReply::Ack {
                ip: ip(10),
                lease: LEASE
            })
        );
        // A second client gets the next address, not the bound one.
        assert_eq!(discover(&mut l, mac(2), t(2)), Some(ip(11)));
    }

    #[test]
    fn offer_is_held_then_lapses() {
        let mut l = Leases::new(START, 1, LEASE);
        assert_eq!(discover(&mut l, mac(1), t(0)), Some(ip(10)));
        let mut ev = vec![];
        assert_eq!(
            l.handle(
                DhcpRequest::Discover {
                    mac: mac(2),
                    requested: None
                },
                ROUTER,
                t(1),
                &mut ev
            )
            .reply,
            None
        );
        assert_eq!(ev, [Event::PoolExhausted { mac: mac(2) }]);
        assert_eq!(discover(&mut l, mac(2), t(0) + OFFER_HOLD), Some(ip(10)));
    }

    #[test]
    fn selecting_someone_elses_offer_is_naked() {
        let mut l = Leases::new(START, 2, LEASE);
        let a = discover(&mut l, mac(1), t(0)).unwrap();
        assert_eq!(select(&mut l, mac(2), a, t(1)).reply, Some(DhcpReply::Nak));
        // Outside the pool: NAK.
        assert_eq!(
            select(&mut l, mac(2), ip(200), t(1)).reply,
            Some(DhcpReply::Nak)
        );
    }

    #[test]
    fn request_for_another_server_drops_our_offer() {
        let mut l = Leases::new(START, 1, LEASE);
        discover(&mut l, mac(1), t(0)).unwrap();
        let d = l.handle(
            DhcpRequest::Request {
                mac: mac(1),
                server_id: Some(ip(254)),
                requested: Some(ip(10)),
                ciaddr: None,
            },
            ROUTER,
            t(1),
            &mut vec![],
        );
        assert_eq!(d, Decision::default());
        assert_eq!(discover(&mut l, mac(2), t(2)), Some(ip(10)));
    }

    #[test]
    fn renewal_extends_and_refreshes_the_set() {
        let mut l = Leases::new(START, 2, LEASE);
        let a = discover(&mut l, mac(1), t(0)).unwrap();
        select(&mut l, mac(1), a, t(0));
        let mut ev = vec![];
        let d = l.handle(
            DhcpRequest::Request {
                mac: mac(1),
                server_id: None,
                requested: None,
                ciaddr: Some(ip(10)),
            },
            ROUTER,
            t(200),
            &mut ev,
        );
        assert_eq!(
            d.changes,
            [LeaseChange::Bind {
                mac: mac(1),
                ip: ip(10),
                timeout: LEASE
            }]
        );
        assert_eq!(
            ev,
            [Event::LeaseRenewed {
                mac: mac(1),
                ip: ip(10)
            }]
        );
        assert_eq!(
            l.bound(t(450)).count(),
            1,
            "renewed at 200s, so bound until 500s"
        );
        assert_eq!(l.expire(t(499), &mut ev), []);
        assert_eq!(
            l.expire(t(500), &mut ev),
            [LeaseChange::Unbind {
                mac: mac(1),
                ip: ip(10)
            }]
        );
    }

    #[test]
    fn init_reboot_of_an_address_held_by_another_is_naked() {
        let mut l = Leases::new(START, 2, LEASE);
        let a = discover(&mut l, mac(1), t(0)).unwrap();
        select(&mut l, mac(1), a, t(0));
        let d = l.handle(
            DhcpRequest::Request {
                mac: mac(2),
                server_id: None,
                requested: Some(ip(10)),
                ciaddr: None,
            },
            ROUTER,
            t(1),
            &mut vec![],
        );
        assert_eq!(d.reply, Some(DhcpReply::Nak));
        // ... but a free one in the pool is granted (the client's lease predates a restart).
        let d = l.handle(
            DhcpRequest::Request {
                mac: mac(2),
                server_id: None,
                requested: Some(ip(11)),
                ciaddr: None,
            },
            ROUTER,
            t(1),
            &mut vec![],
        );
        assert_eq!(
            d.reply,
            Some(DhcpReply::Ack {
                ip: ip(11),
                lease: LEASE
            })
        );
    }

    #[test]
    fn release_and_decline() {
        let mut l = Leases::new(START, 2, LEASE);
        let a = discover(&mut l, mac(1), t(0)).unwrap();
        select(&mut l, mac(1), a, t(0));
        // A release for an address the client does not hold changes nothing.
        let d = l.handle(
            DhcpRequest::Release {
                mac: mac(2),
                ciaddr: ip(10),
            },
            ROUTER,
            t(1),
            &mut vec![],
        );
        assert!(d.changes.is_empty());
        let d = l.handle(
            DhcpRequest::Release {
                mac: mac(1),
                ciaddr: ip(10),
            },
            ROUTER,
            t(1),
            &mut vec![],
        );
        assert_eq!(
            d.changes,
            [LeaseChange::Unbind {
                mac: mac(1),
                ip: ip(10)
            }]
        );
        // Declined: out of the pool for a lease time, then back.
        let a = discover(&mut l, mac(2), t(2)).unwrap();
        l.handle(
            DhcpRequest::Decline {
                mac: mac(2),
                requested: a,
            },
            ROUTER,
            t(3),
            &mut vec![],
        );
        assert_ne!(discover(&mut l, mac(3), t(4)), Some(a));
        l.expire(t(3) + LEASE, &mut vec![]);
        assert_eq!(discover(&mut l, mac(4), t(3) + LEASE + OFFER_HOLD), Some(a));
    }

    #[test]
    fn returning_client_gets_its_address_back() {
        let mut l = Leases::new(START, 3, LEASE);
        let a = discover(&mut l, mac(1), t(0)).unwrap();
        select(&mut l, mac(1), a, t(0));
        let a = discover(&mut l, mac(2), t(0)).unwrap();
        select(&mut l, mac(2), a, t(0));
        l.handle(
            DhcpRequest::Release {
                mac: mac(1),
                ciaddr: ip(10),
            },
            ROUTER,
            t(1),
            &mut vec![],
        );
        l.handle(
            DhcpRequest::Release {
                mac: mac(2),
                ciaddr: ip(11),
            },
            ROUTER,
            t(1),
            &mut vec![],
        );
        assert_eq!(discover(&mut l, mac(2), t(2)), Some(ip(11)));
    }

    #[test]
    fn restore_and_reconfigure() {
        let mut l = Leases::new(START, 2, LEASE);
        assert!(l.restore(mac(1), ip(11), t(100), t(0)));
        assert!(!l.restore(mac(2), ip(11), t(100), t(0)), "taken");
        assert!(!l.restore(mac(3), ip(50), t(100), t(0)), "outside the pool");
        assert!(!l.restore(mac(4), ip(10), t(0), t(0)), "already expired");
        assert_eq!(l.next_deadline(), Some(t(100)));
        // Shrinking the pool to one address ends the binding at .11.
        let changes = l.reconfigure(START, 1, LEASE, t(1));
        assert_eq!(
            changes,
            [LeaseChange::Unbind {
                mac: mac(1),
                ip: ip(11)
            }]
        );
        assert_eq!(l.bound(t(1)).count(), 0);
    }

    // A reference model for the property test: the invariants every sequence must keep.
    #[derive(Debug, Clone)]
    enum Op {
        Discover(u8),
        Select(u8, u8),
        Renew(u8, u8),
        Release(u8, u8),
        Decline(u8, u8),
        Tick(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u8).prop_map(Op::Discover),
            (0..6u8, 8..14u8).prop_map(|(m, i)| Op::Select(m, i)),
            (0..6u8, 8..14u8).prop_map(|(m, i)| Op::Renew(m, i)),
            (0..6u8, 8..14u8).prop_map(|(m, i)| Op::Release(m, i)),
            (0..6u8, 8..14u8).prop_map(|(m, i)| Op::Decline(m, i)),
            (1..400u16).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Whatever clients do: no address is bound to two clients, no client holds two
        /// addresses, every binding is inside the pool, every ACK was preceded by a Bind of the
        /// same pair, and the kernel set (the changes replayed) always equals the bindings
        /// (up to expiry, which the kernel does on its own clock).
        #[test]
        fn bindings_stay_consistent(ops in proptest::collection::vec(op(), 1..200)) {
            let mut l = Leases::new(START, 4, LEASE);
            let mut now = t(1);
            let mut kernel: HashMap<(MacAddr, Ipv4Addr), Instant> = HashMap::new();
            let mut events = vec![];
            for op in ops {
                let d = match op {
                    Op::Discover(m) => l.handle(DhcpRequest::Discover { mac: mac(m), requested: None }, ROUTER, now, &mut events),
                    Op::Select(m, i) => l.handle(DhcpRequest::Request { mac: mac(m), server_id: Some(ROUTER), requested: Some(ip(i)), ciaddr: None }, ROUTER, now, &mut events),
                    Op::Renew(m, i) => l.handle(DhcpRequest::Request { mac: mac(m), server_id: None, requested: None, ciaddr: Some(ip(i)) }, ROUTER, now, &mut events),
                    Op::Release(m, i) => l.handle(DhcpRequest::Release { mac: mac(m), ciaddr: ip(i) }, ROUTER, now, &mut events),
                    Op::Decline(m, i) => l.handle(DhcpRequest::Decline { mac: mac(m), requested: ip(i) }, ROUTER, now, &mut events),
                    Op::Tick(s) => {
                        now = now + Duration::from_secs(u64::from(s));
                        Decision { changes: l.expire(now, &mut events), reply: None }
                    }
                };
                for c in &d.changes {
                    match *c {
                        LeaseChange::Bind { mac, ip, timeout } => { kernel.insert((mac, ip), now + timeout); }
                        LeaseChange::Unbind { mac, ip } => { kernel.remove(&(mac, ip)); }
                    }
                }
                if let Some(DhcpReply::Ack { ip, .. }) = d.reply {
                    prop_assert!(kernel.keys().any(|&(_, i)| i == ip), "ACK without Bind");
                }
                kernel.retain(|_, exp| *exp > now);
                let bound: HashSet<(MacAddr, Ipv4Addr)> = l.bound(now).map(|b| (b.mac, b.ip)).collect();
                let in_kernel: HashSet<(MacAddr, Ipv4Addr)> = kernel.keys().copied().collect();
                prop_assert_eq!(&bound, &in_kernel);
                let macs: HashSet<_> = bound.iter().map(|b| b.0).collect();
                let ips: HashSet<_> = bound.iter().map(|b| b.1).collect();
                prop_assert_eq!(macs.len(), bound.len(), "a client with two addresses");
                prop_assert_eq!(ips.len(), bound.len(), "an address with two clients");
                prop_assert!(ips.iter().all(|i| (10..14).contains(&i.octets()[3])));
            }
        }
    }
}
