//! DNS query rate limits: one per client and one for the whole network (governor's GCRA),
//! driven by the core's injected clock so that they are deterministic under test.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

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
    pub fn allow(&mut self, mac: MacAddr, now: Instant, events: &mut Vec<Event>) -> bool {
        self.clock.set(now);
        // The client's own limit first, so one flooding client does not use up the
        // network's budget for the others.
        if self.per_client.check_key(&mac).is_ok() && self.total.check().is_ok() {
            return true;
        }
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
        false
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

/// Reports a repeated refusal (same client, name and type) once per period, counting the
/// repeats in between: a device retrying a forbidden name every second must not flood the
/// log, nor cost a formatted line per question.
#[derive(Clone, Debug, Default)]
pub struct Repeats {
    hasher: std::hash::RandomState,
    seen: HashMap<u64, (Instant, u32)>,
}

/// How often one refusal is reported again.
pub const REPEAT_REPORT: Duration = Duration::from_secs(60);
/// Distinct refusals remembered at most (older ones are forgotten first).
const REPEATS_KEPT: usize = 4096;

impl Repeats {
    /// `Some(repeats since the last report)` if this one is to be reported now.
    pub fn report(&mut self, key: impl std::hash::Hash, now: Instant) -> Option<u32> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        match self.seen.get_mut(&h) {
            Some((last, n)) if now.saturating_since(*last) < REPEAT_REPORT => {
                *n += 1;
                None
            }
            Some((last, n)) => {
                let repeats = *n;
                *last = now;
                *n = 0;
                Some(repeats)
            }
            None => {
                if self.seen.len() >= REPEATS_KEPT {
                    self.seen
                        .retain(|_, (last, _)| now.saturating_since(*last) < REPEAT_REPORT);
                    if self.seen.len() >= REPEATS_KEPT {
                        self.seen.clear();
                    }
                }
                self.seen.insert(h, (now, 0));
                Some(0)
            }
        }
    }
}

impl Clone for DnsLimits {
    /// Rate-limit state is ephemeral: a copy starts afresh with the same quotas.
    fn clone(&self) -> Self {
        DnsLimits::new(self.client_qps, self.total_qps)
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
        let passed = (0..100).filter(|_| l.allow(mac(1), t0, ev)).count();
        assert_eq!(passed, 20);
        // Another client is not affected.
        assert!(l.allow(mac(2), t0, ev));
        // After a second, ten more.
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..100).filter(|_| l.allow(mac(1), t1, ev)).count();
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
    fn repeats_are_reported_once_a_period_with_their_count() {
        let mut r = Repeats::default();
        let t0 = Instant::from_millis(1_000_000);
        assert_eq!(r.report(("a", 1), t0), Some(0));
        assert_eq!(r.report(("a", 1), t0), None);
        assert_eq!(
            r.report(("b", 1), t0),
            Some(0),
            "another question is reported"
        );
        assert_eq!(r.report(("a", 1), t0 + Duration::from_secs(59)), None);
        assert_eq!(r.report(("a", 1), t0 + REPEAT_REPORT), Some(2));
    }

    #[test]
    fn the_network_limit_holds_across_clients() {
        let mut l = DnsLimits::new(100, 10);
        let t0 = Instant::from_millis(1_000_000);
        let passed = (0..40u8)
            .filter(|i| l.allow(mac(*i), t0, &mut vec![]))
            .count();
        assert_eq!(passed, 20);
    }
}
