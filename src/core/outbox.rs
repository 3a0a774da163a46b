//! The one way out of the provisioner. Every input (`handle_*(…, now)`) leaves what it
//! decided here, and the daemon drains it with the `poll_*` calls:
//!
//! 1. [`Batch`]: the set changes of the turn, applied in one transaction; the daemon reports
//!    the kernel's answer back (`handle_batch_applied` / `handle_batch_refused`).
//! 2. Replies (DHCP, DNS) and [`Command`]s that depended on a batch wait for its answer:
//!    an ACK leaves only once the binding is in the kernel, a DNS answer only once the
//!    addresses it opens are. After a refusal the replies fail instead (no ACK, SERVFAIL).
//! 3. Events, at once: they say what was decided.
//!
//! What an input decided needs no further input to be carried out, so draining it fully
//! after each input (or each batch of inputs) is all the daemon's loop does.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use super::allow::LearnKey;
use super::events::Event;
use super::leases::{DhcpReply, LeaseChange};
use super::time::Instant;
use super::{MacAddr, RadioCommand, SetChange};

/// The set changes of one turn: apply them in one transaction and report the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: u64,
    pub changes: Vec<SetChange>,
}

/// What the edges must do besides the sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Radio(RadioCommand),
    /// End the connections of these addresses: their bindings just ended (no reply of an
    /// old flow may reach them, nor an offloaded flow outlive them).
    EndFlows(Vec<Ipv4Addr>),
    /// The kernel refused a batch: put the tables back as the provisioner holds them (what
    /// the batch would have removed must go; what it would have added was taken back).
    RebuildTables,
    /// Keep an on-demand window (its end, and the devices it is for with their progress)
    /// across a restart of the daemon (`None`: forget it).
    SaveWindow(Option<crate::core::window::SavedWindow>),
    /// The allow-list changed: end the clients' connections it no longer grants (they are
    /// accepted by their conntrack mark, not the sets), then report with
    /// [`crate::core::Provisioner::handle_allow_closed`].
    EndFlowsTo(crate::core::closing::Closed),
}

/// The DHCP transaction a reply answers, as the request carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpTransaction {
    pub xid: u32,
    /// The request's flags field (the broadcast bit).
    pub flags: u16,
    pub chaddr: MacAddr,
    pub ciaddr: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpOut {
    pub to: DhcpTransaction,
    pub reply: DhcpReply,
}

/// A DNS question, by the number the edge gave it.
pub type QueryId = u64;

/// What becomes of a DNS question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsOutcome {
    /// Answer REFUSED.
    Refused,
    /// Allowed, but nothing to say (AAAA while IPv6 is off): an empty NOERROR.
    NoData,
    /// Resolve it for `mac` (from the cache or upstream), then hand the answer in.
    Resolve { mac: MacAddr },
    /// Send the answer made of the records marked in `include` (in their order), each TTL
    /// at most `ttl_cap`.
    Answer { include: Vec<bool>, ttl_cap: u32 },
    /// Answer SERVFAIL (the addresses could not be opened).
    ServFail,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsOut {
    pub id: QueryId,
    pub outcome: DnsOutcome,
}

/// Why the provisioner wants to be called again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// A lease, an offer or a quarantine ends.
    Lease,
    /// A learned address is forgotten (the kernel has timed its element out).
    LearnedAddress,
    /// A session, a ban or a newcomer's wait ends.
    Station,
    /// The activation window opens or closes.
    Window,
    /// A minute of reports (refusals, spoofing) is summed up.
    Reports,
}

/// What to take back if the kernel refuses the batch an addition went in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Undo {
    /// A binding that did not happen; `prior`: the end of the binding it renewed.
    Bind {
        mac: MacAddr,
        ip: Ipv4Addr,
        prior: Option<Instant>,
    },
    /// An admission that did not happen.
    Admit { mac: MacAddr },
    /// An element that is not in the kernel: learn it again on the next answer.
    Learn { key: LearnKey },
}

/// The batch a queued reply or command waits for.
type Gate = Option<u64>;

#[derive(Debug)]
struct Sent {
    id: u64,
    undo: Vec<Undo>,
    ended: Vec<Ipv4Addr>,
}

