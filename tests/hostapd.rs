//! The hostapd control-interface client against a real hostapd: the wired driver with
//! IEEE 802.1X on the rig's provisioning bridge stands in for the radio, and each client
//! joins with wpa_supplicant (see tests/rig/radio.rs). These tests also pin down what the
//! wired driver does, since the daemon's admission logic relies on it. Root only:
//! `cargo test --features rig --test hostapd`.

mod rig;

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use provisioner::core::MacAddr;
use provisioner::radio::hostapd::{Event, Hostapd, HostapdError, Station};
use rig::*;
use tokio::runtime::Runtime;

/// For things that happen at once (hostapd answers within milliseconds).
const SOON: Duration = Duration::from_secs(3);
/// How long hostapd keeps a deauthenticated station (AP_MAX_INACTIVITY_AFTER_DEAUTH is
/// 5 s), with a margin.
const REMOVED: Duration = Duration::from_secs(9);
/// For a rejoin: the supplicant sends EAPOL-Start at once on `reauthenticate`.
const REJOIN: Duration = Duration::from_secs(10);

fn mac(client: usize) -> MacAddr {
    MacAddr(Rig::client_mac(client))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn connect(rt: &Runtime, rig: &Rig) -> Hostapd {
    rt.block_on(Hostapd::connect(
        &rig.hostapd_ctrl(),
        &rig.dir().join("provisioner"),
    ))
    .expect("connect to hostapd")
}

fn is_station_event(e: &Event) -> bool {
    !matches!(e, Event::Other)
}

/// Reads events until `want` arrives; returns the events before it. Panics on a timeout
/// or an error.
fn expect_event(rt: &Runtime, h: &mut Hostapd, want: Event, timeout: Duration) -> Vec<Event> {
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, h.next_event()).await {
                Ok(Ok(e)) if e == want => return before,
                Ok(Ok(e)) => before.push(e),
                Ok(Err(e)) => panic!("waiting for {want:?}: {e}; before: {before:?}"),
                Err(_) => panic!("no {want:?} within {timeout:?}; before: {before:?}"),
            }
        }
    })
}

/// Every station event (not `Other`) within `window`; stops at an error.
fn station_events(rt: &Runtime, h: &mut Hostapd, window: Duration) -> Vec<Event> {
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, h.next_event()).await {
            if is_station_event(&e) {
                seen.push(e);
            }
        }
        seen
    })
}

/// hostapd's station table, sorted by MAC.
fn table(rt: &Runtime, h: &mut Hostapd) -> Vec<Station> {
    let mut t = rt.block_on(h.stations()).expect("stations");
    t.sort_by_key(|s| s.mac);
    t
}

fn sta(client: usize, authorized: bool) -> Station {
    Station {
        mac: mac(client),
        // The wired driver has no per-station data, so hostapd reports no connected_time.
        connected: None,
        authorized,
    }
}

