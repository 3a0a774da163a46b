//! R10 and R11 under load, measured at the clients and the cloud only (never by the shape of
//! the ruleset): several clients pulling and pushing at once are each held to their own rate
//! and, together, to the network's; and on a WAN that is the bottleneck, with a
//! DSCP-classifying qdisc standing in for SQM, the home network wins over provisioning
//! traffic because of our CS1 mark (and does not without it).

mod rig;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;
use rig::*;

const PORT: u16 = 5201;
const LOG: Duration = Duration::from_secs(10);
/// Long enough for slow start to spend the full token buckets a rule's first packets find
/// (and for TCP to settle after the losses that ends with).
const WARMUP: Duration = Duration::from_millis(1500);
const RUN: Duration = Duration::from_secs(5);
const CLIENTS: usize = 3;
/// 3mbit, in bytes per second: each client's rate both ways.
const CLIENT_RATE: f64 = 375_000.0;
/// 6mbit: the network's rate both ways, below the clients' sum (9mbit).
const TOTAL_RATE: f64 = 750_000.0;
const TOLERANCE: f64 = 0.15;

/// One test at a time: an unlimited phase keeps both CPUs busy, which would skew the other
/// test's figures.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn dst() -> SocketAddr {
    (CLOUD_ALLOWED, PORT).into()
}

/// The rig's config with the load's port allowed and `limits` as the limits section's
/// options.
fn config_with(limits: &[(&str, &str)]) -> String {
    let mut extra = format!(
        "
config allow 'bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{PORT}'
"
    );
    if !limits.is_empty() {
        extra.push_str("\nconfig limits 'limits'\n");
        for (k, v) in limits {
            extra.push_str(&format!("\toption {k} '{v}'\n"));
        }
    }
    config(&extra)
}

fn reload(rig: &Rig, daemon: &Proc, config: &str) {
    std::fs::write(rig.config_path(), config).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_line("reloaded", LOG).expect("reload");
}

/// Connections per client and way in the rate test: a client's rate is what its connections
/// carry together, and two keep the bucket busy while one recovers from a loss (a TCP
/// timeout alone costs a lone flow a few percent of a 5 s window).
const FLOWS_PER_WAY: usize = 2;

/// Every client pulling and pushing at once: each client's (download, upload) in bytes per
/// second.
fn all_at_once(rig: &Rig) -> Vec<(f64, f64)> {
    let flows: Vec<Flow> = (1..=rig.clients())
        .flat_map(|i| {
            let c = rig.client(i);
            [
                vec![Flow::down(c); FLOWS_PER_WAY],
                vec![Flow::up(c); FLOWS_PER_WAY],
            ]
            .concat()
        })
        .collect();
    load(rig.cloud(), dst(), &flows, WARMUP, RUN)
        .chunks(2 * FLOWS_PER_WAY)
        .map(|c| {
            let (down, up) = c.split_at(FLOWS_PER_WAY);
            (down.iter().sum(), up.iter().sum())
        })
        .collect()
}

fn within(x: f64, target: f64) -> bool {
    (x - target).abs() <= target * TOLERANCE
}

