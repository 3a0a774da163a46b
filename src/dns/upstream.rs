//! Asking the upstream resolvers: one exchange per question, each over a fresh UDP socket
//! (a random source port and a random id, against spoofed answers), TCP when the answer is
//! truncated, and the next resolver when one times out, fails or refuses.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::wire::{self, UpstreamReply};

#[derive(Debug)]
pub struct Answer {
    pub reply: UpstreamReply,
    /// Which resolver answered (index into the list), to ask it first next time.
    pub server: usize,
}

/// Asks `servers`, starting at `first`, each for at most `each`. Returns the first good
/// answer, else the last answer of any kind, else an error naming what went wrong.
pub async fn exchange(
    servers: &[SocketAddrV4],
    first: usize,
    qname: &Name,
    qtype: u16,
    each: Duration,
) -> Result<Answer, String> {
    let mut last_answer = None;
    let mut last_error = String::from("no upstream resolver configured");
    for i in 0..servers.len() {
        let server = (first + i) % servers.len();
        match ask(servers[server], qname, qtype, each).await {
            Ok(reply) if matches!(reply.rcode, ResponseCode::NoError | ResponseCode::NXDomain) => {
                return Ok(Answer { reply, server });
            }
            Ok(reply) => {
                last_error = format!("{}: {}", servers[server], reply.rcode);
                last_answer = Some(Answer { reply, server });
            }
            Err(e) => last_error = format!("{}: {e}", servers[server]),
        }
    }
    last_answer.ok_or(last_error)
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // Without the OS's randomness the id is still unique enough; the port stays random.
    let _ = getrandom::fill(&mut b);
    u16::from_ne_bytes(b)
}

async fn ask(
    server: SocketAddrV4,
    qname: &Name,
    qtype: u16,
    each: Duration,
) -> Result<UpstreamReply, String> {
    let id = random_id();
    let query = wire::upstream_query(id, qname, qtype);
    let reply = timeout(each, udp(server, &query, id, qname, qtype))
        .await
        .map_err(|_| "timed out".to_owned())??;
    if !reply.truncated {
        return Ok(reply);
    }
    timeout(each, tcp(server, &query, id, qname, qtype))
        .await
        .map_err(|_| "timed out over TCP".to_owned())?
}

async fn udp(
    server: SocketAddrV4,
    query: &[u8],
    id: u16,
    qname: &Name,
    qtype: u16,
) -> Result<UpstreamReply, String> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| e.to_string())?;
    // Connected: the kernel drops datagrams from anyone else, and ICMP errors surface.
    sock.connect(SocketAddr::V4(server))
        .await
        .map_err(|e| e.to_string())?;
    sock.send(query).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
        // Anything that does not answer exactly our question is ignored, not trusted.
        if let Some(reply) = wire::parse_reply(&buf[..n], id, qname, qtype) {
            return Ok(reply);
        }
    }
}

async fn tcp(
    server: SocketAddrV4,
    query: &[u8],
    id: u16,
    qname: &Name,
    qtype: u16,
) -> Result<UpstreamReply, String> {
    let mut s = TcpStream::connect(server)
        .await
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(query.len()).map_err(|_| "query too long")?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    s.write_all(&framed).await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    wire::parse_reply(&buf, id, qname, qtype)
        .ok_or_else(|| "malformed answer, or not to the question".into())
}
