//! Self-test of the namespace rig with no firewall at all: every path and probe that the
//! leak tests expect to FAIL under the daemon's firewall is shown here to be able to
//! succeed, and every failure mode a probe reports is shown to be told apart.
//! Root only: `cargo test --features rig --test rig_selftest`.

mod rig;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use rig::*;

/// For things that must work (they normally take milliseconds).
const OK: Duration = Duration::from_secs(5);
/// For things that must fail: how long we wait before calling it a timeout.
const FAIL: Duration = Duration::from_millis(1500);

fn answered(line: &str) -> Probe {
    Probe::Answered(line.to_string())
}

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Runs a command line (split at whitespace) in `ns`; panics unless it succeeds.
fn sh(ns: &Ns, line: &str) -> String {
    ns.exec_ok(&line.split_whitespace().collect::<Vec<_>>())
}

/// Gives client `i` a static address + default route (what DHCP would do).
fn static_v4(rig: &Rig, i: usize, last: u8) -> Ipv4Addr {
    let ip = Ipv4Addr::new(192, 168, 250, last);
    sh(rig.client(i), &format!("ip addr add {ip}/24 dev eth0"));
    sh(rig.client(i), "ip route add default via 192.168.250.1");
    ip
}

#[test]
fn router_reaches_every_server() {
    let rig = Rig::new(1);
    let r = rig.router();

    for (dst, line) in [
        (SocketAddr::from((CLOUD_ALLOWED, 443)), "cloud-443 11.0.0.2"),
        ((CLOUD_ALLOWED, 8443).into(), "cloud-8443 11.0.0.2"),
        ((CLOUD_OTHER, 443).into(), "other-443 11.0.0.2"),
        ((CLOUD_DNS, 853).into(), "dot-853 11.0.0.2"),
        ((CLOUD6_ALLOWED, 443).into(), "cloud6-443 2001:db8::2"),
        ((HOME_HOST, 22).into(), "home-22 192.168.1.1"),
        ((HOME_HOST, 80).into(), "home-80 192.168.1.1"),
    ] {
        assert_eq!(tcp(r, dst, None, OK), answered(line), "router -> {dst}");
    }
    assert_eq!(
        udp(r, (CLOUD_ALLOWED, 123), OK),
        answered("ntp-123 11.0.0.2")
    );
    assert_eq!(
        udp(r, (CLOUD_ALLOWED, 124), OK),
        answered("udp-124 11.0.0.2")
    );

    let answer = Dns::Answer(vec![DNS_ANSWER]);
    assert_eq!(
        dns(r, (CLOUD_DNS, 53), "Udp.Selftest.example", false, OK),
        answer
    );
    assert_eq!(
        dns(r, (CLOUD_DNS, 53), "tcp.selftest.example.", true, OK),
        answer
    );
    assert_eq!(
        rig.dns_names_seen(),
        ["udp.selftest.example", "tcp.selftest.example"]
    );

    assert!(ping(r, CLOUD_ALLOWED, OK));
    assert!(ping(r, CLOUD6_ALLOWED, OK));
    assert!(ping(r, HOME_HOST, OK));

    // The router's own listeners, from the home LAN and from a client.
    let home = rig.home();
    for port in [22, 80, 8080] {
        let line = format!("router-{port} {HOME_HOST}");
        assert_eq!(
            tcp(home, (ROUTER_LAN, port), None, OK),
            Probe::Answered(line)
        );
    }
    let c1 = static_v4(&rig, 1, 50);
    assert_eq!(
        tcp(r, (c1, 8080), None, OK),
        answered("client1-8080 192.168.250.1")
    );
    assert_eq!(
        tcp(rig.client(1), (ROUTER_PROV, 22), None, OK),
        answered("router-22 192.168.250.50")
    );

    // An explicit source address is really used (what spoofing tests rely on).
    sh(rig.client(1), "ip addr add 192.168.250.60/24 dev eth0");
    let src = Some(IpAddr::from([192, 168, 250, 60]));
    assert_eq!(
        tcp(rig.client(1), (ROUTER_PROV, 80), src, OK),
        answered("router-80 192.168.250.60")
    );
}