/// Waits until `client` is no longer in hostapd's table; how long that took.
fn wait_removed(rt: &Runtime, h: &mut Hostapd, client: usize, timeout: Duration) -> Duration {
    let start = Instant::now();
    while table(rt, h).iter().any(|s| s.mac == mac(client)) {
        assert!(
            start.elapsed() < timeout,
            "client {client} still in hostapd's table after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Starts wpa_supplicant for `client` on a helper thread while this one reads events:
/// returns its Proc and the time from starting it to AP-STA-CONNECTED.
fn join(rig: &Rig, rt: &Runtime, h: &mut Hostapd, client: usize) -> (Proc, Duration) {
    thread::scope(|s| {
        let start = Instant::now();
        let supplicant = s.spawn(|| rig.associate(client));
        let before = expect_event(rt, h, Event::StaConnected(mac(client)), ASSOCIATE);
        let took = start.elapsed();
        assert!(
            !before.iter().any(is_station_event),
            "unexpected station events before client {client} joined: {before:?}"
        );
        (supplicant.join().expect("associate"), took)
    })
}

#[test]
fn stations_join_are_listed_and_leave() {
    let rig = Rig::new(3);
    // hostapd alone: stations isolated as a Wi-Fi AP would (the daemon does this itself).
    rig.isolate_ports();
    let _hostapd = rig.start_hostapd("");
    let rt = runtime();
    let mut h = connect(&rt, &rig);
    rt.block_on(h.ping()).expect("ping");
    assert!(table(&rt, &mut h).is_empty());

    let (_c1, took) = join(&rig, &rt, &mut h, 1);
    eprintln!("client 1: AP-STA-CONNECTED {took:?} after starting wpa_supplicant");
    assert_eq!(table(&rt, &mut h), [sta(1, true)]);
    // hostapd's own view, for the record.
    let raw = rig
        .hostapd_request(&format!("STA {}", mac(1)), SOON)
        .unwrap();
    assert!(raw.contains("flags=[AUTHORIZED]"), "{raw}");
    assert!(!raw.contains("connected_time="), "{raw}");

    let (mut c2, took) = join(&rig, &rt, &mut h, 2);
    eprintln!("client 2: AP-STA-CONNECTED {took:?} after starting wpa_supplicant");
    assert_eq!(table(&rt, &mut h), [sta(1, true), sta(2, true)]);

    // DEAUTHENTICATE: AP-STA-DISCONNECTED at once; the station stays in the table,
    // unauthorized, until hostapd removes it 5 s later.
    rt.block_on(h.deauthenticate(mac(2)))
        .expect("deauthenticate");
    let before = expect_event(&rt, &mut h, Event::StaDisconnected(mac(2)), SOON);
    assert!(!before.iter().any(is_station_event), "{before:?}");
    assert_eq!(table(&rt, &mut h), [sta(1, true), sta(2, false)]);
    let gone = wait_removed(&rt, &mut h, 2, REMOVED);
    eprintln!("deauthenticated client 2 left hostapd's table after {gone:?} more");
    // Over the wire nothing tells the supplicant: it still believes it is authorized...
    let status = rig.wpa_cli(2, &["status"]);
    assert!(status.contains("suppPortStatus=Authorized"), "{status}");
    // ...and is back as soon as it sends EAPOL again.
    rig.wpa_cli(2, &["reauthenticate"]);
    expect_event(&rt, &mut h, Event::StaConnected(mac(2)), REJOIN);
    assert_eq!(table(&rt, &mut h), [sta(1, true), sta(2, true)]);

    // EAPOL-Logoff: AP-STA-DISCONNECTED at once; hostapd's EAP restart fails against the
    // logged-off supplicant, so the station is deauthenticated and removed.
    rig.wpa_cli(1, &["logoff"]);
    expect_event(&rt, &mut h, Event::StaDisconnected(mac(1)), SOON);
    let gone = wait_removed(&rt, &mut h, 1, REMOVED);
    eprintln!("logged-off client 1 left hostapd's table after {gone:?} more");

    // The supplicant dies: its Proc sends the EAPOL-Logoff a leaving station implies.
    c2.kill9();
    expect_event(&rt, &mut h, Event::StaDisconnected(mac(2)), SOON);
    wait_removed(&rt, &mut h, 2, REMOVED);
    assert!(table(&rt, &mut h).is_empty());
    assert!(station_events(&rt, &mut h, Duration::from_millis(500)).is_empty());
}

/// Without that Logoff, hostapd's wired driver never learns that a supplicant died: the
/// station stays authorized (only a failed re-authentication, if enabled, would end it).
#[test]
fn a_silently_dead_supplicant_stays_authorized() {
    let rig = Rig::new(1);
    let _hostapd = rig.start_hostapd("");
    let rt = runtime();
    let mut h = connect(&rt, &rig);
    // start_supplicant writes the config; that supplicant (and its Logoff) goes first.
    drop(rig.start_supplicant(1));
    let conf = rig.supplicant_conf_path(1);
    let bare = [
        "wpa_supplicant",
        "-Dwired",
        "-i",
        HOST_IF,
        "-c",
        conf.to_str().unwrap(),
    ];
    let mut p = rig.spawn(rig.client(1), &bare);
    p.wait_line("CTRL-EVENT-CONNECTED", ASSOCIATE)
        .expect("authorized");
    expect_event(&rt, &mut h, Event::StaConnected(mac(1)), SOON);
    p.kill9();
    assert_eq!(
        station_events(&rt, &mut h, Duration::from_secs(3)),
        [],
        "no event for a supplicant that died without a word"
    );
    assert_eq!(table(&rt, &mut h), [sta(1, true)]);
}

#[test]
fn deny_acl_disconnects_but_does_not_refuse_with_the_wired_driver() {
    let rig = Rig::new(2);
    // hostapd alone: stations isolated as a Wi-Fi AP would (the daemon does this itself).
    rig.isolate_ports();
    let _hostapd = rig.start_hostapd("");
    let rt = runtime();
    let mut h = connect(&rt, &rig);
    let (_c1, _) = join(&rig, &rt, &mut h, 1);
    let (_c2, _) = join(&rig, &rt, &mut h, 2);

    // Adding a present station to the deny list disconnects it at once (and removes it
    // 5 s later); the other station is not touched.
    rt.block_on(h.deny_acl_add(mac(1)))
        .expect("DENY_ACL ADD_MAC");
    let before = expect_event(&rt, &mut h, Event::StaDisconnected(mac(1)), SOON);
    assert!(!before.iter().any(is_station_event), "{before:?}");
    let show = rig.hostapd_request("DENY_ACL SHOW", SOON).unwrap();
    assert!(show.contains(&mac(1).to_string()), "{show}");
    assert_eq!(table(&rt, &mut h), [sta(1, false), sta(2, true)]);
    wait_removed(&rt, &mut h, 1, REMOVED);

    // The wired driver adds a station for any EAPOL frame without looking at the ACL (a
    // radio checks it at authentication): the denied MAC is admitted again.
    rig.wpa_cli(1, &["reauthenticate"]);
    expect_event(&rt, &mut h, Event::StaConnected(mac(1)), REJOIN);
    assert_eq!(table(&rt, &mut h), [sta(1, true), sta(2, true)]);
    // So the daemon has to deauthenticate a denied MAC itself when it shows up.
    rt.block_on(h.deauthenticate(mac(1)))
        .expect("deauthenticate");
    expect_event(&rt, &mut h, Event::StaDisconnected(mac(1)), SOON);
    wait_removed(&rt, &mut h, 1, REMOVED);

    // DEL_MAC takes it off the list; OK also for a MAC that is not on it.
    rt.block_on(h.deny_acl_del(mac(1)))
        .expect("DENY_ACL DEL_MAC");
    rt.block_on(h.deny_acl_del(mac(2)))
        .expect("DENY_ACL DEL_MAC, not listed");
    let show = rig.hostapd_request("DENY_ACL SHOW", SOON).unwrap();
    assert!(!show.contains(&mac(1).to_string()), "{show}");
    rig.wpa_cli(1, &["reauthenticate"]);
    expect_event(&rt, &mut h, Event::StaConnected(mac(1)), REJOIN);
    assert_eq!(table(&rt, &mut h), [sta(1, true), sta(2, true)]);
    // Adding a MAC that is not present changes only the list.
    rt.block_on(h.deny_acl_add(MacAddr([2, 0, 0, 0, 0, 0x77])))
        .expect("add");
    assert!(station_events(&rt, &mut h, Duration::from_millis(500)).is_empty());
    assert_eq!(table(&rt, &mut h), [sta(1, true), sta(2, true)]);
}

#[test]
fn hostapd_restarts_and_keepalive() {
    let rig = Rig::new(2);
    // hostapd alone: stations isolated as a Wi-Fi AP would (the daemon does this itself).
    rig.isolate_ports();
    let mut hostapd = rig.start_hostapd("");
    let rt = runtime();
    let mut h = connect(&rt, &rig);

    // Keepalive: PING (and a re-ATTACH) a hundred times in a row, each answered. (How long
    // one takes is printed, for the record; it is no pass or fail.)
    let start = Instant::now();
    for _ in 0..100 {
        rt.block_on(h.ping()).expect("ping");
    }
    eprintln!("ping: {:?} each", start.elapsed() / 100);

    let (_c1, _) = join(&rig, &rt, &mut h, 1);
    let (_c2, _) = join(&rig, &rt, &mut h, 2);
    // The re-ATTACHes did not attach us twice: one event each (a second copy would come
    // right behind the first, on the same socket).
    rt.block_on(h.deauthenticate(mac(2)))
        .expect("deauthenticate");
    let before = expect_event(&rt, &mut h, Event::StaDisconnected(mac(2)), SOON);
    assert!(!before.iter().any(is_station_event), "{before:?}");
    assert_eq!(
        station_events(&rt, &mut h, Duration::from_millis(500)),
        [],
        "AP-STA-DISCONNECTED twice"
    );
    wait_removed(&rt, &mut h, 2, REMOVED);
    rig.wpa_cli(2, &["reauthenticate"]);
    expect_event(&rt, &mut h, Event::StaConnected(mac(2)), REJOIN);

    // A clean stop: every station is disconnected, then CTRL-EVENT-TERMINATING = Gone.
    hostapd.signal(Signal::SIGTERM);
    let mut left = rt.block_on(async {
        let mut left = Vec::new();
        loop {
            match tokio::time::timeout(SOON, h.next_event()).await {
                Ok(Ok(Event::StaDisconnected(m))) => left.push(m),
                Ok(Ok(Event::Other)) => {}
                Ok(Ok(e)) => panic!("unexpected {e:?}"),
                Ok(Err(HostapdError::Gone)) => return left,
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => panic!("no CTRL-EVENT-TERMINATING; left: {left:?}"),
            }
        }
    });
    left.sort();
    assert_eq!(left, [mac(1), mac(2)]);
    assert!(matches!(rt.block_on(h.ping()), Err(HostapdError::Gone)));
    assert!(matches!(rt.block_on(h.stations()), Err(HostapdError::Gone)));
    assert!(hostapd.wait(SOON).is_some(), "hostapd did not exit");
    let err = rt.block_on(Hostapd::connect(
        &rig.hostapd_ctrl(),
        &rig.dir().join("provisioner"),
    ));
    assert!(matches!(err, Err(HostapdError::Gone)), "{err:?}");

    // Restarted: connect again. The table is empty: the supplicants do not notice a new
    // authenticator until they send EAPOL again (a radio would make them re-associate).
    let mut hostapd = rig.start_hostapd("");
    let mut h = connect(&rt, &rig);
    assert!(table(&rt, &mut h).is_empty());
    for c in [1, 2] {
        rig.wpa_cli(c, &["reauthenticate"]);
        expect_event(&rt, &mut h, Event::StaConnected(mac(c)), REJOIN);
    }
    assert_eq!(table(&rt, &mut h), [sta(1, true), sta(2, true)]);

    // Killed: no event at all; the next command finds it gone.
    hostapd.kill9();
    assert!(station_events(&rt, &mut h, Duration::from_secs(1)).is_empty());
    assert!(matches!(rt.block_on(h.ping()), Err(HostapdError::Gone)));
    assert!(matches!(
        rt.block_on(h.next_event()),
        Err(HostapdError::Gone)
    ));

    // It leaves its socket file behind; a new hostapd replaces it.
    let _hostapd = rig.start_hostapd("");
    let mut h = connect(&rt, &rig);
    rt.block_on(h.ping()).expect("ping");
    assert!(table(&rt, &mut h).is_empty());
    rig.wpa_cli(1, &["reauthenticate"]);
    expect_event(&rt, &mut h, Event::StaConnected(mac(1)), REJOIN);
    assert_eq!(table(&rt, &mut h), [sta(1, true)]);
}

/// Many clients join at once (default 50; `HOSTAPD_BURST=250` for more). Every
/// AP-STA-CONNECTED must arrive: each station costs hostapd 5 events, and our event socket
/// holds only net.unix.max_dgram_qlen (10) datagrams, so this also checks that a reader
/// keeps up.
#[test]
fn a_burst_of_clients_joins_at_once() {
    let n: usize = std::env::var("HOSTAPD_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let start = Instant::now();
    let rig = Rig::new(n);
    // hostapd alone: stations isolated as a Wi-Fi AP would (the daemon does this itself).
    rig.isolate_ports();
    eprintln!("rig with {n} clients: {:?}", start.elapsed());
    let _hostapd = rig.start_hostapd("");
    let rt = runtime();
    let mut h = connect(&rt, &rig);

    let (procs, arrivals, others) = thread::scope(|s| {
        let start = Instant::now();
        let rig = &rig;
        let threads: Vec<_> = (1..=n)
            .map(|i| {
                s.spawn(move || {
                    let p = rig.associate(i);
                    (p, start.elapsed())
                })
            })
            .collect();
        let mut arrivals = Vec::new();
        let mut others = 0usize;
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + ASSOCIATE + Duration::from_secs(30);
            while arrivals.len() < n {
                match tokio::time::timeout_at(deadline, h.next_event()).await {
                    Ok(Ok(Event::StaConnected(m))) => arrivals.push((m, start.elapsed())),
                    Ok(Ok(Event::Other)) => others += 1,
                    Ok(Ok(e)) => panic!("unexpected {e:?}"),
                    Ok(Err(e)) => panic!("{e}"),
                    Err(_) => break,
                }
            }
        });
        let procs: Vec<(Proc, Duration)> = threads
            .into_iter()
            .map(|t| t.join().expect("associate"))
            .collect();
        (procs, arrivals, others)
    });

    let mut macs: Vec<MacAddr> = arrivals.iter().map(|(m, _)| *m).collect();
    macs.sort();
    macs.dedup();
    let mut authorized: Vec<Duration> = procs.iter().map(|(_, d)| *d).collect();
    authorized.sort();
    let events: Vec<Duration> = arrivals.iter().map(|(_, d)| *d).collect();
    eprintln!(
        "{n} clients at once: {} AP-STA-CONNECTED ({} other events) first {:?}, median {:?}, \
         last {:?}; supplicants authorized: first {:?}, last {:?}",
        arrivals.len(),
        others,
        events.first(),
        events.get(events.len() / 2),
        events.last(),
        authorized.first(),
        authorized.last(),
    );
    assert_eq!(macs.len(), n, "AP-STA-CONNECTED lost");
    assert_eq!(arrivals.len(), n, "AP-STA-CONNECTED twice");
    let t = table(&rt, &mut h);
    assert_eq!(t.len(), n);
    assert!(t.iter().all(|s| s.authorized));
    drop(procs);
}

/// hostapd 2.10 sends events *blocking* (sendmsg without MSG_DONTWAIT; hostap commit
/// "Prevent blocking sends on control interface monitor socket", Aug 2025, changed that to
/// dropping them and, after 11 failures in a row, detaching the socket). Our event socket
/// is connected to hostapd's, so no queue-length limit applies to what hostapd sends it;
/// the limit is hostapd's own send buffer (net.core.wmem_default, ~208 KiB). A reader that
/// falls behind therefore loses nothing, but once a few hundred events wait, hostapd stops
/// altogether (no EAP, no replies) until they are read.
#[test]
fn a_reader_that_falls_behind_stalls_hostapd_until_it_reads() {
    let rig = Rig::new(1);
    let hostapd = rig.start_hostapd("");
    let rt = runtime();
    let mut h = connect(&rt, &rig);
    let (_c1, _) = join(&rig, &rt, &mut h, 1);

    // Not reading: each re-authentication makes 4 events (EAP-STARTED, 2 x
    // EAP-PROPOSED-METHOD, EAP-SUCCESS), and the station stays authorized.
    let mut reauths = 0;
    let stalled = loop {
        rig.wpa_cli(1, &["reauthenticate"]);
        if hostapd
            .wait_line("CTRL-EVENT-EAP-SUCCESS", Duration::from_secs(2))
            .is_err()
        {
            break true;
        }
        reauths += 1;
        if reauths == 500 {
            break false;
        }
    };
    assert!(stalled, "hostapd never stalled: does it drop events now?");
    assert_eq!(rig.hostapd_request("PING", Duration::from_secs(1)), None);

    // Reading releases it: every event arrives, in order, and the stuck re-authentication
    // completes.
    let mut events = 0;
    rt.block_on(async {
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(500), h.next_event()).await
        {
            assert_eq!(e, Event::Other);
            events += 1;
        }
    });
    eprintln!("hostapd stalled after {reauths} re-authentications; {events} events were waiting");
    assert!(
        events >= 4 * reauths,
        "{events} events for {reauths} re-authentications"
    );
    hostapd
        .wait_line("CTRL-EVENT-EAP-SUCCESS", SOON)
        .expect("the stuck re-authentication completes");
    assert_eq!(rig.hostapd_request("PING", SOON).as_deref(), Some("PONG\n"));
    rt.block_on(h.deauthenticate(mac(1)))
        .expect("deauthenticate");
    expect_event(&rt, &mut h, Event::StaDisconnected(mac(1)), SOON);
}

/// A UDP socket on port 67 of prov0 bound like the daemon's DHCP server (SO_REUSEADDR,
/// SO_BINDTODEVICE, 0.0.0.0).
fn dhcp_server_socket(rig: &Rig) -> std::net::UdpSocket {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    rig.router().run(|| {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
        setsockopt(&fd, sockopt::Broadcast, &true).expect("SO_BROADCAST");
        setsockopt(&fd, sockopt::BindToDevice, &PROV_IF.into()).expect("SO_BINDTODEVICE");
        let any = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 67);
        bind(fd.as_raw_fd(), &SockaddrIn::from(any)).expect("bind :67");
        let sock = std::net::UdpSocket::from(fd);
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        sock
    })
}

