//! The fake public resolvers at [`CLOUD_DNS`] and [`CLOUD_DNS2`] (UDP and TCP 53): a zone a
//! test sets ([`Rig::dns_zone`]), CNAME chains followed like a recursive resolver, every
//! question recorded, and silence on demand ([`Rig::dns_silent`]) for timeouts and
//! failover.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::util::{lock, poll_readable};
use super::{CLOUD_DNS, CLOUD_DNS2, Rig};

/// The live fake resolvers.
pub const DNS_SERVERS: [Ipv4Addr; 2] = [CLOUD_DNS, CLOUD_DNS2];
/// How many CNAME links the fake resolvers follow within the zone before they stop.
pub const DNS_MAX_CNAME_LINKS: usize = 8;
/// What the fake resolvers answer to every A question for a name outside the test's zone
/// (see [`Rig::dns_zone`]), with [`DNS_TTL`].
pub const DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(11, 9, 9, 9);
pub const DNS_TTL: u32 = 60;

impl Rig {
    /// Question names (lowercase, no trailing dot) the fake public resolvers (both) received,
    /// in arrival order; also those received while silent.
    pub fn dns_names_seen(&self) -> Vec<String> {
        lock(&self.dns)
            .seen
            .iter()
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// How many questions for `name` (any type; case and a trailing dot do not matter) the
    /// fake resolvers (both together) received so far. CNAME targets that a resolver follows
    /// itself are not questions: only what a client asked counts.
    pub fn dns_queries(&self, name: &str) -> usize {
        let name = dns_key(name);
        lock(&self.dns)
            .seen
            .iter()
            .filter(|(_, n)| *n == name)
            .count()
    }

    /// Like [`Rig::dns_queries`], for the resolver at `server` only ([`CLOUD_DNS`] or
    /// [`CLOUD_DNS2`]).
    pub fn dns_queries_at(&self, server: Ipv4Addr, name: &str) -> usize {
        assert_live_resolver(server);
        let name = dns_key(name);
        let dns = lock(&self.dns);
        dns.seen
            .iter()
            .filter(|(s, n)| *s == server && *n == name)
            .count()
    }

    /// Sets what both fake resolvers answer for `name` (case and a trailing dot do not
    /// matter) from now on, replacing an earlier entry; see [`FakeAnswer`].
    pub fn dns_zone(&self, name: &str, answer: FakeAnswer) {
        // A typo fails here, not as a puzzling answer later.
        for n in std::iter::once(name).chain(answer.cname.as_deref()) {
            if let Err(e) = fqdn(n) {
                panic!("dns_zone({name:?}): bad name {n:?}: {e}");
            }
        }
        lock(&self.dns).zone.insert(dns_key(name), answer);
    }

    /// Empties the zone: every name gets the default answer again.
    pub fn dns_clear_zone(&self) {
        lock(&self.dns).zone.clear();
    }

    /// Makes both fake resolvers stop answering (`true`) or answer again (`false`). While
    /// silent a resolver still records every question but sends nothing back: UDP queries
    /// are dropped; a TCP connection is read and held open (not closed when idle) until the
    /// client gives up. A question received while silent is never answered, also not once
    /// the switch flips back; later questions (also on the same connection) are.
    pub fn dns_silent(&self, silent: bool) {
        for server in DNS_SERVERS {
            self.dns_silent_at(server, silent);
        }
    }

    /// Like [`Rig::dns_silent`], for the resolver at `server` only ([`CLOUD_DNS`] or
    /// [`CLOUD_DNS2`]), e.g. to make a daemon fail over to the other one.
    pub fn dns_silent_at(&self, server: Ipv4Addr, silent: bool) {
        assert_live_resolver(server);
        let mut dns = lock(&self.dns);
        dns.silent.retain(|s| *s != server);
        if silent {
            dns.silent.push(server);
        }
    }
}

/// An idle DNS-over-TCP connection is closed after this (unless its resolver is silent).
const DNS_TCP_IDLE: Duration = Duration::from_secs(5);

/// One DNS-over-TCP connection, until the client closes it, it idles for [`DNS_TCP_IDLE`],
/// or the rig goes away (`stop` polls readable).
pub(super) fn serve_dns_tcp(mut s: TcpStream, dns: &Mutex<DnsState>, stop: &UnixStream) {
    let server = local_v4(s.local_addr());
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(DNS_TCP_IDLE));
    let _ = s.set_write_timeout(Some(DNS_TCP_IDLE));
    let mut idle_since = Instant::now();
    loop {
        let left = (idle_since + DNS_TCP_IDLE).saturating_duration_since(Instant::now());
        let Some(ready) = poll_readable(&[s.as_fd(), stop.as_fd()], Some(left)) else {
            return;
        };
        if ready[1] {
            return;
        }
        if !ready[0] {
            // Idle. A silent resolver holds the connection until the client gives up.
            if lock(dns).silent.contains(&server) {
                idle_since = Instant::now();
                continue;
            }
            return;
        }
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut msg).is_err() {
            return;
        }
        idle_since = Instant::now();
        match dns_reply(&msg, server, dns, false) {
            Handled::Reply(reply) => {
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if s.write_all(&framed).is_err() {
                    return;
                }
            }
            Handled::Silent => {}
            Handled::Garbage => return,
        }
    }
}

