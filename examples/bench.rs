//! `make bench`: our DNS allow-list resolver against an anchor, dnsmasq with `--nftset`,
//! under dnsperf, side by side from one run on the netns rig (the router, provisioning
//! clients, and the rig's fake upstream resolver in the cloud). Prints queries per second,
//! latency, loss, memory and CPU per run, the ratios, and whether the bars are met.
//!
//! Not a test: nothing here passes or fails on the figures; it exits non-zero only if it
//! could not measure. Needs root, dnsperf and dnsmasq (`make deps`). `make bench` runs it
//! with the release daemon (`PROVISIONER_BIN`). `BENCH_SECONDS` sets the length of each
//! measured run (default 10), `BENCH_INFLIGHT` the queries in flight (default 64).

#[path = "../tests/rig/mod.rs"]
mod rig;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use nix::sys::signal::Signal;
use rig::*;

/// Distinct names per query file; each allowed name has its own address, so a resolver that
/// writes the kernel on every answer really writes one element per answer.
const NAMES: usize = 1000;
/// Provisioning clients asking at once, one dnsperf each. Ours limits every client to at
/// most 10 000 queries per second (`client_qps` cannot be set higher) and one client alone
/// drives more than that: the surplus would be REFUSED by the limiter, cheaply, and counted
/// as answers. Spread over this many clients each stays below the limit.
const CLIENTS: usize = 8;
/// dnsperf `-c` (sockets) per client.
const DNSPERF_SOCKETS: &str = "1";
/// Queries in flight over all clients (`BENCH_INFLIGHT` overrides). Both resolvers answer
/// every one at 64: above that ours drops some (see the report it prints), and above 150
/// dnsmasq REFUSES (cheaply) instead of forwarding (its default `--dns-forward-max`).
const IN_FLIGHT: usize = 64;
/// Fewer outstanding for the warm-up pass, so that no name misses the cache afterwards.
const WARMUP_OUTSTANDING: usize = 4;
/// The set dnsmasq fills, in our table (which outlives our daemon).
const DNSMASQ_SET: &str = "bench4";
/// What counts as "close to the bar": runs of seconds on a shared machine are noisy.
const NOISE: f64 = 0.05;

