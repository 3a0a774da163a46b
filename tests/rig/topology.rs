//! The rig's topology: the namespaces' interfaces, addresses and routes, the bridge's ports,
//! and the sysctls that make the firewall under test (not the host's defaults) decide.
//!
//! ```text
//!  cloud ns                 router ns (forwarding on)                 home ns
//!  isp0 11.0.0.1/30 ----- wan0 11.0.0.2/30        lan0 192.168.1.1 ----- eth0 192.168.1.10
//!       2001:db8::1/64         2001:db8::2/64
//!  lo: 11.1.0.10 .20 .53-.55   prov0 (bridge) 192.168.250.1/24, 2001:db8:2::1/64
//!      2001:db8:1::10           |-- prov0-c1 ----- client 1 eth0 02:00:00:00:00:01
//!                               |-- prov0-c2 ----- client 2 eth0 02:00:00:00:00:02
//! ```
//!
//! The bridge's ports are not isolated (the daemon isolates them; a test of hostapd alone
//! calls [`Rig::isolate_ports`]), so clients reach each other at layer 2 until then.
//!
//! The cloud has no route to 192.168.0.0/16, so only masqueraded IPv4 gets answers;
//! it does route 2001:db8:2::/64 back via the router, so IPv6 leaks would work.
//! rp_filter is off and DAD disabled everywhere, so the firewall under test (not
//! kernel defaults inherited from the host) decides what passes, and v6 works at once.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::Rig;
use super::ns::ip_batch;

pub const WAN_IF: &str = "wan0";
pub const LAN_IF: &str = "lan0";
pub const PROV_IF: &str = "prov0";
/// The interface name inside the cloud namespace facing the router.
pub const ISP_IF: &str = "isp0";
/// The interface name inside the home and client namespaces.
pub const HOST_IF: &str = "eth0";

pub const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 2);
pub const CLOUD_ISP: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
pub const ROUTER_WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const CLOUD_ISP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
pub const HOME_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

pub const ROUTER_PROV: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 1);
pub const PROV_NET: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 0);
pub const PROV_PREFIX: u8 = 24;
pub const ROUTER_PROV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const PROV6_NET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0);
pub const PROV6_PREFIX: u8 = 64;
pub const PROV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];

/// The allowed cloud server (TCP 443, 8443; UDP 123, 124).
pub const CLOUD_ALLOWED: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 10);
/// A cloud server that is not allowed (TCP 443).
pub const CLOUD_OTHER: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 20);
/// The fake public resolver (DNS on UDP+TCP 53, a TCP listener on 853).
pub const CLOUD_DNS: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 53);
/// A second fake public resolver (DNS on UDP+TCP 53): same zone, same behaviour.
pub const CLOUD_DNS2: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 54);
/// An address in the cloud where no resolver listens: UDP 53 gets ICMP port unreachable,
/// TCP 53 a RST.
pub const CLOUD_DNS_DEAD: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 55);
/// The IPv6 cloud server (TCP 443).
pub const CLOUD6_ALLOWED: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);

