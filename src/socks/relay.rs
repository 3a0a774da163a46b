//! The forwarder's thread: the accept loop and its bounds, each connection's handshake
//! and question to the loop, and the relays (see the module above).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::timeout;
use tracing::{debug, warn};

use super::proto::{self, Command, Dest, Malformed, Parse, Rep};
use super::{Answer, Ask, CONNECT_WAIT, RELAY_BUFFER, RESOLVE_WAIT, Target, ToLoop};
use crate::config::Socks;
use crate::core::socks::Refusal;

/// The first address in the resolver's `reply` to `question`.
fn answer_of(question: &[u8], reply: &[u8]) -> Option<Ipv4Addr> {
    use crate::dns::wire::{self, Parsed, RrData};
    let Parsed::Question(q) = wire::parse(question) else {
        return None;
    };
    wire::parse_reply(reply, q.id, &q.qname, 1)?
        .answers
        .iter()
        .find_map(|rr| match rr.data {
            RrData::A(a) => Some(a),
            _ => None,
        })
}

/// Connections open per client address (few clients: a list), and in all.
#[derive(Default)]
struct Counts {
    per_client: Vec<(Ipv4Addr, u16)>,
    total: u16,
}

/// A connection's place in [`Counts`], given back when it ends however it ends.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    client: Ipv4Addr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .counts
            .lock()
            .expect("never poisoned: no panics under it");
        c.total -= 1;
        if let Some(i) = c.per_client.iter().position(|e| e.0 == self.client) {
            c.per_client[i].1 -= 1;
            if c.per_client[i].1 == 0 {
                c.per_client.swap_remove(i);
            }
        }
    }
}

fn take_slot(
    counts: &Arc<Mutex<Counts>>,
    client: Ipv4Addr,
    limits: &Socks,
) -> Result<Slot, Refusal> {
    let mut c = counts.lock().expect("never poisoned: no panics under it");
    if c.total >= limits.total_connections {
        return Err(Refusal::TotalLimit);
    }
    let i = match c.per_client.iter().position(|e| e.0 == client) {
        Some(i) => i,
        None => {
            c.per_client.push((client, 0));
            c.per_client.len() - 1
        }
    };
    if c.per_client[i].1 >= limits.client_connections {
        return Err(Refusal::ClientLimit);
    }
    c.per_client[i].1 += 1;
    c.total += 1;
    Ok(Slot {
        counts: counts.clone(),
        client,
    })
}

/// What connections tell the accept loop, in order: a relay began (with its handle), or
/// relay `id` (granted by the loop) is over.
enum Relay {
    Began(u64, AbortHandle),
    Ended(u64),
}

pub(super) async fn serve(
    listener: TcpListener,
    limits: Socks,
    to_loop: mpsc::Sender<ToLoop>,
    mut cuts: mpsc::UnboundedReceiver<u64>,
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    // At most `total_connections`: a list.
    let mut relays: Vec<(u64, AbortHandle)> = Vec::new();
    let (relay_tx, mut relay_rx) = mpsc::unbounded_channel::<Relay>();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors or the like: wait a little rather than spin.
                        warn!("socks: accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let SocketAddr::V4(peer) = peer else { continue };
                let client = *peer.ip();
                let slot = match take_slot(&counts, client, &limits) {
                    Ok(s) => s,
                    Err(why) => {
                        report(&to_loop, client, String::new(), 0, why);
                        continue;
                    }
                };
                let conn = Conn {
                    client,
                    to_loop: to_loop.clone(),
                    relays: relay_tx.clone(),
                    handshake: limits.handshake_timeout,
                };
                tokio::spawn(conn.run(stream, slot));
            }
            Some(r) = relay_rx.recv() => match r {
                Relay::Began(id, handle) => relays.push((id, handle)),
                Relay::Ended(id) => {
                    relays.retain(|r| r.0 != id);
                    closed(&to_loop, id);
                }
            },
            Some(id) = cuts.recv() => {
                if let Some(i) = relays.iter().position(|r| r.0 == id) {
                    relays.swap_remove(i).1.abort();
                    debug!("socks: relay {id} cut");
                    closed(&to_loop, id);
                }
            }
        }
    }
}

