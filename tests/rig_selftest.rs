//! Self-test of the namespace rig with no firewall at all: every path and probe that the
//! leak tests expect to FAIL under the daemon's firewall is shown here to be able to
//! succeed, and every failure mode a probe reports is shown to be told apart.
//! Root only: `cargo test --features rig --test rig_selftest`.

mod rig;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
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

/// `dns_query` from the router, which must get a response.
fn ask(rig: &Rig, server: Ipv4Addr, name: &str, qtype: RecordType, tcp: bool) -> DnsReply {
    dns_query(rig.router(), (server, 53), name, qtype, tcp, OK)
        .unwrap_or_else(|e| panic!("{name} {qtype} at {server} (tcp {tcp}): {e:?}"))
}

fn zone_a(ttl: u32, a: &[Ipv4Addr]) -> FakeAnswer {
    FakeAnswer {
        a: a.to_vec(),
        ttl,
        ..FakeAnswer::default()
    }
}

fn zone_cname(ttl: u32, target: &str) -> FakeAnswer {
    FakeAnswer {
        cname: Some(target.into()),
        ttl,
        ..FakeAnswer::default()
    }
}

#[test]
fn fake_resolver_answers_from_the_zone() {
    let rig = Rig::new(0);
    let (a, aaaa) = (RecordType::A, RecordType::AAAA);
    // Case and trailing dots do not matter, in the zone nor in questions.
    rig.dns_zone("a.example", zone_cname(300, "B.Example."));
    rig.dns_zone("b.example.", zone_cname(120, "c.example"));
    rig.dns_zone(
        "C.example",
        FakeAnswer {
            a: vec![CLOUD_ALLOWED],
            aaaa: vec![CLOUD6_ALLOWED],
            ttl: 30,
            ..FakeAnswer::default()
        },
    );

    for tcp in [false, true] {
        let chain = ask(&rig, CLOUD_DNS, "a.example", a, tcp);
        assert_eq!(
            chain,
            DnsReply {
                rcode: "NoError".into(),
                a: vec![CLOUD_ALLOWED],
                aaaa: vec![],
                cnames: vec!["b.example".into(), "c.example".into()],
                min_ttl: Some(30),
                answers: vec![
                    "a.example 300 CNAME b.example.".into(),
                    "b.example 120 CNAME c.example.".into(),
                    "c.example 30 A 11.1.0.10".into(),
                ],
                truncated: false,
            },
            "tcp {tcp}"
        );
    }
    // AAAA through the same chain; the first owner keeps the question's spelling.
    let chain6 = ask(&rig, CLOUD_DNS, "A.Example.", aaaa, false);
    assert_eq!(chain6.aaaa, [CLOUD6_ALLOWED]);
    assert_eq!(chain6.cnames, ["b.example", "c.example"]);
    assert!(chain6.a.is_empty());
    assert_eq!(
        dns_query(rig.router(), (CLOUD_DNS, 53), "A.Example.", aaaa, false, OK).map(|r| r.rcode),
        Ok("NoError".into())
    );

    // A name with AAAA only: its A question is an empty NOERROR.
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x66);
    rig.dns_zone(
        "v6only.example",
        FakeAnswer {
            aaaa: vec![CLOUD6_ALLOWED, v6],
            ttl: 45,
            ..FakeAnswer::default()
        },
    );
    let r = ask(&rig, CLOUD_DNS, "v6only.example", aaaa, true);
    assert_eq!((r.aaaa, r.min_ttl), (vec![CLOUD6_ALLOWED, v6], Some(45)));
    let r = ask(&rig, CLOUD_DNS, "v6only.example", a, false);
    assert_eq!(
        (r.rcode.as_str(), r.answers.len(), r.min_ttl),
        ("NoError", 0, None)
    );

    // Response codes, also at the end of a chain (which keeps its CNAME).
    rig.dns_zone(
        "gone.example",
        FakeAnswer {
            rcode: Some(ResponseCode::NXDomain),
            a: vec![CLOUD_ALLOWED],
            ..FakeAnswer::default()
        },
    );
    rig.dns_zone("dangling.example", zone_cname(10, "gone.example"));
    rig.dns_zone(
        "broken.example",
        FakeAnswer {
            rcode: Some(ResponseCode::ServFail),
            ..FakeAnswer::default()
        },
    );
    for tcp in [false, true] {
        let r = ask(&rig, CLOUD_DNS, "gone.example", a, tcp);
        assert_eq!((r.rcode.as_str(), r.answers.len()), ("NXDomain", 0));
    }
    let r = ask(&rig, CLOUD_DNS, "dangling.example", aaaa, false);
    assert_eq!(r.rcode, "NXDomain");
    assert_eq!(r.cnames, ["gone.example"]);
    assert_eq!(
        ask(&rig, CLOUD_DNS, "broken.example", a, false).rcode,
        "ServFail"
    );
    assert_eq!(
        dns(rig.router(), (CLOUD_DNS, 53), "gone.example", false, OK),
        Dns::Rcode("NXDomain".into())
    );

    // A CNAME out of the zone ends at the default answer; loops and long chains stop.
    rig.dns_zone("out.example", zone_cname(7, "elsewhere.example"));
    let r = ask(&rig, CLOUD_DNS, "out.example", a, false);
    assert_eq!(
        r.answers,
        [
            "out.example 7 CNAME elsewhere.example.",
            "elsewhere.example 60 A 11.9.9.9"
        ]
    );
    rig.dns_zone("loop1.example", zone_cname(5, "loop2.example"));
    rig.dns_zone("loop2.example", zone_cname(5, "loop1.example"));
    let r = ask(&rig, CLOUD_DNS, "loop1.example", a, true);
    assert_eq!(
        (r.rcode.as_str(), r.cnames.as_slice(), r.a.len()),
        (
            "NoError",
            &["loop2.example".to_string(), "loop1.example".into()][..],
            0
        )
    );
    for i in 0..20 {
        rig.dns_zone(
            &format!("l{i}.example"),
            zone_cname(5, &format!("l{}.example", i + 1)),
        );
    }
    let r = ask(&rig, CLOUD_DNS, "l0.example", a, false);
    assert_eq!(r.cnames.len(), DNS_MAX_CNAME_LINKS);
    assert_eq!(r.cnames.last().unwrap(), "l8.example");
    assert!(r.a.is_empty());

    // Outside the zone: A gets DNS_ANSWER, AAAA and other types an empty NOERROR (also
    // for names in the zone).
    let r = ask(&rig, CLOUD_DNS, "elsewhere.example", a, false);
    assert_eq!((r.a, r.min_ttl), (vec![DNS_ANSWER], Some(DNS_TTL)));
    for (name, qtype) in [
        ("elsewhere.example", aaaa),
        ("elsewhere.example", RecordType::TXT),
        ("c.example", RecordType::MX),
        ("a.example", RecordType::HTTPS),
    ] {
        let r = ask(&rig, CLOUD_DNS, name, qtype, false);
        assert_eq!(
            (r.rcode.as_str(), r.answers.len()),
            ("NoError", 0),
            "{name} {qtype}"
        );
    }

    // Counted per question name, any type and case (a.example: 2 A, 2 AAAA, 1 HTTPS); the
    // CNAME targets a resolver followed by itself do not count (c.example: the MX only).
    assert_eq!(rig.dns_queries("a.example"), 5);
    assert_eq!(rig.dns_queries("A.EXAMPLE."), 5);
    assert_eq!(rig.dns_queries("b.example"), 0);
    assert_eq!(rig.dns_queries("c.example"), 1);
    assert_eq!(rig.dns_queries("gone.example"), 3);
    assert_eq!(rig.dns_queries("never.example"), 0);
    assert_eq!(rig.dns_queries_at(CLOUD_DNS, "a.example"), 5);
    assert_eq!(rig.dns_queries_at(CLOUD_DNS2, "a.example"), 0);
    let seen = rig.dns_names_seen();
    assert_eq!(&seen[..3], ["a.example", "a.example", "a.example"]);
    assert_eq!(seen.last().unwrap(), "a.example");

    // Too big for a UDP response without EDNS: truncated (TC, no records); TCP has it all.
    let many: Vec<Ipv4Addr> = (1..=100).map(|i| Ipv4Addr::new(11, 2, 0, i)).collect();
    rig.dns_zone("many.example", zone_a(60, &many));
    let r = ask(&rig, CLOUD_DNS, "many.example", a, false);
    assert_eq!((r.truncated, r.answers.len()), (true, 0));
    let r = ask(&rig, CLOUD_DNS, "many.example", a, true);
    assert_eq!((r.truncated, r.a), (false, many));

    // Replacing an entry and clearing the zone take effect at once; dns() sees it too.
    rig.dns_zone("c.example", zone_a(99, &[CLOUD_OTHER, CLOUD_ALLOWED]));
    assert_eq!(
        dns(rig.router(), (CLOUD_DNS, 53), "a.example", true, OK),
        Dns::Answer(vec![CLOUD_OTHER, CLOUD_ALLOWED])
    );
    rig.dns_clear_zone();
    let r = ask(&rig, CLOUD_DNS, "a.example", a, false);
    assert_eq!((r.a, r.cnames.len()), (vec![DNS_ANSWER], 0));
}

