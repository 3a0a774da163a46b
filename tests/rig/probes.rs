//! Probes: what a client (or any namespace) observes when it tries something: a TCP
//! connection, a UDP exchange, a DNS query, a ping; a client's DHCP (udhcpc); and
//! [`wait_until`] for the few conditions nothing signals. Probes never panic on network
//! errors: they report what happened.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, getsockopt, socket, sockopt,
};

use super::fake_dns::dns_key;
use super::util::poll_writable;
use super::{HOST_IF, Ns, Rig};

/// What a probe observed. Probes never panic on network errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The server's line, without the newline.
    Answered(String),
    /// TCP RST / ICMP port unreachable (ECONNREFUSED).
    Refused,
    /// Nothing came back in time.
    TimedOut,
    /// Anything else (e.g. EHOSTUNREACH from an ICMP reject, ENETUNREACH, EPERM).
    Failed(String),
}

impl Probe {
    pub fn answered(&self) -> bool {
        matches!(self, Probe::Answered(_))
    }
}

/// TCP connect from `ns` to `dst` (optionally bound to `src` first, with IP_FREEBIND so a
/// spoofed source can be used) and read the server's line.
pub fn tcp(ns: &Ns, dst: impl Into<SocketAddr>, src: Option<IpAddr>, timeout: Duration) -> Probe {
    let dst = dst.into();
    ns.run(|| {
        let deadline = Instant::now() + timeout;
        let mut stream = match tcp_connect(dst, src, timeout) {
            Ok(s) => s,
            Err(p) => return p,
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Probe::TimedOut;
            }
            let _ = stream.set_read_timeout(Some(left));
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return io_probe("read", &e),
            }
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if line.is_empty() {
            Probe::Failed("connected, but closed without a line".into())
        } else {
            Probe::Answered(line)
        }
    })
}

/// One UDP datagram from `ns` to `dst`; the answer datagram, if any.
pub fn udp(ns: &Ns, dst: impl Into<SocketAddr>, timeout: Duration) -> Probe {
    let dst = dst.into();
    ns.run(|| match udp_exchange(dst, b"probe", timeout) {
        Ok(reply) => Probe::Answered(String::from_utf8_lossy(&reply).trim_end().to_string()),
        Err(p) => p,
    })
}

/// What a DNS query observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    /// NOERROR with these A records (possibly none).
    Answer(Vec<Ipv4Addr>),
    /// Another response code, e.g. "Refused", "NXDomain", "ServFail".
    Rcode(String),
    /// No response in time.
    NoAnswer,
    /// Could not ask or got garbage (refused connection, port unreachable, bad reply...).
    Failed(String),
}

/// Asks `server` (over UDP, or TCP if `tcp`) for the A records of `name`, from `ns`.
pub fn dns(
    ns: &Ns,
    server: impl Into<SocketAddr>,
    name: &str,
    tcp: bool,
    timeout: Duration,
) -> Dns {
    let msg = match dns_exchange(ns, server.into(), name, RecordType::A, tcp, timeout) {
        Ok(m) => m,
        Err(DnsError::TimedOut) => return Dns::NoAnswer,
        Err(DnsError::Refused) => return Dns::Failed("refused".into()),
        Err(DnsError::Failed(e)) => return Dns::Failed(e),
    };
    if msg.metadata.response_code != ResponseCode::NoError {
        return Dns::Rcode(format!("{:?}", msg.metadata.response_code));
    }
    Dns::Answer(
        msg.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
    )
}

/// A DNS response as [`dns_query`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsReply {
    /// The response code's Debug name: "NoError", "NXDomain", "ServFail", "Refused", ...
    pub rcode: String,
    /// The A records of the answer section, in order.
    pub a: Vec<Ipv4Addr>,
    /// The AAAA records of the answer section, in order.
    pub aaaa: Vec<Ipv6Addr>,
    /// The CNAME targets of the answer section, in order (lowercase, no trailing dot).
    pub cnames: Vec<String>,
    /// The lowest TTL in the answer section; `None` without answer records.
    pub min_ttl: Option<u32>,
    /// Every answer record as `owner ttl TYPE data`, names lowercase, the owner without the
    /// trailing dot, e.g. `a.example 300 CNAME b.example.` or `b.example 60 A 11.1.0.10`.
    pub answers: Vec<String>,
    /// The TC bit: the server had more than fits (UDP).
    pub truncated: bool,
}

