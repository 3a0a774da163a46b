//! The pure core: state machines over an injected clock. Nothing in here touches a socket;
//! the edges feed it events with `now` and carry out what it returns.

pub mod allow;
pub mod events;
pub mod leases;
pub mod ports;
pub mod ratelimit;
pub mod stations;
pub mod time;
pub mod window;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use std::time::Duration;

use crate::config::Config;
use allow::{AllowList, Guard, LearnChange, LearnKey, Learned, TtlPolicy};
use events::{DhcpClaim, DnsRefusal, Event};
use leases::{Binding, DhcpReply, DhcpRequest, LeaseChange, Leases};
use ports::Ports;
use ratelimit::{DnsLimits, Repeats};
use stations::{Action, Policy, Stations};
use time::Instant;
use window::{LocalTime, Window};

fn station_policy_session(s: &Stations) -> Duration {
    s.policy().session
}

/// A change to one of the kernel's sets, applied in one batch before anything that depends
/// on it (a DHCP ACK, a DNS answer) leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetChange {
    Lease(LeaseChange),
    Learn(LearnChange),
    /// The `clients` set: who is admitted, until its session ends (the kernel closes the
    /// door at that time even if the daemon is gone).
    Admit {
        mac: MacAddr,
        session_left: Duration,
        since: Instant,
    },
    Dismiss {
        mac: MacAddr,
    },
    /// The `banned` set (cooldown).
    Ban {
        mac: MacAddr,
        timeout: Duration,
    },
    Unban {
        mac: MacAddr,
    },
}

/// What the radio (hostapd) must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RadioCommand {
    Deauthenticate(MacAddr),
    DenyAdd(MacAddr),
    DenyDel(MacAddr),
    /// The window opened: the SSID goes up.
    Enable,
    /// The window closed: the SSID goes down.
    Disable,
}

/// What a decision requires of the edges: set changes (one batch, first), then radio
/// commands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub changes: Vec<SetChange>,
    pub radio: Vec<RadioCommand>,
}

/// What the core decided about a DHCP message: carry out `effects`, then send `reply`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhcpDecision {
    pub effects: Effects,
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

/// A client as the kernel's `clients` set holds it, read back after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    pub mac: MacAddr,
    pub since: Instant,
}

/// The state the kernel's sets hold, with the time each element has left: what a rebuilt
/// table carries over, and what a restarted daemon reads back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub clients: Vec<(ClientRecord, Duration)>,
    pub bans: Vec<(MacAddr, Duration)>,
    pub leases: Vec<Binding>,
    pub learned: Vec<(LearnKey, Duration, Arc<str>)>,
}

/// Every decision the provisioner takes, driven by inputs stamped with `now`. The daemon
/// applies what comes back and logs the events drained from [`Core::drain_events`].
#[derive(Debug, Clone)]
pub struct Core {
    router: Ipv4Addr,
    /// Stations come from hostapd; without a radio, a station is whoever asks for DHCP.
    radio: bool,
    leases: Leases,
    stations: Stations,
    window: Window,
    /// Unknown until the first [`Core::handle_timeout`], which then says Enable or Disable.
    window_open: Option<bool>,
    allow: AllowList,
    guard: Guard,
    ttl: TtlPolicy,
    learned: Learned,
    limits: DnsLimits,
    refusals: Repeats,
    /// New MACs per bridge port (without a radio).
    ports: Ports,
    /// Spoofing reports, once per sender and claim a minute.
    spoofs: Repeats,
    events: Vec<Event>,
}

/// Who sent a DHCP message, as the frame it came in says (the DHCP edge reads it from the
/// packet socket: the message itself can claim anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpSender {
    /// The frame's source MAC.
    pub frame: MacAddr,
    /// The interface (bridge port) it came in on.
    pub port: u32,
    /// The client identifier option, when it is a MAC (hardware type 1). Other forms
    /// (RFC 4361 DUIDs) say nothing checkable and are left alone.
    pub client_id: Option<MacAddr>,
}

fn station_policy(cfg: &Config) -> Policy {
    Policy {
        max_clients: cfg.limits.max_clients,
        min_age: cfg.limits.min_age,
        session: cfg.limits.session,
        cooldown: cfg.limits.cooldown,
        evict_interval: cfg.limits.evict_interval,
    }
}

impl Core {
    pub fn new(cfg: &Config) -> Self {
        Core {
            router: cfg.network.router,
            radio: cfg.radio.is_some(),
            leases: Leases::new(cfg.dhcp.pool_start, cfg.dhcp.pool_size, cfg.dhcp.lease_time),
            stations: Stations::new(station_policy(cfg)),
            window: Window::new(&cfg.window),
            window_open: None,
            allow: AllowList::new(&cfg.allow),
            guard: Guard::new(cfg, &[]),
            ttl: TtlPolicy::from_config(cfg),
            learned: Learned::default(),
            limits: DnsLimits::new(cfg.dns.client_qps, cfg.dns.total_qps),
            refusals: Repeats::new(|mac, count| Event::DnsRefusalsSuppressed { mac, count }),
            ports: Ports::default(),
            spoofs: Repeats::new(|mac, count| Event::SpoofingSuppressed { mac, count }),
            events: Vec::new(),
        }
    }

