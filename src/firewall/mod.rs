//! The nftables data plane: one table, `inet provisioner`, installed atomically, read back
//! to verify, and updated through set elements in batches over one netlink socket.

pub mod netlink;
pub mod ruleset;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::core::MacAddr;
use crate::core::leases::{Binding, LeaseChange};
use netlink::{Netlink, NetlinkError, SetOp};
pub use ruleset::{Ruleset, TABLE};

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
    keys: Vec<[u8; 12]>,
}

/// `ether_addr . ipv4_addr`: each field padded to 4 bytes, as nft lays out concatenations.
fn lease_key(mac: MacAddr, ip: Ipv4Addr) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..6].copy_from_slice(&mac.0);
    k[8..].copy_from_slice(&ip.octets());
    k
}

impl Firewall {
    pub fn open() -> Result<Self, FirewallError> {
        Ok(Firewall {
            nl: Netlink::open()?,
            keys: Vec::new(),
        })
    }

    /// Replaces the table in one transaction, then reads it back and checks that every set
    /// and chain, with its hook, priority and number of rules, is what was asked for.
    pub fn install(&mut self, rs: &Ruleset) -> Result<(), FirewallError> {
        run_nft(&rs.script())?;
        self.verify(rs)
    }

    pub fn verify(&mut self, rs: &Ruleset) -> Result<(), FirewallError> {
        let Some(t) = self.nl.describe_table(TABLE)? else {
            return Err(FirewallError::Verify("the table is missing".into()));
        };
        // Inline sets in rules (`{ tcp, udp }`) are anonymous sets of their own; skip them.
        let named: Vec<_> = t
            .sets
            .iter()
            .filter(|s| s.flags & netlink::SET_F_ANONYMOUS == 0)
            .collect();
        for set in &rs.sets {
            if !named.iter().any(|s| s.name == set.name) {
                return Err(FirewallError::Verify(format!(
                    "set {} is missing",
                    set.name
                )));
            }
        }
        if named.len() != rs.sets.len() {
            return Err(FirewallError::Verify(format!(
                "{} sets, expected {}",
                named.len(),
                rs.sets.len()
            )));
        }
        for chain in &rs.chains {
            let Some(got) = t.chains.iter().find(|c| c.name == chain.name) else {
                return Err(FirewallError::Verify(format!(
                    "chain {} is missing",
                    chain.name
                )));
            };
            let hook = chain.base.as_ref().map(|b| b.hook as u32);
            let prio = chain.base.as_ref().map(|b| b.priority);
            if got.hook != hook || got.priority != prio {
                return Err(FirewallError::Verify(format!(
                    "chain {}: hook {:?} priority {:?}, expected {hook:?} {prio:?}",
                    chain.name, got.hook, got.priority
                )));
            }
            if got.rules != chain.rules.len() {
                return Err(FirewallError::Verify(format!(
                    "chain {}: {} rules, expected {}",
                    chain.name,
                    got.rules,
                    chain.rules.len()
                )));
            }
        }
        if t.chains.len() != rs.chains.len() {
            return Err(FirewallError::Verify(format!(
                "{} chains, expected {}",
                t.chains.len(),
                rs.chains.len()
            )));
        }
        Ok(())
    }

    /// Whether the table is there at all (it survives the daemon; see [`Firewall::flush`]).
    pub fn table_exists(&mut self) -> Result<bool, FirewallError> {
        Ok(self.nl.describe_table(TABLE)?.is_some())
    }

    /// The bindings in the kernel's `leases` set, with their remaining time. Empty if there
    /// is no table yet.
    pub fn leases(&mut self) -> Result<Vec<Binding>, FirewallError> {
        let elements = match self.nl.set_elements(TABLE, "leases") {
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Vec::new()),
            r => r?,
        };
        Ok(elements
            .iter()
            .filter(|e| e.key.len() == 12)
            .map(|e| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&e.key[..6]);
                Binding {
                    mac: MacAddr(mac),
                    ip: Ipv4Addr::new(e.key[8], e.key[9], e.key[10], e.key[11]),
                    remaining: e.expires.or(e.timeout).unwrap_or(Duration::ZERO),
                }
            })
            .collect())
    }

    /// Applies lease changes in one batch. A bind refreshes an existing element (add,
    /// delete, add: the kernel cannot update a timeout in place on every version we run on);
    /// an unbind first makes sure the element exists, so one that just timed out in the
    /// kernel cannot fail the whole batch.
    pub fn apply(&mut self, changes: &[LeaseChange]) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.keys.clear();
        self.keys.extend(changes.iter().map(|c| match *c {
            LeaseChange::Bind { mac, ip, .. } | LeaseChange::Unbind { mac, ip } => {
                lease_key(mac, ip)
            }
        }));
        let mut ops = Vec::with_capacity(changes.len() * 3);
        for (c, key) in changes.iter().zip(&self.keys) {
            let add = |timeout| SetOp::Add {
                set: "leases",
                key,
                timeout: Some(timeout),
            };
            let del = SetOp::Delete { set: "leases", key };
            match *c {
                LeaseChange::Bind { timeout, .. } => ops.extend([add(timeout), del, add(timeout)]),
                LeaseChange::Unbind { .. } => ops.extend([add(Duration::from_secs(1)), del]),
            }
        }
        self.nl.apply(TABLE, &ops)?;
        Ok(())
    }

    /// Removes the table: the one deliberate way to open what the daemon closed.
    pub fn flush(&mut self) -> Result<bool, FirewallError> {
        Ok(self.nl.delete_table(TABLE)?)
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
