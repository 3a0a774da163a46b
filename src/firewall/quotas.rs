//! Daily quotas in the kernel: each client's element (in `quota_c`, or its vendor
//! profile's `quota_pN`) and the network's (`quota_n`), declared `quota over N bytes`
//! (see `ruleset`). The kernel counts and enforces; here the elements are made (for each
//! admitted client, timing out when the day ends), read back (what each has used), and
//! carried into a rebuilt table with what they had used, so that a reload, a restart or a
//! table removed from outside gives nobody a fresh quota.

use std::collections::HashMap;
use std::time::Duration;

use super::keys::SetKey;
use super::netlink::{Quota, SetOp};
use super::ruleset::{QUOTA_NETWORK, QuotaPlan};
use super::{Family, Firewall, FirewallError, TABLE};
use crate::core::MacAddr;
use crate::core::time::Instant;

/// `quota_n`'s one element: IPv4 (`meta protocol ip`), as the kernel keys an ether type.
const NETWORK_KEY: [u8; 2] = 0x0800u16.to_be_bytes();

/// What the quota elements had used when read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaReading {
    pub clients: HashMap<MacAddr, Quota>,
    pub network: Option<Quota>,
}

impl Firewall {
    /// When the quotas' day ends (the daemon sets it at start and at each day's end).
    /// Whether the ruleset keeps any daily quota.
    pub fn has_quotas(&self) -> bool {
        !self.quota_plan.is_empty()
    }

    pub fn set_day_end(&mut self, end: Instant) {
        self.day_end = Some(end);
    }

    pub(super) fn day_left(&self, now: Instant) -> Option<Duration> {
        let left = self.day_end?.saturating_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// Every quota element's use: one dump per quota set (empty without quotas).
    pub fn quotas(&mut self) -> Result<QuotaReading, FirewallError> {
        let mut r = QuotaReading::default();
        for set in self.quota_plan.client_sets() {
            for e in self.family_elements(Family::Netdev, &set, None)? {
                if let (Some(mac), Some(q)) = (MacAddr::decode(&e.key), e.quota) {
                    r.clients.insert(mac, q);
                }
            }
        }
        if self.quota_plan.network.is_some() {
            r.network = self
                .family_elements(Family::Netdev, QUOTA_NETWORK, None)?
                .into_iter()
                .find_map(|e| e.quota);
        }
        if r != QuotaReading::default() {
            self.last_quotas.clone_from(&r);
        }
        Ok(r)
    }

    /// Quota elements for `macs` (just admitted, or everyone at the day's start) and the
    /// network, each having used what `used` says, timing out when the day ends. An element
    /// that is there already keeps what it used.
    pub(super) fn add_quotas(
        &mut self,
        macs: &[MacAddr],
        used: &QuotaReading,
        now: Instant,
    ) -> Result<(), FirewallError> {
        let Some(timeout) = self.day_left(now) else {
            return Ok(());
        };
        let plan: &QuotaPlan = &self.quota_plan;
        let keys: Vec<_> = macs
            .iter()
            .filter_map(|&m| {
                let (set, limit) = plan.client_set(m)?;
                let used = used.clients.get(&m).map_or(0, |q| q.used);
                Some((set, m.encode(), limit, used))
            })
            .collect();
        let mut ops: Vec<SetOp> = keys
            .iter()
            .map(|(set, key, limit, used)| SetOp::AddQuota {
                set: set.as_str(),
                key: key.as_bytes(),
                timeout,
                limit: *limit,
                used: *used,
            })
            .collect();
        if let Some(limit) = plan.network {
            ops.push(SetOp::AddQuota {
                set: QUOTA_NETWORK,
                key: &NETWORK_KEY,
                timeout,
                limit,
                used: used.network.map_or(0, |q| q.used),
            });
        }
        self.nl
            .apply_families(TABLE, &[(Family::Netdev.number(), &ops)])?;
        Ok(())
    }

    /// The day began: everyone admitted gets a fresh quota, and the network too.
    pub fn new_day(&mut self, admitted: &[MacAddr], now: Instant) -> Result<(), FirewallError> {
        self.last_quotas = QuotaReading::default();
        self.add_quotas(admitted, &QuotaReading::default(), now)
    }

    /// What the table about to be replaced had used (the kernel's if it is there, else the
    /// last read), for [`Self::restore_quotas`].
    pub(super) fn carry_quotas(&mut self) -> QuotaReading {
        match self.quotas() {
            Ok(live) if live != QuotaReading::default() => live,
            _ => std::mem::take(&mut self.last_quotas),
        }
    }

    /// After an install: the quota elements of the admitted clients and of everyone who
    /// had one today, with what they had used.
    pub(super) fn restore_quotas(
        &mut self,
        admitted: &[MacAddr],
        carried: &QuotaReading,
        now: Instant,
    ) -> Result<(), FirewallError> {
        let mut macs: Vec<MacAddr> = admitted.to_vec();
        macs.extend(carried.clients.keys().filter(|m| !admitted.contains(m)));
        self.add_quotas(&macs, carried, now)?;
        self.last_quotas = carried.clone();
        Ok(())
    }
}

/// The first line of a quota file this version writes.
const FILE_MAGIC: &str = "provisioner-quotas 1";

impl QuotaReading {
    /// The reading as the run directory keeps it, with the day it belongs to (when it
    /// ends, in Unix seconds) and a checksum as the last line.
    pub fn encode(&self, day_end_unix: u64) -> String {
        use std::fmt::Write;
        let mut s = format!("{FILE_MAGIC}\nday_end {day_end_unix}\n");
        if let Some(q) = self.network {
            let _ = writeln!(s, "network {} {}", q.used, q.limit);
        }
        let mut clients: Vec<_> = self.clients.iter().collect();
        clients.sort_by_key(|(m, _)| **m);
        for (mac, q) in clients {
            let _ = writeln!(s, "client {mac} {} {}", q.used, q.limit);
        }
        crate::core::seal::seal(&mut s);
        s
    }