/// dnsperf `-q` per client.
fn per_client() -> usize {
    let total = std::env::var("BENCH_INFLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(IN_FLIGHT);
    (total / CLIENTS).max(1)
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The upstream's answer for allowed name `i`: 11.2.0.1 .. 11.2.3.250.
fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(11, 2, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Like tests/dns.rs `dns_config`, with the rate limiter as far out of the way as the config
/// allows and a lease that outlives the whole bench (the bindings must stay while dnsmasq
/// runs, too).
fn daemon_config(extra: &str) -> String {
    format!(
        "config network 'network'
\toption interface '{PROV_IF}'
\toption wan '{WAN_IF}'
\toption subnet '{PROV_NET}/{PROV_PREFIX}'

config window 'window'
\toption mode 'always'

config dhcp 'dhcp'
\toption lease_time '1h'

config limits 'limits'
\toption max_clients '{CLIENTS}'

config dns 'dns'
\tlist upstream '{CLOUD_DNS}'
\toption client_qps '10000'
\toption total_qps '1000000'
{extra}
config allow 'acme'
\tlist domain '*.iot.acme.example'
\tlist port '443'
"
    )
}

// ---- dnsperf ----------------------------------------------------------------------------

/// What dnsperf reported for one run (summed over the clients).
#[derive(Clone, Debug, Default)]
struct Perf {
    qps: f64,
    /// Average latency, seconds (weighted by answers over the clients).
    latency: f64,
    completed: u64,
    lost: u64,
    /// From dnsperf's `Response codes:` line.
    rcodes: Vec<(String, u64)>,
    /// dnsperf's warnings (`[Timeout] ...`, `[Warning] ...`), at most a few.
    warnings: Vec<String>,
}

impl Perf {
    fn loss_pct(&self) -> f64 {
        let sent = self.completed + self.lost;
        if sent == 0 {
            0.0
        } else {
            100.0 * self.lost as f64 / sent as f64
        }
    }

    fn rcode(&self, code: &str) -> u64 {
        self.rcodes
            .iter()
            .find(|(c, _)| c == code)
            .map_or(0, |(_, n)| *n)
    }

    fn rcodes(&self) -> String {
        let total: u64 = self.rcodes.iter().map(|(_, n)| n).sum();
        self.rcodes
            .iter()
            .map(|(c, n)| format!("{c} {:.1}%", 100.0 * *n as f64 / total.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn add(&mut self, other: Perf) {
        let answers = self.completed + other.completed;
        if answers > 0 {
            self.latency = (self.latency * self.completed as f64
                + other.latency * other.completed as f64)
                / answers as f64;
        }
        self.qps += other.qps;
        self.completed = answers;
        self.lost += other.lost;
        self.warnings.extend(other.warnings);
        for (code, n) in other.rcodes {
            match self.rcodes.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => self.rcodes.push((code, n)),
            }
        }
    }
}

/// The text after `key` on dnsperf's statistics line starting with it.
fn stat<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .map(str::trim)
}

fn first_number<T: std::str::FromStr>(text: Option<&str>) -> Option<T> {
    text?.split_whitespace().next()?.parse().ok()
}

/// `NOERROR 119979 (25.15%), REFUSED 357055 (74.85%)`.
fn parse_rcodes(text: &str) -> Vec<(String, u64)> {
    text.split(',')
        .filter_map(|part| {
            let mut words = part.split_whitespace();
            let code = words.next()?.to_string();
            Some((code, words.next()?.parse().ok()?))
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Length {
    /// `-n 1`: once through the file (a warm-up).
    OnePass,
    /// `-l N`.
    Seconds(u64),
}

/// Runs one dnsperf in each of `nss` at once against `server` with the queries in `file`,
/// each with `outstanding` queries in flight, and sums up what they report.
fn dnsperf(
    rig: &Rig,
    nss: &[&Ns],
    server: Ipv4Addr,
    file: &Path,
    length: Length,
    outstanding: usize,
) -> Result<Perf, String> {
    let server = server.to_string();
    let file = file.to_str().expect("utf-8 rig dir");
    let limit = match length {
        Length::OnePass => 30,
        Length::Seconds(s) => s,
    };
    let (limit_arg, outstanding) = (limit.to_string(), outstanding.to_string());
    let mut args = vec![
        "dnsperf",
        "-s",
        &server,
        "-d",
        file,
        "-c",
        DNSPERF_SOCKETS,
        "-q",
        &outstanding,
        "-l",
        &limit_arg,
        "-t",
        "2",
    ];
    if matches!(length, Length::OnePass) {
        args.extend(["-n", "1"]);
    }
    let mut procs: Vec<Proc> = nss.iter().map(|ns| rig.spawn(ns, &args)).collect();
    let mut total = Perf::default();
    for p in &mut procs {
        if p.wait(Duration::from_secs(limit + 20)).is_none() {
            return Err(format!("dnsperf did not finish: {}", p.lines().join("\n")));
        }
        // The last statistics line: everything before it has been read.
        p.wait_line("Latency StdDev", Duration::from_secs(5))?;
        let lines = p.lines();
        let perf = Perf {
            qps: first_number(stat(&lines, "Queries per second:")).unwrap_or(0.0),
            latency: first_number(stat(&lines, "Average Latency (s):")).unwrap_or(0.0),
            completed: first_number(stat(&lines, "Queries completed:")).unwrap_or(0),
            lost: first_number(stat(&lines, "Queries lost:")).unwrap_or(0),
            rcodes: parse_rcodes(stat(&lines, "Response codes:").unwrap_or("")),
            warnings: lines
                .iter()
                .filter(|l| l.starts_with('[') && !l.starts_with("[Status]"))
                .take(5)
                .cloned()
                .collect(),
        };
        if perf.completed == 0 {
            return Err(format!("dnsperf got no answers:\n{}", lines.join("\n")));
        }
        total.add(perf);
    }
    Ok(total)
}

// ---- Counters ---------------------------------------------------------------------------

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (user, system) CPU seconds of `pid` ("self" for this process) from /proc/<pid>/stat.
fn proc_cpu(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it may not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let tick = clock_ticks();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / tick, stime / tick))
}

/// CPU seconds of this process's reaped children (the dnsperfs, once waited for).
fn children_cpu() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// The whole machine from /proc/stat: (busy, softirq, total) in ticks over all CPUs.
fn host_cpu() -> (f64, f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0.0, 0.0, 0.0);
    }
    // user nice system idle iowait irq softirq steal
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    (busy, v[6], busy + v[3] + v[4])
}

/// UDP datagrams dropped for a full receive buffer in `ns` (RcvbufErrors).
fn udp_drops(ns: &Ns) -> u64 {
    let snmp = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// VmRSS and VmHWM of `pid`, KiB.
fn proc_mem(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Everything counted over one run.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    resolver: Option<(f64, f64)>,
    this: f64,
    children: f64,
    host: (f64, f64, f64),
    drops: u64,
    log_lines: usize,
}

fn snapshot(rig: &Rig, resolver: Option<&Proc>) -> Snapshot {
    let mut drops = udp_drops(rig.router());
    for i in 1..=rig.clients() {
        drops += udp_drops(rig.client(i));
    }
    Snapshot {
        at: Instant::now(),
        resolver: resolver.and_then(|p| proc_cpu(&p.pid().to_string())),
        this: proc_cpu("self").map_or(0.0, |(u, s)| u + s),
        children: children_cpu(),
        host: host_cpu(),
        drops,
        log_lines: resolver.map_or(0, |p| p.lines().len()),
    }
}

/// One measured run.
struct Row {
    label: String,
    perf: Perf,
    wall: f64,
    /// The resolver's (user, system) CPU seconds; `None` for the upstream alone.
    resolver_cpu: Option<(f64, f64)>,
    /// This process: the rig's fake upstream, and the reader of the resolver's output (its
    /// other threads sleep meanwhile).
    rig_cpu: f64,
    dnsperf_cpu: f64,
    /// Busy and softirq share of the whole machine (all CPUs), 0..1.
    host_busy: f64,
    host_softirq: f64,
    /// UDP datagrams dropped at full receive buffers (router and clients).
    drops: u64,
    /// Lines the resolver logged during the run.
    log_lines: usize,
    /// VmRSS and VmHWM of the resolver after the run, KiB.
    mem: Option<(u64, u64)>,
}

impl Row {
    fn pct(&self, cpu_seconds: f64) -> f64 {
        100.0 * cpu_seconds / self.wall.max(1e-9)
    }

    /// The resolver's CPU microseconds per answered query.
    fn us_per_answer(&self) -> Option<f64> {
        let (u, s) = self.resolver_cpu?;
        (self.perf.completed > 0).then(|| 1e6 * (u + s) / self.perf.completed as f64)
    }
}

/// Where a run's queries come from and go to.
struct Load<'a> {
    nss: Vec<&'a Ns>,
    server: Ipv4Addr,
    outstanding: usize,
}

fn clients_load(rig: &Rig) -> Load<'_> {
    Load {
        nss: (1..=rig.clients()).map(|i| rig.client(i)).collect(),
        server: ROUTER_PROV,
        outstanding: per_client(),
    }
}

/// One measured run, with CPU, drops and memory.
fn measure(
    rig: &Rig,
    label: &str,
    file: &Path,
    load: &Load,
    resolver: Option<&Proc>,
    secs: u64,
) -> Result<Row, String> {
    let a = snapshot(rig, resolver);
    let perf = dnsperf(
        rig,
        &load.nss,
        load.server,
        file,
        Length::Seconds(secs),
        load.outstanding,
    )?;
    let b = snapshot(rig, resolver);
    let ticks = (b.host.2 - a.host.2).max(1.0);
    let row = Row {
        label: label.to_string(),
        perf,
        wall: (b.at - a.at).as_secs_f64(),
        resolver_cpu: a
            .resolver
            .zip(b.resolver)
            .map(|((u0, s0), (u1, s1))| (u1 - u0, s1 - s0)),
        rig_cpu: b.this - a.this,
        dnsperf_cpu: b.children - a.children,
        host_busy: (b.host.0 - a.host.0) / ticks,
        host_softirq: (b.host.1 - a.host.1) / ticks,
        drops: b.drops - a.drops,
        log_lines: b.log_lines - a.log_lines,
        mem: resolver.and_then(|p| proc_mem(p.pid())),
    };
    println!(
        "   {label}: {} qps, {:.2} ms, lost {}, {}",
        fmt_int(row.perf.qps),
        row.perf.latency * 1e3,
        row.perf.lost,
        row.perf.rcodes()
    );
    for w in row.perf.warnings.iter().take(5) {
        println!("      dnsperf: {w}");
    }
    Ok(row)
}

/// A pass through `file` from every client at once, so the resolver's cache (and, for
/// ours, every client's learned elements) is hot.
fn warm_up(rig: &Rig, file: &Path) -> Result<Perf, String> {
    let load = clients_load(rig);
    dnsperf(
        rig,
        &load.nss,
        load.server,
        file,
        Length::OnePass,
        WARMUP_OUTSTANDING,
    )
}

// ---- Sets -----------------------------------------------------------------------------

/// How many elements a set in our table holds, and the least and most time they have left.
struct SetInfo {
    elements: usize,
    expires: Option<(f64, f64)>,
}

impl SetInfo {
    /// Whether every element was (re)written within the last `secs`, given that a write
    /// gives it `timeout` seconds.
    fn all_written_within(&self, timeout: f64, secs: f64) -> bool {
        self.expires.is_some_and(|(lo, _)| lo >= timeout - secs)
    }
}

impl std::fmt::Display for SetInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} elements", self.elements)?;
        if let Some((lo, hi)) = self.expires {
            write!(f, ", expiring in {lo:.0}s..{hi:.0}s")?;
        }
        Ok(())
    }
}

