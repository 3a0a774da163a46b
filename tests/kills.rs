//! Fail-closed at every point of the daemon's work (issue 14, item 1): SIGKILL at seeded
//! random moments after a trigger (a reload's table rebuild, a DNS answer's set insert, an
//! eviction, a ban's batch, a join, the window closing, nothing at all). After each kill
//! the tables are whole and nothing a client could not reach before is reachable; after
//! each restart an admitted client's allowed flow works again and the daemon's status
//! agrees with the kernel's sets.
//!
//! `KILLS` (default 50) sets how many, `KILLS_SEED` the seed (printed: a failure replays).

mod rig;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rig::*;

const YES: Duration = Duration::from_secs(5);
/// A SYN in a namespace is answered in well under a millisecond: a probe with no answer in
/// this long was dropped.
const NO: Duration = Duration::from_millis(700);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// xorshift64*: a seeded sequence of delays, no dependency.
struct Seq(u64);
impl Seq {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn config_with(extra_allow: bool) -> String {
    let extra = if extra_allow {
        "\nconfig allow 'extra'\n\tlist address '11.1.0.30'\n\tlist port '443'\n"
    } else {
        ""
    };
    config(&format!(
        "
config dns 'dns'
\tlist upstream '{CLOUD_DNS}'

config allow 'setup'
\tlist domain 'setup.acme.example'
\tlist port '443'

config limits 'limits'
\toption cooldown '0'
{extra}"
    ))
    .replace("\toption mode 'always'\n", "\toption mode 'on_demand'\n")
}

/// Our tables' chains, by name: what must be there, whole, whatever the moment of death.
fn chains(rig: &Rig) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (family, table) in [
        ("inet", "provisioner"),
        ("netdev", "provisioner"),
        ("arp", "provisioner"),
    ] {
        let text = rig.router().exec(&["nft", "list", "table", family, table]);
        for line in String::from_utf8_lossy(&text.stdout).lines() {
            if let Some(rest) = line.trim().strip_prefix("chain ") {
                out.insert(format!("{family} {}", rest.trim_end_matches(" {")));
            }
        }
    }
    out
}

/// The `MAC . IP` elements of the kernel's `leases` set.
fn kernel_leases(rig: &Rig) -> BTreeSet<String> {
    let text = rig
        .router()
        .exec_ok(&["nft", "list", "set", "inet", "provisioner", "leases"]);
    text.split(['{', '}', ',', '\n'])
        .filter_map(|e| {
            let e = e.trim();
            let (mac, rest) = e.split_once(" . ")?;
            let ip = rest.split_whitespace().next()?;
            (mac.len() == 17).then(|| format!("{mac} {ip}"))
        })
        .collect()
}

/// Every probe that must be refused from client 1, at once (each a thread), with the
/// router reaching the same servers.
fn assert_closed(rig: &Rig, c2: Ipv4Addr, when: &str) {
    let cl = rig.client(1);
    let refused = [
        sa(HOME_HOST, 22),
        sa(ROUTER_PROV, 22),
        sa(CLOUD_OTHER, 443),
        sa(CLOUD_ALLOWED, 8443),
        sa(c2, 8080),
    ];
    std::thread::scope(|s| {
        let probes: Vec<_> = refused
            .iter()
            .map(|&dst| s.spawn(move || (dst, tcp(cl, dst, None, NO))))
            .collect();
        // (Client 2's twin, the router reaching it, is in `back_in`: an eviction may just
        // have taken its binding, and with it the router's way to it.)
        for &dst in &[sa(HOME_HOST, 22), sa(CLOUD_OTHER, 443)] {
            assert!(
                tcp(rig.router(), dst, None, YES).answered(),
                "{when}: the router cannot reach {dst}: the refusals prove nothing"
            );
        }
        for p in probes {
            let (dst, probe) = p.join().unwrap();
            assert!(
                !probe.answered(),
                "{when}: client 1 reached {dst}: {probe:?}"
            );
        }
    });
}

