//! The SOCKS5 forwarder (`config socks`): RFC 1928, "no authentication", CONNECT only, for
//! admitted clients to the destinations their allow-list grants, and nothing else.
//!
//! It runs on a thread of its own with its own small runtime, so that a flood of
//! half-open handshakes or a busy relay never holds up the daemon's loop (DNS, DHCP, the
//! control socket). It decides nothing: each request goes to the loop ([`Ask`]), where the
//! provisioner answers it; a name is resolved by the daemon's own resolver as the client's
//! own question (so only allowed names resolve, the rebinding guard applies and what is
//! learned is the client's), and the address it gives is asked about in turn. The loop
//! tells the thread which relays to end ([`Forwarder::cut`]) when a session ends or an
//! entry no longer grants what a relay was opened for.
//!
//! Bounds: `client_connections` per client address and `total_connections` in all,
//! handshakes included (beyond: closed at once, the accept loop never waits); the greeting
//! and the request within `handshake_timeout`; a name's answer within [`RESOLVE_WAIT`], a
//! connection within [`CONNECT_WAIT`]. Memory per connection: its handshake buffer
//! ([`proto::MAX_REQUEST`] bytes) and then the relay's two [`RELAY_BUFFER`] buffers, so
//! at most `total_connections` × 16.3 KiB (the default 32: 522 KiB) beside the kernel's
//! socket buffers. Bytes are relayed unread and unchanged (TLS stays end to end); rates
//! and quotas are the netdev hooks' on the provisioning interface, which see these bytes
//! as the client's.

pub mod proto;
// The thread's work: bounds, handshakes, relays. Without the `socks` cargo feature (in
// by default) it is not built, and `config socks` refuses `enabled`.
#[cfg(feature = "socks")]
mod relay;

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::Socks;
use crate::core::socks::Refusal;

/// How long a name's resolution may take (the resolver fails over between upstreams).
pub const RESOLVE_WAIT: Duration = Duration::from_secs(6);
/// How long the outbound connection may take to be established.
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Each direction's relay buffer (tokio's `copy_bidirectional` default).
pub const RELAY_BUFFER: usize = 8 * 1024;
/// Requests and reports waiting for the loop, at most; beyond, a request is refused
/// (`busy`) and a report dropped, so the thread never waits for the loop.
pub const QUEUE: usize = 64;

/// What the thread hands the daemon's loop.
#[derive(Debug)]
pub enum ToLoop {
    /// A request to decide on.
    Ask(Ask),
    /// A refusal the thread made itself (handshake, command, bounds, connect), to audit.
    Refused {
        client: Ipv4Addr,
        dest: String,
        port: u16,
        why: Refusal,
    },
    /// Relay `id` (granted by the loop) is over.
    Closed(u64),
}

/// What the client asked to connect to, as the loop decides on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Name(String),
    Addr(Ipv4Addr),
}

#[derive(Debug)]
pub struct Ask {
    pub client: Ipv4Addr,
    pub target: Target,
    pub port: u16,
    pub reply: oneshot::Sender<Answer>,
}

/// The loop's answer to an [`Ask`].
#[derive(Debug)]
pub enum Answer {
    /// A name that may be resolved: the answer to `question` (see [`question`]) arrives
    /// on `reply`; its address is then asked about.
    Resolving {
        reply: mpsc::Receiver<Vec<u8>>,
        question: Vec<u8>,
    },
    /// Connect, as relay `id`.
    Granted(u64),
    Refused(Refusal),
}

/// The DNS question (type A, class IN, recursion desired) that asks for `name` (as
/// [`proto::request`] gives it: labels of letters, digits, `-` and `_`, each 1-63 bytes),
/// written out by hand: the resolver reads it as a client's.
pub fn question(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The thread, seen from the loop.
pub struct Forwarder {
    cuts: mpsc::UnboundedSender<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Forwarder {
    /// Serves `listener` (bound to the router's provisioning address and interface) on a
    /// thread of its own; requests and reports come to the loop by `to_loop`.
    #[cfg(not(feature = "socks"))]
    pub fn start(
        _: std::net::TcpListener,
        _: Socks,
        _: mpsc::Sender<ToLoop>,
    ) -> io::Result<Forwarder> {
        Err(io::Error::other(
            "built without the SOCKS forwarder (cargo feature socks)",
        ))
    }

    #[cfg(feature = "socks")]
    pub fn start(
        listener: std::net::TcpListener,
        limits: Socks,
        to_loop: mpsc::Sender<ToLoop>,
    ) -> io::Result<Forwarder> {
        use tokio::net::TcpListener;
        let (cuts, cut_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("socks".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        tracing::warn!("socks: cannot register the listener");
                        return;
                    };
                    tokio::select! {
                        () = relay::serve(listener, limits, to_loop, cut_rx) => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        Ok(Forwarder {
            cuts,
            thread: Some(thread),
            stop: Some(stop),
        })
    }

    /// Ends relay `id` (its client's session ended, or what let it be opened no longer
    /// holds): both connections are closed.
    pub fn cut(&self, id: u64) {
        let _ = self.cuts.send(id);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Every connection is dropped with the runtime: nothing outlives the forwarder.
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{self, Parsed};

    #[test]
    fn a_names_question_reads_back_as_a_clients() {
        let q = question(0x1234, "setup.acme.example");
        let Parsed::Question(p) = wire::parse(&q) else {
            panic!("not read as a question");
        };
        assert_eq!((p.id, p.qtype), (0x1234, 1));
        assert_eq!(p.qname.to_string(), "setup.acme.example.");
    }
}
