//! Vendor profiles: a MAC's vendor prefix (OUI, MA-M, MA-S, or longer) picks the profile
//! whose allow entries it may resolve and reach, and whose limits it is held to. The
//! longest matching prefix wins; a MAC that matches none (a randomised one never does, see
//! [`super::oui`]) gets the entries that name no profile (the default ones), which may be
//! none at all: then it gets DHCP and nothing else.
//!
//! The profile is a pure function of the MAC and the configuration, so nothing per client
//! is stored for it: a reload that moves a prefix moves its clients at once. The data plane
//! has the same function as MAC intervals ([`partition`]): the static allow set is keyed
//! `ether_addr . ipv4_addr . inet_proto . inet_service` with the MAC part an interval per
//! profile, so a new connection still costs one set lookup.

use std::time::Duration;

use super::MacAddr;
use super::oui::{MacPrefix, longest_match};

/// One `config profile` section, as far as the core decides by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub ouis: Vec<MacPrefix>,
    /// This profile's session limit (else the network's).
    pub session: Option<Duration>,
    /// Clients of this profile at once (within the network's `max_clients`).
    pub max_clients: Option<u16>,
}

/// Index into the profiles (in the configuration's order) of `mac`'s profile; `None`: no
/// profile (the default entries).
pub fn of(profiles: &[Profile], mac: MacAddr) -> Option<usize> {
    longest_match(
        mac,
        profiles
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.ouis.iter().map(move |o| (o, i))),
    )
}

/// The name of `mac`'s profile, if it has one.
pub fn name_of(profiles: &[Profile], mac: MacAddr) -> Option<&str> {
    of(profiles, mac).map(|i| profiles[i].name.as_str())
}

/// The whole MAC space cut into intervals `(first, last, profile)`, in order, adjacent ones
/// with different owners, each MAC in the interval of the profile [`of`] gives it (`None`:
/// the default). What the data plane keys its static allow set by.
///
/// Locally administered MACs: a prefix shorter than a MAC covers them in this form, so the
/// configuration refuses prefixes shorter than 24 bits and prefixes with the local bit set
/// (only a whole MAC may have it), which makes the intervals agree with [`of`].
pub fn partition(profiles: &[Profile]) -> Vec<(u64, u64, Option<usize>)> {
    const LAST: u64 = (1 << 48) - 1;
    let prefixes: Vec<(u64, u64, u8, usize)> = profiles
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.ouis.iter().map(move |o| {
                let (a, b) = o.range();
                (a, b, o.bits(), i)
            })
        })
        .collect();
    let mut cuts: Vec<u64> = vec![0];
    for &(a, b, ..) in &prefixes {
        cuts.push(a);
        if b < LAST {
            cuts.push(b + 1);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(u64, u64, Option<usize>)> = Vec::new();
    for (k, &start) in cuts.iter().enumerate() {
        let end = cuts.get(k + 1).map_or(LAST, |n| n - 1);
        // Prefixes nest or are apart: the longest one containing the start holds it all.
        let owner = prefixes
            .iter()
            .filter(|(a, b, ..)| *a <= start && start <= *b)
            .max_by_key(|(_, _, bits, i)| (*bits, std::cmp::Reverse(*i)))
            .map(|p| p.3);
        match out.last_mut() {
            Some(last) if last.2 == owner => last.1 = end,
            _ => out.push((start, end, owner)),
        }
    }
    out
}

/// A 48-bit number as a MAC.
pub fn mac_of(v: u64) -> MacAddr {
    let b = v.to_be_bytes();
    MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn profile(name: &str, ouis: &[&str]) -> Profile {
        Profile {
            name: name.into(),
            ouis: ouis.iter().map(|o| o.parse().unwrap()).collect(),
            session: None,
            max_clients: None,
        }
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_longest_prefix_picks_the_profile_and_a_randomised_mac_gets_none() {
        let ps = [
            profile("acme", &["00:11:22"]),
            profile("acme_pro", &["00:11:22:3"]),
            profile("bolt", &["00:aa:bb", "00:aa:cc:dd:e"]),
        ];
        assert_eq!(name_of(&ps, mac("00:11:22:44:00:01")), Some("acme"));
        assert_eq!(name_of(&ps, mac("00:11:22:3f:00:01")), Some("acme_pro"));
        assert_eq!(name_of(&ps, mac("00:aa:cc:dd:ef:01")), Some("bolt"));
        assert_eq!(name_of(&ps, mac("00:aa:cc:dd:f0:01")), None);
        assert_eq!(name_of(&ps, mac("02:11:22:44:00:01")), None);
        assert_eq!(name_of(&[], mac("00:11:22:44:00:01")), None);
    }

    #[test]
    fn without_profiles_the_partition_is_one_default_interval() {
        assert_eq!(partition(&[]), [(0, (1 << 48) - 1, None)]);
    }

    proptest! {
        /// The intervals the data plane gets say what [`of`] says, for every MAC: at the
        /// edges of every prefix and anywhere.
        #[test]
        fn the_partition_agrees_with_the_longest_match(
            raw in proptest::collection::vec((any::<[u8; 6]>(), 6usize..=12, 0usize..3), 0..8),
            probes in proptest::collection::vec(any::<[u8; 6]>(), 16),
        ) {
            let mut ps: Vec<Profile> = (0..3).map(|i| profile(&format!("p{i}"), &[])).collect();
            let mut seen = std::collections::HashSet::new();
            for (mut b, digits, owner) in raw {
                b[0] &= !0x02;
                let text: String = MacAddr(b).to_string().chars().filter(|c| *c != ':').take(digits).collect();
                let spaced: Vec<String> = text.as_bytes().chunks(2).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
                let p: MacPrefix = spaced.join(":").parse().unwrap();
                if seen.insert(p) {
                    ps[owner].ouis.push(p);
                }
            }
            let parts = partition(&ps);
            prop_assert_eq!(parts[0].0, 0);
            prop_assert_eq!(parts.last().unwrap().1, (1 << 48) - 1);
            for w in parts.windows(2) {
                prop_assert_eq!(w[0].1 + 1, w[1].0);
                prop_assert_ne!(w[0].2, w[1].2);
            }
            // Any MAC, randomised ones too.
            let mut macs: Vec<u64> = probes
                .iter()
                .map(|b| u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]))
                .collect();
            for (a, b, _) in &parts {
                macs.push(*a);
                macs.push(*b);
            }
            for m in macs {
                let want = of(&ps, mac_of(m));
                let got = parts.iter().find(|(a, b, _)| *a <= m && m <= *b).unwrap().2;
                prop_assert_eq!(got, want, "{}", mac_of(m));
            }
        }
    }
}