#[derive(Debug, Default)]
pub(super) struct Outbox {
    changes: Vec<SetChange>,
    undo: Vec<Undo>,
    next_batch: u64,
    sent: Option<Sent>,
    commands: VecDeque<(Gate, Command)>,
    dhcp: VecDeque<(Gate, DhcpOut)>,
    dns: VecDeque<(Gate, DnsOut)>,
    events: VecDeque<Event>,
}

impl Outbox {
    /// A removal (or anything that needs no taking back).
    pub(super) fn change(&mut self, change: SetChange) {
        self.changes.push(change);
    }

    /// An addition, with what to take back if the kernel refuses it.
    pub(super) fn addition(&mut self, change: SetChange, undo: Undo) {
        self.changes.push(change);
        self.undo.push(undo);
    }

    /// The batch the next reply depends on: the one being collected, else the one waiting
    /// for the kernel's answer.
    fn gate(&self) -> Gate {
        if !self.changes.is_empty() {
            Some(self.next_batch)
        } else {
            self.sent.as_ref().map(|s| s.id)
        }
    }

    pub(super) fn command(&mut self, c: Command) {
        let gate = self.gate();
        self.commands.push_back((gate, c));
    }

    /// A command that waits for nothing.
    pub(super) fn command_now(&mut self, c: Command) {
        self.commands.push_back((None, c));
    }

    pub(super) fn dhcp(&mut self, out: DhcpOut) {
        let gate = self.gate();
        self.dhcp.push_back((gate, out));
    }

    /// A DNS outcome that depends on the changes made so far.
    pub(super) fn dns(&mut self, out: DnsOut) {
        let gate = self.gate();
        self.dns.push_back((gate, out));
    }

    /// A DNS outcome that depends on nothing (a refusal, a verdict).
    pub(super) fn dns_now(&mut self, out: DnsOut) {
        self.dns.push_back((None, out));
    }

    pub(super) fn events_extend(&mut self, events: impl IntoIterator<Item = Event>) {
        self.events.extend(events);
    }

    pub(super) fn poll_batch(&mut self) -> Option<Batch> {
        if self.changes.is_empty() {
            return None;
        }
        assert!(
            self.sent.is_none(),
            "a batch was polled before the previous one's result was reported"
        );
        let changes = std::mem::take(&mut self.changes);
        let ended = changes
            .iter()
            .filter_map(|c| match c {
                SetChange::Lease(LeaseChange::Unbind { ip, .. }) => Some(*ip),
                _ => None,
            })
            .collect();
        let id = self.next_batch;
        self.next_batch += 1;
        self.sent = Some(Sent {
            id,
            undo: std::mem::take(&mut self.undo),
            ended,
        });
        Some(Batch { id, changes })
    }

    /// The kernel answered batch `id`; what the refused additions were (to take back),
    /// and the addresses whose bindings it ended. `None` if `id` is not the batch sent.
    pub(super) fn resolve(&mut self, id: u64, applied: bool) -> Option<(Vec<Undo>, Vec<Ipv4Addr>)> {
        let sent = self.sent.take_if(|s| s.id == id)?;
        for (gate, out) in &mut self.dns {
            if *gate == Some(id) {
                *gate = None;
                if !applied && matches!(out.outcome, DnsOutcome::Answer { .. }) {
                    out.outcome = DnsOutcome::ServFail;
                }
            }
        }
        if !applied {
            // No ACK for a binding the kernel does not have: the client asks again.
            self.dhcp.retain(|(gate, _)| *gate != Some(id));
        }
        for (gate, _) in &mut self.dhcp {
            if *gate == Some(id) {
                *gate = None;
            }
        }
        for (gate, _) in &mut self.commands {
            if *gate == Some(id) {
                *gate = None;
            }
        }
        let undo = if applied { Vec::new() } else { sent.undo };
        Some((undo, sent.ended))
    }

    fn pop<T>(q: &mut VecDeque<(Gate, T)>) -> Option<T> {
        match q.front() {
            Some((None, _)) => q.pop_front().map(|(_, t)| t),
            _ => None,
        }
    }

    pub(super) fn poll_command(&mut self) -> Option<Command> {
        Self::pop(&mut self.commands)
    }