    /// The router's other addresses (WAN, LAN): never learned from an answer.
    pub fn set_router_addresses(&mut self, cfg: &Config, addrs: &[Ipv4Addr]) {
        self.guard = Guard::new(cfg, addrs);
    }

    /// Takes over what a previous run left in the kernel: admitted clients with their
    /// original admission time (a restart does not reset anyone's session clock), bans,
    /// bindings and learned addresses. What no longer fits (outside the pool, duplicates,
    /// no longer granted) is dropped; since the daemon rebuilds the table from the core's
    /// state, it simply does not come back. Returns how many clients were kept.
    pub fn restore(&mut self, kernel: &Snapshot, now: Instant) -> usize {
        for &(mac, left) in &kernel.bans {
            self.stations.restore_ban(mac, now + left);
        }
        for (c, _) in &kernel.clients {
            if !self.stations.is_banned(c.mac, now) {
                self.stations.restore_client(c.mac, c.since);
                self.events.push(Event::ClientRestored {
                    mac: c.mac,
                    age: now.saturating_since(c.since).as_secs(),
                });
            }
        }
        for &Binding { mac, ip, remaining } in &kernel.leases {
            if self.stations.is_admitted(mac) && self.leases.restore(mac, ip, now + remaining, now)
            {
                self.events.push(Event::LeaseRestored { mac, ip });
            } else {
                self.events.push(Event::LeaseRevoked { mac, ip });
            }
        }
        for (key, remaining, name) in &kernel.learned {
            if self.leases.is_bound(key.mac, now) {
                self.learned.restore(*key, name.clone(), now + *remaining);
            }
        }
        // Whatever the allow-list no longer grants does not come back either.
        self.learned.revoke(&self.allow, &mut Vec::new());
        self.stations.clients().len()
    }

    /// Carries out the stations' decisions: a disconnected station loses its binding,
    /// what it learned and its place in `clients`; a ban goes to the kernel and hostapd.
    fn apply(&mut self, actions: Vec<Action>, now: Instant, fx: &mut Effects) {
        for a in actions {
            match a {
                Action::Disconnect(mac) => {
                    if self.radio {
                        fx.radio.push(RadioCommand::Deauthenticate(mac));
                    }
                    if let Some(unbind) = self.leases.revoke(mac, now) {
                        fx.changes.push(SetChange::Lease(unbind));
                    }
                    let mut learn = Vec::new();
                    self.learned.forget_client(mac, &mut learn);
                    fx.changes.extend(learn.into_iter().map(SetChange::Learn));
                    fx.changes.push(SetChange::Dismiss { mac });
                }
                Action::TurnAway(mac) => {
                    if self.radio {
                        fx.radio.push(RadioCommand::Deauthenticate(mac));
                    }
                }
                Action::Ban { mac, timeout } => {
                    fx.changes.push(SetChange::Ban { mac, timeout });
                    if self.radio {
                        fx.radio.push(RadioCommand::DenyAdd(mac));
                    }
                }
                Action::Unban(mac) => {
                    fx.changes.push(SetChange::Unban { mac });
                    if self.radio {
                        fx.radio.push(RadioCommand::DenyDel(mac));
                    }
                }
            }
        }
    }

    /// The `clients` element for a client just admitted.
    fn admit(&mut self, mac: MacAddr, now: Instant, fx: &mut Effects) {
        if let Some(since) = self.stations.admitted_at(mac) {
            let session_left =
                (since + station_policy_session(&self.stations)).saturating_since(now);
            fx.changes.push(SetChange::Admit {
                mac,
                session_left,
                since,
            });
        }
    }

    /// A station associated (hostapd), or, without a radio, asked for DHCP.
    pub fn station_joined(&mut self, mac: MacAddr, now: Instant, fx: &mut Effects) {
        self.station_joined_on(mac, None, now, fx);
    }

    fn station_joined_on(
        &mut self,
        mac: MacAddr,
        port: Option<u32>,
        now: Instant,
        fx: &mut Effects,
    ) {
        let was = self.stations.is_admitted(mac);
        let open = self.window_open.unwrap_or(false);
        let actions = self
            .stations
            .join_on(mac, port, open, now, &mut self.events);
        self.apply(actions, now, fx);
        if !was && self.stations.is_admitted(mac) {
            self.admit(mac, now, fx);
        }
    }

    /// A station left on its own.
    pub fn station_left(&mut self, mac: MacAddr, now: Instant, fx: &mut Effects) {
        let actions = self.stations.leave(mac, now, &mut self.events);
        self.apply(actions, now, fx);
    }

