//! MAC prefixes: the IEEE's assignments (MA-L, the classic OUI of 24 bits; MA-M, 28;
//! MA-S, 36) and any other length in whole hex digits, as vendor profiles and a window
//! opened for one device name them. `00:11:22` is an MA-L, `00:11:22:3` an MA-M,
//! `00:11:22:33:4` an MA-S; a full MAC is a prefix of 48 bits.
//!
//! A locally administered MAC (bit 1 of the first octet: a randomised one, as phones and
//! many IoT stacks use) belongs to no vendor, so it matches no prefix of fewer than 48
//! bits; named in full it still matches (the operator typed that very address).

use std::fmt;
use std::str::FromStr;

use super::MacAddr;

/// A MAC prefix of 4 to 48 bits, in whole hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacPrefix {
    /// The prefix's bits, left-aligned; the bits past `bits` are zero.
    value: [u8; 6],
    bits: u8,
}

impl MacPrefix {
    /// The prefix that is this whole MAC.
    pub fn exact(mac: MacAddr) -> MacPrefix {
        MacPrefix {
            value: mac.0,
            bits: 48,
        }
    }

    /// Its length in bits (a multiple of 4): the longer of two matching prefixes wins.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    pub fn is_exact(&self) -> bool {
        self.bits == 48
    }

    /// The MACs it covers, first and last, as 48-bit numbers (what an nft interval of
    /// `ether_addr` holds).
    pub fn range(&self) -> (u64, u64) {
        let mut v = 0u64;
        for b in self.value {
            v = (v << 8) | u64::from(b);
        }
        let host = 48 - u32::from(self.bits);
        let span = if host == 0 { 0 } else { (1u64 << host) - 1 };
        (v, v | span)
    }

    /// Whether `mac` starts with this prefix. A locally administered MAC matches only a
    /// prefix that is the whole of it.
    pub fn matches(&self, mac: MacAddr) -> bool {
        if !self.is_exact() && is_locally_administered(mac) {
            return false;
        }
        let full = usize::from(self.bits / 8);
        if mac.0[..full] != self.value[..full] {
            return false;
        }
        match self.bits % 8 {
            0 => true,
            // A half octet (the bits are multiples of 4).
            _ => mac.0[full] & 0xf0 == self.value[full],
        }
    }
}

/// Bit 1 of the first octet: an address its holder chose (randomised), not one a vendor
/// was assigned.
pub fn is_locally_administered(mac: MacAddr) -> bool {
    mac.0[0] & 0x02 != 0
}

/// Why a prefix did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a MAC prefix: 1 to 12 hex digits, in pairs separated by ':' or '-' \
     (the last may be a single digit), e.g. '00:11:22' or '00:11:22:3'"
)]
pub struct BadPrefix(pub String);

impl FromStr for MacPrefix {
    type Err = BadPrefix;

    fn from_str(s: &str) -> Result<MacPrefix, BadPrefix> {
        let bad = || BadPrefix(s.to_owned());
        let mut value = [0u8; 6];
        let mut digits = 0usize;
        let groups: Vec<&str> = s.split([':', '-']).collect();
        if groups.len() > 6 {
            return Err(bad());
        }
        for (i, g) in groups.iter().enumerate() {
            let last = i + 1 == groups.len();
            // Every group is a whole octet but the last, which may be a half one.
            let ok_len = g.len() == 2 || (last && g.len() == 1);
            if !ok_len || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            for c in g.chars() {
                let nibble = c.to_digit(16).ok_or_else(bad)? as u8;
                let (octet, high) = (digits / 2, digits % 2 == 0);
                value[octet] |= if high { nibble << 4 } else { nibble };
                digits += 1;
            }
        }
        Ok(MacPrefix {
            value,
            bits: (digits * 4) as u8,
        })
    }
}

impl fmt::Display for MacPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(17);
        for d in 0..usize::from(self.bits / 4) {
            if d > 0 && d % 2 == 0 {
                out.push(':');
            }
            let octet = self.value[d / 2];
            let nibble = if d % 2 == 0 { octet >> 4 } else { octet & 0xf };
            out.push(char::from(HEX[usize::from(nibble)]));
        }
        f.pad(&out)
    }
}

