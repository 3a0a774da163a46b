//! Echo servers on the cloud and long-lived connections to them from a client: what the
//! tests that end connections (an allow entry removed, a profile changed) hold open.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::Rig;

/// The port the echo servers listen on.
pub const ECHO: u16 = 9000;

/// An echo server on each of `addrs` (added to the cloud's loopback if it lacks them),
/// each connection on a thread of its own, for the rest of the test.
pub fn echo_servers(rig: &Rig, addrs: &[Ipv4Addr]) {
    for &a in addrs {
        let listener = rig.cloud().run(|| {
            TcpListener::bind((a, ECHO)).or_else(|_| {
                let out = std::process::Command::new("ip")
                    .args(["addr", "add", &format!("{a}/32"), "dev", "lo"])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "ip addr add {a}: {out:?}");
                TcpListener::bind((a, ECHO))
            })
        });
        let listener = listener.unwrap_or_else(|e| panic!("bind {a}:{ECHO}: {e}"));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 256];
                    while let Ok(n @ 1..) = c.read(&mut buf) {
                        if c.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
}

/// A connection from client `i` to `dst`'s echo server, if it is let through in time.
pub fn connect(rig: &Rig, i: usize, dst: Ipv4Addr, timeout: Duration) -> Option<TcpStream> {
    rig.client(i)
        .run(|| TcpStream::connect_timeout(&SocketAddr::from((dst, ECHO)), timeout))
        .ok()
}

/// Whether a line sent on `s` comes back within `timeout`.
pub fn echoes(s: &mut TcpStream, timeout: Duration) -> bool {
    let line = b"ping\n";
    if s.write_all(line).is_err() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < line.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got == line
}
