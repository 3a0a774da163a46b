//! One of our tables as the kernel holds it: read back ([`Netlink::describe_table`]: its
//! chains with hook, priority, policy and number of rules, and its sets), looked up, or
//! deleted in one batch.

use super::{DUMP_ATTEMPTS, Netlink, check_name, nft_type};
use crate::netlink::*;

/// Netfilter hook numbers as reported in [`ChainInfo::hook`] (`enum nf_inet_hooks`).
pub const HOOK_PREROUTING: u32 = 0;
pub const HOOK_INPUT: u32 = 1;
pub const HOOK_FORWARD: u32 = 2;
pub const HOOK_OUTPUT: u32 = 3;
pub const HOOK_POSTROUTING: u32 = 4;
pub const HOOK_INGRESS: u32 = 5;

/// Base chain policies as reported in [`ChainInfo::policy`] (`NF_DROP`, `NF_ACCEPT`).
pub const POLICY_DROP: u32 = 0;
pub const POLICY_ACCEPT: u32 = 1;

/// Set flags as reported in [`SetInfo::flags`] (`enum nft_set_flags`).
pub const SET_F_ANONYMOUS: u32 = 0x1;
pub const SET_F_CONSTANT: u32 = 0x2;
pub const SET_F_INTERVAL: u32 = 0x4;
pub const SET_F_MAP: u32 = 0x8;
pub const SET_F_TIMEOUT: u32 = 0x10;
pub const SET_F_EVAL: u32 = 0x20;
pub const SET_F_CONCAT: u32 = 0x80;

// uapi, as in `linux/netfilter/nf_tables.h`.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
pub(super) const NFT_MSG_DELTABLE: u16 = 2;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;

pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_POLICY: u16 = 5;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_SET_TABLE: u16 = 1;
pub(super) const NFTA_SET_NAME: u16 = 2;
pub(super) const NFTA_SET_FLAGS: u16 = 3;
pub(super) const NFTA_SET_KEY_LEN: u16 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub name: String,
    /// `HOOK_*`; `None` for a regular (non-base) chain.
    pub hook: Option<u32>,
    pub priority: Option<i32>,
    /// `POLICY_*`; base chains only.
    pub policy: Option<u32>,
    pub rules: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    pub name: String,
    pub key_len: u32,
    /// `SET_F_*`. Anonymous sets created by rules (`SET_F_ANONYMOUS`) are listed too.
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub chains: Vec<ChainInfo>,
    pub sets: Vec<SetInfo>,
}

