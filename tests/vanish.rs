//! Dependencies that vanish and return (issue 14 item 6): the provisioning bridge deleted
//! and recreated as netifd does on `/etc/init.d/network restart`, and the WAN going down and
//! up with a new address. The daemon follows both from the kernel's announcements, and the
//! network stays closed throughout.

mod rig;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use provisioner::control::protocol::{Reply, StationRow};
use rig::*;

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);
const LOG: Duration = Duration::from_secs(10);

/// The allowed names: resolved through the router from the fake public resolver.
const NAMES: &str = "
config dns 'dns'
\tlist upstream '11.1.0.53'

config allow 'acme'
\tlist domain '*.iot.acme.example'
\tlist port '443'
";

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn cloud_ok(rig: &Rig, client: usize) -> bool {
    tcp(rig.client(client), sa(CLOUD_ALLOWED, 443), None, YES).answered()
}

fn a(ips: &[Ipv4Addr]) -> FakeAnswer {
    FakeAnswer {
        a: ips.to_vec(),
        ttl: 300,
        ..FakeAnswer::default()
    }
}

/// The A records client `i` gets for `name` from the router's DNS server.
fn resolve(rig: &Rig, i: usize, name: &str) -> Vec<Ipv4Addr> {
    dns_query(
        rig.client(i),
        sa(ROUTER_PROV, 53),
        name,
        RecordType::A,
        false,
        YES,
    )
    .unwrap_or_else(|e| panic!("{name}: {e:?}"))
    .a
}

/// The probes that must stay refused, each paired with the router reaching the same
/// server (so a refusal is the firewall's, not a server that is down); the router's own
/// provisioning address only while the bridge that carries it exists.
fn assert_still_closed(rig: &Rig, when: &str) {
    assert_closed(rig, when, true);
}

fn assert_closed(rig: &Rig, when: &str, bridge: bool) {
    let cl = rig.client(1);
    for dst in [
        sa(CLOUD_OTHER, 443),
        sa(HOME_HOST, 22),
        sa(ROUTER_PROV, 22),
        sa(CLOUD_ALLOWED, 8443),
    ] {
        let p = tcp(cl, dst, None, NO);
        assert!(!p.answered(), "{when}: client reached {dst}: {p:?}");
    }
    for dst in [
        sa(CLOUD_OTHER, 443),
        sa(HOME_HOST, 22),
        sa(ROUTER_PROV, 22),
        sa(CLOUD_ALLOWED, 8443),
    ] {
        if dst.ip() == ROUTER_PROV && !bridge {
            continue;
        }
        let p = tcp(rig.router(), dst, None, YES);
        assert!(
            p.answered(),
            "{when}: the router does not reach {dst}: {p:?}"
        );
    }
}

fn row(rig: &Rig, i: usize) -> StationRow {
    let mac = format!("02:00:00:00:00:{i:02x}");
    match rig.ctl(&["clients"]) {
        Reply::Clients(c) => c
            .stations
            .into_iter()
            .find(|r| r.mac.to_string() == mac)
            .unwrap_or_else(|| panic!("no row for {mac}")),
        other => panic!("clients answered {other:?}"),
    }
}

fn ip(rig: &Rig, cmd: &str) {
    let args: Vec<&str> = std::iter::once("ip")
        .chain(cmd.split_whitespace())
        .collect();
    rig.router().exec_ok(&args);
}

/// What netifd does to the bridge on a network restart: deletes it (its ports stay, off
/// any bridge)...
fn delete_bridge(rig: &Rig) {
    ip(rig, &format!("link del {PROV_IF}"));
}

/// ...and creates it again, with the same name, MAC, address and ports. (Its IPv6 address
/// may not come back: the daemon turns IPv6 off on the new device, as on the first, maybe
/// before netifd gets to it.)
fn recreate_bridge(rig: &Rig) {
    let mac = PROV_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ip(
        rig,
        &format!("link add {PROV_IF} address {mac} type bridge"),
    );
    for i in 1..=rig.clients() {
        ip(
            rig,
            &format!("link set {} master {PROV_IF}", Rig::client_port(i)),
        );
    }
    ip(
        rig,
        &format!("addr add {ROUTER_PROV}/{PROV_PREFIX} dev {PROV_IF}"),
    );
    let _ = rig.router().exec(&[
        "ip",
        "addr",
        "add",
        &format!("{ROUTER_PROV6}/{PROV6_PREFIX}"),
        "dev",
        PROV_IF,
        "nodad",
    ]);
    ip(rig, &format!("link set {PROV_IF} up"));
}

