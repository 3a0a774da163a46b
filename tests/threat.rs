//! Threat responses in the netns rig (R12): what the kernel and the daemon see of a client
//! (blocked flows sampled over NFLOG, refused and over-rate questions, packets from an
//! address no lease gives it) is graded, and the response follows the `threat` section:
//! a prober is banned after the configured number of tries, a DNS flooder is banned, a
//! spoofer is suspended and the operator's alarm command runs once. Each with its twin: the
//! other client keeps working throughout.

mod rig;

use std::net::SocketAddr;
use std::time::Duration;

use provisioner::control::Reply;
use provisioner::control::protocol::StationKind;
use provisioner::core::MacAddr;
use rig::*;

const LOG: Duration = Duration::from_secs(10);
const QUICK: Duration = Duration::from_millis(500);

fn mac(i: usize) -> String {
    MacAddr(Rig::client_mac(i)).to_string()
}

fn reaches_cloud(rig: &Rig, client: usize) -> bool {
    tcp(
        rig.client(client),
        SocketAddr::from((CLOUD_ALLOWED, 443)),
        None,
        Duration::from_secs(3),
    )
    .answered()
}

fn banned(rig: &Rig, i: usize) -> Option<u64> {
    let m = MacAddr(Rig::client_mac(i));
    rig.status()
        .bans
        .iter()
        .find(|b| b.mac == m)
        .map(|b| b.left)
}

fn violations(rig: &Rig, i: usize) -> u64 {
    let m = MacAddr(Rig::client_mac(i));
    let Reply::Clients(c) = rig.ctl(&["clients"]) else {
        panic!("clients")
    };
    c.stations
        .iter()
        .find(|s| s.mac == m && s.state == StationKind::Admitted)
        .map(|s| s.violations)
        .unwrap_or_else(|| panic!("client {i} not admitted: {c:?}"))
}

/// A client that keeps probing the home LAN is evicted and banned at its third try (the
/// configured count, not the default ten); the other client, which probed once, keeps
/// its spot and its cloud.
#[test]
fn a_prober_of_the_home_lan_is_banned_at_the_configured_count_and_nobody_else() {
    let rig = Rig::new(2);
    let d = rig.start_daemon(&config(
        "config threat 'threat'\n\toption violations '3'\n\toption ban '2m'\n",
    ));
    rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");
    let (m1, m2) = (mac(1), mac(2));
    assert!(reaches_cloud(&rig, 1), "client 1 reaches its cloud before");
    // Client 2 probes once: reported, counted, nothing more.
    assert!(
        !tcp(
            rig.client(2),
            SocketAddr::from((HOME_HOST, 22)),
            None,
            QUICK
        )
        .answered()
    );
    d.wait_line(
        &format!("event=flow_blocked mac={m2} dst={HOME_HOST} proto=tcp port=22"),
        LOG,
    )
    .unwrap();
    assert_eq!(violations(&rig, 2), 1);
    // Client 1: two tries (each to another port, so each is its own event to wait for)...
    for port in [22, 23] {
        assert!(
            !tcp(
                rig.client(1),
                SocketAddr::from((HOME_HOST, port)),
                None,
                QUICK
            )
            .answered()
        );
        d.wait_line(
            &format!("event=flow_blocked mac={m1} dst={HOME_HOST} proto=tcp port={port} why=not_wan threat=violation"),
            LOG,
        )
        .unwrap();
    }
    assert_eq!(banned(&rig, 1), None, "two tries are not three");
    assert_eq!(violations(&rig, 1), 2);
    // ...and the third.
    assert!(
        !tcp(
            rig.client(1),
            SocketAddr::from((HOME_HOST, 24)),
            None,
            QUICK
        )
        .answered()
    );
    d.wait_line(
        &format!("event=abuse mac={m1} cause=violations count=3 threat=abuse"),
        LOG,
    )
    .unwrap();
    d.wait_line(&format!("event=evicted mac={m1} reason=abuse"), LOG)
        .unwrap();
    d.wait_line(
        &format!("event=banned mac={m1} secs=120 reason=abuse threat=abuse"),
        LOG,
    )
    .unwrap();
    let left = banned(&rig, 1).expect("client 1 banned");
    assert!((100..=120).contains(&left), "{left}");
    assert!(!reaches_cloud(&rig, 1), "a banned client reaches nothing");
    // The twin: client 2 keeps its spot and its cloud.
    assert_eq!(banned(&rig, 2), None);
    assert!(reaches_cloud(&rig, 2));
    assert_eq!(violations(&rig, 2), 1);
    let Reply::Metrics(m) = rig.ctl(&["metrics"]) else {
        panic!("metrics")
    };
    assert!(
        m.text.contains("provisioner_violations_total 4"),
        "{}",
        m.text
    );
}

