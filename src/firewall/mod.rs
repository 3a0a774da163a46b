//! The nftables data plane: one table, `inet provisioner`, installed atomically, read back
//! to verify, and updated through set elements in batches over one netlink socket.

pub mod netlink;
pub mod nflog;
pub mod ruleset;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Proto;
use crate::core::allow::{LearnChange, LearnKey};
use crate::core::leases::{Binding, LeaseChange};
use crate::core::time::Instant;
use crate::core::{ClientRecord, MacAddr, SetChange, Snapshot};
use netlink::{Netlink, NetlinkError, SetOp};
pub use ruleset::{Family, Ruleset, TABLE};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run nft: {0} (is the nftables package installed?)")]
    NftMissing(std::io::Error),
    #[error("nft rejected the ruleset: {0}")]
    Nft(String),
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("table inet {TABLE} does not match what was installed: {0}")]
    Verify(String),
}

/// The daemon's handle on its table.
pub struct Firewall {
    nl: Netlink,
    /// Reused for every batch so the hot path does not allocate.
    batch: Vec<Pending>,
    index: HashMap<Key, usize>,
}

/// A set element's key: at most `ether_addr . ipv4_addr . inet_proto . inet_service`,
/// each field padded to 4 bytes as nft lays out concatenations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    set: &'static str,
    bytes: [u8; 20],
    len: u8,
}

/// The sets, in the order a batch touches them.
const SETS: [&str; 4] = ["clients", "banned", "leases", "learned4"];

impl Key {
    /// A set of plain `ether_addr`: six bytes (only fields of a concatenation are padded).
    fn mac(set: &'static str, mac: MacAddr) -> Key {
        let mut bytes = [0u8; 20];
        bytes[..6].copy_from_slice(&mac.0);
        Key { set, bytes, len: 6 }
    }

    fn lease(mac: MacAddr, ip: Ipv4Addr) -> Key {
        let mut bytes = [0u8; 20];
        bytes[..6].copy_from_slice(&mac.0);
        bytes[8..12].copy_from_slice(&ip.octets());
        Key {
            set: "leases",
            bytes,
            len: 12,
        }
    }

