//! The control socket: a UNIX stream socket where `provisionerctl` (and later rpcd) asks the
//! daemon for its state and gives it orders. One request per line, in words
//! (`status`, `window open 15`, `window close`); one reply per line, in JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/provisioner.sock";

/// An order or question for the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    /// Open the activation window, for the configured duration or this many minutes.
    WindowOpen(Option<u64>),
    WindowClose,
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["status"] => Ok(Request::Status),
            ["window", "open"] => Ok(Request::WindowOpen(None)),
            ["window", "open", m] => m
                .parse()
                .map(|m| Request::WindowOpen(Some(m)))
                .map_err(|_| format!("'{m}' is not a number of minutes")),
            ["window", "close"] => Ok(Request::WindowClose),
            _ => Err(format!(
                "unknown request '{}' (status | window open [minutes] | window close)",
                line.trim()
            )),
        }
    }
}

/// A request on its way to the daemon loop, with the way back.
pub struct Order {
    pub request: Request,
    pub reply: oneshot::Sender<String>,
}

/// A JSON string literal (the few strings we emit are our own, but quote them properly).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn error_json(message: &str) -> String {
    format!("{{\"error\":{}}}", json_str(message))
}

/// Accepts connections and hands each request line to the daemon loop.
pub async fn serve(listener: UnixListener, orders: mpsc::Sender<Order>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let orders = orders.clone();
        tokio::spawn(async move {
            let _ = connection(stream, orders).await;
        });
    }
}

async fn connection(stream: UnixStream, orders: mpsc::Sender<Order>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        let reply = match Request::parse(&line) {
            Err(e) => error_json(&e),
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if orders.send(Order { request, reply: tx }).await.is_err() {
                    return Ok(());
                }
                rx.await
                    .unwrap_or_else(|_| error_json("the daemon is stopping"))
            }
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\n").await?;
    }
    Ok(())
}

/// Binds the control socket, replacing a stale one (a socket file nobody listens on).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)?;
    // Root only: this socket opens the network.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// `provisionerctl`'s side: one request, one reply line.
pub fn request(path: &Path, line: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(line.as_bytes())?;
    s.write_all(b"\n")?;
    let mut reply = String::new();
    std::io::BufReader::new(s).read_line(&mut reply)?;
    Ok(reply.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(Request::parse("status"), Ok(Request::Status));
        assert_eq!(
            Request::parse(" window  open "),
            Ok(Request::WindowOpen(None))
        );
        assert_eq!(
            Request::parse("window open 30"),
            Ok(Request::WindowOpen(Some(30)))
        );
        assert_eq!(Request::parse("window close"), Ok(Request::WindowClose));
        assert!(
            Request::parse("window open soon")
                .unwrap_err()
                .contains("minutes")
        );
        assert!(
            Request::parse("reboot")
                .unwrap_err()
                .contains("unknown request")
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(error_json("x"), "{\"error\":\"x\"}");
    }
}
