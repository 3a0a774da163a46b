//! The router's DNS allow-list resolver with real DNS traffic in the netns rig: allowed
//! names resolve and open exactly their addresses for the asking client, everything else is
//! refused, cached answers keep working, rebinding answers open nothing, floods are
//! limited, allow-list changes take effect at once, only the provisioning network gets
//! answers (also after a reload moves it), and one client holding TCP connections takes
//! nobody else's.

mod rig;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use nix::sys::signal::Signal;
use provisioner::dns::{TCP_IDLE, TCP_PER_CLIENT};
use rig::*;

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);
const LOG: Duration = Duration::from_secs(10);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The maker's cloud is reachable only by name: no static address in the allow-list.
fn dns_config(extra: &str) -> String {
    format!(
        "config network 'network'
\toption interface '{PROV_IF}'
\toption wan '{WAN_IF}'
\toption subnet '{PROV_NET}/{PROV_PREFIX}'

config window 'window'
\toption mode 'always'

config dns 'dns'
\tlist upstream '{CLOUD_DNS}'
{extra}
config allow 'acme'
\tlist domain 'setup.acme.example'
\tlist domain '*.iot.acme.example'
\tlist port '443'
\tlist port '80'
"
    )
}

fn ask(rig: &Rig, client: usize, name: &str, qtype: RecordType) -> DnsReply {
    dns_query(
        rig.client(client),
        sa(ROUTER_PROV, 53),
        name,
        qtype,
        false,
        YES,
    )
    .unwrap_or_else(|e| panic!("{name} {qtype}: {e:?}"))
}

fn a(ip: [u8; 4], ttl: u32) -> FakeAnswer {
    FakeAnswer {
        a: vec![Ipv4Addr::from(ip)],
        ttl,
        ..FakeAnswer::default()
    }
}

fn cloud_reachable(rig: &Rig, client: usize, timeout: Duration) -> bool {
    tcp(rig.client(client), sa(CLOUD_ALLOWED, 443), None, timeout).answered()
}

fn learned4(rig: &Rig) -> String {
    rig.router()
        .exec_ok(&["nft", "list", "set", "inet", "provisioner", "learned4"])
}

#[test]
fn an_allowed_name_opens_its_address_for_the_client_that_asked() {
    let rig = Rig::new(2);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 300));
    let _d = rig.start_daemon(&dns_config(""));
    rig.dhcp(1).unwrap();
    rig.dhcp(2).unwrap();

    // Nothing is open before the name is resolved.
    assert!(!cloud_reachable(&rig, 1, NO));
    let r = ask(&rig, 1, "Setup.Acme.Example", RecordType::A);
    assert_eq!(
        (r.rcode.as_str(), r.a.as_slice()),
        ("NoError", &[CLOUD_ALLOWED][..])
    );
    // The first SYN right after the answer goes through: the element was in before it.
    assert!(cloud_reachable(&rig, 1, YES));
    // Only the allow-listed ports, and only for the client that asked.
    assert!(!tcp(rig.client(1), sa(CLOUD_ALLOWED, 8443), None, NO).answered());
    assert!(!cloud_reachable(&rig, 2, NO), "client 2 did not ask");
    assert!(tcp(rig.router(), sa(CLOUD_ALLOWED, 8443), None, YES).answered());
    let set = learned4(&rig);
    assert!(
        set.contains("02:00:00:00:00:01 . 11.1.0.10 . tcp . 443")
            && set.contains("comment \"setup.acme.example\""),
        "{set}"
    );

    // Over TCP too, and through a wildcard.
    rig.dns_zone("eu.iot.acme.example", a([11, 1, 0, 10], 300));
    let r = dns_query(
        rig.client(2),
        sa(ROUTER_PROV, 53),
        "eu.iot.acme.example",
        RecordType::A,
        true,
        YES,
    )
    .unwrap();
    assert_eq!(r.a, [CLOUD_ALLOWED]);
    assert!(cloud_reachable(&rig, 2, YES));
}

