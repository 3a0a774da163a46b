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