#[test]
fn second_resolver_shares_the_zone_and_is_counted_apart() {
    let rig = Rig::new(0);
    rig.dns_zone("both.example", zone_a(40, &[CLOUD_ALLOWED]));
    for (server, tcp) in [
        (CLOUD_DNS2, false),
        (CLOUD_DNS2, true),
        (CLOUD_DNS2, false),
        (CLOUD_DNS, true),
    ] {
        let r = ask(&rig, server, "both.example", RecordType::A, tcp);
        assert_eq!(
            (r.a, r.min_ttl),
            (vec![CLOUD_ALLOWED], Some(40)),
            "{server}"
        );
    }
    assert_eq!(
        dns(rig.router(), (CLOUD_DNS2, 53), "other.example", false, OK),
        Dns::Answer(vec![DNS_ANSWER])
    );
    assert_eq!(rig.dns_queries("both.example"), 4);
    assert_eq!(rig.dns_queries_at(CLOUD_DNS2, "both.example"), 3);
    assert_eq!(rig.dns_queries_at(CLOUD_DNS, "both.example"), 1);
    assert_eq!(rig.dns_queries_at(CLOUD_DNS2, "other.example"), 1);
    assert_eq!(rig.dns_queries_at(CLOUD_DNS, "other.example"), 0);
    assert_eq!(rig.dns_names_seen().len(), 5);
}