#[test]
fn probes_tell_failures_apart() {
    let rig = Rig::new(1);
    let r = rig.router();
    // Nothing listens: the cloud answers with RST / ICMP port unreachable.
    assert_eq!(tcp(r, (CLOUD_ALLOWED, 444), None, OK), Probe::Refused);
    assert_eq!(udp(r, (CLOUD_ALLOWED, 125), OK), Probe::Refused);
    assert!(matches!(
        dns(r, (CLOUD_ALLOWED, 53), "x.example", false, OK),
        Dns::Failed(_)
    ));
    assert!(matches!(
        dns(r, (CLOUD_ALLOWED, 53), "x.example", true, OK),
        Dns::Failed(_)
    ));
    // No such host: the cloud (not forwarding) silently drops. Probes that must time out
    // run concurrently so the test waits for one timeout, not one per probe.
    let nowhere = Ipv4Addr::new(11, 1, 0, 99);
    std::thread::scope(|s| {
        let t = s.spawn(|| tcp(r, (nowhere, 443), None, FAIL));
        let u = s.spawn(|| udp(r, (nowhere, 123), FAIL));
        let du = s.spawn(|| dns(r, (nowhere, 53), "x.example", false, FAIL));
        let dt = s.spawn(|| dns(r, (nowhere, 53), "x.example", true, FAIL));
        let p = s.spawn(|| ping(r, nowhere, FAIL));
        assert_eq!(t.join().unwrap(), Probe::TimedOut);
        assert_eq!(u.join().unwrap(), Probe::TimedOut);
        assert_eq!(du.join().unwrap(), Dns::NoAnswer);
        assert_eq!(dt.join().unwrap(), Dns::NoAnswer);
        assert!(!p.join().unwrap());
    });
    // A client without any address has no route at all.
    let p = tcp(rig.client(1), (CLOUD_ALLOWED, 443), None, FAIL);
    assert!(
        matches!(&p, Probe::Failed(e) if e.contains("unreachable")),
        "{p:?}"
    );
    assert!(!rig.dns_names_seen().iter().any(|n| n == "x.example"));
}

#[test]
fn client_reaches_cloud_only_through_masquerade() {
    let rig = Rig::new(1);
    let (r, c) = (rig.router(), rig.client(1));
    static_v4(&rig, 1, 50);

    // Forwarded but not masqueraded: the cloud has no route back to 192.168.250.0/24.
    std::thread::scope(|s| {
        let t = s.spawn(|| tcp(c, (CLOUD_ALLOWED, 443), None, FAIL));
        let u = s.spawn(|| udp(c, (CLOUD_ALLOWED, 123), FAIL));
        assert_eq!(t.join().unwrap(), Probe::TimedOut);
        assert_eq!(u.join().unwrap(), Probe::TimedOut);
    });

    let rules = rig.dir().join("masq.nft");
    std::fs::write(
        &rules,
        "table ip rigtest {\n\
         \tchain post { type nat hook postrouting priority srcnat; oifname \"wan0\" masquerade; }\n\
         }\n",
    )
    .unwrap();
    sh(r, &format!("nft -f {}", rules.display()));

    assert_eq!(
        tcp(c, (CLOUD_ALLOWED, 443), None, OK),
        answered("cloud-443 11.0.0.2")
    );
    assert_eq!(
        udp(c, (CLOUD_ALLOWED, 123), OK),
        answered("ntp-123 11.0.0.2")
    );
    let answer = Dns::Answer(vec![DNS_ANSWER]);
    assert_eq!(dns(c, (CLOUD_DNS, 53), "masq.example", false, OK), answer);
    assert_eq!(dns(c, (CLOUD_DNS, 53), "masq.example", true, OK), answer);
    assert_eq!(rig.dns_names_seen(), ["masq.example", "masq.example"]);

    // Back to the setup state: no client address, no rules.
    sh(r, "nft delete table ip rigtest");
    sh(c, "ip -4 addr flush dev eth0");
    assert_eq!(sh(c, "ip -4 addr show dev eth0"), "");
    assert_eq!(sh(c, "ip -4 route"), "");
}

