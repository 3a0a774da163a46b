//! The answer cache: upstream answers by (name, type), served with the TTL they have left.
//! Every hit still goes through the learning path, so a cached answer and the set element
//! that makes it usable never part ways (unlike dnsmasq's nftset, which only adds on
//! upstream answers).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;

use super::wire::Rr;
use crate::core::time::Instant;

/// How long a negative answer (NXDOMAIN, or no records) is kept.
const NEGATIVE_TTL: u32 = 30;

#[derive(Clone, Debug)]
struct Entry {
    rcode: ResponseCode,
    records: Arc<[Rr]>,
    stored: Instant,
    /// The shortest TTL in the answer: the entry dies with its first record.
    ttl: u32,
}

/// A hit: the answer section as stored, and how many seconds ago (subtract from TTLs).
#[derive(Clone, Debug)]
pub struct Hit {
    pub rcode: ResponseCode,
    pub records: Arc<[Rr]>,
    pub age: u32,
}

#[derive(Debug)]
pub struct Cache {
    map: HashMap<(Arc<str>, u16), Entry>,
    capacity: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, name: &Arc<str>, qtype: u16, now: Instant) -> Option<Hit> {
        let e = self.map.get(&(name.clone(), qtype))?;
        let age = u32::try_from(now.saturating_since(e.stored).as_secs()).unwrap_or(u32::MAX);
        if age >= e.ttl {
            return None;
        }
        Some(Hit {
            rcode: e.rcode,
            records: e.records.clone(),
            age,
        })
    }

    /// Keeps an upstream answer. Only NOERROR and NXDOMAIN are cached (a SERVFAIL is the
    /// upstream's trouble, not an answer).
    pub fn put(
        &mut self,
        name: Arc<str>,
        qtype: u16,
        rcode: ResponseCode,
        records: &[Rr],
        now: Instant,
    ) {
        let ttl = match rcode {
            ResponseCode::NoError if !records.is_empty() => {
                records.iter().map(|r| r.ttl).min().unwrap_or(0)
            }
            ResponseCode::NoError | ResponseCode::NXDomain => NEGATIVE_TTL,
            _ => return,
        };
        if ttl == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            self.evict(now);
        }
        self.map.insert(
            (name, qtype),
            Entry {
                rcode,
                records: records.into(),
                stored: now,
                ttl,
            },
        );
    }

    /// Drops what has expired; if that frees nothing, the entry closest to expiry.
    fn evict(&mut self, now: Instant) {
        let before = self.map.len();
        self.map
            .retain(|_, e| now.saturating_since(e.stored) < Duration::from_secs(u64::from(e.ttl)));
        if self.map.len() == before {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.stored + Duration::from_secs(u64::from(e.ttl)))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
    }

    /// After an allow-list change nothing cached may be served on the old terms.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use std::net::Ipv4Addr;

    fn rec(ttl: u32) -> Rr {
        Rr::a(
            Name::from_ascii("a.example.").unwrap(),
            ttl,
            Ipv4Addr::new(11, 1, 0, 10),
        )
    }

    fn t(s: u64) -> Instant {
        Instant::from_millis(1_000_000 + s * 1000)
    }

    #[test]
    fn ttls_count_down_and_the_shortest_ends_the_entry() {
        let mut c = Cache::new(10);
        let name: Arc<str> = "a.example".into();
        let cname = Rr::cname(
            Name::from_ascii("a.example.").unwrap(),
            300,
            Name::from_ascii("b.example.").unwrap(),
        );
        c.put(
            name.clone(),
            1,
            ResponseCode::NoError,
            &[cname, rec(60)],
            t(0),
        );
        let hit = c.get(&name, 1, t(20)).unwrap();
        assert_eq!(hit.age, 20);
        assert_eq!(
            hit.records
                .iter()
                .map(|r| r.ttl - hit.age)
                .collect::<Vec<_>>(),
            [280, 40]
        );
        assert!(c.get(&name, 1, t(59)).is_some());
        assert!(c.get(&name, 1, t(60)).is_none());
        assert!(c.get(&name, 28, t(1)).is_none(), "keyed by type");
    }

    #[test]
    fn negative_answers_briefly_and_failures_never() {
        let mut c = Cache::new(10);
        let name: Arc<str> = "gone.example".into();
        c.put(name.clone(), 1, ResponseCode::NXDomain, &[], t(0));
        assert_eq!(
            c.get(&name, 1, t(29)).unwrap().rcode,
            ResponseCode::NXDomain
        );
        assert!(c.get(&name, 1, t(30)).is_none());
        let failing: Arc<str> = "failing.example".into();
        c.put(failing.clone(), 1, ResponseCode::ServFail, &[], t(0));
        assert!(c.get(&failing, 1, t(1)).is_none());
        let zero: Arc<str> = "zero.example".into();
        c.put(zero.clone(), 1, ResponseCode::NoError, &[rec(0)], t(0));
        assert!(c.get(&zero, 1, t(0)).is_none(), "TTL 0 is not cached");
    }

    #[test]
    fn bounded() {
        let mut c = Cache::new(3);
        for i in 0..10u64 {
            c.put(
                format!("n{i}.example").into(),
                1,
                ResponseCode::NoError,
                &[rec(100 + i as u32)],
                t(i),
            );
        }
        assert_eq!(c.len(), 3);
        // The ones that would live longest stay.
        assert!(c.get(&"n9.example".into(), 1, t(10)).is_some());
        assert!(c.get(&"n0.example".into(), 1, t(10)).is_none());
    }
}
