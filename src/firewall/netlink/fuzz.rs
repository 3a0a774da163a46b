//! Entry points for the cargo-fuzz targets (fuzz/; feature `fuzzing`, never in the daemon):
//! a datagram from the kernel read as the daemon reads one, through the same decoders.
//! Every decoder of a socket sees every message, whatever its type, so the fuzzer need not
//! find the message types first; where an encoder exists, what was read is written and
//! read back.

use super::batch::BatchWriter;
use super::conntrack::{flow_from, flow_key};
use super::elements::{
    NFT_MSG_NEWSETELEM, comment_bytes, encode_set_ops, parse_setelem_msg, validate_ops,
};
use super::table::{parse_chain, parse_rule_chain, parse_set};
use super::{FAMILY_INET, MAX_KEY_LEN, Quota, SetElement, SetOp, announces_deletion, nft_type};
use crate::netlink::*;
use std::time::Duration;

const TABLE: &str = "provisioner";

/// One datagram on the nf_tables socket (acks and errors, dumps of chains, rules, sets and
/// set elements, a dump's end) and on the ruleset monitor (a table's deletion announced).
pub fn nftables(datagram: &[u8]) {
    let table = TABLE.as_bytes();
    for msg in Msgs::new(datagram) {
        let Ok(msg) = msg else { break };
        match msg.ty {
            NLMSG_ERROR => {
                let _ = parse_ack(&msg);
            }
            _ => {
                let _ = parse_chain(msg.payload, table);
                let _ = parse_rule_chain(msg.payload, table);
                let _ = parse_set(msg.payload, table);
                let mut elems = Vec::new();
                if parse_setelem_msg(msg.payload, &mut elems).is_ok() {
                    elements_round_trip(&elems);
                }
            }
        }
    }
    let _ = announces_deletion(datagram, TABLE);
}

/// Elements read from a dump, added again in a batch (what a restarted daemon writes for
/// what it read back: a quota with its use, else the comment), read back the same: key,
/// timeout, comment (as stored: cut) and quota (its use at most its limit).
fn elements_round_trip(elems: &[SetElement]) {
    let ops: Vec<SetOp> = elems
        .iter()
        .filter(|e| !e.key.is_empty() && e.key.len() <= MAX_KEY_LEN)
        .map(|e| match e.quota {
            Some(q) => SetOp::AddQuota {
                set: "leases",
                key: &e.key,
                timeout: e.timeout.unwrap_or(Duration::from_secs(60)),
                limit: q.limit,
                used: q.used,
            },
            None => SetOp::Add {
                set: "leases",
                key: &e.key,
                timeout: e.timeout,
                comment: e.comment.as_deref(),
            },
        })
        .collect();
    if ops.is_empty() {
        return;
    }
    validate_ops(TABLE, &ops).expect("keys of a valid length");
    let (mut buf, mut names) = (Vec::new(), Vec::new());
    let mut batch = BatchWriter::new(&mut buf, &mut names, 1);
    encode_set_ops(&mut batch, FAMILY_INET, TABLE, &ops);
    batch.finish();
    let mut back = Vec::new();
    for m in Msgs::new(&buf) {
        let m = m.expect("our own batch frames");
        if m.ty == nft_type(NFT_MSG_NEWSETELEM) {
            parse_setelem_msg(m.payload, &mut back).expect("our own elements decode");
        }
    }
    assert_eq!(back.len(), ops.len());
    for (op, e) in ops.iter().zip(&back) {
        match *op {
            SetOp::Add {
                key,
                timeout,
                comment,
                ..
            } => {
                assert_eq!((&e.key[..], e.timeout, e.quota), (key, timeout, None));
                assert_eq!(
                    e.comment.as_deref().map(str::as_bytes),
                    comment.map(comment_bytes)
                );
            }
            SetOp::AddQuota {
                key,
                timeout,
                limit,
                used,
                ..
            } => {
                assert_eq!((&e.key[..], e.timeout), (key, Some(timeout)));
                let used = used.min(limit);
                assert_eq!(e.quota, Some(Quota { limit, used }));
            }
            SetOp::Delete { .. } => unreachable!("only adds"),
        }
    }
}

/// One datagram on the socket's conntrack side: dump messages (read for the flows of gone
/// clients, and for flows an allow-list change closed) and the acks of deletes. The two
/// readers of a dump message agree on the flow.
pub fn conntrack(datagram: &[u8]) {
    for msg in Msgs::new(datagram) {
        let Ok(msg) = msg else { break };
        if msg.ty == NLMSG_ERROR {
            let _ = parse_ack(&msg);
            continue;
        }
        let _ = flow_from(msg.payload, &[[10, 0, 0, 2], [192, 168, 1, 20]]);
        if let Ok(Some((flow, key))) = flow_key(msg.payload) {
            let by_source = flow_from(msg.payload, &[key.src.octets()]);
            assert_eq!(by_source.ok().flatten(), Some(flow));
        }
    }
}
