//! R10 rates and R11 priority against the real daemon and kernel in the netns rig: a client's
//! TCP transfers are held to its configured rates (and run free once the limits are
//! reloaded away, so the limit was what held them), and its traffic carries DSCP CS1 both
//! ways while the router's own does not.

mod rig;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rig::*;

const PORT: u16 = 5201;
const LOG: Duration = Duration::from_secs(10);
/// Each transfer is measured over RUN after WARMUP: the kernel's bucket starts full (a
/// second's worth plus the burst), which the first second spends.
const WARMUP: Duration = Duration::from_millis(1500);
const RUN: Duration = Duration::from_secs(3);
/// 2mbit and 1mbit, in bytes per second.
const DOWN_LIMIT: f64 = 250_000.0;
const UP_LIMIT: f64 = 125_000.0;

fn limited_config() -> String {
    config(&format!(
        "
config allow 'bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{PORT}'

config limits 'limits'
\toption client_rate_down '2mbit'
\toption client_rate_up '1mbit'
"
    ))
}

fn unlimited_config() -> String {
    config(&format!(
        "
config allow 'bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{PORT}'
"
    ))
}

/// Bytes per second one TCP connection from `from` to the cloud's PORT carries over RUN:
/// `down`, the cloud sends; else `from` does.
fn throughput(rig: &Rig, from: &Ns, down: bool) -> f64 {
    let listener = rig
        .cloud()
        .run(|| TcpListener::bind((CLOUD_ALLOWED, PORT)).expect("bind the cloud's port"));
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let (conn, _) = listener.accept().expect("accept");
            pump(conn, down)
        });
        let client = from.run(|| {
            let conn = TcpStream::connect_timeout(
                &SocketAddr::from((CLOUD_ALLOWED, PORT)),
                Duration::from_secs(5),
            )
            .expect("connect to the cloud");
            pump(conn, !down)
        });
        let server = server.join().expect("server thread");
        let received = if down { client } else { server };
        received as f64 / RUN.as_secs_f64()
    })
}

/// Receives for WARMUP + RUN and returns the bytes of the last RUN, then closes (which
/// stops the sender); or sends until the receiver closes, and returns 0. Counting where
/// the bytes arrive, over a fixed time, leaves out what the sender's socket buffer held.
fn pump(mut conn: TcpStream, send: bool) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    if send {
        conn.set_write_timeout(Some((WARMUP + RUN) * 2)).unwrap();
        while conn.write_all(&buf).is_ok() {}
        return 0;
    }
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now() + WARMUP;
    let end = start + RUN;
    let mut n = 0u64;
    while Instant::now() < end {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(k) if Instant::now() >= start => n += k as u64,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    n
}

/// Packets seen with DSCP CS1 and without, by a counter table in `ns` on `hook` traffic
/// from `saddr` (the rig's own namespace: the test made it).
fn count_dscp(ns: &Ns, hook: &str, saddr: Ipv4Addr) {
    let script = format!(
        "table inet rigdscp {{
\tchain c {{
\t\ttype filter hook {hook} priority 0; policy accept;
\t\tip saddr {saddr} tcp sport {PORT} ip dscp cs1 counter
\t\tip saddr {saddr} tcp dport {PORT} ip dscp cs1 counter
\t\tip saddr {saddr} ip dscp != cs1 counter
\t}}
}}
"
    );
    let path = std::env::temp_dir().join(format!("rigdscp-{}-{}.nft", ns.name, std::process::id()));
    std::fs::write(&path, script).unwrap();
    ns.exec_ok(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
}

