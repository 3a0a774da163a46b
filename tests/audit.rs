//! The audit log in the netns rig: every decision one numbered, timestamped event, kept for
//! `provisionerctl events --since`, streamed to `events --follow`, logged as JSON objects
//! with `--log-format json` and to syslog with `--syslog`.

mod rig;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use provisioner::control::Reply;
use provisioner::control::protocol::{EventLine, Scalar};
use rig::*;

const LOG: Duration = Duration::from_secs(10);

fn field<'a>(e: &'a EventLine, key: &str) -> Option<&'a Scalar> {
    e.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn text(e: &EventLine, key: &str) -> String {
    match field(e, key) {
        Some(Scalar::Str(s)) => s.clone(),
        other => panic!("{key} of {e:?}: {other:?}"),
    }
}

fn refused_name(rig: &Rig, name: &str) {
    let got = dns(
        rig.client(1),
        SocketAddr::from((ROUTER_PROV, 53)),
        name,
        false,
        Duration::from_secs(5),
    );
    assert!(
        matches!(&got, Dns::Rcode(r) if r == "Refused"),
        "{name}: {got:?}"
    );
}

#[test]
fn decisions_are_numbered_kept_followed_and_logged_as_json() {
    let rig = Rig::new(1);
    let daemon = rig.spawn_daemon(&config(""), &["--log-format", "json"]);
    daemon.wait_line("ready", Duration::from_secs(30)).unwrap();
    let bin = daemon_bin();
    let sock = rig.control_socket();
    let follower = rig.spawn(
        rig.router(),
        &[
            bin.to_str().unwrap(),
            "provisionerctl",
            "-s",
            sock.to_str().unwrap(),
            "--json",
            "events",
            "--follow",
        ],
    );
    let page = follower.wait_line("\"events\"", LOG).unwrap();
    let Ok(Reply::Events(page)) = Reply::decode(&page) else {
        panic!("not a page: {page}");
    };
    assert_eq!(page.events[0].seq, 1, "{page:?}");
    assert_eq!(page.events[0].event, "config_loaded");
    assert_eq!(page.lost, 0);

    // Live: a client's lease and its refused question reach the follower as they happen.
    rig.dhcp(1).expect("lease");
    let granted = follower.wait_line("lease_granted", LOG).unwrap();
    refused_name(&rig, "elsewhere.example");
    let line = follower.wait_line("dns_refused", LOG).unwrap();
    let Ok(Reply::Event(refused)) = Reply::decode(&line) else {
        panic!("not an event: {line}");
    };
    let mac = provisioner::core::MacAddr(Rig::client_mac(1)).to_string();
    assert_eq!(text(&refused, "mac"), mac);
    assert_eq!(text(&refused, "name"), "elsewhere.example");
    assert_eq!(text(&refused, "type"), "A");
    assert_eq!(text(&refused, "reason"), "not_allowed");
    assert_eq!(refused.level, "warning");
    assert!(
        refused.ts.ends_with('Z') && refused.ts.len() == 24,
        "{}",
        refused.ts
    );
    let Ok(Reply::Event(granted)) = Reply::decode(&granted) else {
        panic!("{granted}");
    };
    assert!(granted.seq < refused.seq);

    // The daemon's JSON log holds the very same object.
    let logged = daemon
        .wait_line_where("the refusal in the log", LOG, |l| {
            l.contains("\"event\":\"dns_refused\"")
        })
        .unwrap();
    assert_eq!(serde_json::from_str::<EventLine>(&logged).unwrap(), refused);

    // --since: only what came after.
    let since = (refused.seq - 1).to_string();
    let Reply::Events(after) = rig.ctl(&["events", "--since", &since]) else {
        panic!("no page");
    };
    assert_eq!(after.events[0], refused);
    assert!(after.events.iter().all(|e| e.seq >= refused.seq));
    assert_eq!(
        (after.lost, after.next),
        (0, after.events.last().unwrap().seq + 1)
    );

    // A rejected config is an event too, saying where it is wrong.
    let bad = config("config limits 'limits'\n\toption max_clients 'many'\n");
    std::fs::write(rig.config_path(), &bad).unwrap();
    let at = format!("{}:{}:", rig.config_path().display(), bad.lines().count());
    let out = rig.ctl_output(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let line = follower.wait_line("config_rejected", LOG).unwrap();
    let Ok(Reply::Event(rejected)) = Reply::decode(&line) else {
        panic!("{line}");
    };
    let error = text(&rejected, "error");
    assert!(
        error.starts_with(&at) && error.contains("max_clients"),
        "{error}"
    );

    // Every line the daemon wrote is one JSON object.
    for l in daemon.lines() {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("ts").is_some() && v.get("level").is_some(), "{l}");
    }
    // For people: one event a line, numbered.
    let human = rig.ctl_output(&["events", "--since", &since]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.starts_with(&format!("#{} ", refused.seq))
            && human.contains(&format!(
                "event=dns_refused mac={mac} name=elsewhere.example"
            )),
        "{human}"
    );
}