/// After a restart: the window opened, clients 1 and 2 (back) in, client 1's allowed flow
/// working, client 2 reachable from the router but not from client 1, and the daemon's
/// clients the kernel's bindings. Returns client 2's address.
fn back_in(rig: &Rig, when: &str) -> Ipv4Addr {
    let out = rig.ctl_output(&["window", "open", "30"]);
    assert!(out.status.success(), "{when}: window open: {out:?}");
    rig.dhcp(1)
        .unwrap_or_else(|e| panic!("{when}: client 1: {e}"));
    let c2 = rig
        .dhcp(2)
        .unwrap_or_else(|e| panic!("{when}: client 2: {e}"));
    assert!(
        tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, YES).answered(),
        "{when}: client 1's allowed flow does not work again"
    );
    assert!(
        tcp(rig.router(), sa(c2, 8080), None, YES).answered(),
        "{when}: the router cannot reach client 2"
    );
    assert!(
        !tcp(rig.client(1), sa(c2, 8080), None, NO).answered(),
        "{when}: client 1 reached client 2"
    );
    let status = rig.status();
    let ours: BTreeSet<String> = status
        .clients
        .iter()
        .filter_map(|c| Some(format!("{} {}", c.mac, c.ip?)))
        .collect();
    assert_eq!(
        ours,
        kernel_leases(rig),
        "{when}: the status and the kernel disagree"
    );
    c2
}

#[test]
fn fifty_kills_at_random_moments_never_open_the_network() {
    let kills: usize = std::env::var("KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("KILLS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("KILLS={kills} KILLS_SEED={seed}");
    let mut seq = Seq(seed);
    let rig = Rig::new(3);
    rig.dns_zone(
        "setup.acme.example",
        FakeAnswer {
            a: vec![CLOUD_ALLOWED],
            ttl: 300,
            ..FakeAnswer::default()
        },
    );
    let mut extra = false;
    let mut daemon = rig.start_daemon(&config_with(extra));
    let c2 = back_in(&rig, "at start");
    let whole = chains(&rig);
    assert!(whole.len() > 5, "{whole:?}");

    let started = Instant::now();
    let mut by_trigger = [0usize; 7];
    // From each restart to the daemon's "ready" (its tables reconciled, serving).
    let mut ready = Vec::new();
    for i in 0..kills {
        let trigger = seq.below(7) as usize;
        let delay = Duration::from_micros(seq.below(40_000));
        let when = format!("kill {i} (trigger {trigger}, after {delay:?}, seed {seed})");
        by_trigger[trigger] += 1;
        let mut joining = None;
        std::thread::scope(|s| {
            let rig = &rig;
            let t = s.spawn(move || match trigger {
                // A reload: the table rebuilt with another allow-list.
                0 => {}
                // A DNS answer: a learned address inserted before the reply goes out.
                1 => {
                    let _ = dns(
                        rig.client(1),
                        (ROUTER_PROV, 53),
                        "setup.acme.example",
                        false,
                        NO,
                    );
                }
                2 => drop(rig.ctl_output(&["evict", "02:00:00:00:00:02"])),
                3 => drop(rig.ctl_output(&["ban", "02:00:00:00:00:03", "2s"])),
                5 => drop(rig.ctl_output(&["window", "close"])),
                _ => {}
            });
            if trigger == 0 {
                extra = !extra;
                std::fs::write(rig.config_path(), config_with(extra)).unwrap();
                daemon.signal(Signal::SIGHUP);
            }
            if trigger == 4 {
                // A join: a DHCP exchange in flight (udhcpc keeps trying until dropped).
                let script = rig.udhcpc_script();
                joining = Some(rig.spawn(
                    rig.client(3),
                    &[
                        "udhcpc",
                        "-i",
                        HOST_IF,
                        "-f",
                        "-q",
                        "-t",
                        "20",
                        "-T",
                        "1",
                        "-s",
                        script.to_str().unwrap(),
                    ],
                ));
            }
            std::thread::sleep(delay);
            daemon.kill9();
            t.join().unwrap();
        });
        drop(joining);
        assert_eq!(chains(&rig), whole, "{when}: the tables are not whole");
        assert_closed(&rig, c2, &when);
        let restart = Instant::now();
        daemon = rig.start_daemon(&config_with(extra));
        ready.push(restart.elapsed());
        assert_eq!(
            back_in(&rig, &format!("after {when}")),
            c2,
            "client 2 moved"
        );
    }
    ready.sort();
    eprintln!(
        "{kills} kills survived in {:?}; by trigger (reload, dns, evict, ban, join, window close, idle): {by_trigger:?}; restart to ready: median {:?}, max {:?}",
        started.elapsed(),
        ready.get(ready.len() / 2).copied().unwrap_or_default(),
        ready.last().copied().unwrap_or_default()
    );
}
