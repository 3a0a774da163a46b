//! Leak tests against the real daemon, nft and DHCP in the netns rig. Each pair is a probe
//! that must succeed and a probe that must fail, so a refusal is never just a broken probe:
//! the succeeding half shows the target is up and reachable from where it is allowed (and
//! `rig_selftest` shows every refused probe succeeds when there is no firewall at all).

mod rig;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rig::*;

/// A probe that should succeed gets time; one that should fail gets long enough that a
/// working path would certainly have answered (the rig answers in milliseconds).
const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);

type Check<'a> = Box<dyn Fn() -> Result<String, String> + Send + Sync + 'a>;

struct Pair<'a> {
    what: &'static str,
    succeeds: Vec<(String, Check<'a>)>,
    refused: Vec<(String, Check<'a>)>,
}

/// Ok when the server with `label` answered.
fn answered(p: Probe, label: &str) -> Result<String, String> {
    match p {
        Probe::Answered(line) if line.starts_with(label) => Ok(line),
        other => Err(format!("{other:?}")),
    }
}

/// Ok when nothing answered.
fn refused(p: Probe) -> Result<String, String> {
    match p {
        Probe::Answered(line) => Err(format!("answered: {line}")),
        other => Ok(format!("{other:?}")),
    }
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Runs every check of every pair concurrently (refusals cost a timeout each) and fails
/// with the whole table if any check went the wrong way.
fn run_pairs(pairs: &[Pair]) {
    let results: Vec<Vec<(bool, Result<String, String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|p| {
                let checks: Vec<_> = p
                    .succeeds
                    .iter()
                    .map(|c| (true, c))
                    .chain(p.refused.iter().map(|c| (false, c)))
                    .map(|(want, (_, f))| (want, s.spawn(f)))
                    .collect();
                checks
            })
            .collect();
        handles
            .into_iter()
            .map(|hs| {
                hs.into_iter()
                    .map(|(want, h)| (want, h.join().expect("probe thread")))
                    .collect()
            })
            .collect()
    });
    let mut report = String::new();
    let mut failed = 0;
    for (pair, results) in pairs.iter().zip(results) {
        report.push_str(&format!("{}\n", pair.what));
        let names = pair.succeeds.iter().chain(&pair.refused).map(|(n, _)| n);
        for (name, (want, r)) in names.zip(results) {
            let ok = r.is_ok();
            if !ok {
                failed += 1;
            }
            let detail = match r {
                Ok(d) | Err(d) => d,
            };
            report.push_str(&format!(
                "  {} {:8} {name}: {detail}\n",
                if ok { "ok  " } else { "FAIL" },
                if want { "succeeds" } else { "refused" },
            ));
        }
    }
    println!("{report}");
    assert_eq!(
        failed, 0,
        "{failed} leak check(s) went the wrong way:\n{report}"
    );
}

fn tcp_ok<'a>(ns: &str, who: &'a Ns, dst: SocketAddr, label: &'static str) -> (String, Check<'a>) {
    (
        format!("{ns} -> {dst} tcp"),
        Box::new(move || answered(tcp(who, dst, None, YES), label)),
    )
}

fn tcp_no<'a>(ns: &str, who: &'a Ns, dst: SocketAddr) -> (String, Check<'a>) {
    (
        format!("{ns} -> {dst} tcp"),
        Box::new(move || refused(tcp(who, dst, None, NO))),
    )
}

/// A query to the public resolver: allowed means it reached the resolver and its answer
/// came back; refused means it never reached the resolver (the router took it) and the
/// resolver's answer did not come back.
fn dns_check<'a>(
    rig: &'a Rig,
    ns: &str,
    who: &'a Ns,
    name: &'static str,
    over_tcp: bool,
    want: bool,
) -> (String, Check<'a>) {
    (
        format!(
            "{ns} asks {CLOUD_DNS} for {name} over {}",
            if over_tcp { "tcp" } else { "udp" }
        ),
        Box::new(move || {
            let answer = dns(
                who,
                sa(CLOUD_DNS, 53),
                name,
                over_tcp,
                if want { YES } else { NO },
            );
            let reached = rig.dns_names_seen().iter().any(|n| n == name);
            let public = matches!(&answer, Dns::Answer(a) if a.contains(&DNS_ANSWER));
            let detail = format!("{answer:?}, public resolver saw it: {reached}");
            if reached == want && public == want {
                Ok(detail)
            } else {
                Err(detail)
            }
        }),
    )
}