#[test]
fn bridge_isolates_clients() {
    let rig = Rig::new(2);
    let (r, c1) = (rig.router(), rig.client(1));
    static_v4(&rig, 1, 50);
    let c2 = static_v4(&rig, 2, 51);
    let port2 = Rig::client_port(2);
    let show = sh(r, &format!("bridge -d link show dev {port2}"));
    assert!(show.contains("isolated on"), "{show}");

    std::thread::scope(|s| {
        let t = s.spawn(|| tcp(c1, (c2, 8080), None, FAIL));
        let p = s.spawn(|| ping(c1, c2, FAIL));
        let t = t.join().unwrap();
        assert!(!t.answered(), "{t:?}");
        assert!(!p.join().unwrap());
    });
    assert_eq!(
        tcp(r, (c2, 8080), None, OK),
        answered("client2-8080 192.168.250.1")
    );

    // Control: the same probe works once port isolation is off, so isolation is what stopped it.
    sh(r, &format!("bridge link set dev {port2} isolated off"));
    assert_eq!(
        tcp(c1, (c2, 8080), None, OK),
        answered("client2-8080 192.168.250.50")
    );
    sh(r, &format!("bridge link set dev {port2} isolated on"));
}

#[test]
fn ipv6_path_exists_without_firewall() {
    let rig = Rig::new(1);
    let c = rig.client(1);
    sh(c, "ip -6 addr add 2001:db8:2::100/64 dev eth0 nodad");
    sh(c, "ip -6 route add default via 2001:db8:2::1");

    assert_eq!(
        tcp(c, (CLOUD6_ALLOWED, 443), None, OK),
        answered("cloud6-443 2001:db8:2::100")
    );
    assert!(ping(c, CLOUD6_ALLOWED, OK));
    // The router's listeners are dual-stack, so v6 access to router services is testable too.
    assert_eq!(
        tcp(c, (ROUTER_PROV6, 22), None, OK),
        answered("router-22 2001:db8:2::100")
    );
}

#[test]
fn dhcp_against_throwaway_server() {
    let rig = Rig::new(2);
    let dir = rig.dir().to_str().unwrap();
    let (leases, pidfile) = (
        format!("--dhcp-leasefile={dir}/leases"),
        format!("--pid-file={dir}/dnsmasq.pid"),
    );
    let dnsmasq = rig.spawn(
        rig.router(),
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--dhcp-range=192.168.250.100,192.168.250.110,1m",
            "--interface=prov0",
            "--bind-interfaces",
            "--dhcp-authoritative",
            "--no-resolv",
            "--no-hosts",
            // Else dnsmasq holds back offers ~3 s while it pings the address.
            "--no-ping",
            &leases,
            &pidfile,
        ],
    );
    dnsmasq.wait_line("DHCP, IP range", OK).unwrap();

    let range = Ipv4Addr::new(192, 168, 250, 100)..=Ipv4Addr::new(192, 168, 250, 110);
    let ip1 = rig.dhcp(1).unwrap();
    let ip2 = rig.dhcp(2).unwrap();
    assert!(
        range.contains(&ip1) && range.contains(&ip2) && ip1 != ip2,
        "{ip1} {ip2}"
    );
    dnsmasq
        .wait_line(&format!("DHCPACK(prov0) {ip1} 02:00:00:00:00:01"), OK)
        .unwrap();
    dnsmasq
        .wait_line(&format!("DHCPACK(prov0) {ip2} 02:00:00:00:00:02"), OK)
        .unwrap();

    let c = rig.client(1);
    assert!(sh(c, "ip -4 addr show dev eth0").contains(&format!("inet {ip1}/24")));
    assert!(sh(c, "ip -4 route").contains("default via 192.168.250.1 dev eth0"));
    assert_eq!(
        tcp(c, (ROUTER_PROV, 22), None, OK),
        Probe::Answered(format!("router-22 {ip1}"))
    );
}

#[test]
fn proc_captures_output_and_signals() {
    let rig = Rig::new(0);
    let mut p = rig.spawn(
        rig.router(),
        &["sh", "-c", "echo ready; echo oops >&2; exec sleep 1000"],
    );
    // Order-independent, and each line satisfies one wait.
    assert_eq!(p.wait_line("oops", OK).unwrap(), "oops");
    assert_eq!(p.wait_line("ready", OK).unwrap(), "ready");
    let err = p
        .wait_line("ready", Duration::from_millis(200))
        .unwrap_err();
    assert!(err.contains("timed out") && err.contains("oops"), "{err}");
    assert_eq!(p.lines().len(), 2);

    assert_eq!(p.wait(Duration::from_millis(100)), None);
    p.signal(Signal::SIGTERM);
    let status = p.wait(OK).expect("exits on SIGTERM");
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));

    // The process really ran inside the router namespace.
    let q = rig.spawn(rig.router(), &["ip", "-br", "addr", "show", "dev", WAN_IF]);
    q.wait_line("11.0.0.2/30", OK).unwrap();
}