/// A client that sends from another client's address is suspended (the long ban) and the
/// alarm command runs once, with the alarm as JSON on stdin and in its environment; the
/// client whose address it used keeps working.
#[test]
fn a_spoofer_is_suspended_and_the_alarm_command_runs_once() {
    let rig = Rig::new(2);
    let out = rig.dir().join("alarms");
    let env = rig.dir().join("alarm.env");
    let cmd = format!(
        "cat >> {o}; env | grep ^PROVISIONER_ >> {e}",
        o = out.display(),
        e = env.display()
    );
    let d = rig.start_daemon(&config(&format!(
        "config threat 'threat'\n\toption alarm_command '{cmd}'\n\toption suspend '6h'\n"
    )));
    let _c1 = rig.dhcp(1).expect("lease 1");
    let c2 = rig.dhcp(2).expect("lease 2");
    let (m1, m2) = (mac(1), mac(2));
    assert!(reaches_cloud(&rig, 1), "client 1 reaches its cloud before");

    // Client 1 takes client 2's address as a second one and sends from it.
    let cl1 = rig.client(1);
    cl1.exec_ok(&["ip", "addr", "add", &format!("{c2}/32"), "dev", HOST_IF]);
    let p = tcp(
        cl1,
        SocketAddr::from((CLOUD_ALLOWED, 443)),
        Some(c2.into()),
        QUICK,
    );
    assert!(!p.answered(), "a spoofed source is refused: {p:?}");
    let alarm = d
        .wait_line(&format!("event=alarm mac={m1} cause="), LOG)
        .unwrap();
    assert!(
        alarm.contains(&format!("ip={c2} owner={m2} secs=21600 threat=spoofing")),
        "{alarm}"
    );
    d.wait_line(
        &format!("event=banned mac={m1} secs=21600 reason=spoofing"),
        LOG,
    )
    .unwrap();
    assert!(banned(&rig, 1).is_some_and(|l| l > 21_000));
    assert!(
        !reaches_cloud(&rig, 1),
        "suspended: not even from its own address"
    );

    // The alarm command ran with the event.
    assert!(
        wait_until(LOG, Duration::from_millis(50), || {
            std::fs::read_to_string(&env).is_ok_and(|e| e.contains("PROVISIONER_MAC"))
        }),
        "the alarm command did not run: {:?}",
        d.lines()
    );
    let got = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 1, "{got}");
    let json: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    for (k, v) in [
        ("event", "alarm"),
        ("level", "alarm"),
        ("mac", m1.as_str()),
        ("owner", m2.as_str()),
        ("threat", "spoofing"),
    ] {
        assert_eq!(json[k], v, "{k} in {json}");
    }
    assert_eq!(json["ip"], c2.to_string());
    assert_eq!(json["secs"], 21_600);
    let vars = std::fs::read_to_string(&env).unwrap();
    for want in [
        format!("PROVISIONER_MAC={m1}"),
        format!("PROVISIONER_IP={c2}"),
        "PROVISIONER_EVENT=alarm".to_owned(),
        "PROVISIONER_LEVEL=alarm".to_owned(),
    ] {
        assert!(vars.lines().any(|l| l == want), "{want} not in {vars}");
    }

    // More from the suspended client: no second alarm. (A marker from client 2 afterwards,
    // through the same log, says the daemon saw everything before it.)
    for _ in 0..3 {
        let _ = tcp(
            cl1,
            SocketAddr::from((CLOUD_ALLOWED, 443)),
            Some(c2.into()),
            QUICK,
        );
    }
    assert!(
        !tcp(
            rig.client(2),
            SocketAddr::from((HOME_HOST, 25)),
            None,
            QUICK
        )
        .answered()
    );
    d.wait_line(&format!("event=flow_blocked mac={m2} dst={HOME_HOST}"), LOG)
        .unwrap();
    let alarms = d
        .lines()
        .iter()
        .filter(|l| l.contains("event=alarm "))
        .count();
    assert_eq!(alarms, 1, "{:?}", d.lines());
    // The victim keeps its address and its cloud.
    assert_eq!(banned(&rig, 2), None);
    assert!(reaches_cloud(&rig, 2));
}

/// A DNS query for `name` (type A), as bytes.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A client that floods the resolver far over its rate is banned as a flooder; the other
/// client's questions are still answered and its cloud still reached.
#[test]
fn a_dns_flooder_is_banned_and_the_other_client_still_resolves() {
    let rig = Rig::new(2);
    let d = rig.start_daemon(&config(
        "config dns 'dns'\n\toption client_qps '5'\nconfig threat 'threat'\n\toption dns_flood '20'\n\toption violations '1000'\n",
    ));
    rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");
    let m1 = mac(1);
    let bytes: Vec<String> = query(7, "flood.example")
        .iter()
        .map(|b| b.to_string())
        .collect();
    let flood = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         q=bytes([{}])\nfor _ in range(300): s.sendto(q,('{ROUTER_PROV}',53))\n",
        bytes.join(",")
    );
    rig.client(1).exec_ok(&["python3", "-c", &flood]);
    d.wait_line(
        &format!("event=abuse mac={m1} cause=dns_flood count=20 threat=abuse"),
        LOG,
    )
    .unwrap();
    d.wait_line(&format!("event=banned mac={m1} secs=600 reason=abuse"), LOG)
        .unwrap();
    assert!(banned(&rig, 1).is_some());
    // The twin: client 2 is answered (refused: the name is on no list, but answered, not
    // dropped as a flooder's) and reaches its cloud.
    let got = dns(
        rig.client(2),
        SocketAddr::from((ROUTER_PROV, 53)),
        "other.example",
        false,
        Duration::from_secs(5),
    );
    assert!(matches!(&got, Dns::Rcode(r) if r == "Refused"), "{got:?}");
    assert_eq!(banned(&rig, 2), None);
    assert!(reaches_cloud(&rig, 2));
}
