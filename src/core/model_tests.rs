//! The whole provisioner against a fake kernel: random joins, leaves, DHCP exchanges, DNS
//! answers, ticks, reloads, window changes and refused batches. Every batch is replayed
//! into the fake kernel as the firewall applies it (the last change to an element wins, a
//! refused batch changes nothing, a rebuild is the provisioner's snapshot), elements time
//! out on the same clock, and after every step:
//!
//! * the fake kernel holds exactly what the provisioner's snapshot says, to the millisecond;
//! * no learned element exists for a MAC without a binding, no bound MAC is unadmitted;
//! * no banned MAC is admitted, and the clients never exceed `max_clients`;
//! * a DHCP ACK only ever left for a binding the kernel holds.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::dns::{Record, RecordData};
use super::leases::{DhcpReply, DhcpRequest, LeaseChange};
use super::outbox::{DhcpTransaction, DnsOutcome};
use super::settings::Settings;
use super::time::Instant;
use super::window::LocalTime;
use super::*;
use crate::config::Config;

const NOON: LocalTime = LocalTime {
    weekday: 0,
    minute: 720,
};

/// The kernel's sets: element -> when it times out.
#[derive(Debug, Default, PartialEq, Eq)]
struct Kernel {
    clients: BTreeMap<MacAddr, Instant>,
    banned: BTreeMap<MacAddr, Instant>,
    leases: BTreeMap<(MacAddr, Ipv4Addr), Instant>,
    learned: BTreeMap<LearnKey, Instant>,
}

impl Kernel {
    fn apply(&mut self, changes: &[SetChange], now: Instant) {
        for c in changes {
            match c {
                SetChange::Lease(LeaseChange::Bind { mac, ip, timeout }) => {
                    self.leases.insert((*mac, *ip), now + *timeout);
                }
                SetChange::Lease(LeaseChange::Unbind { mac, ip }) => {
                    self.leases.remove(&(*mac, *ip));
                }
                SetChange::Learn(LearnChange::Add { key, timeout, .. }) => {
                    self.learned.insert(*key, now + *timeout);
                }
                SetChange::Learn(LearnChange::Remove { key }) => {
                    self.learned.remove(key);
                }
                SetChange::Admit {
                    mac, session_left, ..
                } => {
                    self.clients.insert(*mac, now + *session_left);
                }
                SetChange::Dismiss { mac } => {
                    self.clients.remove(mac);
                }
                SetChange::Ban { mac, timeout } => {
                    self.banned.insert(*mac, now + *timeout);
                }
                SetChange::Unban { mac } => {
                    self.banned.remove(mac);
                }
            }
        }
    }

    /// What a table rebuilt from `snap` holds (elements with no time left are not written).
    fn rebuilt(snap: &Snapshot, now: Instant) -> Kernel {
        let live = |d: &Duration| !d.is_zero();
        Kernel {
            clients: snap
                .clients
                .iter()
                .filter(|(_, d)| live(d))
                .map(|(c, d)| (c.mac, now + *d))
                .collect(),
            banned: snap
                .bans
                .iter()
                .filter(|(_, d)| live(d))
                .map(|(m, d)| (*m, now + *d))
                .collect(),
            leases: snap
                .leases
                .iter()
                .filter(|b| live(&b.remaining))
                .map(|b| ((b.mac, b.ip), now + b.remaining))
                .collect(),
            learned: snap
                .learned
                .iter()
                .filter(|(_, d, _)| live(d))
                .map(|(k, d, _)| (*k, now + *d))
                .collect(),
        }
    }

