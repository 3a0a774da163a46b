//! The router's links and neighbours on the provisioning network, over rtnetlink
//! (`NETLINK_ROUTE`): what keeps layer 2 as closed as the firewall keeps layer 3.
//!
//! * [`bridge`]: every port of the provisioning bridge is isolated (the kernel's
//!   bridge-port `isolated` flag), so a client's frames reach the router and no other port:
//!   no unicast, broadcast, multicast, ARP or raw frame between two clients, whichever
//!   ports (wired, several SSIDs) they are on. A port that joins later is isolated as soon
//!   as its announcement arrives ([`monitor`]).
//! * [`neighbours`]: each leased address is a permanent neighbour entry with the MAC of its
//!   lease, so no ARP (forged or not) can move the router's traffic for a client elsewhere.
//!
//! Thin by design: which ports and which entries follow from the config and the leases;
//! these only read and write the kernel's state.

pub mod bridge;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod monitor;
pub mod neighbours;
mod rtnl;

pub use rtnl::{Rtnl, ifindex};

use std::net::Ipv4Addr;

use crate::core::leases::{Binding, LeaseChange};
use crate::core::{MacAddr, SetChange};
use crate::netlink::NetlinkError;

/// The setup segment as the router holds it: the provisioning interface's bridge ports and
/// the router's neighbour entries there.
#[derive(Debug)]
pub struct Segment {
    rtnl: Rtnl,
    interface: String,
}

impl Segment {
    pub fn open(interface: &str) -> Result<Self, NetlinkError> {
        Ok(Segment {
            rtnl: Rtnl::open()?,
            interface: interface.to_owned(),
        })
    }

    fn index(&self) -> Result<u32, NetlinkError> {
        ifindex(&self.interface).ok_or(NetlinkError::Invalid(
            "the provisioning interface does not exist",
        ))
    }

    /// Isolates every port of the provisioning bridge that is not yet; returns their names
    /// (none when the interface is no bridge).
    pub fn isolate_ports(&mut self) -> Result<Vec<String>, NetlinkError> {
        let bridge = self.index()?;
        let mut done = Vec::new();
        for port in self.rtnl.bridge_ports(bridge)? {
            if !port.isolated {
                self.rtnl.isolate_port(port.index)?;
                done.push(port.name);
            }
        }
        Ok(done)
    }

    /// The bridge port `mac` was last seen on (its index); the interface itself when it is
    /// no bridge or the bridge does not know the MAC.
    pub fn port_of(&mut self, mac: MacAddr) -> Result<u32, NetlinkError> {
        let bridge = self.index()?;
        Ok(self.rtnl.port_of(bridge, mac)?.unwrap_or(bridge))
    }

    /// Pins and unpins neighbour entries as bindings begin and end.
    pub fn follow_leases(&mut self, changes: &[SetChange]) -> Result<(), NetlinkError> {
        let mut index = None;
        for c in changes {
            let SetChange::Lease(l) = c else { continue };
            let ifindex = match index {
                Some(i) => i,
                None => *index.insert(self.index()?),
            };
            match *l {
                LeaseChange::Bind { mac, ip, .. } => self.rtnl.pin_neighbour(ifindex, ip, mac)?,
                LeaseChange::Unbind { ip, .. } => self.rtnl.unpin_neighbour(ifindex, ip)?,
            }
        }
        Ok(())
    }

    /// Makes the pinned entries exactly the bindings (after a restart, or a recreated
    /// interface): stale ones go, missing ones come.
    pub fn reconcile(&mut self, bindings: &[Binding]) -> Result<(), NetlinkError> {
        let ifindex = self.index()?;
        let pinned: Vec<(Ipv4Addr, MacAddr)> = self.rtnl.pinned_neighbours(ifindex)?;
        for &(ip, mac) in &pinned {
            if !bindings.iter().any(|b| b.ip == ip && b.mac == mac) {
                self.rtnl.unpin_neighbour(ifindex, ip)?;
            }
        }
        for b in bindings {
            if !pinned.contains(&(b.ip, b.mac)) {
                self.rtnl.pin_neighbour(ifindex, b.ip, b.mac)?;
            }
        }
        Ok(())
    }
}