    pub(super) fn poll_dhcp(&mut self) -> Option<DhcpOut> {
        Self::pop(&mut self.dhcp)
    }

    pub(super) fn poll_dns(&mut self) -> Option<DnsOut> {
        Self::pop(&mut self.dns)
    }

    pub(super) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether anything is left to drain (a batch, or what is released).
    pub(super) fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.sent.is_none()
            && self.commands.is_empty()
            && self.dhcp.is_empty()
            && self.dns.is_empty()
            && self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn to() -> DhcpTransaction {
        DhcpTransaction {
            xid: 1,
            flags: 0,
            chaddr: mac(1),
            ciaddr: Ipv4Addr::UNSPECIFIED,
        }
    }

    fn ack() -> DhcpOut {
        DhcpOut {
            to: to(),
            reply: DhcpReply::Ack {
                ip: Ipv4Addr::new(192, 168, 250, 2),
                lease: Duration::from_secs(300),
            },
        }
    }

    fn bind() -> SetChange {
        SetChange::Lease(LeaseChange::Bind {
            mac: mac(1),
            ip: Ipv4Addr::new(192, 168, 250, 2),
            timeout: Duration::from_secs(300),
        })
    }

    #[test]
    fn replies_wait_for_their_batch_and_fail_with_it() {
        let mut o = Outbox::default();
        // Nothing to wait for: out at once.
        o.dhcp(ack());
        assert_eq!(o.poll_dhcp(), Some(ack()));
        // After a change: held until the kernel took it.
        o.addition(
            bind(),
            Undo::Bind {
                mac: mac(1),
                ip: Ipv4Addr::new(192, 168, 250, 2),
                prior: None,
            },
        );
        o.dhcp(ack());
        o.dns(DnsOut {
            id: 7,
            outcome: DnsOutcome::Answer {
                include: vec![true],
                ttl_cap: 60,
            },
        });
        o.dns_now(DnsOut {
            id: 8,
            outcome: DnsOutcome::Refused,
        });
        assert_eq!(o.poll_dhcp(), None);
        assert_eq!(o.poll_dns(), None, "in order: 8 waits behind 7");
        let b = o.poll_batch().unwrap();
        assert_eq!(b.changes, [bind()]);
        assert_eq!(o.poll_dhcp(), None, "sent, not yet answered");
        let (undo, ended) = o.resolve(b.id, false).unwrap();
        assert_eq!(undo.len(), 1);
        assert!(ended.is_empty());
        // Refused: no ACK, SERVFAIL instead of the answer, the refusal as it was.
        assert_eq!(o.poll_dhcp(), None);
        assert_eq!(o.poll_dns().unwrap().outcome, DnsOutcome::ServFail);
        assert_eq!(o.poll_dns().unwrap().outcome, DnsOutcome::Refused);
        assert!(o.is_empty());
        // Applied: out as they were; a stale or unknown id resolves nothing.
        o.addition(bind(), Undo::Admit { mac: mac(1) });
        o.dhcp(ack());
        let b = o.poll_batch().unwrap();
        assert_eq!(o.resolve(b.id + 1, true), None);
        assert_eq!(o.resolve(b.id, true), Some((vec![], vec![])));
        assert_eq!(o.poll_dhcp(), Some(ack()));
    }

    #[test]
    fn a_batch_knows_the_bindings_it_ends() {
        let mut o = Outbox::default();
        let ip = Ipv4Addr::new(192, 168, 250, 9);
        o.change(SetChange::Lease(LeaseChange::Unbind { mac: mac(9), ip }));
        o.command(Command::Radio(RadioCommand::Deauthenticate(mac(9))));
        o.command_now(Command::SaveWindow(None));
        assert_eq!(
            o.poll_command(),
            None,
            "the deauth waits for the batch, and in order"
        );
        let b = o.poll_batch().unwrap();
        assert_eq!(o.resolve(b.id, true), Some((vec![], vec![ip])));
        assert_eq!(
            o.poll_command(),
            Some(Command::Radio(RadioCommand::Deauthenticate(mac(9))))
        );
        assert_eq!(o.poll_command(), Some(Command::SaveWindow(None)));
    }
}