/// The netdev table's base chains as the kernel lists them: each with its hook and device.
fn device_chains(rig: &Rig) -> Vec<String> {
    rig.router()
        .exec_ok(&["nft", "list", "table", "netdev", "provisioner"])
        .lines()
        .filter(|l| l.contains("type filter hook"))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Client 1's counts grow with a connection to the cloud: the device hooks see it.
fn assert_counted(rig: &Rig, when: &str) {
    let before = row(rig, 1);
    assert!(cloud_ok(rig, 1), "{when}");
    let grown = wait_until(LOG, Duration::from_millis(100), || {
        let now = row(rig, 1);
        now.bytes_up > before.bytes_up && now.bytes_down > before.bytes_down
    });
    assert!(
        grown,
        "{when}: client 1's counts did not grow: {before:?} then {:?}",
        row(rig, 1)
    );
}

#[test]
fn the_provisioning_bridge_deleted_and_recreated_is_taken_back() {
    let rig = Rig::new(2);
    rig.dns_zone("setup.iot.acme.example", a(&[CLOUD_ALLOWED]));
    let daemon = rig.start_daemon(&config(NAMES));
    let ip1 = rig.dhcp(1).expect("lease");
    assert_counted(&rig, "on the first bridge");
    let chains = device_chains(&rig);
    let old_index = rig
        .router()
        .exec_ok(&["cat", "/sys/class/net/prov0/ifindex"]);

    delete_bridge(&rig);
    daemon
        .wait_line(&format!("provisioning interface {PROV_IF} is gone"), LOG)
        .expect("the daemon notices the bridge going");
    // Nothing gets through while it is gone: no lease, no cloud, no leak...
    assert!(rig.dhcp(2).is_err(), "a lease with no provisioning bridge");
    assert!(
        !tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, NO).answered(),
        "client 1 reached the cloud with its bridge gone"
    );
    assert_closed(&rig, "with the bridge gone", false);

    recreate_bridge(&rig);
    let line = daemon
        .wait_line(&format!("provisioning interface {PROV_IF} is back"), LOG)
        .expect("the daemon notices the bridge coming back");
    println!("{line}");
    let new_index = rig
        .router()
        .exec_ok(&["cat", "/sys/class/net/prov0/ifindex"]);
    assert_ne!(old_index, new_index, "the bridge is a new device");

    // The ports of the new bridge are isolated again (the daemon's doing: they join it
    // unisolated), and our chains hook the new device.
    for i in 1..=2 {
        let port = Rig::client_port(i);
        let isolated = wait_until(LOG, Duration::from_millis(100), || {
            rig.router()
                .exec_ok(&["ip", "-d", "link", "show", "dev", &port])
                .contains("isolated on")
        });
        assert!(isolated, "{port} is not isolated on the new bridge");
    }
    assert_eq!(
        device_chains(&rig),
        chains,
        "the device chains as they were"
    );
    let v6_off = rig
        .router()
        .exec_ok(&["sysctl", "-n", "net.ipv6.conf.prov0.disable_ipv6"]);
    assert_eq!(v6_off.trim(), "1", "IPv6 is off on the new bridge");
    for hook in ["ingress", "egress"] {
        let want = format!("hook {hook} device \"{PROV_IF}\"");
        assert!(
            chains.iter().any(|c| c.contains(&want)),
            "no {want} in {chains:?}"
        );
    }

    // Client 1's binding outlived its bridge: its neighbour entry is pinned on the new one
    // and it reaches the cloud before it asks for its lease again.
    let neigh = rig
        .router()
        .exec_ok(&["ip", "neigh", "show", "dev", PROV_IF]);
    assert!(
        neigh.contains(&format!("{ip1} lladdr 02:00:00:00:00:01 PERMANENT")),
        "{neigh}"
    );
    assert!(
        cloud_ok(&rig, 1),
        "client 1's binding was lost with its bridge"
    );

    // DHCP on the new bridge: client 1 keeps its address, a newcomer gets one.
    assert_eq!(rig.dhcp(1).expect("lease on the new bridge"), ip1);
    let ip2 = rig.dhcp(2).expect("a newcomer's lease on the new bridge");
    assert_ne!(ip1, ip2);
    // DNS through the router answers, and opens what it answers.
    assert_eq!(resolve(&rig, 2, "setup.iot.acme.example"), [CLOUD_ALLOWED]);
    assert!(cloud_ok(&rig, 1) && cloud_ok(&rig, 2));
    // The two clients do not reach each other (client 2's listener is up: the router
    // reaches it).
    assert!(tcp(rig.router(), sa(ip2, 8080), None, YES).answered());
    assert!(
        !tcp(rig.client(1), sa(ip2, 8080), None, NO).answered(),
        "client 1 reached client 2 on the new bridge"
    );
    assert_still_closed(&rig, "on the new bridge");

    // The device hooks of the new bridge count client 1's traffic.
    assert_counted(&rig, "on the new bridge");
}

