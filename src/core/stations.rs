//! Stations: who is admitted, who is evicted and why, when a session ends, when a ban ends
//! (R7, R8, R9). A pure state machine over an injected clock.
//!
//! * At most `max_clients` at once. A newcomer when the spots are full evicts the oldest
//!   client connected longer than `min_age`; if none is that old (they may be mid-setup),
//!   nobody is disturbed and the newcomer is turned away.
//! * A session ends after `session`; the client is disconnected.
//! * Evicted, expired and turned-away clients are banned for `cooldown`.
//! * A client that leaves and comes back within its session keeps its original admission
//!   time: reconnecting (or crashing the daemon) does not reset the session clock.

use std::collections::HashMap;
use std::time::Duration;

use super::MacAddr;
use super::events::{Event, StationReason};
use super::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub max_clients: u16,
    pub min_age: Duration,
    pub session: Duration,
    pub cooldown: Duration,
}

/// What the edges must do for a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Disconnect the station (hostapd DEAUTHENTICATE) and end its lease and everything it
    /// learned.
    Disconnect(MacAddr),
    /// Keep it off until `until`: the nft `banned` set and hostapd's deny list.
    Ban { mac: MacAddr, timeout: Duration },
    /// The ban is over: off hostapd's deny list (the set element times out by itself).
    Unban(MacAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Client {
    admitted: Instant,
}

#[derive(Clone, Debug)]
pub struct Stations {
    policy: Policy,
    clients: HashMap<MacAddr, Client>,
    bans: HashMap<MacAddr, Instant>,
    /// Admission times of clients that left before their session ended.
    departed: HashMap<MacAddr, Instant>,
}

impl Stations {
    pub fn new(policy: Policy) -> Self {
        Stations {
            policy,
            clients: HashMap::new(),
            bans: HashMap::new(),
            departed: HashMap::new(),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn is_admitted(&self, mac: MacAddr) -> bool {
        self.clients.contains_key(&mac)
    }

    pub fn is_banned(&self, mac: MacAddr, now: Instant) -> bool {
        self.bans.get(&mac).is_some_and(|&until| until > now)
    }

    pub fn admitted_at(&self, mac: MacAddr) -> Option<Instant> {
        self.clients.get(&mac).map(|c| c.admitted)
    }

    /// Clients, oldest first.
    pub fn clients(&self) -> Vec<(MacAddr, Instant)> {
        let mut v: Vec<_> = self.clients.iter().map(|(m, c)| (*m, c.admitted)).collect();
        v.sort_by_key(|&(m, t)| (t, m));
        v
    }

    pub fn bans(&self, now: Instant) -> Vec<(MacAddr, Duration)> {
        self.bans
            .iter()
            .filter(|&(_, &until)| until > now)
            .map(|(m, until)| (*m, until.saturating_since(now)))
            .collect()
    }

    fn ban(
        &mut self,
        mac: MacAddr,
        reason: StationReason,
        now: Instant,
        out: &mut Vec<Action>,
        events: &mut Vec<Event>,
    ) {
        if self.policy.cooldown.is_zero() {
            return;
        }
        self.bans.insert(mac, now + self.policy.cooldown);
        out.push(Action::Ban {
            mac,
            timeout: self.policy.cooldown,
        });
        events.push(Event::Banned {
            mac,
            secs: self.policy.cooldown.as_secs(),
            reason,
        });
    }

    fn evict(
        &mut self,
        mac: MacAddr,
        reason: StationReason,
        now: Instant,
        out: &mut Vec<Action>,
        events: &mut Vec<Event>,
    ) {
        if let Some(c) = self.clients.remove(&mac) {
            events.push(Event::Evicted {
                mac,
                reason,
                age: now.saturating_since(c.admitted).as_secs(),
            });
            out.push(Action::Disconnect(mac));
            self.ban(mac, reason, now, out, events);
        }
    }

    /// A station joined (hostapd: associated and authorized; without hostapd: its first
    /// DHCP message). `window_open`: whether the provisioning network is accepting clients.
    pub fn join(
        &mut self,
        mac: MacAddr,
        window_open: bool,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.clients.contains_key(&mac) {
            return out;
        }
        let turn_away = |reason, out: &mut Vec<Action>, events: &mut Vec<Event>| {
            events.push(Event::TurnedAway { mac, reason });
            out.push(Action::Disconnect(mac));
        };
        if self.is_banned(mac, now) {
            turn_away(StationReason::Banned, &mut out, events);
            return out;
        }
        if !window_open {
            turn_away(StationReason::WindowClosed, &mut out, events);
            return out;
        }
        if self.clients.len() >= usize::from(self.policy.max_clients) {
            let oldest = self
                .clients
                .iter()
                .filter(|(_, c)| now.saturating_since(c.admitted) >= self.policy.min_age)
                .min_by_key(|&(m, c)| (c.admitted, *m))
                .map(|(m, _)| *m);
            match oldest {
                Some(old) => self.evict(old, StationReason::MakeRoom, now, &mut out, events),
                None => {
                    turn_away(StationReason::Full, &mut out, events);
                    self.ban(mac, StationReason::Full, now, &mut out, events);
                    return out;
                }
            }
        }
        // Back within its session: the clock keeps running from the first admission.
        let admitted = self
            .departed
            .remove(&mac)
            .filter(|&t| now.saturating_since(t) < self.policy.session)
            .unwrap_or(now);
        self.clients.insert(mac, Client { admitted });
        events.push(Event::Admitted {
            mac,
            age: now.saturating_since(admitted).as_secs(),
        });
        out
    }

    /// A station left on its own (disassociated, or its lease ended).
    pub fn leave(&mut self, mac: MacAddr, now: Instant, events: &mut Vec<Event>) -> Vec<Action> {
        if let Some(c) = self.clients.remove(&mac) {
            events.push(Event::Left {
                mac,
                age: now.saturating_since(c.admitted).as_secs(),
            });
            self.departed.insert(mac, c.admitted);
            return vec![Action::Disconnect(mac)];
        }
        Vec::new()
    }

    /// The window closed: everyone goes, gracefully (no ban: there is nothing to come back
    /// to until it opens again).
    pub fn close(&mut self, now: Instant, events: &mut Vec<Event>) -> Vec<Action> {
        let mut out = Vec::new();
        for (mac, _) in self.clients() {
            if let Some(c) = self.clients.remove(&mac) {
                events.push(Event::Evicted {
                    mac,
                    reason: StationReason::WindowClosed,
                    age: now.saturating_since(c.admitted).as_secs(),
                });
                out.push(Action::Disconnect(mac));
            }
        }
        self.departed.clear();
        out
    }

    /// Ends sessions and bans whose time is up.
    pub fn tick(&mut self, now: Instant, events: &mut Vec<Event>) -> Vec<Action> {
        let mut out = Vec::new();
        let expired: Vec<MacAddr> = self
            .clients()
            .into_iter()
            .filter(|&(_, t)| now.saturating_since(t) >= self.policy.session)
            .map(|(m, _)| m)
            .collect();
        for mac in expired {
            self.evict(mac, StationReason::SessionEnded, now, &mut out, events);
        }
        let ended: Vec<MacAddr> = self
            .bans
            .iter()
            .filter(|&(_, &until)| until <= now)
            .map(|(m, _)| *m)
            .collect();
        for mac in ended {
            self.bans.remove(&mac);
            events.push(Event::BanEnded { mac });
            out.push(Action::Unban(mac));
        }
        let session = self.policy.session;
        self.departed
            .retain(|_, &mut t| now.saturating_since(t) < session);
        out
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .clients
            .values()
            .map(|c| c.admitted + self.policy.session);
        let bans = self.bans.values().copied();
        sessions.chain(bans).min()
    }

    /// Re-creates a client after a restart, with its original admission time.
    pub fn restore_client(&mut self, mac: MacAddr, admitted: Instant) {
        self.clients.insert(mac, Client { admitted });
    }

    pub fn restore_ban(&mut self, mac: MacAddr, until: Instant) {
        self.bans.insert(mac, until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const MIN_AGE: Duration = Duration::from_secs(120);
    const SESSION: Duration = Duration::from_secs(900);
    const COOLDOWN: Duration = Duration::from_secs(300);

    fn policy(max: u16) -> Policy {
        Policy {
            max_clients: max,
            min_age: MIN_AGE,
            session: SESSION,
            cooldown: COOLDOWN,
        }
    }
    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn t(s: u64) -> Instant {
        Instant::from_millis(1_000_000 + s * 1000)
    }

    #[test]
    fn full_network_evicts_the_oldest_old_enough_client() {
        let mut s = Stations::new(policy(2));
        let ev = &mut vec![];
        assert!(s.join(mac(1), true, t(0), ev).is_empty());
        assert!(s.join(mac(2), true, t(10), ev).is_empty());
        // At 200 s both are old enough: the oldest (1) goes, banned.
        let out = s.join(mac(3), true, t(200), ev);
        assert_eq!(
            out,
            [
                Action::Disconnect(mac(1)),
                Action::Ban {
                    mac: mac(1),
                    timeout: COOLDOWN
                }
            ]
        );
        assert!(s.is_admitted(mac(3)) && s.is_admitted(mac(2)) && !s.is_admitted(mac(1)));
        assert!(ev.iter().any(|e| matches!(e, Event::Evicted { mac: m, reason: StationReason::MakeRoom, age: 200 } if *m == mac(1))));
        // The evicted client is kept off until the cooldown ends.
        assert_eq!(
            s.join(mac(1), true, t(300), ev),
            [Action::Disconnect(mac(1))]
        );
        assert!(!s.is_admitted(mac(1)));
    }

    #[test]
    fn a_young_network_turns_the_newcomer_away() {
        let mut s = Stations::new(policy(2));
        let ev = &mut vec![];
        s.join(mac(1), true, t(0), ev);
        s.join(mac(2), true, t(10), ev);
        // At 60 s nobody is old enough: nobody is disturbed, the newcomer is banned.
        let out = s.join(mac(3), true, t(60), ev);
        assert_eq!(
            out,
            [
                Action::Disconnect(mac(3)),
                Action::Ban {
                    mac: mac(3),
                    timeout: COOLDOWN
                }
            ]
        );
        assert!(s.is_admitted(mac(1)) && s.is_admitted(mac(2)) && !s.is_admitted(mac(3)));
        // Only 1 is old enough at 125 s: it is the one evicted even though 2 is... younger.
        ev.clear();
        let out = s.join(mac(4), true, t(125), ev);
        assert_eq!(out[0], Action::Disconnect(mac(1)));
    }

    #[test]
    fn sessions_and_bans_end() {
        let mut s = Stations::new(policy(4));
        let ev = &mut vec![];
        s.join(mac(1), true, t(0), ev);
        assert_eq!(s.next_deadline(), Some(t(900)));
        assert!(s.tick(t(899), ev).is_empty());
        assert_eq!(
            s.tick(t(900), ev),
            [
                Action::Disconnect(mac(1)),
                Action::Ban {
                    mac: mac(1),
                    timeout: COOLDOWN
                }
            ]
        );
        assert!(s.is_banned(mac(1), t(1199)));
        assert_eq!(s.next_deadline(), Some(t(1200)));
        assert_eq!(s.tick(t(1200), ev), [Action::Unban(mac(1))]);
        assert!(
            s.join(mac(1), true, t(1201), ev).is_empty(),
            "welcome back after the cooldown"
        );
    }

    #[test]
    fn reconnecting_does_not_reset_the_session_clock() {
        let mut s = Stations::new(policy(4));
        let ev = &mut vec![];
        s.join(mac(1), true, t(0), ev);
        s.leave(mac(1), t(500), ev);
        s.join(mac(1), true, t(510), ev);
        assert_eq!(s.admitted_at(mac(1)), Some(t(0)));
        assert_eq!(s.tick(t(900), ev)[0], Action::Disconnect(mac(1)));
        // After the session would have ended anyway, a fresh session.
        let mut s = Stations::new(policy(4));
        s.join(mac(2), true, t(0), ev);
        s.leave(mac(2), t(10), ev);
        s.join(mac(2), true, t(1000), ev);
        assert_eq!(s.admitted_at(mac(2)), Some(t(1000)));
    }

    #[test]
    fn closed_window_turns_away_and_closing_disconnects_everyone_without_bans() {
        let mut s = Stations::new(policy(4));
        let ev = &mut vec![];
        assert_eq!(
            s.join(mac(1), false, t(0), ev),
            [Action::Disconnect(mac(1))]
        );
        s.join(mac(2), true, t(0), ev);
        s.join(mac(3), true, t(1), ev);
        assert_eq!(
            s.close(t(5), ev),
            [Action::Disconnect(mac(2)), Action::Disconnect(mac(3))]
        );
        assert!(s.clients().is_empty());
        assert!(!s.is_banned(mac(2), t(6)));
    }

    // --- a reference model, and the core against it ---

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Leave(u8),
        Tick(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..12u8).prop_map(Op::Join),
            1 => (0..12u8).prop_map(Op::Leave),
            3 => (1..400u16).prop_map(Op::Tick),
        ]
    }

    /// The spec, written as plainly as possible.
    #[derive(Default)]
    struct Model {
        clients: Vec<(MacAddr, Instant)>, // admission order is not kept: sorted when needed
        bans: Vec<(MacAddr, Instant)>,
        departed: Vec<(MacAddr, Instant)>,
    }

    impl Model {
        fn banned(&self, m: MacAddr, now: Instant) -> bool {
            self.bans.iter().any(|&(b, until)| b == m && until > now)
        }
        fn ban(&mut self, m: MacAddr, now: Instant) {
            self.bans.retain(|&(b, _)| b != m);
            self.bans.push((m, now + COOLDOWN));
        }
        fn join(&mut self, m: MacAddr, now: Instant, max: usize) {
            if self.clients.iter().any(|&(c, _)| c == m) || self.banned(m, now) {
                return;
            }
            if self.clients.len() >= max {
                let mut old: Vec<_> = self
                    .clients
                    .iter()
                    .copied()
                    .filter(|&(_, t)| now.saturating_since(t) >= MIN_AGE)
                    .collect();
                old.sort_by_key(|&(c, t)| (t, c));
                match old.first() {
                    Some(&(victim, _)) => {
                        self.clients.retain(|&(c, _)| c != victim);
                        self.ban(victim, now);
                    }
                    None => {
                        self.ban(m, now);
                        return;
                    }
                }
            }
            let back = self
                .departed
                .iter()
                .find(|&&(d, t)| d == m && now.saturating_since(t) < SESSION)
                .map(|&(_, t)| t);
            self.departed.retain(|&(d, _)| d != m);
            self.clients.push((m, back.unwrap_or(now)));
        }
        fn leave(&mut self, m: MacAddr) {
            if let Some(i) = self.clients.iter().position(|&(c, _)| c == m) {
                let (_, t) = self.clients.remove(i);
                self.departed.retain(|&(d, _)| d != m);
                self.departed.push((m, t));
            }
        }
        fn tick(&mut self, now: Instant) {
            let expired: Vec<_> = self
                .clients
                .iter()
                .copied()
                .filter(|&(_, t)| now.saturating_since(t) >= SESSION)
                .collect();
            for (m, _) in expired {
                self.clients.retain(|&(c, _)| c != m);
                self.ban(m, now);
            }
            self.bans.retain(|&(_, until)| until > now);
            self.departed
                .retain(|&(_, t)| now.saturating_since(t) < SESSION);
        }
    }

    proptest! {
        /// Time advanced by ticks; after every step the core admits exactly the model's
        /// clients with the model's admission times and bans exactly the model's bans, and
        /// never holds more than max_clients.
        #[test]
        fn core_matches_the_model(max in 1u16..6, ops in proptest::collection::vec(op(), 1..150)) {
            let mut s = Stations::new(policy(max));
            let mut m = Model::default();
            let mut now = t(0);
            let ev = &mut vec![];
            for op in ops {
                match op {
                    Op::Join(n) => { s.join(mac(n), true, now, ev); m.join(mac(n), now, usize::from(max)); }
                    Op::Leave(n) => { s.leave(mac(n), now, ev); m.leave(mac(n)); }
                    Op::Tick(secs) => {
                        now = now + Duration::from_secs(u64::from(secs));
                        s.tick(now, ev);
                        m.tick(now);
                    }
                }
                let mut want = m.clients.clone();
                want.sort_by_key(|&(c, t)| (t, c));
                prop_assert_eq!(s.clients(), want);
                prop_assert!(s.clients().len() <= usize::from(max));
                let got: HashSet<_> = s.bans(now).into_iter().map(|(b, _)| b).collect();
                let want: HashSet<_> = m.bans.iter().filter(|&&(_, u)| u > now).map(|&(b, _)| b).collect();
                prop_assert_eq!(got, want);
                // Nobody is both admitted and banned.
                for (c, _) in s.clients() {
                    prop_assert!(!s.is_banned(c, now));
                }
            }
        }
    }
}
