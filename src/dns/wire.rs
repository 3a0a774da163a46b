//! DNS messages in and out: what a client asked, what an upstream answered, and the
//! replies we send. hickory-proto reads and writes the header, the question and names
//! (with compression); the records are the few kinds we handle (A, CNAME, OPT), so the
//! binary carries none of hickory's general record parsers and printers (a full `Message`
//! drags in every RDATA type and CAA's URL parser: 115 KB of 1.43 MB on mipsel).

use std::net::Ipv4Addr;

use hickory_proto::op::{Header, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

/// Largest UDP answer we send when the client says nothing (RFC 1035), and the most we
/// offer with EDNS (the DNS flag day 2020 value, safe from fragmentation).
pub const CLASSIC_UDP: usize = 512;
pub const EDNS_UDP: u16 = 1232;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;

/// A client's question, reduced to what answering it needs.
#[derive(Clone, Debug)]
pub struct Question {
    pub id: u16,
    pub recursion_desired: bool,
    /// As the client wrote it (echoed back, case preserved).
    pub qname: Name,
    pub qtype: u16,
    /// Did the client send EDNS; the UDP payload it accepts.
    pub edns: Option<u16>,
    /// Where the question section ends in the request: header and question are reused
    /// as they are for replies without records ([`empty_reply`]).
    question_end: usize,
}

pub enum Parsed {
    Question(Question),
    /// Not something we answer normally, but it deserves an error reply.
    Reply(Vec<u8>),
    /// Not even a header: drop it.
    Drop,
}

/// A record of an upstream answer that we keep: an A question is answered with the
/// CNAMEs that lead to its A records, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    pub name: Name,
    pub ttl: u32,
    pub data: RrData,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RrData {
    A(Ipv4Addr),
    Cname(Name),
}

impl Rr {
    pub fn a(name: Name, ttl: u32, addr: Ipv4Addr) -> Rr {
        Rr {
            name,
            ttl,
            data: RrData::A(addr),
        }
    }

    pub fn cname(name: Name, ttl: u32, target: Name) -> Rr {
        Rr {
            name,
            ttl,
            data: RrData::Cname(target),
        }
    }
}

/// An upstream's reply to our question: its rcode, TC flag and the answer section's A and
/// CNAME records of class IN (other records are skipped).
#[derive(Clone, Debug)]
pub struct UpstreamReply {
    pub rcode: ResponseCode,
    pub truncated: bool,
    pub answers: Vec<Rr>,
}

/// Writes a name as the allow-list and the log see it: lower case, no trailing dot,
/// anything but letters, digits, `-` and `_` escaped as `\DDD`. Safe to match, to log and
/// to put in an nft comment.
pub fn normalize_into(name: &Name, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            match b.to_ascii_lowercase() {
                c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_') => out.push(c as char),
                c => {
                    let _ = write!(out, "\\{c:03}");
                }
            }
        }
    }
}

/// The same name, whatever the case (and with or without the root): label by label, on
/// the bytes, as they came off the wire (hickory's `eq_ignore_root` rebuilds each label
/// to compare it).
pub fn same_name(a: &Name, b: &Name) -> bool {
    a.num_labels() == b.num_labels()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.eq_ignore_ascii_case(y))
}

pub fn normalize(name: &Name) -> String {
    let mut out = String::with_capacity(name.len());
    normalize_into(name, &mut out);
    out
}

/// A resource record's fixed part; the decoder is left after its data.
struct RawRr<'a> {
    name: Name,
    rtype: u16,
    class: u16,
    ttl: u32,
    /// Where the data starts in the message (names in it may point back).
    rdata_at: usize,
    rdata: &'a [u8],
}

fn read_rr<'a>(d: &mut BinDecoder<'a>) -> Option<RawRr<'a>> {
    let name = Name::read(d).ok()?;
    let rtype = d.read_u16().ok()?.unverified();
    let class = d.read_u16().ok()?.unverified();
    let ttl = d.read_u32().ok()?.unverified();
    let len = d.read_u16().ok()?.unverified();
    let rdata_at = d.index();
    let rdata = d.read_slice(usize::from(len)).ok()?.unverified();
    Some(RawRr {
        name,
        rtype,
        class,
        ttl,
        rdata_at,
        rdata,
    })
}

