//! R10's daily data quotas against the real daemon and kernel in the netns rig: a client's
//! quota is held in the kernel (also while the daemon is away) and costs it its session and
//! a ban until the day ends; the network's stops everything but DHCP and DNS for everyone;
//! what a quota used survives a reload and a restart. Each claim with its twin: the client
//! under its quota, the other client, the same transfer before the quota was used.

mod rig;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use nix::sys::signal::Signal;
use provisioner::control::Reply;
use rig::*;

const PORT: u16 = 9000;
const LOG: Duration = Duration::from_secs(10);
/// How long a transfer may stall before it counts as cut.
const STALL: Duration = Duration::from_secs(2);

fn quota_config(limits: &str) -> String {
    config(&format!(
        "
config allow 'bulk'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{PORT}'

config limits 'limits'
{limits}"
    ))
}

/// Client `i` asks the cloud for `want` bytes and returns how many arrived before the
/// transfer ended or stalled for [`STALL`]. `None` if it could not even connect.
fn download(rig: &Rig, i: usize, want: usize) -> Option<usize> {
    let listener = rig
        .cloud()
        .run(|| TcpListener::bind(SocketAddr::new(CLOUD_ALLOWED.into(), PORT)))
        .expect("bind the cloud's port");
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = c.write_all(&vec![7u8; want]);
        let _ = c.shutdown(Shutdown::Write);
    });
    let got = rig.client(i).run(|| {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::new(CLOUD_ALLOWED.into(), PORT),
            Duration::from_secs(3),
        )
        .ok()?;
        s.set_read_timeout(Some(STALL)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0;
        while let Ok(k @ 1..) = s.read(&mut buf) {
            n += k;
        }
        Some(n)
    });
    if got.is_none() {
        // The client never came: the server's accept is let go from the cloud itself.
        let _ = rig.cloud().run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::new(CLOUD_ALLOWED.into(), PORT),
                Duration::from_secs(1),
            )
        });
    }
    server.join().unwrap();
    got
}

fn status(rig: &Rig) -> provisioner::control::protocol::Status {
    match rig.ctl(&["status"]) {
        Reply::Status(s) => s,
        other => panic!("status answered {other:?}"),
    }
}

/// A client's quota: its transfer is cut in the kernel near the quota, it is evicted and
/// banned until the day ends; the other client, under its own, goes on. Then, with the
/// daemon killed, a fresh client's quota still holds (the kernel's elements).
#[test]
fn a_clients_quota_cuts_it_off_and_bans_it_until_the_day_ends() {
    let rig = Rig::new(2);
    let mut daemon = rig.start_daemon(&quota_config("\toption client_daily '300KB'\n"));
    rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");

    // Under its quota, a transfer goes through whole: the twin of the cut below.
    assert_eq!(download(&rig, 2, 100_000), Some(100_000));
    let got = download(&rig, 1, 1_000_000).expect("connect");
    assert!(
        (200_000..300_000).contains(&got),
        "client 1 received {got} bytes on a 300KB quota"
    );
    let line = daemon
        .wait_line("event=quota_exceeded mac=02:00:00:00:00:01", LOG)
        .expect("the quota is reported");
    assert!(line.contains("limit=300000"), "{line}");
    let banned = daemon
        .wait_line("event=banned mac=02:00:00:00:00:01", LOG)
        .expect("banned for its quota");
    assert!(banned.contains("reason=quota"), "{banned}");
    let bans = status(&rig).bans;
    let ban = bans
        .iter()
        .find(|b| b.mac.to_string() == "02:00:00:00:00:01")
        .expect("client 1 is banned");
    assert!(ban.left > 60 && ban.left <= 86_400, "{ban:?}");
    assert!(rig.dhcp(1).is_err(), "a client over its quota got a lease");
    // Client 2 still has 200 KB of its own.
    assert_eq!(download(&rig, 2, 100_000), Some(100_000));

    // With the daemon gone, the kernel still holds client 2 to its quota.
    daemon.kill9();
    let got = download(&rig, 2, 1_000_000).expect("connect");
    assert!(
        got < 150_000,
        "client 2 received {got} bytes of its last 100 KB with the daemon dead"
    );
}

