//! Stations: who is admitted, who is evicted and why, when a session ends, when a ban ends
//! (R7, R8, R9). A pure state machine over an injected clock.
//!
//! * At most `max_clients` at once. A newcomer when the spots are full may evict the oldest
//!   client connected longer than `min_age`; if none is that old (they may be mid-setup),
//!   nobody is disturbed and the newcomer is turned away.
//! * Evicting is the rule for a real newcomer, not for a burst of identities: a newcomer
//!   that would evict first *waits* until it has shown it is real, by completing DHCP (a
//!   REQUEST for the address it was offered; with a radio it has associated too), and
//!   evictions to make room happen at most once every `evict_interval`. At most
//!   [`MAX_WAITING`] wait at once, and one per bridge port (one host making up identities
//!   holds at most one of those places); one that does not complete DHCP within
//!   [`WAIT_HOLD`] is turned away. So DISCOVERs from random MACs evict nobody, and an attacker that completes
//!   DHCP with many identities displaces at most one old client per interval.
//! * A session ends after `session`; the client is disconnected.
//! * Evicted, expired and turned-away clients are banned for `cooldown`.
//! * A client that leaves and comes back within its session keeps its original admission
//!   time: reconnecting (or crashing the daemon) does not reset the session clock.

use std::collections::BTreeMap;
use std::time::Duration;

use super::MacAddr;
use super::events::{Event, StationReason};
use super::profile::{self, Profile};
use super::time::Instant;

/// Newcomers that may wait at once for a spot (each holds an offered address meanwhile).
pub const MAX_WAITING: usize = 4;
/// How long a waiting newcomer has to complete DHCP.
pub const WAIT_HOLD: Duration = Duration::from_secs(60);
/// The longest ban an operator may give (a longer one is refused, not shortened).
pub const MAX_BAN: Duration = Duration::from_secs(30 * 86_400);

/// The activation window as a station joining meets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Open,
    Closed,
    /// Open for named devices only (`window open --for`), and this station is none.
    OpenForOthers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub max_clients: u16,
    pub min_age: Duration,
    pub session: Duration,
    pub cooldown: Duration,
    /// The shortest time between two evictions to make room.
    pub evict_interval: Duration,
}

/// What the edges must do for a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Disconnect the station (hostapd DEAUTHENTICATE) and end its lease and everything it
    /// learned.
    Disconnect(MacAddr),
    /// A station that was never admitted goes: deauthenticated, nothing else to end.
    TurnAway(MacAddr),
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
    // Ordered maps: the same inputs give the same decisions in the same order.
    clients: BTreeMap<MacAddr, Client>,
    bans: BTreeMap<MacAddr, Instant>,
    /// Admission times of clients that left before their session ended.
    departed: BTreeMap<MacAddr, Instant>,
    /// Newcomers that would evict someone: since when they wait, and on which port.
    waiting: BTreeMap<MacAddr, (Instant, Option<u32>)>,
    last_eviction: Option<Instant>,
    /// Vendor profiles: a client of one is held to its session and client limits.
    profiles: Vec<Profile>,
}

impl Stations {
    pub fn new(policy: Policy) -> Self {
        Stations {
            policy,
            clients: BTreeMap::new(),
            bans: BTreeMap::new(),
            departed: BTreeMap::new(),
            waiting: BTreeMap::new(),
            last_eviction: None,
            profiles: Vec::new(),
        }
    }

    /// The vendor profiles whose limits hold for their clients (from the next decision on:
    /// a client over a profile's new limit is not evicted for it).
    pub fn set_profiles(&mut self, profiles: &[Profile]) {
        self.profiles = profiles.to_vec();
    }

    /// `mac`'s session limit: its profile's, else the network's.
    pub fn session_of(&self, mac: MacAddr) -> Duration {
        profile::of(&self.profiles, mac)
            .and_then(|i| self.profiles[i].session)
            .unwrap_or(self.policy.session)
    }

