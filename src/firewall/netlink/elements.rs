//! nf_tables set elements: the changes a batch carries ([`SetOp`]: add with a timeout and a
//! comment, delete), their encoding into NEWSETELEM/DELSETELEM messages, and the elements a
//! dump returns ([`SetElement`]). Keys are bytes here; `firewall::keys` says what they mean.

use std::time::Duration;

use super::batch::BatchWriter;
use super::{FAMILY_INET, Netlink, check_name, nft_type};
use crate::netlink::*;

/// Longest key the kernel accepts (`NFT_DATA_VALUE_MAXLEN`).
pub const MAX_KEY_LEN: usize = 64;
/// nft refuses longer comments.
pub const MAX_COMMENT_LEN: usize = 128;

// uapi, as in `linux/netfilter/nf_tables.h` and libnftnl.
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub(super) const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// An element's one expression (its counter) as a dump gives it; with several, they come
/// nested in `NFTA_SET_ELEM_EXPRESSIONS` instead.
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// libnftnl's user-data TLV type for an element comment (what `nft list` shows as
/// `comment "..."`), stored NUL-terminated.
const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;
pub(super) const NFTA_DATA_VALUE: u16 = 1;

/// One set-element change. Keys are the raw nft key bytes (concatenations already padded by
/// the caller: each field rounded up to 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp<'a> {
    /// Adds the element; an existing element is not an error (no `NLM_F_EXCL`). The
    /// comment (cut to [`MAX_COMMENT_LEN`] bytes) is what `nft list` shows with it.
    Add {
        set: &'a str,
        key: &'a [u8],
        timeout: Option<Duration>,
        comment: Option<&'a str>,
    },
    /// Deletes the element; a missing element fails the whole batch with `ENOENT`.
    Delete { set: &'a str, key: &'a [u8] },
    /// Adds an element of a set declared with `quota over LIMIT bytes`, having used
    /// `used` bytes of it already (a quota carried into a rebuilt table). As `Add`, an
    /// existing element is left as it is.
    AddQuota {
        set: &'a str,
        key: &'a [u8],
        timeout: Duration,
        limit: u64,
        used: u64,
    },
}

/// A quota's state as an element holds it: its limit and what it has used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub used: u64,
}

const NFTA_QUOTA_BYTES: u16 = 1;
const NFTA_QUOTA_FLAGS: u16 = 2;
const NFTA_QUOTA_CONSUMED: u16 = 4;
/// `NFT_QUOTA_F_INV`: `quota over`, matching once the quota is used up.
const NFT_QUOTA_F_INV: u32 = 1;
/// The encoded `quota` expression of an element: name, and data (bytes, flags, consumed).
const QUOTA_EXPR_LEN: usize = NLA_HDRLEN
    + NLA_HDRLEN
    + 8 // "quota\0", aligned
    + NLA_HDRLEN
    + (NLA_HDRLEN + 8)
    + (NLA_HDRLEN + 4)
    + (NLA_HDRLEN + 8);

impl<'a> SetOp<'a> {
    pub fn set(&self) -> &'a str {
        match *self {
            SetOp::Add { set, .. } | SetOp::Delete { set, .. } | SetOp::AddQuota { set, .. } => set,
        }
    }

    fn key(&self) -> &'a [u8] {
        match *self {
            SetOp::Add { key, .. } | SetOp::Delete { key, .. } | SetOp::AddQuota { key, .. } => key,
        }
    }

    fn is_add(&self) -> bool {
        matches!(self, SetOp::Add { .. } | SetOp::AddQuota { .. })
    }

    /// Encoded size of this op's `NFTA_LIST_ELEM` nest.
    fn elem_len(&self) -> usize {
        let key = NLA_HDRLEN + NLA_HDRLEN + align4(self.key().len());
        let timeout = match self {
            SetOp::Add {
                timeout: Some(_), ..
            } => NLA_HDRLEN + 8,
            SetOp::AddQuota { .. } => NLA_HDRLEN + 8 + QUOTA_EXPR_LEN,
            _ => 0,
        };
        let comment = match self {
            SetOp::Add {
                comment: Some(c), ..
            } => NLA_HDRLEN + align4(2 + comment_bytes(c).len() + 1),
            _ => 0,
        };
        NLA_HDRLEN + key + timeout + comment
    }
}

