//! A client for hostapd's control interface.
//!
//! hostapd listens on a UNIX datagram socket, `<ctrl_interface>/<ifname>`. A client binds a
//! socket of its own (hostapd answers to that address), sends one command per datagram and
//! gets one datagram back: `PONG`, `OK`, `FAIL` or the data asked for. After `ATTACH`,
//! hostapd also sends that socket every event as `<level>TEXT`, e.g.
//! `<3>AP-STA-CONNECTED 02:00:00:00:00:01`.
//!
//! [`Hostapd`] keeps two sockets so that replies and events never mix: a command socket
//! that never attaches, and an attached event socket that never sends a command whose reply
//! it waits for. Only [`parse_event`] and [`parse_sta`] look at the text; they are pure and
//! accept any bytes.
//!
//! What hostapd does that shapes this client:
//! - hostapd up to 2.11 sends events *blocking*. Our event socket is connected to
//!   hostapd's, so the kernel's per-socket queue limit (`net.unix.max_dgram_qlen`, 10)
//!   does not apply to hostapd's sends; the limit is hostapd's own send buffer
//!   (`net.core.wmem_default`: 280 events at 208 KiB). A reader that falls behind loses
//!   nothing, but once that many events wait, hostapd stops altogether (no associations,
//!   no EAP, no replies) until they are read: keep [`Hostapd::next_event`]
//!   polled, and never behind slow work. (A socket that is not connected is held to the
//!   queue limit: hostapd 2.10 stalls after 11 unread events.)
//! - hostapd since August 2025 drops events it cannot send at once and, after 11 failures
//!   in a row, detaches the socket for good. [`Hostapd::ping`] therefore also re-attaches
//!   (a no-op while attached), and the caller reconciles with [`Hostapd::stations`] after
//!   a reconnect or whenever it may have missed events.
//! - When hostapd exits cleanly it sends `AP-STA-DISCONNECTED` for every authorized
//!   station, `AP-DISABLED`, `CTRL-EVENT-TERMINATING`, and removes its socket; a restarted
//!   hostapd has a new socket at the same path. Our sockets then fail with
//!   `ECONNREFUSED` (or `ENOENT`, `ENOTCONN`): [`HostapdError::Gone`]. A killed hostapd
//!   sends nothing, so only a command notices: call [`Hostapd::ping`] periodically.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::time::{Instant, timeout_at};

use crate::core::MacAddr;

/// How long one command may take, from sending it to its reply.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// hostapd builds replies in an 8 KiB buffer and reads commands into 4 KiB; a datagram
/// longer than our buffer would be cut silently, so leave room.
const MAX_DATAGRAM: usize = 16 * 1024;

/// How often [`Hostapd::stations`] starts the walk over when a station leaves under it.
const MAX_WALK_RESTARTS: usize = 8;

/// An upper bound on STA-NEXT steps of one walk over all restarts (hostapd's table is a
/// list, so only a confused peer could make it longer).
const MAX_WALK_STEPS: usize = 64 * 1024;

/// Our socket files are `hostapd-<pid>-<n>-<role>` in the caller's directory.
const SOCKET_PREFIX: &str = "hostapd-";

static NEXT_SOCKET: AtomicUsize = AtomicUsize::new(0);

/// What an event datagram means to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `AP-STA-CONNECTED <mac> ...`: the station is authorized (associated and, with
    /// 802.1X or WPA, authenticated), so it may use the network.
    StaConnected(MacAddr),
    /// `AP-STA-DISCONNECTED <mac> ...`: the station is no longer authorized (it left, was
    /// removed, logged off, or failed to re-authenticate).
    StaDisconnected(MacAddr),
    /// Anything else (EAP progress, AP-ENABLED, ...), or not an event at all: harmless.
    Other,
}

