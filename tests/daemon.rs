//! The daemon's life cycle in the netns rig: fail-closed when it dies, restart and reload
//! without losing anything, one table of its own and nothing else, the DHCP pool bounded
//! by the client limit.

mod rig;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nix::sys::signal::Signal;
use rig::*;

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);
const LOG: Duration = Duration::from_secs(10);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn cloud_ok(rig: &Rig, client: usize) -> bool {
    tcp(rig.client(client), sa(CLOUD_ALLOWED, 443), None, YES).answered()
}

/// The probes that must stay refused whatever happens to the daemon.
fn assert_still_closed(rig: &Rig, when: &str) {
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
    // ... while the same servers are up (the router reaches them).
    assert!(tcp(rig.router(), sa(CLOUD_OTHER, 443), None, YES).answered());
    assert!(tcp(rig.router(), sa(HOME_HOST, 22), None, YES).answered());
}

#[test]
fn kill9_leaves_the_network_closed() {
    let rig = Rig::new(2);
    let mut daemon = rig.start_daemon(&config("config dhcp\n\toption lease_time '10s'\n"));
    rig.dhcp(1).expect("lease");
    assert!(cloud_ok(&rig, 1));

    daemon.kill9();
    assert!(
        rig.router_tables().contains("table inet provisioner"),
        "the table outlives the daemon"
    );
    assert_still_closed(&rig, "after kill -9");
    // Nothing new gets in: no DHCP without the daemon ...
    assert!(
        rig.dhcp(2).is_err(),
        "a newcomer got a lease with the daemon dead"
    );
    // ... and what was let in runs out with its lease, which nobody renews.
    let closed = wait_until(Duration::from_secs(20), Duration::from_millis(500), || {
        !tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, NO).answered()
    });
    assert!(
        closed,
        "client 1 still reaches the cloud 20s after its 10s lease ended"
    );
    assert_still_closed(&rig, "after the lease ran out");

    // A new daemon lets clients back in.
    let _daemon = rig.start_daemon(&config("config dhcp\n\toption lease_time '10s'\n"));
    rig.dhcp(1).expect("lease after restart");
    assert!(cloud_ok(&rig, 1));
}

#[test]
fn restart_keeps_every_clients_address_and_traffic() {
    let rig = Rig::new(1);
    let cfg = config("");
    let mut daemon = rig.start_daemon(&cfg);
    let ip = rig.dhcp(1).expect("lease");
    daemon.kill9();

    let daemon = rig.start_daemon(&cfg);
    daemon
        .wait_line(
            &format!("event=lease_restored mac=02:00:00:00:00:01 ip={ip}"),
            LOG,
        )
        .expect("binding taken over from the kernel");
    // The table was rebuilt with the binding in it: traffic flows without a new lease.
    assert!(cloud_ok(&rig, 1));
    assert_still_closed(&rig, "after restart");
    // And the client keeps its address when it asks again.
    assert_eq!(rig.dhcp(1).expect("renewal"), ip);
}

#[test]
fn sigterm_keeps_the_table_and_flush_removes_only_ours() {
    let rig = Rig::new(1);
    // Someone else's tables (fw4's, say) must come through untouched.
    let other = "table inet fw4 {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip saddr 10.99.0.1 drop\n\t}\n}\ntable ip other {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.99.0.2 }\n\t}\n}\n";
    let path = rig.dir().join("other.nft");
    std::fs::write(&path, other).unwrap();
    rig.router().exec_ok(&["nft", "-f", path.to_str().unwrap()]);
    let snapshot = || {
        (
            rig.router()
                .exec_ok(&["nft", "list", "table", "inet", "fw4"]),
            rig.router()
                .exec_ok(&["nft", "list", "table", "ip", "other"]),
        )
    };
    let before = snapshot();

    let mut daemon = rig.start_daemon(&config(""));
    rig.dhcp(1).expect("lease");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_line("reloaded", LOG).expect("reload");
    daemon.signal(Signal::SIGTERM);
    daemon.wait_line("stopping", LOG).expect("clean stop");
    let status = daemon.wait(LOG).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(rig.router_tables().contains("table inet provisioner"));
    assert_still_closed(&rig, "after SIGTERM");

    rig.router()
        .exec_ok(&[daemon_bin().to_str().unwrap(), "provisionerd", "--flush"]);
    assert!(
        !rig.router_tables().contains("provisioner"),
        "--flush removes the table"
    );
    assert_eq!(snapshot(), before, "other tables changed");
}

