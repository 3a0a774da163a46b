//! `provisionerctl`'s output for people (`--json` prints the protocol's line instead):
//! aligned columns, durations as `14m59s`.

use std::fmt::Write as _;

use super::protocol::{
    Clients, Events, Lease, Quotas, RadioState, Rates, Reply, StationKind, StationState, Status,
    WindowState,
};

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

/// Bytes as `512 B`, `1.2 MB`: decimal units, one decimal from a kilobyte on.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if b < 1000 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.95 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The quotas' line, if there are any.
fn quotas(q: &Quotas) -> Option<String> {
    if q.client_daily.is_none() && q.total_daily.is_none() {
        return None;
    }
    let mut parts = Vec::new();
    if let Some(c) = q.client_daily {
        parts.push(format!("client {}/day", bytes(c)));
    }
    if let Some(t) = q.total_daily {
        let used = bytes(q.network_used.unwrap_or(0));
        let over = if q.network_over {
            " (used up: only DHCP and DNS until the reset)"
        } else {
            ""
        };
        parts.push(format!("network {}/day, {used} used{over}", bytes(t)));
    }
    let resets = q
        .resets_at
        .as_deref()
        .map(|r| format!("; resets {r}"))
        .unwrap_or_default();
    Some(format!("{}{resets}", parts.join(", ")))
}

fn rates(r: &Rates) -> String {
    let mut out = format!(
        "DNS {}/s per client, {}/s in all",
        r.dns_qps_client, r.dns_qps_total
    );
    for (name, rate) in [
        ("client up", r.client_up),
        ("client down", r.client_down),
        ("network up", r.total_up),
        ("network down", r.total_down),
    ] {
        if let Some(rate) = rate {
            let _ = write!(out, "; {name} {}/s", bytes(rate));
        }
    }
    out
}