/// One entry of hostapd's station table (a reply to `STA-FIRST`, `STA-NEXT` or `STA`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Station {
    pub mac: MacAddr,
    /// `connected_time=`: how long the station has been associated. hostapd reports it only
    /// where the driver gives per-station data (nl80211); the wired driver does not.
    pub connected: Option<Duration>,
    /// The flags contain `[AUTHORIZED]`: the station may use the network.
    pub authorized: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HostapdError {
    #[error("hostapd control interface: {0}")]
    Io(#[source] io::Error),
    #[error("hostapd did not answer within {COMMAND_TIMEOUT:?}")]
    Timeout,
    #[error("hostapd refused {command:?}: {reply:?}")]
    Failed { command: String, reply: String },
    #[error("hostapd went away (stopped or restarted); connect again")]
    Gone,
}

/// Parses one datagram from an attached socket: `[IFNAME=<if> ]<level>EVENT args`.
/// Never panics; anything it does not know is [`Event::Other`].
pub fn parse_event(datagram: &[u8]) -> Event {
    let Some((name, args)) = split_event(datagram) else {
        return Event::Other;
    };
    let event: fn(MacAddr) -> Event = match name {
        b"AP-STA-CONNECTED" => Event::StaConnected,
        b"AP-STA-DISCONNECTED" => Event::StaDisconnected,
        _ => return Event::Other,
    };
    // The MAC comes first; hostapd may append fields (`p2p_dev_addr=`, `ip_addr=`,
    // `keyid=`, `dpp_pkhash=`, `vlanid=`), which we do not need.
    let mac = args
        .split(|b| b.is_ascii_whitespace())
        .find(|t| !t.is_empty())
        .and_then(parse_mac);
    mac.map_or(Event::Other, event)
}

/// Parses hostapd's reply to `STA-FIRST`, `STA-NEXT <mac>` or `STA <mac>`: the station's
/// MAC on the first line, then `key=value` lines. `FAIL`, an empty reply (no more
/// stations) or anything that does not start with a MAC is `None`. Never panics.
pub fn parse_sta(reply: &[u8]) -> Option<Station> {
    let mut lines = reply.split(|&b| b == b'\n').map(trim);
    let mac = parse_mac(lines.next()?)?;
    let mut station = Station {
        mac,
        connected: None,
        authorized: false,
    };
    let (mut flags, mut connected) = (false, false);
    for line in lines {
        if let Some(v) = line.strip_prefix(b"flags=") {
            if !std::mem::replace(&mut flags, true) {
                station.authorized = contains(v, b"[AUTHORIZED]");
            }
        } else if let Some(v) = line.strip_prefix(b"connected_time=") {
            if !std::mem::replace(&mut connected, true) {
                station.connected = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(Duration::from_secs);
            }
        }
    }
    Some(station)
}

/// `[IFNAME=<if> ]<level>NAME args` -> (NAME, args). The IFNAME prefix appears on
/// hostapd's global control interface only.
fn split_event(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut d = datagram;
    if let Some(rest) = d.strip_prefix(b"IFNAME=") {
        let space = rest.iter().position(|&b| b == b' ')?;
        d = &rest[space + 1..];
    }
    let rest = d.strip_prefix(b"<")?;
    let close = rest.iter().position(|&b| b == b'>')?;
    if close == 0 || !rest[..close].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let text = trim(&rest[close + 1..]);
    Some(match text.iter().position(|&b| b == b' ') {
        Some(space) => (&text[..space], &text[space + 1..]),
        None => (text, &[][..]),
    })
}

/// Whether a datagram on the event socket is an event (not a reply to our ATTACH).
fn looks_like_event(datagram: &[u8]) -> bool {
    datagram.starts_with(b"<") || datagram.starts_with(b"IFNAME=")
}

fn parse_mac(token: &[u8]) -> Option<MacAddr> {
    // Exactly aa:bb:cc:dd:ee:ff in hex digits (MacAddr's parser also takes '-' and, from
    // u8::from_str_radix, a '+' sign; hostapd writes neither).
    let well_formed = token.len() == 17
        && token.iter().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                *b == b':'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    if !well_formed {
        return None;
    }
    MacAddr::from_str(std::str::from_utf8(token).ok()?).ok()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let junk = |b: &u8| b.is_ascii_whitespace() || *b == 0;
    let start = bytes.iter().position(|b| !junk(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !junk(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(trim(bytes)).into_owned()
}

/// Errors on a socket connected to hostapd's: these mean its socket is gone.
fn classify(e: io::Error) -> HostapdError {
    match e.raw_os_error() {
        Some(
            libc::ECONNREFUSED | libc::ENOENT | libc::ENOTCONN | libc::ECONNRESET | libc::EPIPE,
        ) => HostapdError::Gone,
        _ => HostapdError::Io(e),
    }
}

/// One of our sockets, connected to hostapd's; its file is removed on drop.
struct Endpoint {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Endpoint {
    fn open(ctrl: &Path, local_dir: &Path, role: &str) -> Result<Endpoint, HostapdError> {
        let n = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
        let path = local_dir.join(format!("{SOCKET_PREFIX}{}-{n}-{role}", std::process::id()));
        // Left over from an earlier process with our pid (after a reboot): ours now.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(HostapdError::Io(e)),
            _ => {}
        }
        let sock = UnixDatagram::bind(&path).map_err(HostapdError::Io)?;
        let endpoint = Endpoint { sock, path };
        endpoint.sock.connect(ctrl).map_err(classify)?;
        Ok(endpoint)
    }

    /// Sends `command` and returns the length of the first reply in `buf`, skipping
    /// datagrams that look like events.
    async fn exchange(
        &self,
        buf: &mut [u8],
        command: &str,
        deadline: Instant,
    ) -> Result<usize, HostapdError> {
        timeout_at(deadline, self.sock.send(command.as_bytes()))
            .await
            .map_err(|_| HostapdError::Timeout)?
            .map_err(classify)?;
        loop {
            let n = timeout_at(deadline, self.sock.recv(buf))
                .await
                .map_err(|_| HostapdError::Timeout)?
                .map_err(classify)?;
            if !looks_like_event(&buf[..n]) {
                return Ok(n);
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes socket files of our earlier processes that no longer exist (a daemon killed
/// with SIGKILL never ran its destructors).
fn sweep_stale(local_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(local_dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SOCKET_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A connection to one hostapd interface: a command socket and an attached event socket.
pub struct Hostapd {
    ctrl: PathBuf,
    local_dir: PathBuf,
    cmd: Endpoint,
    events: Endpoint,
    /// A command went out whose reply was not read (timed out, or the future was dropped):
    /// the next command takes a fresh socket, so a late reply is never read as its own.
    cmd_dirty: bool,
    /// hostapd's socket is gone: every call fails with [`HostapdError::Gone`].
    gone: bool,
    buf: Box<[u8]>,
}

impl std::fmt::Debug for Hostapd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hostapd")
            .field("ctrl", &self.ctrl)
            .field("gone", &self.gone)
            .finish_non_exhaustive()
    }
}

impl Hostapd {
    /// Connects to hostapd's control socket `ctrl` (e.g. `/var/run/hostapd/wlan0`) and
    /// attaches for events. `local_dir` holds our two socket files (unique names, removed
    /// on drop; created if missing). hostapd not running is [`HostapdError::Gone`].
    pub async fn connect(ctrl: &Path, local_dir: &Path) -> Result<Hostapd, HostapdError> {
        std::fs::create_dir_all(local_dir).map_err(HostapdError::Io)?;
        sweep_stale(local_dir);
        let cmd = Endpoint::open(ctrl, local_dir, "cmd")?;
        let events = Endpoint::open(ctrl, local_dir, "ev")?;
        let mut buf = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
        let n = events
            .exchange(&mut buf, "ATTACH", Instant::now() + COMMAND_TIMEOUT)
            .await?;
        if trim(&buf[..n]) != b"OK" {
            return Err(HostapdError::Failed {
                command: "ATTACH".into(),
                reply: lossy(&buf[..n]),
            });
        }
        Ok(Hostapd {
            ctrl: ctrl.to_path_buf(),
            local_dir: local_dir.to_path_buf(),
            cmd,
            events,
            cmd_dirty: false,
            gone: false,
            buf,
        })
    }

    /// The next event. Cancel-safe: dropping the future loses nothing. Replies to our own
    /// re-attach are skipped. `CTRL-EVENT-TERMINATING` (hostapd exits) is
    /// [`HostapdError::Gone`]; a killed hostapd is noticed by the next command, not here.
    pub async fn next_event(&mut self) -> Result<Event, HostapdError> {
        loop {
            if self.gone {
                return Err(HostapdError::Gone);
            }
            let received = self.events.sock.recv(&mut self.buf).await;
            let n = self.track(received.map_err(classify))?;
            let datagram = &self.buf[..n];
            if !looks_like_event(datagram) {
                continue;
            }
            if split_event(datagram).is_some_and(|(name, _)| name == b"CTRL-EVENT-TERMINATING") {
                self.gone = true;
                return Err(HostapdError::Gone);
            }
            return Ok(parse_event(datagram));
        }
    }

    /// The whole station table: `STA-FIRST`, then `STA-NEXT <mac>` until the end. A station
    /// that leaves during the walk makes hostapd answer `FAIL`; the walk then starts over
    /// (stations already seen are kept once). Stations that join during the walk may be
    /// missing: their events tell.
    pub async fn stations(&mut self) -> Result<Vec<Station>, HostapdError> {
        let mut stations = Vec::new();
        let mut seen = HashSet::new();
        let mut restarts = 0;
        let mut command = String::from("STA-FIRST");
        for _ in 0..MAX_WALK_STEPS {
            let reply = self.command(&command).await?;
            if trim(&reply).is_empty() {
                return Ok(stations);
            }
            if let Some(station) = parse_sta(&reply) {
                command = format!("STA-NEXT {}", station.mac);
                if seen.insert(station.mac) {
                    stations.push(station);
                }
            } else if trim(&reply) == b"FAIL" && command != "STA-FIRST" {
                restarts += 1;
                if restarts > MAX_WALK_RESTARTS {
                    return Err(HostapdError::Failed {
                        command,
                        reply: lossy(&reply),
                    });
                }
                command = String::from("STA-FIRST");
            } else {
                return Err(HostapdError::Failed {
                    command,
                    reply: lossy(&reply),
                });
            }
        }
        Err(HostapdError::Failed {
            command,
            reply: format!("more than {MAX_WALK_STEPS} steps"),
        })
    }

    /// `DEAUTHENTICATE <mac>`: hostapd unauthorizes the station (`AP-STA-DISCONNECTED`) and
    /// drops it from its table. hostapd answers OK also for a MAC it does not know.
    pub async fn deauthenticate(&mut self, mac: MacAddr) -> Result<(), HostapdError> {
        self.expect(&format!("DEAUTHENTICATE {mac}"), "OK").await
    }

    /// `DENY_ACL ADD_MAC <mac>`: adds `mac` to the deny list and disconnects it if present.
    pub async fn deny_acl_add(&mut self, mac: MacAddr) -> Result<(), HostapdError> {
        self.expect(&format!("DENY_ACL ADD_MAC {mac}"), "OK").await
    }

    /// `DENY_ACL DEL_MAC <mac>`: removes `mac` from the deny list.
    pub async fn deny_acl_del(&mut self, mac: MacAddr) -> Result<(), HostapdError> {
        self.expect(&format!("DENY_ACL DEL_MAC {mac}"), "OK").await
    }

    /// Keepalive: `PING` must answer `PONG`, and the event socket re-attaches (a no-op if
    /// still attached; if a newer hostapd detached it for events it could not deliver,
    /// events flow again). A hostapd that went away is [`HostapdError::Gone`].
    pub async fn ping(&mut self) -> Result<(), HostapdError> {
        self.expect("PING", "PONG").await?;
        // Not waited for: the OK arrives on the event socket and next_event skips it.
        match self.events.sock.try_send(b"ATTACH") {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => self.track(Err(classify(e))),
        }
    }

    /// `ENABLE`: bring the interface (the SSID) up.
    pub async fn enable(&mut self) -> Result<(), HostapdError> {
        self.expect("ENABLE", "OK").await
    }

    /// `DISABLE`: take the interface (the SSID) down; stations are disconnected.
    pub async fn disable(&mut self) -> Result<(), HostapdError> {
        self.expect("DISABLE", "OK").await
    }

    async fn expect(&mut self, command: &str, want: &str) -> Result<(), HostapdError> {
        let reply = self.command(command).await?;
        if trim(&reply) == want.as_bytes() {
            Ok(())
        } else {
            Err(HostapdError::Failed {
                command: command.to_string(),
                reply: lossy(&reply),
            })
        }
    }

    /// One command and its reply.
    async fn command(&mut self, command: &str) -> Result<Vec<u8>, HostapdError> {
        if self.gone {
            return Err(HostapdError::Gone);
        }
        if self.cmd_dirty {
            let fresh = Endpoint::open(&self.ctrl, &self.local_dir, "cmd");
            self.cmd = self.track(fresh)?;
            self.cmd_dirty = false;
        }
        self.cmd_dirty = true;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let n = self.cmd.exchange(&mut self.buf, command, deadline).await;
        let n = self.track(n)?;
        self.cmd_dirty = false;
        Ok(self.buf[..n].to_vec())
    }

    /// Remembers that hostapd is gone.
    fn track<T>(&mut self, result: Result<T, HostapdError>) -> Result<T, HostapdError> {
        if matches!(result, Err(HostapdError::Gone)) {
            self.gone = true;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn station_events() {
        let m = mac("02:00:00:00:00:01");
        for (datagram, want) in [
            (&b"<3>AP-STA-CONNECTED 02:00:00:00:00:01"[..], Event::StaConnected(m)),
            (b"<3>AP-STA-DISCONNECTED 02:00:00:00:00:01", Event::StaDisconnected(m)),
            // Fields hostapd may append after the MAC.
            (
                b"<3>AP-STA-CONNECTED 02:00:00:00:00:01 p2p_dev_addr=02:11:22:33:44:55 ip_addr=192.168.49.10",
                Event::StaConnected(m),
            ),
            (
                b"<3>AP-STA-CONNECTED 02:00:00:00:00:01 keyid=dev1 vlanid=7",
                Event::StaConnected(m),
            ),
            (
                b"<3>AP-STA-DISCONNECTED 02:00:00:00:00:01 p2p_dev_addr=02:11:22:33:44:55",
                Event::StaDisconnected(m),
            ),
            // Upper case, a trailing newline or NUL, another level.
            (b"<3>AP-STA-CONNECTED 02:00:00:00:00:0A\n", Event::StaConnected(mac("02:00:00:00:00:0a"))),
            (b"<2>AP-STA-DISCONNECTED 02:00:00:00:00:01\0", Event::StaDisconnected(m)),
            // The global control interface names the interface first.
            (b"IFNAME=wlan0 <3>AP-STA-CONNECTED 02:00:00:00:00:01", Event::StaConnected(m)),
        ] {
            assert_eq!(parse_event(datagram), want, "{}", String::from_utf8_lossy(datagram));
        }
    }

    #[test]
    fn other_events_and_garbage() {
        for datagram in [
            &b"<3>CTRL-EVENT-EAP-STARTED 02:00:00:00:00:01"[..],
            b"<3>CTRL-EVENT-EAP-SUCCESS 02:00:00:00:00:01",
            b"<3>CTRL-EVENT-EAP-PROPOSED-METHOD vendor=0 method=4",
            b"<3>CTRL-EVENT-EAP-RETRANSMIT 02:00:00:00:00:01",
            b"<3>CTRL-EVENT-EAP-TIMEOUT-FAILURE 02:00:00:00:00:01",
            b"<3>AP-STA-POLL-OK 02:00:00:00:00:01",
            b"<3>AP-STA-POSSIBLE-PSK-MISMATCH 02:00:00:00:00:01",
            b"<3>AP-ENABLED ",
            b"<3>AP-DISABLED ",
            b"<3>CTRL-EVENT-TERMINATING ",
            // Replies and near misses.
            b"OK\n",
            b"PONG\n",
            b"FAIL\n",
            b"AP-STA-CONNECTED 02:00:00:00:00:01",
            b"<>AP-STA-CONNECTED 02:00:00:00:00:01",
            b"<x>AP-STA-CONNECTED 02:00:00:00:00:01",
            b"<3AP-STA-CONNECTED 02:00:00:00:00:01",
            b"<3>AP-STA-CONNECTED02:00:00:00:00:01",
            b"<3>AP-STA-CONNECTED",
            b"<3>AP-STA-CONNECTED ",
            b"<3>AP-STA-CONNECTED 02:00:00:00:00",
            b"<3>AP-STA-CONNECTED 02:00:00:00:00:01:02",
            b"<3>AP-STA-CONNECTED 02-00-00-00-00-01",
            b"<3>AP-STA-CONNECTED 02:00:00:00:00:0g",
            b"<3>AP-STA-CONNECTED 02:00:00:00:+0:01",
            b"<3>AP-STA-CONNECTED \xff\xfe:00:00:00:00:01",
            b"<3>AP-STA-CONNECTEDX 02:00:00:00:00:01",
            b"<3>ap-sta-connected 02:00:00:00:00:01",
            b"IFNAME=wlan0<3>AP-STA-CONNECTED 02:00:00:00:00:01",
            b"",
            b"<",
            b"<3>",
            b"\xff<3>AP-STA-CONNECTED 02:00:00:00:00:01",
        ] {
            assert_eq!(
                parse_event(datagram),
                Event::Other,
                "{}",
                String::from_utf8_lossy(datagram)
            );
        }
    }

    /// hostapd's reply for a station of the wired driver (802.1X, EAP-MD5), as seen in the
    /// rig: flags, no connected_time.
    const WIRED_STA: &str = "02:00:00:00:00:01\nflags=[AUTHORIZED]\naid=0\ncapability=0x0\n\
        listen_interval=0\nsupported_rates=\ntimeout_next=NULLFUNC POLL\n\
        dot1xPaePortNumber=0\ndot1xPaePortProtocolVersion=2\ndot1xAuthPaeState=5\n\
        dot1xAuthSessionUserName=iot\nlast_eap_type_as=0 (unknown)\nlast_eap_type_sta=4 (MD5)\n";

    /// The same shape with an nl80211 driver: per-station counters and connected_time.
    const WIFI_STA: &str = "02:00:00:00:00:02\nflags=[AUTH][ASSOC][AUTHORIZED][SHORT_PREAMBLE][WMM][HT]\n\
        aid=1\ncapability=0x421\nlisten_interval=10\nsupported_rates=82 84 8b 96 0c 12 18 24 30 48 60 6c\n\
        timeout_next=NULLFUNC POLL\nrx_packets=120\ntx_packets=80\nrx_bytes=9001\ntx_bytes=7000\n\
        inactive_msec=300\nsignal=-40\nrx_rate_info=10\ntx_rate_info=650 mcs 7 shortGI\n\
        connected_time=42\nsupp_op_classes=51\nht_caps_info=0x016e\n";

    #[test]
    fn station_replies() {
        assert_eq!(
            parse_sta(WIRED_STA.as_bytes()),
            Some(Station {
                mac: mac("02:00:00:00:00:01"),
                connected: None,
                authorized: true,
            })
        );
        assert_eq!(
            parse_sta(WIFI_STA.as_bytes()),
            Some(Station {
                mac: mac("02:00:00:00:00:02"),
                connected: Some(Duration::from_secs(42)),
                authorized: true,
            })
        );
        // Associated but not (yet, or no longer) authorized.
        let pending = "02:00:00:00:00:03\nflags=[AUTH][ASSOC]\naid=2\nconnected_time=3\n";
        assert_eq!(
            parse_sta(pending.as_bytes()),
            Some(Station {
                mac: mac("02:00:00:00:00:03"),
                connected: Some(Duration::from_secs(3)),
                authorized: false,
            })
        );
        // Empty flags (the wired driver after a deauthentication), no flags line at all,
        // a bad connected_time, and an [AUTHORIZED] that is not in the flags.
        let odd = "02:00:00:00:00:04\r\nflags=\r\nconnected_time=x\r\nkeyid=[AUTHORIZED]\r\n";
        assert_eq!(
            parse_sta(odd.as_bytes()),
            Some(Station {
                mac: mac("02:00:00:00:00:04"),
                connected: None,
                authorized: false,
            })
        );
        assert_eq!(
            parse_sta(b"02:00:00:00:00:05").map(|s| s.authorized),
            Some(false)
        );
    }

    #[test]
    fn no_station() {
        for reply in [
            &b"FAIL\n"[..],
            b"FAIL",
            b"",
            b"\n",
            b"UNKNOWN COMMAND\n",
            b"flags=[AUTHORIZED]\n02:00:00:00:00:01\n",
            b"02:00:00:00:00\nflags=[AUTHORIZED]\n",
            b"08:08:03:00:+8:06\nflags=[AUTHORIZED]\n",
            b"<3>AP-STA-CONNECTED 02:00:00:00:00:01",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\n",
        ] {
            assert_eq!(parse_sta(reply), None, "{}", String::from_utf8_lossy(reply));
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_event(&bytes);
            let _ = parse_sta(&bytes);
        }

        /// Real shapes with one byte changed: still no panic, and a parsed MAC is always
        /// exactly what the datagram says.
        #[test]
        fn mutated_samples_never_panic(at in 0usize..600, byte in any::<u8>(), which in 0usize..4) {
            let sample = [
                &b"<3>AP-STA-CONNECTED 02:00:00:00:00:01 keyid=a"[..],
                b"IFNAME=wlan0 <3>AP-STA-DISCONNECTED 02:00:00:00:00:01",
                WIRED_STA.as_bytes(),
                WIFI_STA.as_bytes(),
            ][which];
            let mut m = sample.to_vec();
            if at < m.len() {
                m[at] = byte;
            }
            match parse_event(&m) {
                Event::StaConnected(mac) | Event::StaDisconnected(mac) => {
                    let text = String::from_utf8_lossy(&m).to_ascii_lowercase();
                    prop_assert!(text.contains(&mac.to_string()));
                }
                Event::Other => {}
            }
            if let Some(st) = parse_sta(&m) {
                let text = String::from_utf8_lossy(&m).to_ascii_lowercase();
                prop_assert!(text.starts_with(&st.mac.to_string()));
            }
        }
    }

    // ---- Against a fake hostapd (no root needed) ---------------------------------------

    use std::sync::{Arc, Mutex};
    use tokio::net::UnixDatagram as Dgram;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "provisioner-hostapd-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// What the fake hostapd knows: its station table (in hostapd's order) and who attached.
    #[derive(Default)]
    struct Fake {
        stations: Vec<(MacAddr, bool)>,
        attached: Vec<PathBuf>,
        /// Commands received, in order.
        log: Vec<String>,
        /// Answer this command late (after the next one arrived), once.
        late: Option<String>,
        /// Remove this station right after answering the STA-NEXT that returned it.
        vanish: Option<MacAddr>,
        /// The server's socket: events come from it, like hostapd's (a connected socket
        /// takes datagrams from its peer only).
        sock: Option<std::sync::Weak<Dgram>>,
    }

    fn sta_reply(mac: MacAddr, authorized: bool) -> String {
        let flags = if authorized { "[AUTHORIZED]" } else { "" };
        format!("{mac}\nflags={flags}\naid=0\n")
    }

    /// Serves `fake` on `<dir>/ctrl` until the task is aborted.
    fn serve(dir: &Path, fake: Arc<Mutex<Fake>>) -> (PathBuf, tokio::task::JoinHandle<()>) {
        let path = dir.join("ctrl");
        let sock = Arc::new(Dgram::bind(&path).unwrap());
        fake.lock().unwrap().sock = Some(Arc::downgrade(&sock));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut held: Option<(String, PathBuf)> = None;
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let from = from.as_pathname().unwrap().to_path_buf();
                let cmd = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = {
                    let mut f = fake.lock().unwrap();
                    f.log.push(cmd.clone());
                    let reply = answer(&mut f, &cmd, &from);
                    if f.late.as_deref() == Some(cmd.as_str()) {
                        f.late = None;
                        held = Some((reply, from));
                        continue;
                    }
                    reply
                };
                // A late reply goes out just before the next one, to where it was asked.
                if let Some((late, to)) = held.take() {
                    let _ = sock.send_to(late.as_bytes(), &to).await;
                }
                let _ = sock.send_to(reply.as_bytes(), &from).await;
            }
        });
        (path, task)
    }

    fn answer(f: &mut Fake, cmd: &str, from: &Path) -> String {
        let find = |f: &Fake, m: &str| f.stations.iter().position(|(s, _)| s.to_string() == m);
        match cmd.split_once(' ').unwrap_or((cmd, "")) {
            ("PING", _) => "PONG\n".into(),
            ("ATTACH", _) => {
                if !f.attached.iter().any(|p| p == from) {
                    f.attached.push(from.to_path_buf());
                }
                "OK\n".into()
            }
            ("STA-FIRST", _) => f
                .stations
                .first()
                .map_or(String::new(), |&(m, a)| sta_reply(m, a)),
            ("STA-NEXT", m) => match find(f, m) {
                None => "FAIL\n".into(),
                Some(i) => match f.stations.get(i + 1).copied() {
                    None => String::new(),
                    Some((next, a)) => {
                        if f.vanish == Some(next) {
                            f.vanish = None;
                            f.stations.remove(i + 1);
                        }
                        sta_reply(next, a)
                    }
                },
            },
            ("DEAUTHENTICATE", m) => {
                if let Some(i) = find(f, m) {
                    f.stations.remove(i);
                }
                "OK\n".into()
            }
            ("DENY_ACL", "ADD_MAC bad") => "FAIL\n".into(),
            ("DENY_ACL", _) => "OK\n".into(),
            _ => "UNKNOWN COMMAND\n".into(),
        }
    }

    async fn send_event(fake: &Arc<Mutex<Fake>>, text: &str) {
        let (attached, tx) = {
            let f = fake.lock().unwrap();
            (
                f.attached.clone(),
                f.sock.as_ref().unwrap().upgrade().unwrap(),
            )
        };
        for to in attached {
            tx.send_to(text.as_bytes(), &to).await.unwrap();
        }
    }

    fn table(macs: &[(&str, bool)]) -> Vec<(MacAddr, bool)> {
        macs.iter().map(|&(m, a)| (mac(m), a)).collect()
    }

    #[tokio::test]
    async fn commands_events_and_the_table() {
        let dir = TempDir::new();
        let fake = Arc::new(Mutex::new(Fake {
            stations: table(&[("02:00:00:00:00:02", true), ("02:00:00:00:00:01", false)]),
            ..Fake::default()
        }));
        let (ctrl, _task) = serve(&dir.0, fake.clone());
        let local = dir.0.join("local");
        let mut h = Hostapd::connect(&ctrl, &local).await.unwrap();
        assert_eq!(fake.lock().unwrap().attached.len(), 1);
        assert_eq!(
            std::fs::read_dir(&local).unwrap().count(),
            2,
            "two socket files"
        );

        h.ping().await.unwrap();
        let st = h.stations().await.unwrap();
        assert_eq!(
            st.iter().map(|s| (s.mac, s.authorized)).collect::<Vec<_>>(),
            table(&[("02:00:00:00:00:02", true), ("02:00:00:00:00:01", false)])
        );
        h.deauthenticate(mac("02:00:00:00:00:02")).await.unwrap();
        assert_eq!(h.stations().await.unwrap().len(), 1);
        h.deny_acl_add(mac("02:00:00:00:00:01")).await.unwrap();
        h.deny_acl_del(mac("02:00:00:00:00:01")).await.unwrap();

        // Events arrive on the event socket only; the re-attach's OK is skipped.
        send_event(&fake, "<3>CTRL-EVENT-EAP-STARTED 02:00:00:00:00:03").await;
        send_event(&fake, "<3>AP-STA-CONNECTED 02:00:00:00:00:03").await;
        assert_eq!(h.next_event().await.unwrap(), Event::Other);
        assert_eq!(
            h.next_event().await.unwrap(),
            Event::StaConnected(mac("02:00:00:00:00:03"))
        );
        // The pings above re-attached: their OKs wait on the event socket, before this.
        send_event(&fake, "<3>AP-STA-DISCONNECTED 02:00:00:00:00:03").await;
        assert_eq!(
            h.next_event().await.unwrap(),
            Event::StaDisconnected(mac("02:00:00:00:00:03"))
        );
        let log = fake.lock().unwrap().log.clone();
        assert_eq!(
            log,
            [
                "ATTACH",
                "PING",
                "ATTACH",
                "STA-FIRST",
                "STA-NEXT 02:00:00:00:00:02",
                "STA-NEXT 02:00:00:00:00:01",
                "DEAUTHENTICATE 02:00:00:00:00:02",
                "STA-FIRST",
                "STA-NEXT 02:00:00:00:00:01",
                "DENY_ACL ADD_MAC 02:00:00:00:00:01",
                "DENY_ACL DEL_MAC 02:00:00:00:00:01",
            ]
        );
        drop(h);
        assert_eq!(
            std::fs::read_dir(&local).unwrap().count(),
            0,
            "sockets removed"
        );
    }

    #[tokio::test]
    async fn empty_table_and_failures() {
        let dir = TempDir::new();
        let fake = Arc::new(Mutex::new(Fake::default()));
        let (ctrl, _task) = serve(&dir.0, fake.clone());
        let mut h = Hostapd::connect(&ctrl, &dir.0.join("l")).await.unwrap();
        assert!(h.stations().await.unwrap().is_empty());
        match h.expect("BOGUS", "OK").await {
            Err(HostapdError::Failed { command, reply }) => {
                assert_eq!(
                    (command.as_str(), reply.as_str()),
                    ("BOGUS", "UNKNOWN COMMAND")
                );
            }
            other => panic!("{other:?}"),
        }
        // Still usable after a refusal.
        h.ping().await.unwrap();
    }

    #[tokio::test]
    async fn a_station_leaving_during_the_walk_restarts_it() {
        let dir = TempDir::new();
        let fake = Arc::new(Mutex::new(Fake {
            stations: table(&[
                ("02:00:00:00:00:03", true),
                ("02:00:00:00:00:02", true),
                ("02:00:00:00:00:01", true),
            ]),
            vanish: Some(mac("02:00:00:00:00:02")),
            ..Fake::default()
        }));
        let (ctrl, _task) = serve(&dir.0, fake.clone());
        let mut h = Hostapd::connect(&ctrl, &dir.0.join("l")).await.unwrap();
        let macs: Vec<String> = h
            .stations()
            .await
            .unwrap()
            .iter()
            .map(|s| s.mac.to_string())
            .collect();
        // 02 was returned, then left: STA-NEXT 02 fails, the walk restarts and finds 01.
        assert_eq!(
            macs,
            [
                "02:00:00:00:00:03",
                "02:00:00:00:00:02",
                "02:00:00:00:00:01"
            ]
        );
        let log = fake.lock().unwrap().log.clone();
        assert_eq!(
            log[1..],
            [
                "STA-FIRST",
                "STA-NEXT 02:00:00:00:00:03",
                "STA-NEXT 02:00:00:00:00:02",
                "STA-FIRST",
                "STA-NEXT 02:00:00:00:00:03",
                "STA-NEXT 02:00:00:00:00:01",
            ]
        );
    }

    #[tokio::test]
    async fn a_timeout_never_shifts_replies() {
        let dir = TempDir::new();
        let fake = Arc::new(Mutex::new(Fake {
            stations: table(&[("02:00:00:00:00:01", true)]),
            ..Fake::default()
        }));
        let (ctrl, _task) = serve(&dir.0, fake.clone());
        let mut h = Hostapd::connect(&ctrl, &dir.0.join("l")).await.unwrap();
        // The reply to STA-FIRST comes only after the next command: too late.
        fake.lock().unwrap().late = Some("STA-FIRST".into());
        assert!(matches!(h.stations().await, Err(HostapdError::Timeout)));
        // A fresh socket: PING gets PONG, not the stale station.
        h.ping().await.unwrap();
        assert_eq!(h.stations().await.unwrap().len(), 1);

        // A cancelled command (dropped future) also leaves its reply behind.
        fake.lock().unwrap().late = Some("DEAUTHENTICATE 02:00:00:00:00:09".into());
        let cancelled = tokio::time::timeout(
            Duration::from_millis(10),
            h.deauthenticate(mac("02:00:00:00:00:09")),
        )
        .await;
        assert!(cancelled.is_err());
        h.ping().await.unwrap();
    }

    #[tokio::test]
    async fn gone_when_hostapd_goes_away() {
        let dir = TempDir::new();
        let fake = Arc::new(Mutex::new(Fake::default()));
        let (ctrl, task) = serve(&dir.0, fake.clone());
        let mut h = Hostapd::connect(&ctrl, &dir.0.join("l")).await.unwrap();
        task.abort();
        let _ = task.await;
        assert!(matches!(h.ping().await, Err(HostapdError::Gone)));
        assert!(matches!(h.stations().await, Err(HostapdError::Gone)));
        assert!(matches!(h.next_event().await, Err(HostapdError::Gone)));

        // A new hostapd at the same path: connect again.
        let _ = std::fs::remove_file(&ctrl);
        let (ctrl, _task) = serve(&dir.0, fake.clone());
        let mut h = Hostapd::connect(&ctrl, &dir.0.join("l")).await.unwrap();
        h.ping().await.unwrap();

        // Not running at all.
        let err = Hostapd::connect(&dir.0.join("nothing"), &dir.0.join("l")).await;
        assert!(matches!(err, Err(HostapdError::Gone)), "{err:?}");
    }

    #[tokio::test]
    async fn terminating_is_gone() {
        let dir = TempDir::new();
        let fake = Arc::new(Mutex::new(Fake::default()));
        let (ctrl, _task) = serve(&dir.0, fake.clone());
        let mut h = Hostapd::connect(&ctrl, &dir.0.join("l")).await.unwrap();
        send_event(&fake, "<3>AP-STA-DISCONNECTED 02:00:00:00:00:01").await;
        send_event(&fake, "<3>AP-DISABLED ").await;
        send_event(&fake, "<3>CTRL-EVENT-TERMINATING ").await;
        assert_eq!(
            h.next_event().await.unwrap(),
            Event::StaDisconnected(mac("02:00:00:00:00:01"))
        );
        assert_eq!(h.next_event().await.unwrap(), Event::Other);
        assert!(matches!(h.next_event().await, Err(HostapdError::Gone)));
        assert!(matches!(h.ping().await, Err(HostapdError::Gone)));
    }

    #[tokio::test]
    async fn next_event_is_cancel_safe_in_select() {
        let dir = TempDir::new();
        let fake = Arc::new(Mutex::new(Fake::default()));
        let (ctrl, _task) = serve(&dir.0, fake.clone());
        let mut h = Hostapd::connect(&ctrl, &dir.0.join("l")).await.unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut seen = Vec::new();
        let mut pings = 0;
        let sender = fake.clone();
        tokio::spawn(async move {
            for i in 1..=20u8 {
                let event = format!("<3>AP-STA-CONNECTED 02:00:00:00:00:{i:02x}");
                send_event(&sender, &event).await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        // Every tick drops a pending next_event future; no event may get lost.
        while seen.len() < 20 {
            tokio::select! {
                ev = h.next_event() => seen.push(ev.unwrap()),
                _ = tick.tick() => {
                    h.ping().await.unwrap();
                    pings += 1;
                }
            }
        }
        assert!(pings > 0);
        let want: Vec<Event> = (1..=20u8)
            .map(|i| Event::StaConnected(MacAddr([2, 0, 0, 0, 0, i])))
            .collect();
        assert_eq!(seen, want);
    }

    #[tokio::test]
    async fn stale_socket_files_are_swept() {
        let dir = TempDir::new();
        let fake = Arc::new(Mutex::new(Fake::default()));
        let (ctrl, _task) = serve(&dir.0, fake.clone());
        let local = dir.0.join("l");
        std::fs::create_dir_all(&local).unwrap();
        // A pid that cannot exist (above pid_max), and an unrelated file.
        std::fs::write(local.join("hostapd-4294967295-0-cmd"), "").unwrap();
        std::fs::write(local.join("other"), "").unwrap();
        let _h = Hostapd::connect(&ctrl, &local).await.unwrap();
        assert!(!local.join("hostapd-4294967295-0-cmd").exists());
        assert!(local.join("other").exists());
    }
}