/// A set element as dumped by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    pub key: Vec<u8>,
    /// The element's own timeout. The kernel omits it when it equals the set's default
    /// timeout (our sets have none).
    pub timeout: Option<Duration>,
    /// Time left until the element expires.
    pub expires: Option<Duration>,
    /// The element's comment, if it has one.
    pub comment: Option<String>,
    /// What the element's `counter` counted (sets declared with `counter`).
    pub counter: Option<Counter>,
    /// Its `quota` (sets declared with `quota`).
    pub quota: Option<Quota>,
}

/// An nft counter's packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Netlink {
    /// All ops in ONE batch (`NFNL_MSG_BATCH_BEGIN` .. `NFNL_MSG_BATCH_END`), every message
    /// with `NLM_F_ACK`; waits for every ack. The kernel applies the batch atomically: on any
    /// error nothing is applied and the first error is returned. Empty slice = no syscall.
    ///
    /// Runs of consecutive ops of the same kind on the same set share one message; the kernel
    /// handles the elements of a message in order, so this keeps the exact op order.
    pub fn apply(&mut self, table: &str, ops: &[SetOp]) -> Result<(), NetlinkError> {
        self.apply_families(table, &[(FAMILY_INET, ops)])
    }

    /// Like [`Netlink::apply`], for the tables named `table` of several families (`inet`,
    /// `arp`) in ONE batch: one transaction, so the tables never disagree.
    pub fn apply_families(
        &mut self,
        table: &str,
        groups: &[(u8, &[SetOp])],
    ) -> Result<(), NetlinkError> {
        if groups.iter().all(|(_, ops)| ops.is_empty()) {
            return Ok(());
        }
        for (_, ops) in groups {
            validate_ops(table, ops)?;
        }
        let mut batch = BatchWriter::new(&mut self.send, &mut self.batch_ops, self.seq);
        for &(family, ops) in groups {
            encode_set_ops(&mut batch, family, table, ops);
        }
        let (begin, used) = batch.finish();
        self.seq = self.seq.wrapping_add(used);
        self.transact(begin)
    }

    /// Dump a set's elements (`NFT_MSG_GETSETELEM` with `NLM_F_DUMP`), including timeout and
    /// remaining expiration, ordered by key. A missing table or set gives `Kernel { errno:
    /// ENOENT, .. }`.
    ///
    /// A hash set's dump is not a snapshot: it spans several netlink messages, each resuming
    /// by a count of elements to skip, and the kernel resizes a growing set's hash table in
    /// the background, so a dump made while it does repeats some elements and misses others
    /// (seen right after a batch of 5,000). The kernel does not flag that, so a read counts
    /// only when two dumps in a row hold the same keys, none twice.
    pub fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Vec<SetElement>, NetlinkError> {
        self.set_elements_expecting(table, set, None)
    }

    /// [`Self::set_elements`], where the caller knows which keys the set should hold
    /// (`expected`, sorted): a single dump holding exactly those, none twice, is accepted
    /// at once, as a dump that repeats or misses elements cannot hold exactly the set's keys
    /// (a repeat shows; a miss leaves one out). Otherwise it falls back to two dumps alike.
    pub fn set_elements_expecting(
        &mut self,
        table: &str,
        set: &str,
        expected: Option<&[Vec<u8>]>,
    ) -> Result<Vec<SetElement>, NetlinkError> {
        self.family_set_elements(FAMILY_INET, table, set, expected)
    }

    /// [`Self::set_elements_expecting`] for a table of another family.
    pub fn family_set_elements(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
        expected: Option<&[Vec<u8>]>,
    ) -> Result<Vec<SetElement>, NetlinkError> {
        check_name(table)?;
        check_name(set)?;
        let mut last: Option<Vec<SetElement>> = None;
        for attempt in 0..STABLE_DUMP_ATTEMPTS {
            let mut out = Vec::new();
            let seq = self.request(family, NFT_MSG_GETSETELEM, NLM_F_DUMP, |buf| {
                put_str(buf, NFTA_SET_ELEM_LIST_TABLE, table);
                put_str(buf, NFTA_SET_ELEM_LIST_SET, set);
            });
            let intr = self.dump(seq, "list set elements", |msg| {
                if msg.ty == nft_type(NFT_MSG_NEWSETELEM) {
                    parse_setelem_msg(msg.payload, &mut out)?;
                }
                Ok(())
            })?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            let repeats = out.windows(2).any(|w| w[0].key == w[1].key);
            if intr || repeats {
                last = None;
                continue;
            }
            if attempt == 0
                && expected.is_some_and(|keys| {
                    keys.len() == out.len() && keys.iter().zip(&out).all(|(k, e)| *k == e.key)
                })
            {
                return Ok(out);
            }
            if last.as_ref().is_some_and(|l| same_keys(l, &out)) {
                return Ok(out);
            }
            last = Some(out);
        }
        Err(NetlinkError::DumpInterrupted(STABLE_DUMP_ATTEMPTS))
    }
}