/// The network's quota: once everyone together used it, nothing more is forwarded for
/// anyone, status and the log say so, and DHCP and DNS still work.
#[test]
fn the_networks_quota_stops_forwarding_but_not_dhcp_and_dns() {
    let rig = Rig::new(2);
    let daemon = rig.start_daemon(&quota_config("\toption total_daily '400KB'\n"));
    rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");
    assert_eq!(download(&rig, 1, 250_000), Some(250_000));
    let got = download(&rig, 2, 1_000_000).expect("connect");
    assert!(
        got < 200_000,
        "client 2 received {got} bytes past the network's quota"
    );
    daemon
        .wait_line("event=quota_exceeded scope=network", LOG)
        .expect("the network's quota is reported");
    let s = status(&rig);
    assert!(s.quotas.network_over, "{:?}", s.quotas);
    assert_eq!(s.quotas.total_daily, Some(400_000));
    assert!(s.quotas.network_used.unwrap() >= 400_000, "{:?}", s.quotas);
    // Nothing new is forwarded, for either client...
    assert_eq!(download(&rig, 1, 1_000), None, "client 1 connected");
    // ... and DHCP and DNS still answer.
    rig.dhcp(2).expect("a renewal over the network's quota");
    let dns = dns_query(
        rig.client(1),
        (ROUTER_PROV, 53),
        "not-allowed.example",
        RecordType::A,
        false,
        Duration::from_secs(3),
    );
    assert!(dns.is_ok(), "DNS over the network's quota: {dns:?}");
    // The clients are not evicted for the network's quota: it is nobody's alone.
    assert!(!daemon.lines().iter().any(|l| l.contains("reason=quota")));
}

/// What a quota used is kept by a reload (the table is rebuilt) and a restart: neither
/// gives a client a fresh quota.
#[test]
fn what_a_quota_used_survives_a_reload_and_a_restart() {
    let rig = Rig::new(1);
    let cfg = quota_config("\toption client_daily '500KB'\n");
    let mut daemon = rig.start_daemon(&cfg);
    rig.dhcp(1).expect("lease");
    assert_eq!(download(&rig, 1, 200_000), Some(200_000));

    daemon.signal(Signal::SIGHUP);
    daemon.wait_line("reloaded", LOG).expect("reload");
    assert_eq!(download(&rig, 1, 100_000), Some(100_000));

    daemon.signal(Signal::SIGTERM);
    daemon.wait(LOG).expect("stops");
    let daemon = rig.start_daemon(&cfg);
    // 300 KB of 500 KB used: another 400 KB is cut before it is through.
    let got = download(&rig, 1, 400_000).expect("connect");
    assert!(
        (100_000..200_000).contains(&got),
        "{got} bytes after 300 KB of a 500 KB quota"
    );
    daemon
        .wait_line("event=quota_exceeded mac=02:00:00:00:00:01", LOG)
        .expect("the quota is reported after the restart");
}

/// The run directory keeps what the quotas used: a daemon that finds the kernel's quota
/// elements gone (its table removed while it was away) takes it from there, and a damaged
/// file is reported and left aside, never a crash.
#[test]
fn the_run_directory_keeps_what_the_quotas_used() {
    let rig = Rig::new(1);
    let cfg = quota_config("\toption client_daily '500KB'\n");
    let mut daemon = rig.start_daemon(&cfg);
    rig.dhcp(1).expect("lease");
    assert_eq!(download(&rig, 1, 300_000), Some(300_000));
    let file = rig.dir().join("run/quotas");
    let written = wait_until(LOG, Duration::from_millis(200), || {
        std::fs::read_to_string(&file).is_ok_and(|t| {
            t.lines()
                .any(|l| l.starts_with("client 02:00:00:00:00:01 ") && !l.contains(" 0 "))
        })
    });
    assert!(
        written,
        "{} does not say what client 1 used",
        file.display()
    );
    daemon.kill9();
    rig.router()
        .exec_ok(&["nft", "delete", "table", "netdev", "provisioner"]);

    let daemon = rig.start_daemon(&cfg);
    // 300 KB of 500 KB used: another 400 KB is cut before it is through.
    let got = download(&rig, 1, 400_000).expect("connect");
    assert!(
        (100_000..300_000).contains(&got),
        "{got} bytes after 300 KB of a 500 KB quota, the kernel's elements gone"
    );
    drop(daemon);

    // A damaged file: said, and ignored.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("client", "cliant")).unwrap();
    rig.router()
        .exec_ok(&["nft", "delete", "table", "netdev", "provisioner"]);
    let daemon = rig.start_daemon(&cfg);
    daemon
        .wait_line(
            "run/quotas: torn, damaged or written by another version, ignored",
            LOG,
        )
        .expect("the damaged file is reported");
    // (Client 1 used up its quota above: still banned, from the kernel's ban set.)
    let s = status(&rig);
    assert!(
        s.bans
            .iter()
            .any(|b| b.mac.to_string() == "02:00:00:00:00:01"),
        "{:?}",
        s.bans
    );
}

