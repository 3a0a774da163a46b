//! The router's DNS server for the provisioning network.
//!
//! Every question goes to the provisioner ([`Provisioner::handle_dns_question`]): only
//! clients with a lease, within their rate, asking A or AAAA for an allowed name get past
//! it. Allowed questions are answered from the cache or forwarded upstream; every answer,
//! cached or fresh, goes back to it ([`Provisioner::handle_dns_answer`]), which reads the
//! CNAME chain, drops rebinding records and learns the rest for the asking client; its
//! outcome says which records the reply carries. The outcome of an answer is released only
//! once the kernel took the batch of set changes of that turn: a client's first packet to a
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
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Config;
use crate::core::dns::{MAX_RECORDS, Record, RecordData};
use crate::core::outbox::{DnsOut, DnsOutcome, QueryId};
use crate::core::time::Instant;
use crate::core::{MacAddr, Provisioner};
use cache::Cache;
use wire::{Parsed, Question, Rr, RrData};

/// How long one upstream resolver gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// Questions waiting for upstream answers, at most (beyond that: SERVFAIL at once).
const MAX_PENDING: usize = 1024;
/// Clients waiting for one upstream answer, at most.
const MAX_WAITERS: usize = 64;
const CACHE_ENTRIES: usize = 2048;

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

/// A reply to send.
#[derive(Debug)]
pub struct Reply {
    pub route: Route,
    pub bytes: Vec<u8>,
}

/// One upstream exchange: name and type asked.
type Exchange = (Arc<str>, u16);

/// An upstream exchange that finished.
pub struct Done {
    key: Exchange,
    result: Result<upstream::Answer, String>,
}

/// A question the provisioner is deciding on, or whose answer it is deciding on.
struct Asked {
    route: Route,
    q: Question,
    /// The answer section it is given (set once it is answered), how old.
    answer: Option<(ResponseCode, Arc<[Rr]>, u32)>,
}

/// The DNS edge: questions in, the provisioner's outcomes out as replies; the cache and
/// the upstream exchanges in between. Every decision (who may ask, what is learned, which
/// records make the answer) is the provisioner's.
pub struct Resolver {
    upstreams: Arc<[SocketAddrV4]>,
    preferred: usize,
    cache: Cache,
    /// Questions by upstream exchange: who waits for it, as whom.
    pending: HashMap<Exchange, Vec<(QueryId, MacAddr)>>,
    asked: HashMap<QueryId, Asked>,
    next_id: QueryId,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    // Reused: a question's normalised name, an answer's record names.
    name: String,
    names: Vec<String>,
}