/// Why [`dns_query`] got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// Nothing came back in time.
    TimedOut,
    /// Nothing listens there: ICMP port unreachable (UDP) or a TCP RST (ECONNREFUSED).
    Refused,
    /// Anything else: another network error (e.g. host unreachable), a bad name, a reply
    /// that does not parse or does not match the query (id, question).
    Failed(String),
}

/// Asks `server` (over UDP, or TCP if `tcp`) from `ns` for the `qtype` records of `name`,
/// with RD set, and returns what came back, whatever the response code.
pub fn dns_query(
    ns: &Ns,
    server: impl Into<SocketAddr>,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<DnsReply, DnsError> {
    let msg = dns_exchange(ns, server.into(), name, qtype, tcp, timeout)?;
    let q = msg.queries.first();
    if msg.queries.len() != 1
        || q.is_some_and(|q| dns_key(&q.name.to_ascii()) != dns_key(name) || q.query_type != qtype)
    {
        return Err(DnsError::Failed(format!(
            "reply for {:?}, asked {name} {qtype}",
            msg.queries
        )));
    }
    let mut reply = DnsReply {
        rcode: format!("{:?}", msg.metadata.response_code),
        a: Vec::new(),
        aaaa: Vec::new(),
        cnames: Vec::new(),
        min_ttl: msg.answers.iter().map(|r| r.ttl).min(),
        answers: Vec::new(),
        truncated: msg.metadata.truncation,
    };
    for r in &msg.answers {
        match &r.data {
            RData::A(a) => reply.a.push(a.0),
            RData::AAAA(a) => reply.aaaa.push(a.0),
            RData::CNAME(c) => reply.cnames.push(dns_key(&c.0.to_ascii())),
            _ => {}
        }
        reply.answers.push(format!(
            "{} {} {} {}",
            dns_key(&r.name.to_ascii()),
            r.ttl,
            r.record_type(),
            r.data.to_string().to_ascii_lowercase()
        ));
    }
    Ok(reply)
}

/// One query (RD set) and its reply, checked to be a response with the query's id.
fn dns_exchange(
    ns: &Ns,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    match Name::from_ascii(name) {
        Ok(n) => query.add_query(Query::query(n, qtype)),
        Err(e) => return Err(DnsError::Failed(format!("bad name {name:?}: {e}"))),
    };
    let wire = query.to_vec().expect("encode DNS query");
    let id = query.metadata.id;
    let reply = ns.run(|| {
        if tcp {
            dns_tcp(server, &wire, timeout)
        } else {
            udp_exchange(server, &wire, timeout)
        }
    });
    let reply = match reply {
        Ok(r) => r,
        Err(Probe::TimedOut) => return Err(DnsError::TimedOut),
        Err(Probe::Refused) => return Err(DnsError::Refused),
        Err(p) => return Err(DnsError::Failed(format!("{p:?}"))),
    };
    match Message::from_vec(&reply) {
        Ok(m) if m.metadata.message_type != MessageType::Response => Err(DnsError::Failed(
            "reply is not a response (QR clear)".into(),
        )),
        Ok(m) if m.metadata.id != id => Err(DnsError::Failed(format!(
            "reply id {} for query {id}",
            m.metadata.id
        ))),
        Ok(m) => Ok(m),
        Err(e) => Err(DnsError::Failed(format!("bad reply: {e}"))),
    }
}

/// `busybox ping -c1 -W<secs>` from `ns` (whole seconds, at least one); true if answered.
pub fn ping(ns: &Ns, dst: impl Into<IpAddr>, timeout: Duration) -> bool {
    let secs = timeout.as_secs_f64().ceil().max(1.0).to_string();
    let dst = dst.into().to_string();
    ns.exec(&["busybox", "ping", "-c1", "-W", &secs, &dst])
        .status
        .success()
}

/// Polls `f` every `poll_every` until it holds or `timeout` passes. Only for conditions
/// nothing signals (e.g. a kernel timeout expiring); await events where they exist.
pub fn wait_until(timeout: Duration, poll_every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(poll_every);
    }
}