/// Reads a client's message: the header and the one question, and the records after it
/// only to find an EDNS OPT record.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut d = BinDecoder::new(bytes);
    let Ok(header) = Header::read(&mut d) else {
        return Parsed::Drop;
    };
    let md = header.metadata;
    if md.message_type != MessageType::Query {
        return Parsed::Drop;
    }
    if md.op_code != OpCode::Query {
        return Parsed::Reply(error_reply(md.id, md.op_code, ResponseCode::NotImp));
    }
    let formerr = || Parsed::Reply(error_reply(md.id, md.op_code, ResponseCode::FormErr));
    if header.counts.queries != 1 {
        return formerr();
    }
    let Ok(q) = Query::read(&mut d) else {
        return formerr();
    };
    let question_end = d.index();
    let mut edns = None;
    let records = u32::from(header.counts.answers)
        + u32::from(header.counts.authorities)
        + u32::from(header.counts.additionals);
    for _ in 0..records {
        match read_rr(&mut d) {
            // An OPT record's class is the UDP payload the client takes.
            Some(r) if r.rtype == TYPE_OPT => edns = Some(r.class.max(CLASSIC_UDP as u16)),
            Some(_) => {}
            None => return formerr(),
        }
    }
    if q.query_class != DNSClass::IN {
        return Parsed::Reply(error_reply(md.id, md.op_code, ResponseCode::Refused));
    }
    Parsed::Question(Question {
        id: md.id,
        recursion_desired: md.recursion_desired,
        qname: q.name,
        qtype: u16::from(q.query_type),
        edns,
        question_end,
    })
}

/// Reads an upstream's reply if it answers exactly our query `id` for (`qname`,
/// `qtype`): a forged, stray or malformed datagram is `None`.
pub fn parse_reply(bytes: &[u8], id: u16, qname: &Name, qtype: u16) -> Option<UpstreamReply> {
    let mut d = BinDecoder::new(bytes);
    let header = Header::read(&mut d).ok()?;
    let md = header.metadata;
    if md.id != id || md.message_type != MessageType::Response || header.counts.queries != 1 {
        return None;
    }
    let q = Query::read(&mut d).ok()?;
    if !same_name(&q.name, qname) || u16::from(q.query_type) != qtype {
        return None;
    }
    let mut answers = Vec::new();
    for _ in 0..header.counts.answers {
        let r = read_rr(&mut d)?;
        if r.class != CLASS_IN {
            continue;
        }
        let data = match (r.rtype, r.rdata) {
            (TYPE_A, &[a, b, c, e]) => RrData::A(Ipv4Addr::new(a, b, c, e)),
            (TYPE_A, _) => return None,
            (TYPE_CNAME, _) => {
                // The target may point back into the message, so it is read in place.
                let mut rd = d.clone(u16::try_from(r.rdata_at).ok()?);
                let target = Name::read(&mut rd).ok()?;
                if rd.index() != r.rdata_at + r.rdata.len() {
                    return None;
                }
                RrData::Cname(target)
            }
            _ => continue,
        };
        answers.push(Rr {
            name: r.name,
            ttl: r.ttl,
            data,
        });
    }
    Some(UpstreamReply {
        rcode: md.response_code,
        truncated: md.truncation,
        answers,
    })
}

