//! The pure core: state machines over an injected clock. Nothing in here touches a socket;
//! the edges feed it events with `now` and carry out what it returns.

pub mod events;
pub mod leases;
pub mod time;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::config::Config;
use events::Event;
use leases::{Binding, Decision, DhcpRequest, LeaseChange, Leases};
use time::Instant;

/// Every decision the provisioner takes, driven by inputs stamped with `now`. The daemon
/// applies what comes back and logs the events drained from [`Core::drain_events`].
#[derive(Debug, Clone)]
pub struct Core {
    router: Ipv4Addr,
    leases: Leases,
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
            events: Vec::new(),
        }
    }

    /// Takes over bindings a previous run left in the kernel, so a restart keeps every
    /// client's address. Bindings that no longer fit (outside the pool, duplicates) are
    /// revoked; since the daemon rebuilds the table from [`Core::bindings`], they simply do
    /// not come back. Returns how many were kept.
    pub fn restore(&mut self, bindings: &[Binding], now: Instant) -> usize {
        let mut kept = 0;
        for &Binding { mac, ip, remaining } in bindings {
            if self.leases.restore(mac, ip, now + remaining, now) {
                self.events.push(Event::LeaseRestored { mac, ip });
                kept += 1;
            } else {
                self.events.push(Event::LeaseRevoked { mac, ip });
            }
        }
        kept
    }

    pub fn handle_dhcp(&mut self, req: DhcpRequest, now: Instant) -> Decision {
        self.leases.handle(req, self.router, now, &mut self.events)
    }

    /// Called at (or after) [`Core::next_deadline`].
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<LeaseChange> {
        self.leases.expire(now, &mut self.events)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.leases.next_deadline()
    }

    /// Adopts a new config. Bindings it ends (outside a smaller or moved pool) are revoked
    /// and leave the table when it is rebuilt from [`Core::bindings`].
    pub fn reconfigure(&mut self, cfg: &Config, now: Instant) {
        self.router = cfg.network.router;
        let ended = self.leases.reconfigure(
            cfg.dhcp.pool_start,
            cfg.limits.max_clients,
            cfg.dhcp.lease_time,
            now,
        );
        for change in ended {
            if let LeaseChange::Unbind { mac, ip } = change {
                self.events.push(Event::LeaseRevoked { mac, ip });
            }
        }
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
        assert_eq!(core.restore(&[b(2, 100), b(3, 50), b(9, 100)], now), 2);
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