/// What `sock` receives within its read timeout.
fn received(sock: &std::net::UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

/// The wired driver watches DHCP to notice stations: hostapd binds UDP 0.0.0.0:67 on
/// prov0 with SO_REUSEADDR, like the daemon's DHCP server. Broadcasts reach both, but a
/// unicast datagram (a client renewing its lease) goes only to the socket bound last. So
/// in the rig, hostapd must start before the daemon (and a restarted hostapd takes the
/// renewals until the daemon binds again).
#[test]
fn hostapd_takes_unicast_dhcp_from_an_earlier_port_67_socket() {
    let rig = Rig::new(1);
    rig.client(1)
        .exec_ok(&["ip", "addr", "add", "192.168.250.10/24", "dev", HOST_IF]);
    let send = |payload: &'static [u8], to: std::net::Ipv4Addr| {
        rig.client(1).run(|| {
            use nix::sys::socket::{setsockopt, sockopt};
            let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.set_broadcast(true).expect("SO_BROADCAST");
            setsockopt(&s, sockopt::BindToDevice, &HOST_IF.into()).expect("SO_BINDTODEVICE");
            s.send_to(payload, (to, 67)).expect("send");
        })
    };
    let unicast: &[u8] = &[b'u'; 300];
    let broadcast: &[u8] = &[b'b'; 300];

    let earlier = dhcp_server_socket(&rig);
    let _hostapd = rig.start_hostapd("");
    send(unicast, ROUTER_PROV);
    send(broadcast, std::net::Ipv4Addr::BROADCAST);
    assert_eq!(
        received(&earlier),
        [broadcast],
        "the unicast went to hostapd"
    );

    let later = dhcp_server_socket(&rig);
    send(unicast, ROUTER_PROV);
    send(broadcast, std::net::Ipv4Addr::BROADCAST);
    assert_eq!(received(&later), [unicast, broadcast]);
    assert_eq!(received(&earlier), [broadcast]);
}