fn set_info(rig: &Rig, name: &str) -> SetInfo {
    let text = rig
        .router()
        .exec_ok(&["nft", "list", "set", "inet", "provisioner", name]);
    let Some(body) = text
        .split_once("elements = {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(body, _)| body)
    else {
        return SetInfo {
            elements: 0,
            expires: None,
        };
    };
    let elements: Vec<&str> = body.split(',').filter(|e| !e.trim().is_empty()).collect();
    let left: Vec<f64> = elements
        .iter()
        .filter_map(|e| {
            let (_, rest) = e.split_once("expires ")?;
            nft_duration(rest.split_whitespace().next()?)
        })
        .collect();
    let expires = (!left.is_empty()).then(|| {
        let lo = left.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = left.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    });
    SetInfo {
        elements: elements.len(),
        expires,
    }
}

/// nft's durations: `59s720ms`, `2m59s`, `1h2m`, `1d`.
fn nft_duration(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "d" => 86400.0,
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[unit_len..];
    }
    Some(total)
}

// ---- The resolvers ------------------------------------------------------------------------

fn stop(p: &mut Proc, what: &str) {
    p.signal(Signal::SIGTERM);
    if p.wait(Duration::from_secs(10)).is_none() {
        println!("   {what} did not exit on SIGTERM within 10s; killed");
        p.kill9();
    }
}