#[test]
fn other_names_and_types_are_refused_and_never_forwarded() {
    let rig = Rig::new(1);
    let d = rig.start_daemon(&dns_config(""));
    rig.dhcp(1).unwrap();
    for name in [
        "example.com",
        "acme.example",
        "iot.acme.example",
        "setup.acme.example.evil",
    ] {
        let r = ask(&rig, 1, name, RecordType::A);
        assert_eq!(r.rcode, "Refused", "{name}");
        assert_eq!(rig.dns_queries(name), 0, "{name} reached the upstream");
    }
    d.wait_line("event=dns_refused mac=02:00:00:00:00:01 name=example.com type=A reason=not_allowed threat=violation", LOG)
        .unwrap();
    // No tunnel: TXT (and any type but A/AAAA) is refused even for an allowed name.
    let r = ask(&rig, 1, "setup.acme.example", RecordType::TXT);
    assert_eq!(r.rcode, "Refused");
    d.wait_line("name=setup.acme.example type=TXT reason=query_type", LOG)
        .unwrap();
    // AAAA for an allowed name: an empty answer while IPv6 is off, not forwarded.
    rig.dns_zone(
        "setup.acme.example",
        FakeAnswer {
            aaaa: vec!["2001:db8:1::10".parse().unwrap()],
            a: vec![CLOUD_ALLOWED],
            ttl: 60,
            ..FakeAnswer::default()
        },
    );
    let r = ask(&rig, 1, "setup.acme.example", RecordType::AAAA);
    assert_eq!((r.rcode.as_str(), r.aaaa.len()), ("NoError", 0));
    assert_eq!(rig.dns_queries("setup.acme.example"), 0);
    // A client asking a public resolver is answered by the router, on the same terms.
    let r = dns_query(
        rig.client(1),
        sa(CLOUD_DNS, 53),
        "leak.example",
        RecordType::A,
        false,
        YES,
    )
    .unwrap();
    assert_eq!(r.rcode, "Refused");
    assert_eq!(rig.dns_queries("leak.example"), 0);
}

#[test]
fn cname_chains_are_followed_and_their_addresses_learned() {
    let rig = Rig::new(1);
    rig.dns_zone(
        "setup.acme.example",
        FakeAnswer {
            cname: Some("edge.cdn.example".into()),
            ttl: 300,
            ..FakeAnswer::default()
        },
    );
    rig.dns_zone(
        "edge.cdn.example",
        FakeAnswer {
            cname: Some("node7.cdn.example".into()),
            ttl: 120,
            ..FakeAnswer::default()
        },
    );
    rig.dns_zone("node7.cdn.example", a([11, 1, 0, 10], 30));
    let _d = rig.start_daemon(&dns_config(""));
    rig.dhcp(1).unwrap();
    let r = ask(&rig, 1, "setup.acme.example", RecordType::A);
    assert_eq!(r.cnames, ["edge.cdn.example", "node7.cdn.example"]);
    assert_eq!(r.a, [CLOUD_ALLOWED]);
    assert!(cloud_reachable(&rig, 1, YES));
    // The chain's target is not itself an allowed name.
    assert_eq!(
        ask(&rig, 1, "node7.cdn.example", RecordType::A).rcode,
        "Refused"
    );
}

#[test]
fn ttl_expiry_closes_and_a_cached_answer_reopens() {
    let rig = Rig::new(1);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 60));
    let _d = rig.start_daemon(&dns_config(
        "\toption ttl_floor '0'\n\toption ttl_cap '2s'\n\toption ttl_grace '0'\n",
    ));
    rig.dhcp(1).unwrap();
    let r = ask(&rig, 1, "setup.acme.example", RecordType::A);
    assert_eq!(
        r.min_ttl,
        Some(2),
        "the client is told no more than the element lives"
    );
    assert!(cloud_reachable(&rig, 1, YES));
    let closed = wait_until(Duration::from_secs(10), Duration::from_millis(250), || {
        !cloud_reachable(&rig, 1, Duration::from_millis(500))
    });
    assert!(
        closed,
        "still reachable long after the 2s element should have expired"
    );
    // Asking again: answered from the cache (the upstream saw one question), and learned
    // again all the same.
    let r = ask(&rig, 1, "setup.acme.example", RecordType::A);
    assert_eq!(r.a, [CLOUD_ALLOWED]);
    assert_eq!(
        rig.dns_queries("setup.acme.example"),
        1,
        "not from the cache"
    );
    assert!(
        cloud_reachable(&rig, 1, YES),
        "a cached answer must reopen the address"
    );
}

