//! DNS over TCP, bounded: a client (an address) holds at most [`TCP_PER_CLIENT`]
//! connections and all together at most [`TCP_TOTAL`]; beyond that a connection is
//! accepted and reset at once, so the accept loop never waits and a client holding, or
//! reconnecting, hundreds of connections takes nobody else's. Each question must arrive
//! whole within [`TCP_IDLE`] of the connection opening or of its last answer, however its
//! bytes dribble in, and each answer must be taken within as long; a connection that does
//! not keep up is closed. A connection has one question out at a time and a fixed buffer
//! for it, and questions reach the daemon loop through a bounded channel, which never
//! waits for a connection: UDP is served as before whatever TCP does.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::core::events::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{self, JoinSet};
use tokio::time::{Instant, timeout};

use super::UPSTREAM_TIMEOUT;
use super::datagrams::QUESTION_ROOM;

/// Connections one client address may hold at once. A stub resolver that falls back to
/// TCP after a truncated answer opens one per question it has out (A and AAAA: two).
pub const TCP_PER_CLIENT: usize = 4;
/// Connections at once, from everyone. The default 8 clients at their bound use half.
pub const TCP_TOTAL: usize = 64;
/// A connection's time for each whole question (from connecting, or from its last answer)
/// and for taking in each answer. A resolver that falls back to TCP writes its question
/// at once; RFC 7766 asks for idle timeouts of "a few seconds".
pub const TCP_IDLE: Duration = Duration::from_secs(5);
/// How long a question may wait for its answer (upstreams failing over included).
const ANSWER_WAIT: Duration = UPSTREAM_TIMEOUT.saturating_mul(4);
/// A bound being hit is logged for each client at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Clients whose last line is that recent, at most (then the oldest is forgotten).
const REPORTED: usize = 64;

/// A question that came in over TCP, with the way back to its connection.
pub struct TcpQuestion {
    pub bytes: Vec<u8>,
    pub src: SocketAddr,
    /// Room for exactly one answer: a connection has one question out at a time.
    pub reply: mpsc::Sender<Vec<u8>>,
}

/// The bounds [`serve`] keeps.
#[derive(Clone, Copy, Debug)]
struct Limits {
    per_client: usize,
    total: usize,
    idle: Duration,
}

const LIMITS: Limits = Limits {
    per_client: TCP_PER_CLIENT,
    total: TCP_TOTAL,
    idle: TCP_IDLE,
};

/// Accepts TCP connections and hands their questions to the daemon loop. Dropping the
/// future (aborting its task) closes every connection it holds.
/// `reports`: a connection refused at a bound, for the audit log (dropped when the loop is
/// behind: the next report carries the count).
pub async fn serve_tcp(
    listener: TcpListener,
    tx: mpsc::Sender<TcpQuestion>,
    reports: mpsc::Sender<Event>,
) {
    serve(listener, tx, reports, LIMITS).await;
}

