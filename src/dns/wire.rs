//! DNS messages in and out (hickory-proto's wire format): what a client asked, and the
//! answers we send back.

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Largest UDP answer we send when the client says nothing (RFC 1035), and the most we
/// offer with EDNS (the DNS flag day 2020 value, safe from fragmentation).
pub const CLASSIC_UDP: usize = 512;
pub const EDNS_UDP: u16 = 1232;

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

pub fn normalize(name: &Name) -> String {
    let mut out = String::with_capacity(name.len());
    normalize_into(name, &mut out);
    out
}

/// Reads a client's message: the header and the one question, and the additional
/// section only for an EDNS OPT record. (The question path builds no full `Message`.)
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
        match Record::<RData>::read(&mut d) {
            Ok(r) => {
                if let DNSClass::OPT(payload) = r.dns_class {
                    edns = Some(payload.max(CLASSIC_UDP as u16));
                }
            }
            Err(_) => return formerr(),
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

/// A reply without records (REFUSED, an empty NOERROR, SERVFAIL) to `request`, which `q`
/// was parsed from: its header and question reused as they are, flags and counts set, and
/// an OPT record if the client sent one.
pub fn empty_reply(request: &[u8], q: &Question, rcode: ResponseCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.question_end + 11);
    out.extend_from_slice(&request[..q.question_end]);
    // QR, the request's opcode and RD; RA; the rcode. One question, nothing else.
    out[2] = 0x80 | (request[2] & 0x79);
    out[3] = 0x80 | (u16::from(rcode) as u8 & 0x0f);
    out[6..12].fill(0);
    if q.edns.is_some() {
        out[11] = 1;
        // Root name, type OPT, class = our UDP payload, TTL (extended rcode, version,
        // flags) 0, no options.
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&EDNS_UDP.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    out
}

fn error_reply(id: u16, op: OpCode, rcode: ResponseCode) -> Vec<u8> {
    Message::error_msg(id, op, rcode)
        .to_vec()
        .unwrap_or_default()
}

/// Encodes an answer to `q`. Over UDP, an answer larger than the client takes is sent
/// truncated (TC, no records) so that it retries over TCP.
pub fn respond(q: &Question, rcode: ResponseCode, answers: Vec<Record>, tcp: bool) -> Vec<u8> {
    let mut m = Message::new(q.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    let mut query = Query::query(q.qname.clone(), RecordType::from(q.qtype));
    query.query_class = DNSClass::IN;
    m.add_query(query);
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_UDP);
        m.set_edns(e);
    }
    m.answers = answers;
    let bytes = m.to_vec().unwrap_or_default();
    let limit = q.edns.map_or(CLASSIC_UDP, |p| usize::from(p.min(EDNS_UDP)));
    if tcp || bytes.len() <= limit {
        return bytes;
    }
    m.answers.clear();
    m.metadata.truncation = true;
    m.to_vec().unwrap_or_default()
}

/// The query we send upstream for `q`: a fresh id, recursion desired, EDNS so that big
/// answers come over UDP.
pub fn upstream_query(id: u16, qname: &Name, qtype: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let mut query = Query::query(qname.clone(), RecordType::from(qtype));
    query.query_class = DNSClass::IN;
    m.add_query(query);
    let mut e = Edns::new();
    e.set_max_payload(EDNS_UDP);
    m.set_edns(e);
    m.to_vec().unwrap_or_default()
}

/// Whether `reply` answers the query with `id` for (`qname`, `qtype`): a forged or stray
/// datagram must match all three.
pub fn answers(reply: &Message, id: u16, qname: &Name, qtype: u16) -> bool {
    reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && matches!(reply.queries.as_slice(), [q] if q.name.eq_ignore_root(qname)
            && u16::from(q.query_type) == qtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::A;
    use proptest::prelude::*;

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
                let full = Message::from_vec(&respond(&q, rcode, vec![], false)).unwrap();
                assert_eq!(full.metadata, m.metadata);
                assert_eq!(full.queries, m.queries);
            }
        }
    }

    #[test]
    fn big_answers_are_truncated_over_udp_only() {
        let q = question(&query("a.example", RecordType::A, false));
        let many: Vec<Record> = (0..60)
            .map(|i| Record::from_rdata(q.qname.clone(), 60, RData::A(A::new(11, 1, 0, i))))
            .collect();
        let udp =
            Message::from_vec(&respond(&q, ResponseCode::NoError, many.clone(), false)).unwrap();
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        let tcp =
            Message::from_vec(&respond(&q, ResponseCode::NoError, many.clone(), true)).unwrap();
        assert_eq!(tcp.answers.len(), 60);
        // With EDNS the client takes more.
        let q = question(&query("a.example", RecordType::A, true));
        let edns = Message::from_vec(&respond(&q, ResponseCode::NoError, many, false)).unwrap();
        assert!(!edns.metadata.truncation);
        assert_eq!(edns.answers.len(), 60);
    }

    #[test]
    fn replies_must_match_id_and_question() {
        let qname = Name::from_ascii("a.example.").unwrap();
        let bytes = upstream_query(7, &qname, 1);
        let mut reply = Message::from_vec(&bytes).unwrap();
        reply.metadata.message_type = MessageType::Response;
        assert!(answers(
            &reply,
            7,
            &Name::from_ascii("A.Example.").unwrap(),
            1
        ));
        assert!(!answers(&reply, 8, &qname, 1));
        assert!(!answers(&reply, 7, &qname, 28));
        assert!(!answers(
            &reply,
            7,
            &Name::from_ascii("b.example.").unwrap(),
            1
        ));
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
                let _ = respond(&parsed, ResponseCode::Refused, vec![], false);
                let _ = empty_reply(&q, &parsed, ResponseCode::Refused);
            }
        }
    }
}
