//! The control socket: a UNIX stream socket where `provisionerctl` asks the daemon for its
//! state and gives it orders: one JSON request per line, one JSON reply per line, in the
//! types and encoding of [`protocol`]. (The ubus object, `crate::ubus`, sends the same
//! requests down the same order channel.)

pub mod audit;
pub mod clock;
pub mod http;
pub mod human;
pub mod protocol;

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use protocol::{Failure, FailureKind, Reply, Request};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/provisioner.sock";

/// Connections open at once (each holds at most a 1 KB buffer and a request). A newcomer
/// over the limit takes the place of the connection that has waited longest for a request
/// line (a silent client holds nobody up); if every one is being served or follows the
/// events, it waits (and the newcomers after it, in the kernel's backlog) until one is
/// done, up to [`BUSY_WAIT`], and is then answered `busy` and closed.
pub const MAX_CONNECTIONS: usize = 32;

/// How long a newcomer waits for a place while every connection is being served.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// How long a connection may wait for its next request line to be complete.
const IDLE: Duration = Duration::from_secs(10);

/// Events waiting for a slow follower; one further behind is told how many it lost.
pub const FOLLOW_BACKLOG: usize = 256;

/// Connections following the events at once (each holds a connection until it hangs up,
/// so they may not take all of [`MAX_CONNECTIONS`]).
pub const MAX_FOLLOWERS: usize = 8;

/// A new event for followers (`events --follow`): its number and its reply line, encoded
/// once for all of them.
pub type Followed = (u64, std::sync::Arc<str>);

/// A request on its way to the daemon loop, with the way back.
pub struct Order {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

/// The open connections.
#[derive(Default)]
struct Open {
    next: u64,
    conns: Vec<Conn>,
}

struct Conn {
    id: u64,
    /// Since when it has waited for a request line; `None` while a request is served or
    /// the events followed.
    since: Option<std::time::Instant>,
    /// Its socket, to see whether what it sent is still unread (only looked at on the
    /// runtime's one thread, where its task cannot close it meanwhile).
    fd: std::os::fd::RawFd,
    /// Ends its task (and so the connection).
    abort: Option<tokio::task::AbortHandle>,
}

impl Conn {
    /// Waiting, with nothing sent that its task has not read yet: silent. (A newcomer
    /// whose line is still in the socket has not been looked at, and is not.)
    fn silent(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        self.since.is_some()
            && !matches!(
                recv(self.fd, &mut [0u8; 1], MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
                Ok(n) if n > 0
            )
    }
}

/// [`Open`], and a wake-up for a newcomer waiting for a place (a connection left, or
/// waits for its next request again).
type Shared = std::sync::Arc<(std::sync::Mutex<Open>, tokio::sync::Notify)>;

fn lock(open: &Shared) -> std::sync::MutexGuard<'_, Open> {
    open.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection's place in [`Open`]: says when it waits, and leaves when its task ends (or
/// is dropped unpolled, when aborted at once).
struct Place {
    open: Shared,
    id: u64,
}

impl Place {
    fn waiting(&self, waits: bool) {
        let mut open = lock(&self.open);
        if let Some(c) = open.conns.iter_mut().find(|c| c.id == self.id) {
            c.since = waits.then(std::time::Instant::now);
        }
        drop(open);
        if waits {
            self.open.1.notify_one();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.open).conns.retain(|c| c.id != self.id);
        self.open.1.notify_one();
    }
}

/// Makes a place for a newcomer on `fd`, ending the silent connection that has waited
/// longest if all are taken; `None` if none is silent.
fn admit(open: &Shared, fd: std::os::fd::RawFd) -> Option<Place> {
    let mut o = lock(open);
    if o.conns.len() >= MAX_CONNECTIONS {
        let (i, _) = o
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.silent())
            .filter_map(|(i, c)| Some((i, c.since?)))
            .min_by_key(|&(_, since)| since)?;
        if let Some(a) = o.conns.swap_remove(i).abort {
            a.abort();
        }
    }
    let id = o.next;
    o.next += 1;
    // Waiting from the start: a connection that never sends is the first to go.
    o.conns.push(Conn {
        id,
        since: Some(std::time::Instant::now()),
        fd,
        abort: None,
    });
    Some(Place {
        open: open.clone(),
        id,
    })
}

/// Accepts connections and hands each request line to the daemon loop.
pub async fn serve(
    listener: UnixListener,
    orders: mpsc::Sender<Order>,
    feed: broadcast::Sender<Followed>,
) {
    let open = Shared::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let waited = tokio::time::timeout(BUSY_WAIT, async {
            loop {
                if let Some(place) = admit(&open, fd) {
                    return place;
                }
                open.1.notified().await;
            }
        });
        let Ok(place) = waited.await else {
            // Said without blocking (a full socket buffer just loses it), and closed.
            let f = Failure::new(
                FailureKind::Busy,
                format!("{MAX_CONNECTIONS} connections are being served; try again"),
            );
            let _ = stream.try_write(format!("{}\n", Reply::from(f).encode()).as_bytes());
            continue;
        };
        let id = place.id;
        let orders = orders.clone();
        let feed = feed.clone();
        let task = tokio::spawn(async move {
            let _ = connection(stream, orders, feed, &place).await;
            drop(place);
        });
        let mut o = lock(&open);
        if let Some(c) = o.conns.iter_mut().find(|c| c.id == id) {
            c.abort = Some(task.abort_handle());
        }
    }
}