    fn learned(k: &LearnKey) -> Key {
        let mut bytes = [0u8; 20];
        bytes[..6].copy_from_slice(&k.mac.0);
        bytes[8..12].copy_from_slice(&k.ip.octets());
        bytes[12] = k.proto.number();
        bytes[16..18].copy_from_slice(&k.port.to_be_bytes());
        Key {
            set: "learned4",
            bytes,
            len: 20,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What one batch leaves an element as.
struct Pending {
    key: Key,
    /// `None`: removed.
    add: Option<(Duration, Option<Arc<str>>)>,
}

fn mac_of_key(key: &[u8]) -> Option<MacAddr> {
    let b: [u8; 6] = key.get(..6)?.try_into().ok()?;
    Some(MacAddr(b))
}

/// `since=<ms on the boot clock>`: when a client was admitted, kept with its element so
/// that a restart does not reset its session clock.
fn since_comment(since: Instant) -> Arc<str> {
    format!("since={}", since.as_millis()).into()
}

fn parse_since(comment: Option<&str>) -> Option<Instant> {
    comment?
        .strip_prefix("since=")?
        .parse()
        .ok()
        .map(Instant::from_millis)
}

fn decode_learned(key: &[u8]) -> Option<LearnKey> {
    if key.len() != 20 {
        return None;
    }
    let proto = match key[12] {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        _ => return None,
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&key[..6]);
    Some(LearnKey {
        mac: MacAddr(mac),
        ip: Ipv4Addr::new(key[8], key[9], key[10], key[11]),
        proto,
        port: u16::from_be_bytes([key[16], key[17]]),
    })
}

impl Firewall {
    pub fn open() -> Result<Self, FirewallError> {
        Ok(Firewall {
            nl: Netlink::open()?,
            batch: Vec::new(),
            index: HashMap::new(),
        })
    }

    /// Replaces the table in one transaction, then reads it back and checks that every set
    /// and chain, with its hook, priority and number of rules, is what was asked for.
    pub fn install(&mut self, rs: &Ruleset) -> Result<(), FirewallError> {
        run_nft(&rs.script())?;
        self.verify(rs)
    }

    pub fn verify(&mut self, rs: &Ruleset) -> Result<(), FirewallError> {
        for table in rs.tables() {
            self.verify_table(table)?;
        }
        Ok(())
    }

    fn verify_table(&mut self, want: &ruleset::Table) -> Result<(), FirewallError> {
        let family = want.family.name();
        let fail = |what: String| FirewallError::Verify(format!("{family}: {what}"));
        let Some(t) = self.nl.describe_table(want.family.number(), TABLE)? else {
            return Err(fail("the table is missing".into()));
        };
        // Inline sets in rules (`{ tcp, udp }`) are anonymous sets of their own; skip them.
        let named: Vec<_> = t
            .sets
            .iter()
            .filter(|s| s.flags & netlink::SET_F_ANONYMOUS == 0)
            .collect();
        for set in &want.sets {
            if !named.iter().any(|s| s.name == set.name) {
                return Err(fail(format!("set {} is missing", set.name)));
            }
        }
        if named.len() != want.sets.len() {
            return Err(fail(format!(
                "{} sets, expected {}",
                named.len(),
                want.sets.len()
            )));
        }
        for chain in &want.chains {
            let Some(got) = t.chains.iter().find(|c| c.name == chain.name) else {
                return Err(fail(format!("chain {} is missing", chain.name)));
            };
            let hook = chain.base.as_ref().map(|b| b.hook.number());
            let prio = chain.base.as_ref().map(|b| b.priority);
            if got.hook != hook || got.priority != prio {
                return Err(fail(format!(
                    "chain {}: hook {:?} priority {:?}, expected {hook:?} {prio:?}",
                    chain.name, got.hook, got.priority
                )));
            }
            if got.rules != chain.rules.len() {
                return Err(fail(format!(
                    "chain {}: {} rules, expected {}",
                    chain.name,
                    got.rules,
                    chain.rules.len()
                )));
            }
        }
        if t.chains.len() != want.chains.len() {
            return Err(fail(format!(
                "{} chains, expected {}",
                t.chains.len(),
                want.chains.len()
            )));
        }
        Ok(())
    }

    /// Whether all our tables are there (they survive the daemon; see [`Firewall::flush`]).
    pub fn table_exists(&mut self) -> Result<bool, FirewallError> {
        for family in [Family::Inet, Family::Arp] {
            if self.nl.describe_table(family.number(), TABLE)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn elements(&mut self, set: &str) -> Result<Vec<netlink::SetElement>, FirewallError> {
        match self.nl.set_elements(TABLE, set) {
            // No table (first start) or no such set (a table from an older version).
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(Vec::new()),
            r => Ok(r?),
        }
    }

    /// Everything the kernel's sets hold, with the time each element has left: what a
    /// restarted daemon takes over. Empty when there is no table yet.
    pub fn snapshot(&mut self, now: Instant) -> Result<Snapshot, FirewallError> {
        let left = |e: &netlink::SetElement| e.expires.or(e.timeout);
        let clients = self
            .elements("clients")?
            .iter()
            .filter_map(|e| {
                let mac = mac_of_key(&e.key)?;
                let since = parse_since(e.comment.as_deref()).unwrap_or(now);
                Some((ClientRecord { mac, since }, left(e)?))
            })
            .collect();
        let bans = self
            .elements("banned")?
            .iter()
            .filter_map(|e| Some((mac_of_key(&e.key)?, left(e)?)))
            .collect();
        let leases = self
            .elements("leases")?
            .iter()
            .filter(|e| e.key.len() == 12)
            .filter_map(|e| {
                Some(Binding {
                    mac: mac_of_key(&e.key)?,
                    ip: Ipv4Addr::new(e.key[8], e.key[9], e.key[10], e.key[11]),
                    remaining: left(e)?,
                })
            })
            .collect();
        let learned = self
            .elements("learned4")?
            .into_iter()
            .filter_map(|e| {
                let key = decode_learned(&e.key)?;
                let left = e.expires.or(e.timeout)?;
                Some((key, left, Arc::from(e.comment.unwrap_or_default())))
            })
            .collect();
        Ok(Snapshot {
            clients,
            bans,
            leases,
            learned,
        })
    }

    /// Applies set changes in one batch (one transaction: all or nothing).
    ///
    /// Each element ends as the last change for it says. The kernel cannot update a
    /// timeout in place on every version we run on, so an element is refreshed as add,
    /// delete, add; a removal first adds, so that an element that just timed out in the
    /// kernel cannot fail the whole batch. Grouped by phase, a batch is a handful of
    /// netlink messages however many elements it holds.
    pub fn apply(&mut self, changes: &[SetChange]) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.batch.clear();
        self.index.clear();
        for c in changes {
            let (key, add) = match c {
                SetChange::Lease(LeaseChange::Bind { mac, ip, timeout }) => {
                    (Key::lease(*mac, *ip), Some((*timeout, None)))
                }
                SetChange::Lease(LeaseChange::Unbind { mac, ip }) => (Key::lease(*mac, *ip), None),
                SetChange::Learn(LearnChange::Add { key, timeout, name }) => {
                    (Key::learned(key), Some((*timeout, Some(name.clone()))))
                }
                SetChange::Learn(LearnChange::Remove { key }) => (Key::learned(key), None),
                SetChange::Admit {
                    mac,
                    session_left,
                    since,
                } => (
                    Key::mac("clients", *mac),
                    Some((*session_left, Some(since_comment(*since)))),
                ),
                SetChange::Dismiss { mac } => (Key::mac("clients", *mac), None),
                SetChange::Ban { mac, timeout } => {
                    (Key::mac("banned", *mac), Some((*timeout, None)))
                }
                SetChange::Unban { mac } => (Key::mac("banned", *mac), None),
            };
            // A zero timeout would be no timeout at all: an element that never ends.
            let add = add.filter(|(timeout, _)| !timeout.is_zero());
            match self.index.get(&key) {
                Some(&i) => self.batch[i].add = add,
                None => {
                    self.index.insert(key, self.batch.len());
                    self.batch.push(Pending { key, add });
                }
            }
        }
        let mut ops = Vec::with_capacity(self.batch.len() * 3);
        // Phase by phase, set by set: consecutive ops on one set share a netlink message.
        for set in SETS {
            // 1: make sure every element exists.
            ops.extend(
                self.batch
                    .iter()
                    .filter(|p| p.key.set == set)
                    .map(|p| SetOp::Add {
                        set,
                        key: p.key.as_slice(),
                        timeout: Some(p.add.as_ref().map_or(Duration::from_secs(1), |a| a.0)),
                        comment: None,
                    }),
            );
        }
        for set in SETS {
            // 2: delete them all.
            ops.extend(
                self.batch
                    .iter()
                    .filter(|p| p.key.set == set)
                    .map(|p| SetOp::Delete {
                        set,
                        key: p.key.as_slice(),
                    }),
            );
        }
        for set in SETS {
            // 3: add back the ones that stay, with their new timeout.
            ops.extend(
                self.batch
                    .iter()
                    .filter(|p| p.key.set == set)
                    .filter_map(|p| {
                        p.add.as_ref().map(|(timeout, name)| SetOp::Add {
                            set,
                            key: p.key.as_slice(),
                            timeout: Some(*timeout),
                            comment: name.as_deref(),
                        })
                    }),
            );
        }
        // The ARP table's copy of the bindings changes in the same transaction.
        let arp: Vec<SetOp> = ops
            .iter()
            .filter(|op| op.set() == "leases")
            .copied()
            .collect();
        self.nl.apply_families(
            TABLE,
            &[(Family::Inet.number(), &ops), (Family::Arp.number(), &arp)],
        )?;
        Ok(())
    }

    /// Ends the connections of `ips`, whose bindings ended: their conntrack entries are
    /// deleted, so no reply of an old flow reaches them, a NAT mapping back to them is gone,
    /// and a flow an offload flowtable would carry past our chains is torn down. Returns
    /// how many were ended.
    pub fn end_flows(&mut self, ips: &[Ipv4Addr]) -> Result<usize, FirewallError> {
        let mut n = 0;
        for &ip in ips {
            n += self.nl.forget_flows(ip)?;
        }
        Ok(n)
    }

    /// Removes our tables: the one deliberate way to open what the daemon closed. True if
    /// any was there.
    pub fn flush(&mut self) -> Result<bool, FirewallError> {
        let mut any = false;
        for family in [Family::Inet, Family::Arp] {
            any |= self.nl.delete_table(family.number(), TABLE)?;
        }
        Ok(any)
    }
}

/// Runs `nft -f -` with the script: the kernel applies the whole file as one transaction.
pub(crate) fn run_nft(script: &str) -> Result<(), FirewallError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::NftMissing)?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(FirewallError::NftMissing)?;
    let out = child
        .wait_with_output()
        .map_err(FirewallError::NftMissing)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}
