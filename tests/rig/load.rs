//! TCP load for rate and share tests: several connections to one server, all moving data at
//! once, each measured where its bytes arrive over one common window after a warm-up.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::Ns;

/// One TCP connection of a [`load`]: from `ns` to the server; `up`, `ns` sends, else the
/// server does.
#[derive(Clone, Copy)]
pub struct Flow<'a> {
    pub ns: &'a Ns,
    pub up: bool,
}

impl<'a> Flow<'a> {
    pub fn up(ns: &'a Ns) -> Flow<'a> {
        Flow { ns, up: true }
    }
    pub fn down(ns: &'a Ns) -> Flow<'a> {
        Flow { ns, up: false }
    }
}

/// Opens every flow to `dst` (a listener bound in `server`) before any data moves, then
/// has every sender push as fast as it can and every receiver count what arrives from
/// `warmup` to `warmup + run` after that common start; returns each flow's bytes per second,
/// in order. Counting at the receiver over a fixed window leaves out what socket buffers
/// held and the full token buckets the first packets find.
pub fn load(
    server: &Ns,
    dst: SocketAddr,
    flows: &[Flow],
    warmup: Duration,
    run: Duration,
) -> Vec<f64> {
    let listener = server.run(|| TcpListener::bind(dst).expect("bind the server's port"));
    // One connection at a time, so the n-th accepted is the n-th flow's (masquerade hides
    // which client it is).
    let conns: Vec<(TcpStream, TcpStream)> = flows
        .iter()
        .map(|f| {
            let client = f.ns.run(|| {
                TcpStream::connect_timeout(&dst, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("{}: connect to {dst}: {e}", f.ns.name))
            });
            let (served, _) = listener.accept().expect("accept");
            (client, served)
        })
        .collect();
    let start = Instant::now() + warmup;
    let end = start + run;
    std::thread::scope(|s| {
        let threads: Vec<_> = flows
            .iter()
            .zip(conns)
            .map(|(f, (client, served))| {
                let (sender, receiver) = if f.up {
                    (client, served)
                } else {
                    (served, client)
                };
                s.spawn(move || send(sender, end + run));
                s.spawn(move || receive(receiver, start, end))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("receiver thread") as f64 / run.as_secs_f64())
            .collect()
    })
}

/// Sends until the receiver closes (or, if it never does, `until`).
fn send(mut conn: TcpStream, until: Instant) {
    let buf = vec![0u8; 64 * 1024];
    let left = until.saturating_duration_since(Instant::now());
    conn.set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    while Instant::now() < until && conn.write_all(&buf).is_ok() {}
}

/// The bytes that arrive from `start` to `end`; then closes, which stops the sender.
fn receive(mut conn: TcpStream, start: Instant, end: Instant) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut n = 0u64;
    while Instant::now() < end {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(k) if Instant::now() >= start => n += k as u64,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    n
}