fn ask(rig: &Rig, name: &str, timeout: Duration) -> Result<DnsReply, DnsError> {
    dns_query(
        rig.client(1),
        sa(ROUTER_PROV, 53),
        name,
        RecordType::A,
        false,
        timeout,
    )
}

fn dnsmasq(rig: &Rig, cache_size: usize) -> Result<Proc, String> {
    let cache = format!("--cache-size={cache_size}");
    let listen = format!("--listen-address={ROUTER_PROV}");
    let server = format!("--server=/iot.acme.example/{CLOUD_DNS}");
    let nftset = format!("--nftset=/iot.acme.example/4#inet#provisioner#{DNSMASQ_SET}");
    let p = rig.spawn(
        rig.router(),
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-hosts",
            "--no-resolv",
            &listen,
            "--bind-interfaces",
            "--port=53",
            &server,
            &nftset,
            &cache,
        ],
    );
    // Up when it answers an allowed name from a client (through our table's redirect).
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        ask(rig, "n0.iot.acme.example", Duration::from_millis(300))
            .is_ok_and(|r| r.rcode == "NoError" && r.a == [address(0)])
    });
    if !up {
        return Err(format!(
            "dnsmasq does not answer:\n{}",
            p.lines().join("\n")
        ));
    }
    Ok(p)
}

// ---- Report -------------------------------------------------------------------------------

fn fmt_int(q: f64) -> String {
    let s = (q.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn tables(rows: &[&Row]) -> String {
    let mut t = String::new();
    let w = rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
    let _ = writeln!(
        t,
        "{:<w$} {:>8} {:>9} {:>12} {:>6} {:>9}  rcodes",
        "run", "qps", "avg lat", "lost", "drops", "log lines"
    );
    for r in rows {
        let p = &r.perf;
        let _ = writeln!(
            t,
            "{:<w$} {:>8} {:>6.2} ms {:>12} {:>6} {:>9}  {}",
            r.label,
            fmt_int(p.qps),
            p.latency * 1e3,
            format!("{} ({:.2}%)", p.lost, p.loss_pct()),
            r.drops,
            r.resolver_cpu
                .map_or("-".into(), |_| fmt_int(r.log_lines as f64)),
            p.rcodes(),
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "{:<w$} {:>15} {:>15} {:>11} {:>9} {:>8} {:>18}",
        "run", "RSS / peak KiB", "resolver CPU", "CPU us per", "rig", "dnsperf", "host CPUs busy"
    );
    let _ = writeln!(
        t,
        "{:<w$} {:>15} {:>15} {:>11} {:>9} {:>8} {:>18}",
        "", "", "(of it sys)", "answer", "CPU", "CPU", "(of it softirq)"
    );
    for r in rows {
        let mem = r
            .mem
            .map_or("-".into(), |(rss, hwm)| format!("{rss} / {hwm}"));
        let cpu = r.resolver_cpu.map_or("-".into(), |(u, s)| {
            format!("{:.0}% ({:.0}%)", r.pct(u + s), r.pct(s))
        });
        let us = r.us_per_answer().map_or("-".into(), |u| format!("{u:.1}"));
        let _ = writeln!(
            t,
            "{:<w$} {:>15} {:>15} {:>11} {:>8.0}% {:>7.0}% {:>18}",
            r.label,
            mem,
            cpu,
            us,
            r.pct(r.rig_cpu),
            r.pct(r.dnsperf_cpu),
            format!(
                "{:.0}% ({:.0}%)",
                r.host_busy * 100.0,
                r.host_softirq * 100.0
            ),
        );
    }
    t
}

fn ratio_line(what: &str, ours: &Row, theirs: &Row) -> String {
    let qps = ours.perf.qps / theirs.perf.qps.max(1e-9);
    let lat = ours.perf.latency / theirs.perf.latency.max(1e-9);
    let rss = match (ours.mem, theirs.mem) {
        (Some((a, _)), Some((b, _))) if b > 0 => format!("{:.2}x", a as f64 / b as f64),
        _ => "-".into(),
    };
    let cpu = match (ours.us_per_answer(), theirs.us_per_answer()) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    format!("  {what:<52} qps {qps:>5.2}x  latency {lat:>5.2}x  CPU/answer {cpu:>5}  RSS {rss:>5}")
}

fn bar(what: &str, ours: &Row, theirs: &Row, need: f64) -> (bool, String) {
    let r = ours.perf.qps / theirs.perf.qps.max(1e-9);
    let met = r >= need;
    let note = if (r - need).abs() <= need * NOISE {
        " (within run-to-run noise of the bar)"
    } else {
        ""
    };
    let verdict = if met { "MET    " } else { "NOT MET" };
    (
        met,
        format!("  [{verdict}] {what}: {r:.2}x, bar >= {need}x{note}"),
    )
}

// ---- Cleanup on abort ---------------------------------------------------------------------

/// The release profile aborts on panic, so the rig's `Drop` would not run: remove its
/// namespaces (and what runs in them) and temp dirs from the panic hook instead. Processes
/// the rig spawned die with this process anyway (PDEATHSIG).
fn cleanup_on_abort() {
    if !cfg!(panic = "abort") {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let me = std::process::id();
        let prefix = format!("pv{me}-");
        let ours = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|n| n.starts_with(&prefix))
                        .collect()
                })
                .unwrap_or_default()
        };
        for ns in ours(Path::new("/run/netns")) {
            if let Ok(out) = std::process::Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>()
                        && pid as u32 != me
                    {
                        // SAFETY: kill(2) of a process in a namespace this run created.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &ns])
                .output();
        }
        let tmp = std::env::temp_dir();
        for dir in ours(&tmp) {
            let _ = std::fs::remove_dir_all(tmp.join(dir));
        }
        eprintln!("bench: aborted; removed this run's namespaces");
    }));
}