/// A reply line, in one write (a reader waiting for the newline wakes once).
async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut line = reply.encode();
    line.push('\n');
    write.write_all(line.as_bytes()).await
}

async fn connection(
    stream: UnixStream,
    orders: mpsc::Sender<Order>,
    feed: broadcast::Sender<Followed>,
    place: &Place,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(1024, read);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // One byte over the limit tells a line too long from one exactly at it.
        let mut limited = (&mut read).take(protocol::MAX_REQUEST as u64 + 1);
        place.waiting(true);
        match tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut line)).await {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
        place.waiting(false);
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > protocol::MAX_REQUEST {
            let f = Failure::new(
                FailureKind::BadRequest,
                format!("request over {} bytes", protocol::MAX_REQUEST),
            );
            write.write_all(Reply::from(f).encode().as_bytes()).await?;
            write.write_all(b"\n").await?;
            return Ok(());
        }
        let reply = match std::str::from_utf8(&line) {
            Err(_) => Reply::from(Failure::new(FailureKind::BadRequest, "request not UTF-8")),
            Ok(text) => match Request::decode(text.trim_end()) {
                Err(f) => Reply::from(f),
                Ok(request) => {
                    // Subscribed before the daemon reads its journal, so that nothing
                    // falls between the page and the feed (what both hold is skipped).
                    let follow = matches!(request, Request::Events { follow: true, .. })
                        .then(|| feed.subscribe());
                    if follow.is_some() && feed.receiver_count() > MAX_FOLLOWERS {
                        let f = Failure::new(
                            FailureKind::Busy,
                            format!("{MAX_FOLLOWERS} readers already follow the events"),
                        );
                        write.write_all(Reply::from(f).encode().as_bytes()).await?;
                        write.write_all(b"\n").await?;
                        return Ok(());
                    }
                    let (tx, rx) = oneshot::channel();
                    if orders.send(Order { request, reply: tx }).await.is_err() {
                        return Ok(());
                    }
                    let reply = rx.await.unwrap_or_else(|_| {
                        Failure::new(FailureKind::Stopping, "the daemon is stopping").into()
                    });
                    if let (Some(feed), Reply::Events(page)) = (follow, &reply) {
                        send(&mut write, &reply).await?;
                        return follow_events(read, write, feed, page.next).await;
                    }
                    reply
                }
            },
        };
        send(&mut write, &reply).await?;
        if !complete {
            return Ok(());
        }
    }
}