/// The counters of [`count_dscp`]'s rules, in order: CS1 from the port, CS1 to it, other.
fn dscp_counts(ns: &Ns) -> Vec<u64> {
    let out = ns.exec_ok(&["nft", "list", "chain", "inet", "rigdscp", "c"]);
    out.lines()
        .filter_map(|l| {
            let at = l.find("packets ")? + "packets ".len();
            l[at..].split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[test]
fn client_rates_hold_and_lift_with_the_config() {
    let rig = Rig::new(1);
    let daemon = rig.start_daemon(&limited_config());
    rig.dhcp(1).expect("lease");

    let down = throughput(&rig, rig.client(1), true);
    let up = throughput(&rig, rig.client(1), false);
    eprintln!(
        "limited: download {down:.0} B/s (limit {DOWN_LIMIT}), upload {up:.0} B/s (limit {UP_LIMIT})"
    );
    // Past the first second, policing holds TCP to the rate (the burst allows a few
    // percent more over RUN).
    assert!(
        down < DOWN_LIMIT * 1.25,
        "download {down:.0} B/s over its 2mbit limit"
    );
    assert!(
        up < UP_LIMIT * 1.5,
        "upload {up:.0} B/s over its 1mbit limit"
    );
    assert!(
        down > DOWN_LIMIT * 0.3,
        "download {down:.0} B/s: starved, not limited"
    );
    assert!(
        up > UP_LIMIT * 0.3,
        "upload {up:.0} B/s: starved, not limited"
    );

    // The same transfers with the limits reloaded away: the limit was what held them.
    std::fs::write(rig.config_path(), unlimited_config()).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_line("reloaded", LOG).expect("reload");
    let free_down = throughput(&rig, rig.client(1), true);
    let free_up = throughput(&rig, rig.client(1), false);
    eprintln!("unlimited: download {free_down:.0} B/s, upload {free_up:.0} B/s");
    assert!(
        free_down > DOWN_LIMIT * 4.0,
        "without limits the download ran at {free_down:.0} B/s only"
    );
    assert!(
        free_up > UP_LIMIT * 4.0,
        "without limits the upload ran at {free_up:.0} B/s only"
    );
}

#[test]
fn provisioning_traffic_goes_at_lower_priority_both_ways() {
    let rig = Rig::new(1);
    let _daemon = rig.start_daemon(&unlimited_config());
    let ip = rig.dhcp(1).expect("lease");
    // What the cloud gets from the router's WAN address, and what the client gets from the
    // cloud.
    count_dscp(rig.cloud(), "input", ROUTER_WAN);
    count_dscp(rig.client(1), "input", CLOUD_ALLOWED);

    throughput(&rig, rig.client(1), false);
    throughput(&rig, rig.client(1), true);
    let at_cloud = dscp_counts(rig.cloud());
    let at_client = dscp_counts(rig.client(1));
    assert!(
        at_cloud[1] > 0,
        "upload without CS1 at the cloud: {at_cloud:?}"
    );
    assert_eq!(at_cloud[2], 0, "upload packets without CS1: {at_cloud:?}");
    assert!(
        at_client[0] > 0,
        "download without CS1 at {ip}: {at_client:?}"
    );
    assert_eq!(
        at_client[2], 0,
        "download packets without CS1: {at_client:?}"
    );

    // The router's own traffic to the same server is not provisioning traffic: unmarked.
    throughput(&rig, rig.router(), false);
    let after = dscp_counts(rig.cloud());
    assert!(
        after[2] > 0,
        "the router's own packets should arrive unmarked: {after:?}"
    );
    assert_eq!(
        after[1], at_cloud[1],
        "the router's packets were marked: {after:?}"
    );
}

/// A vendor profile's rates hold its clients instead of the network's per-client ones, and
/// a client of no profile is held to the network's: by MAC upload, by the address its
/// upload was seen from download.
#[test]
fn a_profiles_rates_replace_the_networks_for_its_clients_only() {
    let rig = Rig::new(2);
    rig.client(1)
        .exec_ok(&["ip", "link", "set", HOST_IF, "address", "00:a0:01:00:00:01"]);
    // The network's per-client rates: 128kbit, 16000 B/s, far below the profile's.
    let network = 16_000.0;
    let _daemon = rig.start_daemon(&config(&format!(
        "
config allow 'bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{PORT}'

config limits 'limits'
\toption client_rate_down '128kbit'
\toption client_rate_up '128kbit'

config profile 'vendor'
\tlist oui '00:a0:01'
\toption client_rate_down '2mbit'
\toption client_rate_up '1mbit'

config allow 'vendor_bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{PORT}'
\toption profile 'vendor'
"
    )));
    rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");

    let up = throughput(&rig, rig.client(1), false);
    let down = throughput(&rig, rig.client(1), true);
    let other_up = throughput(&rig, rig.client(2), false);
    let other_down = throughput(&rig, rig.client(2), true);
    eprintln!(
        "profile: down {down:.0} up {up:.0} B/s; no profile: down {other_down:.0} up {other_up:.0} B/s"
    );
    assert!(
        down < DOWN_LIMIT * 1.25,
        "download {down:.0} B/s over the profile's 2mbit"
    );
    assert!(
        up < UP_LIMIT * 1.5,
        "upload {up:.0} B/s over the profile's 1mbit"
    );
    assert!(
        down > DOWN_LIMIT * 0.3 && up > UP_LIMIT * 0.3,
        "the profile's client is held to the network's rate too: down {down:.0}, up {up:.0} B/s"
    );
    assert!(
        other_down < network * 2.5 && other_up < network * 2.5,
        "the client of no profile got the profile's rates: down {other_down:.0}, up {other_up:.0} B/s"
    );
}

/// What a flowtable does to a flow (fw4's `flow_offloading`: from its second packet on, the
/// forward hook is skipped), stood in for by emptying our forward chain: the rates, the
/// counts and the lower-effort mark live on the provisioning device's own hooks, so they
/// still hold. (This kernel has no flowtable: the real offload is not tested here.) The
/// pair: the emptied chain lets a refused port through, so the forward hook was really out
/// of the picture.
#[test]
fn rates_counts_and_the_mark_hold_without_the_forward_hook() {
    let rig = Rig::new(1);
    let _daemon = rig.start_daemon(&limited_config());
    rig.dhcp(1).expect("lease");
    echo_servers(&rig, &[CLOUD_ALLOWED]);
    let wait = Duration::from_secs(2);
    assert!(
        connect(&rig, 1, CLOUD_ALLOWED, wait).is_none(),
        "port {ECHO} is not allow-listed, yet it connected"
    );

    rig.router()
        .exec_ok(&["nft", "flush", "chain", "inet", "provisioner", "forward"]);
    let mut open = connect(&rig, 1, CLOUD_ALLOWED, wait)
        .expect("with our forward chain empty, the refused port connects");
    assert!(echoes(&mut open, wait));

    count_dscp(rig.cloud(), "input", ROUTER_WAN);
    let counted = |rig: &Rig| match rig.ctl(&["clients"]) {
        provisioner::control::Reply::Clients(c) => {
            let r = c
                .stations
                .into_iter()
                .find(|r| r.ip.is_some())
                .expect("row");
            (r.bytes_up, r.bytes_down)
        }
        other => panic!("clients answered {other:?}"),
    };
    let before = counted(&rig);
    let down = throughput(&rig, rig.client(1), true);
    let up = throughput(&rig, rig.client(1), false);
    let after = counted(&rig);
    eprintln!("forward hook emptied: download {down:.0} B/s, upload {up:.0} B/s");
    assert!(
        down < DOWN_LIMIT * 1.25,
        "download {down:.0} B/s over its limit"
    );
    assert!(up < UP_LIMIT * 1.5, "upload {up:.0} B/s over its limit");
    assert!(down > DOWN_LIMIT * 0.3 && up > UP_LIMIT * 0.3, "starved");
    // Counted: at least what arrived in the measured part of each run.
    assert!(
        after.1 - before.1 >= (down * RUN.as_secs_f64()) as u64,
        "download not counted: {before:?} -> {after:?}"
    );
    assert!(
        after.0 - before.0 >= (up * RUN.as_secs_f64()) as u64,
        "upload not counted: {before:?} -> {after:?}"
    );
    let at_cloud = dscp_counts(rig.cloud());
    assert!(at_cloud[1] > 0, "upload without CS1: {at_cloud:?}");
    assert_eq!(at_cloud[2], 0, "upload packets without CS1: {at_cloud:?}");
}