async fn serve(
    listener: TcpListener,
    tx: mpsc::Sender<TcpQuestion>,
    events: mpsc::Sender<Event>,
    limits: Limits,
) {
    let mut conns = JoinSet::new();
    // Every open connection's task and client: at most `limits.total`, so a scan is cheap.
    let mut open: Vec<(task::Id, IpAddr)> = Vec::with_capacity(limits.total);
    let mut reports = Reports::default();
    loop {
        tokio::select! {
            // Connections that ended first: their clients may come back at once.
            biased;
            Some(done) = conns.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                if let Some(i) = open.iter().position(|(t, _)| *t == id) {
                    open.swap_remove(i);
                }
            }
            accepted = listener.accept() => {
                let (stream, src) = match accepted {
                    Ok(a) => a,
                    // A connection that went before it was taken: next.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    // Out of descriptors or memory: give it a moment rather than spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let ip = src.ip();
                let theirs = open.iter().filter(|(_, a)| *a == ip).count();
                let over = if theirs >= limits.per_client {
                    Some(Bound::Client)
                } else if open.len() >= limits.total {
                    Some(Bound::Total)
                } else {
                    None
                };
                if let Some(bound) = over {
                    // A reset: the client knows at once, and no TIME_WAIT stays behind here.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                    let max = match bound {
                        Bound::Client => limits.per_client,
                        Bound::Total => limits.total,
                    };
                    if let Some(closed) = reports.hit(bound, ip, Instant::now()) {
                        let _ = events.try_send(Event::DnsTcpLimit {
                            addr: ip,
                            limit: bound.as_str(),
                            max,
                            closed: u64::from(closed),
                        });
                    }
                    continue;
                }
                let handle = conns.spawn(connection(stream, src, tx.clone(), limits.idle));
                open.push((handle.id(), ip));
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Client,
    Total,
}

impl Bound {
    fn as_str(self) -> &'static str {
        match self {
            Bound::Client => "client",
            Bound::Total => "total",
        }
    }
}

/// Keeps the log to one line per bound and client per [`REPORT_EVERY`], with the count of
/// connections closed since the last one.
#[derive(Default)]
struct Reports {
    /// (bound, client, last line, closed since): clients that hit a bound lately.
    recent: Vec<(Bound, IpAddr, Instant, u32)>,
}

impl Reports {
    /// A connection was closed at `bound`: `Some(closed)` if a line is due now.
    fn hit(&mut self, bound: Bound, ip: IpAddr, now: Instant) -> Option<u32> {
        let key = |(b, a, ..): &(Bound, IpAddr, Instant, u32)| *b == bound && *a == ip;
        if let Some(r) = self.recent.iter_mut().find(|r| key(r)) {
            r.3 += 1;
            if now.duration_since(r.2) < REPORT_EVERY {
                return None;
            }
            r.2 = now;
            return Some(std::mem::take(&mut r.3));
        }
        // Bounded: those reported long enough ago go, and then the oldest.
        self.recent
            .retain(|r| now.duration_since(r.2) < REPORT_EVERY);
        if self.recent.len() >= REPORTED {
            let oldest = (0..self.recent.len()).min_by_key(|&i| self.recent[i].2);
            self.recent.swap_remove(oldest.expect("not empty"));
        }
        self.recent.push((bound, ip, now, 0));
        Some(1)
    }
}

/// One connection: a question at a time, each within `idle`, until the client closes it
/// or does not keep up.
async fn connection(
    mut s: TcpStream,
    src: SocketAddr,
    tx: mpsc::Sender<TcpQuestion>,
    idle: Duration,
) {
    let _ = s.set_nodelay(true);
    let (reply_tx, mut reply_rx) = mpsc::channel(1);
    let mut buf = [0u8; QUESTION_ROOM];
    loop {
        // One deadline for the whole question, however its bytes come.
        let Ok(Ok(n)) = timeout(idle, read_message(&mut s, &mut buf)).await else {
            return;
        };
        let question = TcpQuestion {
            bytes: buf[..n].to_vec(),
            src,
            reply: reply_tx.clone(),
        };
        // A question that gets no answer at all (garbage) ends the connection.
        let answer = async {
            tx.send(question).await.ok()?;
            reply_rx.recv().await
        };
        let Ok(Some(reply)) = timeout(ANSWER_WAIT, answer).await else {
            return;
        };
        let len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        let write = async {
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(&reply[..usize::from(len)]).await
        };
        let Ok(Ok(())) = timeout(idle, write).await else {
            return;
        };
    }
}

/// Reads one length-prefixed message: its first `buf.len()` bytes into `buf` (how many is
/// returned), the rest of a longer one is read and dropped. A question cut short is
/// answered as a cut datagram is: FORMERR, or as usual if it is whole.
async fn read_message(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    let keep = len.min(buf.len());
    s.read_exact(&mut buf[..keep]).await?;
    let mut rest = len - keep;
    let mut skip = [0u8; 256];
    while rest > 0 {
        let n = s.read(&mut skip[..rest.min(256)]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        rest -= n;
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::net::TcpSocket;

    /// A server with `limits` on an ephemeral loopback port, and a stand-in for the daemon
    /// loop that answers every question with its own bytes, reversed.
    async fn server(limits: Limits) -> (SocketAddr, mpsc::Receiver<usize>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<TcpQuestion>(8);
        // Every question's length, for the test to look at.
        let (seen_tx, seen_rx) = mpsc::channel(64);
        tokio::spawn(serve(listener, tx, mpsc::channel(8).0, limits));
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                let _ = seen_tx.send(q.bytes.len()).await;
                let mut answer = q.bytes;
                answer.reverse();
                q.reply.try_send(answer).unwrap();
            }
        });
        (addr, seen_rx)
    }

    /// A connection to `server` from 127.0.0.`host`.
    async fn try_connect(server: SocketAddr, host: u8) -> io::Result<TcpStream> {
        let s = TcpSocket::new_v4().unwrap();
        s.bind((Ipv4Addr::new(127, 0, 0, host), 0).into()).unwrap();
        s.connect(server).await
    }

    async fn connect(server: SocketAddr, host: u8) -> TcpStream {
        try_connect(server, host).await.unwrap()
    }

    /// Whether a new connection from 127.0.0.`host` is closed at once (it may even be
    /// reset before the connect call saw it established).
    async fn turned_away(server: SocketAddr, host: u8) -> bool {
        match try_connect(server, host).await {
            Ok(mut s) => closed(&mut s).await,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    /// How long a test waits for what must happen before it calls it a failure.
    const GIVE_UP: Duration = Duration::from_secs(10);

    async fn ask(s: &mut TcpStream, question: &[u8]) -> io::Result<Vec<u8>> {
        let exchange = async {
            let len = u16::try_from(question.len()).unwrap();
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(question).await?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await?;
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut answer).await?;
            Ok(answer)
        };
        timeout(GIVE_UP, exchange)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Whether the server closed `s` (end of stream or reset); it sends nothing unasked.
    async fn closed(s: &mut TcpStream) -> bool {
        match timeout(GIVE_UP, s.read(&mut [0u8; 1])).await {
            Ok(Ok(0)) => true,
            Ok(Err(e)) => e.kind() == io::ErrorKind::ConnectionReset,
            Ok(Ok(_)) => panic!("the server sent something unasked"),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn bounds_per_client_and_in_all_and_slots_come_back() {
        let limits = Limits {
            per_client: 2,
            total: 3,
            idle: Duration::from_secs(30),
        };
        let (server, _) = server(limits).await;
        let (mut a1, mut a2) = (connect(server, 2).await, connect(server, 2).await);
        // The client's third: reset at once.
        assert!(turned_away(server, 2).await);
        assert_eq!(ask(&mut a1, b"a1").await.unwrap(), b"1a");
        assert_eq!(ask(&mut a2, b"a2").await.unwrap(), b"2a");
        // Another client takes the last place; the next from anyone is reset.
        let mut b1 = connect(server, 3).await;
        assert_eq!(ask(&mut b1, b"b1").await.unwrap(), b"1b");
        assert!(turned_away(server, 4).await);
        // A connection that ends gives its place back: once the server saw it go (its
        // reset, then its own end), the client gets in again.
        drop(a1);
        let retry = async {
            loop {
                let Ok(mut s) = try_connect(server, 2).await else {
                    continue;
                };
                if let Ok(answer) = ask(&mut s, b"again").await {
                    break (s, answer);
                }
            }
        };
        let mut again = tokio::time::timeout(Duration::from_secs(5), retry)
            .await
            .expect("the place came back");
        assert_eq!(again.1, b"niaga");
        assert_eq!(ask(&mut again.0, b"x").await.unwrap(), b"x");
        assert_eq!(ask(&mut b1, b"b2").await.unwrap(), b"2b");
    }

    #[tokio::test]
    async fn each_question_has_a_deadline_however_its_bytes_come() {
        let idle = Duration::from_millis(600);
        let limits = Limits {
            per_client: 4,
            total: 8,
            idle,
        };
        let (server, _) = server(limits).await;
        // Silent: closed.
        let mut silent = connect(server, 2).await;
        assert!(closed(&mut silent).await);
        // A byte at a time, each well within the deadline, of a question that would take
        // ten deadlines: closed while the bytes still come.
        let mut slow = connect(server, 2).await;
        slow.write_all(&100u16.to_be_bytes()).await.unwrap();
        let dribble = async {
            for _ in 0..100 {
                tokio::time::sleep(idle / 10).await;
                if slow.write_all(&[0]).await.is_err() {
                    return true;
                }
            }
            false
        };
        assert!(dribble.await, "a dribbling question outlived ten deadlines");
        // Questions that each come in time keep a connection open past one deadline: the
        // deadline starts again after each answer.
        let mut steady = connect(server, 2).await;
        for i in 0..4u8 {
            tokio::time::sleep(idle / 2).await;
            assert_eq!(ask(&mut steady, &[i, 9]).await.unwrap(), [9, i]);
        }
    }

    #[tokio::test]
    async fn a_long_question_is_cut_to_the_room_and_the_rest_skipped() {
        let limits = Limits {
            per_client: 4,
            total: 8,
            idle: Duration::from_secs(30),
        };
        let (server, mut seen) = server(limits).await;
        let mut s = connect(server, 2).await;
        let long: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let answer = ask(&mut s, &long).await.unwrap();
        assert_eq!(seen.recv().await, Some(QUESTION_ROOM));
        let mut cut = long[..QUESTION_ROOM].to_vec();
        cut.reverse();
        assert_eq!(answer, cut);
        // The stream is still in step: the next question is read from its own start.
        assert_eq!(ask(&mut s, b"next").await.unwrap(), b"txen");
    }

    #[test]
    fn reports_once_per_client_and_period_with_the_count() {
        let mut r = Reports::default();
        let t0 = Instant::now();
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let b: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        assert_eq!(r.hit(Bound::Client, a, t0), Some(1));
        for _ in 0..5 {
            assert_eq!(r.hit(Bound::Client, a, t0 + Duration::from_secs(1)), None);
        }
        // Another client, and another bound, are reported on their own.
        assert_eq!(r.hit(Bound::Client, b, t0), Some(1));
        assert_eq!(r.hit(Bound::Total, a, t0), Some(1));
        // A period later: one line for the six closed since the last.
        assert_eq!(r.hit(Bound::Client, a, t0 + REPORT_EVERY), Some(6));
        assert_eq!(r.hit(Bound::Client, a, t0 + REPORT_EVERY), None);
        // Bounded however many clients hit a bound.
        for i in 0..1000u32 {
            r.hit(Bound::Client, Ipv4Addr::from(i).into(), t0);
        }
        assert!(r.recent.len() <= REPORTED);
    }
}