impl Rig {
    pub(super) fn wire(&self) {
        let (r, cloud, home) = (&self.router.name, &self.cloud.name, &self.home.name);
        // Links first (created from the router side, peers land in the other namespace).
        let mut links = vec![
            "link set lo up".to_string(),
            format!("link add {WAN_IF} type veth peer name {ISP_IF} netns {cloud}"),
            format!("link add {LAN_IF} type veth peer name {HOST_IF} netns {home}"),
            format!(
                "link add {PROV_IF} address {} type bridge",
                mac_str(PROV_MAC)
            ),
        ];
        for (i, c) in self.clients.iter().enumerate() {
            let (i, port) = (i + 1, Rig::client_port(i + 1));
            let mac = mac_str(Rig::client_mac(i));
            links.push(format!(
                "link add {port} type veth peer name {HOST_IF} address {mac} netns {}",
                c.name
            ));
            // As a router's bridge is before anyone isolates it: ports forward to each
            // other (the daemon's job is to stop that; see Rig::isolate_ports).
            links.push(format!("link set {port} master {PROV_IF}"));
        }
        ip_batch(r, &links);

        ip_batch(
            cloud,
            &[
                "link set lo up".into(),
                format!("addr add {CLOUD_ALLOWED}/32 dev lo"),
                format!("addr add {CLOUD_OTHER}/32 dev lo"),
                format!("addr add {CLOUD_DNS}/32 dev lo"),
                format!("addr add {CLOUD_DNS2}/32 dev lo"),
                format!("addr add {CLOUD_DNS_DEAD}/32 dev lo"),
                // nodad: else the address is tentative (unbindable) until the kernel's DAD work
                // item has run, even on lo, and the cloud's v6 server may fail to bind.
                format!("addr add {CLOUD6_ALLOWED}/128 dev lo nodad"),
                format!("addr add {CLOUD_ISP}/30 dev {ISP_IF}"),
                format!("addr add {CLOUD_ISP6}/64 dev {ISP_IF} nodad"),
                format!("link set {ISP_IF} up"),
                // v6 only: an IPv6 leak through the router must be able to get answers.
                format!("route add {PROV6_NET}/{PROV6_PREFIX} via {ROUTER_WAN6} dev {ISP_IF}"),
            ],
        );
        ip_batch(
            home,
            &[
                "link set lo up".into(),
                format!("addr add {HOME_HOST}/24 dev {HOST_IF}"),
                format!("link set {HOST_IF} up"),
                format!("route add default via {ROUTER_LAN} dev {HOST_IF}"),
            ],
        );
        for c in &self.clients {
            ip_batch(
                &c.name,
                &["link set lo up".into(), format!("link set {HOST_IF} up")],
            );
        }

        let mut conf = vec![
            format!("addr add {ROUTER_WAN}/30 dev {WAN_IF}"),
            format!("addr add {ROUTER_WAN6}/64 dev {WAN_IF} nodad"),
            format!("addr add {ROUTER_LAN}/24 dev {LAN_IF}"),
            format!("addr add {ROUTER_PROV}/{PROV_PREFIX} dev {PROV_IF}"),
            format!("addr add {ROUTER_PROV6}/{PROV6_PREFIX} dev {PROV_IF} nodad"),
            format!("link set {WAN_IF} up"),
            format!("link set {LAN_IF} up"),
            format!("link set {PROV_IF} up"),
        ];
        for i in 1..=self.clients.len() {
            conf.push(format!("link set {} up", Rig::client_port(i)));
        }
        conf.push(format!("route add default via {CLOUD_ISP} dev {WAN_IF}"));
        conf.push(format!("route add ::/0 via {CLOUD_ISP6} dev {WAN_IF}"));
        ip_batch(r, &conf);
    }

    /// MAC of client `i`'s eth0: 02:00:00:00:00:<i>.
    pub fn client_mac(i: usize) -> [u8; 6] {
        assert!((1..=254).contains(&i), "client index {i} out of range");
        [0x02, 0, 0, 0, 0, i as u8]
    }
    /// Isolates every client port of prov0 from the others, as a Wi-Fi AP's client isolation
    /// would: for tests of hostapd on its own, without the daemon (which isolates them).
    pub fn isolate_ports(&self) {
        let lines: Vec<String> = (1..=self.clients.len())
            .map(|i| {
                format!(
                    "link set {} type bridge_slave isolated on",
                    Rig::client_port(i)
                )
            })
            .collect();
        ip_batch(&self.router.name, &lines);
    }

    /// Takes client `i`'s port off the bridge (`false`) or puts it back (`true`), as netifd
    /// does when an interface comes and goes.
    pub fn attach_port(&self, i: usize, attached: bool) {
        let port = Rig::client_port(i);
        let how = if attached {
            format!("link set {port} master {PROV_IF}")
        } else {
            format!("link set {port} nomaster")
        };
        ip_batch(&self.router.name, &[how]);
    }

    /// The router-side bridge port (a port of prov0) of client `i`.
    pub fn client_port(i: usize) -> String {
        format!("{PROV_IF}-c{i}")
    }
}

/// Sets the namespace's sysctls from the calling thread, which must have joined it
/// ([`super::Ns::run`]).
pub(super) fn set_sysctls(router: bool) {
    let mut values = vec![
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
        ("net/ipv6/conf/all/accept_dad", "0"),
        ("net/ipv6/conf/default/accept_dad", "0"),
    ];
    if router {
        values.push(("net/ipv4/ip_forward", "1"));
        values.push(("net/ipv6/conf/all/forwarding", "1"));
    }
    for (key, value) in values {
        // /proc/sys/net resolves against the calling thread's namespace (see Ns::run).
        let path = format!("/proc/sys/{key}");
        fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