fn ping_check<'a>(ns: &str, who: &'a Ns, dst: Ipv4Addr, want: bool) -> (String, Check<'a>) {
    (
        format!("{ns} pings {dst}"),
        Box::new(move || match ping(who, dst, if want { YES } else { NO }) {
            true if want => Ok("echo reply".into()),
            false if !want => Ok("no reply".into()),
            got => Err(format!("reply: {got}")),
        }),
    )
}

#[test]
fn leak_pairs() {
    let rig = Rig::new(2);
    let _daemon = rig.start_daemon(&config(""));
    let c1 = rig.dhcp(1).expect("client 1 gets a lease");
    let c2 = rig.dhcp(2).expect("client 2 gets a lease");
    assert_ne!(c1, c2);
    let (r, home, cl1, cl2) = (rig.router(), rig.home(), rig.client(1), rig.client(2));

    // Client 1 tries the router as next hop to client 2 (bridge isolation already stops the
    // direct path); and an IPv6 address and route, as if it had been given IPv6.
    cl1.exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{c2}/32"),
        "via",
        &ROUTER_PROV.to_string(),
    ]);
    cl1.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:2::100/64",
        "dev",
        HOST_IF,
        "nodad",
    ]);
    cl1.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        &ROUTER_PROV6.to_string(),
    ]);
    // IPv6 is off on the provisioning interface: the router kept no address there.
    let v6 = r.exec_ok(&["ip", "-6", "addr", "show", "dev", PROV_IF]);
    assert!(v6.trim().is_empty(), "prov0 still has IPv6: {v6}");

    let masqueraded = format!("cloud-443 {ROUTER_WAN}");
    let pairs = vec![
        Pair {
            what: "allowed server:port / same server, other port",
            succeeds: vec![
                (
                    format!("client1 -> {CLOUD_ALLOWED}:443 tcp, seen from the WAN address"),
                    Box::new(move || {
                        answered(tcp(cl1, sa(CLOUD_ALLOWED, 443), None, YES), &masqueraded)
                    }),
                ),
                tcp_ok("client2", cl2, sa(CLOUD_ALLOWED, 443), "cloud-443"),
                (
                    format!("client1 -> {CLOUD_ALLOWED}:123 udp"),
                    Box::new(move || answered(udp(cl1, sa(CLOUD_ALLOWED, 123), YES), "ntp-123")),
                ),
                tcp_ok("router", r, sa(CLOUD_ALLOWED, 8443), "cloud-8443"),
            ],
            refused: vec![
                tcp_no("client1", cl1, sa(CLOUD_ALLOWED, 8443)),
                (
                    format!("client1 -> {CLOUD_ALLOWED}:124 udp"),
                    Box::new(move || refused(udp(cl1, sa(CLOUD_ALLOWED, 124), NO))),
                ),
            ],
        },
        Pair {
            what: "another server",
            succeeds: vec![tcp_ok("router", r, sa(CLOUD_OTHER, 443), "other-443")],
            refused: vec![tcp_no("client1", cl1, sa(CLOUD_OTHER, 443))],
        },
        Pair {
            what: "home LAN host, from a client",
            succeeds: vec![
                tcp_ok("router", r, sa(HOME_HOST, 22), "home-22"),
                tcp_ok("router", r, sa(HOME_HOST, 80), "home-80"),
            ],
            refused: vec![
                tcp_no("client1", cl1, sa(HOME_HOST, 22)),
                tcp_no("client1", cl1, sa(HOME_HOST, 80)),
            ],
        },
        Pair {
            what: "a client, from the home LAN",
            succeeds: vec![tcp_ok("router", r, sa(c1, 8080), "client1-8080")],
            refused: vec![tcp_no("home", home, sa(c1, 8080))],
        },
        Pair {
            what: "another client (routed through the router)",
            succeeds: vec![tcp_ok("router", r, sa(c2, 8080), "client2-8080")],
            refused: vec![tcp_no("client1", cl1, sa(c2, 8080))],
        },
        Pair {
            what: "the router's own services",
            succeeds: vec![
                tcp_ok("home", home, sa(ROUTER_LAN, 22), "router-22"),
                tcp_ok("home", home, sa(ROUTER_LAN, 80), "router-80"),
                tcp_ok("home", home, sa(ROUTER_LAN, 8080), "router-8080"),
            ],
            refused: vec![
                tcp_no("client1", cl1, sa(ROUTER_PROV, 22)),
                tcp_no("client1", cl1, sa(ROUTER_PROV, 80)),
                tcp_no("client1", cl1, sa(ROUTER_PROV, 8080)),
                tcp_no("client1", cl1, sa(ROUTER_LAN, 80)),
                tcp_no("client1", cl1, sa(ROUTER_WAN, 22)),
            ],
        },
        Pair {
            what: "an outside DNS resolver over UDP",
            succeeds: vec![dns_check(
                &rig,
                "router",
                r,
                "router-udp.probe.test",
                false,
                true,
            )],
            refused: vec![dns_check(
                &rig,
                "client1",
                cl1,
                "leak-udp.probe.test",
                false,
                false,
            )],
        },
        Pair {
            what: "an outside DNS resolver over TCP",
            succeeds: vec![dns_check(
                &rig,
                "router",
                r,
                "router-tcp.probe.test",
                true,
                true,
            )],
            refused: vec![dns_check(
                &rig,
                "client1",
                cl1,
                "leak-tcp.probe.test",
                true,
                false,
            )],
        },
        Pair {
            what: "DNS over TLS (853)",
            succeeds: vec![tcp_ok("router", r, sa(CLOUD_DNS, 853), "dot-853")],
            refused: vec![tcp_no("client1", cl1, sa(CLOUD_DNS, 853))],
        },
        Pair {
            what: "IPv6",
            succeeds: vec![tcp_ok("router", r, sa(CLOUD6_ALLOWED, 443), "cloud6-443")],
            refused: vec![
                tcp_no("client1", cl1, sa(CLOUD6_ALLOWED, 443)),
                tcp_no("client1", cl1, sa(ROUTER_PROV6, 22)),
            ],
        },
        Pair {
            what: "ICMP to a host that is not allowed",
            succeeds: vec![
                ping_check("router", r, CLOUD_OTHER, true),
                ping_check("home", home, ROUTER_LAN, true),
            ],
            refused: vec![
                ping_check("client1", cl1, CLOUD_OTHER, false),
                ping_check("client1", cl1, ROUTER_PROV, false),
            ],
        },
    ];
    run_pairs(&pairs);
}