#[test]
fn syslog_gets_each_line_with_its_priority() {
    let rig = Rig::new(1);
    let path = rig.dir().join("log");
    let logd = UnixDatagram::bind(&path).unwrap();
    logd.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = rig.spawn_daemon(&config(""), &["--syslog", path.to_str().unwrap()]);
    let mut got: Vec<String> = Vec::new();
    let wait_for = |needle: &str, got: &mut Vec<String>| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 2048];
        loop {
            if let Some(l) = got.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in syslog: {got:#?}"
            );
            if let Ok(n) = logd.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    wait_for("ready", &mut got);
    let loaded = wait_for("event=config_loaded", &mut got);
    // <daemon.info>provisionerd[PID]: the line, no timestamp (logd adds its own).
    let (head, line) = loaded.split_once(": ").unwrap();
    let pid = head
        .strip_prefix("<30>provisionerd[")
        .and_then(|p| p.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{loaded}"));
    assert!(pid.parse::<u32>().is_ok(), "{loaded}");
    assert!(
        line.starts_with("event=config_loaded file=") && line.ends_with(" seq=1"),
        "{line}"
    );
    rig.dhcp(1).expect("lease");
    refused_name(&rig, "elsewhere.example");
    let refused = wait_for("event=dns_refused", &mut got);
    assert!(
        refused.starts_with("<28>provisionerd["),
        "a warning: {refused}"
    );
    // Nothing went to stderr instead.
    assert!(
        !daemon.lines().iter().any(|l| l.contains("event=")),
        "{:?}",
        daemon.lines()
    );
}

/// A client's refused flows reach the log from the kernel with destination, port and why,
/// sampled: a burst of hundreds of packets is a handful of lines, not one per packet.
#[test]
fn blocked_flows_are_sampled_from_the_kernel_with_destination_and_why() {
    let rig = Rig::new(2);
    let d = rig.start_daemon(&config(""));
    rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");
    let m1 = provisioner::core::MacAddr(Rig::client_mac(1)).to_string();
    let m2 = provisioner::core::MacAddr(Rig::client_mac(2)).to_string();
    let quick = Duration::from_millis(500);
    for (dst, why) in [
        (SocketAddr::from((CLOUD_OTHER, 443)), "not_allowed"),
        (SocketAddr::from((HOME_HOST, 22)), "not_wan"),
        (SocketAddr::from((ROUTER_PROV, 22)), "router"),
    ] {
        let p = tcp(rig.client(1), dst, None, quick);
        assert!(!p.answered(), "{dst}: {p:?}");
        d.wait_line(
            &format!(
                "event=flow_blocked mac={m1} dst={} proto=tcp port={} why={why} threat=violation",
                dst.ip(),
                dst.port()
            ),
            LOG,
        )
        .unwrap();
    }
    // The twin: the allowed destination is reached, and nothing is reported about it.
    assert!(
        tcp(
            rig.client(1),
            SocketAddr::from((CLOUD_ALLOWED, 443)),
            None,
            LOG
        )
        .answered()
    );

    // A burst: 400 datagrams to as many ports of a refused destination.
    let burst = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for p in range(20000,20400): s.sendto(b'x',('{CLOUD_OTHER}',p))\n"
    );
    rig.client(1).exec_ok(&["python3", "-c", &burst]);
    // A marker from the other client, logged after the burst (one log socket, in order).
    assert!(
        !tcp(
            rig.client(2),
            SocketAddr::from((ROUTER_PROV, 23)),
            None,
            quick
        )
        .answered()
    );
    d.wait_line(
        &format!("event=flow_blocked mac={m2} dst={ROUTER_PROV} proto=tcp port=23"),
        LOG,
    )
    .unwrap();
    let reported = d
        .lines()
        .iter()
        .filter(|l| {
            l.contains(&format!(
                "event=flow_blocked mac={m1} dst={CLOUD_OTHER} proto=udp"
            ))
        })
        .count();
    assert!(
        (1..=8).contains(&reported),
        "{reported} lines for 400 packets"
    );
    // ... while the kernel dropped every one of them.
    let dropped = rig.router().exec_ok(&[
        "nft",
        "list",
        "chain",
        "inet",
        "provisioner",
        "forward_from_prov",
    ]);
    let packets: u64 = dropped
        .lines()
        .find(|l| l.contains("not allow-listed") && l.contains("drop"))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{dropped}"));
    assert!(packets >= 400, "{packets} dropped: {dropped}");
}