#[test]
fn reload_applies_a_good_config_and_keeps_the_last_good_one_on_error() {
    let rig = Rig::new(1);
    let daemon = rig.start_daemon(&config(""));
    rig.dhcp(1).expect("lease");
    let other = sa(CLOUD_OTHER, 443);
    assert!(!tcp(rig.client(1), other, None, NO).answered());

    // A bad config: reported with file, line and option; the running one stays.
    let bad = config("\nconfig allow 'other'\n\tlist address '11.1.0.20'\n\tlist port '70000'\n");
    let line = bad.lines().position(|l| l.contains("70000")).unwrap() + 1;
    std::fs::write(rig.config_path(), &bad).unwrap();
    daemon.signal(Signal::SIGHUP);
    let err = daemon
        .wait_line("keeping the last good configuration", LOG)
        .expect("reload error reported");
    let path = rig.config_path();
    let want = format!("{}:{line}: option 'port'", path.display());
    assert!(err.contains(&want), "{err}\nwanted {want}");
    assert!(
        cloud_ok(&rig, 1),
        "the last good config still lets the client through"
    );
    assert!(!tcp(rig.client(1), other, None, NO).answered());

    // Through provisionerctl: the same error as the answer, exit 1, nothing changed.
    let out = rig.ctl_output(&["reload"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&want), "{said}\nwanted {want}");
    assert!(said.contains("kept the running configuration"), "{said}");
    assert!(!tcp(rig.client(1), other, None, NO).answered());

    // A good one takes effect at once, by SIGHUP or by provisionerctl.
    let good = config("\nconfig allow 'other'\n\tlist address '11.1.0.20'\n");
    std::fs::write(rig.config_path(), good).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_line("reloaded", LOG).expect("reload");
    assert!(tcp(rig.client(1), other, None, YES).answered());
    assert!(cloud_ok(&rig, 1), "bindings survive the reload");
    std::fs::write(rig.config_path(), config("")).unwrap();
    let r = rig.ctl(&["reload"]);
    assert!(
        matches!(&r, provisioner::control::Reply::Reloaded(x) if x.config == path.display().to_string()),
        "{r:?}"
    );
    assert!(
        !tcp(rig.client(1), other, None, NO).answered(),
        "the entry is gone"
    );
    assert!(cloud_ok(&rig, 1), "bindings survive the reload");
}

#[test]
fn table_removed_from_outside_is_restored_with_its_bindings() {
    let rig = Rig::new(1);
    let daemon = rig.start_daemon(&config(""));
    rig.dhcp(1).expect("lease");
    rig.router().exec_ok(&["nft", "flush", "ruleset"]);
    // Noticed from the kernel's announcement, not by a periodic check; the daemon says so
    // once the table is back (and how long that took, for the record).
    let line = daemon
        .wait_line("announced by the kernel); restored", LOG)
        .expect("daemon notices the deletion as it happens");
    println!("{line}");
    assert!(
        rig.router_tables().contains("table inet provisioner"),
        "table not restored"
    );
    assert!(
        cloud_ok(&rig, 1),
        "the client's binding came back with the table"
    );
    assert_still_closed(&rig, "after restore");
}

#[test]
fn without_a_radio_dhcp_admits_up_to_the_client_limit() {
    let rig = Rig::new(3);
    // No cooldown, so that the one turned away may try again at once.
    let daemon = rig.start_daemon(&config(
        "config limits\n\toption max_clients '2'\n\toption cooldown '0'\n",
    ));
    let a = rig.dhcp(1).expect("first client");
    let b = rig.dhcp(2).expect("second client");
    assert_ne!(a, b);
    daemon
        .wait_line("event=admitted mac=02:00:00:00:00:02", LOG)
        .expect("admission is an event");
    // Both are younger than min_age: nobody is evicted, the newcomer is turned away.
    assert!(
        rig.dhcp(3).is_err(),
        "a third client got an address with max_clients 2"
    );
    daemon
        .wait_line("event=turned_away mac=02:00:00:00:00:03 reason=full", LOG)
        .expect("turning away is an event");
    assert!(
        cloud_ok(&rig, 1) && cloud_ok(&rig, 2),
        "nobody was disturbed"
    );
    // A client leaving on purpose (DHCPRELEASE, as udhcpc -R sends when stopped) makes
    // room at once.
    let script = rig.udhcpc_script();
    let mut leaving = rig.spawn(
        rig.client(1),
        &[
            "udhcpc",
            "-i",
            HOST_IF,
            "-f",
            "-R",
            "-s",
            script.to_str().unwrap(),
        ],
    );
    leaving
        .wait_line("rig-udhcpc: bound", LOG)
        .expect("renewed");
    leaving.signal(Signal::SIGTERM);
    leaving.wait(LOG).expect("udhcpc exits");

    daemon
        .wait_line(
            &format!("event=lease_released mac=02:00:00:00:00:01 ip={a}"),
            LOG,
        )
        .expect("release");
    daemon
        .wait_line("event=left mac=02:00:00:00:00:01", LOG)
        .expect("a release is leaving");
    assert!(
        !tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, NO).answered(),
        "a released client keeps no binding"
    );
    assert_eq!(rig.dhcp(3).expect("room after the release"), a);
}

