//! The daemon's tables beside OpenWrt's real firewall4, in the rig: fw4's ruleset rendered
//! by the kit's fw4 for the router config the package's uci-defaults make (OpenWrt's
//! default firewall plus our zone and rules), with netifd's answers naming the rig's
//! devices, loaded in the router namespace. The leak pairs through both tables; no table of
//! ours, nothing leaves; `fw4 flush` and `fw4 reload` under the running daemon; a conntrack
//! helper that fw4 attaches opens nothing the allow-list did not name; a refused router
//! service answers the same whichever table fw4 loaded last.

mod kit;
mod pkgutil;
mod rig;
mod router;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use rig::*;
use router::{NOWIFI, Router};

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);
const LOG: Duration = Duration::from_secs(15);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// A router root after the package's uci-defaults (real uci), with netifd's answers for
/// the rig: `lan` on lan0, `wan` on wan0, `provision` on prov0.
struct Fw4 {
    root: Router,
    ubus: PathBuf,
}

impl Fw4 {
    /// `tweak`: uci assignments applied (and committed) after uci-defaults.
    fn new(name: &str, tweak: &[&str]) -> Fw4 {
        let root = Router::new(NOWIFI, name, &["sh"]);
        let out = root.uci_defaults();
        assert!(out.status.success(), "uci-defaults: {out:?}");
        for t in tweak {
            root.set(t);
        }
        if !tweak.is_empty() {
            root.commit();
        }
        std::fs::create_dir_all(root.dir.join("var/run")).unwrap();
        let iface = |name: &str, dev: &str, addr: std::net::Ipv4Addr, mask: u8| {
            format!(
                "{{ \"interface\": \"{name}\", \"up\": true, \"proto\": \"static\", \"device\": \"{dev}\", \"l3_device\": \"{dev}\", \"ipv4-address\": [ {{ \"address\": \"{addr}\", \"mask\": {mask} }} ], \"data\": {{ }} }}"
            )
        };
        let json = format!(
            "{{ \"network.interface dump\": {{ \"interface\": [ {}, {}, {} ] }}, \"service get_data\": {{ }} }}\n",
            iface("lan", LAN_IF, ROUTER_LAN, 24),
            iface("wan", WAN_IF, ROUTER_WAN, 30),
            iface("provision", PROV_IF, ROUTER_PROV, PROV_PREFIX),
        );
        let ubus = root.dir.join("ubus.json");
        std::fs::write(&ubus, json).unwrap();
        Fw4 { root, ubus }
    }

    /// `fw4 ACTION` (start, reload, flush) in the rig's router namespace.
    fn run(&self, rig: &Rig, action: &str) {
        let fw4 = kit::bin("fw4");
        rig.router().exec_ok(&[
            fw4.to_str().unwrap(),
            "-q",
            "-r",
            self.root.dir.to_str().unwrap(),
            "-u",
            self.ubus.to_str().unwrap(),
            action,
        ]);
    }

    /// fw4's table, as `nft list table inet fw4` shows it.
    fn listed(rig: &Rig) -> String {
        rig.router()
            .exec_ok(&["nft", "list", "table", "inet", "fw4"])
    }
}

fn cloud_ok(rig: &Rig, i: usize) -> bool {
    tcp(rig.client(i), sa(CLOUD_ALLOWED, 443), None, YES).answered()
}

fn refused_from(ns: &Ns, dst: SocketAddr) -> bool {
    !tcp(ns, dst, None, NO).answered()
}

