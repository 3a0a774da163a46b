//! `make bench` (third part): what our table costs forwarded traffic. iperf3 TCP from a
//! provisioning client (allowed bulk traffic) and from a home host (traffic our table only
//! glances at) to the cloud through the router, each way, side by side on the netns rig:
//!
//! - anchor: no table of ours; the router does what any router does (conntrack and
//!   masquerade, in a table of the bench's own, there in every variant as fw4 is);
//! - ours: our table, the client admitted and leased: every packet of the client passes
//!   the guard (admission and anti-spoof sets), the forward chains, the allow-list set
//!   lookup (first packet) and the masquerade;
//! - ours, loaded: 250 clients admitted (the bench's and 249 more, each an element in
//!   every set: clients, leases, counts, quota), 1,000 allow-list entries (500 static, 500
//!   learned), per-client and network rates and daily quotas on both ways, set so high that
//!   they never drop: what issue 13 measures against;
//! - ours with 8 vendor profiles: eight `config profile` sections (seven OUIs and the
//!   client's own MAC), an allow entry each, the client's entry bound to its profile: the
//!   static allow set keyed `MAC . address . protocol . port` with MAC intervals.
//!
//! The variants take turns, round after round, each put in place by one `nft -f`: the
//! table is what `provisionerd --print-ruleset` makes of the config, with the client's
//! admission and lease elements the daemon would have added (the daemon itself is never
//! in the path of forwarded traffic, so it is not running). Then all again with 1500-byte
//! frames. Each round also times new connections (a thousand connect, read a line, close,
//! one after another, to the cloud's line server on 443): a connection's first packet is
//! the one that passes the allow-list lookup. Not a test: nothing passes or fails on the figures. `BENCH_SECONDS` sets each
//! run's length (default 3).

#[path = "../tests/rig/mod.rs"]
mod rig;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rig::*;

const PORT: u16 = 5201;
const ROUNDS: usize = 3;
/// New connections timed per round and variant.
const CONNECTS: usize = 1000;
/// The client's address, set by hand (no daemon runs: no DHCP).
const CLIENT_IP: &str = "192.168.250.50";
/// The loaded variant: 250 clients in all, 1,000 allow-list entries (half static, half
/// learned).
const OTHERS: usize = 249;
const STATIC_ENTRIES: usize = 500;
const LEARNED: usize = 500;

fn seconds() -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Anchor,
    Ours,
    OursLoaded,
    OursProfiles,
}