    /// After (re)connecting to hostapd: its station table is the truth. Stations we do
    /// not know joined; clients it does not have left.
    pub fn reconcile_stations(&mut self, present: &[MacAddr], now: Instant, fx: &mut Effects) {
        for (mac, _) in self.stations.clients() {
            if !present.contains(&mac) {
                self.station_left(mac, now, fx);
            }
        }
        for &mac in present {
            self.station_joined(mac, now, fx);
        }
    }

    /// A DHCP message from `from`. Only a message that speaks for the MAC it came from is
    /// served: one whose `chaddr` (or MAC client identifier) names another is spoofing (a
    /// RELEASE or DECLINE for someone else would end their binding) and changes nothing.
    pub fn handle_dhcp(
        &mut self,
        req: DhcpRequest,
        from: DhcpSender,
        now: Instant,
    ) -> DhcpDecision {
        let mac = req.mac();
        let claim = if mac != from.frame {
            Some(DhcpClaim::Chaddr(mac))
        } else {
            from.client_id
                .filter(|&id| id != mac)
                .map(DhcpClaim::ClientId)
        };
        if let Some(claim) = claim {
            if self.spoofs.report(
                from.frame,
                (req.name(), mac, from.client_id),
                now,
                &mut self.events,
            ) {
                self.events.push(Event::DhcpSpoofed {
                    mac: from.frame,
                    claim,
                    msg: req.name(),
                    ip: req.ip(),
                    port: from.port,
                });
            }
            return DhcpDecision::default();
        }
        if matches!(req, DhcpRequest::Inform { .. }) {
            return DhcpDecision::default();
        }
        let mut fx = Effects::default();
        if !self.stations.is_admitted(mac) && !self.stations.is_waiting(mac) {
            // Without a radio the first DHCP message is the join; with one, a station that
            // hostapd did not report (or that was turned away) gets no address.
            if self.radio
                || matches!(
                    req,
                    DhcpRequest::Release { .. } | DhcpRequest::Decline { .. }
                )
                || !self.ports.newcomer(from.port, mac, now, &mut self.events)
            {
                return DhcpDecision::default();
            }
            self.station_joined_on(mac, Some(from.port), now, &mut fx);
        }
        if self.stations.is_waiting(mac) {
            return self.dhcp_while_waiting(req, now, fx);
        }
        if !self.stations.is_admitted(mac) {
            return DhcpDecision {
                effects: fx,
                reply: None,
            };
        }
        self.serve_dhcp(req, now, fx)
    }

    /// An admitted client's DHCP.
    fn serve_dhcp(&mut self, req: DhcpRequest, now: Instant, mut fx: Effects) -> DhcpDecision {
        let mac = req.mac();
        let d = self.leases.handle(req, self.router, now, &mut self.events);
        fx.changes
            .extend(d.changes.iter().map(|c| SetChange::Lease(*c)));
        if !self.radio
            && matches!(req, DhcpRequest::Release { .. })
            && !self.leases.is_bound(mac, now)
        {
            self.station_left(mac, now, &mut fx);
        }
        DhcpDecision {
            effects: fx,
            reply: d.reply,
        }
    }

    /// A newcomer waiting for a spot may DISCOVER (it is offered one of the spare
    /// addresses) and then REQUEST that offer: completing DHCP is what lets it take a spot,
    /// evicting someone if it must. Anything else gets nothing (a REQUEST that selects no
    /// offer of ours a NAK, so that it starts over with a DISCOVER).
    fn dhcp_while_waiting(
        &mut self,
        req: DhcpRequest,
        now: Instant,
        mut fx: Effects,
    ) -> DhcpDecision {
        let mac = req.mac();
        match req {
            DhcpRequest::Discover { .. } => {
                let d = self.leases.handle(req, self.router, now, &mut self.events);
                DhcpDecision {
                    effects: fx,
                    reply: d.reply,
                }
            }
            DhcpRequest::Request {
                server_id: Some(id),
                requested: Some(ip),
                ..
            } if id == self.router && self.leases.offered(mac, ip, now) => {
                let mut actions = Vec::new();
                let admitted = self
                    .stations
                    .confirm(mac, now, &mut self.events, &mut actions);
                self.apply(actions, now, &mut fx);
                if !admitted {
                    return DhcpDecision {
                        effects: fx,
                        reply: None,
                    };
                }
                self.admit(mac, now, &mut fx);
                self.serve_dhcp(req, now, fx)
            }
            DhcpRequest::Request { .. } => DhcpDecision {
                effects: fx,
                reply: Some(DhcpReply::Nak),
            },
            _ => DhcpDecision {
                effects: fx,
                reply: None,
            },
        }
    }

    /// ARP that the kernel refused (its sender is bound by no lease) and logged; `frame`:
    /// the frame's source MAC. Claiming the router's address, another client's, or any
    /// address from a MAC other than the frame's is spoofing; a client still announcing the
    /// address it had before its lease ended is not worth an alarm.
    pub fn arp_refused(
        &mut self,
        frame: Option<MacAddr>,
        sender: MacAddr,
        ip: Ipv4Addr,
        now: Instant,
    ) {
        let mac = frame.unwrap_or(sender);
        let router = ip == self.router || self.guard.is_router(ip);
        let owner = self.leases.mac_of(ip, now);
        let stale =
            !router && owner.is_none() && mac == sender && self.leases.previous_ip(mac) == Some(ip);
        if stale
            || !self
                .spoofs
                .report(mac, ("arp", sender, ip), now, &mut self.events)
        {
            return;
        }
        self.events.push(Event::ArpSpoofed {
            mac,
            sender,
            ip,
            owner,
            router,
        });
    }

