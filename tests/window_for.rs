//! A window opened for one device (`provisionerctl window open --for MAC`), with a real
//! hostapd (wired driver) and wpa_supplicant clients: the named device is admitted and
//! reaches its cloud, another is turned away (no lease, `not_expected`), the window closes
//! when the named device leaves after reaching its cloud, and a restarted daemon keeps the
//! window for the same device.

mod rig;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use provisioner::control::protocol::{Reply, StationKind, StationRow};
use rig::*;

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);
const LOG: Duration = Duration::from_secs(15);

fn mac(i: usize) -> String {
    format!("02:00:00:00:00:{i:02x}")
}

/// The rig's config with hostapd (run by the rig: external) and an on-demand window.
fn radio_config(rig: &Rig) -> String {
    config(&format!(
        "config radio 'radio'\n\toption hostapd 'external'\n\toption ctrl_interface '{}'\n\toption ifname '{PROV_IF}'\n",
        rig.hostapd_ctrl_dir().display()
    ))
    .replace("\toption mode 'always'\n", "\toption mode 'on_demand'\n")
}

fn cloud_ok(rig: &Rig, client: usize, timeout: Duration) -> bool {
    let to = SocketAddr::new(IpAddr::from(CLOUD_ALLOWED), 443);
    tcp(rig.client(client), to, None, timeout).answered()
}

fn turned_away_row(rig: &Rig, i: usize) -> Option<StationRow> {
    match rig.ctl(&["clients"]) {
        Reply::Clients(c) => c
            .stations
            .into_iter()
            .find(|r| r.mac.to_string() == mac(i) && r.state == StationKind::TurnedAway),
        other => panic!("clients answered {other:?}"),
    }
}

#[test]
fn a_window_for_one_device_lets_only_it_in_and_closes_when_it_completed() {
    let rig = Rig::new(2);
    let _h = rig.start_hostapd("");
    let d = rig.start_daemon(&radio_config(&rig));
    let Reply::Window(w) = rig.ctl(&["window", "open", "--for", &mac(1)]) else {
        panic!("window open answered otherwise")
    };
    assert!(w.open, "{w:?}");
    assert_eq!(
        w.for_.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        [mac(1)]
    );
    assert_eq!((w.count, w.done), (Some(1), Some(0)));
    d.wait_line(
        &format!("event=window_opened secs=900 for={} count=1", mac(1)),
        LOG,
    )
    .unwrap();

    // The named device: admitted, a lease, its cloud.
    let s1 = rig.associate(1);
    d.wait_line(&format!("event=admitted mac={}", mac(1)), LOG)
        .unwrap();
    rig.dhcp(1).expect("the named device gets an address");
    assert!(
        cloud_ok(&rig, 1, YES),
        "the named device cannot reach its cloud"
    );

    // Another: turned away, saying why, and no lease.
    let _s2 = rig.associate(2);
    d.wait_line(
        &format!("event=turned_away mac={} reason=not_expected", mac(2)),
        LOG,
    )
    .unwrap();
    assert!(rig.dhcp(2).is_err(), "a device not expected got an address");
    let row = turned_away_row(&rig, 2).expect("client 2 listed as turned away");
    assert_eq!(row.reason.as_deref(), Some("not_expected"));
    assert!(rig.status().window.open, "turning one away closes nothing");

    // The named device leaves after reaching its cloud: the window closes.
    drop(s1);
    d.wait_line(&format!("event=left mac={}", mac(1)), LOG)
        .unwrap();
    d.wait_line(
        &format!("event=setup_completed mac={} done=1 count=1", mac(1)),
        LOG,
    )
    .unwrap();
    d.wait_line("event=window_closed why=completed", LOG)
        .unwrap();
    let s = rig.status();
    assert!(!s.window.open && s.window.for_.is_empty(), "{s:?}");

    // Opened for client 2 now: the same station gets in.
    rig.ctl(&["window", "open", "--for", &mac(2)]);
    d.wait_line(
        &format!("event=window_opened secs=900 for={} count=1", mac(2)),
        LOG,
    )
    .unwrap();
    rig.wpa_cli(2, &["reauthenticate"]);
    d.wait_line(&format!("event=admitted mac={}", mac(2)), LOG)
        .unwrap();
    rig.dhcp(2)
        .expect("the device the window is for now gets an address");
    assert!(cloud_ok(&rig, 2, YES));
}

#[test]
fn a_device_that_leaves_without_reaching_its_cloud_keeps_the_window_open_across_a_restart() {
    let rig = Rig::new(2);
    let _h = rig.start_hostapd("");
    let cfg = radio_config(&rig);
    let mut d = rig.start_daemon(&cfg);
    rig.ctl(&["window", "open", "10", "--for", &mac(1)]);
    d.wait_line("event=window_opened secs=600", LOG).unwrap();
    // Joins, gets an address (DHCP and DNS are the router's: nothing forwarded), and
    // leaves with no traffic to its cloud: not done, the window stays open.
    let s1 = rig.associate(1);
    d.wait_line(&format!("event=admitted mac={}", mac(1)), LOG)
        .unwrap();
    rig.dhcp(1).expect("an address");
    drop(s1);
    d.wait_line(&format!("event=left mac={}", mac(1)), LOG)
        .unwrap();
    let s = rig.status();
    assert!(s.window.open, "{s:?}");
    assert_eq!(s.window.done, Some(0));
    assert!(!d.lines().iter().any(|l| l.contains("setup_completed")));

    // A restart keeps the window, for the same device only.
    d.kill9();
    let d = rig.start_daemon(&cfg);
    d.wait_line(&format!("for={} count=1", mac(1)), LOG)
        .unwrap();
    let w = rig.status().window;
    assert!(w.open, "{w:?}");
    assert_eq!(
        w.for_.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        [mac(1)]
    );
    let _s2 = rig.associate(2);
    d.wait_line(
        &format!("event=turned_away mac={} reason=not_expected", mac(2)),
        LOG,
    )
    .unwrap();
    assert!(!cloud_ok(&rig, 2, NO));
    // Back, reaches its cloud, leaves: the window closes.
    let s1 = rig.associate(1);
    d.wait_line(&format!("event=admitted mac={}", mac(1)), LOG)
        .unwrap();
    rig.dhcp(1).expect("an address");
    assert!(cloud_ok(&rig, 1, YES));
    drop(s1);
    d.wait_line("event=window_closed why=completed", LOG)
        .unwrap();
}