    /// Whether `mac`'s profile has as many clients as it may (its `max_clients`).
    fn profile_full(&self, mac: MacAddr) -> bool {
        let Some(i) = profile::of(&self.profiles, mac) else {
            return false;
        };
        let Some(max) = self.profiles[i].max_clients else {
            return false;
        };
        let of_it = self
            .clients
            .keys()
            .chain(self.waiting.keys())
            .filter(|&&m| profile::of(&self.profiles, m) == Some(i))
            .count();
        of_it >= usize::from(max)
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// A new policy. With fewer spots than clients, the oldest go (not banned: they did
    /// nothing wrong).
    pub fn set_policy(
        &mut self,
        policy: Policy,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Vec<Action> {
        self.policy = policy;
        let mut out = Vec::new();
        let excess = self
            .clients
            .len()
            .saturating_sub(usize::from(policy.max_clients));
        for (mac, _) in self.clients().into_iter().take(excess) {
            if let Some(c) = self.clients.remove(&mac) {
                events.push(Event::Evicted {
                    mac,
                    reason: StationReason::Limit,
                    age: now.saturating_since(c.admitted).as_secs(),
                });
                out.push(Action::Disconnect(mac));
            }
        }
        out
    }

    pub fn is_admitted(&self, mac: MacAddr) -> bool {
        self.clients.contains_key(&mac)
    }

    /// Whether `mac` waits for a spot (see [`Stations::confirm`]).
    pub fn is_waiting(&self, mac: MacAddr) -> bool {
        self.waiting.contains_key(&mac)
    }

    /// The newcomers waiting for a spot.
    pub fn waiting(&self) -> Vec<MacAddr> {
        self.waiting.keys().copied().collect()
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

    /// How long `mac`'s ban has left, if it has one.
    pub fn ban_left(&self, mac: MacAddr, now: Instant) -> Option<Duration> {
        self.bans
            .get(&mac)
            .filter(|&&until| until > now)
            .map(|until| until.saturating_since(now))
    }

    fn ban(
        &mut self,
        mac: MacAddr,
        reason: StationReason,
        now: Instant,
        out: &mut Vec<Action>,
        events: &mut Vec<Event>,
    ) {
        if !self.policy.cooldown.is_zero() {
            self.ban_for(mac, self.policy.cooldown, reason, now, out, events);
        }
    }

    fn ban_for(
        &mut self,
        mac: MacAddr,
        duration: Duration,
        reason: StationReason,
        now: Instant,
        out: &mut Vec<Action>,
        events: &mut Vec<Event>,
    ) {
        self.bans.insert(mac, now + duration);
        out.push(Action::Ban {
            mac,
            timeout: duration,
        });
        events.push(Event::Banned {
            mac,
            secs: duration.as_secs(),
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

    fn turn_away(
        mac: MacAddr,
        reason: StationReason,
        out: &mut Vec<Action>,
        events: &mut Vec<Event>,
    ) {
        events.push(Event::TurnedAway { mac, reason });
        out.push(Action::TurnAway(mac));
    }

    fn full(&self) -> bool {
        self.clients.len() >= usize::from(self.policy.max_clients)
    }

    /// The client a newcomer would evict: the oldest connected longer than `min_age`.
    fn eviction_candidate(&self, now: Instant) -> Option<MacAddr> {
        self.clients
            .iter()
            .filter(|(_, c)| now.saturating_since(c.admitted) >= self.policy.min_age)
            .min_by_key(|&(m, c)| (c.admitted, *m))
            .map(|(m, _)| *m)
    }

    fn admit(&mut self, mac: MacAddr, now: Instant, events: &mut Vec<Event>) {
        self.waiting.remove(&mac);
        // Back within its session: the clock keeps running from the first admission.
        let admitted = self
            .departed
            .remove(&mac)
            .filter(|&t| now.saturating_since(t) < self.session_of(mac))
            .unwrap_or(now);
        self.clients.insert(mac, Client { admitted });
        events.push(Event::Admitted {
            mac,
            age: now.saturating_since(admitted).as_secs(),
        });
    }

    /// A station joined (hostapd: associated and authorized; without hostapd: its first
    /// DHCP message). `window_open`: whether the provisioning network is accepting clients.
    /// A newcomer that would have to evict someone is not admitted yet but waits (see
    /// [`Stations::confirm`]).
    pub fn join(
        &mut self,
        mac: MacAddr,
        window_open: bool,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Vec<Action> {
        self.join_on(mac, None, window_open, now, events)
    }

    /// [`Stations::join`] for a station on bridge port `port` (without a radio, the port
    /// its DHCP came in on).
    pub fn join_on(
        &mut self,
        mac: MacAddr,
        port: Option<u32>,
        window_open: bool,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Vec<Action> {
        let door = if window_open {
            Door::Open
        } else {
            Door::Closed
        };
        self.join_through(mac, port, door, now, events)
    }

    /// [`Stations::join_on`], with the window open for everyone, closed, or open for other
    /// devices than this one.
    pub fn join_through(
        &mut self,
        mac: MacAddr,
        port: Option<u32>,
        door: Door,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.clients.contains_key(&mac) || self.waiting.contains_key(&mac) {
            return out;
        }
        if self.is_banned(mac, now) {
            Self::turn_away(mac, StationReason::Banned, &mut out, events);
            return out;
        }
        match door {
            Door::Open => {}
            Door::Closed => {
                Self::turn_away(mac, StationReason::WindowClosed, &mut out, events);
                return out;
            }
            Door::OpenForOthers => {
                Self::turn_away(mac, StationReason::NotExpected, &mut out, events);
                return out;
            }
        }
        // A vendor's devices take at most their profile's spots, evicting nobody for it.
        if self.profile_full(mac) {
            Self::turn_away(mac, StationReason::ProfileFull, &mut out, events);
            self.ban(mac, StationReason::ProfileFull, now, &mut out, events);
            return out;
        }
        if self.full() {
            if self.eviction_candidate(now).is_none() {
                Self::turn_away(mac, StationReason::Full, &mut out, events);
                self.ban(mac, StationReason::Full, now, &mut out, events);
            } else if self.waiting.len() >= MAX_WAITING
                || port.is_some() && self.waiting.values().any(|&(_, p)| p == port)
            {
                // Not banned: a burst of identities must not fill the ban list either.
                Self::turn_away(mac, StationReason::Busy, &mut out, events);
            } else {
                self.waiting.insert(mac, (now, port));
                events.push(Event::Waiting { mac });
            }
            return out;
        }
        self.admit(mac, now, events);
        out
    }

    /// A waiting newcomer completed DHCP: now it may take a spot, evicting the oldest client
    /// older than `min_age` if it must, at most once every `evict_interval` (until then it
    /// keeps waiting: its DHCP client asks again). Whether it is admitted now.
    pub fn confirm(
        &mut self,
        mac: MacAddr,
        now: Instant,
        events: &mut Vec<Event>,
        out: &mut Vec<Action>,
    ) -> bool {
        if self.clients.contains_key(&mac) {
            return true;
        }
        if !self.waiting.contains_key(&mac) {
            return false;
        }
        if self.full() {
            let Some(old) = self.eviction_candidate(now) else {
                self.waiting.remove(&mac);
                Self::turn_away(mac, StationReason::Full, out, events);
                self.ban(mac, StationReason::Full, now, out, events);
                return false;
            };
            if self
                .last_eviction
                .is_some_and(|t| now.saturating_since(t) < self.policy.evict_interval)
            {
                return false;
            }
            self.last_eviction = Some(now);
            self.evict(old, StationReason::MakeRoom, now, out, events);
        }
        self.admit(mac, now, events);
        true
    }

    /// A station left on its own (disassociated, or its lease ended).
    pub fn leave(&mut self, mac: MacAddr, now: Instant, events: &mut Vec<Event>) -> Vec<Action> {
        self.waiting.remove(&mac);
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
        for mac in std::mem::take(&mut self.waiting).into_keys() {
            Self::turn_away(mac, StationReason::WindowClosed, &mut out, events);
        }
        self.departed.clear();
        out
    }

    /// Ends sessions, bans and waits whose time is up.
    pub fn tick(&mut self, now: Instant, events: &mut Vec<Event>) -> Vec<Action> {
        let mut out = Vec::new();
        let expired: Vec<MacAddr> = self
            .clients()
            .into_iter()
            .filter(|&(m, t)| now.saturating_since(t) >= self.session_of(m))
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
        let lapsed: Vec<MacAddr> = self
            .waiting
            .iter()
            .filter(|&(_, &(since, _))| now.saturating_since(since) >= WAIT_HOLD)
            .map(|(m, _)| *m)
            .collect();
        for mac in lapsed {
            self.waiting.remove(&mac);
            Self::turn_away(mac, StationReason::NoDhcp, &mut out, events);
        }
        let departed = std::mem::take(&mut self.departed);
        self.departed = departed
            .into_iter()
            .filter(|&(m, t)| now.saturating_since(t) < self.session_of(m))
            .collect();
        out
    }

    /// The operator evicts a client: it goes now, banned for `ban` if given, else free to
    /// come back at once with a new session. `None` if it is not a client.
    pub fn evict_by_operator(
        &mut self,
        mac: MacAddr,
        ban: Option<Duration>,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Option<Vec<Action>> {
        self.evict_for(mac, ban, StationReason::Operator, now, events)
    }

    fn evict_for(
        &mut self,
        mac: MacAddr,
        ban: Option<Duration>,
        reason: StationReason,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Option<Vec<Action>> {
        let c = self.clients.remove(&mac)?;
        events.push(Event::Evicted {
            mac,
            reason,
            age: now.saturating_since(c.admitted).as_secs(),
        });
        let mut out = vec![Action::Disconnect(mac)];
        if let Some(d) = ban {
            self.ban_for(mac, d, reason, now, &mut out, events);
        }
        Some(out)
    }

    /// The operator bans a MAC, client or not (a device can be kept out before it comes),
    /// for `duration` from now, replacing a ban it has: a client is evicted, a newcomer
    /// waiting for a spot turned away.
    pub fn ban_by_operator(
        &mut self,
        mac: MacAddr,
        duration: Duration,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Vec<Action> {
        self.ban_with(mac, duration, StationReason::Operator, now, events)
    }

    /// Bans a MAC, client or not, for `duration` from now for `reason` (the operator, a
    /// threat response), replacing a ban it has: a client is evicted (for the same
    /// reason), a newcomer waiting for a spot turned away.
    pub fn ban_with(
        &mut self,
        mac: MacAddr,
        duration: Duration,
        reason: StationReason,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Vec<Action> {
        let mut out = self
            .evict_for(mac, None, reason, now, events)
            .unwrap_or_default();
        if self.waiting.remove(&mac).is_some() {
            Self::turn_away(mac, reason, &mut out, events);
        }
        self.departed.remove(&mac);
        self.ban_for(mac, duration, reason, now, &mut out, events);
        out
    }

    /// The operator lifts a ban before it ends. `None` if the MAC is not banned.
    pub fn unban(
        &mut self,
        mac: MacAddr,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Option<Vec<Action>> {
        self.bans.remove(&mac).filter(|&until| until > now)?;
        events.push(Event::Unbanned { mac });
        Some(vec![Action::Unban(mac)])
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .clients
            .iter()
            .map(|(&m, c)| c.admitted + self.session_of(m));
        let bans = self.bans.values().copied();
        let waits = self.waiting.values().map(|&(since, _)| since + WAIT_HOLD);
        sessions.chain(bans).chain(waits).min()
    }

    /// An admission the kernel did not take: the client is not admitted after all (a
    /// client that came back keeps its session clock for the next try).
    pub fn take_back(&mut self, mac: MacAddr) {
        if let Some(c) = self.clients.remove(&mac) {
            self.departed.insert(mac, c.admitted);
        }
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
    const EVICT_INTERVAL: Duration = Duration::from_secs(10);

    fn policy(max: u16) -> Policy {
        Policy {
            max_clients: max,
            min_age: MIN_AGE,
            session: SESSION,
            cooldown: COOLDOWN,
            evict_interval: EVICT_INTERVAL,
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
        // At 200 s both are old enough, but joining alone evicts nobody: 3 waits.
        assert!(s.join(mac(3), true, t(200), ev).is_empty());
        assert!(s.is_waiting(mac(3)) && !s.is_admitted(mac(3)) && s.is_admitted(mac(1)));
        assert_eq!(ev.last(), Some(&Event::Waiting { mac: mac(3) }));
        // It completes DHCP: the oldest (1) goes, banned.
        let mut out = Vec::new();
        assert!(s.confirm(mac(3), t(201), ev, &mut out));
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
        assert!(!s.is_waiting(mac(3)));
        assert!(ev.iter().any(|e| matches!(e, Event::Evicted { mac: m, reason: StationReason::MakeRoom, age: 201 } if *m == mac(1))));
        // The evicted client is kept off until the cooldown ends.
        assert_eq!(s.join(mac(1), true, t(300), ev), [Action::TurnAway(mac(1))]);
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
                Action::TurnAway(mac(3)),
                Action::Ban {
                    mac: mac(3),
                    timeout: COOLDOWN
                }
            ]
        );
        assert!(s.is_admitted(mac(1)) && s.is_admitted(mac(2)) && !s.is_admitted(mac(3)));
        // Only 1 is old enough at 125 s: it is the one evicted even though 2 is... younger.
        ev.clear();
        assert!(s.join(mac(4), true, t(125), ev).is_empty());
        let mut out = Vec::new();
        assert!(s.confirm(mac(4), t(126), ev, &mut out));
        assert_eq!(out[0], Action::Disconnect(mac(1)));
    }

    #[test]
    fn a_burst_of_identities_evicts_nobody_and_real_newcomers_at_a_bounded_rate() {
        let mut s = Stations::new(policy(2));
        let ev = &mut vec![];
        s.join(mac(1), true, t(0), ev);
        s.join(mac(2), true, t(1), ev);
        // Sixteen newcomers that never complete DHCP: four wait, the rest are turned away
        // unbanned, and nobody is evicted.
        let mut out = Vec::new();
        for n in 10..26 {
            out.extend(s.join(mac(n), true, t(300), ev));
        }
        assert_eq!(s.clients().len(), 2);
        assert!(s.is_admitted(mac(1)) && s.is_admitted(mac(2)));
        assert_eq!(
            (10..26).filter(|&n| s.is_waiting(mac(n))).count(),
            MAX_WAITING
        );
        assert!(
            out.iter()
                .all(|a| matches!(a, Action::TurnAway(m) if m.0[5] >= 14))
        );
        assert!(s.bans(t(300)).is_empty());
        // Two complete DHCP at once: one evicts now, the other waits out the interval.
        let mut out = Vec::new();
        assert!(s.confirm(mac(10), t(301), ev, &mut out));
        assert!(!s.confirm(mac(11), t(302), ev, &mut out));
        assert!(s.is_waiting(mac(11)));
        assert!(s.confirm(mac(11), t(311), ev, &mut out));
        assert_eq!(
            s.clients().iter().map(|c| c.0).collect::<Vec<_>>(),
            [mac(10), mac(11)]
        );
        // The others never completed DHCP: turned away when their wait lapses.
        let out = s.tick(t(360), ev);
        assert_eq!(out, [Action::TurnAway(mac(12)), Action::TurnAway(mac(13))]);
        assert!(ev.contains(&Event::TurnedAway {
            mac: mac(12),
            reason: StationReason::NoDhcp
        }));
        // A station that does not wait is not admitted by confirming.
        assert!(!s.confirm(mac(40), t(361), ev, &mut Vec::new()));
    }

    #[test]
    fn a_waiting_newcomer_is_admitted_without_eviction_once_a_spot_frees() {
        let mut s = Stations::new(policy(1));
        let ev = &mut vec![];
        s.join(mac(1), true, t(0), ev);
        s.join(mac(2), true, t(200), ev);
        assert!(s.is_waiting(mac(2)));
        s.leave(mac(1), t(201), ev);
        let mut out = Vec::new();
        assert!(s.confirm(mac(2), t(202), ev, &mut out));
        assert!(out.is_empty(), "nobody to evict: {out:?}");
        // If instead everyone became too young meanwhile, the waiting one is turned away.
        let mut s = Stations::new(policy(1));
        s.join(mac(1), true, t(0), ev);
        s.join(mac(2), true, t(200), ev);
        s.leave(mac(1), t(201), ev);
        s.join(mac(3), true, t(202), ev);
        let mut out = Vec::new();
        assert!(!s.confirm(mac(2), t(203), ev, &mut out));
        assert_eq!(out[0], Action::TurnAway(mac(2)));
        assert!(s.is_banned(mac(2), t(204)));
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
        assert_eq!(s.join(mac(1), false, t(0), ev), [Action::TurnAway(mac(1))]);
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
        Confirm(u8),
        Leave(u8),
        Tick(u16),
        /// The window closes (and opens again at once).
        Close,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..12u8).prop_map(Op::Join),
            3 => (0..12u8).prop_map(Op::Confirm),
            1 => (0..12u8).prop_map(Op::Leave),
            3 => (1..400u16).prop_map(Op::Tick),
            1 => Just(Op::Close),
        ]
    }

    /// The spec, written as plainly as possible.
    #[derive(Default)]
    struct Model {
        clients: Vec<(MacAddr, Instant)>, // admission order is not kept: sorted when needed
        bans: Vec<(MacAddr, Instant)>,
        departed: Vec<(MacAddr, Instant)>,
        waiting: Vec<(MacAddr, Instant)>,
        last_eviction: Option<Instant>,
    }

    impl Model {
        fn banned(&self, m: MacAddr, now: Instant) -> bool {
            self.bans.iter().any(|&(b, until)| b == m && until > now)
        }
        fn ban(&mut self, m: MacAddr, now: Instant) {
            self.bans.retain(|&(b, _)| b != m);
            self.bans.push((m, now + COOLDOWN));
        }
        fn admitted(&self, m: MacAddr) -> bool {
            self.clients.iter().any(|&(c, _)| c == m)
        }
        fn waits(&self, m: MacAddr) -> bool {
            self.waiting.iter().any(|&(w, _)| w == m)
        }
        fn oldest_old_enough(&self, now: Instant) -> Option<MacAddr> {
            let mut old: Vec<_> = self
                .clients
                .iter()
                .copied()
                .filter(|&(_, t)| now.saturating_since(t) >= MIN_AGE)
                .collect();
            old.sort_by_key(|&(c, t)| (t, c));
            old.first().map(|&(c, _)| c)
        }
        fn join(&mut self, m: MacAddr, now: Instant, max: usize) {
            if self.admitted(m) || self.waits(m) || self.banned(m, now) {
                return;
            }
            if self.clients.len() >= max {
                if self.oldest_old_enough(now).is_none() {
                    self.ban(m, now);
                } else if self.waiting.len() < MAX_WAITING {
                    self.waiting.push((m, now));
                }
                return;
            }
            self.admit(m, now);
        }
        fn confirm(&mut self, m: MacAddr, now: Instant, max: usize) {
            if !self.waits(m) {
                return;
            }
            if self.clients.len() >= max {
                match self.oldest_old_enough(now) {
                    None => {
                        self.waiting.retain(|&(w, _)| w != m);
                        self.ban(m, now);
                        return;
                    }
                    Some(_)
                        if self
                            .last_eviction
                            .is_some_and(|t| now.saturating_since(t) < EVICT_INTERVAL) =>
                    {
                        return;
                    }
                    Some(victim) => {
                        self.last_eviction = Some(now);
                        self.clients.retain(|&(c, _)| c != victim);
                        self.ban(victim, now);
                    }
                }
            }
            self.admit(m, now);
        }
        fn admit(&mut self, m: MacAddr, now: Instant) {
            self.waiting.retain(|&(w, _)| w != m);
            let back = self
                .departed
                .iter()
                .find(|&&(d, t)| d == m && now.saturating_since(t) < SESSION)
                .map(|&(_, t)| t);
            self.departed.retain(|&(d, _)| d != m);
            self.clients.push((m, back.unwrap_or(now)));
        }
        fn leave(&mut self, m: MacAddr) {
            self.waiting.retain(|&(w, _)| w != m);
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
            self.waiting
                .retain(|&(_, t)| now.saturating_since(t) < WAIT_HOLD);
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
                    Op::Confirm(n) => { s.confirm(mac(n), now, ev, &mut Vec::new()); m.confirm(mac(n), now, usize::from(max)); }
                    Op::Leave(n) => { s.leave(mac(n), now, ev); m.leave(mac(n)); }
                    Op::Tick(secs) => {
                        now = now + Duration::from_secs(u64::from(secs));
                        s.tick(now, ev);
                        m.tick(now);
                    }
                    Op::Close => {
                        // Every client goes, oldest first, then every waiting newcomer is
                        // turned away; nobody is banned, and the session clocks are gone.
                        let mut clients = m.clients.clone();
                        clients.sort_by_key(|&(c, t)| (t, c));
                        let mut waiting: Vec<_> = m.waiting.iter().map(|&(w, _)| w).collect();
                        waiting.sort();
                        let want: Vec<Action> = clients
                            .iter()
                            .map(|&(c, _)| Action::Disconnect(c))
                            .chain(waiting.into_iter().map(Action::TurnAway))
                            .collect();
                        prop_assert_eq!(s.close(now, ev), want);
                        m.clients.clear();
                        m.waiting.clear();
                        m.departed.clear();
                    }
                }
                let mut want = m.clients.clone();
                want.sort_by_key(|&(c, t)| (t, c));
                prop_assert_eq!(s.clients(), want);
                prop_assert!(s.clients().len() <= usize::from(max));
                let got: HashSet<_> = s.bans(now).into_iter().map(|(b, _)| b).collect();
                let want: HashSet<_> = m.bans.iter().filter(|&&(_, u)| u > now).map(|&(b, _)| b).collect();
                prop_assert_eq!(got, want);
                // Nobody is both admitted and banned, or admitted and waiting.
                for (c, _) in s.clients() {
                    prop_assert!(!s.is_banned(c, now));
                    prop_assert!(!s.is_waiting(c));
                }
                let mut waiting: Vec<_> = (0..12).map(mac).filter(|&w| s.is_waiting(w)).collect();
                let mut want: Vec<_> = m.waiting.iter().map(|&(w, _)| w).collect();
                waiting.sort();
                want.sort();
                prop_assert_eq!(waiting, want);
            }
        }
    }
}