    /// A file [`Self::encode`] wrote, whole: the reading and its day's end. Anything else
    /// (torn, damaged, another version's) is `None`.
    pub fn decode(text: &str) -> Option<(QuotaReading, u64)> {
        let mut lines = crate::core::seal::unseal(text)?.lines();
        if lines.next()? != FILE_MAGIC {
            return None;
        }
        let day_end = lines.next()?.strip_prefix("day_end ")?.parse().ok()?;
        let mut r = QuotaReading::default();
        let quota = |used: Option<&str>, limit: Option<&str>| -> Option<Quota> {
            Some(Quota {
                used: used?.parse().ok()?,
                limit: limit?.parse().ok()?,
            })
        };
        for line in lines {
            let mut w = line.split(' ');
            match w.next()? {
                "network" => r.network = Some(quota(w.next(), w.next())?),
                "client" => {
                    let mac = w.next()?.parse().ok()?;
                    r.clients.insert(mac, quota(w.next(), w.next())?);
                }
                _ => return None,
            }
        }
        Some((r, day_end))
    }
}

impl Firewall {
    /// What a previous run's file says the quotas had used: carried into the first table
    /// when the kernel has none (removed while the daemon was away).
    pub fn seed_quotas(&mut self, reading: QuotaReading) {
        self.last_quotas = reading;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_reads_back_whole_and_a_damaged_one_not_at_all() {
        let mut r = QuotaReading {
            network: Some(Quota {
                used: 123_456,
                limit: 500_000_000,
            }),
            ..QuotaReading::default()
        };
        for (i, used) in [(1u8, 10u64), (2, 300_000)] {
            r.clients.insert(
                MacAddr([2, 0, 0, 0, 0, i]),
                Quota {
                    used,
                    limit: 300_000,
                },
            );
        }
        let text = r.encode(1_764_648_000);
        assert_eq!(
            QuotaReading::decode(&text),
            Some((r.clone(), 1_764_648_000))
        );
        let empty = QuotaReading::default();
        assert_eq!(QuotaReading::decode(&empty.encode(7)), Some((empty, 7)));
        // Cut anywhere, or any byte changed: refused, never half a reading.
        for cut in 0..text.len() {
            assert_eq!(QuotaReading::decode(&text[..cut]), None, "cut at {cut}");
        }
        for at in 0..text.len() {
            let mut b = text.clone().into_bytes();
            b[at] ^= 0x01;
            if let Ok(t) = String::from_utf8(b) {
                assert_eq!(QuotaReading::decode(&t), None, "byte {at} changed");
            }
        }
        assert_eq!(QuotaReading::decode("garbage"), None);
    }
}
