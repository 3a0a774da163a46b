//! `/metrics` over HTTP for a Prometheus scraper, on an address of the router's own that
//! the config checked is off the provisioning network (which our input chain also closes
//! to everything but DHCP and DNS). HTTP/1.0, one request per connection, bounded like
//! the control socket: a few connections at once, 1 KB of request, 5 s to send it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Order, Reply, Request};

const MAX_CONNECTIONS: usize = 4;
const MAX_REQUEST: usize = 1024;
const IDLE: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, orders: mpsc::Sender<Order>) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Over the bound: closed at once (a scraper retries on its next interval).
        let Ok(permit) = room.clone().try_acquire_owned() else {
            continue;
        };
        let orders = orders.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(IDLE, connection(stream, orders)).await;
            drop(permit);
        });
    }
}

async fn connection(mut s: TcpStream, orders: mpsc::Sender<Order>) -> std::io::Result<()> {
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    // The request line and headers, up to the blank line.
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == buf.len() {
            return respond(&mut s, "431 Request Header Fields Too Large", "").await;
        }
        match s.read(&mut buf[len..]).await? {
            0 => return Ok(()),
            n => len += n,
        }
    }
    let line = buf[..len].split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next(), words.next());
    if method != Some(b"GET".as_slice()) {
        return respond(&mut s, "405 Method Not Allowed", "").await;
    }
    if path != Some(b"/metrics".as_slice()) {
        return respond(&mut s, "404 Not Found", "").await;
    }
    let (tx, rx) = oneshot::channel();
    let _ = orders
        .send(Order {
            request: Request::Metrics,
            reply: tx,
        })
        .await;
    match rx.await {
        Ok(Reply::Metrics(m)) => respond(&mut s, "200 OK", &m.text).await,
        _ => respond(&mut s, "503 Service Unavailable", "").await,
    }
}

async fn respond(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::MetricsText;

    async fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<Order>(4);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                assert_eq!(o.request, Request::Metrics);
                let _ = o.reply.send(Reply::Metrics(MetricsText {
                    text: "provisioner_clients 1\n".into(),
                }));
            }
        });
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nprovisioner_clients 1\n"), "{ok}");
        assert!(ok.contains("Content-Length: 22\r\n"), "{ok}");
        let other = get(addr, b"GET /admin HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.0 404"), "{other}");
        let post = get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.0 405"), "{post}");
        let big = get(addr, &[b'a'; MAX_REQUEST]).await;
        assert!(big.starts_with("HTTP/1.0 431"), "{big}");
    }
}