fn io_probe(what: &str, e: &std::io::Error) -> Probe {
    match e.kind() {
        ErrorKind::ConnectionRefused => Probe::Refused,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Probe::TimedOut,
        _ => Probe::Failed(format!("{what}: {e}")),
    }
}

fn errno_probe(what: &str, e: Errno) -> Probe {
    io_probe(what, &std::io::Error::from(e))
}

/// Non-blocking connect + poll, so the timeout is ours and the errno is reported as is.
fn tcp_connect(
    dst: SocketAddr,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Probe> {
    let family = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None).map_err(|e| errno_probe("socket", e))?;
    if let Some(src) = src {
        set_freebind(&fd, dst.is_ipv4());
        bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(src, 0)),
        )
        .map_err(|e| errno_probe(&format!("bind {src}"), e))?;
    }
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            if !poll_writable(fd.as_fd(), timeout) {
                return Err(Probe::TimedOut);
            }
            let err =
                getsockopt(&fd, sockopt::SocketError).map_err(|e| errno_probe("SO_ERROR", e))?;
            if err != 0 {
                return Err(errno_probe("connect", Errno::from_raw(err)));
            }
        }
        Err(e) => return Err(errno_probe("connect", e)),
    }
    let stream = TcpStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|e| io_probe("fcntl", &e))?;
    Ok(stream)
}

fn set_freebind(fd: &OwnedFd, v4: bool) {
    let (level, opt) = if v4 {
        (libc::SOL_IP, libc::IP_FREEBIND)
    } else {
        (libc::SOL_IPV6, libc::IPV6_FREEBIND)
    };
    let on: libc::c_int = 1;
    // SAFETY: valid fd and a c_int option value of the stated size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A connected UDP socket, so ICMP port unreachable surfaces as ECONNREFUSED.
fn udp_exchange(dst: SocketAddr, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, Probe> {
    let local: SocketAddr = if dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).map_err(|e| io_probe("bind", &e))?;
    sock.connect(dst).map_err(|e| io_probe("connect", &e))?;
    sock.send(payload).map_err(|e| io_probe("send", &e))?;
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| io_probe("timeout", &e))?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).map_err(|e| io_probe("recv", &e))?;
    buf.truncate(n);
    Ok(buf)
}

fn dns_tcp(server: SocketAddr, wire: &[u8], timeout: Duration) -> Result<Vec<u8>, Probe> {
    let deadline = Instant::now() + timeout;
    let mut s = tcp_connect(server, None, timeout)?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(wire);
    let _ = s.set_write_timeout(Some(left()));
    s.write_all(&framed).map_err(|e| io_probe("write", &e))?;
    let _ = s.set_read_timeout(Some(left()));
    let mut len = [0u8; 2];
    s.read_exact(&mut len)
        .map_err(|e| io_probe("read length", &e))?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    let _ = s.set_read_timeout(Some(left()));
    s.read_exact(&mut reply)
        .map_err(|e| io_probe("read reply", &e))?;
    Ok(reply)
}

// ---- A client's DHCP ------------------------------------------------------------------

/// The udhcpc event script (tests/rig/udhcpc.sh): applies the lease with plain `ip` and
/// prints `rig-udhcpc: bound <ip>`.
pub(super) const UDHCPC_SCRIPT: &str = include_str!("udhcpc.sh");

impl Rig {
    /// Where the rig wrote udhcpc.sh (for a test that runs udhcpc itself).
    pub fn udhcpc_script(&self) -> PathBuf {
        self.dir.join("udhcpc.sh")
    }

    /// Runs udhcpc once in client `client`'s namespace; the script applies the lease
    /// (address and default route). Returns the address, or udhcpc's output on failure.
    pub fn dhcp(&self, client: usize) -> Result<Ipv4Addr, String> {
        let script = self.udhcpc_script();
        let script = script.to_str().expect("utf-8 temp dir");
        let out = self.client(client).exec(&[
            "udhcpc", "-i", HOST_IF, "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", script,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("rig-udhcpc: bound ")?.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "udhcpc got no lease ({}): {stdout}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    }
}
