//! `provisionerctl clients` and the newer fields of `status`: what the daemon knows of each
//! station, with its traffic as the kernel counted it (one dump of each counting set per
//! request, never a call per client).

use std::collections::HashMap;
use std::time::SystemTime;

use tracing::{debug, info, warn};

use super::Daemon;
use crate::control::clock::{rfc3339, unix_secs_of};
use crate::control::protocol::{self, Rates, StationKind, StationRow, Status};
use crate::control::{Failure, FailureKind, Reply};
use crate::core::MacAddr;
use crate::core::profile;
use crate::core::time::Instant;
use crate::core::window::WindowMode;
use crate::firewall::counters::Traffic;

/// The counts are read every this many table checks (seconds), so that a table removed
/// from outside is restored with counts at most this old.
pub(super) const COUNTS_KEPT_EVERY: u32 = 10;
/// Table checks (a second each) between two readings of the quota elements.
pub(super) const QUOTAS_READ_EVERY: u32 = 2;
/// `clients` reports the counts of a reading at most this old (one kernel dump of each
/// counting set, 0.8 ms at 250 clients, per burst of requests rather than per request).
const TRAFFIC_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Daemon {
    pub(super) fn clients(&mut self, now: Instant) -> Reply {
        let snap = self.provisioner.stations_snapshot(now);
        let bindings: Vec<_> = snap.leases.iter().map(|l| (l.mac, l.ip)).collect();
        let traffic = match self.fw.traffic_within(&bindings, TRAFFIC_FRESH) {
            Ok(t) => t,
            Err(e) => {
                warn!("reading the clients' traffic counters: {e}");
                return Failure::new(
                    FailureKind::Refused,
                    format!("cannot read the traffic counters: {e}"),
                )
                .into();
            }
        };
        // By MAC: a client's bindings (one, normally) added up.
        let mut by_mac: HashMap<MacAddr, Traffic> = HashMap::with_capacity(traffic.len());
        for (&(mac, _), t) in &traffic {
            let sum = by_mac.entry(mac).or_default();
            sum.up.packets += t.up.packets;
            sum.up.bytes += t.up.bytes;
            sum.down.packets += t.down.packets;
            sum.down.bytes += t.down.bytes;
        }
        let wall = SystemTime::now();
        let at = |i: Instant| rfc3339(unix_secs_of(i, now, wall));
        let ips: HashMap<MacAddr, std::net::Ipv4Addr> =
            snap.leases.iter().map(|l| (l.mac, l.ip)).collect();
        let row = |mac: MacAddr, state| {
            let t = by_mac.get(&mac).copied().unwrap_or_default();
            StationRow {
                mac,
                state,
                ip: ips.get(&mac).copied(),
                admitted_at: None,
                age: None,
                session_left: None,
                bytes_up: t.up.bytes,
                bytes_down: t.down.bytes,
                packets_up: t.up.packets,
                packets_down: t.down.packets,
                ban_left: None,
                violations: self.provisioner.violations(mac),
                reason: None,
                turned_away_at: None,
                profile: profile::name_of(&self.provisioner.settings().profiles, mac)
                    .map(str::to_owned),
            }
        };
        let mut stations: Vec<StationRow> = Vec::new();
        for (c, left) in &snap.clients {
            stations.push(StationRow {
                admitted_at: Some(at(c.since)),
                age: Some(now.saturating_since(c.since).as_secs()),
                session_left: Some(left.as_secs()),
                ..row(c.mac, StationKind::Admitted)
            });
        }
        for mac in self.provisioner.waiting() {
            stations.push(row(mac, StationKind::Waiting));
        }
        for &(mac, left) in &snap.bans {
            stations.push(StationRow {
                ban_left: Some(left.as_secs()),
                ..row(mac, StationKind::Banned)
            });
        }
        // Turned away lately: said on the station's row if it has one (a banned one), else
        // a row of its own.
        for r in self.provisioner.turned_away() {
            let (reason, when) = (Some(r.reason.as_str().to_owned()), Some(at(r.at)));
            match stations.iter_mut().find(|s| s.mac == r.mac) {
                Some(s) if s.state == StationKind::Banned => {
                    s.reason = reason;
                    s.turned_away_at = when;
                }
                Some(_) => {}
                None => stations.push(StationRow {
                    reason,
                    turned_away_at: when,
                    ..row(r.mac, StationKind::TurnedAway)
                }),
            }
        }
        Reply::Clients(protocol::Clients { stations })
    }

    /// The fields `status` gained after its first version (the rest is filled by
    /// `status`). Nothing here asks the kernel.
    pub(super) fn status_more(&self, now: Instant) -> Status {
        let p = &self.provisioner;
        let wall = SystemTime::now();
        let l = &self.cfg.limits;
        let rate = |r: Option<crate::config::value::Rate>| r.map(|r| r.bytes_per_sec);
        Status {
            window: self.window_state(now),
            radio: None,
            clients: Vec::new(),
            bans: Vec::new(),
            window_mode: match p.settings().window.mode {
                WindowMode::Always => "always",
                WindowMode::OnDemand => "on_demand",
                WindowMode::Schedule => "schedule",
            }
            .to_owned(),
            window_until: p
                .window_until(now)
                .map(|u| rfc3339(unix_secs_of(u, now, wall))),
            max_clients: p.settings().stations.max_clients,
            learned: p.learned_now(now) as u64,
            rates: Rates {
                dns_qps_client: self.cfg.dns.client_qps,
                dns_qps_total: self.cfg.dns.total_qps,
                client_up: rate(l.client_rate_up),
                client_down: rate(l.client_rate_down),
                total_up: rate(l.total_rate_up),
                total_down: rate(l.total_rate_down),
            },
            uptime: now.saturating_since(self.started).as_secs(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: self.paths.config.display().to_string(),
            config_loaded_at: rfc3339(
                self.config_loaded
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            quotas: protocol::Quotas {
                client_daily: l.client_daily,
                total_daily: l.total_daily,
                network_used: l
                    .total_daily
                    .map(|_| self.quota_reading.network.map_or(0, |q| q.used)),
                network_over: p.network_over_quota(),
                resets_at: (l.client_daily.is_some()
                    || l.total_daily.is_some()
                    || self.cfg.profiles.iter().any(|p| p.client_daily.is_some()))
                .then(|| rfc3339(unix_secs_of(self.day_end, now, wall))),
            },
        }
    }

    /// Every [`QUOTAS_READ_EVERY`] table checks, the quota elements are read: who used up
    /// theirs is evicted and banned until the day ends (the kernel already drops their
    /// traffic). At the day's end, everyone gets new ones.
    /// The wall clock jumped (NTP on a router without a clock, `date`): the day now ends
    /// where the local time says, and the quota elements time out then, what they used
    /// carried (a rebuilt table, as a reload does: rare enough). Sessions and bans are on
    /// the boot clock and do not move.
    fn follow_the_wall_clock(&mut self, now: Instant) {
        let want = super::system::until_quota_reset(self.cfg.limits.quota_reset);
        let left = self.day_end.saturating_since(now);
        if !crate::core::time::day_end_moved(left, want) {
            return;
        }
        self.day_end = now + want;
        self.fw.set_day_end(self.day_end);
        if !self.fw.has_quotas() {
            return;
        }
        info!(
            "the wall clock moved: the quotas' day ends in {} min instead of {} min; what they used is kept",
            want.as_secs() / 60,
            left.as_secs() / 60
        );
        if let Err(e) = super::install(&mut self.fw, &self.cfg, &self.provisioner, now) {
            warn!("rebuilding the table for the quotas' new day end: {e:#}");
        }
    }

    pub(super) fn keep_quotas(&mut self) {
        let now = Instant::now();
        if now >= self.day_end {
            self.day_end = now + super::system::until_quota_reset(self.cfg.limits.quota_reset);
            self.fw.set_day_end(self.day_end);
            let admitted: Vec<_> = self
                .provisioner
                .stations_snapshot(now)
                .clients
                .iter()
                .map(|(c, _)| c.mac)
                .collect();
            if let Err(e) = self.fw.new_day(&admitted, now) {
                warn!("starting the quotas' new day: {e}");
            }
            self.quota_reading = Default::default();
            self.provisioner.handle_new_day();
        } else {
            self.follow_the_wall_clock(now);
        }
        if self.checks % QUOTAS_READ_EVERY != 0 {
            return;
        }
        match self.fw.quotas() {
            Ok(r) => {
                let clients: Vec<_> = r
                    .clients
                    .iter()
                    .map(|(mac, q)| (*mac, q.used, q.limit))
                    .collect();
                let network = r.network.map(|q| (q.used, q.limit));
                let left = self.day_end.saturating_since(now);
                self.provisioner.handle_quotas(&clients, network, left, now);
                if r != self.quota_reading {
                    let day_end = unix_secs_of(self.day_end, now, SystemTime::now());
                    super::system::write_quotas(&self.paths.run_dir, &r, day_end);
                }
                self.quota_reading = r;
            }
            Err(e) => debug!("reading the quotas: {e}"),
        }
    }

    /// Every [`COUNTS_KEPT_EVERY`] table checks, the counts are read, to be carried into
    /// a table restored after someone removed it.
    pub(super) fn keep_counts(&mut self) {
        self.checks += 1;
        if self.checks >= COUNTS_KEPT_EVERY {
            self.checks = 0;
            let bindings = self.provisioner.bindings(Instant::now());
            if let Err(e) = self.fw.traffic_of(Some(&bindings)) {
                debug!("reading the traffic counters: {e}");
            }
        }
    }
}
