//! `make bench` (second part): join-to-admitted latency, from a hostapd event arriving to
//! the kernel acknowledging the `clients` set change, with 10, 100 and 1000 clients already
//! admitted. It should stay flat: admission is a hash lookup and one netlink batch, never a
//! rule per client. Runs the real core and the real netlink path against the real kernel,
//! in a private network namespace (root).

use std::time::{Duration, Instant as Clock};

use provisioner::config::Config;
use provisioner::core::settings::Settings;
use provisioner::core::time::Instant;
use provisioner::core::window::LocalTime;
use provisioner::core::{MacAddr, Provisioner, Snapshot};
use provisioner::firewall::{Firewall, Ruleset};
use provisioner::radio::hostapd::{Event, parse_event};

const SAMPLES: usize = 2000;

fn config() -> Config {
    Config::parse(
        "bench",
        "config network\n option interface lo\n option wan lo2\n option subnet '192.168.248.0/21'\n\
         config limits\n option max_clients 1024\n option min_age 1h\n option session 2h\n\
         config window\n option mode always\n",
        false,
    )
    .expect("bench config")
}

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([2, 0x42, b[0], b[1], b[2], b[3]])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One population size: `base` clients admitted, then SAMPLES newcomers join (and leave
/// again, unmeasured, so the population stays put).
fn measure(base: u32) -> Vec<Duration> {
    let cfg = config();
    let mut fw = Firewall::open().expect("netlink");
    let mut core = Provisioner::new(&Settings::from(&cfg));
    let local = LocalTime {
        weekday: 0,
        minute: 0,
    };
    core.handle_timeout(Instant::now(), local);
    fw.install(&Ruleset::build(&cfg, &Snapshot::default()))
        .expect("install the table");
    for n in 0..base {
        core.handle_station_joined(mac(n), Instant::now());
    }
    carry_out(&mut core, &mut fw);
    let mut took = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES as u32 {
        let who = mac(1_000_000 + i);
        let line = format!("<3>AP-STA-CONNECTED {who}");
        let start = Clock::now();
        let Event::StaConnected(m) = parse_event(line.as_bytes()) else {
            panic!("not parsed: {line}");
        };
        core.handle_station_joined(m, Instant::now());
        carry_out(&mut core, &mut fw);
        took.push(start.elapsed());
        core.handle_station_left(m, Instant::now());
        carry_out(&mut core, &mut fw);
    }
    took.sort();
    took
}

/// What the daemon does after an input: the batch to the kernel, its result back; the
/// rest drained.
fn carry_out(core: &mut Provisioner, fw: &mut Firewall) {
    while let Some(b) = core.poll_batch() {
        fw.apply(&b.changes).expect("the kernel takes the batch");
        core.handle_batch_applied(b.id);
    }
    while core.poll_command().is_some() {}
    while core.poll_event().is_some() {}
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench_admission: needs root (a network namespace and nftables)");
        std::process::exit(1);
    }
    // A private network namespace for this thread: the host's ruleset is never touched,
    // and the table goes away with the namespace.
    let handle = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        // (The table names interfaces by name; they need not exist.)
        println!(
            "\n== Join-to-admitted latency: hostapd event parsed -> core decides -> the kernel acks the clients set change"
        );
        println!(
            "   {SAMPLES} joins per population, each a real netlink transaction; private netns\n"
        );
        println!(
            "   {:>8}  {:>9}  {:>9}  {:>9}  {:>9}",
            "clients", "median", "p90", "p99", "max"
        );
        let mut medians = Vec::new();
        for base in [10u32, 100, 1000] {
            let t = measure(base);
            let (p50, p90, p99, max) = (
                percentile(&t, 0.5),
                percentile(&t, 0.9),
                percentile(&t, 0.99),
                *t.last().expect("samples"),
            );
            medians.push(p50);
            println!(
                "   {base:>8}  {:>7.1}us  {:>7.1}us  {:>7.1}us  {:>7.1}us",
                p50.as_secs_f64() * 1e6,
                p90.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                max.as_secs_f64() * 1e6
            );
        }
        let ratio = medians[2].as_secs_f64() / medians[0].as_secs_f64();
        println!(
            "\n   median at 1000 clients / at 10: {ratio:.2}x ({})",
            if ratio < 1.5 { "flat" } else { "NOT flat" }
        );
    });
    handle.join().expect("bench thread");
}