#[test]
fn a_rebinding_answer_opens_nothing() {
    let rig = Rig::new(1);
    // An allowed name answered with the home LAN host, a public address and loopback.
    rig.dns_zone(
        "rebind.iot.acme.example",
        FakeAnswer {
            a: vec![HOME_HOST, CLOUD_ALLOWED, Ipv4Addr::LOCALHOST],
            ttl: 60,
            ..FakeAnswer::default()
        },
    );
    let d = rig.start_daemon(&dns_config(""));
    rig.dhcp(1).unwrap();
    let r = ask(&rig, 1, "rebind.iot.acme.example", RecordType::A);
    assert_eq!(
        r.a,
        [CLOUD_ALLOWED],
        "unsafe records are removed from the answer"
    );
    d.wait_line(
        "event=dns_rebinding mac=02:00:00:00:00:01 name=rebind.iot.acme.example addr=192.168.1.10 why=protected threat=violation",
        LOG,
    )
    .unwrap();
    d.wait_line("addr=127.0.0.1 why=loopback", LOG).unwrap();
    assert!(!learned4(&rig).contains("192.168.1.10"));
    // The home LAN host is up on port 80 (the router reaches it) but not for the client.
    assert!(tcp(rig.router(), sa(HOME_HOST, 80), None, YES).answered());
    assert!(!tcp(rig.client(1), sa(HOME_HOST, 80), None, NO).answered());
    assert!(tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, YES).answered());
}

#[test]
fn a_flooding_client_is_limited_while_another_resolves() {
    let rig = Rig::new(2);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 300));
    // The limiter alone: what a flood costs beyond it (a ban) is tests/threat.rs's.
    let d = rig.start_daemon(&dns_config(
        "\toption client_qps '5'\nconfig threat 'threat'\n\toption abuse 'report'\n",
    ));
    rig.dhcp(1).unwrap();
    rig.dhcp(2).unwrap();
    // Client 1 fires 200 questions as fast as the answers come. Its limit is 5 a second
    // after a burst of two seconds' worth (src/core/ratelimit.rs), so however long the 200
    // take, at most BURST + QPS for each second they took are answered; every other one is
    // refused.
    const QPS: f64 = 5.0;
    const BURST: f64 = 10.0;
    let start = Instant::now();
    let rcodes: Vec<String> = (0..200)
        .map(|_| {
            dns_query(
                rig.client(1),
                sa(ROUTER_PROV, 53),
                "setup.acme.example",
                RecordType::A,
                false,
                YES,
            )
            .map_or_else(|e| format!("{e:?}"), |r| r.rcode)
        })
        .collect();
    let took = start.elapsed().as_secs_f64();
    let count = |rcode: &str| rcodes.iter().filter(|r| *r == rcode).count();
    let (answered, refused) = (count("NoError"), count("Refused"));
    assert_eq!(answered + refused, 200, "{rcodes:?}");
    // (+1 for rounding.)
    let most = (BURST + QPS * took).floor() as usize + 1;
    assert!(
        answered <= most,
        "{answered} of 200 answered in {took:.2} s at 5 queries/s (at most {most})"
    );
    eprintln!("{answered} answered, {refused} refused in {took:.2} s");
    d.wait_line("event=dns_rate_limited mac=02:00:00:00:00:01", LOG)
        .unwrap();
    // Client 2 is unaffected.
    let r = ask(&rig, 2, "setup.acme.example", RecordType::A);
    assert_eq!(r.a, [CLOUD_ALLOWED]);
}

