//! DNS query rate limits: one per client and one for the whole network (governor's GCRA),
//! driven by the core's injected clock so that they are deterministic under test.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
// 32-bit MIPS has no 64-bit atomics; there this is a lock (what governor uses, too).
use portable_atomic::AtomicU64;

use super::MacAddr;
use super::events::Event;
use super::time::Instant;

/// How often a client that keeps flooding is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// governor's clock, set from the `now` the core is given.
#[derive(Clone, Debug, Default)]
struct CoreClock(Arc<AtomicU64>);

impl CoreClock {
    fn set(&self, now: Instant) {
        self.0.store(now.as_millis(), Ordering::Relaxed);
    }
}

impl Clock for CoreClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

type Keyed = RateLimiter<MacAddr, HashMapStateStore<MacAddr>, CoreClock, NoOpMiddleware<Duration>>;
type Direct = RateLimiter<NotKeyed, InMemoryState, CoreClock, NoOpMiddleware<Duration>>;

pub struct DnsLimits {
    client_qps: u32,
    total_qps: u32,
    clock: CoreClock,
    per_client: Keyed,
    total: Direct,
    /// Clients over their limit: when that was last reported, and what was refused since.
    flooding: HashMap<MacAddr, (Option<Instant>, u32)>,
}

fn quota(qps: u32) -> Quota {
    let qps = NonZeroU32::new(qps.max(1)).expect("at least 1");
    // A burst of two seconds' worth: a device resolving a handful of names at boot is fine.
    Quota::per_second(qps).allow_burst(qps.saturating_mul(NonZeroU32::new(2).expect("2")))
}

/// What [`DnsLimits::allow`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the client's own rate: its doing (counted towards a flood).
    OverClient,
    /// Over the network's: not this client's doing alone.
    OverTotal,
}

impl DnsLimits {
    pub fn new(client_qps: u32, total_qps: u32) -> Self {
        let clock = CoreClock::default();
        DnsLimits {
            client_qps,
            total_qps,
            per_client: RateLimiter::new(
                quota(client_qps),
                HashMapStateStore::default(),
                clock.clone(),
            ),
            total: RateLimiter::direct_with_clock(quota(total_qps), clock.clone()),
            clock,
            flooding: HashMap::new(),
        }
    }

    /// Whether `mac` may ask now. A refusal is reported on `events` at most once per client
    /// per [`REPORT_EVERY`], with the count refused since the last report.
    pub fn allow(&mut self, mac: MacAddr, now: Instant, events: &mut Vec<Event>) -> Verdict {
        self.clock.set(now);
        // The client's own limit first, so one flooding client does not use up the
        // network's budget for the others.
        let verdict = if self.per_client.check_key(&mac).is_err() {
            Verdict::OverClient
        } else if self.total.check().is_err() {
            Verdict::OverTotal
        } else {
            return Verdict::Allowed;
        };
        let (last, refused) = self.flooding.entry(mac).or_insert((None, 0));
        *refused += 1;
        if last.is_none_or(|l| now.saturating_since(l) >= REPORT_EVERY) {
            events.push(Event::DnsRateLimited {
                mac,
                refused: *refused,
            });
            *last = Some(now);
            *refused = 0;
        }
        verdict
    }

    /// Drops state of clients that have been quiet (keeps memory bounded).
    pub fn forget_idle(&mut self, now: Instant) {
        self.clock.set(now);
        self.per_client.retain_recent();
        self.flooding.retain(|_, (last, _)| {
            last.is_some_and(|l| now.saturating_since(l) < REPORT_EVERY * 6)
        });
    }
}

/// Keeps refusals from flooding the log: per client and per minute, the first refusal of
/// each distinct question is reported (up to [`DISTINCT_REPORTED`] of them); repeats and
/// anything beyond are counted and reported as one summary when the minute is over. A
/// device retrying a forbidden name, or a flood of random names, costs at most a few dozen
/// lines a minute, and memory stays bounded by the number of clients (and by
/// [`MAX_TRACKED`] senders: beyond that, a flood of forged MACs is not reported one by one).
#[derive(Debug)]
pub struct Repeats {
    /// Ordered: summaries come out the same way every time.
    clients: BTreeMap<MacAddr, Period>,
    /// The event that sums up what a client's period did not report.
    summary: fn(MacAddr, u32) -> Event,
}

/// Senders tracked at once; reports of others are dropped until periods end.
pub const MAX_TRACKED: usize = 256;

#[derive(Clone, Debug)]
struct Period {
    start: Instant,
    seen: Vec<u64>,
    suppressed: u32,
}

/// How long one reporting period lasts.
pub const REPEAT_PERIOD: Duration = Duration::from_secs(60);
/// Distinct questions reported per client and period.
pub const DISTINCT_REPORTED: usize = 32;

impl Repeats {
    pub fn new(summary: fn(MacAddr, u32) -> Event) -> Self {
        Repeats {
            clients: BTreeMap::new(),
            summary,
        }
    }