    /// Elements time out.
    fn expire(&mut self, now: Instant) {
        self.clients.retain(|_, t| *t > now);
        self.banned.retain(|_, t| *t > now);
        self.leases.retain(|_, t| *t > now);
        self.learned.retain(|_, t| *t > now);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Leave(u8),
    Discover(u8),
    /// REQUEST the address offered (or bound), selecting our offer.
    Request(u8),
    Renew(u8),
    Release(u8),
    /// The client asks an allowed name; the answer holds these addresses.
    Resolve(u8, u8),
    Tick(u16),
    Reload(u8),
    WindowOpen,
    WindowClose,
    /// The operator evicts (banning it for this many minutes if not 0), bans, unbans.
    Evict(u8, u8),
    Ban(u8, u8),
    Unban(u8),
    /// The kernel refuses the next batch.
    RefuseNext,
}

fn op() -> impl Strategy<Value = Op> {
    let m = 1..9u8;
    prop_oneof![
        3 => m.clone().prop_map(Op::Join),
        1 => m.clone().prop_map(Op::Leave),
        4 => m.clone().prop_map(Op::Discover),
        4 => m.clone().prop_map(Op::Request),
        2 => m.clone().prop_map(Op::Renew),
        1 => m.clone().prop_map(Op::Release),
        3 => (m.clone(), 0..4u8).prop_map(|(c, a)| Op::Resolve(c, a)),
        4 => (1..200u16).prop_map(Op::Tick),
        1 => (0..3u8).prop_map(Op::Reload),
        1 => Just(Op::WindowOpen),
        1 => Just(Op::WindowClose),
        1 => (m.clone(), 0..3u8).prop_map(|(c, b)| Op::Evict(c, b)),
        1 => (m.clone(), 0..3u8).prop_map(|(c, b)| Op::Ban(c, b)),
        1 => m.prop_map(Op::Unban),
        2 => Just(Op::RefuseNext),
    ]
}

fn settings(radio: bool, variant: u8) -> Settings {
    let max = [2, 3, 5][usize::from(variant % 3)];
    let allow = if variant == 1 {
        "'*.iot.example'"
    } else {
        "'ok.example'"
    };
    let text = format!(
        "config network\n option interface p\n option wan w\nconfig dns\n list upstream 1.1.1.1\n\
         config allow a\n list domain {allow}\n list port 443\n\
         config limits\n option max_clients {max}\n option min_age 30s\n option session 5m\n option cooldown 2m\n option evict_interval 10s\n\
         config dhcp\n option lease_time 2m\n\
         config window\n option mode on_demand\n{}",
        if radio {
            "config radio\n option hostapd external\n"
        } else {
            ""
        }
    );
    Settings::from(&Config::parse("model", &text, false).expect("model config"))
}

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

struct World {
    core: Provisioner,
    kernel: Kernel,
    now: Instant,
    refuse_next: bool,
    /// What each client was offered last.
    offers: BTreeMap<MacAddr, Ipv4Addr>,
    next_id: u64,
    /// Addresses whose connections the edge is ending, reported done every fourth input
    /// (the daemon's worker does it beside the loop, while inputs go on).
    ending: Vec<Ipv4Addr>,
    steps: u64,
}

impl World {
    /// Drains the outbox as the daemon does, into the fake kernel.
    fn carry_out(&mut self) -> Result<(), TestCaseError> {
        loop {
            let mut more = false;
            if let Some(b) = self.core.poll_batch() {
                more = true;
                if std::mem::take(&mut self.refuse_next) {
                    self.core.handle_batch_refused(b.id, self.now);
                } else {
                    self.kernel.apply(&b.changes, self.now);
                    self.core.handle_batch_applied(b.id);
                }
            }
            while let Some(c) = self.core.poll_command() {
                more = true;
                if let Command::EndFlows(ips) = &c {
                    self.ending.extend(ips);
                }
                if c == Command::RebuildTables {
                    self.kernel = Kernel::rebuilt(&self.core.snapshot(self.now), self.now);
                }
            }
            while let Some(d) = self.core.poll_dhcp() {
                more = true;
                match d.reply {
                    DhcpReply::Offer { ip, .. } => {
                        self.offers.insert(d.to.chaddr, ip);
                    }
                    DhcpReply::Ack { ip, .. } => {
                        // No address is bound again while its old connections are ended.
                        prop_assert!(
                            !self.ending.contains(&ip),
                            "ACK for {ip} to {} while its connections are being ended",
                            d.to.chaddr
                        );
                        // An ACK leaves only for a binding the kernel holds.
                        prop_assert!(
                            self.kernel.leases.contains_key(&(d.to.chaddr, ip)),
                            "ACK for {} {ip} without its binding in the kernel",
                            d.to.chaddr
                        );
                    }
                    DhcpReply::Nak => {}
                }
            }
            while self.core.poll_dns().is_some() {
                more = true;
            }
            while self.core.poll_event().is_some() {}
            if !more {
                return Ok(());
            }
        }
    }

    fn dhcp(&mut self, req: DhcpRequest) {
        let m = req.mac();
        let from = DhcpSender {
            frame: m,
            port: u32::from(m.0[5]),
            client_id: None,
        };
        let to = DhcpTransaction {
            xid: 1,
            flags: 0,
            chaddr: m,
            ciaddr: Ipv4Addr::UNSPECIFIED,
        };
        self.core.handle_dhcp(req, from, to, self.now);
    }

