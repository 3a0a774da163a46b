//! The nftables data plane: one table, `inet provisioner`, installed atomically, read back
//! to verify, and updated through set elements in batches over one netlink socket.

pub mod counters;
pub mod keys;
pub mod netlink;
pub mod nflog;
pub mod quotas;
pub mod ruleset;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::allow::{LearnChange, LearnKey};
use crate::core::leases::{Binding, LeaseChange};
use crate::core::time::Instant;
use crate::core::{ClientRecord, MacAddr, SetChange, Snapshot};
use keys::{Key, SetKey};
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
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// The daemon's handle on its table.
pub struct Firewall {
    nl: Netlink,
    /// Reused for every batch so the hot path does not allocate.
    batch: Vec<Pending>,
    index: HashMap<(&'static str, Key), usize>,
    /// The counts last read from the counting sets (see `counters`).
    last_traffic: counters::TrafficMap,
    /// What [`Firewall::traffic_within`] last read, when, and for which bindings (sorted;
    /// one the kernel holds no count for is still covered).
    recent_traffic: Option<counters::Reading>,
    /// Where the installed table keeps the quotas, what they had used when last read, and
    /// when their day ends.
    quota_plan: ruleset::QuotaPlan,
    last_quotas: quotas::QuotaReading,
    day_end: Option<Instant>,
}

/// The families our tables live in.
const FAMILIES: [Family; 3] = [Family::Inet, Family::Arp, Family::Netdev];

/// The sets, in the order a batch touches them.
const SETS: [&str; 4] = ["clients", "banned", "leases", "learned4"];

/// What one batch leaves an element as.
struct Pending {
    set: &'static str,
    key: Key,
    /// `None`: removed.
    add: Option<(Duration, Option<Arc<str>>)>,
    /// Removed at some point in the batch (a binding's counts then start again).
    removed: bool,
}

/// What a batch does to one counting element.
struct CountChange {
    set: &'static str,
    key: Key,
    /// Deleted (its binding ended in this batch).
    removed: bool,
    /// There at the end (its binding is bound).
    stays: bool,
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

impl Firewall {
    pub fn open() -> Result<Self, FirewallError> {
        Ok(Firewall {
            nl: Netlink::open()?,
            batch: Vec::new(),
            index: HashMap::new(),
            last_traffic: HashMap::new(),
            recent_traffic: None,
            quota_plan: ruleset::QuotaPlan::default(),
            last_quotas: quotas::QuotaReading::default(),
            day_end: None,
        })
    }