    /// Whether this refusal of `mac`'s `question` is to be reported; pushes the summary of
    /// the client's previous period onto `events` when that has ended.
    pub fn report(
        &mut self,
        mac: MacAddr,
        question: impl std::hash::Hash,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> bool {
        // A fixed hasher (SipHash, zero keys): the same questions dedupe the same way.
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(question);
        if self.clients.len() >= MAX_TRACKED && !self.clients.contains_key(&mac) {
            return false;
        }
        let p = self.clients.entry(mac).or_insert_with(|| Period {
            start: now,
            seen: Vec::new(),
            suppressed: 0,
        });
        if now.saturating_since(p.start) >= REPEAT_PERIOD {
            if p.suppressed > 0 {
                events.push((self.summary)(mac, p.suppressed));
            }
            *p = Period {
                start: now,
                seen: Vec::new(),
                suppressed: 0,
            };
        }
        if p.seen.len() < DISTINCT_REPORTED && !p.seen.contains(&h) {
            p.seen.push(h);
            true
        } else {
            p.suppressed += 1;
            false
        }
    }

    /// Reports and forgets the periods that are over.
    pub fn report_due(&mut self, now: Instant, events: &mut Vec<Event>) {
        let summary = self.summary;
        self.clients.retain(|mac, p| {
            if now.saturating_since(p.start) < REPEAT_PERIOD {
                return true;
            }
            if p.suppressed > 0 {
                events.push(summary(*mac, p.suppressed));
            }
            false
        });
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.values().map(|p| p.start + REPEAT_PERIOD).min()
    }
}

impl std::fmt::Debug for DnsLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsLimits")
            .field("client_qps", &self.client_qps)
            .field("total_qps", &self.total_qps)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn a_flooding_client_is_limited_and_others_are_not() {
        let mut l = DnsLimits::new(10, 1000);
        let t0 = Instant::from_millis(1_000_000);
        // The burst (2 s worth) passes, then the limit holds.
        let ev = &mut vec![];
        let passed = (0..100)
            .filter(|_| l.allow(mac(1), t0, ev) == Verdict::Allowed)
            .count();
        assert_eq!(passed, 20);
        // Another client is not affected.
        assert_eq!(l.allow(mac(2), t0, ev), Verdict::Allowed);
        // After a second, ten more.
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..100)
            .filter(|_| l.allow(mac(1), t1, ev) == Verdict::Allowed)
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn floods_are_reported_once_per_period() {
        let mut l = DnsLimits::new(1, 1000);
        let t0 = Instant::from_millis(1_000_000);
        let mut events = vec![];
        for _ in 0..50 {
            l.allow(mac(1), t0, &mut events);
        }
        assert_eq!(
            events,
            [Event::DnsRateLimited {
                mac: mac(1),
                refused: 1
            }]
        );
        events.clear();
        let t1 = t0 + REPORT_EVERY;
        for _ in 0..5 {
            l.allow(mac(1), t1, &mut events);
        }
        // 47 refused unreported (50 - 2 burst - 1 reported), then the first one at t1.
        assert_eq!(
            events,
            [Event::DnsRateLimited {
                mac: mac(1),
                refused: 48
            }]
        );
    }

    #[test]
    fn refusals_are_reported_once_per_question_and_period() {
        let mut r = Repeats::new(|mac, count| Event::DnsRefusalsSuppressed { mac, count });
        let t0 = Instant::from_millis(1_000_000);
        let ev = &mut vec![];
        assert!(r.report(mac(1), "a", t0, ev));
        assert!(!r.report(mac(1), "a", t0, ev));
        assert!(
            r.report(mac(1), "b", t0, ev),
            "another question is reported"
        );
        assert!(r.report(mac(2), "a", t0, ev), "another client too");
        // A flood of distinct names: only the first few get a line each.
        let reported = (0..1000).filter(|i| r.report(mac(1), i, t0, ev)).count();
        assert_eq!(reported, DISTINCT_REPORTED - 2);
        assert!(ev.is_empty());
        // The next minute begins with the summary of the last.
        assert!(r.report(mac(1), "a", t0 + REPEAT_PERIOD, ev));
        assert_eq!(
            ev,
            &[Event::DnsRefusalsSuppressed {
                mac: mac(1),
                count: 1 + 1000 - 30
            }]
        );
        ev.clear();
        // A client that went quiet is summarised when its minute is due (report_due).
        r.report(mac(2), "a", t0, ev);
        r.report_due(t0 + REPEAT_PERIOD, ev);
        assert_eq!(
            ev,
            &[Event::DnsRefusalsSuppressed {
                mac: mac(2),
                count: 1
            }]
        );
    }

    #[test]
    fn the_network_limit_holds_across_clients() {
        let mut l = DnsLimits::new(100, 10);
        let t0 = Instant::from_millis(1_000_000);
        let passed = (0..40u8)
            .filter(|i| l.allow(mac(*i), t0, &mut vec![]) == Verdict::Allowed)
            .count();
        assert_eq!(passed, 20);
        // Over the network's limit is no client's flood.
        assert_eq!(l.allow(mac(50), t0, &mut vec![]), Verdict::OverTotal);
    }
}
