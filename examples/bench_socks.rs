//! `make bench` (last part): the SOCKS5 forwarder (`config socks`) against a direct,
//! forwarded and masqueraded connection, in the same run on the netns rig, with the daemon
//! (the release build) running and the client admitted and leased:
//!
//! - throughput: a fixed amount of data up (client to a sink on the cloud) and down (a
//!   source on the cloud to the client), over one TCP connection, direct and relayed, the
//!   two taking turns, median of the rounds;
//! - CPU per MB: the whole machine's busy time over each transfer (client, server and
//!   router share the CPUs in both cases, so the difference is the relay's), and the
//!   daemon's own (user + system, its SOCKS thread's included) over the relayed ones;
//! - connection setup: from connecting to the first byte the client may send: a TCP
//!   handshake direct; with the forwarder, the handshake to it, the greeting, the request,
//!   the loop's decision (by address, or by name: the resolver's answer, from its cache
//!   after the first) and the router's own connection, until the success reply.
//!
//! Not a test: nothing passes or fails on the figures. `BENCH_MB` sets each transfer's
//! size (default 512).

#[path = "../tests/rig/mod.rs"]
mod rig;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rig::*;

const SOCKS: u16 = 1080;
const SINK: u16 = 5202;
const SOURCE: u16 = 5203;
const NAME: &str = "bulk.bench.example";
const ROUNDS: usize = 3;
const CONNECTS: usize = 300;
const CHUNK: usize = 64 * 1024;

fn megabytes() -> usize {
    std::env::var("BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

/// The forwarder's bounds raised: relays still closing behind connections opened one
/// after another must not meet the client's bound of 4.
fn config() -> String {
    format!(
        "config network 'network'
\toption interface '{PROV_IF}'
\toption wan '{WAN_IF}'
\toption subnet '{PROV_NET}/{PROV_PREFIX}'
\toption router '{ROUTER_PROV}'

config window 'window'
\toption mode 'always'

config limits 'limits'
\toption session '1h'

config dns 'dns'
\tlist upstream '{CLOUD_DNS}'
\toption client_qps '1000'
\toption total_qps '2000'

config socks 'socks'
\toption enabled '1'
\toption client_connections '64'
\toption total_connections '64'

config allow 'bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{SINK}'
\tlist port '{SOURCE}'

config allow 'named'
\tlist domain '{NAME}'
\tlist port '443'
"
    )
}

/// A sink (reads everything) and a source (writes `bytes` to each connection) on the
/// cloud's allowed address.
fn servers(rig: &Rig, bytes: usize) {
    let (sink, source) = rig.cloud().run(|| {
        (
            TcpListener::bind((CLOUD_ALLOWED, SINK)).unwrap(),
            TcpListener::bind((CLOUD_ALLOWED, SOURCE)).unwrap(),
        )
    });
    std::thread::spawn(move || {
        for c in sink.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                while let Ok(1..) = c.read(&mut buf) {}
            });
        }
    });
    std::thread::spawn(move || {
        for c in source.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let buf = vec![0x5au8; CHUNK];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(CHUNK);
                    if c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Socks,
}

/// A connection from the client to `dest`:`port`, direct or through the forwarder (the
/// destination given as an address, or as `name`).
fn open(via: Via, name: Option<&str>, dest: Ipv4Addr, port: u16) -> Result<TcpStream, String> {
    let t = Duration::from_secs(5);
    if via == Via::Direct {
        return TcpStream::connect_timeout(&SocketAddr::from((dest, port)), t)
            .map_err(|e| format!("connect {dest}:{port}: {e}"));
    }
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((ROUTER_PROV, SOCKS)), t)
        .map_err(|e| format!("connect to the forwarder: {e}"))?;
    s.set_nodelay(true).ok();
    let mut req = vec![5, 1, 0, 5, 1, 0];
    match name {
        Some(n) => {
            req.extend_from_slice(&[3, n.len() as u8]);
            req.extend_from_slice(n.as_bytes());
        }
        None => {
            req.push(1);
            req.extend_from_slice(&dest.octets());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    // Greeting and request in one write, as the fastest clients do.
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).map_err(|e| e.to_string())?;
    if reply[..2] != [5, 0] || reply[3] != 0 {
        return Err(format!("the forwarder refused: {reply:?}"));
    }
    Ok(s)
}

/// Busy jiffies of the whole machine (all CPUs).
fn machine_busy() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait
    total - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
}

/// A process's user + system jiffies.
fn process_cpu(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the 3rd field.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3, whose state letter
    // did not parse.
    f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
}

struct Run {
    mbit: f64,
    machine_jiffies: u64,
    daemon_jiffies: u64,
}