    /// Opens an on-demand window (`duration` clamped to 5-60 minutes, default from the
    /// config); returns when it closes.
    pub fn open_window(
        &mut self,
        duration: Option<Duration>,
        now: Instant,
        local: LocalTime,
        fx: &mut Effects,
    ) -> Instant {
        let until = self.window.open(duration, now);
        self.window_transitions(now, local, fx);
        until
    }

    /// An on-demand window a previous run opened: it stays open (call before the first
    /// [`Core::handle_timeout`], so that a restart does not disconnect anyone).
    pub fn restore_window(&mut self, until: Instant, now: Instant) {
        self.window.restore(until, now);
    }

    pub fn close_window(&mut self, now: Instant, local: LocalTime, fx: &mut Effects) {
        self.window.close();
        self.window_transitions(now, local, fx);
    }

    /// Whether the window is open, as of the last evaluation.
    pub fn window_is_open(&self) -> bool {
        self.window_open.unwrap_or(false)
    }

    pub fn window_until(&self, now: Instant) -> Option<Instant> {
        self.window.open_until(now)
    }

    fn window_transitions(&mut self, now: Instant, local: LocalTime, fx: &mut Effects) {
        let open = self.window.is_open(now, local);
        if self.window_open == Some(open) {
            return;
        }
        let first = self.window_open.is_none();
        self.window_open = Some(open);
        if open {
            fx.radio.push(RadioCommand::Enable);
            self.events.push(Event::WindowOpened {
                secs: self
                    .window
                    .open_until(now)
                    .map(|u| u.saturating_since(now).as_secs()),
            });
        } else {
            let actions = self.stations.close(now, &mut self.events);
            self.apply(actions, now, fx);
            fx.radio.push(RadioCommand::Disable);
            if !first {
                self.events.push(Event::WindowClosed);
            }
        }
    }