/// What must hold through both tables: what is allowed works, everything else is closed,
/// and every refused probe succeeds from where it is allowed.
fn leak_pairs(rig: &Rig, c1: std::net::Ipv4Addr) {
    let (r, home, cl) = (rig.router(), rig.home(), rig.client(1));
    assert!(cloud_ok(rig, 1), "the allowed server through fw4 and ours");
    assert!(udp(cl, sa(CLOUD_ALLOWED, 123), YES).answered(), "NTP");
    // (Side by side: a refusal is a timeout.)
    std::thread::scope(|s| {
        let probes: Vec<_> = [
            ("another port", sa(CLOUD_ALLOWED, 8443)),
            ("another server", sa(CLOUD_OTHER, 443)),
            ("the home LAN", sa(HOME_HOST, 22)),
            ("the router's services", sa(ROUTER_PROV, 22)),
            ("the router's LAN address", sa(ROUTER_LAN, 80)),
            ("DoT", sa(CLOUD_DNS, 853)),
        ]
        .into_iter()
        .map(|(what, dst)| (what, s.spawn(move || refused_from(cl, dst))))
        .collect();
        for (what, p) in probes {
            assert!(p.join().unwrap(), "a client reaches {what}");
        }
    });
    assert!(!udp(cl, sa(CLOUD_ALLOWED, 124), NO).answered());
    // ...each refused probe works where it is allowed.
    assert!(tcp(r, sa(CLOUD_ALLOWED, 8443), None, YES).answered());
    assert!(tcp(r, sa(CLOUD_OTHER, 443), None, YES).answered());
    assert!(tcp(r, sa(HOME_HOST, 22), None, YES).answered());
    assert!(tcp(home, sa(ROUTER_LAN, 22), None, YES).answered());
    // The home LAN cannot reach a client; the router can.
    assert!(
        refused_from(home, sa(c1, 8080)),
        "the home LAN reaches a client"
    );
    assert!(tcp(r, sa(c1, 8080), None, YES).answered());
    // DNS to the router is answered (fw4's rule and ours), DNS elsewhere too, redirected.
    for server in [ROUTER_PROV, CLOUD_DNS] {
        assert_eq!(
            dns(cl, sa(server, 53), "not-allowed.example", false, YES),
            Dns::Rcode("Refused".into()),
            "DNS to {server}"
        );
    }
    assert!(
        !rig.dns_names_seen()
            .contains(&"not-allowed.example".to_owned())
    );
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: fw4 tests skipped"
)]
fn leak_pairs_through_fw4_and_our_tables() {
    let rig = Rig::new(1);
    let fw4 = Fw4::new("fw4-leaks", &[]);
    fw4.run(&rig, "start");
    let listed = Fw4::listed(&rig);
    assert!(listed.contains("chain forward_provision"), "{listed}");
    let _d = rig.start_daemon(&config(""));
    let c1 = rig.dhcp(1).expect("DHCP through fw4's rules and ours");
    leak_pairs(&rig, c1);
}

/// fw4's own rules forward provisioning traffic only with our mark: without our tables
/// (never started, or removed on purpose) nothing from the setup network leaves.
#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: fw4 tests skipped"
)]
fn without_our_tables_fw4_lets_nothing_out() {
    let rig = Rig::new(1);
    let fw4 = Fw4::new("fw4-alone", &[]);
    fw4.run(&rig, "start");
    let mut d = rig.start_daemon(&config(""));
    rig.dhcp(1).unwrap();
    assert!(cloud_ok(&rig, 1));
    d.signal(Signal::SIGTERM);
    d.wait(LOG).expect("exits");
    rig.router()
        .exec_ok(&[daemon_bin().to_str().unwrap(), "provisionerd", "--flush"]);
    assert!(!rig.router_tables().contains("provisioner"));
    assert!(
        refused_from(rig.client(1), sa(CLOUD_ALLOWED, 443)),
        "without our tables fw4 let the client out"
    );
    // ...while fw4 itself is no closed door: the router gets there.
    assert!(tcp(rig.router(), sa(CLOUD_ALLOWED, 443), None, YES).answered());
}

/// `fw4 flush` deletes every table, ours too: the daemon puts its own back at once (closed
/// meanwhile, working after); fw4 starting again and reloading under the running daemon
/// changes nothing of ours.
#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: fw4 tests skipped"
)]
fn fw4_flush_and_reload_under_the_running_daemon() {
    let rig = Rig::new(1);
    let fw4 = Fw4::new("fw4-flush", &[]);
    fw4.run(&rig, "start");
    let d = rig.start_daemon(&config(""));
    let c1 = rig.dhcp(1).unwrap();
    assert!(cloud_ok(&rig, 1));
    fw4.run(&rig, "flush");
    d.wait_line("restored with its elements", LOG).unwrap();
    let tables = rig.router_tables();
    assert!(!tables.contains("fw4"), "{tables}");
    // Ours alone: still closed, still working.
    assert!(refused_from(rig.client(1), sa(CLOUD_OTHER, 443)));
    assert!(refused_from(rig.client(1), sa(HOME_HOST, 22)));
    assert!(cloud_ok(&rig, 1));
    // `fw4 flush` deletes the tables one `nft` call at a time: each of ours it deletes
    // after a restore is restored again. (The probes above took seconds: all are done.)
    let restores = |d: &Proc| {
        d.lines()
            .iter()
            .filter(|l| l.contains("restored with its elements"))
            .count()
    };
    let after_flush = restores(&d);
    // fw4 comes back (after a flush it starts afresh), then reloads: ours stays as it is.
    fw4.run(&rig, "start");
    assert!(rig.router_tables().contains("table inet fw4"));
    leak_pairs(&rig, c1);
    fw4.run(&rig, "reload");
    leak_pairs(&rig, c1);
    // Neither touched our tables: the flush was what restored them.
    assert_eq!(restores(&d), after_flush, "{:?}", d.lines());
}

