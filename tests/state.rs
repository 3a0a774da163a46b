//! The state the daemon keeps in its run directory (issue 14, item 2): admissions and bans
//! outlive a table deleted while the daemon was down, and a torn or damaged state file is
//! reported and ignored (the kernel's sets are the truth), never a crash.

mod rig;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use provisioner::core::MacAddr;
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

fn mac(i: u8) -> MacAddr {
    format!("02:00:00:00:00:{i:02x}").parse().unwrap()
}

fn run_file(rig: &Rig, name: &str) -> PathBuf {
    rig.dir().join("run").join(name)
}

/// Waits until the run directory's `name` holds `text`.
fn wait_file(rig: &Rig, name: &str, text: &str) {
    let path = run_file(rig, name);
    let ok = wait_until(LOG, Duration::from_millis(50), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains(text))
    });
    assert!(ok, "{} never held {text:?}", path.display());
}

/// Client 1 admitted, client 2 banned for an hour.
fn admitted_and_banned(rig: &Rig, daemon: &Proc) {
    rig.dhcp(1).expect("lease");
    assert!(cloud_ok(rig, 1));
    rig.ctl(&["ban", "02:00:00:00:00:02", "1h"]);
    daemon
        .wait_line("event=banned mac=02:00:00:00:00:02", LOG)
        .expect("banned");
    wait_file(rig, "stations", "ban 02:00:00:00:00:02");
}

/// Client 2 is still banned (no address, and the status says so) while client 1 gets
/// its address and reaches the cloud: the ban holds and is not a closed network.
fn ban_holds_and_client_1_works(rig: &Rig, when: &str) {
    let status = rig.status();
    let ban = status.bans.iter().find(|b| b.mac == mac(2));
    assert!(ban.is_some(), "{when}: the ban is gone: {status:?}");
    assert!(
        rig.dhcp(2).is_err(),
        "{when}: a banned client got an address"
    );
    rig.dhcp(1).expect("client 1 gets its address");
    assert!(cloud_ok(rig, 1), "{when}: client 1 cut off");
    assert!(
        !tcp(rig.client(1), sa(CLOUD_OTHER, 443), None, NO).answered(),
        "{when}: client 1 reached a server it is not allowed"
    );
}

#[test]
fn bans_and_session_clocks_outlive_a_table_deleted_while_the_daemon_was_down() {
    let rig = Rig::new(2);
    let cfg = config("");
    let mut daemon = rig.start_daemon(&cfg);
    admitted_and_banned(&rig, &daemon);
    wait_file(&rig, "stations", "client 02:00:00:00:00:01");
    let age = rig.status().clients[0].age;

    // Down, and the firewall reloaded meanwhile: our tables (and every element) are gone.
    daemon.kill9();
    rig.router()
        .exec_ok(&[daemon_bin().to_str().unwrap(), "provisionerd", "--flush"]);
    assert!(!rig.router_tables().contains("provisioner"));

    let daemon = rig.start_daemon(&cfg);
    daemon
        .wait_line("admission(s) or ban(s) the kernel no longer held", LOG)
        .expect("taken from the run directory");
    ban_holds_and_client_1_works(&rig, "after the tables were deleted");
    let status = rig.status();
    let left = status.bans.iter().find(|b| b.mac == mac(2)).unwrap();
    assert!(left.left > 3000, "{left:?}");
    let c1 = status.clients.iter().find(|c| c.mac == mac(1)).unwrap();
    assert!(
        c1.age >= age,
        "client 1's session started afresh: {} < {age}",
        c1.age
    );
}

#[test]
fn torn_or_damaged_state_files_are_reported_and_ignored() {
    let rig = Rig::new(2);
    let cfg = config("config limits 'limits'\n\toption client_daily '10MB'\n")
        .replace("\toption mode 'always'\n", "\toption mode 'on_demand'\n");
    let mut daemon = rig.start_daemon(&cfg);
    rig.ctl(&["window", "open", "30"]);
    admitted_and_banned(&rig, &daemon);
    wait_file(&rig, "window", "provisioner-window");
    wait_file(&rig, "quotas", "client 02:00:00:00:00:01");
    let files = ["stations", "window", "quotas"];
    let whole: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(run_file(&rig, f)).unwrap())
        .collect();

    type Damage = fn(&str) -> Vec<u8>;
    let damages: [(&str, Damage); 5] = [
        ("cut in half", |t| t.as_bytes()[..t.len() / 2].to_vec()),
        ("cut at its last line", |t| {
            t.as_bytes()[..t.trim_end().rfind('\n').unwrap() + 1].to_vec()
        }),
        ("not UTF-8", |t| {
            let mut b = t.as_bytes().to_vec();
            b[3] = 0xff;
            b
        }),
        ("a byte changed", |t| {
            let mut b = t.as_bytes().to_vec();
            b[t.find('\n').unwrap() + 1] ^= 1;
            b
        }),
        ("garbage", |_| b"\0\x01not a state file\n".to_vec()),
    ];
    for (how, damage) in damages {
        daemon.kill9();
        for (f, text) in files.iter().zip(&whole) {
            std::fs::write(run_file(&rig, f), damage(text)).unwrap();
        }
        daemon = rig.start_daemon(&cfg);
        for f in files {
            let path = run_file(&rig, f);
            daemon
                .wait_line(&format!("{}: torn, damaged", path.display()), LOG)
                .unwrap_or_else(|e| panic!("{how}: {f} not reported: {e}"));
        }
        // The window's end is lost and it is closed, never opened for everyone: client 1
        // is sent away as at any closing ...
        daemon
            .wait_line(
                "event=evicted mac=02:00:00:00:00:01 reason=window_closed",
                LOG,
            )
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert!(
            !rig.status().window.open,
            "{how}: a damaged window file opened the window"
        );
        assert!(
            !tcp(rig.client(1), sa(CLOUD_ALLOWED, 443), None, NO).answered(),
            "{how}: the window is closed but client 1 still gets through"
        );
        // ... and the kernel's sets held the rest: the ban holds while client 1 comes
        // back once the window opens.
        rig.ctl(&["window", "open", "30"]);
        ban_holds_and_client_1_works(&rig, how);
        // The daemon writes the files whole again.
        wait_file(&rig, "stations", "ban 02:00:00:00:00:02");
        assert!(
            std::fs::read_to_string(run_file(&rig, "stations"))
                .unwrap()
                .starts_with("provisioner-stations 1\n"),
            "{how}"
        );
    }
}
