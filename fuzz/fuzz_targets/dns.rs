//! Any datagram through the DNS question parser, the upstream reply reader and the reply
//! encoder: never a panic.
#![no_main]
use hickory_proto::op::{Header, Query, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use libfuzzer_sys::fuzz_target;
use provisioner::dns::wire::{Parsed, parse, parse_reply, respond};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Question(q) = parse(data) {
        let _ = respond(&q, ResponseCode::Refused, &[], false);
    }
    // As an upstream's reply, to the question it carries itself (else it would never
    // get past the id and question check), and its records back out in an answer.
    let mut d = BinDecoder::new(data);
    let (Ok(h), Ok(q)) = (Header::read(&mut d), Query::read(&mut d)) else {
        return;
    };
    let qtype = u16::from(q.query_type);
    if let Some(r) = parse_reply(data, h.metadata.id, &q.name, qtype) {
        let mut query = provisioner::dns::wire::upstream_query(h.metadata.id, &q.name, qtype);
        query[2] &= 0x7f; // a query, whatever the reply said
        if let Parsed::Question(asked) = parse(&query) {
            let _ = respond(&asked, r.rcode, &r.answers, false);
            let _ = respond(&asked, r.rcode, &r.answers, true);
        }
    }
});