/// A fake FTP server on the allowed cloud address: port 21 answers PASV with data port
/// 10000 (where a listener waits), in the form the kernel's FTP helper reads.
fn ftp_server(rig: &Rig) -> std::thread::JoinHandle<()> {
    let (control, data) = rig.cloud().run(|| {
        (
            TcpListener::bind(sa(CLOUD_ALLOWED, 21)).unwrap(),
            TcpListener::bind(sa(CLOUD_ALLOWED, 10000)).unwrap(),
        )
    });
    std::thread::spawn(move || {
        std::thread::spawn(move || {
            for s in data.incoming().flatten() {
                let mut s = s;
                let _ = s.write_all(b"data-10000\n");
            }
        });
        for s in control.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"220 fake ftp\r\n");
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.starts_with("PASV") {
                    let _ = s.write_all(b"227 Entering Passive Mode (11,1,0,10,39,16).\r\n");
                }
                line.clear();
            }
        }
    })
}

/// Item 3: with fw4 attaching its conntrack helpers to the zone (`auto_helper 1`, fw4's
/// default for a zone), an allow entry on port 21 lets the FTP control connection through,
/// the helper expects a data connection to a port the allow-list never named, and our
/// table refuses it all the same (the same connection works from the router).
#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: fw4 tests skipped"
)]
fn a_conntrack_helper_opens_no_port_the_allow_list_did_not_name() {
    let rig = Rig::new(1);
    let fw4 = Fw4::new("fw4-helper", &["firewall.provision.auto_helper=1"]);
    fw4.run(&rig, "start");
    assert!(
        Fw4::listed(&rig).contains("ct helper set \"ftp\""),
        "fw4 attached no FTP helper: the test would prove nothing"
    );
    let _ftp = ftp_server(&rig);
    let _d = rig.start_daemon(&config(
        "\nconfig allow 'ftp'\n\tlist address '11.1.0.10'\n\tlist port '21'\n",
    ));
    rig.dhcp(1).unwrap();
    let control = rig.client(1).run(|| {
        let mut s = TcpStream::connect_timeout(&sa(CLOUD_ALLOWED, 21), YES).expect("port 21");
        s.set_read_timeout(Some(YES)).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("220"), "{line}");
        s.write_all(b"PASV\r\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("227"), "{line}");
        s
    });
    let expected = rig.router().exec(&["conntrack", "-L", "expect"]);
    let expected = String::from_utf8_lossy(&expected.stdout);
    assert!(
        expected.contains("dport=10000"),
        "the helper expects no data connection: {expected}"
    );
    assert!(
        refused_from(rig.client(1), sa(CLOUD_ALLOWED, 10000)),
        "the helper's expectation opened a port the allow-list did not name"
    );
    assert!(tcp(rig.router(), sa(CLOUD_ALLOWED, 10000), None, YES).answered());
    drop(control);
}

/// Item 4: a router service a client may not use answers the same whether fw4's table was
/// loaded before ours or after (a `fw4 restart` recreates it): ours decides first.
#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: fw4 tests skipped"
)]
fn a_refused_service_answers_the_same_whichever_table_came_last() {
    let rig = Rig::new(1);
    let fw4 = Fw4::new("fw4-order", &[]);
    fw4.run(&rig, "start");
    let _d = rig.start_daemon(&config(""));
    rig.dhcp(1).unwrap();
    let probe = || tcp(rig.client(1), sa(ROUTER_PROV, 22), None, NO);
    let before = probe();
    // A restart deletes and recreates fw4's table: its chains are registered after ours.
    fw4.run(&rig, "restart");
    let after = probe();
    fw4.run(&rig, "reload");
    let reloaded = probe();
    assert_eq!(before, after, "the answer depends on which table came last");
    assert_eq!(
        before, reloaded,
        "the answer depends on which table came last"
    );
    assert_eq!(
        before,
        Probe::TimedOut,
        "ours drops before fw4 could reject"
    );
    // The same service answers the home LAN.
    assert!(tcp(rig.home(), sa(ROUTER_LAN, 22), None, YES).answered());
}