#[test]
fn removing_a_name_at_runtime_closes_its_addresses_at_once() {
    let rig = Rig::new(1);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 3600));
    let d = rig.start_daemon(&dns_config(""));
    rig.dhcp(1).unwrap();
    ask(&rig, 1, "setup.acme.example", RecordType::A);
    assert!(cloud_reachable(&rig, 1, YES));

    let without = dns_config("").replace("\tlist domain 'setup.acme.example'\n", "");
    std::fs::write(rig.config_path(), without).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_line("reloaded", LOG).unwrap();
    assert!(!learned4(&rig).contains("11.1.0.10"), "{}", learned4(&rig));
    assert!(
        !cloud_reachable(&rig, 1, NO),
        "the removed name's address is still open"
    );
    assert_eq!(
        ask(&rig, 1, "setup.acme.example", RecordType::A).rcode,
        "Refused"
    );
}

#[test]
fn upstream_failover_and_failure() {
    let rig = Rig::new(1);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 300));
    // The first resolver is dead (port unreachable), the second answers.
    let cfg = dns_config("").replace(
        &format!("\tlist upstream '{CLOUD_DNS}'\n"),
        &format!("\tlist upstream '{CLOUD_DNS_DEAD}'\n\tlist upstream '{CLOUD_DNS2}'\n"),
    );
    let _d = rig.start_daemon(&cfg);
    rig.dhcp(1).unwrap();
    let r = ask(&rig, 1, "setup.acme.example", RecordType::A);
    assert_eq!(r.a, [CLOUD_ALLOWED]);
    assert_eq!(rig.dns_queries_at(CLOUD_DNS2, "setup.acme.example"), 1);
    // All silent: SERVFAIL, not a hang.
    rig.dns_silent(true);
    let r = ask(&rig, 1, "x.iot.acme.example", RecordType::A);
    assert_eq!(r.rcode, format!("{:?}", ResponseCode::ServFail));
}

#[test]
fn restart_keeps_learned_addresses_with_their_names() {
    let rig = Rig::new(1);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 3600));
    let cfg = dns_config("");
    let mut d = rig.start_daemon(&cfg);
    rig.dhcp(1).unwrap();
    ask(&rig, 1, "setup.acme.example", RecordType::A);
    d.kill9();
    let d = rig.start_daemon(&cfg);
    // No new question: the client's cached answer still works.
    assert!(cloud_reachable(&rig, 1, YES));
    assert!(learned4(&rig).contains("comment \"setup.acme.example\""));
    // And it survives a reload that keeps the name (the name came back with it).
    d.signal(Signal::SIGHUP);
    d.wait_line("reloaded", LOG).unwrap();
    assert!(cloud_reachable(&rig, 1, YES));
    assert_eq!(rig.dns_queries("setup.acme.example"), 1);
}

/// A route in `ns` to `to` through the router's WAN address: the cloud has none to
/// 192.168.0.0/16 of its own.
fn route_via_wan(ns: &Ns, to: Ipv4Addr) {
    ns.exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{to}/32"),
        "via",
        &ROUTER_WAN.to_string(),
        "dev",
        ISP_IF,
    ]);
    // The router's port 80 answers any address: the path is there, whatever DNS does.
    assert!(
        tcp(ns, sa(to, 80), None, YES).answered(),
        "{} cannot reach {to} at all",
        ns.name
    );
}

/// Asserts that `ns` gets no DNS reply from `server`, over UDP nor TCP (a port unreachable,
/// a reset or silence are all fine: anything but a DNS message).
fn no_dns_reply(ns: &Ns, server: Ipv4Addr) {
    for tcp in [false, true] {
        let r = dns_query(
            ns,
            sa(server, 53),
            "setup.acme.example",
            RecordType::A,
            tcp,
            NO,
        );
        assert!(
            matches!(r, Err(DnsError::Refused | DnsError::TimedOut)),
            "{} got a DNS reply from {server} over {}: {r:?}",
            ns.name,
            if tcp { "TCP" } else { "UDP" }
        );
    }
}