/// Eight vendor profiles: seven made-up OUIs with an entry each, and the eighth the client
/// itself (its whole MAC: the rig's client MACs are locally administered, which no
/// shorter prefix matches), whose entry is the bulk traffic's.
fn profiles() -> String {
    let mut s = String::new();
    for i in 1..=7 {
        s.push_str(&format!(
            "config profile 'vendor{i}'\n\tlist oui '00:a0:0{i}'\n\tlist oui '00:b0:0{i}:4'\n\
             config allow 'cloud{i}'\n\tlist address '11.3.{i}.0/24'\n\tlist port '443'\n\toption profile 'vendor{i}'\n"
        ));
    }
    let mac = Rig::client_mac(1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    s.push_str(&format!("config profile 'vendor8'\n\tlist oui '{mac}'\n"));
    s
}

/// The bench opens a thousand connections one after another from one client: the
/// new-connection rate rule is in place in every variant of ours, but set so that it never
/// binds (at its default, 20 a second, it would time the limit, not the table).
const CONNECTION_RATE: &str = "\toption connection_rate '10000'\n";

fn daemon_config(which: Variant) -> String {
    if which == Variant::OursProfiles {
        return config(&format!(
            "
config limits 'limits'
{CONNECTION_RATE}
config allow 'bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{PORT}'
\tlist port '443'
\toption profile 'vendor8'

{}",
            profiles()
        ));
    }
    let limits = if which == Variant::OursLoaded {
        // Rates and quotas that never bind, and the static half of the 1,000 entries.
        let mut l = format!(
            "config limits 'limits'
\toption max_clients '250'
{CONNECTION_RATE}\toption client_rate_up '100gbit'
\toption client_rate_down '100gbit'
\toption total_rate_up '100gbit'
\toption total_rate_down '100gbit'
\toption client_daily '1000GB'
\toption total_daily '100000GB'

config allow 'many'
",
        );
        for i in 0..STATIC_ENTRIES {
            l.push_str(&format!("\tlist address '12.{}.{}.1'\n", i / 250, i % 250));
        }
        l.push_str("\tlist port '443'\n");
        l
    } else {
        format!("config limits 'limits'\n{CONNECTION_RATE}")
    };
    config(&format!(
        "
config allow 'bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{PORT}'

{limits}"
    ))
}

/// The router's own firewall, there in every variant (as fw4 is on OpenWrt): conntrack,
/// and masquerade of everything out of the WAN.
fn router_nat() -> String {
    format!(
        "table inet benchnat {{\n\
         \tchain post {{ type nat hook postrouting priority srcnat; oifname \"{WAN_IF}\" masquerade; }}\n\
         \tchain forward {{ type filter hook forward priority filter; ct state established,related accept; }}\n\
         }}\n"
    )
}

/// The nft script that puts variant `which` in place of the others, in one transaction.
fn variant_script(rig: &Rig, which: Variant) -> Result<String, String> {
    let mut s = String::from(
        "table inet provisioner {}\ntable arp provisioner {}\ntable netdev provisioner {}\n\
         delete table inet provisioner\ndelete table arp provisioner\n\
         delete table netdev provisioner\n",
    );
    if which == Variant::Anchor {
        return Ok(s);
    }
    let cfg = rig.dir().join("bench.conf");
    std::fs::write(&cfg, daemon_config(which)).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(daemon_bin())
        .args([
            "provisionerd",
            "-c",
            cfg.to_str().ok_or("path")?,
            "--print-ruleset",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let script = String::from_utf8_lossy(&out.stdout);
    // Its own first lines (create, delete: the three tables) are already above.
    s.extend(script.lines().skip(6).map(|l| format!("{l}\n")));
    // What the daemon would have put there for the client: admitted, leased.
    let mac = Rig::client_mac(1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    s.push_str(&elements(&mac, CLIENT_IP, which == Variant::OursLoaded));
    if which == Variant::OursLoaded {
        // 249 more clients, each in every set, and the learned half of the 1,000 entries.
        for i in 0..OTHERS {
            let mac = format!("02:00:00:01:{:02x}:{:02x}", i / 256, i % 256);
            let ip = format!("192.168.250.{}", if i < 48 { i + 2 } else { i + 3 });
            s.push_str(&elements(&mac, &ip, true));
        }
        for i in 0..LEARNED {
            let mac = format!("02:00:00:01:00:{:02x}", i % OTHERS);
            s.push_str(&format!(
                "add element inet provisioner learned4 {{ {mac} . 13.{}.{}.1 . tcp . 443 timeout 1h }}\n",
                i / 250,
                i % 250
            ));
        }
        s.push_str("add element netdev provisioner quota_n { ip timeout 1h }\n");
    }
    Ok(s)
}

/// What the daemon would have put in the sets for a client: admitted, leased, counted (and,
/// with quotas, its quota element).
fn elements(mac: &str, ip: &str, quota: bool) -> String {
    let mut s = format!(
        "add element inet provisioner clients {{ {mac} timeout 1h }}\n\
         add element inet provisioner leases {{ {mac} . {ip} timeout 1h }}\n\
         add element arp provisioner leases {{ {mac} . {ip} timeout 1h }}\n\
         add element netdev provisioner count_up {{ {mac} . {ip} }}\n\
         add element netdev provisioner count_down {{ {ip} }}\n"
    );
    if quota {
        s.push_str(&format!(
            "add element netdev provisioner quota_c {{ {mac} timeout 1h }}\n"
        ));
    }
    s
}

/// Gbit/s received by one iperf3 run from `from` to the cloud (`reverse`: the cloud
/// sends).
fn iperf(from: &Ns, reverse: bool) -> Result<f64, String> {
    let secs = seconds().to_string();
    let server = CLOUD_ALLOWED.to_string();
    let port = PORT.to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        &server,
        "-p",
        &port,
        "-t",
        &secs,
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if reverse {
        args.push("-R");
    }
    let out = from.exec(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "iperf3 {args:?} in {}: {text}{}",
            from.name,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // "sum_received": { ... "bits_per_second": N ... }: the receiver's figure.
    let at = text
        .find("\"sum_received\"")
        .ok_or("iperf3 printed no sum_received")?;
    let rest = &text[at..];
    let at = rest
        .find("\"bits_per_second\":")
        .ok_or("iperf3 printed no bits_per_second")?;
    let number: String = rest[at + "\"bits_per_second\":".len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+'))
        .collect();
    number
        .parse::<f64>()
        .map(|b| b / 1e9)
        .map_err(|e| format!("iperf3 bits_per_second {number:?}: {e}"))
}

/// New connections a second from `from` to the cloud's line server on 443 (allowed in
/// every variant: the default entry `cloud`, or the profile's `bulk`).
fn connect_rate(from: &Ns) -> Result<f64, String> {
    from.run(|| {
        let to = SocketAddr::from((CLOUD_ALLOWED, 443));
        let start = std::time::Instant::now();
        for _ in 0..CONNECTS {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                .map_err(|e| format!("connect {to}: {e}"))?;
            let mut line = Vec::new();
            s.read_to_end(&mut line)
                .map_err(|e| format!("read {to}: {e}"))?;
        }
        Ok(CONNECTS as f64 / start.elapsed().as_secs_f64())
    })
}

/// Gbit/s (upload, download) of one variant: the medians.
#[derive(Clone, Copy)]
struct Figures {
    client: (f64, f64),
    /// New connections a second (the median).
    connects: f64,
    /// The home host's (None: not measured for that variant).
    home: Option<(f64, f64)>,
}

/// Rounds of runs per variant, in turn, so that whatever else the machine does weighs on
/// all alike: the medians. The home host's traffic is measured with the anchor and with
/// our table, plain and loaded.
fn rounds(rig: &Rig, scripts: &[PathBuf]) -> Result<Vec<Figures>, String> {
    let mut runs =
        vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()]; scripts.len()];
    for _ in 0..ROUNDS {
        for (i, path) in scripts.iter().enumerate() {
            rig.router()
                .exec_ok(&["nft", "-f", path.to_str().ok_or("path")?]);
            runs[i][0].push(iperf(rig.client(1), false)?);
            runs[i][1].push(iperf(rig.client(1), true)?);
            runs[i][4].push(connect_rate(rig.client(1))?);
            if i < 3 {
                runs[i][2].push(iperf(rig.home(), false)?);
                runs[i][3].push(iperf(rig.home(), true)?);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    Ok(runs
        .iter_mut()
        .map(|[cu, cd, hu, hd, cn]| Figures {
            client: (median(cu).unwrap_or(0.0), median(cd).unwrap_or(0.0)),
            connects: median(cn).unwrap_or(0.0),
            home: median(hu).zip(median(hd)),
        })
        .collect())
}

/// Segmentation offloads off on every link of the path: each sender cuts its own
/// 1500-byte frames and nobody merges them on the way.
fn real_frames(rig: &Rig) {
    let off = ["tso", "off", "gso", "off", "gro", "off"];
    for ns in [rig.client(1), rig.home()] {
        ns.exec_ok(&[&["ethtool", "-K", HOST_IF][..], &off].concat());
    }
    rig.cloud()
        .exec_ok(&[&["ethtool", "-K", ISP_IF][..], &off].concat());
    let links = rig.router().exec_ok(&["ip", "-o", "link", "show"]);
    for name in links.lines().filter_map(|l| {
        let name = l.split(": ").nth(1)?.split('@').next()?;
        (name != "lo").then_some(name)
    }) {
        // A bridge or veth that has no such feature to turn off says so; that is fine.
        rig.router()
            .exec(&[&["ethtool", "-K", name][..], &off].concat());
    }
}

fn print(title: &str, figures: &[Figures]) {
    let c0 = figures[0].client;
    let h0 = figures[0].home.unwrap_or((1.0, 1.0));
    println!(
        "\n  {title}\n  {:<48} {:>8} {:>8}   {:>9} {:>9}",
        "", "upload", "download", "up/anchor", "down/anch"
    );
    let row = |what: &str, (u, d): (f64, f64), (bu, bd): (f64, f64)| {
        println!(
            "  {what:<48} {u:>8.2} {d:>8.2}   {:>8.2}x {:>8.2}x",
            u / bu,
            d / bd
        );
    };
    row("provisioning client, no table of ours (anchor)", c0, c0);
    row(
        "provisioning client through our table",
        figures[1].client,
        c0,
    );
    row(
        "... 250 clients, 1,000 entries, rates and quotas",
        figures[2].client,
        c0,
    );
    row(
        "... with 8 vendor profiles (MAC-keyed allow set)",
        figures[3].client,
        c0,
    );
    row("home host, no table of ours (anchor)", h0, h0);
    if let Some(h) = figures[1].home {
        row("home host, our table in place", h, h0);
    }
    if let Some(h) = figures[2].home {
        row("home host, our loaded table in place", h, h0);
    }
    println!("\n  new connections from the client, a second ({CONNECTS} one after another)");
    let names = [
        "no table of ours (anchor)",
        "our table",
        "... 250 clients, 1,000 entries, rates, quotas",
        "... with 8 vendor profiles",
    ];
    for (name, f) in names.iter().zip(figures) {
        println!(
            "  {name:<48} {:>8.0}   {:>8.2}x",
            f.connects,
            f.connects / figures[0].connects
        );
    }
}

fn run() -> Result<(), String> {
    let rig = Rig::new(1);
    let _server = rig.spawn(
        rig.cloud(),
        &[
            "iperf3",
            "-s",
            "-B",
            &CLOUD_ALLOWED.to_string(),
            "-p",
            &PORT.to_string(),
        ],
    );
    let client = rig.client(1);
    let with_prefix = format!("{CLIENT_IP}/24");
    client.exec_ok(&["ip", "addr", "add", &with_prefix, "dev", HOST_IF]);
    let gateway = ROUTER_PROV.to_string();
    client.exec_ok(&["ip", "route", "add", "default", "via", &gateway]);
    let nat = rig.dir().join("nat.nft");
    std::fs::write(&nat, router_nat()).map_err(|e| e.to_string())?;
    rig.router()
        .exec_ok(&["nft", "-f", nat.to_str().ok_or("path")?]);

    let mut scripts = Vec::new();
    for (i, v) in [
        Variant::Anchor,
        Variant::Ours,
        Variant::OursLoaded,
        Variant::OursProfiles,
    ]
    .into_iter()
    .enumerate()
    {
        let path = rig.dir().join(format!("variant{i}.nft"));
        std::fs::write(&path, variant_script(&rig, v)?).map_err(|e| e.to_string())?;
        scripts.push(path);
    }
    let big = rounds(&rig, &scripts)?;
    real_frames(&rig);
    let small = rounds(&rig, &scripts)?;
    rig.router()
        .exec_ok(&["nft", "delete", "table", "inet", "provisioner"]);

    println!(
        "\n== Forwarding: TCP through the router, iperf3, {} s per run, median of {ROUNDS} rounds, Gbit/s",
        seconds()
    );
    println!("   (the router's own conntrack + masquerade in every run, as fw4's on OpenWrt)");
    print(
        "64 KB segments (veth with TSO/GSO, as the rig's links come)",
        &big,
    );
    print(
        "1500-byte frames (TSO, GSO and GRO off on the path)",
        &small,
    );
    println!(
        "\n  The iperf3 client and server share the host's CPUs with the forwarding: the ratios,\n  not the absolute figures, are the cost of the table."
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_forward: {e}");
            ExitCode::FAILURE
        }
    }
}