/// The router's WAN address, the prefix it moves to, and the route the cloud needs back.
const NEW_WAN: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 6);

#[test]
fn the_wan_goes_down_and_up_with_a_new_address() {
    let rig = Rig::new(1);
    // An allowed name answered with the router's WAN address (old and new) and the cloud.
    rig.dns_zone(
        "rebind.iot.acme.example",
        a(&[NEW_WAN, ROUTER_WAN, CLOUD_ALLOWED]),
    );
    rig.dns_zone("setup.iot.acme.example", a(&[CLOUD_ALLOWED]));
    let daemon = rig.start_daemon(&config(NAMES));
    rig.dhcp(1).expect("lease");
    let seen = tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, YES);
    assert_eq!(seen, Probe::Answered(format!("cloud-443 {ROUTER_WAN}")));
    // Before the move, the router's own WAN address is stripped, the new one (nobody's
    // yet) is not.
    assert_eq!(
        resolve(&rig, 1, "rebind.iot.acme.example"),
        [NEW_WAN, CLOUD_ALLOWED]
    );

    // Down and up: the client gets through again afterwards.
    ip(&rig, &format!("link set {WAN_IF} down"));
    assert!(
        !tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, NO).answered(),
        "through a WAN that is down"
    );
    ip(&rig, &format!("link set {WAN_IF} up"));
    ip(
        &rig,
        &format!("route replace default via {CLOUD_ISP} dev {WAN_IF}"),
    );
    assert!(
        wait_until(LOG, Duration::from_millis(200), || cloud_ok(&rig, 1)),
        "client 1 does not reach the cloud after the WAN came back"
    );

    // A new address in the ISP's subnet (a /29 now), the default route restored; the cloud
    // routes the new address back on its link.
    rig.cloud()
        .exec_ok(&["ip", "route", "add", "11.0.0.4/30", "dev", ISP_IF]);
    ip(&rig, &format!("addr del {ROUTER_WAN}/30 dev {WAN_IF}"));
    ip(&rig, &format!("addr add {NEW_WAN}/29 dev {WAN_IF}"));
    ip(
        &rig,
        &format!("route replace default via {CLOUD_ISP} dev {WAN_IF}"),
    );
    let new = NEW_WAN.to_string();
    daemon
        .wait_line_where("the new WAN address in the guard", LOG, |l| {
            l.contains("router addresses changed") && l.split_whitespace().any(|w| w == new)
        })
        .expect("the daemon follows the router's addresses");
    // Masquerade follows: the cloud sees the new address.
    let seen = tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, YES);
    assert_eq!(seen, Probe::Answered(format!("cloud-443 {NEW_WAN}")));
    assert_still_closed(&rig, "after the WAN moved");

    // The rebinding guard covers the new WAN address (and no longer the old, which is not
    // the router's any more); a plain allowed answer still resolves.
    rig.dns_zone(
        "rebind2.iot.acme.example",
        a(&[NEW_WAN, ROUTER_WAN, CLOUD_ALLOWED]),
    );
    rig.dns_zone("setup.iot.acme.example", a(&[CLOUD_ALLOWED]));
    assert_eq!(
        resolve(&rig, 1, "rebind2.iot.acme.example"),
        [ROUTER_WAN, CLOUD_ALLOWED]
    );
    daemon
        .wait_line(
            &format!("name=rebind2.iot.acme.example addr={NEW_WAN} why=router"),
            LOG,
        )
        .expect("the rebinding is reported");
    assert_eq!(resolve(&rig, 1, "setup.iot.acme.example"), [CLOUD_ALLOWED]);
}
