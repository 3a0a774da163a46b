//! The stations turned away lately, for `provisionerctl clients`: a small bounded record
//! (the last [`TurnedAway::CAPACITY`] stations, one entry each, the latest time and reason),
//! so that a flood of made-up MACs costs a fixed amount of memory and a station that keeps
//! trying holds one place.

use std::collections::VecDeque;

use super::MacAddr;
use super::events::StationReason;
use super::time::Instant;

/// One station turned away: why, and when it last was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub mac: MacAddr,
    pub reason: StationReason,
    pub at: Instant,
}

#[derive(Clone, Debug, Default)]
pub struct TurnedAway {
    /// Oldest first.
    recent: VecDeque<Refusal>,
}

impl TurnedAway {
    pub const CAPACITY: usize = 32;

    /// `mac` was turned away at `at`: it becomes the newest entry (its older one goes), and
    /// the oldest entry goes when the record is full.
    pub fn record(&mut self, mac: MacAddr, reason: StationReason, at: Instant) {
        self.recent.retain(|r| r.mac != mac);
        if self.recent.len() == Self::CAPACITY {
            self.recent.pop_front();
        }
        self.recent.push_back(Refusal { mac, reason, at });
    }

    /// `mac` was let in after all: no longer a station turned away.
    pub fn forget(&mut self, mac: MacAddr) {
        self.recent.retain(|r| r.mac != mac);
    }

    /// Newest first.
    pub fn recent(&self) -> impl Iterator<Item = &Refusal> {
        self.recent.iter().rev()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u16) -> MacAddr {
        MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8])
    }
    fn t(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    #[test]
    fn keeps_the_latest_refusal_of_each_of_the_last_stations() {
        let mut r = TurnedAway::default();
        r.record(mac(1), StationReason::Full, t(1));
        r.record(mac(2), StationReason::WindowClosed, t(2));
        // Turned away again: one entry, the newest, with the new reason and time.
        r.record(mac(1), StationReason::Banned, t(3));
        let got: Vec<_> = r.recent().copied().collect();
        assert_eq!(
            got,
            [
                Refusal {
                    mac: mac(1),
                    reason: StationReason::Banned,
                    at: t(3)
                },
                Refusal {
                    mac: mac(2),
                    reason: StationReason::WindowClosed,
                    at: t(2)
                },
            ]
        );
        r.forget(mac(2));
        assert_eq!(r.recent().map(|r| r.mac).collect::<Vec<_>>(), [mac(1)]);
    }

    #[test]
    fn a_flood_of_stations_is_bounded_and_the_oldest_go_first() {
        let mut r = TurnedAway::default();
        for i in 0..1000 {
            r.record(mac(i), StationReason::Busy, t(u64::from(i)));
        }
        let got: Vec<_> = r.recent().map(|r| r.mac).collect();
        assert_eq!(got.len(), TurnedAway::CAPACITY);
        assert_eq!(got[0], mac(999));
        assert_eq!(got[31], mac(968));
        // A station that keeps trying does not push the others out.
        for s in 0..100 {
            r.record(mac(5000), StationReason::Banned, t(2000 + s));
        }
        assert_eq!(r.recent().count(), TurnedAway::CAPACITY);
        assert_eq!(r.recent().filter(|x| x.mac == mac(5000)).count(), 1);
        assert!(r.recent().any(|x| x.mac == mac(969)));
    }
}