/// Dumps a set's read-back may take to see the same keys twice in a row.
const STABLE_DUMP_ATTEMPTS: u32 = 8;

fn same_keys(a: &[SetElement], b: &[SetElement]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.key == y.key)
}

pub(super) fn validate_ops(table: &str, ops: &[SetOp]) -> Result<(), NetlinkError> {
    check_name(table)?;
    for op in ops {
        check_name(op.set())?;
        if op.key().is_empty() || op.key().len() > MAX_KEY_LEN {
            return Err(NetlinkError::Invalid("set element key must be 1-64 bytes"));
        }
    }
    Ok(())
}

/// NEWSETELEM/DELSETELEM messages for `ops` (already validated). Consecutive ops of the same
/// kind on the same set share a message, split where the elements nest (whose length is a
/// u16) would overflow.
pub(super) fn encode_set_ops(batch: &mut BatchWriter<'_>, family: u8, table: &str, ops: &[SetOp]) {
    const NEST_MAX: usize = u16::MAX as usize;
    let mut i = 0;
    while i < ops.len() {
        let first = ops[i];
        let (cmd, flags, op) = if first.is_add() {
            // CREATE without EXCL: an existing element is not an error.
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add set element")
        } else {
            (NFT_MSG_DELSETELEM, 0, "delete set element")
        };
        let msg = batch.msg(family, cmd, flags, op);
        let buf = &mut *batch.buf;
        put_str(buf, NFTA_SET_ELEM_LIST_TABLE, table);
        put_str(buf, NFTA_SET_ELEM_LIST_SET, first.set());
        let nest = begin_nest(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
        let mut nest_len = NLA_HDRLEN;
        while let Some(op) = ops.get(i) {
            let elem_len = op.elem_len();
            if op.is_add() != first.is_add()
                || op.set() != first.set()
                || nest_len + elem_len > NEST_MAX
            {
                break;
            }
            encode_elem(buf, op);
            nest_len += elem_len;
            i += 1;
        }
        end_nest(buf, nest);
        end_msg(buf, msg);
    }
}

/// One `NFTA_LIST_ELEM`: key (nested `NFTA_DATA_VALUE`) and optional timeout.
fn encode_elem(buf: &mut Vec<u8>, op: &SetOp) {
    let elem = begin_nest(buf, NFTA_LIST_ELEM);
    let key = begin_nest(buf, NFTA_SET_ELEM_KEY);
    put_attr(buf, NFTA_DATA_VALUE, op.key());
    end_nest(buf, key);
    if let SetOp::Add {
        timeout: Some(t), ..
    }
    | SetOp::AddQuota { timeout: t, .. } = op
    {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        put_attr(buf, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
    }
    if let SetOp::AddQuota { limit, used, .. } = *op {
        let expr = begin_nest(buf, NFTA_SET_ELEM_EXPR);
        put_attr(buf, NFTA_EXPR_NAME, b"quota\0");
        let data = begin_nest(buf, NFTA_EXPR_DATA);
        put_attr(buf, NFTA_QUOTA_BYTES, &limit.to_be_bytes());
        put_attr(buf, NFTA_QUOTA_FLAGS, &NFT_QUOTA_F_INV.to_be_bytes());
        // The kernel refuses a quota that used more than it has.
        put_attr(buf, NFTA_QUOTA_CONSUMED, &used.min(limit).to_be_bytes());
        end_nest(buf, data);
        end_nest(buf, expr);
    }
    if let SetOp::Add {
        comment: Some(c), ..
    } = op
    {
        let c = comment_bytes(c);
        let mut udata = [0u8; 2 + MAX_COMMENT_LEN + 1];
        udata[0] = NFTNL_UDATA_SET_ELEM_COMMENT;
        udata[1] = (c.len() + 1) as u8;
        udata[2..2 + c.len()].copy_from_slice(c);
        put_attr(buf, NFTA_SET_ELEM_USERDATA, &udata[..2 + c.len() + 1]);
    }
    end_nest(buf, elem);
}

/// A comment as stored: at most [`MAX_COMMENT_LEN`] bytes, cut at a character boundary,
/// without NULs (it is stored NUL-terminated).
pub(super) fn comment_bytes(c: &str) -> &[u8] {
    let mut end = c.len().min(MAX_COMMENT_LEN);
    while !c.is_char_boundary(end) {
        end -= 1;
    }
    let c = &c.as_bytes()[..end];
    let nul = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    &c[..nul]
}

/// The comment in an element's user data (libnftnl TLVs: type, length, value).
fn parse_comment(mut udata: &[u8]) -> Option<String> {
    while let [ty, len, rest @ ..] = udata {
        let value = rest.get(..usize::from(*len))?;
        if *ty == NFTNL_UDATA_SET_ELEM_COMMENT {
            let value = value.split(|&b| b == 0).next().unwrap_or_default();
            return String::from_utf8(value.to_vec()).ok();
        }
        udata = &rest[usize::from(*len)..];
    }
    None
}

/// Appends the elements of one NEWSETELEM dump message. Elements without a key (catch-all)
/// are skipped.
pub(super) fn parse_setelem_msg(
    payload: &[u8],
    out: &mut Vec<SetElement>,
) -> Result<(), NetlinkError> {
    let t = attr_table::<4>(nfgen_attrs(payload)?)?;
    let elems = t[usize::from(NFTA_SET_ELEM_LIST_ELEMENTS)].unwrap_or_default();
    for a in Attrs::new(elems) {
        let (ty, elem) = a?;
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let t = attr_table::<12>(elem)?;
        let Some(key) = t[usize::from(NFTA_SET_ELEM_KEY)] else {
            continue;
        };
        let [_, value] = attr_table::<2>(key)?;
        let key = value.ok_or(NetlinkError::Malformed("set element key without value"))?;
        let ms = |i: u16| -> Result<Option<Duration>, NetlinkError> {
            t[usize::from(i)]
                .map(|p| be_u64(p).map(Duration::from_millis))
                .transpose()
        };
        out.push(SetElement {
            key: key.to_vec(),
            timeout: ms(NFTA_SET_ELEM_TIMEOUT)?,
            expires: ms(NFTA_SET_ELEM_EXPIRATION)?,
            comment: t[usize::from(NFTA_SET_ELEM_USERDATA)].and_then(parse_comment),
            counter: parse_counter(
                t[usize::from(NFTA_SET_ELEM_EXPR)],
                t[usize::from(NFTA_SET_ELEM_EXPRESSIONS)],
            )?,
            quota: parse_quota(
                t[usize::from(NFTA_SET_ELEM_EXPR)],
                t[usize::from(NFTA_SET_ELEM_EXPRESSIONS)],
            )?,
        });
    }
    Ok(())
}

/// The `counter` among an element's expressions: the single one (`NFTA_SET_ELEM_EXPR`) or
/// one of a list (`NFTA_SET_ELEM_EXPRESSIONS`, each an `NFTA_LIST_ELEM`).
fn parse_counter(
    single: Option<&[u8]>,
    list: Option<&[u8]>,
) -> Result<Option<Counter>, NetlinkError> {
    let counter_of = |expr: &[u8]| -> Result<Option<Counter>, NetlinkError> {
        let e = attr_table::<3>(expr)?;
        if e[usize::from(NFTA_EXPR_NAME)].map(cstr) != Some(b"counter".as_slice()) {
            return Ok(None);
        }
        let data = e[usize::from(NFTA_EXPR_DATA)]
            .ok_or(NetlinkError::Malformed("counter without data"))?;
        let c = attr_table::<3>(data)?;
        let (bytes, packets) = (
            c[usize::from(NFTA_COUNTER_BYTES)],
            c[usize::from(NFTA_COUNTER_PACKETS)],
        );
        let value = |a: Option<&[u8]>| {
            a.ok_or(NetlinkError::Malformed("counter without packets or bytes"))
                .and_then(be_u64)
        };
        Ok(Some(Counter {
            packets: value(packets)?,
            bytes: value(bytes)?,
        }))
    };
    if let Some(expr) = single {
        return counter_of(expr);
    }
    for a in Attrs::new(list.unwrap_or_default()) {
        let (ty, expr) = a?;
        if ty == NFTA_LIST_ELEM {
            if let Some(c) = counter_of(expr)? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// The `quota` among an element's expressions, as [`parse_counter`] finds the counter.
fn parse_quota(single: Option<&[u8]>, list: Option<&[u8]>) -> Result<Option<Quota>, NetlinkError> {
    let quota_of = |expr: &[u8]| -> Result<Option<Quota>, NetlinkError> {
        let e = attr_table::<3>(expr)?;
        if e[usize::from(NFTA_EXPR_NAME)].map(cstr) != Some(b"quota".as_slice()) {
            return Ok(None);
        }
        let data =
            e[usize::from(NFTA_EXPR_DATA)].ok_or(NetlinkError::Malformed("quota without data"))?;
        let q = attr_table::<6>(data)?;
        let value = |i: u16| {
            q[usize::from(i)]
                .ok_or(NetlinkError::Malformed("quota without bytes or consumed"))
                .and_then(be_u64)
        };
        Ok(Some(Quota {
            limit: value(NFTA_QUOTA_BYTES)?,
            used: value(NFTA_QUOTA_CONSUMED)?,
        }))
    };
    if let Some(expr) = single {
        return quota_of(expr);
    }
    for a in Attrs::new(list.unwrap_or_default()) {
        let (ty, expr) = a?;
        if ty == NFTA_LIST_ELEM {
            if let Some(q) = quota_of(expr)? {
                return Ok(Some(q));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MacAddr;
    use crate::firewall::keys::{Key, SetKey};
    use std::net::Ipv4Addr;

    /// A lease key through the one codec (`firewall::keys`).
    fn lease_key(mac: [u8; 6], ip: [u8; 4]) -> Key {
        (MacAddr(mac), Ipv4Addr::from(ip)).encode()
    }

    fn encode(table: &str, ops: &[SetOp]) -> (Vec<u8>, Vec<&'static str>) {
        let (mut buf, mut names) = (Vec::new(), Vec::new());
        validate_ops(table, ops).unwrap();
        let mut batch = BatchWriter::new(&mut buf, &mut names, 100);
        encode_set_ops(&mut batch, FAMILY_INET, table, ops);
        let (begin, used) = batch.finish();
        assert_eq!((begin, used as usize), (100, names.len() + 2));
        (buf, names)
    }

    /// A decoded NEWSETELEM/DELSETELEM request: (message type, set name, keys, timeouts).
    type ElemMsg = (u16, String, Vec<Vec<u8>>, Vec<Option<Duration>>);

    fn decode_elem_msg(msg: &Msg<'_>) -> ElemMsg {
        let t = attr_table::<4>(nfgen_attrs(msg.payload).unwrap()).unwrap();
        let set = string(t[2].unwrap());
        let mut elems = Vec::new();
        // Requests and dump replies share the element layout, so the reply parser decodes them.
        parse_setelem_msg(msg.payload, &mut elems).unwrap();
        let keys = elems.iter().map(|e| e.key.clone()).collect();
        let timeouts = elems.iter().map(|e| e.timeout).collect();
        (msg.ty & 0xff, set, keys, timeouts)
    }

    fn msgs(buf: &[u8]) -> Vec<Msg<'_>> {
        Msgs::new(buf).collect::<Result<_, _>>().unwrap()
    }

    // --- encoding ---

    #[test]
    fn batch_layout_of_one_add() {
        let key = lease_key([2, 0, 0, 0, 0, 1], [192, 168, 250, 5]);
        let ops = [SetOp::Add {
            set: "leases",
            key: &key,
            timeout: Some(Duration::from_millis(30_500)),
            comment: None,
        }];
        let (buf, names) = encode("provisioner", &ops);
        assert_eq!(names, ["add set element"]);
        let m = msgs(&buf);
        assert_eq!(m.len(), 3);

        // BATCH_BEGIN/END: AF_UNSPEC, version 0, res_id = NFNL_SUBSYS_NFTABLES big endian.
        for (msg, ty, seq) in [(&m[0], 0x10, 100), (&m[2], 0x11, 102)] {
            assert_eq!((msg.ty, msg.flags, msg.seq), (ty, NLM_F_REQUEST, seq));
            assert_eq!(msg.payload, [0, 0, 0, 10]);
        }

        let d = &m[1];
        assert_eq!(d.ty, (10 << 8) | 12);
        assert_eq!(d.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(d.seq, 101);
        let mut want = vec![FAMILY_INET, 0, 0, 0]; // nfgenmsg
        let attr = |want: &mut Vec<u8>, len: u16, ty: u16| {
            want.extend_from_slice(&len.to_ne_bytes());
            want.extend_from_slice(&ty.to_ne_bytes());
        };
        attr(&mut want, 16, 1); // NFTA_SET_ELEM_LIST_TABLE
        want.extend_from_slice(b"provisioner\0");
        attr(&mut want, 11, 2); // NFTA_SET_ELEM_LIST_SET
        want.extend_from_slice(b"leases\0\0");
        attr(&mut want, 40, 3 | 0x8000); // NFTA_SET_ELEM_LIST_ELEMENTS, nested
        attr(&mut want, 36, 1 | 0x8000); // NFTA_LIST_ELEM
        attr(&mut want, 20, 1 | 0x8000); // NFTA_SET_ELEM_KEY
        attr(&mut want, 16, 1); // NFTA_DATA_VALUE
        want.extend_from_slice(&key);
        attr(&mut want, 12, 4); // NFTA_SET_ELEM_TIMEOUT, u64 big-endian milliseconds
        want.extend_from_slice(&30_500u64.to_be_bytes());
        assert_eq!(d.payload, &want[..]);
    }

    #[test]
    fn runs_of_the_same_kind_share_a_message_in_order() {
        let (a, b, c) = ([1; 12], [2; 12], [3; 12]);
        let t = Some(Duration::from_secs(60));
        let ops = [
            SetOp::Add {
                set: "leases",
                key: &a,
                timeout: t,
                comment: None,
            },
            SetOp::Add {
                set: "leases",
                key: &b,
                timeout: None,
                comment: None,
            },
            SetOp::Delete {
                set: "leases",
                key: &a,
            },
            SetOp::Add {
                set: "leases",
                key: &a,
                timeout: t,
                comment: None,
            },
            SetOp::Add {
                set: "allow4",
                key: &c,
                timeout: t,
                comment: None,
            },
            SetOp::Delete {
                set: "allow4",
                key: &c,
            },
            SetOp::Delete {
                set: "leases",
                key: &b,
            },
        ];
        let (buf, names) = encode("provisioner", &ops);
        let m = msgs(&buf);
        let got: Vec<_> = m[1..m.len() - 1].iter().map(decode_elem_msg).collect();
        let want: Vec<ElemMsg> = vec![
            (
                12,
                "leases".into(),
                vec![a.to_vec(), b.to_vec()],
                vec![t, None],
            ),
            (14, "leases".into(), vec![a.to_vec()], vec![None]),
            (12, "leases".into(), vec![a.to_vec()], vec![t]),
            (12, "allow4".into(), vec![c.to_vec()], vec![t]),
            (14, "allow4".into(), vec![c.to_vec()], vec![None]),
            (14, "leases".into(), vec![b.to_vec()], vec![None]),
        ];
        assert_eq!(got, want);
        assert_eq!(names.len(), 6);
        assert_eq!(names[1], "delete set element");
        let seqs: Vec<u32> = m.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (100..108).collect::<Vec<_>>());
    }

    #[test]
    fn long_runs_are_split_below_the_u16_nest_limit() {
        let keys: Vec<Key> = (0..5000u32)
            .map(|i| lease_key([2, 0, 0, 0, (i >> 8) as u8, i as u8], i.to_be_bytes()))
            .collect();
        let ops: Vec<SetOp> = keys
            .iter()
            .map(|k| SetOp::Add {
                set: "leases",
                key: k,
                timeout: Some(Duration::from_secs(1)),
                comment: None,
            })
            .collect();
        let (buf, names) = encode("provisioner", &ops);
        let m = msgs(&buf);
        assert_eq!(names.len(), m.len() - 2);
        assert!(
            names.len() > 1 && names.len() < 6,
            "{} messages",
            names.len()
        );
        let mut all = Vec::new();
        for msg in &m[1..m.len() - 1] {
            let elems = attr_table::<4>(nfgen_attrs(msg.payload).unwrap()).unwrap()[3].unwrap();
            assert!(elems.len() + NLA_HDRLEN <= u16::MAX as usize);
            all.extend(decode_elem_msg(msg).2);
        }
        let want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn bad_requests_are_rejected_before_sending() {
        let k = [0u8; 12];
        let big = [0u8; 65];
        let cases: [(&str, SetOp); 5] = [
            ("provisioner", SetOp::Delete { set: "", key: &k }),
            (
                "provisioner",
                SetOp::Delete {
                    set: "a\0b",
                    key: &k,
                },
            ),
            ("provisioner", SetOp::Delete { set: "s", key: &[] }),
            (
                "provisioner",
                SetOp::Delete {
                    set: "s",
                    key: &big,
                },
            ),
            ("", SetOp::Delete { set: "s", key: &k }),
        ];
        for (table, op) in cases {
            let r = validate_ops(table, &[op]);
            assert!(matches!(r, Err(NetlinkError::Invalid(_))), "{op:?}: {r:?}");
        }
        let long = "x".repeat(256);
        assert!(check_name(&long).is_err());
        assert!(check_name(&long[..255]).is_ok());
    }

    /// One expression as the kernel dumps it (`nft_expr_dump`): a nest of name and data.
    fn expr(buf: &mut Vec<u8>, ty: u16, name: &str, data: &[(u16, u64)]) {
        let e = begin_nest(buf, ty);
        put_str(buf, NFTA_EXPR_NAME, name);
        let d = begin_nest(buf, NFTA_EXPR_DATA);
        for &(ty, v) in data {
            put_attr(buf, ty, &v.to_be_bytes());
        }
        end_nest(buf, d);
        end_nest(buf, e);
    }

    #[test]
    fn element_counters_parse_alone_or_in_a_list() {
        let counter = [(NFTA_COUNTER_BYTES, 1_048_576), (NFTA_COUNTER_PACKETS, 712)];
        let want = Some(Counter {
            packets: 712,
            bytes: 1_048_576,
        });
        // One expression: NFTA_SET_ELEM_EXPR.
        let mut one = Vec::new();
        expr(&mut one, NFTA_SET_ELEM_EXPR, "counter", &counter);
        let one_attr = Attrs::new(&one).next().unwrap().unwrap().1;
        assert_eq!(parse_counter(Some(one_attr), None).unwrap(), want);
        // Several: the counter is found among them (here after a `limit`).
        let mut list = Vec::new();
        expr(&mut list, NFTA_LIST_ELEM, "limit", &[(1, 5)]);
        expr(&mut list, NFTA_LIST_ELEM, "counter", &counter);
        assert_eq!(parse_counter(None, Some(&list)).unwrap(), want);
        // No expression, or none a counter: no counter.
        assert_eq!(parse_counter(None, None).unwrap(), None);
        let mut limit = Vec::new();
        expr(&mut limit, NFTA_SET_ELEM_EXPR, "limit", &[(1, 5)]);
        let limit_attr = Attrs::new(&limit).next().unwrap().unwrap().1;
        assert_eq!(parse_counter(Some(limit_attr), None).unwrap(), None);
        // A counter without its packets, or with a short value: malformed, not zero.
        let mut bad = Vec::new();
        expr(&mut bad, NFTA_SET_ELEM_EXPR, "counter", &counter[..1]);
        let bad_attr = Attrs::new(&bad).next().unwrap().unwrap().1;
        assert!(parse_counter(Some(bad_attr), None).is_err());

        // Inside a whole dumped element, beside its key.
        let mut payload = vec![FAMILY_INET, 0, 0, 0];
        let elems = begin_nest(&mut payload, NFTA_SET_ELEM_LIST_ELEMENTS);
        let elem = begin_nest(&mut payload, NFTA_LIST_ELEM);
        let key = begin_nest(&mut payload, NFTA_SET_ELEM_KEY);
        put_attr(&mut payload, NFTA_DATA_VALUE, &[192, 168, 250, 2]);
        end_nest(&mut payload, key);
        expr(&mut payload, NFTA_SET_ELEM_EXPR, "counter", &counter);
        end_nest(&mut payload, elem);
        end_nest(&mut payload, elems);
        let mut out = Vec::new();
        parse_setelem_msg(&payload, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, [192, 168, 250, 2]);
        assert_eq!(out[0].counter, want);
    }

    #[test]
    fn comments_parse_from_user_data() {
        assert_eq!(
            parse_comment(&[0, 4, b'a', b'b', b'c', 0]),
            Some("abc".into())
        );
        // Another TLV first, then the comment.
        assert_eq!(parse_comment(&[1, 1, 9, 0, 2, b'z', 0]), Some("z".into()));
        // Truncated: no panic, no comment.
        assert_eq!(parse_comment(&[0, 9, b'a']), None);
        assert_eq!(parse_comment(&[0]), None);
        assert_eq!(comment_bytes("a\0b"), b"a");
        assert_eq!(comment_bytes(&"é".repeat(100)).len(), 128);
    }
}