/// Spoofing: the same probe is refused while the MAC/IP pair has no lease, and answered
/// once the MAC is admitted and the pair is in the kernel's `leases` set, so the binding is
/// the only thing that decides.
#[test]
fn spoofed_source_ip_and_mac() {
    let rig = Rig::new(1);
    // The data plane alone: by default the first spoofed packet would also suspend the
    // client (tests/threat.rs), and the twins below need it admitted.
    let _daemon = rig.start_daemon(&config(
        "config threat 'threat'\n\toption spoofing 'report'\n",
    ));
    let c1 = rig.dhcp(1).expect("lease");
    let (r, cl1) = (rig.router(), rig.client(1));
    let mac1 = "02:00:00:00:00:01";
    // What admission and DHCP would have done for this pair: the MAC admitted, the pair
    // bound (in both tables: the arp table lets only bound senders answer the router).
    let bind = |mac: &str, ip: &str| {
        let add = |family: &str, set: &str, element: String| {
            r.exec_ok(&[
                "nft",
                "add",
                "element",
                family,
                "provisioner",
                set,
                &element,
            ]);
        };
        add("inet", "clients", format!("{{ {mac} timeout 60s }}"));
        add("inet", "leases", format!("{{ {mac} . {ip} timeout 60s }}"));
        add("arp", "leases", format!("{{ {mac} . {ip} timeout 60s }}"));
        // ...and the router's neighbour entry for the address pinned to the MAC.
        r.exec_ok(&[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "nud",
            "permanent",
            "dev",
            PROV_IF,
        ]);
    };
    // The router must ask again who has the address, as it would after a cache timeout.
    let forget = || r.exec_ok(&["ip", "neigh", "flush", "dev", PROV_IF]);
    let cloud = sa(CLOUD_ALLOWED, 443);

    // Own lease: through.
    answered(tcp(cl1, cloud, None, YES), "cloud-443").expect("own address works");

    // Source IP the client was not given (it answers ARP for it, so replies would reach it).
    let spoofed = "192.168.250.200";
    cl1.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{spoofed}/24"),
        "dev",
        HOST_IF,
    ]);
    forget();
    let src = Some(spoofed.parse().unwrap());
    refused(tcp(cl1, cloud, src, NO)).expect("unleased source address is refused");
    bind(mac1, spoofed);
    forget();
    answered(tcp(cl1, cloud, src, YES), "cloud-443").expect("same probe with the pair bound");

    // Source MAC other than the one the lease is bound to.
    let mac99 = "02:00:00:00:00:99";
    cl1.exec_ok(&["ip", "link", "set", "dev", HOST_IF, "address", mac99]);
    forget();
    refused(tcp(cl1, cloud, None, NO)).expect("unleased source MAC is refused");
    bind(mac99, &c1.to_string());
    forget();
    answered(tcp(cl1, cloud, None, YES), "cloud-443").expect("same probe with the pair bound");
}