/// What the fake resolvers answer for one name of the test's zone ([`Rig::dns_zone`]), to
/// A and AAAA questions; other types always get an empty NOERROR.
#[derive(Clone, Debug, Default)]
pub struct FakeAnswer {
    /// Answer with a CNAME record (with `ttl`) to this name, followed by that name's records
    /// (from the zone, or the default answer if it is not in the zone), like a recursive
    /// resolver does; at most [`DNS_MAX_CNAME_LINKS`] links, and a loop just stops.
    /// `a` and `aaaa` are then ignored.
    pub cname: Option<String>,
    /// The records for A questions (none: NOERROR without answer records).
    pub a: Vec<Ipv4Addr>,
    /// The records for AAAA questions (none: NOERROR without answer records).
    pub aaaa: Vec<Ipv6Addr>,
    /// The TTL of every record of this name (also of its CNAME).
    pub ttl: u32,
    /// Answer with this response code (e.g. NXDomain, ServFail, Refused) and no records
    /// of this name; all other fields are ignored. At the end of a CNAME chain, the
    /// CNAMEs before it are kept (as real resolvers do, RFC 6604).
    pub rcode: Option<ResponseCode>,
}

/// The fake resolvers' state, shared by the rig and the server threads.
#[derive(Default)]
pub(super) struct DnsState {
    /// Keyed by [`dns_key`].
    zone: HashMap<String, FakeAnswer>,
    /// (resolver, question name as [`dns_key`]) in arrival order.
    seen: Vec<(Ipv4Addr, String)>,
    /// Resolvers that currently do not answer.
    silent: Vec<Ipv4Addr>,
}

pub(super) type SharedDns = Arc<Mutex<DnsState>>;

/// How names are compared: lowercase, without the trailing dot.
pub(super) fn dns_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut n = Name::from_ascii(name)?;
    n.set_fqdn(true);
    Ok(n)
}

fn assert_live_resolver(server: Ipv4Addr) {
    assert!(
        DNS_SERVERS.contains(&server),
        "{server} is not a fake resolver (those are {DNS_SERVERS:?})"
    );
}

/// The IPv4 address a server socket is bound to (unspecified if unknown).
pub(super) fn local_v4(addr: std::io::Result<SocketAddr>) -> Ipv4Addr {
    match addr.map(|a| a.ip().to_canonical()) {
        Ok(IpAddr::V4(ip)) => ip,
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

pub(super) enum Handled {
    Reply(Vec<u8>),
    /// The resolver is silent: send nothing.
    Silent,
    /// Not a DNS message (or one we cannot encode an answer to).
    Garbage,
}

/// Records every question name (for `server`) and, unless `server` is silent, answers:
/// from the zone, else A questions with DNS_ANSWER and everything else with an empty
/// NOERROR. Over UDP (`udp`), an answer too big for the client is sent truncated (TC).
pub(super) fn dns_reply(
    wire: &[u8],
    server: Ipv4Addr,
    dns: &Mutex<DnsState>,
    udp: bool,
) -> Handled {
    let Ok(req) = Message::from_vec(wire) else {
        return Handled::Garbage;
    };
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        resp.set_edns(edns);
    }
    {
        let mut state = lock(dns);
        for q in &req.queries {
            state.seen.push((server, dns_key(&q.name.to_ascii())));
        }
        if state.silent.contains(&server) {
            return Handled::Silent;
        }
        for q in &req.queries {
            resp.add_query(q.clone());
            let (rcode, records) = resolve(&state.zone, &q.name, q.query_type);
            resp.add_answers(records);
            if rcode != ResponseCode::NoError {
                resp.metadata.response_code = rcode;
            }
        }
    }
    let Ok(reply) = resp.to_vec() else {
        return Handled::Garbage;
    };
    if udp && reply.len() > usize::from(req.max_payload()) {
        return match resp.truncate().to_vec() {
            Ok(reply) => Handled::Reply(reply),
            Err(_) => Handled::Garbage,
        };
    }
    Handled::Reply(reply)
}

/// The response code and answer records for one question, like a recursive resolver:
/// CNAMEs within the zone are followed (at most [`DNS_MAX_CNAME_LINKS`]; a loop stops).
fn resolve(
    zone: &HashMap<String, FakeAnswer>,
    qname: &Name,
    qtype: RecordType,
) -> (ResponseCode, Vec<Record>) {
    let mut records = Vec::new();
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        return (ResponseCode::NoError, records);
    }
    // The question's spelling for the first owner (a client may check its 0x20 case).
    let mut owner = qname.clone();
    let mut visited = vec![dns_key(&owner.to_ascii())];
    loop {
        let Some(entry) = zone.get(visited.last().expect("not empty")) else {
            // Outside the zone: the rest of the internet.
            if qtype == RecordType::A {
                records.push(Record::from_rdata(owner, DNS_TTL, RData::A(A(DNS_ANSWER))));
            }
            return (ResponseCode::NoError, records);
        };
        if let Some(rcode) = entry.rcode {
            return (rcode, records);
        }
        let Some(target) = &entry.cname else {
            let ttl = entry.ttl;
            let data: Vec<RData> = if qtype == RecordType::A {
                entry.a.iter().map(|ip| RData::A(A(*ip))).collect()
            } else {
                entry.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect()
            };
            records.extend(
                data.into_iter()
                    .map(|d| Record::from_rdata(owner.clone(), ttl, d)),
            );
            return (ResponseCode::NoError, records);
        };
        let Ok(target_name) = fqdn(target) else {
            return (ResponseCode::ServFail, records);
        };
        records.push(Record::from_rdata(
            owner,
            entry.ttl,
            RData::CNAME(CNAME(target_name.clone())),
        ));
        let key = dns_key(target);
        if records.len() >= DNS_MAX_CNAME_LINKS || visited.contains(&key) {
            return (ResponseCode::NoError, records);
        }
        visited.push(key);
        owner = target_name;
    }
}
