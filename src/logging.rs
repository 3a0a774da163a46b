//! Where the daemon's log goes and in what form: `key=value` text or JSON objects, to
//! stderr or to syslog (`/dev/log`, which logd reads on OpenWrt: `logread -e provisioner`).
//!
//! Audit events (target `audit`) are already whole lines: with JSON, the event's own
//! object (`seq`, `ts`, `level`, `event`, fields); other lines become
//! `{"ts":..,"level":..,"msg":..}`.

use std::fmt::Write as _;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::core::time::WallTime;

/// The name lines are logged under in syslog.
pub const IDENT: &str = "provisionerd";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("{s:?}: text or json")),
        }
    }
}

/// Installs the process's logger. `syslog`: the socket to send to (`/dev/log`), else
/// stderr.
pub fn init(level: Level, format: Format, syslog: Option<PathBuf>) {
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level);
    match (format, syslog) {
        (Format::Json, None) => builder.event_format(Json).with_writer(io::stderr).init(),
        (Format::Json, Some(path)) => builder
            .event_format(Json)
            .with_writer(Syslog::new(path))
            .init(),
        (Format::Text, None) => builder.with_writer(io::stderr).init(),
        // logd stamps the time and keeps the priority itself.
        (Format::Text, Some(path)) => builder
            .without_time()
            .with_level(false)
            .with_writer(Syslog::new(path))
            .init(),
    }
}

/// A line as a JSON object.
struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut msg = Message(String::new());
        event.record(&mut msg);
        if event.metadata().target() == "audit" {
            return writeln!(w, "{}", msg.0);
        }
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let text = serde_json::to_string(&msg.0).map_err(|_| std::fmt::Error)?;
        writeln!(
            w,
            "{{\"ts\":\"{}\",\"level\":\"{level}\",\"msg\":{text}}}",
            WallTime::now()
        )
    }
}

/// The message and any other fields of a tracing event, as `msg k=v`.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// Syslog over a datagram socket, one line per datagram as `<PRI>provisionerd[PID]: line`
/// (RFC 3164 without the timestamp, as syslog(3) and logd accept it). Facility daemon; the
/// priority is the line's level. A line that cannot be sent (no logd at the moment) goes
/// to stderr, so nothing is lost in silence.
pub struct Syslog {
    path: PathBuf,
    sock: Mutex<Option<UnixDatagram>>,
    pid: u32,
}

impl Syslog {
    pub fn new(path: PathBuf) -> Syslog {
        Syslog {
            path,
            sock: Mutex::new(None),
            pid: std::process::id(),
        }
    }

    /// `<PRI>`: facility daemon (3), severity from the level.
    pub fn priority(level: &Level) -> u8 {
        let severity = match *level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        3 << 3 | severity
    }

    fn send(&self, pri: u8, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut datagram = format!("<{pri}>{IDENT}[{}]: ", self.pid).into_bytes();
        datagram.extend_from_slice(line);
        let mut sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        // Once more after reconnecting: logd may have restarted.
        for _ in 0..2 {
            if sock.is_none() {
                *sock = connect(&self.path).ok();
            }
            match sock.as_ref().map(|s| s.send(&datagram)) {
                Some(Ok(_)) => return,
                _ => *sock = None,
            }
        }
        let _ = io::Write::write_all(&mut io::stderr(), &datagram);
        let _ = io::Write::write_all(&mut io::stderr(), b"\n");
    }
}

fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.connect(path)?;
    Ok(s)
}

/// One formatted line on its way out, at its priority.
pub struct SyslogLine<'a> {
    to: &'a Syslog,
    pri: u8,
}

impl io::Write for SyslogLine<'_> {
    /// The formatter writes each line whole in one call.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.to.send(self.pri, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;

    fn make_writer(&'a self) -> SyslogLine<'a> {
        SyslogLine {
            to: self,
            pri: Syslog::priority(&Level::INFO),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine<'a> {
        // The audit log's errors are its alarms (spoofing suspended): alert, not err.
        let pri = match (meta.target(), *meta.level()) {
            ("audit", Level::ERROR) => 3 << 3 | 1,
            (_, level) => Syslog::priority(&level),
        };
        SyslogLine { to: self, pri }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_syslog_whole_with_their_priority() {
        let path = std::env::temp_dir().join(format!("prov-syslog-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let logd = UnixDatagram::bind(&path).unwrap();
        let s = Syslog::new(path.clone());
        let mut w = SyslogLine {
            to: &s,
            pri: Syslog::priority(&Level::WARN),
        };
        io::Write::write_all(&mut w, b"event=dns_refused mac=02:00:00:00:00:01\n").unwrap();
        let mut buf = [0u8; 256];
        let n = logd.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!(
                "<28>provisionerd[{}]: event=dns_refused mac=02:00:00:00:00:01",
                std::process::id()
            )
        );
        assert_eq!(Syslog::priority(&Level::INFO), 30);
        assert_eq!(Syslog::priority(&Level::ERROR), 27);
        let _ = std::fs::remove_file(&path);
    }
}
