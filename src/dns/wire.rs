//! DNS messages in and out (hickory-proto's wire format): what a client asked, and the
//! answers we send back.

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};

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
    /// Lower case, no trailing dot, anything but letters, digits, `-` and `_` escaped as
    /// `\DDD`: safe to match, to log and to put in an nft comment.
    pub name: Arc<str>,
    pub qtype: u16,
    /// Did the client send EDNS; the UDP payload it accepts.
    pub edns: Option<u16>,
}

pub enum Parsed {
    Question(Question),
    /// Not something we answer normally, but it deserves an error reply.
    Reply(Vec<u8>),
    /// Not even a header: drop it.
    Drop,
}

/// Normalises a name for matching and logging (see [`Question::name`]).
pub fn normalize(name: &Name) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            match b.to_ascii_lowercase() {
                c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_') => out.push(c as char),
                c => {
                    out.push('\\');
                    out.push_str(&format!("{c:03}"));
                }
            }
        }
    }
    out
}

pub fn parse(bytes: &[u8]) -> Parsed {
    let msg = match Message::from_vec(bytes) {
        Ok(m) => m,
        // A header we can answer with FORMERR, or nothing at all.
        Err(_) if bytes.len() >= 12 => {
            let id = u16::from_be_bytes([bytes[0], bytes[1]]);
            let is_query = bytes[2] & 0x80 == 0;
            return if is_query {
                Parsed::Reply(error_reply(id, OpCode::Query, ResponseCode::FormErr))
            } else {
                Parsed::Drop
            };
        }
        Err(_) => return Parsed::Drop,
    };
    let md = &msg.metadata;
    if md.message_type != MessageType::Query {
        return Parsed::Drop;
    }
    if md.op_code != OpCode::Query {
        return Parsed::Reply(error_reply(md.id, md.op_code, ResponseCode::NotImp));
    }
    let [q] = msg.queries.as_slice() else {
        return Parsed::Reply(error_reply(md.id, md.op_code, ResponseCode::FormErr));
    };
    if q.query_class != DNSClass::IN {
        return Parsed::Reply(error_reply(md.id, md.op_code, ResponseCode::Refused));
    }
    Parsed::Question(Question {
        id: md.id,
        recursion_desired: md.recursion_desired,
        name: normalize(&q.name).into(),
        qname: q.name.clone(),
        qtype: u16::from(q.query_type),
        edns: msg
            .edns
            .as_ref()
            .map(|e| e.max_payload().max(CLASSIC_UDP as u16)),
    })
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
        assert_eq!(&*q.name, "setup.acme.example");
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
            if let Parsed::Question(q) = parse(&q) {
                let _ = respond(&q, ResponseCode::Refused, vec![], false);
            }
        }
    }
}
