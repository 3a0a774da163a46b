//! `make bench`: how fast the control plane answers under load (issue 11, item 6). On the
//! netns rig, with 1,000 allow-list entries in the config and a DNS load running (dnsperf
//! from an admitted client, at a fixed rate), p50/p99 of `status`, `clients` and `evict`,
//! over the control socket (a client speaking the JSON line protocol, a connection per
//! request as provisionerctl does) and through ubus (`ubus call` -> the kit's ubusd -> the
//! daemon's own ubus object), at 10 and at 250 admitted clients; the 250/10 ratios
//! and whether the issue's bar is met: p99 under 20 ms each, no growth beyond 2x.
//!
//! The clients: two are real (rig namespaces that took a lease by DHCP: one runs dnsperf,
//! the other is evicted and takes a lease again between evicts, so the count stays put);
//! the rest are put in the kernel's sets (admitted, with a lease in the pool) while the
//! daemon is down, and the daemon takes them over when it starts (`Provisioner::restore`,
//! as after a restart): admitted clients in its state like any other, without a radio or
//! traffic of their own.
//!
//! Not a test: it prints figures and exits non-zero only if it could not measure. Needs
//! root, dnsperf and the OpenWrt kit (ubusd, rpcd, ubus). `BENCH_SAMPLES` sets the requests
//! per figure (default 300; evicts too, each after a DHCP); `BENCH_REQUESTS` (e.g.
//! `status,clients`) measures only those, for profiling one.

#[path = "../tests/bus/mod.rs"]
mod bus;
#[path = "../tests/kit/mod.rs"]
mod kit;
#[path = "../tests/rig/mod.rs"]
mod rig;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bus::Bus;
use rig::*;

const ALLOW_ENTRIES: usize = 1000;
/// dnsperf's rate (`-Q`): a busy setup network, well under the resolver's capacity.
const DNS_QPS: &str = "2000";
const SIZES: [usize; 2] = [10, 250];
/// Rig clients with a real lease: 1 runs the DNS load, 2 is the one evicted.
const REAL: usize = 2;
const BAR_P99: Duration = Duration::from_millis(20);
const BAR_GROWTH: f64 = 2.0;

fn config() -> String {
    let mut c = format!(
        "config network 'network'
\toption interface '{PROV_IF}'
\toption wan '{WAN_IF}'
\toption subnet '{PROV_NET}/{PROV_PREFIX}'
\toption router '{ROUTER_PROV}'

config window 'window'
\toption mode 'always'

config dhcp 'dhcp'
\toption lease_time '1h'

config limits 'limits'
\toption max_clients '252'
\toption session '1d'

config threat 'threat'
\t# Client 2 takes a lease again after each of the evicts: not a flood.
\toption dhcp_flood '10000'

config dns 'dns'
\tlist upstream '{CLOUD_DNS}'
\toption client_qps '10000'
\toption total_qps '100000'
"
    );
    for i in 0..ALLOW_ENTRIES {
        let _ = write!(
            c,
            "\nconfig allow 'e{i}'\n\tlist domain 'n{i}.iot.acme.example'\n\tlist port '443'\n"
        );
    }
    c
}

