//! The audit log's memory: every event numbered and timestamped as it is logged, the most
//! recent ones kept (a bounded ring) for `provisionerctl events --since SEQ`.

use std::collections::VecDeque;
use std::sync::Arc;

use super::events::Event;
use super::time::WallTime;

/// Events kept for `events --since` (at roughly 100 bytes each, about 100 KB).
pub const KEPT: usize = 1024;

/// An event as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// 1, 2, 3... from the daemon's start: a gap in what a reader saw is events it missed.
    pub seq: u64,
    pub at: WallTime,
    pub event: Event,
    level: &'static str,
}

impl Record {
    /// A record at the level the default policy gives `event`.
    #[cfg(test)]
    pub fn new(seq: u64, at: WallTime, event: Event) -> Record {
        let level = super::threat::level_of(&event, &super::threat::ThreatPolicy::default());
        Record {
            seq,
            at,
            event,
            level,
        }
    }

    /// The syslog-style level (see [`super::threat::level_of`]).
    pub fn level(&self) -> &'static str {
        self.level
    }
}

/// What [`Journal::since`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub records: Vec<Arc<Record>>,
    /// The sequence number the next event will get.
    pub next: u64,
    /// Events after the asked-for number that are no longer kept (0: nothing missed).
    pub lost: u64,
}

#[derive(Debug)]
pub struct Journal {
    kept: VecDeque<Arc<Record>>,
    cap: usize,
    next: u64,
}

impl Journal {
    pub fn new(cap: usize) -> Journal {
        Journal {
            kept: VecDeque::with_capacity(cap.min(64)),
            cap: cap.max(1),
            next: 1,
        }
    }

    /// [`Self::push_graded`] under the default policy.
    #[cfg(test)]
    pub fn push(&mut self, at: WallTime, event: Event) -> Arc<Record> {
        self.push_graded(at, event, &super::threat::ThreatPolicy::default())
    }

    /// Numbers and keeps `event` (forgetting the oldest beyond the bound), at the level
    /// `policy` gives it.
    pub fn push_graded(
        &mut self,
        at: WallTime,
        event: Event,
        policy: &super::threat::ThreatPolicy,
    ) -> Arc<Record> {
        let r = Arc::new(Record {
            seq: self.next,
            at,
            level: super::threat::level_of(&event, policy),
            event,
        });
        self.next += 1;
        if self.kept.len() == self.cap {
            self.kept.pop_front();
        }
        self.kept.push_back(r.clone());
        r
    }

    /// The kept events numbered after `after` (all kept ones for `None`), and how many in
    /// between were already forgotten.
    pub fn since(&self, after: Option<u64>) -> Page {
        let first = self.kept.front().map_or(self.next, |r| r.seq);
        let after = after.unwrap_or(first.saturating_sub(1));
        Page {
            records: self
                .kept
                .iter()
                .filter(|r| r.seq > after)
                .cloned()
                .collect(),
            next: self.next,
            lost: first.saturating_sub(after.saturating_add(1)),
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Event {
        Event::WindowOpened {
            secs: Some(n),
            expected: None,
        }
    }

    #[test]
    fn numbers_keeps_the_most_recent_and_says_what_was_lost() {
        let mut j = Journal::new(3);
        for n in 0..5 {
            j.push(WallTime(n), ev(n));
        }
        // Kept: 3, 4, 5. Asked after 1: 2 is gone.
        let p = j.since(Some(1));
        assert_eq!(
            p.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!((p.next, p.lost), (6, 1));
        // Nothing asked: all kept, nothing reported lost.
        let p = j.since(None);
        assert_eq!(p.records.len(), 3);
        assert_eq!(p.lost, 0);
        // Up to date: nothing new, nothing lost; from the future: nothing.
        assert_eq!(j.since(Some(5)).records.len(), 0);
        assert_eq!(j.since(Some(5)).lost, 0);
        assert_eq!(j.since(Some(99)).records.len(), 0);
        assert_eq!(j.since(Some(99)).lost, 0);
        assert_eq!(j.since(Some(3)).records[0].seq, 4);
    }

    #[test]
    fn an_empty_journal_has_nothing_and_loses_nothing() {
        let j = Journal::new(KEPT);
        let p = j.since(Some(0));
        assert!(p.records.is_empty());
        assert_eq!((p.next, p.lost), (1, 0));
    }

    #[test]
    fn levels_follow_the_grade() {
        let mut j = Journal::new(4);
        let mac = crate::core::MacAddr([2, 0, 0, 0, 0, 1]);
        let ip = std::net::Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(j.push(WallTime(0), ev(1)).level(), "info");
        assert_eq!(
            j.push(WallTime(0), Event::LeaseRenewed { mac, ip }).level(),
            "debug"
        );
        assert_eq!(
            j.push(WallTime(0), Event::DnsRateLimited { mac, refused: 3 })
                .level(),
            "warning"
        );
    }
}