impl Resolver {
    pub fn new(cfg: &Config) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Resolver {
            upstreams: cfg.dns.upstream.clone().into(),
            preferred: 0,
            cache: Cache::new(CACHE_ENTRIES),
            pending: HashMap::new(),
            asked: HashMap::new(),
            next_id: 0,
            done_tx,
            done_rx,
            name: String::new(),
            names: Vec::new(),
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

    /// A datagram or TCP message from a client at `src`: handed to the provisioner, whose
    /// outcome comes back through [`Resolver::outcome`]. Garbage is answered (FORMERR) or
    /// dropped here.
    pub fn question(
        &mut self,
        core: &mut Provisioner,
        bytes: &[u8],
        src: SocketAddr,
        route: Route,
        now: Instant,
        sends: &mut Vec<Reply>,
    ) {
        let q = match wire::parse(bytes) {
            Parsed::Question(q) => q,
            Parsed::Reply(bytes) => return sends.push(Reply { route, bytes }),
            Parsed::Drop => return,
        };
        let SocketAddr::V4(src) = src else {
            return;
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        wire::normalize_into(&q.qname, &mut self.name);
        let qtype = q.qtype;
        self.asked.insert(
            id,
            Asked {
                route,
                q,
                answer: None,
            },
        );
        core.handle_dns_question(id, *src.ip(), &self.name, qtype, now);
    }

    /// What the provisioner decided for a question.
    pub fn outcome(
        &mut self,
        core: &mut Provisioner,
        out: DnsOut,
        now: Instant,
        sends: &mut Vec<Reply>,
    ) {
        let reply = |a: Asked, rcode| Reply {
            bytes: wire::respond(&a.q, rcode, &[], a.route.is_tcp()),
            route: a.route,
        };
        match out.outcome {
            DnsOutcome::Refused | DnsOutcome::NoData | DnsOutcome::ServFail => {
                let Some(a) = self.asked.remove(&out.id) else {
                    return;
                };
                let rcode = match out.outcome {
                    DnsOutcome::Refused => ResponseCode::Refused,
                    DnsOutcome::NoData => ResponseCode::NoError,
                    _ => ResponseCode::ServFail,
                };
                sends.push(reply(a, rcode));
            }
            DnsOutcome::Resolve { mac } => self.resolve(core, out.id, mac, now, sends),
            DnsOutcome::Answer { include, ttl_cap } => {
                let Some(a) = self.asked.remove(&out.id) else {
                    return;
                };
                let Some((rcode, records, age)) = &a.answer else {
                    return;
                };
                let answers: Vec<Rr> = records
                    .iter()
                    .zip(&include)
                    .filter(|(_, keep)| **keep)
                    .map(|(r, _)| {
                        let mut r = r.clone();
                        r.ttl = r.ttl.saturating_sub(*age).min(ttl_cap);
                        r
                    })
                    .collect();
                sends.push(Reply {
                    bytes: wire::respond(&a.q, *rcode, &answers, a.route.is_tcp()),
                    route: a.route,
                });
            }
        }
    }

    /// An allowed question: from the cache, or upstream (one exchange per name and type,
    /// however many ask).
    fn resolve(
        &mut self,
        core: &mut Provisioner,
        id: QueryId,
        mac: MacAddr,
        now: Instant,
        sends: &mut Vec<Reply>,
    ) {
        let Some(a) = self.asked.get(&id) else {
            return;
        };
        wire::normalize_into(&a.q.qname, &mut self.name);
        // Allowed: from here on the name is kept (cache, pending, learned elements).
        let name: Arc<str> = Arc::from(self.name.as_str());
        let qtype = a.q.qtype;
        if let Some(hit) = self.cache.get(&name, qtype, now) {
            return self.answer(core, id, mac, &name, hit.rcode, hit.records, hit.age, now);
        }
        let key = (name, qtype);
        let full = self.pending.len() >= MAX_PENDING;
        match self.pending.entry(key) {
            // The same question is already out: wait for its answer.
            Entry::Occupied(mut e) if e.get().len() < MAX_WAITERS => e.get_mut().push((id, mac)),
            Entry::Occupied(_) => self.fail(id, sends),
            Entry::Vacant(_) if full => self.fail(id, sends),
            Entry::Vacant(e) => {
                let qname = a.q.qname.clone();
                let key = e.key().clone();
                e.insert(vec![(id, mac)]);
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

    /// SERVFAIL for question `id`.
    fn fail(&mut self, id: QueryId, sends: &mut Vec<Reply>) {
        if let Some(a) = self.asked.remove(&id) {
            sends.push(Reply {
                bytes: wire::respond(&a.q, ResponseCode::ServFail, &[], a.route.is_tcp()),
                route: a.route,
            });
        }
    }

    /// An upstream exchange finished: cache it and hand the answer to the provisioner for
    /// everyone who was waiting.
    pub fn upstream_done(
        &mut self,
        core: &mut Provisioner,
        done: Done,
        now: Instant,
        sends: &mut Vec<Reply>,
    ) {
        let waiters = self.pending.remove(&done.key).unwrap_or_default();
        match done.result {
            Ok(answer) => {
                self.preferred = answer.server;
                let rcode = answer.reply.rcode;
                let mut records = answer.reply.answers;
                // The provisioner reads no further than this; neither does the cache keep.
                records.truncate(MAX_RECORDS);
                let records: Arc<[Rr]> = records.into();
                self.cache
                    .put(done.key.0.clone(), done.key.1, rcode, &records, now);
                for (id, mac) in waiters {
                    self.answer(core, id, mac, &done.key.0, rcode, records.clone(), 0, now);
                }
            }
            Err(e) => {
                warn!("upstream DNS failed for {}: {e}", done.key.0);
                for (id, _) in waiters {
                    self.fail(id, sends);
                }
            }
        }
    }

    /// Hands an answer section (`age` seconds old) for question `id` to the provisioner,
    /// which decides what of it the client gets.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        core: &mut Provisioner,
        id: QueryId,
        mac: MacAddr,
        name: &Arc<str>,
        rcode: ResponseCode,
        records: Arc<[Rr]>,
        age: u32,
        now: Instant,
    ) {
        let Some(asked) = self.asked.get_mut(&id) else {
            return;
        };
        // The records' names as the provisioner compares them: lower case, no final dot.
        let names = &mut self.names;
        while names.len() < 2 * records.len() {
            names.push(String::new());
        }
        for (i, r) in records.iter().enumerate() {
            wire::normalize_into(&r.name, &mut names[2 * i]);
            if let RrData::Cname(t) = &r.data {
                wire::normalize_into(t, &mut names[2 * i + 1]);
            }
        }
        let view: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| Record {
                owner: &names[2 * i],
                ttl: r.ttl,
                data: match &r.data {
                    RrData::A(a) => RecordData::A(*a),
                    RrData::Cname(_) => RecordData::Cname(&names[2 * i + 1]),
                },
            })
            .collect();
        core.handle_dns_answer(id, mac, name, &view, age, now);
        asked.answer = Some((rcode, records, age));
    }
}