/// The loop must hear that a relay is over, or it would keep checking one that is gone:
/// when its queue is full, the word waits for room beside (the loop never waits for us).
fn closed(to_loop: &mpsc::Sender<ToLoop>, id: u64) {
    if let Err(mpsc::error::TrySendError::Full(m)) = to_loop.try_send(ToLoop::Closed(id)) {
        let to_loop = to_loop.clone();
        tokio::spawn(async move {
            let _ = to_loop.send(m).await;
        });
    }
}

fn report(to_loop: &mpsc::Sender<ToLoop>, client: Ipv4Addr, dest: String, port: u16, why: Refusal) {
    let _ = to_loop.try_send(ToLoop::Refused {
        client,
        dest,
        port,
        why,
    });
}

/// The reply code a refusal earns.
fn rep_of(why: Refusal) -> Rep {
    match why {
        Refusal::Command => Rep::CommandNotSupported,
        // IPv6 is off on the provisioning network: the address type is not supported here.
        Refusal::Ipv6 => Rep::AddressTypeNotSupported,
        Refusal::NameNotAllowed
        | Refusal::PortNotAllowed
        | Refusal::AddressNotAllowed
        | Refusal::Unsafe
        | Refusal::NotAClient
        | Refusal::Malformed => Rep::NotAllowed,
        Refusal::NoAddress | Refusal::Unreachable => Rep::HostUnreachable,
        Refusal::NoMethod
        | Refusal::Stalled
        | Refusal::ClientLimit
        | Refusal::TotalLimit
        | Refusal::Busy => Rep::GeneralFailure,
    }
}

struct Conn {
    client: Ipv4Addr,
    to_loop: mpsc::Sender<ToLoop>,
    relays: mpsc::UnboundedSender<Relay>,
    handshake: Duration,
}

/// How a handshake ended without a relay: the reply to send (none: just close), and what
/// to audit.
struct Failed {
    rep: Option<Rep>,
    dest: String,
    port: u16,
    why: Refusal,
}

impl Failed {
    fn new(why: Refusal, dest: impl Into<String>, port: u16) -> Failed {
        Failed {
            rep: Some(rep_of(why)),
            dest: dest.into(),
            port,
            why,
        }
    }
}

impl Conn {
    async fn run(self, mut stream: TcpStream, slot: Slot) {
        let _ = stream.set_nodelay(true);
        let (request, early) = match timeout(self.handshake, handshake(&mut stream)).await {
            Ok(Ok(r)) => r,
            Ok(Err(f)) => return self.fail(&mut stream, f).await,
            Err(_) => {
                return self
                    .fail(
                        &mut stream,
                        Failed {
                            rep: None,
                            dest: String::new(),
                            port: 0,
                            why: Refusal::Stalled,
                        },
                    )
                    .await;
            }
        };
        let (id, mut outbound) = match self.open(&request).await {
            Ok(o) => o,
            Err(f) => return self.fail(&mut stream, f).await,
        };
        let bound = match outbound.local_addr() {
            Ok(SocketAddr::V4(a)) => Some((*a.ip(), a.port())),
            _ => None,
        };
        // What the client sent after its request, not waiting for the reply, goes first.
        let sent = stream
            .write_all(&proto::reply(Rep::Succeeded, bound))
            .await
            .and(outbound.write_all(&early).await);
        if sent.is_err() {
            let _ = self.relays.send(Relay::Ended(id));
            return;
        }
        // The relay is its own task, so that the loop can cut it by its handle.
        let ended = self.relays.clone();
        let relay = tokio::spawn(async move {
            let _slot = slot;
            let mut stream = stream;
            let mut outbound = outbound;
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut stream,
                &mut outbound,
                RELAY_BUFFER,
                RELAY_BUFFER,
            )
            .await;
            let _ = ended.send(Relay::Ended(id));
        });
        // Sent before the relay can run (one thread): it begins before it can end.
        let _ = self.relays.send(Relay::Began(id, relay.abort_handle()));
    }

    async fn fail(&self, stream: &mut TcpStream, f: Failed) {
        if let Some(rep) = f.rep {
            let _ = timeout(
                Duration::from_secs(1),
                stream.write_all(&proto::reply(rep, None)),
            )
            .await;
        }
        report(&self.to_loop, self.client, f.dest, f.port, f.why);
    }

    /// Asks the loop; a loop with no room refuses at once (`busy`).
    async fn ask(&self, target: Target, port: u16) -> Result<Answer, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.to_loop
            .try_send(ToLoop::Ask(Ask {
                client: self.client,
                target,
                port,
                reply,
            }))
            .map_err(|_| Refusal::Busy)?;
        answer.await.map_err(|_| Refusal::Busy)
    }

    /// The loop's decision, the name resolved and the outbound connection made.
    async fn open(&self, request: &proto::Request) -> Result<(u64, TcpStream), Failed> {
        let port = request.port;
        let shown = request.dest.to_string();
        let fail = |why| Failed::new(why, shown.clone(), port);
        let target = match &request.dest {
            Dest::V4(a) => Target::Addr(*a),
            Dest::Name(n) => Target::Name(n.clone()),
            Dest::V6(_) => return Err(fail(Refusal::Ipv6)),
        };
        let mut answer = self.ask(target, port).await.map_err(fail)?;
        let mut addr = None;
        if let Answer::Resolving {
            mut reply,
            question,
        } = answer
        {
            let ip = timeout(RESOLVE_WAIT, reply.recv())
                .await
                .ok()
                .flatten()
                .and_then(|bytes| answer_of(&question, &bytes))
                .ok_or_else(|| fail(Refusal::NoAddress))?;
            addr = Some(ip);
            answer = self.ask(Target::Addr(ip), port).await.map_err(fail)?;
        }
        let id = match answer {
            Answer::Granted(id) => id,
            Answer::Refused(why) => return Err(fail(why)),
            Answer::Resolving { .. } => return Err(fail(Refusal::NoAddress)),
        };
        let ip = match (addr, &request.dest) {
            (Some(ip), _) => ip,
            (None, Dest::V4(a)) => *a,
            _ => unreachable!("a name is resolved above"),
        };
        match timeout(
            CONNECT_WAIT,
            TcpStream::connect(SocketAddrV4::new(ip, port)),
        )
        .await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok((id, s))
            }
            Ok(Err(e)) => {
                let _ = self.relays.send(Relay::Ended(id));
                let mut f = fail(Refusal::Unreachable);
                f.dest = format!("{shown} ({ip})");
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    f.rep = Some(Rep::ConnectionRefused);
                }
                Err(f)
            }
            Err(_) => {
                let _ = self.relays.send(Relay::Ended(id));
                Err(fail(Refusal::Unreachable))
            }
        }
    }
}