fn transfer(rig: &Rig, via: Via, up: bool, bytes: usize, daemon: u32) -> Result<Run, String> {
    rig.client(1).run(|| {
        let port = if up { SINK } else { SOURCE };
        let mut s = open(via, None, CLOUD_ALLOWED, port)?;
        let (m0, d0) = (machine_busy(), process_cpu(daemon));
        let start = Instant::now();
        let mut buf = vec![0x5au8; CHUNK];
        if up {
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK);
                s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                left -= n;
            }
            s.shutdown(std::net::Shutdown::Write).ok();
            // The sink closes once it read everything: wait for that.
            let _ = s.read(&mut buf);
        } else {
            let mut got = 0;
            while got < bytes {
                match s.read(&mut buf) {
                    Ok(0) => return Err(format!("source closed after {got} bytes")),
                    Ok(n) => got += n,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(Run {
            mbit: bytes as f64 * 8.0 / 1e6 / secs,
            machine_jiffies: machine_busy() - m0,
            daemon_jiffies: process_cpu(daemon) - d0,
        })
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Setup times in milliseconds of `CONNECTS` connections one after another, and the
/// failures (with the first one's error).
fn setups(rig: &Rig, via: Via, name: Option<&str>, port: u16) -> (Vec<f64>, usize, Option<String>) {
    rig.client(1).run(|| {
        let mut times = Vec::with_capacity(CONNECTS);
        let (mut failed, mut first) = (0, None);
        for _ in 0..CONNECTS {
            let start = Instant::now();
            match open(via, name, CLOUD_ALLOWED, port) {
                Ok(mut s) => {
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                    // Read what the server sends (the line server on 443) to its close.
                    s.shutdown(std::net::Shutdown::Write).ok();
                    let _ = s.read_to_end(&mut Vec::new());
                }
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
            }
        }
        (times, failed, first)
    })
}

fn run() -> Result<(), String> {
    let bytes = megabytes() * 1024 * 1024;
    let rig = Rig::new(1);
    rig.dns_zone(
        NAME,
        FakeAnswer {
            a: vec![CLOUD_ALLOWED],
            ttl: 3600,
            ..FakeAnswer::default()
        },
    );
    servers(&rig, bytes);
    let daemon = rig.start_daemon(&config());
    rig.dhcp(1)?;
    let pid = daemon.pid();
    let hz = 100.0; // USER_HZ
    let mb = bytes as f64 / 1e6;

    println!(
        "\n== SOCKS5 forwarder against a direct (forwarded, masqueraded) connection: {} MiB per transfer, median of {ROUNDS} rounds",
        megabytes()
    );
    println!(
        "  {:<30} {:>10} {:>10}   {:>14} {:>14}",
        "", "Mbit/s", "relay/dir", "machine ms/MB", "daemon ms/MB"
    );
    for up in [true, false] {
        let mut rate = [Vec::new(), Vec::new()];
        let mut machine = [Vec::new(), Vec::new()];
        let mut own = Vec::new();
        for _ in 0..ROUNDS {
            for (i, via) in [Via::Direct, Via::Socks].into_iter().enumerate() {
                let r = transfer(&rig, via, up, bytes, pid)?;
                rate[i].push(r.mbit);
                machine[i].push(r.machine_jiffies as f64 / hz * 1e3 / mb);
                if via == Via::Socks {
                    own.push(r.daemon_jiffies as f64 / hz * 1e3 / mb);
                }
            }
        }
        let way = if up { "upload" } else { "download" };
        let d = median(&mut rate[0]);
        let s = median(&mut rate[1]);
        println!(
            "  {:<30} {:>10.0} {:>10} {:>14.2} {:>14}",
            format!("{way}, direct"),
            d,
            "",
            median(&mut machine[0]),
            "-"
        );
        println!(
            "  {:<30} {:>10.0} {:>9.2}x {:>14.2} {:>14.2}",
            format!("{way}, relayed"),
            s,
            s / d,
            median(&mut machine[1]),
            median(&mut own)
        );
    }

    println!("\n  connection setup, ms ({CONNECTS} one after another): median, p99");
    let cases: [(&str, Via, Option<&str>, u16); 3] = [
        ("direct TCP handshake", Via::Direct, None, SINK),
        ("forwarder, by address", Via::Socks, None, SINK),
        ("forwarder, by name (cached)", Via::Socks, Some(NAME), 443),
    ];
    for (what, via, name, port) in cases {
        let (mut t, failed, first) = setups(&rig, via, name, port);
        if t.is_empty() {
            return Err(format!("{what}: every connection failed: {first:?}"));
        }
        println!(
            "  {what:<30} {:>8.3} {:>8.3}{}",
            median(&mut t),
            percentile(&mut t, 0.99),
            first.map_or(String::new(), |e| format!("   ({failed} failed: {e})"))
        );
    }
    let refused = daemon
        .lines()
        .iter()
        .filter(|l| l.contains("event=socks_refused"))
        .cloned()
        .collect::<Vec<_>>();
    if !refused.is_empty() {
        println!(
            "  the forwarder refused {}: {:?}",
            refused.len(),
            refused.first()
        );
    }
    println!(
        "\n  Client, servers, router and daemon share the host's CPUs: the ratios, not the\n  absolute figures, are the relay's cost."
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_socks: {e}");
            ExitCode::FAILURE
        }
    }
}