fn kb(rates: &[(f64, f64)]) -> String {
    rates
        .iter()
        .map(|(d, u)| format!("{:.0}/{:.0}", d / 1000.0, u / 1000.0))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn clients_together_are_held_to_their_own_rates_and_the_networks() {
    let _serial = serial();
    let rig = Rig::new(CLIENTS);
    let per_client = [("client_rate_down", "3mbit"), ("client_rate_up", "3mbit")];
    // The network's rate above the clients' sum: not binding.
    let loose = [
        per_client[0],
        per_client[1],
        ("total_rate_down", "12mbit"),
        ("total_rate_up", "12mbit"),
    ];
    let daemon = rig.start_daemon(&config_with(&loose));
    for i in 1..=CLIENTS {
        rig.dhcp(i).expect("lease");
    }

    let each = all_at_once(&rig);
    eprintln!(
        "client limits (3mbit, 375 kB/s) binding: down/up kB/s per client {}",
        kb(&each)
    );
    for (i, (down, up)) in each.iter().enumerate() {
        assert!(
            within(*down, CLIENT_RATE) && within(*up, CLIENT_RATE),
            "client {} ran at {down:.0} B/s down, {up:.0} B/s up; its rate is {CLIENT_RATE} B/s \
             each way (±15 %)",
            i + 1
        );
    }

    // What the tight network rate below must hold back: without it the sum runs well above.
    let (down, up) = sums(&each);
    assert!(
        down > TOTAL_RATE * 1.3 && up > TOTAL_RATE * 1.3,
        "the clients' sum ({down:.0} B/s down, {up:.0} B/s up) is near the network rate \
         {TOTAL_RATE} B/s without it: the next step would prove nothing"
    );

    // The network's rate below the clients' sum: the sum is held to it.
    let tight = [
        per_client[0],
        per_client[1],
        ("total_rate_down", "6mbit"),
        ("total_rate_up", "6mbit"),
    ];
    reload(&rig, &daemon, &config_with(&tight));
    let each = all_at_once(&rig);
    let (down, up) = sums(&each);
    eprintln!(
        "network limit (6mbit, 750 kB/s) binding: down/up kB/s per client {}, sum {:.0}/{:.0}",
        kb(&each),
        down / 1000.0,
        up / 1000.0
    );
    assert!(
        within(down, TOTAL_RATE) && within(up, TOTAL_RATE),
        "together the clients ran at {down:.0} B/s down, {up:.0} B/s up; the network's rate \
         is {TOTAL_RATE} B/s each way (±15 %)"
    );

    // No limits: every client runs well above its rate, so the limits (not the rig's CPUs)
    // were what held them.
    reload(&rig, &daemon, &config_with(&[]));
    let each = all_at_once(&rig);
    eprintln!("no limits: down/up kB/s per client {}", kb(&each));
    for (i, (down, up)) in each.iter().enumerate() {
        assert!(
            *down > CLIENT_RATE * 2.0 && *up > CLIENT_RATE * 2.0,
            "without limits client {} ran at {down:.0} B/s down, {up:.0} B/s up only",
            i + 1
        );
    }
}

fn sums(rates: &[(f64, f64)]) -> (f64, f64) {
    rates
        .iter()
        .fold((0.0, 0.0), |(d, u), (a, b)| (d + a, u + b))
}

/// The WAN's rate (8mbit) and the low-priority class's guaranteed share of it, in kbit/s.
const WAN_KBIT: u32 = 8000;
const LOW_KBIT: u32 = 500;
const HOME_NET: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 0);

/// The router's WAN egress as an SQM-shaped uplink would be: HTB at WAN_KBIT, a default
/// class with the most of it, a class for DSCP CS1 (the TOS byte's top six bits 001000)
/// with LOW_KBIT guaranteed; both may borrow up to the ceiling, the default class first.
fn shape_wan(rig: &Rig) {
    let r = rig.router();
    let tc = |args: &str| {
        let mut cmd = vec!["tc"];
        cmd.extend(args.split_whitespace());
        r.exec_ok(&cmd);
    };
    let high = WAN_KBIT - LOW_KBIT;
    tc(&format!(
        "qdisc add dev {WAN_IF} root handle 1: htb default 10"
    ));
    tc(&format!(
        "class add dev {WAN_IF} parent 1: classid 1:1 htb rate {WAN_KBIT}kbit ceil {WAN_KBIT}kbit"
    ));
    tc(&format!(
        "class add dev {WAN_IF} parent 1:1 classid 1:10 htb rate {high}kbit ceil {WAN_KBIT}kbit prio 0"
    ));
    tc(&format!(
        "class add dev {WAN_IF} parent 1:1 classid 1:20 htb rate {LOW_KBIT}kbit ceil {WAN_KBIT}kbit prio 1"
    ));
    // sfq shares a class fairly between its flows; where the kernel has no sch_sfq, a
    // FIFO, fair enough between TCP flows of wire-size frames.
    for (class, handle) in [("1:10", "10:"), ("1:20", "20:")] {
        let sfq = r.exec(&[
            "tc", "qdisc", "add", "dev", WAN_IF, "parent", class, "handle", handle, "sfq",
        ]);
        if !sfq.status.success() {
            tc(&format!(
                "qdisc add dev {WAN_IF} parent {class} handle {handle} pfifo limit 100"
            ));
        }
    }
    tc(&format!(
        "filter add dev {WAN_IF} parent 1: protocol ip prio 1 u32 match ip tos 0x20 0xfc flowid 1:20"
    ));
}