/// Against the kernel, each test in a network namespace of its own (root: `make test` runs
/// them with `--features rig`; without it they are reported as ignored, not passed).
#[cfg(test)]
mod kernel_tests {
    use super::*;
    use crate::core::MacAddr;
    use std::net::Ipv4Addr;
    use std::process::Command;

    fn in_netns(f: impl FnOnce() + Send + 'static) {
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): the rig feature needs root");
            f();
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// `ip args...` in the calling thread's namespace (a child inherits it).
    fn ip(args: &str) -> String {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn bridge_with_ports(n: usize) {
        ip("link add br0 type bridge");
        for i in 1..=n {
            ip(&format!("link add p{i} type veth peer name q{i}"));
            ip(&format!("link set p{i} master br0"));
        }
    }

    #[test]
    #[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
    fn kernel_every_port_is_isolated_and_iproute2_agrees() {
        in_netns(|| {
            bridge_with_ports(2);
            ip("link add other type bridge");
            ip("link add x1 type veth peer name y1");
            ip("link set x1 master other");
            let br = rtnl::ifindex("br0").unwrap();
            let mut rt = Rtnl::open().unwrap();
            let mut ports = rt.bridge_ports(br).unwrap();
            ports.sort_by(|a, b| a.name.cmp(&b.name));
            let names: Vec<_> = ports
                .iter()
                .map(|p| (p.name.as_str(), p.isolated))
                .collect();
            assert_eq!(names, [("p1", false), ("p2", false)]);
            for p in &ports {
                rt.isolate_port(p.index).unwrap();
            }
            assert!(rt.bridge_ports(br).unwrap().iter().all(|p| p.isolated));
            // iproute2 sees the same, and the other bridge's port was left alone.
            for (port, isolated) in [("p1", true), ("p2", true), ("x1", false)] {
                let shown = ip(&format!("-d link show dev {port}"));
                assert_eq!(shown.contains("isolated on"), isolated, "{shown}");
            }
        });
    }

    #[test]
    #[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
    fn kernel_pinned_neighbours_are_permanent_and_go_again() {
        in_netns(|| {
            bridge_with_ports(1);
            ip("addr add 10.9.0.1/24 dev br0");
            ip("link set br0 up");
            let br = rtnl::ifindex("br0").unwrap();
            let mut rt = Rtnl::open().unwrap();
            let (a, b) = (Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 3));
            let mac = MacAddr([2, 0, 0, 0, 0, 7]);
            rt.pin_neighbour(br, a, mac).unwrap();
            rt.pin_neighbour(br, b, MacAddr([2, 0, 0, 0, 0, 8]))
                .unwrap();
            // Replacing is idempotent, and moves an entry to a new MAC.
            rt.pin_neighbour(br, b, mac).unwrap();
            let mut pinned = rt.pinned_neighbours(br).unwrap();
            pinned.sort();
            assert_eq!(pinned, [(a, mac), (b, mac)]);
            let shown = ip("neigh show dev br0");
            assert!(
                shown.contains("10.9.0.2 lladdr 02:00:00:00:00:07 PERMANENT"),
                "{shown}"
            );
            rt.unpin_neighbour(br, a).unwrap();
            rt.unpin_neighbour(br, a).unwrap();
            assert_eq!(rt.pinned_neighbours(br).unwrap(), [(b, mac)]);
        });
    }

    #[test]
    #[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
    fn kernel_a_port_that_joins_is_announced() {
        in_netns(|| {
            bridge_with_ports(0);
            ip("link add p1 type veth peer name q1");
            let mut m = monitor::LinkMonitor::open().unwrap();
            // Nothing yet.
            assert!(matches!(m.read(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
            ip("link set p1 master br0");
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&m),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, 5000) };
            assert_eq!(ready, 1, "no announcement within 5 s");
            assert!(m.read().unwrap().links);
        });
    }
}