/// `events --follow` after its page: each event numbered `next` or later as it comes, a
/// note of how many were lost if this reader fell [`FOLLOW_BACKLOG`] behind, until the
/// reader hangs up (or sends anything) or the daemon stops.
async fn follow_events(
    mut read: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut feed: broadcast::Receiver<Followed>,
    next: u64,
) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            got = feed.recv() => match got {
                Ok((seq, line)) => {
                    if seq >= next {
                        write.write_all(line.as_bytes()).await?;
                        write.write_all(b"\n").await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    let note = Reply::Events(protocol::Events { events: Vec::new(), next: 0, lost });
                    write.write_all(note.encode().as_bytes()).await?;
                    write.write_all(b"\n").await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = read.read(&mut byte) => return Ok(()),
        }
    }
}

/// Binds the control socket, replacing a stale one (a socket file nobody listens on).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)?;
    // Root only until told otherwise: this socket opens the network.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Who may use the control socket besides root: `group` (by name) with mode 0660, or
/// nobody (0600). A group the system does not know is an error, and leaves it root only.
pub fn share(path: &Path, group: Option<&str>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |m| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let Some(name) = group else {
        return mode(0o600);
    };
    let gid = match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => g.gid,
        Ok(None) => {
            mode(0o600)?;
            return Err(format!(
                "control group '{name}' does not exist; the control socket stays root's only"
            ));
        }
        Err(e) => {
            mode(0o600)?;
            return Err(format!("looking up control group '{name}': {e}"));
        }
    };
    nix::unistd::chown(path, None, Some(gid)).map_err(|e| format!("{}: {e}", path.display()))?;
    mode(0o660)
}

/// `provisionerctl`'s side: one request, one reply.
pub fn request(path: &Path, request: &Request) -> std::io::Result<Reply> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = request.encode();
    line.push('\n');
    // A daemon that turns us away (`busy`) has said so and closed before reading our
    // line: the write then fails, but the reply is there to read.
    let sent = s.write_all(line.as_bytes());
    let mut reply = String::new();
    let read = std::io::BufReader::new(s).read_line(&mut reply);
    if reply.is_empty() {
        sent?;
        read?;
    }
    Reply::decode(reply.trim_end()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the daemon's reply is not one this build reads ({e}): {}",
                reply.trim_end()
            ),
        )
    })
}