/// A client asks the router and a public resolver (redirected to the router) over UDP and
/// TCP, and gets answers every time; `router` is where the router's DNS is.
fn client_resolves(rig: &Rig, client: usize, router: Ipv4Addr) {
    for server in [router, CLOUD_DNS] {
        for tcp in [false, true] {
            let r = dns_query(
                rig.client(client),
                sa(server, 53),
                "setup.acme.example",
                RecordType::A,
                tcp,
                YES,
            )
            .unwrap_or_else(|e| panic!("asking {server} (tcp: {tcp}): {e:?}"));
            assert_eq!(r.a, [CLOUD_ALLOWED], "asking {server} (tcp: {tcp})");
        }
    }
    assert!(cloud_reachable(rig, client, YES));
}

/// One A question for `name` from `ns`, from `src` (an address `ns` holds), to `server`;
/// nothing is read back.
fn send_question(ns: &Ns, src: Ipv4Addr, server: Ipv4Addr, name: &str) {
    let mut q = hickory_proto::op::Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii(name).unwrap(),
        RecordType::A,
    ));
    let wire = q.to_vec().unwrap();
    ns.run(|| {
        let s = std::net::UdpSocket::bind((src, 0)).unwrap();
        s.send_to(&wire, (server, 53)).unwrap();
    });
}

#[test]
fn only_the_provisioning_network_gets_dns_answers() {
    let rig = Rig::new(3);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 300));
    let _d = rig.start_daemon(&dns_config(""));
    let client_ip = rig.dhcp(1).unwrap();
    route_via_wan(rig.cloud(), ROUTER_PROV);
    // The home host has a default route via the router already.
    assert!(tcp(rig.home(), sa(ROUTER_PROV, 80), None, YES).answered());

    // Neither the internet nor the home LAN gets a DNS reply from the provisioning
    // address, over UDP or TCP.
    no_dns_reply(rig.cloud(), ROUTER_PROV);
    no_dns_reply(rig.home(), ROUTER_PROV);

    // A host on the WAN that sends a question in a client's name: the router does not
    // take it (nothing asked upstream, nothing learned for the client). The client's own
    // question after it, on the same socket's queue, is answered: had the forged one been
    // taken, it would have reached the upstream first.
    rig.cloud()
        .exec_ok(&["ip", "addr", "add", &format!("{client_ip}/32"), "dev", "lo"]);
    send_question(
        rig.cloud(),
        client_ip,
        ROUTER_PROV,
        "forged.iot.acme.example",
    );
    assert_eq!(
        ask(&rig, 1, "setup.acme.example", RecordType::A).a,
        [CLOUD_ALLOWED]
    );
    assert_eq!(rig.dns_queries("forged.iot.acme.example"), 0);
    assert!(
        !learned4(&rig).contains(&DNS_ANSWER.to_string()),
        "{}",
        learned4(&rig)
    );

    // The client still gets answers from the router, also when it asks a public resolver
    // (redirected to the router), over UDP and TCP, and reaches its cloud.
    client_resolves(&rig, 1, ROUTER_PROV);
}