#[test]
fn drop_cleans_up_also_on_panic() {
    let rig = Rig::new(2);
    let names: Vec<String> = rig.namespaces().iter().map(|n| n.name.clone()).collect();
    let dir = rig.dir().to_path_buf();
    let mut proc_ = rig.spawn(rig.client(1), &["sleep", "1000"]);
    // Started behind the rig's back: must die with its namespace.
    let mut stray = Command::new("ip")
        .args(["netns", "exec", &rig.home().name, "sleep", "1000"])
        .spawn()
        .unwrap();
    assert!(names.iter().all(|n| ns_exists(n)) && dir.exists());

    drop(rig);
    assert!(
        names.iter().all(|n| !ns_exists(n)),
        "left behind: {names:?}"
    );
    assert!(!dir.exists());
    assert!(
        proc_.wait(Duration::ZERO).is_some(),
        "spawned process still running"
    );
    assert_eq!(stray.wait().unwrap().signal(), Some(Signal::SIGKILL as i32));

    let names = Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let rig = Rig::new(1);
        *names.lock().unwrap() = rig.namespaces().iter().map(|n| n.name.clone()).collect();
        panic!("test failure inside a rig");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 4);
    assert!(
        names.iter().all(|n| !ns_exists(n)),
        "left behind: {names:?}"
    );
}

#[test]
fn stale_namespaces_of_killed_runs_are_swept() {
    // A pid that existed and no longer does, like that of a SIGKILLed test run.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let name = format!("pv{dead}-router");
    let tmp = std::env::temp_dir().join(format!("pv{dead}-0"));
    std::fs::create_dir_all(&tmp).unwrap();

    // A leftover process holds the namespace (as a daemon of the killed run would).
    // unshare(2) before exec: spawn() returns after the exec, so it is in place by then.
    let mut holder = Command::new("sleep");
    holder.arg("1000");
    // SAFETY: unshare is a single syscall, fine between fork and exec.
    unsafe {
        holder.pre_exec(|| nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(Into::into))
    };
    let mut holder = holder.spawn().unwrap();
    let out = Command::new("ip")
        .args(["netns", "attach", &name, &holder.id().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A parallel test's Rig::new may sweep it first; either way it is gone afterwards.
    let _rig = Rig::new(0);
    assert!(!ns_exists(&name));
    assert!(!tmp.exists());
    assert_eq!(
        holder.wait().unwrap().signal(),
        Some(Signal::SIGKILL as i32)
    );
}

#[test]
fn killed_test_process_leaves_nothing_running() {
    if std::env::var_os("RIG_SELFTEST_HELPER").is_some() {
        return be_killed_with_a_rig();
    }
    // A real SIGKILLed run: this test, re-run in a child process that builds a rig,
    // starts a daemon-like process in it and then hangs until it is killed.
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_test_process_leaves_nothing_running",
            "--nocapture",
        ])
        .env("RIG_SELFTEST_HELPER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(helper.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("HELPER "))
        .expect("helper reports its rig");
    let mut words = line.split_whitespace().skip(1);
    let (sleeper, router) = (words.next().unwrap(), words.next().unwrap());
    let sleeper = pidfd(sleeper.parse().unwrap());
    assert!(ns_exists(router));

    helper.kill().unwrap();
    helper.wait().unwrap();
    // The kernel kills the rig's children with the process (PR_SET_PDEATHSIG) ...
    assert!(
        exits_within(&sleeper, OK),
        "process of a killed rig still running"
    );
    // ... and the next rig sweeps the namespaces.
    let _rig = Rig::new(0);
    assert!(!ns_exists(router));
}

fn be_killed_with_a_rig() {
    let rig = Rig::new(1);
    let sleeper = rig.spawn(rig.client(1), &["sleep", "1000"]);
    println!("HELPER {} {}", sleeper.pid(), rig.router().name);
    loop {
        std::thread::park();
    }
}

fn pidfd(pid: u32) -> OwnedFd {
    // SAFETY: plain syscall returning a new fd (checked) that we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(
        fd >= 0,
        "pidfd_open {pid}: {}",
        std::io::Error::last_os_error()
    );
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A pidfd polls readable once its process has exited.
fn exits_within(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) == 1 }
}
