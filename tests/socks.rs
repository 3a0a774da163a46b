//! The SOCKS5 forwarder (`config socks`) in the netns rig, with real clients (curl) and a
//! hand-written one for what curl never sends: an allowed name and port work end to end
//! (TLS whose certificate curl checks, the router connecting from the WAN), a raw address
//! only when it is allow-listed for the client (statically or learned), and every other
//! request refused with its RFC 1928 code, as an audit event, the daemon unharmed; the
//! listener is the provisioning network's only; a relay ends when the client's session
//! does, or when its entry is removed, and not before.

mod rig;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use rig::*;

const SOCKS: u16 = 1080;
const TLS_PORT: u16 = 8444;
const NAME: &str = "setup.acme.example";
/// An allowed name whose answer is a home-LAN address.
const REBIND: &str = "rebind.acme.example";
const YES: Duration = Duration::from_secs(5);
const LOG: Duration = Duration::from_secs(10);
/// The forwarder's handshake timeout in these tests.
const HANDSHAKE: u64 = 2;

fn config(extra: &str) -> String {
    format!(
        "config network 'network'
\toption interface '{PROV_IF}'
\toption wan '{WAN_IF}'
\toption subnet '{PROV_NET}/{PROV_PREFIX}'
\toption router '{ROUTER_PROV}'

config window 'window'
\toption mode 'always'

config dns 'dns'
\tlist upstream '{CLOUD_DNS}'

config socks 'socks'
\toption enabled '1'
\toption client_connections '4'
\toption handshake_timeout '{HANDSHAKE}s'

config allow 'acme'
\tlist domain '{NAME}'
\tlist domain '{REBIND}'
\tlist port '{TLS_PORT}'
\tlist port '{ECHO}'

config allow 'cloud'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '443'

config allow 'lab'
\tlist address '{CLOUD_OTHER}'
\tlist port '{ECHO}'
{extra}"
    )
}

fn zone(rig: &Rig) {
    rig.dns_zone(
        NAME,
        FakeAnswer {
            a: vec![CLOUD_ALLOWED],
            ttl: 60,
            ..FakeAnswer::default()
        },
    );
    rig.dns_zone(
        REBIND,
        FakeAnswer {
            a: vec![HOME_HOST],
            ttl: 60,
            ..FakeAnswer::default()
        },
    );
}

/// A SOCKS5 request as RFC 1928 has it: CONNECT (1), BIND (2), UDP ASSOCIATE (3).
fn request(cmd: u8, dest: &Dest, port: u16) -> Vec<u8> {
    let mut r = vec![5, cmd, 0];
    match dest {
        Dest::Name(n) => {
            r.extend_from_slice(&[3, n.len() as u8]);
            r.extend_from_slice(n.as_bytes());
        }
        Dest::V4(a) => {
            r.push(1);
            r.extend_from_slice(&a.octets());
        }
        Dest::V6 => {
            r.push(4);
            r.extend_from_slice(&CLOUD6_ALLOWED.octets());
        }
    }
    r.extend_from_slice(&port.to_be_bytes());
    r
}

enum Dest {
    Name(&'static str),
    V4(Ipv4Addr),
    V6,
}

fn socks_conn(rig: &Rig, i: usize) -> TcpStream {
    let s = rig
        .client(i)
        .run(|| TcpStream::connect_timeout(&SocketAddr::from((ROUTER_PROV, SOCKS)), YES))
        .expect("connect to the forwarder");
    s.set_read_timeout(Some(YES)).unwrap();
    s
}

/// The greeting (no authentication) and `req`; the reply code, and the connection (which
/// relays after a success).
fn socks(rig: &Rig, i: usize, req: &[u8]) -> (u8, TcpStream) {
    let mut s = socks_conn(rig, i);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut chosen = [0u8; 2];
    s.read_exact(&mut chosen).expect("method chosen");
    assert_eq!(chosen, [5, 0], "no authentication chosen");
    s.write_all(req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).expect("a reply");
    assert_eq!((reply[0], reply[2], reply[3]), (5, 0, 1), "{reply:?}");
    (reply[1], s)
}

fn connect_code(rig: &Rig, dest: Dest, port: u16) -> u8 {
    socks(rig, 1, &request(1, &dest, port)).0
}

/// Whether the peer closes `s` (EOF or reset) within `within`; data is not expected.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn curl(rig: &Rig, args: &[&str]) -> std::process::Output {
    let mut cmd = vec!["curl", "--silent", "--show-error", "--max-time", "10"];
    cmd.extend_from_slice(args);
    rig.client(1).exec(&cmd)
}