/// The greeting and the request, read within fixed buffers, and whatever followed the
/// request; a refusal says which reply.
async fn handshake(stream: &mut TcpStream) -> Result<(proto::Request, Vec<u8>), Failed> {
    let mut buf = [0u8; proto::MAX_REQUEST];
    let mut have = 0;
    let malformed = |m: Malformed| {
        let why = match m {
            Malformed::NoMethod => Refusal::NoMethod,
            _ => Refusal::Malformed,
        };
        Failed {
            rep: match m {
                Malformed::Version => None,
                Malformed::NoMethod => None,
                Malformed::Reserved => Some(Rep::GeneralFailure),
                Malformed::AddressType => Some(Rep::AddressTypeNotSupported),
                Malformed::Name => Some(Rep::NotAllowed),
            },
            dest: String::new(),
            port: 0,
            why,
        }
    };
    let closed = || Failed {
        rep: None,
        dest: String::new(),
        port: 0,
        why: Refusal::Stalled,
    };
    // The greeting (MAX_GREETING < MAX_REQUEST: it fits).
    let used = loop {
        match proto::greeting(&buf[..have]) {
            Parse::Done((), n) => break n,
            Parse::Bad(Malformed::NoMethod) => {
                let _ = stream.write_all(&proto::REFUSED).await;
                return Err(malformed(Malformed::NoMethod));
            }
            Parse::Bad(m) => return Err(malformed(m)),
            Parse::Incomplete => {}
        }
        match stream.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return Err(closed()),
            Ok(n) => have += n,
        }
    };
    stream
        .write_all(&proto::CHOSEN)
        .await
        .map_err(|_| closed())?;
    // A client may send its request with the greeting: keep what followed it.
    buf.copy_within(used..have, 0);
    have -= used;
    loop {
        match proto::request(&buf[..have]) {
            Parse::Done(r, n) => {
                if r.command != Command::Connect {
                    return Err(Failed::new(Refusal::Command, r.dest.to_string(), r.port));
                }
                return Ok((r, buf[n..have].to_vec()));
            }
            Parse::Bad(m) => return Err(malformed(m)),
            Parse::Incomplete => {}
        }
        match stream.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return Err(closed()),
            Ok(n) => have += n,
        }
    }
}