/// `provisionerctl events --follow`'s side: the page, then each event as it comes, handed
/// to `each` until it returns false or the daemon hangs up.
pub fn follow(
    path: &Path,
    request: &Request,
    mut each: impl FnMut(Reply) -> bool,
) -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    let mut line = request.encode();
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut lines = std::io::BufReader::new(s);
    let mut reply = String::new();
    loop {
        reply.clear();
        if lines.read_line(&mut reply)? == 0 {
            return Ok(());
        }
        let r = Reply::decode(reply.trim_end()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the daemon's reply is not one this build reads ({e})"),
            )
        })?;
        if !each(r) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::WindowState;

    const CLOSED: Reply = Reply::Window(WindowState {
        open: false,
        secs_left: None,
        for_: Vec::new(),
        count: None,
        done: None,
    });

    fn temp_socket(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("prov-ctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// A control socket served by a loop that answers every order with CLOSED.
    fn socket(name: &str) -> std::path::PathBuf {
        let path = temp_socket(name);
        let listener = bind(&path).unwrap();
        let (tx, mut rx) = mpsc::channel::<Order>(4);
        tokio::spawn(serve(listener, tx, broadcast::channel(FOLLOW_BACKLOG).0));
        tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                let _ = o.reply.send(CLOSED);
            }
        });
        path
    }

    async fn exchange(s: &mut BufReader<UnixStream>, bytes: &[u8]) -> Reply {
        s.get_mut().write_all(bytes).await.unwrap();
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        Reply::decode(line.trim_end()).unwrap()
    }

    fn failure(r: Reply) -> Failure {
        match r {
            Reply::Error(f) => f,
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_connection_outlives_bad_requests_but_not_an_oversized_one() {
        let path = socket("bad");
        let mut s = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let ok = format!("{}\n", Request::Status.encode());
        assert_eq!(exchange(&mut s, ok.as_bytes()).await, CLOSED);
        let f = failure(exchange(&mut s, b"status\n").await);
        assert_eq!(f.kind, FailureKind::BadRequest);
        let f = failure(exchange(&mut s, b"\xff\xfe\n").await);
        assert_eq!(f.message, "request not UTF-8");
        let f = failure(exchange(&mut s, b"{\"version\":9,\"request\":\"status\"}\n").await);
        assert_eq!(f.kind, FailureKind::Version);
        assert_eq!(exchange(&mut s, ok.as_bytes()).await, CLOSED);

        // At the limit is a request (a bad one); one byte over ends the connection.
        let mut at = vec![b' '; protocol::MAX_REQUEST - 1];
        at.push(b'\n');
        let f = failure(exchange(&mut s, &at).await);
        assert!(f.message.contains("EOF"), "{f}");
        let over = vec![b' '; protocol::MAX_REQUEST + 1];
        let f = failure(exchange(&mut s, &over).await);
        assert!(f.message.contains("over 4096 bytes"), "{f}");
        let mut rest = String::new();
        assert_eq!(s.read_line(&mut rest).await.unwrap(), 0, "closed: {rest}");
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn silent_clients_give_way_to_newcomers_oldest_first() {
        let path = socket("silent");
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = BufReader::new(UnixStream::connect(&path).await.unwrap());
            s.get_mut().write_all(b"{\"version\":1,").await.unwrap();
            silent.push(s);
        }
        // Many more newcomers than places, each kept open: each is served, each time in
        // the place of the connection that has waited longest (the silent ones first, then
        // the newcomers that were answered first).
        let ok = format!("{}\n", Request::WindowClose.encode());
        let mut waiting = silent;
        for i in 0..3 * MAX_CONNECTIONS {
            let mut s = BufReader::new(UnixStream::connect(&path).await.unwrap());
            assert_eq!(
                exchange(&mut s, ok.as_bytes()).await,
                CLOSED,
                "newcomer {i}"
            );
            let mut rest = String::new();
            let n = waiting[i].read_line(&mut rest).await.unwrap();
            assert_eq!(n, 0, "connection {i} closed to make room: {rest}");
            waiting.push(s);
        }
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_newcomer_waits_while_every_connection_is_served_then_is_told_busy() {
        let path = temp_socket("busy");
        let listener = bind(&path).unwrap();
        let (tx, mut rx) = mpsc::channel::<Order>(MAX_CONNECTIONS);
        tokio::spawn(serve(listener, tx, broadcast::channel(FOLLOW_BACKLOG).0));
        let ok = format!("{}\n", Request::Status.encode());
        // Every place holds a request the loop has not answered yet.
        let mut served = Vec::new();
        let mut orders = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = BufReader::new(UnixStream::connect(&path).await.unwrap());
            s.get_mut().write_all(ok.as_bytes()).await.unwrap();
            orders.push(rx.recv().await.unwrap());
            served.push(s);
        }
        let busy = |line: String| failure(Reply::decode(line.trim_end()).unwrap()).kind;
        // A newcomer waits for a place, and none frees up in time: busy, and closed.
        let t = std::time::Instant::now();
        let mut over = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let mut line = String::new();
        over.read_line(&mut line).await.unwrap();
        assert_eq!(busy(line.clone()), FailureKind::Busy, "{line}");
        assert!(t.elapsed() >= BUSY_WAIT, "told busy without waiting");
        line.clear();
        assert_eq!(over.read_line(&mut line).await.unwrap(), 0, "closed");
        // A newcomer arrives; the first is answered and waits for its next request: the
        // newcomer takes its place and is served.
        let mut next = BufReader::new(UnixStream::connect(&path).await.unwrap());
        next.get_mut().write_all(ok.as_bytes()).await.unwrap();
        let first = orders.remove(0);
        first.reply.send(CLOSED).unwrap();
        line.clear();
        served[0].read_line(&mut line).await.unwrap();
        assert_eq!(Reply::decode(line.trim_end()).unwrap(), CLOSED);
        let o = rx.recv().await.unwrap();
        o.reply.send(CLOSED).unwrap();
        line.clear();
        next.read_line(&mut line).await.unwrap();
        assert_eq!(Reply::decode(line.trim_end()).unwrap(), CLOSED);
        line.clear();
        assert_eq!(served[0].read_line(&mut line).await.unwrap(), 0, "gave way");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn provisionerctl_reads_the_reply_type() {
        let path = temp_socket("sync");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(async { bind(&path) }).unwrap();
        let (tx, mut rx) = mpsc::channel::<Order>(1);
        let (done, read) = oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            rt.block_on(async move {
                tokio::spawn(serve(listener, tx, broadcast::channel(FOLLOW_BACKLOG).0));
                let o = rx.recv().await.unwrap();
                assert_eq!(
                    o.request,
                    Request::WindowOpen {
                        secs: Some(420),
                        for_: vec![],
                        count: None,
                    }
                );
                let _ = o
                    .reply
                    .send(Failure::new(FailureKind::Stopping, "the daemon is stopping").into());
                // The runtime (and the connection's task) lives until the reply is read.
                let _ = read.await;
            })
        });
        let r = request(
            &path,
            &Request::WindowOpen {
                secs: Some(420),
                for_: vec![],
                count: None,
            },
        )
        .unwrap();
        let _ = done.send(());
        assert!(r.is_error(), "{r:?}");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    fn line(seq: u64) -> protocol::EventLine {
        protocol::EventLine {
            seq,
            ts: "2026-12-01T22:50:03.120Z".into(),
            level: "info".into(),
            event: "window_closed".into(),
            fields: Vec::new(),
        }
    }

    /// A follower gets the page, then exactly the events after it (none twice, none
    /// missing, whatever raced with the page), is told what it lost when too slow, and
    /// the ninth follower is turned away.
    #[tokio::test]
    async fn followers_get_every_event_once_and_hear_of_losses() {
        let path = temp_socket("follow");
        let listener = bind(&path).unwrap();
        let (tx, mut rx) = mpsc::channel::<Order>(4);
        let (feed, _) = broadcast::channel::<Followed>(FOLLOW_BACKLOG);
        tokio::spawn(serve(listener, tx, feed.clone()));
        let send = |seq: u64| {
            let _ = feed.send((seq, Reply::Event(line(seq)).encode().into()));
        };
        let pages = feed.clone();
        tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                // Event 2 is already in the page and, racing with it, on the feed.
                let _ = pages.send((2, Reply::Event(line(2)).encode().into()));
                let _ = o.reply.send(Reply::Events(protocol::Events {
                    events: vec![line(1), line(2)],
                    next: 3,
                    lost: 0,
                }));
            }
        });
        let ask = format!(
            "{}\n",
            Request::Events {
                since: None,
                follow: true
            }
            .encode()
        );
        let mut s = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let page = exchange(&mut s, ask.as_bytes()).await;
        assert!(
            matches!(&page, Reply::Events(p) if p.events.len() == 2),
            "{page:?}"
        );
        send(3);
        send(4);
        for want in [3, 4] {
            let mut l = String::new();
            s.read_line(&mut l).await.unwrap();
            assert_eq!(
                Reply::decode(l.trim_end()).unwrap(),
                Reply::Event(line(want))
            );
        }
        // Too slow: more than the backlog sent before it reads.
        for seq in 5..5 + FOLLOW_BACKLOG as u64 + 10 {
            send(seq);
        }
        let mut l = String::new();
        s.read_line(&mut l).await.unwrap();
        match Reply::decode(l.trim_end()).unwrap() {
            Reply::Events(p) => assert_eq!((p.events.len(), p.lost), (0, 10)),
            r => panic!("no note of the loss: {r:?}"),
        }
        // Followers are bounded.
        let mut others = Vec::new();
        for _ in 1..MAX_FOLLOWERS {
            let mut o = BufReader::new(UnixStream::connect(&path).await.unwrap());
            assert!(matches!(
                exchange(&mut o, ask.as_bytes()).await,
                Reply::Events(_)
            ));
            others.push(o);
        }
        let mut over = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let f = failure(exchange(&mut over, ask.as_bytes()).await);
        assert_eq!(f.kind, FailureKind::Busy, "{f}");
        let _ = std::fs::remove_file(&path);
    }
}