    /// Replaces the table in one transaction, then reads it back and checks that every set
    /// and chain, with its hook, priority and number of rules, is what was asked for.
    /// Each client's counts are carried over from the table it replaces.
    pub fn install(&mut self, rs: &Ruleset) -> Result<(), FirewallError> {
        // A first install (a restart) reads what the table it replaces used by the new
        // plan: the old one is the previous run's.
        if self.quota_plan.is_empty() {
            self.quota_plan = rs.quotas.clone();
        }
        let carried = self.carry_quotas();
        let rs = self.carry_traffic(rs);
        run_nft(&rs.script())?;
        self.verify(&rs)?;
        self.quota_plan = rs.quotas.clone();
        self.restore_quotas(&rs.metered, &carried, Instant::now())
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

    /// Whether all our tables are there (they survive the daemon; see
    /// [`Firewall::remove_tables`]).
    pub fn table_exists(&mut self) -> Result<bool, FirewallError> {
        for family in FAMILIES {
            if self.nl.describe_table(family.number(), TABLE)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn elements(&mut self, set: &str) -> Result<Vec<netlink::SetElement>, FirewallError> {
        self.elements_expecting(set, None)
    }

    fn elements_expecting(
        &mut self,
        set: &str,
        expected: Option<&[Vec<u8>]>,
    ) -> Result<Vec<netlink::SetElement>, FirewallError> {
        self.family_elements(Family::Inet, set, expected)
    }

    fn family_elements(
        &mut self,
        family: Family,
        set: &str,
        expected: Option<&[Vec<u8>]>,
    ) -> Result<Vec<netlink::SetElement>, FirewallError> {
        match self
            .nl
            .family_set_elements(family.number(), TABLE, set, expected)
        {
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
                let mac = MacAddr::decode(&e.key)?;
                let since = parse_since(e.comment.as_deref()).unwrap_or(now);
                Some((ClientRecord { mac, since }, left(e)?))
            })
            .collect();
        let bans = self
            .elements("banned")?
            .iter()
            .filter_map(|e| Some((MacAddr::decode(&e.key)?, left(e)?)))
            .collect();
        let leases = self
            .elements("leases")?
            .iter()
            .filter_map(|e| {
                let (mac, ip) = SetKey::decode(&e.key)?;
                Some(Binding {
                    mac,
                    ip,
                    remaining: left(e)?,
                })
            })
            .collect();
        let learned = self
            .elements("learned4")?
            .into_iter()
            .filter_map(|e| {
                let key = LearnKey::decode(&e.key)?;
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
            let (set, key, add) = match c {
                SetChange::Lease(LeaseChange::Bind { mac, ip, timeout }) => {
                    ("leases", (*mac, *ip).encode(), Some((*timeout, None)))
                }
                SetChange::Lease(LeaseChange::Unbind { mac, ip }) => {
                    ("leases", (*mac, *ip).encode(), None)
                }
                SetChange::Learn(LearnChange::Add { key, timeout, name }) => (
                    "learned4",
                    key.encode(),
                    Some((*timeout, Some(name.clone()))),
                ),
                SetChange::Learn(LearnChange::Remove { key }) => ("learned4", key.encode(), None),
                SetChange::Admit {
                    mac,
                    session_left,
                    since,
                } => (
                    "clients",
                    mac.encode(),
                    Some((*session_left, Some(since_comment(*since)))),
                ),
                SetChange::Dismiss { mac } => ("clients", mac.encode(), None),
                SetChange::Ban { mac, timeout } => ("banned", mac.encode(), Some((*timeout, None))),
                SetChange::Unban { mac } => ("banned", mac.encode(), None),
            };
            // A zero timeout would be no timeout at all: an element that never ends.
            let add = add.filter(|(timeout, _)| !timeout.is_zero());
            let removed = add.is_none();
            match self.index.get(&(set, key)) {
                Some(&i) => {
                    self.batch[i].add = add;
                    self.batch[i].removed |= removed;
                }
                None => {
                    self.index.insert((set, key), self.batch.len());
                    self.batch.push(Pending {
                        set,
                        key,
                        add,
                        removed,
                    });
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
                    .filter(|p| p.set == set)
                    .map(|p| SetOp::Add {
                        set,
                        key: p.key.as_bytes(),
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
                    .filter(|p| p.set == set)
                    .map(|p| SetOp::Delete {
                        set,
                        key: p.key.as_bytes(),
                    }),
            );
        }
        for set in SETS {
            // 3: add back the ones that stay, with their new timeout.
            ops.extend(self.batch.iter().filter(|p| p.set == set).filter_map(|p| {
                p.add.as_ref().map(|(timeout, name)| SetOp::Add {
                    set,
                    key: p.key.as_bytes(),
                    timeout: Some(*timeout),
                    comment: name.as_deref(),
                })
            }));
        }
        // Each binding's counting elements follow it: created when it is bound (an existing
        // one keeps its count: an add without EXCL changes nothing), deleted when it ends,
        // so that a renewal, which re-adds the lease, does not reset the count.
        let counts = self.count_changes();
        let mut count_ops = Vec::with_capacity(counts.len() * 2);
        for phase in 0..3 {
            for c in &counts {
                let set = c.set;
                let key = c.key.as_bytes();
                let add = SetOp::Add {
                    set,
                    key,
                    timeout: None,
                    comment: None,
                };
                match phase {
                    0 if c.removed => count_ops.push(add),
                    1 if c.removed => count_ops.push(SetOp::Delete { set, key }),
                    2 if c.stays => count_ops.push(add),
                    _ => {}
                }
            }
        }
        // An admitted client's quota element, if it has none yet today (one that is there
        // keeps what it used: a client that comes back the same day goes on from there).
        let day_left = self.day_left(Instant::now());
        let quota_keys: Vec<(String, Key, u64)> = match day_left {
            Some(_) => changes
                .iter()
                .filter_map(|c| match c {
                    SetChange::Admit { mac, .. } => {
                        let (set, limit) = self.quota_plan.client_set(*mac)?;
                        Some((set, mac.encode(), limit))
                    }
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let day_left = day_left.unwrap_or_default();
        count_ops.extend(quota_keys.iter().map(|(set, key, limit)| SetOp::AddQuota {
            set: set.as_str(),
            key: key.as_bytes(),
            timeout: day_left,
            limit: *limit,
            used: 0,
        }));
        // The ARP table's copy of the bindings changes in the same transaction.
        let arp: Vec<SetOp> = ops
            .iter()
            .filter(|op| op.set() == "leases")
            .copied()
            .collect();
        self.nl.apply_families(
            TABLE,
            &[
                (Family::Inet.number(), &ops),
                (Family::Arp.number(), &arp),
                (Family::Netdev.number(), &count_ops),
            ],
        )?;
        for p in self.batch.iter().filter(|p| p.set == "leases" && p.removed) {
            if let Some(pair) = SetKey::decode(&p.key) {
                // A binding that ended: its counts are not carried into a rebuilt table.
                self.last_traffic.remove(&pair);
            }
        }
        Ok(())
    }

    /// The counting sets' elements a batch touches (through its bindings), each once.
    fn count_changes(&self) -> Vec<CountChange> {
        let mut out: Vec<CountChange> = Vec::new();
        for p in self.batch.iter().filter(|p| p.set == "leases") {
            let Some((_, ip)) = <(MacAddr, Ipv4Addr)>::decode(&p.key) else {
                continue;
            };
            for (set, key) in [
                (ruleset::COUNT_UP, p.key),
                (ruleset::COUNT_DOWN, ip.encode()),
            ] {
                let (removed, stays) = (p.removed, p.add.is_some());
                // One address, two bindings in one batch (one ended, one began): the
                // element is deleted once and added back once, counting from zero.
                match out.iter_mut().find(|c| c.set == set && c.key == key) {
                    Some(c) => {
                        c.removed |= removed;
                        c.stays |= stays;
                    }
                    None => out.push(CountChange {
                        set,
                        key,
                        removed,
                        stays,
                    }),
                }
            }
        }
        out
    }

    /// Ends the connections of these addresses (their bindings ended): their conntrack
    /// entries are deleted, so no reply of an old flow reaches them, a NAT mapping back to
    /// them is gone, and a flow an offload flowtable would carry past our chains is torn
    /// down. One conntrack dump however many addresses; the provisioner asks for it
    /// (Command::EndFlows) once per batch that ended bindings. Returns how many entries
    /// were deleted.
    pub fn end_flows(&mut self, ips: &[Ipv4Addr]) -> Result<usize, FirewallError> {
        Ok(self.nl.end_flows(ips)?)
    }

    /// Ends the clients' connections an allow-list change closed (one conntrack dump);
    /// how many per entry of `closed.names`.
    pub fn end_flows_to(
        &mut self,
        closed: &crate::core::closing::Closed,
    ) -> Result<Vec<usize>, FirewallError> {
        Ok(self
            .nl
            .end_flows_where(closed.names.len(), |f| closed.ends(f))?)
    }

    /// Removes our tables: the one deliberate way to open what the daemon closed. True if
    /// any was there.
    pub fn remove_tables(&mut self) -> Result<bool, FirewallError> {
        let mut any = false;
        for family in FAMILIES {
            any |= self.nl.delete_table(family.number(), TABLE)?;
        }
        Ok(any)
    }
}

/// What a [`FlowEnder`] reports: the addresses it was given, and how many connections it
/// ended (or why it could not).
pub type FlowsEnded = (Vec<Ipv4Addr>, Result<usize, String>);

/// Ends connections beside the daemon loop, on a netlink socket and a thread of its own:
/// a conntrack walk costs as much as the table has buckets (262,144 on a big host: 14 ms),
/// and nothing the loop answers should wait for it. The core holds the addresses out of
/// the pool until the report comes back.
pub struct FlowEnder {
    tx: std::sync::mpsc::Sender<Vec<Ipv4Addr>>,
}

impl FlowEnder {
    pub fn start(
        done: tokio::sync::mpsc::UnboundedSender<FlowsEnded>,
    ) -> Result<FlowEnder, FirewallError> {
        let mut nl = Netlink::open()?;
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Ipv4Addr>>();
        std::thread::Builder::new()
            .name("end-flows".into())
            .spawn(move || {
                for ips in rx {
                    let r = nl.end_flows(&ips).map_err(|e| e.to_string());
                    if done.send((ips, r)).is_err() {
                        return;
                    }
                }
            })
            .map_err(FirewallError::Thread)?;
        Ok(FlowEnder { tx })
    }

    /// Hands `ips` to the thread; back if it is gone.
    pub fn end(&self, ips: Vec<Ipv4Addr>) -> Result<(), Vec<Ipv4Addr>> {
        self.tx.send(ips).map_err(|e| e.0)
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

/// Against the kernel, each test in a network namespace of its own (root: `make test` runs
/// them with `--features rig`; without it they are reported as ignored, not passed).
#[cfg(test)]
mod kernel_tests {
    use super::*;
    use crate::config::{Config, Proto};
    use crate::core::time::Instant;

    const CONFIG: &str = "
config network
\toption interface 'prov0'
\toption wan 'wan0'
config allow 'acme'
\tlist address '11.1.0.10'
\tlist port '443'
";

    /// `f` with our real tables installed, in a namespace that goes when the thread does.
    fn with_tables(f: impl FnOnce(&mut Firewall, &Ruleset) + Send + 'static) {
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): the rig feature needs root");
            let cfg = Config::parse("t", CONFIG, false).unwrap();
            let rs = Ruleset::build(&cfg, &Snapshot::default());
            let mut fw = Firewall::open().unwrap();
            fw.install(&rs).unwrap();
            f(&mut fw, &rs);
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    fn nft_list_set(family: &str, set: &str) -> String {
        let out = Command::new("nft")
            .args(["list", "set", family, TABLE, set])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// A key the codec writes is the element nft shows, in every set we write; the kernel's
    /// key lengths are the codec's; and the codec reads back what it wrote, and what nft
    /// wrote (an `allow4_net` point).
    #[test]
    #[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
    fn kernel_keys_are_what_nft_shows() {
        with_tables(|fw, rs| {
            let mac: MacAddr = "02:00:00:00:00:0a".parse().unwrap();
            let banned: MacAddr = "02:00:00:00:00:0b".parse().unwrap();
            let ip = Ipv4Addr::new(192, 168, 250, 5);
            let learned = LearnKey {
                mac,
                ip: Ipv4Addr::new(11, 1, 0, 10),
                proto: Proto::Udp,
                port: 8443,
            };
            let minute = Duration::from_secs(60);
            fw.apply(&[
                SetChange::Admit {
                    mac,
                    session_left: minute,
                    since: Instant::from_millis(5),
                },
                SetChange::Ban {
                    mac: banned,
                    timeout: minute,
                },
                SetChange::Lease(LeaseChange::Bind {
                    mac,
                    ip,
                    timeout: minute,
                }),
                SetChange::Learn(LearnChange::Add {
                    key: learned,
                    timeout: minute,
                    name: "setup.acme.example".into(),
                }),
            ])
            .unwrap();

            for (family, set, shown) in [
                ("inet", "clients", "02:00:00:00:00:0a"),
                ("inet", "banned", "02:00:00:00:00:0b"),
                ("inet", "leases", "02:00:00:00:00:0a . 192.168.250.5"),
                ("arp", "leases", "02:00:00:00:00:0a . 192.168.250.5"),
                (
                    "inet",
                    "learned4",
                    "02:00:00:00:00:0a . 11.1.0.10 . udp . 8443",
                ),
            ] {
                let text = nft_list_set(family, set);
                assert!(text.contains(&format!("{shown} timeout")), "{text}");
            }

            // Each set's key, as the ruleset declares it and as the kernel sizes it.
            let lengths = [
                ("clients", MacAddr::TYPE, mac.encode().len()),
                ("banned", MacAddr::TYPE, mac.encode().len()),
                (
                    "leases",
                    <(MacAddr, Ipv4Addr)>::TYPE,
                    (mac, ip).encode().len(),
                ),
                ("learned4", LearnKey::TYPE, learned.encode().len()),
                (
                    "allow4_net",
                    <(Ipv4Addr, Proto, u16)>::TYPE,
                    (ip, Proto::Tcp, 443).encode().len(),
                ),
            ];
            let table = fw.nl.describe_table(Family::Inet.number(), TABLE).unwrap();
            let sets = table.unwrap().sets;
            for (name, ty, len) in lengths {
                let declared = rs.inet.sets.iter().find(|s| s.name == name).unwrap();
                assert_eq!(declared.key, ty, "{name}");
                let kernel = sets.iter().find(|s| s.name == name).unwrap();
                assert_eq!(kernel.key_len as usize, len, "{name}");
            }

            let snap = fw.snapshot(Instant::from_millis(0)).unwrap();
            assert_eq!(snap.clients.len(), 1);
            assert_eq!(snap.clients[0].0.mac, mac);
            assert_eq!(snap.clients[0].0.since, Instant::from_millis(5));
            assert_eq!(snap.bans.iter().map(|b| b.0).collect::<Vec<_>>(), [banned]);
            let leases: Vec<_> = snap.leases.iter().map(|b| (b.mac, b.ip)).collect();
            assert_eq!(leases, [(mac, ip)]);
            assert_eq!(snap.learned.len(), 1);
            assert_eq!(snap.learned[0].0, learned);
            assert_eq!(&*snap.learned[0].2, "setup.acme.example");

            // nft wrote the allow-list: its point reads back through the codec.
            let points: Vec<_> = fw
                .elements("allow4_net")
                .unwrap()
                .iter()
                .filter_map(|e| <(Ipv4Addr, Proto, u16)>::decode(&e.key))
                .collect();
            assert!(
                points.contains(&(Ipv4Addr::new(11, 1, 0, 10), Proto::Tcp, 443)),
                "{points:?}"
            );
        });
    }

    /// What the counting relies on, on this kernel: a positive lookup counts the element
    /// it finds, a negated one (`!= @set`) counts nothing even for an element in the set,
    /// and re-adding an existing element (an add without EXCL) keeps its count. Read back
    /// through our own dump parser.
    #[test]
    #[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
    fn kernel_lookups_count_only_when_positive() {
        let thread = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let lo = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            assert!(lo.unwrap().success());
            run_nft(&format!(
                "table inet {TABLE} {{
\tset s {{
\t\ttype ipv4_addr
\t\tcounter
\t\telements = {{ 127.0.0.2, 127.0.0.3 }}
\t}}
\tchain output {{
\t\ttype filter hook output priority 0; policy accept;
\t\tip daddr 127.0.0.2 ip daddr @s
\t\tip daddr 127.0.0.3 ip daddr != @s
\t}}
}}"
            ))
            .unwrap();
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..3 {
                for dst in ["127.0.0.2:9", "127.0.0.3:9"] {
                    sock.send_to(&[0; 72], dst).unwrap();
                }
            }
            let mut fw = Firewall::open().unwrap();
            let count = |fw: &mut Firewall, ip: [u8; 4]| {
                let elems = fw.elements("s").unwrap();
                elems.iter().find(|e| e.key == ip).unwrap().counter.unwrap()
            };
            // 3 datagrams of 72 bytes + UDP (8) + IPv4 (20) headers.
            let counted = netlink::Counter {
                packets: 3,
                bytes: 3 * 100,
            };
            assert_eq!(count(&mut fw, [127, 0, 0, 2]), counted);
            assert_eq!(count(&mut fw, [127, 0, 0, 3]), netlink::Counter::default());
            let key = Ipv4Addr::new(127, 0, 0, 2).encode();
            fw.nl
                .apply(
                    TABLE,
                    &[SetOp::Add {
                        set: "s",
                        key: key.as_bytes(),
                        timeout: None,
                        comment: None,
                    }],
                )
                .unwrap();
            assert_eq!(count(&mut fw, [127, 0, 0, 2]), counted);
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// A binding's counts outlive its renewal and every rebuild of the table (reload and
    /// restart: read from the table it replaces; removed from outside: the last read), and
    /// start again when the binding ends.
    #[test]
    #[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
    fn counts_survive_renewals_and_rebuilds() {
        with_tables(|fw, _| {
            let cfg = Config::parse("t", CONFIG, false).unwrap();
            let mac: MacAddr = "02:00:00:00:00:0a".parse().unwrap();
            let ip = Ipv4Addr::new(192, 168, 250, 5);
            let minute = Duration::from_secs(60);
            let bind = SetChange::Lease(LeaseChange::Bind {
                mac,
                ip,
                timeout: minute,
            });
            fw.apply(std::slice::from_ref(&bind)).unwrap();
            let t = fw.traffic().unwrap();
            assert_eq!(t[&(mac, ip)], counters::Traffic::default());

            let state = Snapshot {
                leases: vec![Binding {
                    mac,
                    ip,
                    remaining: minute,
                }],
                ..Snapshot::default()
            };
            let c = |packets, bytes| netlink::Counter { packets, bytes };
            let want = counters::Traffic {
                up: c(3, 300),
                down: c(800, 1_100_000),
            };
            // Counts as the kernel would have them (nft writes them into the elements).
            let rs = Ruleset::build(&cfg, &state).with_counters(|_, _| Some((want.up, want.down)));
            run_nft(&rs.script()).unwrap();
            assert_eq!(fw.traffic().unwrap()[&(mac, ip)], want);

            // A reload or restart installs a table without counts: they come from the old.
            fw.install(&Ruleset::build(&cfg, &state)).unwrap();
            assert_eq!(fw.traffic().unwrap()[&(mac, ip)], want);
            assert!(
                nft_list_set("netdev", "count_down").contains("counter packets 800 bytes 1100000")
            );
            // A renewal keeps them.
            fw.apply(std::slice::from_ref(&bind)).unwrap();
            assert_eq!(fw.traffic().unwrap()[&(mac, ip)], want);
            // Removed from outside: the last read is carried into the restored table.
            assert!(fw.remove_tables().unwrap());
            fw.install(&Ruleset::build(&cfg, &state)).unwrap();
            assert_eq!(fw.traffic().unwrap()[&(mac, ip)], want);

            // The binding ends: its counting elements go; bound again, it counts afresh.
            fw.apply(&[SetChange::Lease(LeaseChange::Unbind { mac, ip })])
                .unwrap();
            assert!(fw.traffic().unwrap().is_empty());
            fw.apply(std::slice::from_ref(&bind)).unwrap();
            assert_eq!(
                fw.traffic().unwrap()[&(mac, ip)],
                counters::Traffic::default()
            );
            // One address, passed from one client to another in a batch: counted afresh.
            run_nft(&rs.script()).unwrap();
            let next: MacAddr = "02:00:00:00:00:0b".parse().unwrap();
            fw.apply(&[
                SetChange::Lease(LeaseChange::Unbind { mac, ip }),
                SetChange::Lease(LeaseChange::Bind {
                    mac: next,
                    ip,
                    timeout: minute,
                }),
            ])
            .unwrap();
            let t = fw.traffic().unwrap();
            assert_eq!(t.len(), 1, "{t:?}");
            assert_eq!(t[&(next, ip)], counters::Traffic::default());
        });
    }
}