/// A TLS server for `NAME` on the allowed cloud address, with a certificate made now;
/// returns the certificate's path (curl's only trust anchor) and the server.
fn tls_server(rig: &Rig) -> (String, Proc) {
    let dir = rig.dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={NAME}")])
        .args(["-addext", &format!("subjectAltName=DNS:{NAME}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl req: {out:?}");
    let accept = format!("{CLOUD_ALLOWED}:{TLS_PORT}");
    let server = rig.spawn(
        rig.cloud(),
        &[
            "openssl",
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &accept,
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        wait_until(YES, Duration::from_millis(50), || {
            rig.cloud()
                .run(|| TcpStream::connect((CLOUD_ALLOWED, TLS_PORT)))
                .is_ok()
        }),
        "the TLS server did not come up"
    );
    (cert.to_str().unwrap().to_owned(), server)
}

/// `dest` as the log line has it ("" for a refusal before any request).
fn refused_event(daemon: &Proc, dest: &str, reason: &str) {
    let dest = if dest.is_empty() { "\"\"" } else { dest };
    daemon
        .wait_line_where("socks_refused", LOG, |l| {
            l.contains("event=socks_refused")
                && l.contains(&format!("dest={dest} "))
                && l.contains(&format!("reason={reason}"))
        })
        .unwrap_or_else(|e| panic!("no socks_refused event for {dest} ({reason}): {e}"));
}

/// The daemon still serves: DNS to the client (`NAME` answered as `expect`), and the
/// control socket.
fn unharmed(rig: &Rig) {
    unharmed_as(rig, Dns::Answer(vec![CLOUD_ALLOWED]));
}

fn unharmed_as(rig: &Rig, expect: Dns) {
    assert_eq!(
        dns(rig.client(1), (ROUTER_PROV, 53), NAME, false, YES),
        expect,
        "DNS"
    );
    assert_eq!(rig.status().clients.len(), 1, "status");
}

#[test]
fn socks_connects_what_the_allow_list_grants_and_refuses_the_rest() {
    let rig = Rig::new(1);
    zone(&rig);
    echo_servers(&rig, &[CLOUD_ALLOWED, CLOUD_OTHER]);
    let (cert, _tls) = tls_server(&rig);
    let daemon = rig.start_daemon(&config(""));

    // Not a client yet (no lease): the guard drops it before the listener.
    assert!(
        !tcp(
            rig.client(1),
            (ROUTER_PROV, SOCKS),
            None,
            Duration::from_secs(1)
        )
        .answered(),
        "the forwarder answered a station without a lease"
    );
    rig.dhcp(1).expect("lease");
    // The cloud's echo port is the name's, not its static entry's: until the client has
    // the name resolved, the raw address is refused there (and granted after, below).
    assert_eq!(connect_code(&rig, Dest::V4(CLOUD_ALLOWED), ECHO), 2);

    // An allowed name and port, end to end: TLS to the cloud, whose certificate curl
    // checks against the one made for this test (and refuses without it).
    let url = format!("https://{NAME}:{TLS_PORT}/");
    let proxy = format!("{ROUTER_PROV}:{SOCKS}");
    let out = curl(
        &rig,
        &["--socks5-hostname", &proxy, "--cacert", &cert, &url],
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("s_server"),
        "curl --socks5-hostname {url}: {out:?}"
    );
    let out = curl(&rig, &["--socks5-hostname", &proxy, &url]);
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl trusted a certificate it was not given: {out:?}"
    );
    // An allow-listed address (a static entry) as --socks5 sends it: the cloud sees the
    // router's WAN address.
    let out = curl(
        &rig,
        &[
            "--socks5",
            &proxy,
            "--http0.9",
            &format!("http://{CLOUD_ALLOWED}:443/"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("cloud-443 {ROUTER_WAN}"),
        "{out:?}"
    );

    // Refusals, each with its code and an audit event.
    assert_eq!(connect_code(&rig, Dest::Name("other.example"), TLS_PORT), 2);
    refused_event(&daemon, "other.example", "name_not_allowed");
    assert_eq!(connect_code(&rig, Dest::Name(NAME), 22), 2);
    refused_event(&daemon, NAME, "port_not_allowed");
    // The rebinding guard removes the home-LAN address: nothing to connect to.
    assert_eq!(connect_code(&rig, Dest::Name(REBIND), ECHO), 4);
    daemon
        .wait_line("event=dns_rebinding", LOG)
        .expect("rebinding event");
    refused_event(&daemon, REBIND, "no_address");
    // A home-LAN address asked for directly.
    assert_eq!(connect_code(&rig, Dest::V4(HOME_HOST), 22), 2);
    refused_event(&daemon, &HOME_HOST.to_string(), "unsafe_address");
    // An address of no entry; an allowed one on another port.
    assert_eq!(connect_code(&rig, Dest::V4(CLOUD_DNS), 443), 2);
    refused_event(&daemon, &CLOUD_DNS.to_string(), "address_not_allowed");
    assert_eq!(connect_code(&rig, Dest::V4(CLOUD_OTHER), 443), 2);
    refused_event(&daemon, &CLOUD_OTHER.to_string(), "port_not_allowed");
    // IPv6 is off: the address type is not supported.
    assert_eq!(connect_code(&rig, Dest::V6, 443), 8);
    refused_event(&daemon, &format!("[{CLOUD6_ALLOWED}]"), "ipv6");
    // BIND and UDP ASSOCIATE: command not supported.
    let (code, _) = socks(&rig, 1, &request(2, &Dest::V4(CLOUD_ALLOWED), 443));
    assert_eq!(code, 7, "BIND");
    let (code, _) = socks(&rig, 1, &request(3, &Dest::V4(Ipv4Addr::UNSPECIFIED), 0));
    assert_eq!(code, 7, "UDP ASSOCIATE");
    refused_event(&daemon, "0.0.0.0", "command");

    // The name resolved (by curl above, and again here), its address on its ports is
    // the client's, raw too.
    let (code, mut by_name) = socks(&rig, 1, &request(1, &Dest::Name(NAME), ECHO));
    assert_eq!(code, 0);
    assert!(echoes(&mut by_name, YES), "relay by name");
    let (code, mut by_addr) = socks(&rig, 1, &request(1, &Dest::V4(CLOUD_ALLOWED), ECHO));
    assert_eq!(code, 0, "the learned address on the name's port");
    assert!(echoes(&mut by_addr, YES), "relay by the learned address");
    drop(by_addr);

    // Garbage (not SOCKS5): closed without a reply. A handshake that stops midway: closed
    // at the handshake timeout. Both reported; the daemon unharmed.
    let mut g = socks_conn(&rig, 1);
    g.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(closed_within(&mut g, YES), "garbage left open");
    refused_event(&daemon, "", "malformed");
    let mut half = socks_conn(&rig, 1);
    half.write_all(&[5, 1, 0]).unwrap();
    let mut chosen = [0u8; 2];
    half.read_exact(&mut chosen).unwrap();
    half.write_all(&[5, 1, 0, 3, 40, b'x']).unwrap();
    assert!(
        closed_within(&mut half, Duration::from_secs(HANDSHAKE + 8)),
        "a stalled handshake was kept open"
    );
    refused_event(&daemon, "", "stalled");
    unharmed(&rig);

    // The client's bound (4, the relay by name included): stalled handshakes fill it,
    // the next connection is closed at once, and DNS and the control socket are served
    // all along; once they time out, the client is served again.
    let stalled: Vec<TcpStream> = (0..3).map(|_| socks_conn(&rig, 1)).collect();
    let mut over = socks_conn(&rig, 1);
    assert!(closed_within(&mut over, YES), "over the client's bound");
    refused_event(&daemon, "", "client_limit");
    unharmed(&rig);
    assert!(echoes(&mut by_name, YES), "the relay beside the flood");
    let mut stalled = stalled;
    for s in &mut stalled {
        assert!(closed_within(s, Duration::from_secs(HANDSHAKE + 8)));
    }
    let (code, mut lab) = socks(&rig, 1, &request(1, &Dest::V4(CLOUD_OTHER), ECHO));
    assert_eq!(
        code, 0,
        "served again after the stalled handshakes timed out"
    );
    assert!(echoes(&mut lab, YES));

    // Removing the entry the name relay was opened by (a reload without it) cuts it; the
    // static one stays.
    let without = config("").replace(&format!("config allow 'acme'\n\tlist domain '{NAME}'\n\tlist domain '{REBIND}'\n\tlist port '{TLS_PORT}'\n\tlist port '{ECHO}'\n"), "");
    assert!(!without.contains("acme'"), "{without}");
    std::fs::write(rig.config_path(), without).unwrap();
    rig.ctl(&["reload"]);
    assert!(
        closed_within(&mut by_name, LOG),
        "the relay to the removed entry's name is still open"
    );
    assert!(echoes(&mut lab, YES), "the relay of the entry that stayed");
    unharmed_as(&rig, Dns::Rcode("Refused".into()));
}

#[test]
fn socks_listens_on_the_provisioning_network_only() {
    let rig = Rig::new(1);
    let _daemon = rig.start_daemon(&config(""));
    rig.dhcp(1).expect("lease");
    // The cloud can reach the router's provisioning address through its WAN side.
    rig.cloud().exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{ROUTER_PROV}/32"),
        "via",
        &ROUTER_WAN.to_string(),
    ]);
    let t = Duration::from_secs(2);
    for (who, ns) in [("home LAN", rig.home()), ("WAN", rig.cloud())] {
        // The twin: the same address on a port of the router's that listens everywhere.
        assert!(
            tcp(ns, (ROUTER_PROV, 22), None, YES).answered(),
            "the {who} cannot reach the router's provisioning address at all"
        );
        assert!(
            !tcp(ns, (ROUTER_PROV, SOCKS), None, t).answered(),
            "the {who} reached the forwarder"
        );
        let s = ns.run(|| TcpStream::connect_timeout(&SocketAddr::from((ROUTER_PROV, SOCKS)), t));
        assert!(s.is_err(), "the {who} connected to the forwarder");
    }
    // The admitted client does.
    let (code, _) = socks(&rig, 1, &request(1, &Dest::V4(CLOUD_ALLOWED), 443));
    assert_eq!(code, 0);
}

#[test]
fn socks_relays_end_with_the_session_and_not_before() {
    let rig = Rig::new(1);
    zone(&rig);
    echo_servers(&rig, &[CLOUD_ALLOWED]);
    let daemon = rig.start_daemon(&config(
        "
config limits 'limits'
\toption session '20s'
\toption min_age '5s'
",
    ));
    rig.dhcp(1).expect("lease");
    let (code, mut relay) = socks(&rig, 1, &request(1, &Dest::Name(NAME), ECHO));
    assert_eq!(code, 0);
    assert!(echoes(&mut relay, YES), "relay");
    assert_eq!(
        outbound(&rig, CLOUD_ALLOWED, ECHO),
        1,
        "the relay's outbound side"
    );
    // Idle until the session ends, then cut: the router closes its side to the cloud (the
    // client's side cannot hear it: an evicted station's frames are dropped, and with them
    // its answer to the router's ARP). Both the session's end and the cut are awaited: the
    // cut is never seen without the end before it.
    daemon
        .wait_line("reason=session_ended", Duration::from_secs(40))
        .expect("the session's end");
    assert!(outbound_settles(&rig, 0), "the relay outlived the session");
    refused_after_session(&rig);
}

/// Whether the router's relays to the echo server come down to `n` in time.
fn outbound_settles(rig: &Rig, n: usize) -> bool {
    wait_until(LOG, Duration::from_millis(50), || {
        outbound(rig, CLOUD_ALLOWED, ECHO) == n
    })
}

/// The router's established connections to `ip`:`port` (a relay's outbound side).
fn outbound(rig: &Rig, ip: Ipv4Addr, port: u16) -> usize {
    rig.router()
        .exec_ok(&[
            "ss",
            "-Htn",
            "state",
            "established",
            "dst",
            &format!("{ip}:{port}"),
        ])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// After its session, the station has no lease and the forwarder is out of its reach.
fn refused_after_session(rig: &Rig) {
    assert!(
        !tcp(
            rig.client(1),
            (ROUTER_PROV, SOCKS),
            None,
            Duration::from_secs(1)
        )
        .answered(),
        "the forwarder answered after the session ended"
    );
}

/// Bytes relayed for a client are its own on the provisioning device's hooks: counted in
/// `clients` and against its daily quota, which cuts the relay in the kernel and then the
/// client, as a forwarded flow would be.
#[test]
fn relayed_bytes_count_in_clients_and_against_the_quota() {
    let rig = Rig::new(1);
    zone(&rig);
    echo_servers(&rig, &[CLOUD_ALLOWED]);
    let daemon = rig.start_daemon(&config(
        "
config limits 'limits'
\toption client_daily '300KB'
",
    ));
    rig.dhcp(1).expect("lease");
    let (code, mut relay) = socks(&rig, 1, &request(1, &Dest::Name(NAME), ECHO));
    assert_eq!(code, 0);
    relay
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Sends `n` bytes through the echo, a chunk at a time; how many came back.
    let echoed = |relay: &mut TcpStream, n: usize| -> usize {
        let chunk = [b'x'; 4096];
        let mut back = 0;
        let mut buf = [0u8; 8192];
        for _ in 0..n / chunk.len() {
            if relay.write_all(&chunk).is_err() {
                break;
            }
            let want = back + chunk.len();
            while back < want {
                match relay.read(&mut buf) {
                    Ok(k @ 1..) => back += k,
                    _ => return back,
                }
            }
        }
        back
    };
    assert_eq!(echoed(&mut relay, 100 * 4096 / 4), 100 * 1024);
    let row = match rig.ctl(&["clients"]) {
        provisioner::control::Reply::Clients(c) => c
            .stations
            .into_iter()
            .find(|r| r.ip.is_some())
            .expect("the client's row"),
        other => panic!("clients answered {other:?}"),
    };
    assert!(
        row.bytes_up >= 100 * 1024 && row.bytes_down >= 100 * 1024,
        "relayed bytes not counted: {row:?}"
    );
    // 200 KB both ways so far; the next 100 KB each way passes the 300 KB quota.
    let back = echoed(&mut relay, 200 * 1024);
    assert!(back < 100 * 1024, "{back} bytes echoed past the quota");
    daemon
        .wait_line("event=quota_exceeded mac=02:00:00:00:00:01", LOG)
        .expect("the relayed bytes used up the quota");
}

/// An operator's evict or ban cuts the client's relays at once, as its session's end does.
#[test]
fn socks_relays_end_when_the_client_is_evicted_or_banned() {
    let rig = Rig::new(2);
    zone(&rig);
    echo_servers(&rig, &[CLOUD_ALLOWED]);
    let _daemon = rig.start_daemon(&config(""));
    rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");
    let (code, mut one) = socks(&rig, 1, &request(1, &Dest::Name(NAME), ECHO));
    assert_eq!(code, 0);
    let (code, mut two) = socks(&rig, 2, &request(1, &Dest::Name(NAME), ECHO));
    assert_eq!(code, 0);
    assert!(echoes(&mut one, YES) && echoes(&mut two, YES));
    assert_eq!(outbound(&rig, CLOUD_ALLOWED, ECHO), 2);

    rig.ctl(&["evict", "02:00:00:00:00:01"]);
    assert!(
        outbound_settles(&rig, 1),
        "the evicted client's relay outlived its eviction"
    );
    // The other client's relay goes on: the twin.
    assert!(echoes(&mut two, YES), "the other client's relay was cut");

    rig.ctl(&["ban", "02:00:00:00:00:02", "10m"]);
    assert!(
        outbound_settles(&rig, 0),
        "the banned client's relay outlived its ban"
    );
}

/// A relayed connection is held to the client's rate, as a forwarded one is (the device
/// hooks police what the client sends to the router and what the router sends it).
#[test]
fn relayed_bytes_are_held_to_the_clients_rate() {
    let rig = Rig::new(1);
    zone(&rig);
    echo_servers(&rig, &[CLOUD_ALLOWED]);
    // 1mbit each way: 125,000 bytes a second.
    let _daemon = rig.start_daemon(&config(
        "
config limits 'limits'
\toption client_rate_up '1mbit'
\toption client_rate_down '1mbit'
",
    ));
    rig.dhcp(1).expect("lease");
    let (code, mut relay) = socks(&rig, 1, &request(1, &Dest::Name(NAME), ECHO));
    assert_eq!(code, 0);
    relay
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Echoes 4 KB at a time for 4 s; the bytes back in the last 3 (the first second spends
    // the bucket's burst).
    let chunk = [b'x'; 4096];
    let mut buf = [0u8; 8192];
    let start = std::time::Instant::now();
    let mut counted = 0usize;
    while start.elapsed() < Duration::from_secs(4) {
        relay.write_all(&chunk).expect("send");
        let mut back = 0;
        while back < chunk.len() {
            back += relay.read(&mut buf).expect("echo");
        }
        if start.elapsed() >= Duration::from_secs(1) {
            counted += back;
        }
    }
    let rate = counted as f64 / 3.0;
    eprintln!("relayed echo at {rate:.0} B/s under a 125000 B/s limit");
    assert!(
        rate < 125_000.0 * 1.5,
        "relayed at {rate:.0} B/s, over the client's rate"
    );
    assert!(
        rate > 125_000.0 * 0.3,
        "relayed at {rate:.0} B/s: starved, not limited"
    );
}

/// The forwarder's total bound (`total_connections`): with it taken by two clients, the
/// next connection is closed at once and reported, those open keep relaying, and one that
/// ends makes room for the next.
#[test]
fn the_total_bound_refuses_the_next_connection_and_frees_with_one_that_ends() {
    let rig = Rig::new(2);
    zone(&rig);
    echo_servers(&rig, &[CLOUD_OTHER]);
    let cfg = config("").replace(
        "\toption client_connections '4'\n",
        "\toption client_connections '3'\n\toption total_connections '4'\n",
    );
    assert!(cfg.contains("total_connections '4'"), "{cfg}");
    let daemon = rig.start_daemon(&cfg);
    rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");
    let relay = |i: usize| {
        let (code, s) = socks(&rig, i, &request(1, &Dest::V4(CLOUD_OTHER), ECHO));
        assert_eq!(code, 0, "client {i}'s relay refused");
        s
    };
    let mut open: Vec<TcpStream> = vec![relay(1), relay(1), relay(1), relay(2)];
    let mut over = socks_conn(&rig, 2);
    assert!(closed_within(&mut over, YES), "over the total bound");
    refused_event(&daemon, "", "total_limit");
    for s in &mut open {
        assert!(echoes(s, YES), "a relay within the bound was cut");
    }
    // One ends: client 2 gets its second once the forwarder has seen it go.
    drop(open.remove(0));
    let mut next = None;
    let served = wait_until(LOG, Duration::from_millis(100), || {
        let mut s = socks_conn(&rig, 2);
        s.write_all(&[5, 1, 0]).unwrap();
        let mut chosen = [0u8; 2];
        if s.read_exact(&mut chosen).is_err() {
            return false;
        }
        s.write_all(&request(1, &Dest::V4(CLOUD_OTHER), ECHO))
            .unwrap();
        let mut reply = [0u8; 10];
        let ok = s.read_exact(&mut reply).is_ok() && reply[1] == 0;
        next = ok.then_some(s);
        ok
    });
    assert!(served, "the bound was not freed by a relay that ended");
    assert!(echoes(next.as_mut().unwrap(), YES));
    for s in &mut open {
        assert!(echoes(s, YES));
    }
}
