//! Which records of a DNS answer may reach the client, and be learned for it: the answer
//! is read from the question's name along its CNAME chain (a record off the chain was not
//! asked for, and must not be learned under the question's grant), at most
//! [`MAX_RECORDS`] of it, and every address on the chain passes the rebinding guard.

use std::net::Ipv4Addr;

/// Records of one answer considered; the rest is left out (and not learned).
pub const MAX_RECORDS: usize = 32;
/// CNAME links followed from the question, at most (a longer chain is a loop or abuse).
pub const MAX_CHAIN: usize = 8;

/// One record of an answer, as the DNS edge read it: names lower case, without the
/// trailing dot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub owner: &'a str,
    pub ttl: u32,
    pub data: RecordData<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordData<'a> {
    A(Ipv4Addr),
    Cname(&'a str),
}

/// For each of `records`: whether it is on the CNAME chain from `qname` and among the
/// first [`MAX_RECORDS`].
pub fn on_chain(qname: &str, all: &[Record]) -> Vec<bool> {
    let records = &all[..all.len().min(MAX_RECORDS)];
    let mut chain: Vec<&str> = vec![qname];
    for _ in 0..MAX_CHAIN.min(records.len()) {
        let last = *chain.last().expect("not empty");
        let next = records.iter().find_map(|r| match r.data {
            RecordData::Cname(target) if r.owner == last => Some(target),
            _ => None,
        });
        match next {
            Some(t) if !chain.contains(&t) => chain.push(t),
            _ => break,
        }
    }
    let mut mask: Vec<bool> = records.iter().map(|r| chain.contains(&r.owner)).collect();
    mask.resize(all.len(), false);
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(owner: &str, ip: [u8; 4]) -> Record<'_> {
        Record {
            owner,
            ttl: 60,
            data: RecordData::A(Ipv4Addr::from(ip)),
        }
    }

    fn cname<'a>(owner: &'a str, target: &'a str) -> Record<'a> {
        Record {
            owner,
            ttl: 60,
            data: RecordData::Cname(target),
        }
    }

    #[test]
    fn the_chain_from_the_question_only() {
        let records = [
            cname("a.example", "b.cdn.example"),
            cname("b.cdn.example", "c.cdn.example"),
            a("c.cdn.example", [11, 1, 0, 10]),
            // Not on the chain: must not be learned under a.example's grant.
            a("other.example", [11, 1, 0, 20]),
        ];
        assert_eq!(on_chain("a.example", &records), [true, true, true, false]);
        // A loop ends; a chain is followed no further than MAX_CHAIN links.
        let looped = [
            cname("x.example", "y.example"),
            cname("y.example", "x.example"),
        ];
        assert_eq!(on_chain("x.example", &looped), [true, true]);
        let names: Vec<String> = (0..12).map(|i| format!("n{i}.example")).collect();
        let long: Vec<Record> = (0..11).map(|i| cname(&names[i], &names[i + 1])).collect();
        let mask = on_chain("n0.example", &long);
        assert_eq!(mask.iter().filter(|&&m| m).count(), MAX_CHAIN + 1);
    }

    #[test]
    fn beyond_the_record_cap_nothing_counts() {
        let owner = "many.example";
        let records: Vec<Record> = (0..40u8).map(|i| a(owner, [11, 1, 1, i])).collect();
        let mask = on_chain(owner, &records);
        assert_eq!(mask.len(), records.len());
        assert!(mask[..MAX_RECORDS].iter().all(|&m| m));
        assert!(!mask[MAX_RECORDS..].iter().any(|&m| m));
    }
}
