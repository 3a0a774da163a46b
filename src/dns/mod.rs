//! The router's DNS server for the provisioning network.
//!
//! Every question goes to the core ([`Core::dns_question`]): only clients with a lease,
//! within their rate, asking A or AAAA for an allowed name get past it. Allowed questions
//! are answered from the cache or forwarded upstream; every answer, cached or fresh, goes
//! through [`Core::dns_answer`], which drops rebinding records and learns the rest for the
//! asking client. The daemon applies the batch of set changes of one loop turn in one
//! netlink transaction and only then sends the replies: a client's first packet to a
//! learned address never races the set.
//!
//! Serving is a small loop on tokio sockets rather than hickory-server: hickory-server
//! hands every request to its own task with its own response handle, which defeats the one
//! batch per turn that makes concurrent answers cheap. The wire format is in [`wire`], on
//! hickory-proto's codecs; UDP datagrams come and go by the batch ([`datagrams`]); TCP
//! connections are bounded per client and in all, and timed ([`tcp`]).

pub mod cache;
pub mod datagrams;
pub mod tcp;
pub mod upstream;
pub mod wire;

pub use tcp::{TCP_IDLE, TCP_PER_CLIENT, TCP_TOTAL, TcpQuestion, serve_tcp};

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Name;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Config;
use crate::core::time::Instant;
use crate::core::{Core, DnsVerdict, MacAddr, SetChange};
use cache::Cache;
use wire::{Parsed, Question, Rr, RrData};

/// How long one upstream resolver gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// Questions waiting for upstream answers, at most (beyond that: SERVFAIL at once).
const MAX_PENDING: usize = 1024;
/// Clients waiting for one upstream answer, at most.
const MAX_WAITERS: usize = 64;
const CACHE_ENTRIES: usize = 2048;
/// Records of one answer considered; a longer answer is cut.
const MAX_RECORDS: usize = 32;

/// Where a reply goes.
#[derive(Clone, Debug)]
pub enum Route {
    Udp(SocketAddr),
    /// The connection's room for its one answer.
    Tcp(mpsc::Sender<Vec<u8>>),
}

impl Route {
    fn is_tcp(&self) -> bool {
        matches!(self, Route::Tcp(_))
    }
}

#[derive(Debug)]
pub struct Reply {
    pub route: Route,
    pub bytes: Vec<u8>,
    /// Sent instead when the set changes this answer needs could not be applied.
    pub servfail: Option<Vec<u8>>,
}

/// What one loop turn produced: apply `changes`, then send `replies`.
#[derive(Debug, Default)]
pub struct Out {
    pub changes: Vec<SetChange>,
    pub replies: Vec<Reply>,
}

/// An upstream exchange that finished.
pub struct Done {
    key: (Arc<str>, u16),
    result: Result<upstream::Answer, String>,
}

struct Waiter {
    route: Route,
    q: Question,
    /// The question's name, normalised.
    name: Arc<str>,
    mac: MacAddr,
}

pub struct Resolver {
    upstreams: Arc<[SocketAddrV4]>,
    preferred: usize,
    cache: Cache,
    pending: HashMap<(Arc<str>, u16), Vec<Waiter>>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    // Reused per answer.
    addrs: Vec<(Ipv4Addr, u32)>,
    keep: Vec<bool>,
    name: String,
}