#[test]
fn dns_moves_with_a_reload_to_another_router_address_and_interface() {
    let rig = Rig::new(1);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 300));
    let moved = Ipv4Addr::new(192, 168, 250, 2);
    let cfg = |interface: &str, router: Ipv4Addr| {
        dns_config("\nconfig dhcp 'dhcp'\n\toption pool_start '192.168.250.100'\n").replace(
            &format!("\toption interface '{PROV_IF}'\n"),
            &format!("\toption interface '{interface}'\n\toption router '{router}'\n"),
        )
    };
    let d = rig.start_daemon(&cfg(PROV_IF, ROUTER_PROV));
    rig.dhcp(1).unwrap();
    let reload = |config: String| {
        std::fs::write(rig.config_path(), config).unwrap();
        d.signal(Signal::SIGHUP);
        d.wait_line("reloaded", LOG).unwrap();
    };

    // A new router address on the same interface (its only one, so redirected DNS goes
    // there too).
    let prefix = format!("/{PROV_PREFIX}");
    rig.router().exec_ok(&[
        "ip",
        "addr",
        "del",
        &format!("{ROUTER_PROV}{prefix}"),
        "dev",
        PROV_IF,
    ]);
    rig.router().exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{moved}{prefix}"),
        "dev",
        PROV_IF,
    ]);
    reload(cfg(PROV_IF, moved));
    // The client learns its new gateway at its next DHCP exchange.
    rig.dhcp(1).unwrap();
    route_via_wan(rig.cloud(), moved);
    client_resolves(&rig, 1, moved);
    no_dns_reply(rig.cloud(), moved);
    no_dns_reply(rig.home(), moved);

    // The same address on another interface: the client's port moves to a new bridge.
    let new_if = "prov1";
    let port = Rig::client_port(1);
    for cmd in [
        format!("link add {new_if} type bridge"),
        format!("link set {port} nomaster"),
        format!("link set {port} master {new_if}"),
        format!("addr del {moved}{prefix} dev {PROV_IF}"),
        format!("addr add {moved}{prefix} dev {new_if}"),
        format!("link set {new_if} up"),
        format!("link set {port} up"),
    ] {
        let args: Vec<&str> = std::iter::once("ip").chain(cmd.split(' ')).collect();
        rig.router().exec_ok(&args);
    }
    reload(cfg(new_if, moved));
    rig.dhcp(1).unwrap();
    client_resolves(&rig, 1, moved);
    no_dns_reply(rig.cloud(), moved);
    no_dns_reply(rig.home(), moved);
}

/// `n` TCP connections from `ns` to `server`, opened one after the other (each connected
/// before the next starts) and held; nothing is sent on them. `None` for one the router
/// reset before the connect call even returned.
fn open_tcp(ns: &Ns, server: SocketAddr, n: usize) -> Vec<Option<TcpStream>> {
    ns.run(|| {
        (0..n)
            .map(|i| match TcpStream::connect_timeout(&server, YES) {
                Ok(s) => Some(s),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
                Err(e) => panic!("connection {i} to {server}: {e}"),
            })
            .collect()
    })
}

/// Waits until at least `want` of `conns` are closed by the other end (end of stream or a
/// reset), or `timeout` passes; `closed` marks those seen closed (`None`s are). Returns how
/// many are.
fn wait_closed(
    conns: &[Option<TcpStream>],
    closed: &mut [bool],
    want: usize,
    timeout: Duration,
) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let count = closed.iter().filter(|c| **c).count();
        let left = deadline.saturating_duration_since(Instant::now());
        if count >= want || left.is_zero() {
            return count;
        }
        let open: Vec<(usize, &TcpStream)> = (0..conns.len())
            .filter(|&i| !closed[i])
            .filter_map(|i| Some((i, conns[i].as_ref()?)))
            .collect();
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|(_, c)| libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
        for (fd, &(i, mut c)) in fds.iter().zip(&open) {
            if fd.revents == 0 {
                continue;
            }
            let mut byte = [0u8; 1];
            c.set_nonblocking(true).unwrap();
            match c.read(&mut byte) {
                Ok(0) => closed[i] = true,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => closed[i] = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => panic!("connection {i}: the router sent something unasked: {other:?}"),
            }
        }
    }
}

/// Sends, on each of `conns`, the length of a 512-byte question and then one byte of it
/// every half second (it would take four minutes), until the router closes it or `stop`.
fn dribble(conns: Vec<TcpStream>, stop: &AtomicBool) {
    let mut open: Vec<TcpStream> = conns;
    for c in &mut open {
        c.write_all(&512u16.to_be_bytes()).unwrap();
    }
    while !stop.load(Ordering::Relaxed) && !open.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
        open.retain_mut(|c| c.write_all(&[0]).is_ok());
    }
}