    /// Called at (or after) [`Core::next_deadline`], and once at start.
    pub fn handle_timeout(&mut self, now: Instant, local: LocalTime, fx: &mut Effects) {
        self.window_transitions(now, local, fx);
        let actions = self.stations.tick(now, &mut self.events);
        self.apply(actions, now, fx);
        let ended = self.leases.expire(now, &mut self.events);
        fx.changes
            .extend(ended.iter().map(|c| SetChange::Lease(*c)));
        for c in &ended {
            if let LeaseChange::Unbind { mac, .. } = *c {
                // Without a radio, a lease that runs out is the station leaving.
                if !self.radio {
                    self.station_left(mac, now, fx);
                } else {
                    let mut learn = Vec::new();
                    self.learned.forget_client(mac, &mut learn);
                    fx.changes.extend(learn.into_iter().map(SetChange::Learn));
                }
            }
        }
        // The kernel times learned elements out by itself; this only forgets them.
        self.learned.expire(now);
        self.limits.forget_idle(now);
        self.refusals.flush(now, &mut self.events);
        self.spoofs.flush(now, &mut self.events);
        self.ports.expire(now);
    }

    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        [
            self.leases.next_deadline(),
            self.learned.next_deadline(),
            self.refusals.next_deadline(),
            self.spoofs.next_deadline(),
            self.stations.next_deadline(),
            self.window.next_deadline(now),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Adopts a new config. Bindings it ends (outside a smaller or moved pool) are revoked,
    /// and so is every learned address whose name the new allow-list no longer grants; both
    /// leave the kernel when the table is rebuilt from the core's state. The next
    /// [`Core::handle_timeout`] applies the new window and session limits.
    pub fn reconfigure(&mut self, cfg: &Config, now: Instant) {
        self.router = cfg.network.router;
        self.radio = cfg.radio.is_some();
        let ended = self.leases.reconfigure(
            cfg.dhcp.pool_start,
            cfg.dhcp.pool_size,
            cfg.dhcp.lease_time,
            now,
        );
        for change in &ended {
            if let LeaseChange::Unbind { mac, ip } = *change {
                self.events.push(Event::LeaseRevoked { mac, ip });
                self.learned.forget_client(mac, &mut Vec::new());
            }
        }
        self.stations.set_policy(station_policy(cfg));
        self.window.reconfigure(&cfg.window);
        self.allow = AllowList::new(&cfg.allow);
        self.guard = Guard::new(cfg, &[]);
        self.ttl = TtlPolicy::from_config(cfg);
        self.limits = DnsLimits::new(cfg.dns.client_qps, cfg.dns.total_qps);
        self.learned.revoke(&self.allow, &mut Vec::new());
    }

    /// Everything the kernel's sets should hold now, to carry into a rebuilt table.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let session = station_policy_session(&self.stations);
        Snapshot {
            clients: self
                .stations
                .clients()
                .into_iter()
                .map(|(mac, since)| {
                    (
                        ClientRecord { mac, since },
                        (since + session).saturating_since(now),
                    )
                })
                .collect(),
            bans: self.stations.bans(now),
            leases: self
                .leases
                .bound(now)
                .map(|l| Binding {
                    mac: l.mac,
                    ip: l.ip,
                    remaining: l.expires.saturating_since(now),
                })
                .collect(),
            learned: self.learned.elements(now).collect(),
        }
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
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
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

    const NOON: LocalTime = LocalTime {
        weekday: 0,
        minute: 720,
    };

    fn cfg(extra: &str) -> Config {
        Config::parse(
            "t",
            &format!(
                "config network\n option interface p\n option wan w\nconfig dns\n list upstream 1.1.1.1\nconfig allow a\n list domain 'ok.example'\n{extra}"
            ),
            false,
        )
        .unwrap()
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    /// A DHCP message sent by the MAC it names, on port 1.
    fn dhcp(core: &mut Core, req: DhcpRequest, now: Instant) -> DhcpDecision {
        let from = DhcpSender {
            frame: req.mac(),
            port: 1,
            client_id: None,
        };
        core.handle_dhcp(req, from, now)
    }

    fn t(s: u64) -> Instant {
        Instant::from_millis(1_000_000 + s * 1000)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A core whose window is open (always), started.
    fn started(extra: &str) -> Core {
        let mut core = Core::new(&cfg(&format!(
            "config window\n option mode always\n{extra}"
        )));
        core.handle_timeout(t(0), NOON, &mut Effects::default());
        core.drain_events().for_each(drop);
        core
    }

    /// DISCOVER and REQUEST for `m` at `now`: the address it was given.
    fn lease(core: &mut Core, m: MacAddr, now: Instant) -> Ipv4Addr {
        let d = dhcp(
            core,
            DhcpRequest::Discover {
                mac: m,
                requested: None,
            },
            now,
        );
        let Some(DhcpReply::Offer { ip, .. }) = d.reply else {
            panic!("no offer for {m}: {d:?}")
        };
        let request = DhcpRequest::Request {
            mac: m,
            server_id: Some(core.router),
            requested: Some(ip),
            ciaddr: None,
        };
        let d = dhcp(core, request, now);
        assert!(matches!(d.reply, Some(DhcpReply::Ack { .. })), "{d:?}");
        ip
    }

    #[test]
    fn a_radio_station_is_admitted_into_the_clients_set_and_evicted_with_everything() {
        let mut core = started(
            "config radio\n option hostapd external\nconfig limits\n option max_clients 1\n",
        );
        let mut fx = Effects::default();
        core.station_joined(mac(1), t(0), &mut fx);
        assert_eq!(
            fx.changes,
            [SetChange::Admit {
                mac: mac(1),
                session_left: secs(900),
                since: t(0)
            }]
        );
        // It gets an address.
        let ip = lease(&mut core, mac(1), t(1));
        // A station hostapd did not report gets nothing from DHCP.
        let d = dhcp(
            &mut core,
            DhcpRequest::Discover {
                mac: mac(9),
                requested: None,
            },
            t(1),
        );
        assert_eq!(d, DhcpDecision::default());
        // A newcomer when full, the first old enough: associating alone evicts nobody, the
        // newcomer waits and may DISCOVER (a spare address is offered)...
        let mut fx = Effects::default();
        core.station_joined(mac(2), t(200), &mut fx);
        assert_eq!(fx, Effects::default());
        let d = dhcp(
            &mut core,
            DhcpRequest::Discover {
                mac: mac(2),
                requested: None,
            },
            t(200),
        );
        let Some(DhcpReply::Offer { ip: offered, .. }) = d.reply else {
            panic!("no offer for the waiting newcomer: {d:?}")
        };
        assert_ne!(offered, ip);
        assert_eq!(d.effects, Effects::default());
        // ...a REQUEST for another address is refused...
        let router = core.router;
        let d = dhcp(
            &mut core,
            DhcpRequest::Request {
                mac: mac(2),
                server_id: None,
                requested: Some(ip),
                ciaddr: None,
            },
            t(200),
        );
        assert_eq!(
            (d.reply, d.effects),
            (Some(DhcpReply::Nak), Effects::default())
        );
        // ...and once it requests its offer, the first is evicted with its lease,
        // deauthenticated and banned, in the kernel and in hostapd, before the ACK.
        let d = dhcp(
            &mut core,
            DhcpRequest::Request {
                mac: mac(2),
                server_id: Some(router),
                requested: Some(offered),
                ciaddr: None,
            },
            t(200),
        );
        assert!(matches!(d.reply, Some(DhcpReply::Ack { ip, .. }) if ip == offered));
        let fx = d.effects;
        assert_eq!(
            fx.radio,
            [
                RadioCommand::Deauthenticate(mac(1)),
                RadioCommand::DenyAdd(mac(1))
            ]
        );
        assert_eq!(
            fx.changes,
            [
                SetChange::Lease(LeaseChange::Unbind { mac: mac(1), ip }),
                SetChange::Dismiss { mac: mac(1) },
                SetChange::Ban {
                    mac: mac(1),
                    timeout: secs(300)
                },
                SetChange::Admit {
                    mac: mac(2),
                    session_left: secs(900),
                    since: t(200)
                },
                SetChange::Lease(LeaseChange::Bind {
                    mac: mac(2),
                    ip: offered,
                    timeout: secs(300)
                }),
            ]
        );
        let kinds: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert!(
            kinds.contains(
                &"event=evicted mac=02:00:00:00:00:01 reason=make_room age=200".to_owned()
            ),
            "{kinds:?}"
        );
        // The ban ends: off hostapd's deny list.
        let mut fx = Effects::default();
        core.handle_timeout(t(500), NOON, &mut fx);
        assert_eq!(fx.radio, [RadioCommand::DenyDel(mac(1))]);
    }

    #[test]
    fn without_a_radio_dhcp_is_the_join_and_a_lease_ending_is_the_leave() {
        let mut core = started("config limits\n option max_clients 1\n option cooldown 0\n");
        let d = dhcp(
            &mut core,
            DhcpRequest::Discover {
                mac: mac(1),
                requested: None,
            },
            t(0),
        );
        assert!(matches!(d.reply, Some(DhcpReply::Offer { .. })));
        assert_eq!(
            d.effects.changes,
            [SetChange::Admit {
                mac: mac(1),
                session_left: secs(900),
                since: t(0)
            }]
        );
        assert!(d.effects.radio.is_empty(), "no radio, no radio commands");
        // Full and young: the second gets no offer.
        let d = dhcp(
            &mut core,
            DhcpRequest::Discover {
                mac: mac(2),
                requested: None,
            },
            t(1),
        );
        assert_eq!(d.reply, None);
        // The first one's lease runs out (it never requested): it left, the second may come.
        let router = core.router;
        dhcp(
            &mut core,
            DhcpRequest::Request {
                mac: mac(1),
                server_id: Some(router),
                requested: Some(Ipv4Addr::new(192, 168, 250, 2)),
                ciaddr: None,
            },
            t(1),
        );
        let mut fx = Effects::default();
        core.handle_timeout(t(302), NOON, &mut fx);
        assert!(
            fx.changes.contains(&SetChange::Dismiss { mac: mac(1) }),
            "{fx:?}"
        );
        let d = dhcp(
            &mut core,
            DhcpRequest::Discover {
                mac: mac(2),
                requested: None,
            },
            t(303),
        );
        assert!(matches!(d.reply, Some(DhcpReply::Offer { .. })));
    }

    #[test]
    fn the_window_brings_the_ssid_up_and_down_and_closing_disconnects() {
        let mut core = Core::new(&cfg("config radio\n option hostapd external\n"));
        let mut fx = Effects::default();
        core.handle_timeout(t(0), NOON, &mut fx);
        assert_eq!(
            fx.radio,
            [RadioCommand::Disable],
            "on demand: closed at start"
        );
        let mut fx = Effects::default();
        core.station_joined(mac(1), t(1), &mut fx);
        assert_eq!(
            fx.radio,
            [RadioCommand::Deauthenticate(mac(1))],
            "turned away while closed"
        );
        let mut fx = Effects::default();
        let until = core.open_window(None, t(10), NOON, &mut fx);
        assert_eq!(
            (until, fx.radio.as_slice()),
            (t(910), &[RadioCommand::Enable][..])
        );
        core.station_joined(mac(1), t(11), &mut Effects::default());
        assert_eq!(core.next_deadline(t(11)), Some(t(910)));
        let mut fx = Effects::default();
        core.handle_timeout(t(910), NOON, &mut fx);
        assert_eq!(
            fx.radio,
            [RadioCommand::Deauthenticate(mac(1)), RadioCommand::Disable]
        );
        assert!(fx.changes.contains(&SetChange::Dismiss { mac: mac(1) }));
        let kinds: Vec<_> = core.drain_events().map(|e| e.kind()).collect();
        assert!(kinds.ends_with(&["evicted", "window_closed"]), "{kinds:?}");
    }

    #[test]
    fn restart_keeps_session_clocks_bans_and_bindings_of_clients_only() {
        let mut core = started("config limits\n option max_clients 2\n");
        let snap = Snapshot {
            clients: vec![(
                ClientRecord {
                    mac: mac(2),
                    since: t(0),
                },
                secs(800),
            )],
            bans: vec![(mac(5), secs(60))],
            leases: vec![
                Binding {
                    mac: mac(2),
                    ip: Ipv4Addr::new(192, 168, 250, 2),
                    remaining: secs(100),
                },
                // Not a client any more: its binding does not come back.
                Binding {
                    mac: mac(3),
                    ip: Ipv4Addr::new(192, 168, 250, 3),
                    remaining: secs(100),
                },
                // Outside the pool.
                Binding {
                    mac: mac(9),
                    ip: Ipv4Addr::new(192, 168, 250, 9),
                    remaining: secs(100),
                },
            ],
            learned: vec![],
        };
        assert_eq!(core.restore(&snap, t(100)), 1);
        let after = core.snapshot(t(100));
        assert_eq!(
            after.clients,
            [(
                ClientRecord {
                    mac: mac(2),
                    since: t(0)
                },
                secs(800)
            )]
        );
        assert_eq!(after.bans, [(mac(5), secs(60))]);
        assert_eq!(after.leases.len(), 1);
        // Restored bans still hold.
        let d = dhcp(
            &mut core,
            DhcpRequest::Discover {
                mac: mac(5),
                requested: None,
            },
            t(120),
        );
        assert_eq!(d.reply, None);
        // The session still ends 900 s after the first admission.
        let mut fx = Effects::default();
        core.handle_timeout(t(900), NOON, &mut fx);
        assert!(fx.changes.contains(&SetChange::Dismiss { mac: mac(2) }));
    }

    #[test]
    fn a_repeated_refusal_is_reported_once_a_minute_and_summarised() {
        let mut core = started("");
        let ip = lease(&mut core, mac(1), t(0));
        core.drain_events().for_each(drop);
        for _ in 0..5 {
            assert_eq!(
                core.dns_question(ip, "bad.example", QTYPE_A, t(1)),
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
        core.dns_question(ip, "bad.example", QTYPE_A, t(61));
        let events: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert_eq!(
            events,
            [
                "event=dns_refused_more mac=02:00:00:00:00:01 count=4 threat=violation",
                "event=dns_refused mac=02:00:00:00:00:01 name=bad.example type=A reason=not_allowed threat=violation"
            ]
        );
        assert_eq!(
            core.dns_question(ip, "ok.example", QTYPE_A, t(62)),
            DnsVerdict::Resolve { mac: mac(1) }
        );
        assert_eq!(
            core.dns_question(ip, "ok.example", QTYPE_AAAA, t(62)),
            DnsVerdict::NoData
        );
    }

    #[test]
    fn dhcp_that_speaks_for_another_mac_is_spoofing_and_changes_nothing() {
        let mut core = started("");
        let victim = lease(&mut core, mac(2), t(0));
        let _ = lease(&mut core, mac(1), t(0));
        core.drain_events().for_each(drop);
        let forged = |core: &mut Core, req: DhcpRequest, client_id| {
            core.handle_dhcp(
                req,
                DhcpSender {
                    frame: mac(1),
                    port: 3,
                    client_id,
                },
                t(1),
            )
        };
        // A RELEASE, DECLINE, REQUEST and INFORM for the victim, sent from the attacker's
        // own MAC: nothing reaches the kernel, nothing is answered.
        for req in [
            DhcpRequest::Release {
                mac: mac(2),
                ciaddr: victim,
            },
            DhcpRequest::Decline {
                mac: mac(2),
                requested: victim,
            },
            DhcpRequest::Request {
                mac: mac(2),
                server_id: None,
                requested: None,
                ciaddr: Some(victim),
            },
            DhcpRequest::Inform { mac: mac(2) },
        ] {
            assert_eq!(forged(&mut core, req, None), DhcpDecision::default());
        }
        // Its own chaddr, but the victim's client identifier: the same.
        let d = forged(
            &mut core,
            DhcpRequest::Release {
                mac: mac(1),
                ciaddr: Ipv4Addr::new(192, 168, 250, 3),
            },
            Some(mac(2)),
        );
        assert_eq!(d, DhcpDecision::default());
        let events: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert_eq!(
            events,
            [
                format!("event=dhcp_spoofed mac=02:00:00:00:00:01 chaddr=02:00:00:00:00:02 msg=release ip={victim} port=3 threat=spoofing"),
                format!("event=dhcp_spoofed mac=02:00:00:00:00:01 chaddr=02:00:00:00:00:02 msg=decline ip={victim} port=3 threat=spoofing"),
                format!("event=dhcp_spoofed mac=02:00:00:00:00:01 chaddr=02:00:00:00:00:02 msg=request ip={victim} port=3 threat=spoofing"),
                "event=dhcp_spoofed mac=02:00:00:00:00:01 chaddr=02:00:00:00:00:02 msg=inform port=3 threat=spoofing".to_owned(),
                "event=dhcp_spoofed mac=02:00:00:00:00:01 client_id=02:00:00:00:00:02 msg=release ip=192.168.250.3 port=3 threat=spoofing".to_owned(),
            ]
        );
        assert_eq!(core.leases.mac_of(victim, t(2)), Some(mac(2)));
        // The victim's own release ends its binding.
        let d = dhcp(
            &mut core,
            DhcpRequest::Release {
                mac: mac(2),
                ciaddr: victim,
            },
            t(2),
        );
        assert!(
            d.effects
                .changes
                .contains(&SetChange::Lease(LeaseChange::Unbind {
                    mac: mac(2),
                    ip: victim
                }))
        );
    }

    #[test]
    fn refused_arp_is_graded_by_what_it_claims() {
        let mut core = started("");
        let a = lease(&mut core, mac(1), t(0));
        let b = lease(&mut core, mac(2), t(0));
        core.drain_events().for_each(drop);
        // Claiming another client's address, the router's, and an address nobody has.
        core.arp_refused(Some(mac(1)), mac(1), b, t(1));
        core.arp_refused(Some(mac(1)), mac(1), core.router, t(1));
        core.arp_refused(Some(mac(1)), mac(1), Ipv4Addr::new(192, 168, 250, 99), t(1));
        // A forged sender MAC for its own address.
        core.arp_refused(Some(mac(1)), mac(7), a, t(1));
        // The same claim again within the minute is not reported again.
        core.arp_refused(Some(mac(1)), mac(1), b, t(2));
        let events: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert_eq!(
            events,
            [
                format!("event=arp_spoofed mac=02:00:00:00:00:01 sender=02:00:00:00:00:01 ip={b} owner=02:00:00:00:00:02 threat=spoofing"),
                "event=arp_spoofed mac=02:00:00:00:00:01 sender=02:00:00:00:00:01 ip=192.168.250.1 owner=router threat=spoofing".to_owned(),
                "event=arp_spoofed mac=02:00:00:00:00:01 sender=02:00:00:00:00:01 ip=192.168.250.99 owner=none threat=spoofing".to_owned(),
                format!("event=arp_spoofed mac=02:00:00:00:00:01 sender=02:00:00:00:00:07 ip={a} owner=02:00:00:00:00:01 threat=spoofing"),
            ]
        );
        // A client whose lease ended still announcing its old address: no alarm.
        dhcp(
            &mut core,
            DhcpRequest::Release {
                mac: mac(2),
                ciaddr: b,
            },
            t(3),
        );
        core.drain_events().for_each(drop);
        core.arp_refused(Some(mac(2)), mac(2), b, t(4));
        assert_eq!(core.drain_events().count(), 0);
        // After the minute, the summary of what was not reported one by one.
        let mut fx = Effects::default();
        core.handle_timeout(t(70), NOON, &mut fx);
        let events: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert!(
            events.contains(
                &"event=spoofing_more mac=02:00:00:00:00:01 count=1 threat=spoofing".to_owned()
            ),
            "{events:?}"
        );
    }

    #[test]
    fn without_a_radio_a_burst_of_discovers_from_one_port_evicts_nobody() {
        let mut core = started(
            "config limits
 option max_clients 2
 option min_age 10s
",
        );
        let _ = lease(&mut core, mac(1), t(0));
        let _ = lease(&mut core, mac(2), t(0));
        core.drain_events().for_each(drop);
        // Sixteen DISCOVERs with random MACs from one port, both clients old enough.
        for n in 100..116 {
            let d = dhcp(
                &mut core,
                DhcpRequest::Discover {
                    mac: mac(n),
                    requested: None,
                },
                t(60),
            );
            assert!(
                d.effects.changes.is_empty() && d.effects.radio.is_empty(),
                "{d:?}"
            );
        }
        let kinds: Vec<_> = core.drain_events().map(|e| e.to_string()).collect();
        assert!(!kinds.iter().any(|k| k.contains("evicted")), "{kinds:?}");
        assert!(
            kinds.contains(
                &"event=mac_flood mac=02:00:00:00:00:68 port=1 macs=5 threat=abuse".to_owned()
            ),
            "{kinds:?}"
        );
        assert_eq!(core.stations.clients().len(), 2);
        // A real newcomer on another port completes DHCP: it evicts the oldest.
        let from = DhcpSender {
            frame: mac(50),
            port: 2,
            client_id: None,
        };
        let d = core.handle_dhcp(
            DhcpRequest::Discover {
                mac: mac(50),
                requested: None,
            },
            from,
            t(61),
        );
        let Some(DhcpReply::Offer { ip, .. }) = d.reply else {
            panic!("{d:?}")
        };
        let d = core.handle_dhcp(
            DhcpRequest::Request {
                mac: mac(50),
                server_id: Some(core.router),
                requested: Some(ip),
                ciaddr: None,
            },
            from,
            t(62),
        );
        assert!(matches!(d.reply, Some(DhcpReply::Ack { .. })), "{d:?}");
        assert!(
            d.effects
                .changes
                .contains(&SetChange::Dismiss { mac: mac(1) })
        );
    }

    #[test]
    fn mac_round_trip() {
        let m: MacAddr = "02:00:00:00:00:0A".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:00:00:00:0a");
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:00:01".parse::<MacAddr>().is_err());
        assert!("0g:00:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("+8:00:00:00:00:00".parse::<MacAddr>().is_err());
    }
}