/// Connections each host opens: more than one, as a home's and a device's traffic is, and
/// a share summed over several flows is steadier than one flow's in a FIFO.
const FLOWS_EACH: usize = 4;

/// The home host and client 1 both uploading to the cloud as fast as they can: their
/// shares of what arrived, and the sum in bytes per second.
fn contest(rig: &Rig) -> (f64, f64, f64) {
    let mut flows = vec![Flow::up(rig.home()); FLOWS_EACH];
    flows.extend(vec![Flow::up(rig.client(1)); FLOWS_EACH]);
    let rates = load(rig.cloud(), dst(), &flows, WARMUP, RUN);
    let home: f64 = rates[..FLOWS_EACH].iter().sum();
    let sum: f64 = rates.iter().sum();
    (home / sum, 1.0 - home / sum, sum)
}

#[test]
fn the_home_network_wins_a_congested_wan_by_the_provisioning_mark() {
    let _serial = serial();
    let rig = Rig::new(1);
    let _daemon = rig.start_daemon(&config_with(&[]));
    rig.dhcp(1).expect("lease");
    // The home network is not masqueraded by our table (fw4's job on a router): the cloud
    // routes it back instead.
    rig.cloud().exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{HOME_NET}/24"),
        "via",
        &ROUTER_WAN.to_string(),
    ]);
    shape_wan(&rig);
    // Wire-size frames, as a real router receives: local senders on veth would hand it 64 KB
    // GSO packets, and a FIFO that counts packets favours whoever sends the bigger ones.
    for ns in [rig.home(), rig.client(1)] {
        ns.exec_ok(&["ethtool", "-K", HOST_IF, "tso", "off", "gso", "off"]);
    }
    let wan = WAN_KBIT as f64 * 1000.0 / 8.0;

    let (home, prov, sum) = contest(&rig);
    eprintln!(
        "marked: home {:.0} %, provisioning {:.0} %, {:.0} kB/s in all (WAN {:.0} kB/s)",
        home * 100.0,
        prov * 100.0,
        sum / 1000.0,
        wan / 1000.0
    );
    assert!(
        sum > wan * 0.8,
        "the WAN was not saturated: {sum:.0} of {wan:.0} B/s"
    );
    assert!(
        home >= 0.8,
        "the home host got {:.0} % of the congested WAN against a provisioning client",
        home * 100.0
    );

    // The same contest with our mark taken away after our table (a test-only table in the
    // router, the last thing before the qdisc): nothing tells the two apart.
    let script = format!(
        "table ip rigunmark {{
\tchain post {{
\t\ttype filter hook postrouting priority 500; policy accept;
\t\toifname \"{WAN_IF}\" ip dscp set cs0
\t}}
}}
"
    );
    let path = rig.dir().join("unmark.nft");
    std::fs::write(&path, script).unwrap();
    rig.router().exec_ok(&["nft", "-f", path.to_str().unwrap()]);
    let (home, prov, sum) = contest(&rig);
    eprintln!(
        "unmarked: home {:.0} %, provisioning {:.0} %, {:.0} kB/s in all",
        home * 100.0,
        prov * 100.0,
        sum / 1000.0
    );
    assert!(
        sum > wan * 0.8,
        "the WAN was not saturated: {sum:.0} of {wan:.0} B/s"
    );
    assert!(
        (0.35..=0.65).contains(&home),
        "without the mark the home host got {:.0} %, the provisioning client {:.0} %: not even",
        home * 100.0,
        prov * 100.0
    );
}