/// Connects from `ns` to `server` again and again, sending nothing, holding each
/// connection until the router closes it; until `stop`. How many connections it opened.
fn reconnect(ns: &Ns, server: SocketAddr, stop: &AtomicBool) -> usize {
    ns.run(|| {
        let mut opened = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = TcpStream::connect_timeout(&server, NO) else {
                continue;
            };
            opened += 1;
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut [0u8; 1]) {
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    _ => break,
                }
            }
        }
        opened
    })
}

/// Sets the flag when dropped, also while unwinding: scoped threads that watch it end.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn one_client_holding_tcp_connections_starves_nobody() {
    let rig = Rig::new(3);
    rig.dns_zone("setup.acme.example", a([11, 1, 0, 10], 300));
    let d = rig.start_daemon(&dns_config(""));
    let client1 = rig.dhcp(1).unwrap();
    rig.dhcp(2).unwrap();
    let server = sa(ROUTER_PROV, 53);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        // Client 1 opens 300 connections to the router's DNS and holds them; on the first
        // two (the first the router takes) it dribbles a question, a byte every half
        // second; and it reconnects in a loop all along.
        let held = open_tcp(rig.client(1), server, 300);
        let dribblers = held[..2]
            .iter()
            .map(|c| c.as_ref().expect("taken").try_clone().unwrap())
            .collect();
        s.spawn(|| dribble(dribblers, &stop));
        let reconnects = s.spawn(|| reconnect(rig.client(1), server, &stop));

        // The router closes those over the limit as they come, not once they idle: when
        // all of them are closed, every one it kept is still open. (Had the idle timeout
        // closed them, the kept ones, opened first, would have gone first.)
        let mut closed: Vec<bool> = held.iter().map(Option::is_none).collect();
        let over = held.len() - TCP_PER_CLIENT;
        let at_once = wait_closed(&held, &mut closed, over, TCP_IDLE * 3);
        let kept: Vec<usize> = (0..held.len()).filter(|&i| !closed[i]).collect();

        // Client 2 resolves over TCP and over UDP all the same, and reaches its cloud.
        for tcp in [true, false] {
            let r = dns_query(
                rig.client(2),
                server,
                "setup.acme.example",
                RecordType::A,
                tcp,
                YES,
            )
            .unwrap_or_else(|e| panic!("client 2 (tcp: {tcp}) while client 1 holds on: {e:?}"));
            assert_eq!(r.a, [CLOUD_ALLOWED], "tcp: {tcp}");
        }
        assert!(cloud_reachable(&rig, 2, YES));

        // Client 1 kept its first few (the dribbling ones among them); the router closed
        // the others while those were still open.
        assert_eq!(at_once, over, "closed before the kept ones");
        assert_eq!(kept, (0..TCP_PER_CLIENT).collect::<Vec<_>>(), "kept");

        // Those it kept are closed by the router once idle too long: the dribbling ones
        // too, as the deadline is for a whole question, not for each byte.
        let n = wait_closed(&held, &mut closed, held.len(), TCP_IDLE * 3);
        assert_eq!(n, held.len(), "closed after the idle timeout");

        stop.store(true, Ordering::Relaxed);
        let reconnects = reconnects.join().unwrap();
        assert!(reconnects > 1, "the reconnecting loop ran ({reconnects})");
    });

    // The bound shows in the log once, not once per connection, naming the client.
    let line = d.wait_line("event=dns_tcp_limit", LOG).unwrap();
    assert!(
        line.contains(&format!(
            "event=dns_tcp_limit addr={client1} limit=client max={TCP_PER_CLIENT}"
        )),
        "{line}"
    );
    let lines: Vec<String> = d
        .lines()
        .into_iter()
        .filter(|l| l.contains("dns_tcp_limit"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    // And client 1, having let go, is served over TCP again.
    let r = dns_query(
        rig.client(1),
        server,
        "setup.acme.example",
        RecordType::A,
        true,
        YES,
    )
    .unwrap();
    assert_eq!(r.a, [CLOUD_ALLOWED]);
}
