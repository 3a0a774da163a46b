//! Any datagram as a client's question and as an upstream's reply, through the path an
//! answer takes (wire.rs, cache.rs): never a panic, and what we send reads back as meant.
//! A question's answers (refused, empty, with records) are replies to exactly that
//! question; an upstream's records kept in the cache come out as they went in, and
//! answered over TCP (or UDP when they fit) read back the same.
#![no_main]
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, Query, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use libfuzzer_sys::fuzz_target;
use provisioner::core::dns::MAX_RECORDS;
use provisioner::core::time::Instant;
use provisioner::dns::cache::Cache;
use provisioner::dns::wire::{
    self, Parsed, Question, empty_reply, parse, parse_reply, respond, upstream_query,
};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Question(q) = parse(data) {
        let mut name = String::new();
        wire::normalize_into(&q.qname, &mut name);
        for rcode in [ResponseCode::Refused, ResponseCode::NoError] {
            let r = replied(&respond(&q, rcode, &[], false), &q);
            assert_eq!((r.rcode, r.answers.len()), (rcode, 0));
        }
        let _ = empty_reply(data, &q, ResponseCode::ServFail);
    }
    // As an upstream's reply, to the question it carries itself (else it would never
    // get past the id and question check).
    let mut d = BinDecoder::new(data);
    let (Ok(h), Ok(q)) = (Header::read(&mut d), Query::read(&mut d)) else {
        return;
    };
    let qtype = u16::from(q.query_type);
    let Some(mut r) = parse_reply(data, h.metadata.id, &q.name, qtype) else {
        return;
    };
    // Through the cache as the resolver keeps it, and out again to a client who asked.
    r.answers.truncate(MAX_RECORDS);
    let key: Arc<str> = Arc::from(wire::normalize(&q.name).as_str());
    let mut cache = Cache::new(4);
    let now = Instant::from_millis(1_000_000);
    cache.put(key.clone(), qtype, r.rcode, &r.answers, now);
    if let Some(hit) = cache.get(&key, qtype, now + Duration::from_secs(1)) {
        assert_eq!(&hit.records[..], &r.answers[..]);
        assert_eq!(hit.rcode, r.rcode);
    }
    let mut query = upstream_query(h.metadata.id, &q.name, qtype);
    query[2] &= 0x7f; // a query, whatever the reply said
    let Parsed::Question(asked) = parse(&query) else {
        panic!("our own query reads back");
    };
    let back = replied(&respond(&asked, r.rcode, &r.answers, true), &asked);
    assert_eq!((back.rcode, &back.answers), (r.rcode, &r.answers));
    let udp = replied(&respond(&asked, r.rcode, &r.answers, false), &asked);
    if udp.truncated {
        assert!(udp.answers.is_empty());
    } else {
        assert_eq!(udp.answers, r.answers);
    }
});

/// A reply we built, read as a client would: an answer to its question.
fn replied(bytes: &[u8], q: &Question) -> wire::UpstreamReply {
    parse_reply(bytes, q.id, &q.qname, q.qtype).expect("our reply answers the question")
}