// ---- Main ---------------------------------------------------------------------------------

fn main() -> ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench: needs root (network namespaces and nftables)");
        return ExitCode::FAILURE;
    }
    for tool in ["dnsperf", "dnsmasq", "nft"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("bench: {tool} is missing (make deps installs it)");
            return ExitCode::FAILURE;
        }
    }
    cleanup_on_abort();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Element lifetimes, seconds: ours with the default ttl_grace (TTL 60 + 2m), ours with
/// ttl_grace 0, and dnsmasq's set (its timeout).
const OURS_TIMEOUT: f64 = 180.0;
const OURS_TIMEOUT_NO_GRACE: f64 = 60.0;
const DNSMASQ_TIMEOUT: f64 = 60.0;

/// What the runs observed besides the figures.
struct Seen {
    learned1: SetInfo,
    learned2: SetInfo,
    set4_warm: SetInfo,
    set4: SetInfo,
    set5_warm: SetInfo,
    set5: SetInfo,
    ours_rcode: String,
    dnsmasq_rcode: String,
    ours_forwarded: usize,
    dnsmasq_forwarded: usize,
}

fn run() -> Result<(), String> {
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(10);
    let started = Instant::now();
    let bin = daemon_bin();
    if !bin.exists() {
        return Err(format!(
            "no daemon binary at {} (cargo build --release, or set PROVISIONER_BIN)",
            bin.display()
        ));
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("== DNS bench: provisionerd vs dnsmasq --nftset under dnsperf, one netns rig");
    println!("   daemon: {}", bin.display());
    println!(
        "   {CLIENTS} clients, one dnsperf each (-c {DNSPERF_SOCKETS} -q {}: {} queries in flight in all), {secs}s per run, {cpus} CPUs shared by everything",
        per_client(),
        CLIENTS * per_client()
    );
    println!(
        "   ({CLIENTS} clients, not 1: ours limits each client to client_qps, at most 10 000/s, which one client exceeds)"
    );
    let rig = Rig::new(CLIENTS);
    let allowed = rig.dir().join("allowed.txt");
    let refused = rig.dir().join("refused.txt");
    let lines = |suffix: &str| -> String {
        (0..NAMES)
            .map(|i| format!("n{i}.{suffix} A\n"))
            .collect::<String>()
    };
    std::fs::write(&allowed, lines("iot.acme.example")).map_err(|e| e.to_string())?;
    std::fs::write(&refused, lines("blocked.example")).map_err(|e| e.to_string())?;
    for i in 0..NAMES {
        rig.dns_zone(
            &format!("n{i}.iot.acme.example"),
            FakeAnswer {
                a: vec![address(i)],
                ttl: DNS_TTL,
                ..FakeAnswer::default()
            },
        );
    }
    println!(
        "   queries: {NAMES} allowed names n<i>.iot.acme.example (each its own address, TTL {DNS_TTL}s), {NAMES} refused names n<i>.blocked.example"
    );
    let load = clients_load(&rig);
    let mut rows: Vec<Row> = Vec::new();

    // 0: how fast the fake upstream (a thread of this process) answers on its own.
    println!("\n== 0: the rig's fake upstream alone (one dnsperf in the router namespace)");
    let upstream_load = Load {
        nss: vec![rig.router()],
        server: CLOUD_DNS,
        outstanding: CLIENTS * per_client(),
    };
    rows.push(measure(
        &rig,
        "0  fake upstream alone",
        &allowed,
        &upstream_load,
        None,
        (secs / 2).max(2),
    )?);

    // 1-3: ours.
    println!("\n== 1: provisionerd, allowed names (default ttl_grace 2m)");
    let mut daemon = rig.start_daemon(&daemon_config(""));
    for i in 1..=CLIENTS {
        rig.dhcp(i)?;
    }
    warm_up(&rig, &allowed)?;
    println!(
        "   {CLIENTS} clients leased; after the warm-up: learned4 {}",
        set_info(&rig, "learned4")
    );
    rows.push(measure(
        &rig,
        "1  ours, allowed",
        &allowed,
        &load,
        Some(&daemon),
        secs,
    )?);
    let learned1 = set_info(&rig, "learned4");
    println!("   after the run:     learned4 {learned1}");

    // A restarted daemon reads the learned elements back, and those from run 1 (3 minutes)
    // outlive every answer with ttl_grace 0 (1 minute): nothing would be written. Emptied,
    // the warm-up writes them with 1 minute, and from then on every answer rewrites one.
    println!(
        "\n== 2: provisionerd restarted with ttl_grace '0', learned4 emptied: every answer writes the set"
    );
    stop(&mut daemon, "provisionerd");
    rig.router()
        .exec_ok(&["nft", "flush", "set", "inet", "provisioner", "learned4"]);
    daemon = rig.start_daemon(&daemon_config("\toption ttl_grace '0'\n"));
    warm_up(&rig, &allowed)?;
    rows.push(measure(
        &rig,
        "2  ours, allowed, ttl_grace 0",
        &allowed,
        &load,
        Some(&daemon),
        secs,
    )?);
    let learned2 = set_info(&rig, "learned4");
    println!("   after the run:     learned4 {learned2}");

    println!("\n== 3: provisionerd, refused names");
    let before = rig.dns_names_seen().len();
    let ours_rcode = ask(&rig, "n0.blocked.example", Duration::from_secs(2))
        .map_err(|e| format!("provisionerd, refused name: {e:?}"))?
        .rcode;
    println!("   provisionerd answers n0.blocked.example with {ours_rcode}");
    warm_up(&rig, &refused)?;
    rows.push(measure(
        &rig,
        "3  ours, refused",
        &refused,
        &load,
        Some(&daemon),
        secs,
    )?);
    let ours_forwarded = rig.dns_names_seen().len() - before;
    stop(&mut daemon, "provisionerd");

    // Not in the issue: the same with the log at warn, to see what logging every refusal
    // costs (see the report).
    println!("\n== 3w: provisionerd, refused names, --log-level warn (diagnostic)");
    daemon = quiet_daemon(&rig)?;
    rows.push(measure(
        &rig,
        "3w ours, refused, log level warn",
        &refused,
        &load,
        Some(&daemon),
        secs,
    )?);
    stop(&mut daemon, "provisionerd");
    drop(daemon);

    // 4-5: dnsmasq, in our table (which stays after SIGTERM, so the clients still reach
    // the router's port 53 and nothing else).
    println!("\n== 4: dnsmasq --nftset --cache-size=10000 (provisionerd stopped, its table stays)");
    rig.router().exec_ok(&[
        "nft",
        "add",
        "set",
        "inet",
        "provisioner",
        DNSMASQ_SET,
        "{ type ipv4_addr; flags timeout; timeout 60s; }",
    ]);
    let mut dm = dnsmasq(&rig, 10_000)?;
    if let Some(v) = dm.lines().iter().find(|l| l.contains("started, version")) {
        println!("   {}", v.trim());
    }
    warm_up(&rig, &allowed)?;
    let set4_warm = set_info(&rig, DNSMASQ_SET);
    println!("   after the warm-up: {DNSMASQ_SET} {set4_warm}");
    rows.push(measure(
        &rig,
        "4a dnsmasq, allowed, cache on",
        &allowed,
        &load,
        Some(&dm),
        secs,
    )?);
    let set4 = set_info(&rig, DNSMASQ_SET);
    println!("   after the run:     {DNSMASQ_SET} {set4}");
    let before = rig.dns_names_seen().len();
    let dnsmasq_rcode = ask(&rig, "n0.blocked.example", Duration::from_secs(2))
        .map_err(|e| format!("dnsmasq, refused name: {e:?}"))?
        .rcode;
    println!("   dnsmasq answers n0.blocked.example (no server for it) with {dnsmasq_rcode}");
    warm_up(&rig, &refused)?;
    rows.push(measure(
        &rig,
        "4b dnsmasq, refused",
        &refused,
        &load,
        Some(&dm),
        secs,
    )?);
    let dnsmasq_forwarded = rig.dns_names_seen().len() - before;
    stop(&mut dm, "dnsmasq");

    println!(
        "\n== 5: dnsmasq --nftset --cache-size=0 ({DNSMASQ_SET} emptied): every answer from upstream, added to the set"
    );
    rig.router()
        .exec_ok(&["nft", "flush", "set", "inet", "provisioner", DNSMASQ_SET]);
    dm = dnsmasq(&rig, 0)?;
    warm_up(&rig, &allowed)?;
    let set5_warm = set_info(&rig, DNSMASQ_SET);
    println!("   after the warm-up: {DNSMASQ_SET} {set5_warm}");
    rows.push(measure(
        &rig,
        "5  dnsmasq, allowed, cache off",
        &allowed,
        &load,
        Some(&dm),
        secs,
    )?);
    let set5 = set_info(&rig, DNSMASQ_SET);
    println!("   after the run:     {DNSMASQ_SET} {set5}");
    stop(&mut dm, "dnsmasq");
    drop(dm);
    drop(rig);
    let me = format!("pv{}-", std::process::id());
    let leftovers = std::fs::read_dir("/run/netns").map_or(0, |d| {
        d.filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&me))
            .count()
    });

    let seen = Seen {
        learned1,
        learned2,
        set4_warm,
        set4,
        set5_warm,
        set5,
        ours_rcode,
        dnsmasq_rcode,
        ours_forwarded,
        dnsmasq_forwarded,
    };
    let (met_a, met_r) = report(&rows, &seen, cpus);
    println!(
        "\nbench: done in {:.0}s; bars: allowed (each answer inserting) {}, refused {}; rig namespaces left: {leftovers}",
        started.elapsed().as_secs_f64(),
        if met_a { "MET" } else { "NOT MET" },
        if met_r { "MET" } else { "NOT MET" }
    );
    Ok(())
}