impl Resolver {
    pub fn new(cfg: &Config) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Resolver {
            upstreams: cfg.dns.upstream.clone().into(),
            preferred: 0,
            cache: Cache::new(CACHE_ENTRIES),
            pending: HashMap::new(),
            done_tx,
            done_rx,
            addrs: Vec::new(),
            keep: Vec::new(),
            name: String::new(),
        }
    }

    /// A new config: new upstreams, and nothing cached is served on the old allow-list.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.upstreams = cfg.dns.upstream.clone().into();
        self.preferred = 0;
        self.cache.clear();
    }

    /// The next finished upstream exchange.
    pub async fn done(&mut self) -> Done {
        self.done_rx
            .recv()
            .await
            .expect("the resolver holds a sender, so the channel stays open")
    }

    /// A datagram or TCP message from a client at `src`.
    pub fn question(
        &mut self,
        core: &mut Core,
        bytes: &[u8],
        src: SocketAddr,
        route: Route,
        now: Instant,
        out: &mut Out,
    ) {
        let q = match wire::parse(bytes) {
            Parsed::Question(q) => q,
            Parsed::Reply(bytes) => {
                out.replies.push(Reply {
                    route,
                    bytes,
                    servfail: None,
                });
                return;
            }
            Parsed::Drop => return,
        };
        let SocketAddr::V4(src) = src else {
            return;
        };
        let refuse = |rcode| Reply {
            bytes: wire::empty_reply(bytes, &q, rcode),
            route: route.clone(),
            servfail: None,
        };
        wire::normalize_into(&q.qname, &mut self.name);
        let mac = match core.dns_question(*src.ip(), &self.name, q.qtype, now) {
            DnsVerdict::Refused => return out.replies.push(refuse(ResponseCode::Refused)),
            DnsVerdict::NoData => return out.replies.push(refuse(ResponseCode::NoError)),
            DnsVerdict::Resolve { mac } => mac,
        };
        // Allowed: from here on the name is kept (cache, pending, learned elements).
        let name: Arc<str> = Arc::from(self.name.as_str());
        if let Some(hit) = self.cache.get(&name, q.qtype, now) {
            return self.answer(
                core,
                Waiter {
                    route,
                    q,
                    name,
                    mac,
                },
                hit.rcode,
                &hit.records,
                hit.age,
                now,
                out,
            );
        }
        let key = (name.clone(), q.qtype);
        let full = self.pending.len() >= MAX_PENDING;
        match self.pending.entry(key) {
            // The same question is already out: wait for its answer.
            Entry::Occupied(mut e) if e.get().len() < MAX_WAITERS => e.get_mut().push(Waiter {
                route,
                q,
                name,
                mac,
            }),
            Entry::Occupied(_) => out.replies.push(refuse(ResponseCode::ServFail)),
            Entry::Vacant(_) if full => {
                out.replies.push(refuse(ResponseCode::ServFail));
            }
            Entry::Vacant(e) => {
                let (qname, qtype) = (q.qname.clone(), q.qtype);
                let key = e.key().clone();
                e.insert(vec![Waiter {
                    route,
                    q,
                    name,
                    mac,
                }]);
                let (servers, first, tx) =
                    (self.upstreams.clone(), self.preferred, self.done_tx.clone());
                tokio::spawn(async move {
                    let result =
                        upstream::exchange(&servers, first, &qname, qtype, UPSTREAM_TIMEOUT).await;
                    let _ = tx.send(Done { key, result });
                });
            }
        }
    }

    /// An upstream exchange finished: cache it and answer everyone who was waiting.
    pub fn upstream_done(&mut self, core: &mut Core, done: Done, now: Instant, out: &mut Out) {
        let waiters = self.pending.remove(&done.key).unwrap_or_default();
        match done.result {
            Ok(answer) => {
                self.preferred = answer.server;
                let rcode = answer.reply.rcode;
                let mut records = answer.reply.answers;
                records.truncate(MAX_RECORDS);
                self.cache.put(done.key.0, done.key.1, rcode, &records, now);
                for w in waiters {
                    self.answer(core, w, rcode, &records, 0, now, out);
                }
            }
            Err(e) => {
                warn!("upstream DNS failed for {}: {e}", done.key.0);
                for w in waiters {
                    out.replies.push(Reply {
                        bytes: wire::respond(&w.q, ResponseCode::ServFail, &[], w.route.is_tcp()),
                        route: w.route,
                        servfail: None,
                    });
                }
            }
        }
    }

    /// Answers one client from an upstream answer section `age` seconds old: the CNAME
    /// chain from its question, and the chain's A records that pass the rebinding guard
    /// (learned for the client), with TTLs no longer than the learned elements live.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        core: &mut Core,
        w: Waiter,
        rcode: ResponseCode,
        records: &[Rr],
        age: u32,
        now: Instant,
        out: &mut Out,
    ) {
        let chain = cname_chain(&w.q.qname, records);
        self.addrs.clear();
        self.addrs
            .extend(records.iter().filter_map(|r| match &r.data {
                RrData::A(a) if in_chain(&chain, &r.name) => Some((*a, r.ttl.saturating_sub(age))),
                _ => None,
            }));
        let before = out.changes.len();
        core.dns_answer(
            w.mac,
            &w.name,
            &self.addrs,
            now,
            &mut self.keep,
            &mut out.changes,
        );
        let mut kept = self.keep.iter();
        let answers: Vec<Rr> = records
            .iter()
            .filter(|r| in_chain(&chain, &r.name))
            .filter(|r| match &r.data {
                RrData::Cname(_) => true,
                RrData::A(_) => *kept.next().unwrap_or(&false),
            })
            .map(|r| {
                let mut r = r.clone();
                r.ttl = core.answer_ttl(r.ttl.saturating_sub(age));
                r
            })
            .collect();
        let tcp = w.route.is_tcp();
        let servfail = (out.changes.len() > before)
            .then(|| wire::respond(&w.q, ResponseCode::ServFail, &[], tcp));
        out.replies.push(Reply {
            bytes: wire::respond(&w.q, rcode, &answers, tcp),
            route: w.route,
            servfail,
        });
    }
}

/// The question's name and every name a CNAME in the answer leads to from it.
fn cname_chain(qname: &Name, records: &[Rr]) -> Vec<Name> {
    let mut chain = vec![qname.clone()];
    // A chain longer than the answer is a loop.
    for _ in 0..records.len().min(8) {
        let next = records.iter().find_map(|r| match &r.data {
            RrData::Cname(t) if wire::same_name(&r.name, chain.last().expect("not empty")) => {
                Some(t.clone())
            }
            _ => None,
        });
        match next {
            Some(t) if !in_chain(&chain, &t) => chain.push(t),
            _ => break,
        }
    }
    chain
}

fn in_chain(chain: &[Name], name: &Name) -> bool {
    chain.iter().any(|n| wire::same_name(n, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn chain_follows_cnames_from_the_question_only() {
        let records = vec![
            Rr::cname(n("a.example."), 60, n("b.cdn.example.")),
            Rr::cname(n("b.cdn.example."), 60, n("c.cdn.example.")),
            Rr::a(n("c.cdn.example."), 60, Ipv4Addr::new(11, 1, 0, 10)),
            // Not on the chain: must not be learned under a.example's grant.
            Rr::a(n("other.example."), 60, Ipv4Addr::new(11, 1, 0, 20)),
        ];
        let chain = cname_chain(&n("A.Example."), &records);
        assert_eq!(chain.len(), 3);
        assert!(in_chain(&chain, &n("c.cdn.example.")));
        assert!(!in_chain(&chain, &n("other.example.")));
        // A loop ends.
        let looped = vec![
            Rr::cname(n("x.example."), 60, n("y.example.")),
            Rr::cname(n("y.example."), 60, n("x.example.")),
        ];
        assert_eq!(cname_chain(&n("x.example."), &looped).len(), 2);
    }
}