/// A message header: `flags` are the second 16 bits (QR, opcode, AA, TC, RD, RA, rcode).
fn put_header(
    out: &mut Vec<u8>,
    id: u16,
    flags: u16,
    questions: u16,
    answers: u16,
    additionals: u16,
) {
    for v in [id, flags, questions, answers, 0, additionals] {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Our OPT record: root name, type OPT, class = our UDP payload, TTL (extended rcode,
/// version, flags) 0, no options.
fn put_opt(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
    out.extend_from_slice(&EDNS_UDP.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
}

const QR: u16 = 0x8000;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;

fn rcode_bits(rcode: ResponseCode) -> u16 {
    u16::from(rcode.low())
}

/// A reply without records (REFUSED, an empty NOERROR, SERVFAIL) to `request`, which `q`
/// was parsed from: its header and question reused as they are, flags and counts set, and
/// an OPT record if the client sent one.
pub fn empty_reply(request: &[u8], q: &Question, rcode: ResponseCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.question_end + 11);
    out.extend_from_slice(&request[..q.question_end]);
    // QR, the request's opcode and RD; RA; the rcode. One question, nothing else.
    out[2] = 0x80 | (request[2] & 0x79);
    out[3] = 0x80 | (rcode.low() & 0x0f);
    out[6..12].fill(0);
    if q.edns.is_some() {
        out[11] = 1;
        put_opt(&mut out);
    }
    out
}

/// A header-only reply (FORMERR, NOTIMP, REFUSED) to a message we do not take apart.
fn error_reply(id: u16, op: OpCode, rcode: ResponseCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    let op = (u16::from(u8::from(op)) & 0x0f) << 11;
    put_header(&mut out, id, QR | op | rcode_bits(rcode), 0, 0, 0);
    out
}

/// Header, question and (with `edns`) the OPT record; the records go in between.
fn message(
    id: u16,
    flags: u16,
    qname: &Name,
    qtype: u16,
    answers: &[Rr],
    edns: bool,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(CLASSIC_UDP);
    let count = u16::try_from(answers.len()).ok()?;
    put_header(&mut out, id, flags, 1, count, u16::from(edns));
    {
        let mut e = BinEncoder::with_offset(&mut out, HEADER_LEN as u32);
        qname.emit(&mut e).ok()?;
        e.emit_u16(qtype).ok()?;
        e.emit_u16(CLASS_IN).ok()?;
        for r in answers {
            r.name.emit(&mut e).ok()?;
            let rtype = match r.data {
                RrData::A(_) => TYPE_A,
                RrData::Cname(_) => TYPE_CNAME,
            };
            e.emit_u16(rtype).ok()?;
            e.emit_u16(CLASS_IN).ok()?;
            e.emit_u32(r.ttl).ok()?;
            let len = e.place::<u16>().ok()?;
            match &r.data {
                RrData::A(a) => e.emit_vec(&a.octets()).ok()?,
                RrData::Cname(target) => target.emit(&mut e).ok()?,
            }
            let n = u16::try_from(e.len_since_place(&len)).ok()?;
            len.replace(&mut e, n).ok()?;
        }
    }
    if edns {
        put_opt(&mut out);
    }
    Some(out)
}

/// Encodes an answer to `q`. Over UDP, an answer larger than the client takes is sent
/// truncated (TC, no records) so that it retries over TCP.
pub fn respond(q: &Question, rcode: ResponseCode, answers: &[Rr], tcp: bool) -> Vec<u8> {
    let rd = if q.recursion_desired { RD } else { 0 };
    let flags = QR | rd | RA | rcode_bits(rcode);
    let edns = q.edns.is_some();
    let limit = q.edns.map_or(CLASSIC_UDP, |p| usize::from(p.min(EDNS_UDP)));
    match message(q.id, flags, &q.qname, q.qtype, answers, edns) {
        Some(bytes) if tcp || bytes.len() <= limit => bytes,
        // Too big for UDP (or, over TCP, beyond 64 KiB or a count: never from one
        // upstream answer): TC, so that the client asks again over TCP.
        _ => message(q.id, flags | TC, &q.qname, q.qtype, &[], edns).unwrap_or_default(),
    }
}

/// The query we send upstream for `q`: a fresh id, recursion desired, EDNS so that big
/// answers come over UDP.
pub fn upstream_query(id: u16, qname: &Name, qtype: u16) -> Vec<u8> {
    message(id, RD, qname, qtype, &[], true).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, TXT};
    use hickory_proto::rr::{RData, Record, RecordType};
    use proptest::prelude::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn question(bytes: &[u8]) -> Question {
        match parse(bytes) {
            Parsed::Question(q) => q,
            _ => panic!("not a question"),
        }
    }

    #[test]
    fn names_compare_without_case_or_root() {
        assert!(same_name(&n("A.Example."), &n("a.example")));
        assert!(!same_name(&n("a.example."), &n("a.example.com.")));
        assert!(!same_name(&n("a.example."), &n("b.example.")));
        assert!(!same_name(&n("example."), &n("a.example.")));
        // Bytes, not text: a label with a dot in it is not two labels.
        let dotted = Name::from_labels(vec![b"a.b".to_vec(), b"example".to_vec()]).unwrap();
        assert!(!same_name(&dotted, &n("a.b.example.")));
        assert!(same_name(&Name::root(), &Name::root()));
    }

    #[test]
    fn names_are_normalised_and_safe() {
        let q = question(&query("Setup.ACME.example.", RecordType::A, false));
        assert_eq!(normalize(&q.qname), "setup.acme.example");
        assert_eq!(q.qname.to_ascii(), "Setup.ACME.example.");
        assert_eq!(q.qtype, 1);
        let weird = Name::from_labels(vec![b"a b".to_vec(), b"ex\"ample".to_vec()]).unwrap();
        assert_eq!(normalize(&weird), "a\\032b.ex\\034ample");
    }

    #[test]
    fn errors_for_what_is_not_a_plain_question() {
        assert!(matches!(parse(&[1, 2, 3]), Parsed::Drop));
        let mut garbage = query("a.example", RecordType::A, false);
        garbage.truncate(14);
        let Parsed::Reply(r) = parse(&garbage) else {
            panic!("FORMERR expected")
        };
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (0x4242, ResponseCode::FormErr)
        );
        // A response is never answered.
        let mut resp = Message::from_vec(&query("a.example", RecordType::A, false)).unwrap();
        resp.metadata.message_type = MessageType::Response;
        assert!(matches!(parse(&resp.to_vec().unwrap()), Parsed::Drop));
    }

    #[test]
    fn empty_replies_reuse_the_question() {
        for edns in [false, true] {
            let req = query("Setup.Acme.Example", RecordType::TXT, edns);
            let q = question(&req);
            assert_eq!(q.edns.is_some(), edns);
            for rcode in [
                ResponseCode::Refused,
                ResponseCode::NoError,
                ResponseCode::ServFail,
            ] {
                let bytes = empty_reply(&req, &q, rcode);
                let m = Message::from_vec(&bytes).unwrap();
                assert_eq!(m.metadata.id, 0x4242);
                assert_eq!(m.metadata.message_type, MessageType::Response);
                assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
                assert_eq!(m.metadata.response_code, rcode);
                assert_eq!(m.queries.len(), 1);
                assert_eq!(m.queries[0].name.to_ascii(), "Setup.Acme.Example.");
                assert_eq!(m.queries[0].query_type, RecordType::TXT);
                assert!(m.answers.is_empty() && m.authorities.is_empty());
                assert_eq!(m.edns.map(|e| e.max_payload()), edns.then_some(EDNS_UDP));
                // The same as the full encoder would say.
                let full = Message::from_vec(&respond(&q, rcode, &[], false)).unwrap();
                assert_eq!(full.metadata, m.metadata);
                assert_eq!(full.queries, m.queries);
            }
        }
    }

    #[test]
    fn big_answers_are_truncated_over_udp_only() {
        let q = question(&query("a.example", RecordType::A, false));
        let many: Vec<Rr> = (0..60)
            .map(|i| Rr::a(q.qname.clone(), 60, Ipv4Addr::new(11, 1, 0, i)))
            .collect();
        let udp = Message::from_vec(&respond(&q, ResponseCode::NoError, &many, false)).unwrap();
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        let tcp = Message::from_vec(&respond(&q, ResponseCode::NoError, &many, true)).unwrap();
        assert_eq!(tcp.answers.len(), 60);
        // With EDNS the client takes more.
        let q = question(&query("a.example", RecordType::A, true));
        let edns = Message::from_vec(&respond(&q, ResponseCode::NoError, &many, false)).unwrap();
        assert!(!edns.metadata.truncation);
        assert_eq!(edns.answers.len(), 60);
    }

    /// What an upstream might send for `a.example. A`: a CNAME chain (names compressed
    /// against each other), records of other types and classes, an authority and EDNS.
    fn upstream_reply(id: u16) -> Message {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        let mut q = Query::query(n("A.Example."), RecordType::A);
        q.query_class = DNSClass::IN;
        m.add_query(q);
        m.answers = vec![
            Record::from_rdata(
                n("a.example."),
                300,
                RData::CNAME(CNAME(n("b.cdn.example."))),
            ),
            Record::from_rdata(n("b.cdn.example."), 20, RData::A(A::new(11, 1, 0, 10))),
            Record::from_rdata(
                n("b.cdn.example."),
                20,
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            ),
            Record::from_rdata(
                n("b.cdn.example."),
                20,
                RData::TXT(TXT::new(vec!["x".into()])),
            ),
            Record::from_rdata(n("b.cdn.example."), 20, RData::A(A::new(11, 1, 0, 11))),
        ];
        let mut chaos = Record::from_rdata(n("b.cdn.example."), 20, RData::A(A::new(1, 2, 3, 4)));
        chaos.dns_class = DNSClass::CH;
        m.answers.push(chaos);
        m.authorities = vec![Record::from_rdata(
            n("cdn.example."),
            60,
            RData::SOA(SOA::new(
                n("ns.cdn.example."),
                n("h.cdn.example."),
                1,
                2,
                3,
                4,
                5,
            )),
        )];
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
        m
    }

    #[test]
    fn upstream_replies_keep_their_a_and_cname_records() {
        let bytes = upstream_reply(7).to_vec().unwrap();
        let r = parse_reply(&bytes, 7, &n("a.example."), 1).expect("our answer");
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(!r.truncated);
        assert_eq!(
            r.answers,
            [
                Rr::cname(n("a.example."), 300, n("b.cdn.example.")),
                Rr::a(n("b.cdn.example."), 20, Ipv4Addr::new(11, 1, 0, 10)),
                Rr::a(n("b.cdn.example."), 20, Ipv4Addr::new(11, 1, 0, 11)),
            ]
        );
        let mut nx = upstream_reply(7);
        nx.metadata.response_code = ResponseCode::NXDomain;
        nx.metadata.truncation = true;
        nx.answers.clear();
        let r = parse_reply(&nx.to_vec().unwrap(), 7, &n("a.example."), 1).unwrap();
        assert_eq!(
            (r.rcode, r.truncated, r.answers.len()),
            (ResponseCode::NXDomain, true, 0)
        );
    }

    #[test]
    fn upstream_replies_must_match_id_and_question() {
        let bytes = upstream_reply(7).to_vec().unwrap();
        assert!(
            parse_reply(&bytes, 7, &n("a.example"), 1).is_some(),
            "case and root aside"
        );
        assert!(parse_reply(&bytes, 8, &n("a.example."), 1).is_none());
        assert!(parse_reply(&bytes, 7, &n("a.example."), 28).is_none());
        assert!(parse_reply(&bytes, 7, &n("b.example."), 1).is_none());
        // A query is no answer, even with the right id and question.
        let query = upstream_query(7, &n("a.example."), 1);
        assert!(parse_reply(&query, 7, &n("a.example."), 1).is_none());
        // And our query is what a resolver reads as one.
        let m = Message::from_vec(&query).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name, n("a.example."));
        assert_eq!(m.queries[0].query_type, RecordType::A);
        assert_eq!(m.edns.map(|e| e.max_payload()), Some(EDNS_UDP));
    }

    #[test]
    fn malformed_upstream_records_spoil_the_reply() {
        let good = upstream_reply(7).to_vec().unwrap();
        let qname = n("a.example.");
        // Cut anywhere in the answer section, a reply is refused, never half read (cut
        // after it, in what we do not read, its answers are all there).
        let whole = parse_reply(&good, 7, &qname, 1).unwrap().answers.len();
        for cut in 12..good.len() {
            if let Some(r) = parse_reply(&good[..cut], 7, &qname, 1) {
                assert_eq!(r.answers.len(), whole, "cut at {cut} read a partial answer");
            }
        }
        // `a.example. A?` answered by one record, given from its type on (the owner name
        // points at the question's).
        let one_answer = |record: &[u8]| {
            let mut b = Vec::new();
            put_header(&mut b, 7, QR | RD | RA, 1, 1, 0);
            b.extend_from_slice(&[1, b'a', 7]);
            b.extend_from_slice(b"example");
            b.extend_from_slice(&[0, 0, 1, 0, 1, 0xc0, 12]);
            b.extend_from_slice(record);
            b
        };
        // An A record of 3 bytes (A IN, TTL 60, RDLENGTH 3).
        let a_short = one_answer(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 11, 1, 0]);
        assert!(parse_reply(&a_short, 7, &qname, 1).is_none());
        // A CNAME of RDLENGTH 2 whose name, b.example., takes 4.
        let cname_long = one_answer(&[0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 1, b'b', 0xc0, 14]);
        assert!(parse_reply(&cname_long, 7, &qname, 1).is_none());
        let mut fixed = cname_long.clone();
        let at = fixed.len() - 5;
        fixed[at] = 4;
        let r = parse_reply(&fixed, 7, &qname, 1).expect("the same with RDLENGTH 4");
        assert_eq!(r.answers, [Rr::cname(n("a.example."), 60, n("b.example."))]);
    }

    #[test]
    fn our_answers_read_back_the_same_by_a_full_decoder() {
        let q = question(&query("A.Example.", RecordType::A, true));
        let records = vec![
            Rr::cname(n("a.example."), 300, n("b.cdn.example.")),
            Rr::a(n("b.cdn.example."), 20, Ipv4Addr::new(11, 1, 0, 10)),
            Rr::a(n("b.cdn.example."), 19, Ipv4Addr::new(11, 1, 0, 11)),
        ];
        let bytes = respond(&q, ResponseCode::NoError, &records, false);
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 0x4242);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert!(!m.metadata.truncation && !m.metadata.authoritative);
        assert_eq!(m.queries[0].name.to_ascii(), "A.Example.");
        let back: Vec<Rr> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => Rr::a(r.name.clone(), r.ttl, a.0),
                RData::CNAME(c) => Rr::cname(r.name.clone(), r.ttl, c.0.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(back, records);
        assert!(m.answers.iter().all(|r| r.dns_class == DNSClass::IN));
        assert_eq!(m.edns.map(|e| e.max_payload()), Some(EDNS_UDP));
        // Names are compressed: the repeated ones cost two bytes each.
        let uncompressed = 12 + 11 + 4 + (11 + 10 + 15) + 2 * (15 + 10 + 4) + 11;
        assert!(bytes.len() < uncompressed - 30, "{} bytes", bytes.len());
        // And through our own reader, as a client's resolver of ours would see it.
        let mut as_reply = bytes.clone();
        as_reply[0..2].copy_from_slice(&7u16.to_be_bytes());
        let r = parse_reply(&as_reply, 7, &n("a.example."), 1).unwrap();
        assert_eq!(r.answers, records);
    }

    #[test]
    fn error_replies_echo_id_and_opcode() {
        let mut m = Message::from_vec(&query("a.example", RecordType::A, false)).unwrap();
        m.metadata.op_code = OpCode::Status;
        let Parsed::Reply(r) = parse(&m.to_vec().unwrap()) else {
            panic!("NOTIMP expected")
        };
        let r = Message::from_vec(&r).unwrap();
        assert_eq!(r.metadata.id, 0x4242);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.metadata.op_code, OpCode::Status);
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn mutated_queries_never_panic(flip in 0usize..40, byte in any::<u8>()) {
            let mut q = query("setup.acme.example", RecordType::A, true);
            if flip < q.len() { q[flip] = byte; }
            if let Parsed::Question(parsed) = parse(&q) {
                let _ = respond(&parsed, ResponseCode::Refused, &[], false);
                let _ = empty_reply(&q, &parsed, ResponseCode::Refused);
            }
        }

        #[test]
        fn parse_reply_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_reply(&bytes, 7, &n("a.example."), 1);
        }

        #[test]
        fn mutated_replies_never_panic(flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..4)) {
            let mut b = upstream_reply(7).to_vec().unwrap();
            for (at, byte) in flips {
                if at < b.len() { b[at] = byte; }
            }
            if let Some(r) = parse_reply(&b, 7, &n("a.example."), 1) {
                let q = question(&query("a.example", RecordType::A, false));
                let _ = respond(&q, r.rcode, &r.answers, false);
            }
        }
    }

    /// Not a test: writes the fuzz target's seeds from these samples (`cargo test --lib
    /// fuzz_seeds -- --ignored`; see README.md, "Fuzzing").
    #[test]
    #[ignore]
    fn fuzz_seeds() {
        crate::fuzz_seed("dns", "query", &query("a.example.", RecordType::A, false));
        crate::fuzz_seed(
            "dns",
            "query-edns",
            &query("A.Example.", RecordType::AAAA, true),
        );
        crate::fuzz_seed("dns", "reply", &upstream_reply(7).to_vec().unwrap());
    }
}