/// One request line over a fresh connection; the reply line.
fn socket_request(rig: &Rig, line: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(rig.control_socket()).map_err(|e| e.to_string())?;
    s.write_all(line.as_bytes())
        .and_then(|_| s.write_all(b"\n"))
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

fn is_error(reply: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(reply)
        .map(|v| v.get("error").is_some())
        .unwrap_or(true)
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Socket,
    Ubus,
}

/// One request over `path`: its reply (a JSON object) and how long it took.
fn ask(rig: &Rig, bus: &Bus, path: Path, request: &str, mac: &str) -> (String, Duration) {
    let t = Instant::now();
    let reply = match path {
        Path::Socket => {
            let line = match request {
                "evict" => format!(r#"{{"version":1,"request":{{"evict":{{"mac":"{mac}"}}}}}}"#),
                r => format!(r#"{{"version":1,"request":"{r}"}}"#),
            };
            socket_request(rig, &line).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
        }
        Path::Ubus => {
            let args = match request {
                "evict" => format!(r#"{{"mac":"{mac}"}}"#),
                _ => "{}".to_owned(),
            };
            let out = bus.ubus(&["call", "provisioner", request, &args]);
            match out.status.success() {
                true => String::from_utf8_lossy(&out.stdout).into_owned(),
                false => format!(
                    r#"{{"error":"ubus call: {} ({})"}}"#,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    out.status
                ),
            }
        }
    };
    (reply, t.elapsed())
}

#[derive(Default)]
struct Figure {
    p50: Option<Duration>,
    p99: Option<Duration>,
    note: Option<String>,
}

fn percentiles(mut v: Vec<Duration>) -> Figure {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Figure {
        p50: Some(at(0.50)),
        p99: Some(at(0.99)),
        note: None,
    }
}

fn measure(
    rig: &Rig,
    bus: &Bus,
    path: Path,
    request: &str,
    samples: usize,
) -> Result<Figure, String> {
    let evicted = mac_str(Rig::client_mac(2));
    let mut times = Vec::with_capacity(samples);
    // As many evicts as other requests (each after a DHCP): a p99 of fewer would be the
    // worst one alone.
    let n = samples;
    for i in 0..n {
        if request == "evict" {
            rig.dhcp(2)
                .map_err(|e| format!("client 2 back by DHCP: {e}"))?;
        }
        let (reply, took) = ask(rig, bus, path, request, &evicted);
        if is_error(&reply) {
            if request == "clients" && i == 0 {
                return Ok(Figure {
                    note: Some("n/a (daemon does not know clients)".into()),
                    ..Figure::default()
                });
            }
            return Err(format!("{request}: {}", reply.trim()));
        }
        times.push(took);
    }
    if request == "evict" {
        rig.dhcp(2)
            .map_err(|e| format!("client 2 back by DHCP: {e}"))?;
    }
    Ok(percentiles(times))
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The `k`th client put in the kernel's sets: 02:00:00:01:HH:LL, at the top of the pool
/// downwards (the real clients took the bottom).
fn fake(k: usize) -> (String, Ipv4Addr) {
    (
        format!("02:00:00:01:{:02x}:{:02x}", k >> 8, k & 0xff),
        Ipv4Addr::new(192, 168, 250, (253 - k) as u8),
    )
}

/// Puts fake clients `from..to` into the kernel's sets (the daemon must be down), as
/// admitted at `since` (the daemon's clock, read from a real client's element).
fn add_fakes(rig: &Rig, from: usize, to: usize, since: &str) -> Result<(), String> {
    let mut script = String::new();
    for k in from..to {
        let (mac, ip) = fake(k);
        let _ = writeln!(
            script,
            "add element inet provisioner clients {{ {mac} timeout 1d comment \"since={since}\" }}\n\
             add element inet provisioner leases {{ {mac} . {ip} timeout 1h }}\n\
             add element arp provisioner leases {{ {mac} . {ip} timeout 1h }}"
        );
    }
    let path = rig.dir().join("fakes.nft");
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    let out = rig
        .router()
        .exec(&["nft", "-f", path.to_str().expect("utf-8 path")]);
    if !out.status.success() {
        return Err(format!(
            "nft -f fakes: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}", d.as_secs_f64() * 1e3))
        .unwrap_or_else(|| "-".into())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_control: {e}");
            ExitCode::FAILURE
        }
    }
}

/// VmRSS and VmHWM of `pid`, KiB.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn run() -> Result<(), String> {
    if !kit::source().join("build.sh").exists() {
        return Err("needs the OpenWrt kit (../shared/openwrt or $OPENWRT_KIT)".into());
    }
    let samples: usize = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    println!(
        "== control-plane latency: {ALLOW_ENTRIES} allow-list entries, dnsperf at {DNS_QPS} qps from a client, {samples} requests per figure (evicts too)",
    );
    let rig = Rig::new(REAL);
    let cfg = config();
    for i in 0..ALLOW_ENTRIES {
        rig.dns_zone(
            &format!("n{i}.iot.acme.example"),
            FakeAnswer {
                a: vec![Ipv4Addr::new(11, 2, (i / 250) as u8, (i % 250 + 1) as u8)],
                ttl: 60,
                ..FakeAnswer::default()
            },
        );
    }
    let queries = rig.dir().join("queries.txt");
    std::fs::write(
        &queries,
        (0..ALLOW_ENTRIES)
            .map(|i| format!("n{i}.iot.acme.example A\n"))
            .collect::<String>(),
    )
    .map_err(|e| e.to_string())?;

    let bus_dir = rig.dir().join("ubus");
    let socket = Bus::socket(&bus_dir);
    let mut daemon = rig.start_daemon_in(None, &cfg, &["--ubus", socket.to_str().unwrap()]);
    for c in 1..=REAL {
        rig.dhcp(c).map_err(|e| format!("client {c}: {e}"))?;
    }
    // The daemon's clock in a real client's element, for the fakes' admission time.
    let set = rig
        .router()
        .exec_ok(&["nft", "list", "set", "inet", "provisioner", "clients"]);
    let since = set
        .split("comment \"since=")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or_else(|| format!("no since= comment in the clients set:\n{set}"))?
        .to_owned();
    let bus = Bus::start(&bus_dir);
    bus.wait_for("provisioner", Duration::from_secs(10));
    let dnsload = rig.spawn(
        rig.client(1),
        &[
            "dnsperf",
            "-s",
            &ROUTER_PROV.to_string(),
            "-d",
            queries.to_str().expect("utf-8 path"),
            "-c",
            "1",
            "-q",
            "16",
            "-Q",
            DNS_QPS,
            "-l",
            "3600",
        ],
    );

    let all = ["status", "clients", "evict"];
    let only = std::env::var("BENCH_REQUESTS").unwrap_or_default();
    let requests: Vec<&str> = all
        .into_iter()
        .filter(|r| only.is_empty() || only.split(',').any(|o| o == *r))
        .collect();
    let paths = [(Path::Socket, "socket"), (Path::Ubus, "ubus")];
    // [size][path][request]
    let mut figures: Vec<Vec<Vec<Figure>>> = Vec::new();
    let mut fakes = 0;
    let mut rss_lines = Vec::new();
    for size in SIZES {
        // Down, the fakes in, up again: the daemon takes them over.
        daemon.kill9();
        add_fakes(&rig, fakes, size - REAL, &since)?;
        fakes = size - REAL;
        daemon = rig.start_daemon_in(None, &cfg, &["--ubus", socket.to_str().unwrap()]);
        bus.wait_for("provisioner", Duration::from_secs(10));
        let have = rig.status().clients.len();
        if have != size {
            return Err(format!(
                "{have} clients after the restart, not {size}: {}",
                daemon.lines().join("\n")
            ));
        }
        let mut per_path = Vec::new();
        for (path, _) in paths {
            let mut per_request = Vec::new();
            for &r in &requests {
                per_request.push(measure(&rig, &bus, path, r, samples)?);
            }
            per_path.push(per_request);
        }
        let status = rig.status();
        let have = status.clients.len();
        if have != size {
            return Err(format!("{have} clients after measuring, not {size}"));
        }
        if let Some((rss, hwm)) = memory(daemon.pid()) {
            rss_lines.push(format!(
                "daemon memory with {size} clients admitted and {} learned addresses: VmRSS {rss} KiB, peak (VmHWM) {hwm} KiB",
                status.learned
            ));
        }
        figures.push(per_path);
    }
    drop(dnsload);

    println!(
        "\n{:<7} {:<8} {:>9} {:>9} {:>10} {:>10} {:>11}  bar (p99 < 20 ms, ratio <= 2x)",
        "path", "request", "p50@10", "p99@10", "p50@250", "p99@250", "p99 250/10"
    );
    for (pi, (_, pname)) in paths.iter().enumerate() {
        for (ri, r) in requests.iter().enumerate() {
            let (a, b) = (&figures[0][pi][ri], &figures[1][pi][ri]);
            if let Some(note) = a.note.as_ref().or(b.note.as_ref()) {
                println!("{pname:<7} {r:<8} {note}");
                continue;
            }
            let (pa, pb) = (a.p99.unwrap(), b.p99.unwrap());
            let ratio = pb.as_secs_f64() / pa.as_secs_f64();
            let under = pa < BAR_P99 && pb < BAR_P99;
            let flat = ratio <= BAR_GROWTH;
            println!(
                "{pname:<7} {r:<8} {:>9} {:>9} {:>10} {:>10} {:>10.2}x  {}",
                ms(a.p50),
                ms(a.p99),
                ms(b.p50),
                ms(b.p99),
                ratio,
                match (under, flat) {
                    (true, true) => "met".to_owned(),
                    (u, f) => format!(
                        "NOT met:{}{}",
                        if u { "" } else { " p99 over 20 ms" },
                        if f { "" } else { " grows beyond 2x" }
                    ),
                }
            );
        }
    }
    println!(
        "  (milliseconds; evict: the round trip of the order, each after the client took a lease again)"
    );
    for l in rss_lines {
        println!("{l} (bar: 10 MB)");
    }
    Ok(())
}
