//! `provisionerctl`'s output for people (`--json` prints the protocol's line instead):
//! aligned columns, durations as `14m59s`.

use std::fmt::Write as _;

use super::protocol::{Events, Lease, RadioState, Reply, StationState, Status, WindowState};

/// Seconds as `1d2h`, `14m59s`, `0s`: the units that are not zero.
pub fn secs(s: u64) -> String {
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    for (v, unit) in [(d, "d"), (h, "h"), (m, "m"), (sec, "s")] {
        if v != 0 {
            let _ = write!(out, "{v}{unit}");
        }
    }
    out
}

fn window(w: &WindowState) -> String {
    match (w.open, w.secs_left) {
        (true, Some(left)) => format!("open, closes in {}", secs(left)),
        (true, None) => "open".into(),
        (false, _) => "closed".into(),
    }
}

fn station(s: &StationState) -> String {
    let client = if s.client { "a client" } else { "not a client" };
    match s.banned_secs {
        Some(left) => format!("{}: {client}, banned for {}\n", s.mac, secs(left)),
        None => format!("{}: {client}, not banned\n", s.mac),
    }
}

fn status(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "window   {}", window(&s.window));
    let radio = match s.radio {
        None => "none (a station is whoever asks for DHCP)",
        Some(RadioState::Connected) => "connected",
        Some(RadioState::Disconnected) => "disconnected (hostapd unreachable)",
    };
    let _ = writeln!(out, "radio    {radio}");
    let _ = writeln!(out, "clients  {}", s.clients.len());
    if !s.clients.is_empty() {
        let _ = writeln!(
            out,
            "  {:17}  {:15}  {:>8}  {:>12}",
            "MAC", "IP", "AGE", "SESSION LEFT"
        );
        for c in &s.clients {
            let ip = c.ip.map_or("-".into(), |ip| ip.to_string());
            let _ = writeln!(
                out,
                "  {:17}  {:15}  {:>8}  {:>12}",
                c.mac.to_string(),
                ip,
                secs(c.age),
                secs(c.session_left)
            );
        }
    }
    let _ = writeln!(out, "bans     {}", s.bans.len());
    if !s.bans.is_empty() {
        let _ = writeln!(out, "  {:17}  {:>8}", "MAC", "LEFT");
        for b in &s.bans {
            let _ = writeln!(out, "  {:17}  {:>8}", b.mac.to_string(), secs(b.left));
        }
    }
    out
}

/// A reply, as lines ending in a newline; an error is the caller's (stderr).
pub fn reply(r: &Reply) -> String {
    match r {
        Reply::Status(s) => status(s),
        Reply::Window(w) => format!("window {}\n", window(w)),
        Reply::Station(s) => station(s),
        Reply::Reloaded(r) => format!("reloaded {}\n", r.config),
        Reply::Events(e) => events(e),
        Reply::Event(e) => format!("{e}\n"),
        Reply::Allow(a) => allow(a),
        Reply::Error(f) => format!("error: {f}\n"),
    }
}

/// The audit log, one event a line; a gap is said before the events after it.
pub fn events(e: &Events) -> String {
    let mut out = String::new();
    if e.lost > 0 {
        let _ = writeln!(out, "({} earlier event(s) no longer kept)", e.lost);
    }
    for line in &e.events {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The allow entries as a table, one line each, lists comma-separated; a single address
/// shows without its `/32`; LEARNED only for entries with domains.
fn allow(a: &super::protocol::AllowEntries) -> String {
    if a.entries.is_empty() {
        return "no allow entries\n".into();
    }
    let join = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter()
                .map(|s| s.strip_suffix("/32").unwrap_or(s))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let rows: Vec<[String; 6]> = a
        .entries
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                e.proto.clone(),
                join(&e.ports),
                join(&e.addresses),
                join(&e.domains),
                if e.domains.is_empty() {
                    "-".into()
                } else {
                    e.learned.to_string()
                },
            ]
        })
        .collect();
    let head = ["NAME", "PROTO", "PORTS", "ADDRESSES", "DOMAINS", "LEARNED"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(head.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(width).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn leases(leases: &[Lease]) -> String {
    let mut out = String::new();
    for l in leases {
        let _ = writeln!(
            out,
            "{}  {:15}  {}",
            l.mac,
            l.ip.to_string(),
            secs(l.expires_in)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{Ban, Client};

    #[test]
    fn durations_read_as_units() {
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(59), "59s");
        assert_eq!(secs(899), "14m59s");
        assert_eq!(secs(3600), "1h");
        assert_eq!(secs(90_061), "1d1h1m1s");
    }

    #[test]
    fn status_and_orders_as_people_read_them() {
        let mac = |s: &str| s.parse().unwrap();
        let s = Status {
            window: WindowState {
                open: true,
                secs_left: Some(297),
            },
            radio: Some(RadioState::Connected),
            clients: vec![Client {
                mac: mac("02:00:00:00:00:01"),
                ip: Some("192.168.250.2".parse().unwrap()),
                age: 3,
                session_left: 897,
            }],
            bans: vec![Ban {
                mac: mac("02:00:00:00:00:09"),
                left: 3599,
            }],
        };
        assert_eq!(
            reply(&Reply::Status(s)),
            "window   open, closes in 4m57s\n\
             radio    connected\n\
             clients  1\n\
            \x20 MAC                IP                    AGE  SESSION LEFT\n\
            \x20 02:00:00:00:00:01  192.168.250.2          3s        14m57s\n\
             bans     1\n\
            \x20 MAC                    LEFT\n\
            \x20 02:00:00:00:00:09    59m59s\n"
        );
        let st = StationState {
            mac: mac("02:00:00:00:00:01"),
            client: false,
            banned_secs: Some(3600),
        };
        assert_eq!(
            reply(&Reply::Station(st)),
            "02:00:00:00:00:01: not a client, banned for 1h\n"
        );
        let closed = WindowState {
            open: false,
            secs_left: None,
        };
        assert_eq!(reply(&Reply::Window(closed)), "window closed\n");
    }

    #[test]
    fn allow_entries_as_a_table() {
        use crate::control::protocol::{AllowEntries, AllowInfo};
        let info = |name: &str, domains: &[&str], addresses: &[&str], ports: &[&str]| AllowInfo {
            name: name.into(),
            domains: domains.iter().map(|s| s.to_string()).collect(),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            proto: "tcp".into(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            learned: 3,
        };
        let a = AllowEntries {
            entries: vec![
                info("cloud", &[], &["11.1.0.10/32", "11.2.0.0/16"], &["443"]),
                info("fw", &["*.fw.example.com"], &[], &["443", "8000-8100"]),
            ],
        };
        assert_eq!(
            reply(&Reply::Allow(a)),
            "NAME   PROTO  PORTS          ADDRESSES              DOMAINS           LEARNED\n\
             cloud  tcp    443            11.1.0.10,11.2.0.0/16  -                 -\n\
             fw     tcp    443,8000-8100  -                      *.fw.example.com  3\n"
        );
        assert_eq!(
            reply(&Reply::Allow(AllowEntries { entries: vec![] })),
            "no allow entries\n"
        );
    }
}