impl fmt::Debug for MacPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Of `prefixes` (with what each stands for), the longest that matches `mac`; the first
/// listed on a tie (which a config that lists one prefix twice can only have by mistake:
/// the config check refuses that).
pub fn longest_match<'a, T>(
    mac: MacAddr,
    prefixes: impl IntoIterator<Item = (&'a MacPrefix, T)>,
) -> Option<T> {
    let mut best: Option<(u8, T)> = None;
    for (p, t) in prefixes {
        if p.matches(mac) && best.as_ref().is_none_or(|(bits, _)| p.bits() > *bits) {
            best = Some((p.bits(), t));
        }
    }
    best.map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> MacPrefix {
        s.parse().unwrap()
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_ieee_sizes_and_others_parse() {
        assert_eq!(p("00:11:22").bits(), 24);
        assert_eq!(p("00:11:22:3").bits(), 28);
        assert_eq!(p("00:11:22:33:4").bits(), 36);
        assert_eq!(p("00-11-22-33-44-55").bits(), 48);
        assert_eq!(p("0").bits(), 4);
        assert_eq!(p("00:11:22:3").to_string(), "00:11:22:3");
        assert_eq!(p("AA:bb:Cc").to_string(), "aa:bb:cc");
        for bad in [
            "",
            "0011:22",
            "00:1:22",
            "00:11:22:33:44:55:66",
            "00:11:22:33:44:555",
            "00:11:2g",
            "00:11:",
            ":00:11",
            "00::11",
        ] {
            assert!(bad.parse::<MacPrefix>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_prefix_matches_its_macs_to_the_half_octet() {
        let m = mac("00:11:22:3f:00:01");
        assert!(p("00:11:22").matches(m));
        assert!(p("00:11:22:3").matches(m));
        assert!(!p("00:11:22:4").matches(m));
        assert!(!p("00:11:23").matches(m));
        assert!(p("00:11:22:3f:00:01").matches(m));
        assert!(!p("00:11:22:3f:00:02").matches(m));
    }

    #[test]
    fn a_randomised_mac_matches_no_vendor() {
        let local = mac("02:11:22:33:44:55");
        assert!(is_locally_administered(local));
        assert!(!p("02:11:22").matches(local));
        assert!(!p("02:11:22:33:44:5").matches(local));
        // Named in full, it is the operator's choice of that very device.
        assert!(p("02:11:22:33:44:55").matches(local));
        assert!(MacPrefix::exact(local).matches(local));
    }

    #[test]
    fn the_longest_prefix_wins_whatever_the_order() {
        let (short, long) = (p("00:11:22"), p("00:11:22:3"));
        let m = mac("00:11:22:33:44:55");
        assert_eq!(longest_match(m, [(&short, "a"), (&long, "b")]), Some("b"));
        assert_eq!(longest_match(m, [(&long, "b"), (&short, "a")]), Some("b"));
        let other = mac("00:11:22:44:00:00");
        assert_eq!(
            longest_match(other, [(&long, "b"), (&short, "a")]),
            Some("a")
        );
        assert_eq!(
            longest_match(mac("00:99:00:00:00:00"), [(&short, "a")]),
            None
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_display_reads_back(s in "[0-9a-fA-F:-]{0,20}") {
            if let Ok(prefix) = s.parse::<MacPrefix>() {
                prop_assert_eq!(prefix.to_string().parse::<MacPrefix>(), Ok(prefix));
            }
        }

        #[test]
        fn a_prefix_of_a_vendor_mac_matches_it(b: [u8; 6], digits in 1usize..=12) {
            let mut b = b;
            b[0] &= !0x02; // universally administered
            let m = MacAddr(b);
            let text: String = m.to_string().chars().filter(|c| *c != ':').take(digits).collect();
            let spaced: Vec<String> = text
                .as_bytes()
                .chunks(2)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            let prefix: MacPrefix = spaced.join(":").parse().unwrap();
            prop_assert_eq!(usize::from(prefix.bits()), digits * 4);
            prop_assert!(prefix.matches(m));
            // Flip the prefix's last bit (never the local bit: that is bit 6): it no
            // longer matches.
            let bit = digits * 4 - 1;
            let mut other = b;
            other[bit / 8] ^= 0x80 >> (bit % 8);
            prop_assert!(!prefix.matches(MacAddr(other)));
        }
    }
}