#[test]
fn a_client_that_leaves_takes_its_connections_with_it() {
    let rig = Rig::new(1);
    let daemon = rig.start_daemon(
        &config("").replace("\toption mode 'always'\n", "\toption mode 'on_demand'\n"),
    );
    rig.ctl(&["window", "open", "5"]);
    let ip = rig.dhcp(1).expect("lease").to_string();
    let flows = || {
        let out = rig.router().exec(&["conntrack", "-L", "-s", &ip]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    // A UDP exchange and a TCP connection leave conntrack entries behind.
    assert!(udp(rig.client(1), sa(CLOUD_ALLOWED, 123), YES).answered());
    assert!(cloud_ok(&rig, 1));
    assert!(flows() >= 2, "conntrack shows {} entries for {ip}", flows());
    // The window closes: the client is disconnected, and its connections end with it.
    rig.ctl(&["window", "close"]);
    daemon
        .wait_line(
            "event=evicted mac=02:00:00:00:00:01 reason=window_closed",
            LOG,
        )
        .expect("evicted");
    // (The daemon ends them when it removes the binding, before it logs the eviction.)
    assert_eq!(flows(), 0, "conntrack entries of {ip} outlived its binding");
}

#[test]
fn the_operator_evicts_bans_and_unbans_and_bad_orders_change_nothing() {
    use provisioner::control::protocol::{Reply, StationState};
    let rig = Rig::new(2);
    let daemon = rig.start_daemon(&config("config limits\n\toption cooldown '1h'\n"));
    let m1: provisioner::core::MacAddr = "02:00:00:00:00:01".parse().unwrap();
    rig.dhcp(1).expect("a lease");
    rig.dhcp(2).expect("a lease");
    assert!(cloud_ok(&rig, 1) && cloud_ok(&rig, 2));

    // Evicted and banned: cut off at once, and no address while banned.
    let r = rig.ctl(&["evict", "02:00:00:00:00:01", "--ban", "1h"]);
    let Reply::Station(StationState {
        mac,
        client: false,
        banned_secs: Some(left),
    }) = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(mac, m1);
    assert!((3590..=3600).contains(&left), "{left}");
    daemon
        .wait_line("event=evicted mac=02:00:00:00:00:01 reason=operator", LOG)
        .unwrap();
    assert!(
        !tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, NO).answered(),
        "an evicted client kept its binding"
    );
    assert!(rig.dhcp(1).is_err(), "a banned client got an address");
    assert!(cloud_ok(&rig, 2), "the other client was disturbed");
    let status = rig.status();
    assert_eq!(status.clients.len(), 1);
    assert_eq!(status.bans.len(), 1);
    assert_eq!(status.bans[0].mac, m1);

    // What people read.
    let out = rig.ctl_output(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("clients  1 of "), "{text}");
    assert!(text.contains("bans     1\n  MAC"), "{text}");

    // Unbanned: back at once.
    let r = rig.ctl(&["unban", "02:00:00:00:00:01"]);
    assert!(
        matches!(
            r,
            Reply::Station(StationState {
                banned_secs: None,
                ..
            })
        ),
        "{r:?}"
    );
    daemon
        .wait_line("event=unbanned mac=02:00:00:00:00:01", LOG)
        .unwrap();
    rig.dhcp(1).expect("an address once unbanned");
    assert!(cloud_ok(&rig, 1));

    // Refused orders say why, exit 1, and change nothing; a malformed one never leaves
    // provisionerctl (exit 2).
    for (args, says) in [
        (&["unban", "02:00:00:00:00:07"][..], "is not banned"),
        (&["evict", "02:00:00:00:00:07"][..], "is not a client"),
        (&["window", "open", "4"][..], "5 to 60 minutes"),
        (&["window", "close"][..], "always open"),
        (
            &["ban", "02:00:00:00:00:02", "31d"][..],
            "from 1 s to 30 days",
        ),
    ] {
        let out = rig.ctl_output(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = rig.ctl_output(&["evict", "02:00:00:00:01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a MAC address"));
    assert_eq!(
        rig.status().clients.len(),
        2,
        "a refused order changed something"
    );
    assert!(cloud_ok(&rig, 1) && cloud_ok(&rig, 2));
}

/// The control socket is root's alone unless the config names a group, which then may use
/// it too (0660); a reload that drops the group makes it root's again.
#[test]
fn the_control_socket_is_shared_with_the_configured_group_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let rig = Rig::new(1);
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .expect("Debian's nogroup");
    let with = config("\nconfig control 'control'\n\toption group 'nogroup'\n");
    let daemon = rig.start_daemon(&with);
    let meta = std::fs::metadata(rig.control_socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), nogroup.gid.as_raw());
    std::fs::write(rig.config_path(), config("")).unwrap();
    rig.ctl(&["reload"]);
    let meta = std::fs::metadata(rig.control_socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A group the system does not have: said, and root only.
    std::fs::write(
        rig.config_path(),
        config("\nconfig control 'control'\n\toption group 'no_such_group'\n"),
    )
    .unwrap();
    rig.ctl(&["reload"]);
    daemon
        .wait_line("control group 'no_such_group' does not exist", LOG)
        .unwrap();
    let meta = std::fs::metadata(rig.control_socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}