fn clients(c: &Clients) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:17}  {:15}  {:11}  {:20}  {:>8}  {:>12}  {:>9}  {:>9}  {:>8}  {:>8}  NOTE",
        "MAC",
        "IP",
        "STATE",
        "ADMITTED AT",
        "AGE",
        "SESSION LEFT",
        "UP",
        "DOWN",
        "PKTS UP",
        "PKTS DN"
    );
    let dash = || "-".to_owned();
    for r in &c.stations {
        let state = match r.state {
            StationKind::Admitted => "admitted",
            StationKind::Waiting => "waiting",
            StationKind::Banned => "banned",
            StationKind::TurnedAway => "turned_away",
        };
        let mut note = String::new();
        if let Some(p) = &r.profile {
            let _ = write!(note, "profile {p}");
        }
        if let Some(left) = r.ban_left {
            if !note.is_empty() {
                note.push_str("; ");
            }
            let _ = write!(note, "ban ends in {}", secs(left));
        }
        if r.violations > 0 {
            if !note.is_empty() {
                note.push_str("; ");
            }
            let _ = write!(note, "{} violations", r.violations);
        }
        if let Some(reason) = &r.reason {
            if !note.is_empty() {
                note.push_str("; ");
            }
            let _ = write!(note, "turned away: {reason}");
            if let Some(at) = &r.turned_away_at {
                let _ = write!(note, " at {at}");
            }
        }
        let line = format!(
            "{:17}  {:15}  {:11}  {:20}  {:>8}  {:>12}  {:>9}  {:>9}  {:>8}  {:>8}  {note}",
            r.mac.to_string(),
            r.ip.map_or_else(dash, |ip| ip.to_string()),
            state,
            r.admitted_at.clone().unwrap_or_else(dash),
            r.age.map_or_else(dash, secs),
            r.session_left.map_or_else(dash, secs),
            bytes(r.bytes_up),
            bytes(r.bytes_down),
            r.packets_up,
            r.packets_down,
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

fn window(w: &WindowState) -> String {
    let mut open = String::from("open");
    if !w.for_.is_empty() {
        let named: Vec<String> = w.for_.iter().map(|p| p.to_string()).collect();
        let _ = write!(
            open,
            " for {} ({} of {} done)",
            named.join(", "),
            w.done.unwrap_or(0),
            w.count.unwrap_or(1)
        );
    }
    match (w.open, w.secs_left) {
        (true, Some(left)) => format!("{open}, closes in {}", secs(left)),
        (true, None) => open,
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
    let _ = write!(out, "window   {}", window(&s.window));
    match (&s.window_until, s.window_mode.is_empty()) {
        (Some(until), _) => {
            let _ = write!(out, " ({}, until {until})", s.window_mode);
        }
        (None, false) => {
            let _ = write!(out, " ({})", s.window_mode);
        }
        (None, true) => {}
    }
    out.push('\n');
    let radio = match s.radio {
        None => "none (a station is whoever asks for DHCP)",
        Some(RadioState::Connected) => "connected",
        Some(RadioState::Disconnected) => "disconnected (hostapd unreachable)",
    };
    let _ = writeln!(out, "radio    {radio}");
    if s.max_clients > 0 {
        let _ = writeln!(out, "clients  {} of {}", s.clients.len(), s.max_clients);
    } else {
        let _ = writeln!(out, "clients  {}", s.clients.len());
    }
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
    // What an older daemon does not say is left out.
    if !s.version.is_empty() {
        let _ = writeln!(out, "learned  {} address(es)", s.learned);
        let _ = writeln!(out, "rates    {}", rates(&s.rates));
        if let Some(q) = quotas(&s.quotas) {
            let _ = writeln!(out, "quotas   {q}");
        }
        let _ = writeln!(out, "uptime   {}", secs(s.uptime));
        let _ = writeln!(out, "version  {}", s.version);
        let _ = writeln!(out, "config   {} (loaded {})", s.config, s.config_loaded_at);
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
        Reply::Clients(c) => clients(c),
        Reply::Metrics(m) => m.text.clone(),
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
    // A PROFILE column only when an entry is bound to a vendor profile ('-': the default).
    let profiles = a.entries.iter().any(|e| e.profile.is_some());
    let rows: Vec<Vec<String>> = a
        .entries
        .iter()
        .map(|e| {
            let mut row = vec![e.name.clone()];
            if profiles {
                row.push(e.profile.clone().unwrap_or_else(|| "-".into()));
            }
            row.extend([
                e.proto.clone(),
                join(&e.ports),
                join(&e.addresses),
                join(&e.domains),
                if e.domains.is_empty() {
                    "-".into()
                } else {
                    e.learned.to_string()
                },
            ]);
            row
        })
        .collect();
    let mut head = vec!["NAME"];
    if profiles {
        head.push("PROFILE");
    }
    head.extend(["PROTO", "PORTS", "ADDRESSES", "DOMAINS", "LEARNED"]);
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = head.into_iter().map(str::to_owned).collect();
    for r in std::iter::once(head).chain(rows) {
        let mut line = String::new();
        for (i, (c, &w)) in r.iter().zip(&width).enumerate() {
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
    use crate::control::protocol::{Ban, Client, StationRow};

    #[test]
    fn durations_read_as_units() {
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(59), "59s");
        assert_eq!(secs(899), "14m59s");
        assert_eq!(secs(3600), "1h");
        assert_eq!(secs(90_061), "1d1h1m1s");
    }

    #[test]
    fn bytes_read_as_decimal_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1000), "1.0 kB");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(bytes(999_960), "1.0 MB");
        assert_eq!(bytes(5_000_000_000), "5.0 GB");
        assert_eq!(bytes(u64::MAX), "18446.7 PB");
    }

    #[test]
    fn clients_as_people_read_them() {
        let mac = |s: &str| s.parse().unwrap();
        let base = |m: &str, state| StationRow {
            mac: mac(m),
            state,
            ip: None,
            admitted_at: None,
            age: None,
            session_left: None,
            bytes_up: 0,
            bytes_down: 0,
            packets_up: 0,
            packets_down: 0,
            ban_left: None,
            violations: 0,
            reason: None,
            turned_away_at: None,
            profile: None,
        };
        let c = Clients {
            stations: vec![
                StationRow {
                    ip: Some("192.168.250.2".parse().unwrap()),
                    admitted_at: Some("2025-03-01T12:00:05Z".into()),
                    age: Some(75),
                    session_left: Some(825),
                    bytes_up: 52_300,
                    bytes_down: 1_234_567,
                    packets_up: 410,
                    packets_down: 905,
                    violations: 3,
                    profile: Some("acme".into()),
                    ..base("02:00:00:00:00:01", StationKind::Admitted)
                },
                base("02:00:00:00:00:02", StationKind::Waiting),
                StationRow {
                    ban_left: Some(299),
                    reason: Some("full".into()),
                    turned_away_at: Some("2025-03-01T12:01:00Z".into()),
                    ..base("02:00:00:00:00:03", StationKind::Banned)
                },
                StationRow {
                    reason: Some("window_closed".into()),
                    turned_away_at: Some("2025-03-01T11:59:00Z".into()),
                    ..base("02:00:00:00:00:04", StationKind::TurnedAway)
                },
            ],
        };
        assert_eq!(
            reply(&Reply::Clients(c)),
            "MAC                IP               STATE        ADMITTED AT                AGE  SESSION LEFT         UP       DOWN   PKTS UP   PKTS DN  NOTE\n\
             02:00:00:00:00:01  192.168.250.2    admitted     2025-03-01T12:00:05Z     1m15s        13m45s    52.3 kB     1.2 MB       410       905  profile acme; 3 violations\n\
             02:00:00:00:00:02  -                waiting      -                            -             -        0 B        0 B         0         0\n\
             02:00:00:00:00:03  -                banned       -                            -             -        0 B        0 B         0         0  ban ends in 4m59s; turned away: full at 2025-03-01T12:01:00Z\n\
             02:00:00:00:00:04  -                turned_away  -                            -             -        0 B        0 B         0         0  turned away: window_closed at 2025-03-01T11:59:00Z\n"
        );
    }

    #[test]
    fn status_and_orders_as_people_read_them() {
        let mac = |s: &str| s.parse().unwrap();
        let s = Status {
            window: WindowState {
                open: true,
                secs_left: Some(297),
                ..WindowState::default()
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
            window_mode: "on_demand".into(),
            window_until: Some("2025-03-01T12:04:57Z".into()),
            max_clients: 8,
            learned: 3,
            rates: Rates {
                dns_qps_client: 10,
                dns_qps_total: 100,
                client_down: Some(250_000),
                total_up: Some(1_500_000),
                ..Rates::default()
            },
            uptime: 3723,
            version: "0.1.0".into(),
            config: "/etc/config/provisioner".into(),
            config_loaded_at: "2025-03-01T11:58:00Z".into(),
            quotas: Quotas {
                client_daily: Some(50_000_000),
                total_daily: Some(1_000_000_000),
                network_used: Some(1_500_000_000),
                network_over: true,
                resets_at: Some("2025-03-02T04:00:00Z".into()),
            },
        };
        assert_eq!(
            reply(&Reply::Status(s)),
            "window   open, closes in 4m57s (on_demand, until 2025-03-01T12:04:57Z)\n\
             radio    connected\n\
             clients  1 of 8\n\
            \x20 MAC                IP                    AGE  SESSION LEFT\n\
            \x20 02:00:00:00:00:01  192.168.250.2          3s        14m57s\n\
             bans     1\n\
            \x20 MAC                    LEFT\n\
            \x20 02:00:00:00:00:09    59m59s\n\
             learned  3 address(es)\n\
             rates    DNS 10/s per client, 100/s in all; client down 250.0 kB/s; network up 1.5 MB/s\n\
             quotas   client 50.0 MB/day, network 1.0 GB/day, 1.5 GB used (used up: only DHCP and DNS until the reset); resets 2025-03-02T04:00:00Z\n\
             uptime   1h2m3s\n\
             version  0.1.0\n\
             config   /etc/config/provisioner (loaded 2025-03-01T11:58:00Z)\n"
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
            ..WindowState::default()
        };
        assert_eq!(reply(&Reply::Window(closed)), "window closed\n");
        let for_one = WindowState {
            open: true,
            secs_left: Some(600),
            for_: vec![
                "00:11:22:33:44:55".parse().unwrap(),
                "00:11:22:3".parse().unwrap(),
            ],
            count: Some(2),
            done: Some(1),
        };
        assert_eq!(
            reply(&Reply::Window(for_one)),
            "window open for 00:11:22:33:44:55, 00:11:22:3 (1 of 2 done), closes in 10m\n"
        );
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
            profile: None,
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