/// provisionerd on the current config with `--log-level warn`: it never says "ready", so
/// it is up once it refuses a name.
fn quiet_daemon(rig: &Rig) -> Result<Proc, String> {
    let (bin, path) = (daemon_bin(), rig.config_path());
    let p = rig.spawn(
        rig.router(),
        &[
            bin.to_str().expect("utf-8 path"),
            "provisionerd",
            "-c",
            path.to_str().expect("utf-8 path"),
            "--control",
            rig.control_socket().to_str().expect("utf-8 path"),
            "--run-dir",
            rig.dir().join("run").to_str().expect("utf-8 path"),
            "--log-level",
            "warn",
        ],
    );
    let up = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        ask(rig, "n0.blocked.example", Duration::from_millis(300))
            .is_ok_and(|r| r.rcode == "Refused")
    });
    if !up {
        return Err(format!(
            "provisionerd (log level warn) does not answer:\n{}",
            p.lines().join("\n")
        ));
    }
    Ok(p)
}

/// Prints the tables, ratios, bars and observations; returns whether the two bars are met.
fn report(rows: &[Row], seen: &Seen, cpus: usize) -> (bool, bool) {
    let [up, o1, o2, o3, o3w, d4a, d4b, d5] = rows else {
        unreachable!("eight runs");
    };
    println!(
        "\n== Results (CPU in % of one core over the run; host: share of all {cpus} CPUs; rig: this process, i.e. the fake upstream and the reader of the resolver's log)\n"
    );
    print!("{}", tables(&[up, o1, o2, o3, o3w, d4a, d4b, d5]));
    println!(
        "\n   refused names: provisionerd answers {}, dnsmasq {}; questions that reached the upstream meanwhile: provisionerd {}, dnsmasq {}",
        seen.ours_rcode, seen.dnsmasq_rcode, seen.ours_forwarded, seen.dnsmasq_forwarded
    );

    println!(
        "\n== Ratios, ours / dnsmasq (qps: higher is better; latency, CPU, RSS: lower is better)\n"
    );
    println!(
        "{}",
        ratio_line(
            "allowed, hot cache:  ours(1) / dnsmasq(4a, cache on)",
            o1,
            d4a
        )
    );
    println!(
        "{}",
        ratio_line(
            "allowed, each answer inserting: ours(2) / dnsmasq(5)",
            o2,
            d5
        )
    );
    println!(
        "{}",
        ratio_line("refused:             ours(3) / dnsmasq(4b)", o3, d4b)
    );
    println!(
        "{}",
        ratio_line("refused, log at warn: ours(3w) / dnsmasq(4b)", o3w, d4b)
    );

    println!("\n== The bars from the issue\n");
    let (met_a, line_a) = bar(
        "allowed names, each answer inserting: ours(2) / dnsmasq(5, cache off)",
        o2,
        d5,
        2.0,
    );
    let (met_r, line_r) = bar("refused names: ours(3) / dnsmasq(4b)", o3, d4b, 1.0);
    println!("{line_a}\n{line_r}");
    for r in [o1, o2, d4a, d5] {
        let other = r.perf.completed - r.perf.rcode("NOERROR");
        if other > 0 {
            println!(
                "  WARNING: {}: {other} answers to allowed names were not NOERROR ({}); they flatter its qps",
                r.label,
                r.perf.rcodes()
            );
        }
    }

    println!("\n== Is the fake upstream the bottleneck of run 5?\n");
    let busy = d5.pct(d5.rig_cpu);
    let share = d5.perf.qps / up.perf.qps.max(1e-9);
    println!(
        "  Alone it answered {} qps; in run 5 it answered {} qps ({:.0}% of that), busy {busy:.0}% of a core.",
        fmt_int(up.perf.qps),
        fmt_int(d5.perf.qps),
        share * 100.0
    );
    if busy >= 85.0 || share >= 0.8 {
        println!(
            "  It MAY BE: run 5, and the ratio against it, may be bounded by the rig's upstream rather than by dnsmasq."
        );
    } else {
        println!("  No: dnsmasq itself limits run 5.");
    }

    println!("\n== Where the time goes\n");
    let all = [o1, o2, o3, o3w, d4a, d4b, d5];
    let busy: Vec<f64> = all.iter().map(|r| r.host_busy * 100.0).collect();
    println!(
        "  - The host's {cpus} CPUs were {:.0}-{:.0}% busy and dnsperf, on the same CPUs, took up to {:.0}% of one:\n    \
         the load generator competes with the resolver, so qps moves with scheduling (and with\n    \
         anything else running on the machine); CPU per answer is the steadier comparison.",
        busy.iter().copied().fold(f64::INFINITY, f64::min),
        busy.iter().copied().fold(0.0, f64::max),
        all.iter().map(|r| r.pct(r.dnsperf_cpu)).fold(0.0, f64::max),
    );
    let sys_share = |r: &Row| {
        r.resolver_cpu
            .map_or(0.0, |(u, s)| 100.0 * s / (u + s).max(1e-9))
    };
    println!(
        "  - Kernel share of the resolvers' CPU (sys / total): ours {:.0}% (1), {:.0}% (2); dnsmasq {:.0}% (4a), {:.0}% (5):\n    most of it is sending the reply, which on the rig's veth links also runs the\n    client's receive path (the same for both).",
        sys_share(o1),
        sys_share(o2),
        sys_share(d4a),
        sys_share(d5)
    );
    if let (Some(a), Some(b)) = (o1.us_per_answer(), o2.us_per_answer()) {
        println!(
            "  - Writing the learned element on every answer (2 vs 1) costs ours {:+.1} us of CPU per answer ({:.1} vs {a:.1});\n    dnsmasq's insert per answer from upstream costs it {:.1} us per answer (5) against {:.1} from its cache (4a).",
            b - a,
            b,
            d5.us_per_answer().unwrap_or(0.0),
            d4a.us_per_answer().unwrap_or(0.0)
        );
    }
    {
        println!(
            "  - Refusals are logged once per client, question and minute (at most 32 a minute, the rest\n    summed up): {} lines in run 3 ({:.5} per query).\n    With --log-level warn (3w) it answered {} qps instead of {} ({:.2}x), {:.1} us of CPU per answer instead of {:.1}.",
            fmt_int(o3.log_lines as f64),
            o3.log_lines as f64 / o3.perf.completed.max(1) as f64,
            fmt_int(o3w.perf.qps),
            fmt_int(o3.perf.qps),
            o3w.perf.qps / o3.perf.qps.max(1e-9),
            o3w.us_per_answer().unwrap_or(0.0),
            o3.us_per_answer().unwrap_or(0.0),
        );
    }
    let ours = [o1, o2, o3, o3w];
    let lost: u64 = ours.iter().map(|r| r.perf.lost).sum();
    let drops: u64 = ours.iter().map(|r| r.drops).sum();
    if lost > 0 {
        println!(
            "  - Ours lost {lost} queries over runs 1-3w ({}) with {drops} UDP receive-buffer drops: it read\n    them and never answered; dnsperf waits 2s for each, a slot idle meanwhile. dnsmasq lost {}.",
            ours.iter()
                .map(|r| r.perf.lost.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            [d4a, d4b, d5].iter().map(|r| r.perf.lost).sum::<u64>()
        );
    }

    println!("\n== What else differs\n");
    println!(
        "  - dnsmasq (cache on) adds to its set only on upstream answers, never on cache hits; ours learns on\n    \
         every answer, cached or fresh, for the asking client (MAC . address . proto . port) before the\n    \
         reply leaves. With the default ttl_grace an answer whose element still outlives it writes\n    \
         nothing (run 1); with ttl_grace 0 every answer writes (run 2). dnsmasq's set is one set of\n    \
         addresses for everyone; ours is per client and per port."
    );
    let verdict = |fresh: bool| {
        if fresh {
            "all rewritten during the run"
        } else {
            "not rewritten during the run"
        }
    };
    println!(
        "  - learned4 after run 1: {}: {}\n    learned4 after run 2: {}: {}",
        seen.learned1,
        verdict(seen.learned1.all_written_within(OURS_TIMEOUT, 3.0)),
        seen.learned2,
        verdict(seen.learned2.all_written_within(OURS_TIMEOUT_NO_GRACE, 3.0)),
    );
    println!(
        "  - {DNSMASQ_SET} after the warm-up of run 4: {}; after run 4a: {}: {}\n    \
         {DNSMASQ_SET} after the warm-up of run 5: {}; after run 5:  {}: {}",
        seen.set4_warm,
        seen.set4,
        verdict(seen.set4.all_written_within(DNSMASQ_TIMEOUT, 3.0)),
        seen.set5_warm,
        seen.set5,
        verdict(seen.set5.all_written_within(DNSMASQ_TIMEOUT, 3.0)),
    );
    if !seen.set5.all_written_within(DNSMASQ_TIMEOUT, 3.0) {
        println!(
            "    In run 5 dnsmasq added every answer, yet the elements kept counting down: adding an element\n    \
             that exists does not extend it, so it can expire while a client holds a fresh answer."
        );
    }
    (met_a, met_r)
}