impl Netlink {
    /// Read back the table: its chains (hook, priority, policy, number of rules, via GETCHAIN
    /// and GETRULE dumps filtered to the table) and sets. `Ok(None)` if the table does not
    /// exist.
    pub fn describe_table(
        &mut self,
        family: u8,
        table: &str,
    ) -> Result<Option<TableInfo>, NetlinkError> {
        check_name(table)?;
        let tname = table.as_bytes();
        'attempt: for _ in 0..DUMP_ATTEMPTS {
            if !self.table_exists(family, table)? {
                return Ok(None);
            }

            let mut chains: Vec<ChainInfo> = Vec::new();
            // The kernel ignores a table filter on chain dumps: it lists every inet chain.
            let seq = self.request(family, NFT_MSG_GETCHAIN, NLM_F_DUMP, |buf| {
                put_str(buf, NFTA_CHAIN_TABLE, table)
            });
            let intr = self.dump(seq, "list chains", |msg| {
                if msg.ty == nft_type(NFT_MSG_NEWCHAIN) {
                    chains.extend(parse_chain(msg.payload, tname)?);
                }
                Ok(())
            })?;
            if intr {
                continue 'attempt;
            }

            let seq = self.request(family, NFT_MSG_GETRULE, NLM_F_DUMP, |buf| {
                put_str(buf, NFTA_RULE_TABLE, table)
            });
            let intr = self.dump(seq, "list rules", |msg| {
                if msg.ty != nft_type(NFT_MSG_NEWRULE) {
                    return Ok(());
                }
                if let Some(chain) = parse_rule_chain(msg.payload, tname)? {
                    // A rule of a chain created after the chain dump is not counted.
                    if let Some(c) = chains.iter_mut().find(|c| c.name.as_bytes() == chain) {
                        c.rules += 1;
                    }
                }
                Ok(())
            })?;
            if intr {
                continue 'attempt;
            }

            let mut sets = Vec::new();
            let seq = self.request(family, NFT_MSG_GETSET, NLM_F_DUMP, |buf| {
                put_str(buf, NFTA_SET_TABLE, table)
            });
            let res = self.dump(seq, "list sets", |msg| {
                if msg.ty == nft_type(NFT_MSG_NEWSET) {
                    sets.extend(parse_set(msg.payload, tname)?);
                }
                Ok(())
            });
            match res {
                Ok(false) => return Ok(Some(TableInfo { chains, sets })),
                Ok(true) => continue 'attempt,
                // The table went away between the dumps.
                Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(NetlinkError::DumpInterrupted(DUMP_ATTEMPTS))
    }

    /// Delete the table (and everything in it) in one batch. `Ok(false)` if it did not exist.
    pub fn delete_table(&mut self, family: u8, table: &str) -> Result<bool, NetlinkError> {
        check_name(table)?;
        let mut batch =
            super::batch::BatchWriter::new(&mut self.send, &mut self.batch_ops, self.seq);
        let start = batch.msg(family, NFT_MSG_DELTABLE, 0, "delete table");
        put_str(batch.buf, NFTA_TABLE_NAME, table);
        end_msg(batch.buf, start);
        let (begin, used) = batch.finish();
        self.seq = self.seq.wrapping_add(used);
        match self.transact(begin) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `NFT_MSG_GETTABLE` for one table: a single reply, or `ENOENT`.
    fn table_exists(&mut self, family: u8, table: &str) -> Result<bool, NetlinkError> {
        let seq = self.request(family, NFT_MSG_GETTABLE, 0, |buf| {
            put_str(buf, NFTA_TABLE_NAME, table)
        });
        self.drain_stale();
        self.send_request()?;
        loop {
            let len = self.recv_datagram()?;
            for msg in Msgs::new(&self.recv[..len]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                match msg.ty {
                    NLMSG_ERROR => {
                        let (errno, message) = parse_ack(&msg)?;
                        if errno == 0 {
                            continue;
                        }
                        self.dirty = false;
                        if errno == libc::ENOENT {
                            return Ok(false);
                        }
                        let op = "get table";
                        return Err(NetlinkError::Kernel { errno, op, message });
                    }
                    NLMSG_OVERRUN => return Err(NetlinkError::Overrun),
                    t if t == nft_type(NFT_MSG_NEWTABLE) => {
                        self.dirty = false;
                        return Ok(true);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A NEWCHAIN dump message, if it belongs to `table`.
pub(super) fn parse_chain(payload: &[u8], table: &[u8]) -> Result<Option<ChainInfo>, NetlinkError> {
    let t = attr_table::<6>(nfgen_attrs(payload)?)?;
    if t[usize::from(NFTA_CHAIN_TABLE)].map(cstr) != Some(table) {
        return Ok(None);
    }
    let name =
        t[usize::from(NFTA_CHAIN_NAME)].ok_or(NetlinkError::Malformed("chain without a name"))?;
    let (mut hook, mut priority) = (None, None);
    if let Some(h) = t[usize::from(NFTA_CHAIN_HOOK)] {
        let h = attr_table::<3>(h)?;
        hook = h[usize::from(NFTA_HOOK_HOOKNUM)].map(be_u32).transpose()?;
        priority = h[usize::from(NFTA_HOOK_PRIORITY)]
            .map(|p| be_u32(p).map(|v| v as i32))
            .transpose()?;
    }
    Ok(Some(ChainInfo {
        name: string(name),
        hook,
        priority,
        policy: t[usize::from(NFTA_CHAIN_POLICY)].map(be_u32).transpose()?,
        rules: 0,
    }))
}

/// The chain name of a NEWRULE dump message, if the rule belongs to `table`.
pub(super) fn parse_rule_chain<'a>(
    payload: &'a [u8],
    table: &[u8],
) -> Result<Option<&'a [u8]>, NetlinkError> {
    let t = attr_table::<3>(nfgen_attrs(payload)?)?;
    if t[usize::from(NFTA_RULE_TABLE)].map(cstr) != Some(table) {
        return Ok(None);
    }
    Ok(t[usize::from(NFTA_RULE_CHAIN)].map(cstr))
}

/// A NEWSET dump message, if it belongs to `table`.
pub(super) fn parse_set(payload: &[u8], table: &[u8]) -> Result<Option<SetInfo>, NetlinkError> {
    let t = attr_table::<6>(nfgen_attrs(payload)?)?;
    if t[usize::from(NFTA_SET_TABLE)].map(cstr) != Some(table) {
        return Ok(None);
    }
    let name =
        t[usize::from(NFTA_SET_NAME)].ok_or(NetlinkError::Malformed("set without a name"))?;
    let u32_or_0 = |i: u16| {
        t[usize::from(i)]
            .map(be_u32)
            .transpose()
            .map(Option::unwrap_or_default)
    };
    Ok(Some(SetInfo {
        name: string(name),
        key_len: u32_or_0(NFTA_SET_KEY_LEN)?,
        flags: u32_or_0(NFTA_SET_FLAGS)?,
    }))
}