/// A raw DNS-over-TCP connection from `ns` (to see what a silent resolver does with it).
fn dns_tcp_connect(ns: &Ns, server: Ipv4Addr) -> TcpStream {
    ns.run(|| TcpStream::connect_timeout(&(server, 53).into(), OK).unwrap())
}

fn dns_tcp_send(s: &mut TcpStream, name: &str) -> u16 {
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let wire = q.to_vec().unwrap();
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    s.write_all(&framed).unwrap();
    q.metadata.id
}

/// The next response on `s`: Err(kind) if none came (WouldBlock: still open, nothing sent).
fn dns_tcp_recv(s: &mut TcpStream, timeout: Duration) -> Result<Message, ErrorKind> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| e.kind())?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).map_err(|e| e.kind())?;
    Ok(Message::from_vec(&msg).unwrap())
}

#[test]
fn silent_and_dead_resolvers() {
    let rig = Rig::new(0);
    let r = rig.router();
    let a = RecordType::A;
    rig.dns_zone("quiet.example", zone_a(60, &[CLOUD_ALLOWED]));

    // Silent: every query times out (both resolvers, both transports), but is recorded.
    // The probes that must time out run concurrently: one timeout for all.
    rig.dns_silent(true);
    let mut held = dns_tcp_connect(r, CLOUD_DNS);
    let held_id = dns_tcp_send(&mut held, "quiet.example");
    std::thread::scope(|s| {
        let probes: Vec<_> = [
            (CLOUD_DNS, false),
            (CLOUD_DNS, true),
            (CLOUD_DNS2, false),
            (CLOUD_DNS2, true),
        ]
        .into_iter()
        .map(|(server, tcp)| {
            s.spawn(move || {
                let t = Instant::now();
                let res = dns_query(r, (server, 53), "quiet.example", a, tcp, FAIL);
                (server, tcp, res, t.elapsed())
            })
        })
        .collect();
        let old = s.spawn(|| dns(r, (CLOUD_DNS, 53), "quiet.example", false, FAIL));
        for p in probes {
            let (server, tcp, res, took) = p.join().unwrap();
            assert_eq!(res, Err(DnsError::TimedOut), "{server} tcp {tcp}");
            // A lower bound, which no slow machine breaks: the probe waited out the timeout
            // it was given before it called it one, rather than mistaking an error for it.
            // (Less one kernel tick: SO_RCVTIMEO counts in jiffies, HZ 100 at the least.)
            assert!(
                took >= FAIL - Duration::from_millis(10),
                "{server} tcp {tcp}: {took:?}"
            );
        }
        assert_eq!(old.join().unwrap(), Dns::NoAnswer);
    });
    // The held connection is still open, without an answer.
    assert_eq!(
        dns_tcp_recv(&mut held, Duration::from_millis(100)).unwrap_err(),
        ErrorKind::WouldBlock
    );
    assert_eq!(rig.dns_queries("quiet.example"), 6);
    assert_eq!(rig.dns_queries_at(CLOUD_DNS2, "quiet.example"), 2);

    // Only the first one silent: the second one answers (what failover needs).
    rig.dns_silent(false);
    rig.dns_silent_at(CLOUD_DNS, true);
    std::thread::scope(|s| {
        let first = s.spawn(|| dns_query(r, (CLOUD_DNS, 53), "quiet.example", a, false, FAIL));
        for tcp in [false, true] {
            assert_eq!(
                ask(&rig, CLOUD_DNS2, "quiet.example", a, tcp).a,
                [CLOUD_ALLOWED]
            );
        }
        assert_eq!(first.join().unwrap(), Err(DnsError::TimedOut));
    });

    // Answering again, also on the held connection: its next question gets the answer, the
    // one asked while silent never does.
    rig.dns_silent_at(CLOUD_DNS, false);
    for (server, tcp) in [(CLOUD_DNS, false), (CLOUD_DNS, true), (CLOUD_DNS2, false)] {
        assert_eq!(
            ask(&rig, server, "quiet.example", a, tcp).a,
            [CLOUD_ALLOWED]
        );
    }
    let next_id = dns_tcp_send(&mut held, "quiet.example");
    assert_ne!(next_id, held_id);
    let answer = dns_tcp_recv(&mut held, OK).unwrap();
    assert_eq!(answer.metadata.id, next_id);
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(
        dns_tcp_recv(&mut held, Duration::from_millis(200)).unwrap_err(),
        ErrorKind::WouldBlock
    );
    assert_eq!(rig.dns_queries("quiet.example"), 13);

    // Nothing listens at CLOUD_DNS_DEAD: port unreachable / RST, which the probe reports as
    // Refused (not as the TimedOut a silent resolver gets).
    for tcp in [false, true] {
        let res = dns_query(r, (CLOUD_DNS_DEAD, 53), "dead.example", a, tcp, OK);
        assert_eq!(res, Err(DnsError::Refused), "tcp {tcp}");
        assert_eq!(
            dns(r, (CLOUD_DNS_DEAD, 53), "dead.example", tcp, OK),
            Dns::Failed("refused".into())
        );
    }
    assert_eq!(udp(r, (CLOUD_DNS_DEAD, 53), OK), Probe::Refused);
    assert_eq!(tcp(r, (CLOUD_DNS_DEAD, 53), None, OK), Probe::Refused);
    assert!(ping(r, CLOUD_DNS_DEAD, OK), "the address itself exists");
    assert_eq!(rig.dns_queries("dead.example"), 0);
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

/// Without the daemon, clients reach each other through the bridge (as on a router whose
/// bridge nobody isolated), so a refusal in the tests is the daemon's doing; and the rig's
/// port isolation (for tests of hostapd alone) stops it.
#[test]
fn clients_reach_each_other_until_the_ports_are_isolated() {
    let rig = Rig::new(2);
    let (r, c1) = (rig.router(), rig.client(1));
    static_v4(&rig, 1, 50);
    let c2 = static_v4(&rig, 2, 51);
    let port2 = Rig::client_port(2);
    assert_eq!(
        tcp(c1, (c2, 8080), None, OK),
        answered("client2-8080 192.168.250.50")
    );
    assert!(ping(c1, c2, OK));

    rig.isolate_ports();
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
    let sleeper = PidFd::open(sleeper.parse().unwrap()).expect("pidfd of the helper's child");
    assert!(ns_exists(router));

    helper.kill().unwrap();
    helper.wait().unwrap();
    // The kernel kills the rig's children with the process (PR_SET_PDEATHSIG) ...
    assert!(
        sleeper.exited_within(OK),
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
