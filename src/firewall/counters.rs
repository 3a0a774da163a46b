//! Each client's traffic, counted in the kernel: `count_up` (keyed by the client's MAC/IP
//! pair) and `count_down` (by its address) are sets declared with `counter`, and the
//! `forwarded` chain looks every forwarded packet up in them, so each element counts the
//! packets and bytes of its client (see `ruleset`). Nothing is counted or estimated here:
//! this reads the kernel's counts back (one dump per set, when asked) and carries them
//! into a rebuilt table, whose new elements would otherwise start from zero.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::keys::SetKey;
use super::netlink::Counter;
use super::ruleset::{COUNT_DOWN, COUNT_UP};
use super::{Firewall, FirewallError, Ruleset};
use crate::core::MacAddr;

/// A client's traffic: from it (up) and to it (down), as forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub up: Counter,
    pub down: Counter,
}

/// Traffic by binding (a client's MAC and address).
pub type TrafficMap = HashMap<(MacAddr, Ipv4Addr), Traffic>;

/// Joins the two sets' elements: each `count_up` pair with the `count_down` element of its
/// address. Elements that are not keys of their set, and addresses without a pair, are left
/// out (they count nothing anyone could be told about).
pub fn join(
    up: impl IntoIterator<Item = (Vec<u8>, Option<Counter>)>,
    down: impl IntoIterator<Item = (Vec<u8>, Option<Counter>)>,
) -> TrafficMap {
    let down: HashMap<Ipv4Addr, Counter> = down
        .into_iter()
        .filter_map(|(k, c)| Some((Ipv4Addr::decode(&k)?, c.unwrap_or_default())))
        .collect();
    up.into_iter()
        .filter_map(|(k, c)| {
            let (mac, ip) = <(MacAddr, Ipv4Addr)>::decode(&k)?;
            let traffic = Traffic {
                up: c.unwrap_or_default(),
                down: down.get(&ip).copied().unwrap_or_default(),
            };
            Some(((mac, ip), traffic))
        })
        .collect()
}

/// A reading of the counting sets for some bindings (see [`Firewall::traffic_within`]).
pub struct Reading {
    at: std::time::Instant,
    asked: Vec<(MacAddr, Ipv4Addr)>,
    map: TrafficMap,
}

impl Firewall {
    /// Every client's traffic as the kernel counted it: one dump of each counting set
    /// (empty without a table). What it read is also kept, for a table that must be rebuilt
    /// after someone removed it (then the counts since this read are lost with it).
    pub fn traffic(&mut self) -> Result<TrafficMap, FirewallError> {
        self.traffic_of(None)
    }

    /// [`Self::traffic`], given the bindings the core holds (`bindings`): each set is then
    /// read in one dump when it holds exactly their elements, instead of two (see
    /// `Netlink::set_elements_expecting`).
    pub fn traffic_of(
        &mut self,
        bindings: Option<&[(MacAddr, Ipv4Addr)]>,
    ) -> Result<TrafficMap, FirewallError> {
        let map = self.read_traffic(bindings)?;
        // (An empty read is no news: the table may be gone, to be restored from this.)
        if !map.is_empty() {
            self.last_traffic.clone_from(&map);
        }
        Ok(map)
    }

    /// [`Self::traffic_of`], or what this read less than `fresh` ago if that holds every
    /// binding of `bindings`: for what people read (`clients`), where a count a second
    /// old is as good, and a burst of requests then costs the kernel's dumps once. (Only
    /// its own reading: what the daemon reads for itself keeps no request waiting.)
    pub fn traffic_within(
        &mut self,
        bindings: &[(MacAddr, Ipv4Addr)],
        fresh: std::time::Duration,
    ) -> Result<TrafficMap, FirewallError> {
        if let Some(r) = &self.recent_traffic {
            let covered = |b: &(MacAddr, Ipv4Addr)| r.asked.binary_search(b).is_ok();
            if r.at.elapsed() < fresh && bindings.iter().all(covered) {
                return Ok(bindings
                    .iter()
                    .filter_map(|b| Some((*b, *r.map.get(b)?)))
                    .collect());
            }
        }
        let map = self.traffic_of(Some(bindings))?;
        let mut asked = bindings.to_vec();
        asked.sort_unstable();
        self.recent_traffic = Some(Reading {
            at: std::time::Instant::now(),
            asked,
            map: map.clone(),
        });
        Ok(map)
    }

    fn read_traffic(
        &mut self,
        bindings: Option<&[(MacAddr, Ipv4Addr)]>,
    ) -> Result<TrafficMap, FirewallError> {
        let pairs = |v: Vec<super::netlink::SetElement>| {
            v.into_iter()
                .map(|e| (e.key, e.counter))
                .collect::<Vec<_>>()
        };
        let keys = |mut k: Vec<Vec<u8>>| {
            k.sort_unstable();
            k.dedup();
            k
        };
        let want_up = bindings.map(|b| keys(b.iter().map(|p| p.encode().to_vec()).collect()));
        let want_down =
            bindings.map(|b| keys(b.iter().map(|(_, ip)| ip.encode().to_vec()).collect()));
        let netdev = super::Family::Netdev;
        let up = pairs(self.family_elements(netdev, COUNT_UP, want_up.as_deref())?);
        let down = pairs(self.family_elements(netdev, COUNT_DOWN, want_down.as_deref())?);
        Ok(join(up, down))
    }

    /// `rs` with the counts of the table it replaces: the kernel's where it still counts
    /// (a reload, a restart), else the last ones read (a table removed from outside).
    pub(super) fn carry_traffic(&mut self, rs: &Ruleset) -> Ruleset {
        let live = match self.read_traffic(None) {
            Ok(live) if !live.is_empty() => live,
            _ => std::mem::take(&mut self.last_traffic),
        };
        let carried = rs
            .clone()
            .with_counters(|mac, ip| live.get(&(mac, ip)).map(|t| (t.up, t.down)));
        self.last_traffic = live;
        carried
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::keys::SetKey;

    #[test]
    fn up_and_down_join_by_address() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let ip = Ipv4Addr::new(192, 168, 250, 2);
        let other = Ipv4Addr::new(192, 168, 250, 3);
        let c = |packets, bytes| Some(Counter { packets, bytes });
        let map = join(
            [
                ((mac, ip).encode().to_vec(), c(10, 1000)),
                // Not a pair: left out.
                (vec![1, 2, 3], c(1, 1)),
            ],
            [
                (ip.encode().to_vec(), c(20, 30_000)),
                (other.encode().to_vec(), c(5, 5)),
            ],
        );
        assert_eq!(map.len(), 1);
        assert_eq!(
            map[&(mac, ip)],
            Traffic {
                up: Counter {
                    packets: 10,
                    bytes: 1000
                },
                down: Counter {
                    packets: 20,
                    bytes: 30_000
                },
            }
        );
        // A pair whose address has no down element yet counted nothing down.
        let map = join([((mac, other).encode().to_vec(), None)], []);
        assert_eq!(map[&(mac, other)], Traffic::default());
    }
}
