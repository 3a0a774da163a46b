//! New MACs per bridge port. Without a radio a station is whoever asks for DHCP, and a port
//! with a device behind it brings one MAC, a switch a handful: many new MACs from one port
//! within a minute is one host making up identities (DHCP starvation, eviction by burst),
//! not many newcomers. Past the limit the port's further newcomers are ignored until the
//! minute is over, and the flood is reported once.

use std::collections::BTreeMap;
use std::time::Duration;

use super::MacAddr;
use super::events::Event;
use super::time::Instant;

/// New MACs one port may bring within [`PORT_WINDOW`].
pub const NEW_MACS_PER_PORT: usize = 4;
pub const PORT_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default)]
pub struct Ports {
    /// Per port (interface index): the newcomers of the window, with when they came.
    recent: BTreeMap<u32, Vec<(MacAddr, Instant)>>,
    /// Per port: when its flood was last reported.
    reported: BTreeMap<u32, Instant>,
}

impl Ports {
    /// Whether the newcomer `mac` on `port` is let in (it or the port are within bounds);
    /// a refusal is reported once per port and window.
    pub fn newcomer(
        &mut self,
        port: u32,
        mac: MacAddr,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> bool {
        let recent = self.recent.entry(port).or_default();
        recent.retain(|&(_, t)| now.saturating_since(t) < PORT_WINDOW);
        if recent.iter().any(|&(m, _)| m == mac) {
            return true;
        }
        if recent.len() < NEW_MACS_PER_PORT {
            recent.push((mac, now));
            return true;
        }
        let last = self.reported.get(&port);
        if last.is_none_or(|&t| now.saturating_since(t) >= PORT_WINDOW) {
            self.reported.insert(port, now);
            events.push(Event::MacFlood {
                mac,
                port,
                macs: recent.len() + 1,
            });
        }
        false
    }

    /// Forgets windows that are over.
    pub fn expire(&mut self, now: Instant) {
        self.recent.retain(|_, v| {
            v.retain(|&(_, t)| now.saturating_since(t) < PORT_WINDOW);
            !v.is_empty()
        });
        self.reported
            .retain(|_, t| now.saturating_since(*t) < PORT_WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 1, n])
    }

    #[test]
    fn a_port_brings_a_few_new_macs_a_minute_and_a_flood_is_reported_once() {
        let mut p = Ports::default();
        let ev = &mut Vec::new();
        let t = |s: u64| Instant::from_millis(1_000_000 + s * 1000);
        for n in 0..4 {
            assert!(p.newcomer(7, mac(n), t(0), ev));
        }
        // The same MAC again is no newcomer; another port has bounds of its own.
        assert!(p.newcomer(7, mac(0), t(1), ev));
        assert!(p.newcomer(8, mac(9), t(1), ev));
        assert!(ev.is_empty());
        for n in 4..20 {
            assert!(!p.newcomer(7, mac(n), t(2), ev));
        }
        assert_eq!(
            ev,
            &[Event::MacFlood {
                mac: mac(4),
                port: 7,
                macs: 5
            }]
        );
        // A minute on, the port may bring new MACs again.
        assert!(p.newcomer(7, mac(30), t(60), ev));
        p.expire(t(200));
        assert!(p.recent.is_empty() && p.reported.is_empty());
    }
}