/// The wall clock jumps under the daemon (NTP setting the clock of a router that booted
/// without one; libfaketime moves the daemon's realtime clock only): the quotas' day end
/// follows the local time, what the quota used is kept through it, and sessions and bans
/// (on the boot clock) neither end early nor last longer.
#[test]
fn a_wall_clock_jump_moves_the_quotas_day_but_no_session_or_ban() {
    let Some(lib) = ["x86_64", "aarch64", "i386", "arm"]
        .iter()
        .map(|a| format!("/usr/lib/{a}-linux-gnu/faketime/libfaketime.so.1"))
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: libfaketime is not installed (scripts/deps.sh installs faketime)");
        return;
    };
    let rig = Rig::new(2);
    let offset = rig.dir().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    // The day ends three hours from now, local time.
    let out = std::process::Command::new("date")
        .args(["+%H:%M", "-d", "+3 hours"])
        .output()
        .unwrap();
    let reset = String::from_utf8(out.stdout).unwrap();
    let cfg = quota_config(&format!(
        "\toption client_daily '300KB'\n\toption quota_reset '{}'\n",
        reset.trim()
    ));
    let env = [
        format!("LD_PRELOAD={lib}"),
        format!("FAKETIME_TIMESTAMP_FILE={}", offset.display()),
        "FAKETIME_NO_CACHE=1".into(),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
    ];
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let daemon = rig.start_daemon_env(&cfg, &env);
    rig.dhcp(1).expect("lease");
    rig.dhcp(2).expect("lease");
    assert_eq!(download(&rig, 1, 200_000), Some(200_000));
    rig.ctl(&["ban", "02:00:00:00:00:02", "1h"]);
    let before = status(&rig);
    let timed = |s: &provisioner::control::protocol::Status| {
        let session = s
            .clients
            .iter()
            .find(|c| c.mac.to_string() == "02:00:00:00:00:01");
        let ban = s
            .bans
            .iter()
            .find(|b| b.mac.to_string() == "02:00:00:00:00:02");
        match (session, ban) {
            (Some(c), Some(b)) => (c.session_left, b.left),
            _ => panic!(
                "client 1 or client 2's ban missing: {s:?}\n{}",
                daemon.lines().join("\n")
            ),
        }
    };
    let (session0, ban0) = timed(&before);
    let t0 = std::time::Instant::now();

    // Forward 2 h 50 min: the day now ends in about 10 minutes.
    std::fs::write(&offset, "+170m\n").unwrap();
    let line = daemon
        .wait_line("the wall clock moved", LOG)
        .expect("the day end follows the clock");
    assert!((8..=10).contains(&ends_in(&line)), "{line}");
    let (session, ban) = timed(&status(&rig));
    let passed = t0.elapsed().as_secs() + 2;
    assert!(
        session + passed >= session0 && session <= session0,
        "the session moved with the wall clock: {session0} -> {session}"
    );
    assert!(
        ban + passed >= ban0 && ban <= ban0,
        "the ban moved with the wall clock: {ban0} -> {ban}"
    );
    // What the quota used came through the rebuild: 100 KB left of 300 KB.
    let got = download(&rig, 1, 200_000).expect("connect");
    assert!(
        (50_000..150_000).contains(&got),
        "{got} bytes after 200 KB of a 300 KB quota and a clock jump"
    );

    // Back by four hours: the day ends later again (never before its local time).
    std::fs::write(&offset, "-70m\n").unwrap();
    let line = daemon
        .wait_line_where("the wall clock moved back", LOG, |l| {
            l.contains("the wall clock moved") && ends_in(l) > 60
        })
        .expect("the day end follows the clock back");
    // 3 h from the start, and the clock now 1 h 10 min behind: 4 h 10 min.
    assert!((247..=250).contains(&ends_in(&line)), "{line}");
    // (Client 1 is gone: its second download used up its quota.)
    let s = status(&rig);
    let ban = s
        .bans
        .iter()
        .find(|b| b.mac.to_string() == "02:00:00:00:00:02")
        .expect("client 2's ban")
        .left;
    assert!(
        ban <= ban0 && ban + t0.elapsed().as_secs() + 2 >= ban0,
        "{ban0} -> {ban}"
    );
}

/// The minutes in "the quotas' day ends in N min".
fn ends_in(line: &str) -> u64 {
    let rest = &line[line.find("ends in ").expect(line) + 8..];
    rest.split(' ').next().unwrap().parse().expect(line)
}