    fn step(&mut self, op: &Op, radio: bool) {
        self.steps += 1;
        if self.steps % 4 == 0 {
            let ended = std::mem::take(&mut self.ending);
            self.core.handle_flows_ended(&ended);
        }
        let router = self.core.settings().router;
        match *op {
            Op::Join(n) if radio => self.core.handle_station_joined(mac(n), self.now),
            Op::Leave(n) if radio => self.core.handle_station_left(mac(n), self.now),
            Op::Join(_) | Op::Leave(_) => {}
            Op::Discover(n) => self.dhcp(DhcpRequest::Discover {
                mac: mac(n),
                requested: None,
            }),
            Op::Request(n) => {
                if let Some(&ip) = self.offers.get(&mac(n)) {
                    self.dhcp(DhcpRequest::Request {
                        mac: mac(n),
                        server_id: Some(router),
                        requested: Some(ip),
                        ciaddr: None,
                    });
                }
            }
            Op::Renew(n) => {
                if let Some(&ip) = self.offers.get(&mac(n)) {
                    self.dhcp(DhcpRequest::Request {
                        mac: mac(n),
                        server_id: None,
                        requested: None,
                        ciaddr: Some(ip),
                    });
                }
            }
            Op::Release(n) => {
                if let Some(&ip) = self.offers.get(&mac(n)) {
                    self.dhcp(DhcpRequest::Release {
                        mac: mac(n),
                        ciaddr: ip,
                    });
                }
            }
            Op::Resolve(n, addr) => {
                let Some(ip) = self
                    .core
                    .snapshot(self.now)
                    .leases
                    .iter()
                    .find(|b| b.mac == mac(n))
                    .map(|b| b.ip)
                else {
                    return;
                };
                let name = if self.core.settings().allow[0].domains[0].to_string() == "ok.example" {
                    "ok.example"
                } else {
                    "a.iot.example"
                };
                let id = self.next_id;
                self.next_id += 1;
                self.core
                    .handle_dns_question(id, ip, name, QTYPE_A, self.now);
                // The verdict comes out at once; an allowed one gets its answer.
                while let Some(out) = self.core.poll_dns() {
                    if let DnsOutcome::Resolve { mac } = out.outcome {
                        let owner: Arc<str> = name.into();
                        let records = [Record {
                            owner: name,
                            ttl: 30,
                            data: RecordData::A(Ipv4Addr::new(11, 1, 0, 10 + addr)),
                        }];
                        self.core
                            .handle_dns_answer(id, mac, &owner, &records, 0, self.now);
                    }
                }
            }
            Op::Tick(secs) => {
                self.now = self.now + Duration::from_secs(u64::from(secs));
                self.kernel.expire(self.now);
                self.core.handle_timeout(self.now, NOON);
            }
            Op::Reload(variant) => {
                let s = settings(radio, variant);
                // As the daemon does: the tables are rebuilt for the new settings first.
                self.kernel = Kernel::rebuilt(&self.core.snapshot_under(&s, self.now), self.now);
                self.core.handle_reload(&s, self.now);
            }
            Op::WindowOpen => {
                self.core.handle_window_open(None, self.now, NOON).unwrap();
            }
            Op::WindowClose => self.core.handle_window_close(self.now, NOON).unwrap(),
            // Refused orders (not a client, not banned) change nothing: the checks hold.
            Op::Evict(m, ban) => {
                let ban = (ban > 0).then(|| Duration::from_secs(60 * u64::from(ban)));
                let _ = self.core.handle_evict(mac(m), ban, self.now);
            }
            Op::Ban(m, minutes) => {
                let d = (minutes > 0).then(|| Duration::from_secs(60 * u64::from(minutes)));
                let _ = self.core.handle_ban(mac(m), d, self.now);
            }
            Op::Unban(m) => {
                let _ = self.core.handle_unban(mac(m), self.now);
            }
            Op::RefuseNext => self.refuse_next = true,
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let snap = self.core.snapshot(self.now);
        let want = Kernel::rebuilt(&snap, self.now);
        prop_assert_eq!(
            &self.kernel,
            &want,
            "the kernel and the provisioner disagree"
        );
        let bound: Vec<MacAddr> = snap.leases.iter().map(|b| b.mac).collect();
        let admitted: Vec<MacAddr> = snap.clients.iter().map(|(c, _)| c.mac).collect();
        for (k, _, _) in &snap.learned {
            prop_assert!(
                bound.contains(&k.mac),
                "learned for {} without a binding",
                k.mac
            );
        }
        for m in &bound {
            prop_assert!(admitted.contains(m), "{m} bound but not admitted");
        }
        for (m, _) in &snap.bans {
            prop_assert!(!admitted.contains(m), "{m} banned and admitted");
        }
        let max = usize::from(self.core.settings().stations.max_clients);
        prop_assert!(
            admitted.len() <= max,
            "{} clients, at most {max}",
            admitted.len()
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_kernel_always_holds_what_the_provisioner_decided(
        radio in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut w = World {
            core: Provisioner::new(&settings(radio, 0)),
            kernel: Kernel::default(),
            now: Instant::from_millis(1_000_000),
            refuse_next: false,
            offers: BTreeMap::new(),
            next_id: 0,
            ending: Vec::new(),
            steps: 0,
        };
        w.core.handle_timeout(w.now, NOON);
        w.carry_out()?;
        for op in &ops {
            w.step(op, radio);
            w.carry_out()?;
            w.check()?;
        }
    }
}
