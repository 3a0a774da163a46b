//! Long-lived connections (R14) in the netns rig: a connection a client opened to a name it
//! resolved outlives the learned address's TTL, its lease's renewals and every internal
//! interval of the daemon, idle, and works again both ways; a long poll (request, a long
//! silence, the reply) comes back; a UDP flow is not cut by our timers; and all of it is cut
//! at the session's end, at once.
//!
//! The waits here are the test: the connections must sit idle for longer than the timers
//! they must survive (TTL 2 s, lease 30 s, the table check every second, the counts kept
//! every ten), so they sleep on purpose; everything else is awaited.

mod rig;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use rig::*;

const LOG: Duration = Duration::from_secs(10);
/// Longer than the learned TTL (2 s), the lease (30 s: busybox udhcpc, the rig's client,
/// renews a 10 s lease too late) and its renewal, the daemon's table check (1 s) and
/// counts kept (10 s).
const IDLE: Duration = Duration::from_secs(34);
/// The long poll's server answers this long after the request.
const POLL_PORT: u16 = 9001;
const SESSION: u64 = 75;

fn config() -> String {
    format!(
        "config network 'network'
\toption interface '{PROV_IF}'
\toption wan '{WAN_IF}'
\toption subnet '{PROV_NET}/{PROV_PREFIX}'

config window 'window'
\toption mode 'always'

config dhcp 'dhcp'
\toption lease_time '30s'

config limits 'limits'
\toption session '{SESSION}s'
\toption min_age '5s'

config dns 'dns'
\tlist upstream '{CLOUD_DNS}'
\toption ttl_floor '1s'
\toption ttl_cap '2s'
\toption ttl_grace '0'

config allow 'acme'
\tlist domain 'setup.acme.example'
\tlist port '{ECHO}'
\tlist port '{POLL_PORT}'

config allow 'ntp'
\tlist address '{CLOUD_ALLOWED}'
\toption proto 'udp'
\tlist port '123'
"
    )
}

/// A server on the cloud that answers each line `after` it came, on the same connection.
fn long_poll_server(rig: &Rig, after: Duration) {
    let listener = rig
        .cloud()
        .run(|| TcpListener::bind((CLOUD_ALLOWED, POLL_PORT)))
        .unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = c.read(&mut buf) {
                    std::thread::sleep(after);
                    if c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn flows_of(rig: &Rig, ip: std::net::Ipv4Addr) -> usize {
    let out = rig
        .router()
        .exec(&["conntrack", "-L", "-s", &ip.to_string()]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn connections_outlive_ttl_lease_and_timers_and_end_with_the_session() {
    let rig = Rig::new(1);
    rig.dns_zone(
        "setup.acme.example",
        FakeAnswer {
            a: vec![CLOUD_ALLOWED],
            ttl: 1,
            ..FakeAnswer::default()
        },
    );
    echo_servers(&rig, &[CLOUD_ALLOWED]);
    long_poll_server(&rig, IDLE);
    let d = rig.start_daemon_in(None, &config(), &["--log-level", "debug"]);
    // A client that keeps its lease as a device does: udhcpc renewing in the background.
    let script = rig.udhcpc_script();
    let dhcp = rig.spawn(
        rig.client(1),
        &[
            "udhcpc",
            "-i",
            HOST_IF,
            "-f",
            "-s",
            script.to_str().unwrap(),
        ],
    );
    let bound = dhcp.wait_line("rig-udhcpc: bound", LOG).unwrap();
    let ip: std::net::Ipv4Addr = bound.rsplit(' ').next().unwrap().trim().parse().unwrap();
    let admitted = Instant::now();

    let r = dns_query(
        rig.client(1),
        SocketAddr::from((ROUTER_PROV, 53)),
        "setup.acme.example",
        RecordType::A,
        false,
        LOG,
    )
    .unwrap();
    assert_eq!(r.a, [CLOUD_ALLOWED]);
    let mut held = connect(&rig, 1, CLOUD_ALLOWED, LOG).expect("the name's address opens");
    assert!(echoes(&mut held, LOG));
    let mut poll = rig
        .client(1)
        .run(|| TcpStream::connect_timeout(&SocketAddr::from((CLOUD_ALLOWED, POLL_PORT)), LOG))
        .expect("the long poll's connection");
    poll.write_all(b"wait\n").unwrap();
    // A UDP flow (NTP), one socket, one 5-tuple.
    let ntp = rig.client(1).run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect((CLOUD_ALLOWED, 123)).unwrap();
        s.set_read_timeout(Some(LOG)).unwrap();
        s
    });
    let exchange = |s: &UdpSocket| {
        s.send(b"time?").is_ok() && {
            let mut b = [0u8; 64];
            s.recv(&mut b).is_ok()
        }
    };
    assert!(exchange(&ntp));

    std::thread::sleep(IDLE);
    // Meanwhile the grant ran out (a new connection is refused) and the lease was renewed...
    assert!(
        !learned(&rig).contains(&ip.to_string()),
        "the learned address is still there: {}",
        learned(&rig)
    );
    assert!(
        connect(&rig, 1, CLOUD_ALLOWED, Duration::from_millis(1500)).is_none(),
        "a new connection after the TTL needs a new answer"
    );
    let renewals = dhcp
        .lines()
        .iter()
        .filter(|l| l.contains(&format!("rig-udhcpc: bound {ip}")))
        .count();
    assert!(
        renewals >= 2,
        "the lease was not renewed: {:?}",
        dhcp.lines()
    );
    // ...and what was open still works, both ways.
    assert!(
        echoes(&mut held, LOG),
        "the idle connection was cut: {:?}",
        d.lines()
    );
    let mut got = [0u8; 5];
    poll.set_read_timeout(Some(LOG)).unwrap();
    poll.read_exact(&mut got).expect("the long poll's answer");
    assert_eq!(&got, b"wait\n");
    assert!(exchange(&ntp), "the UDP flow was cut");

    // The session ends: everything is cut at once, both ways.
    let left = Duration::from_secs(SESSION).saturating_sub(admitted.elapsed());
    d.wait_line(
        "event=evicted mac=02:00:00:00:00:01 reason=session_ended",
        left + LOG,
    )
    .unwrap();
    assert!(
        wait_until(LOG, Duration::from_millis(50), || flows_of(&rig, ip) == 0),
        "conntrack still holds {} flows of {ip}",
        flows_of(&rig, ip)
    );
    assert!(
        !echoes(&mut held, Duration::from_secs(2)),
        "open past the session"
    );
    assert!(!exchange_quick(&ntp), "the UDP flow outlived the session");
    drop(dhcp);
}

fn exchange_quick(s: &UdpSocket) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = [0u8; 64];
    s.send(b"time?").is_ok() && s.recv(&mut b).is_ok()
}

fn learned(rig: &Rig) -> String {
    rig.router()
        .exec_ok(&["nft", "list", "set", "inet", "provisioner", "learned4"])
}
