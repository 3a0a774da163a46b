//! `provisionerctl allow list/add/remove` in the netns rig: a change is written back to the
//! config file (TOML as text, UCI through the kit's real `uci`), takes effect at once, ends
//! the connections that were open to what it removed (and only those), survives a restart,
//! and a refused one changes nothing.

mod kit;
mod rig;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use provisioner::control::protocol::Reply;
use rig::*;

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);
const LOG: Duration = Duration::from_secs(10);
/// A cloud address no config here allows until `allow add`.
const CLOUD_NEW: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 30);

fn toml_config() -> String {
    format!(
        "# Lab provisioner: the comments and order of this file must survive edits.
[network]
interface = \"{PROV_IF}\"
wan = \"{WAN_IF}\"   # out through here
subnet = \"{PROV_NET}/{PROV_PREFIX}\"
router = \"{ROUTER_PROV}\"

[window]
mode = \"always\"

# Stays.
[allow.keep]
address = [\"{CLOUD_ALLOWED}\"]
port = [{ECHO}]

[allow.gone]
address = [\"{CLOUD_OTHER}\"]
port = [{ECHO}]

# The end.
"
    )
}

fn uci_config() -> String {
    config(&format!(
        "
config allow 'keep'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '{ECHO}'

config allow 'gone'
\tlist address '{CLOUD_OTHER}'
\tlist port '{ECHO}'
"
    ))
}

fn reachable(rig: &Rig, dst: Ipv4Addr) -> bool {
    connect(rig, 1, dst, YES).is_some_and(|mut s| echoes(&mut s, YES))
}

fn refused_now(rig: &Rig, dst: Ipv4Addr) -> bool {
    connect(rig, 1, dst, NO).is_none_or(|mut s| !echoes(&mut s, NO))
}

fn names(r: &Reply) -> Vec<String> {
    match r {
        Reply::Allow(a) => a.entries.iter().map(|e| e.name.clone()).collect(),
        other => panic!("not an allow reply: {other:?}"),
    }
}

/// The removal and addition every format must carry out the same way: the open connection
/// to the removed entry is cut, its twin to the entry that stayed keeps working, the new
/// address is reachable at once and was not before.
fn remove_and_add(rig: &Rig, daemon: &Proc) {
    rig.dhcp(1).expect("lease");
    let mut kept = connect(rig, 1, CLOUD_ALLOWED, YES).expect("connect to keep");
    let mut doomed = connect(rig, 1, CLOUD_OTHER, YES).expect("connect to gone");
    assert!(
        echoes(&mut kept, YES) && echoes(&mut doomed, YES),
        "both open"
    );
    assert!(refused_now(rig, CLOUD_NEW), "not allowed yet");

    let after = names(&rig.ctl(&["allow", "remove", "gone"]));
    assert!(
        after.contains(&"keep".to_owned()) && !after.contains(&"gone".to_owned()),
        "{after:?}"
    );
    assert!(
        !echoes(&mut doomed, NO),
        "the open connection to the removed entry still carries data"
    );
    daemon
        .wait_line("event=allow_removed name=gone flows_ended=1", LOG)
        .expect("removal event counting the open connection");
    assert!(
        refused_now(rig, CLOUD_OTHER),
        "a new connection got through"
    );
    assert!(
        echoes(&mut kept, YES),
        "the connection to the entry that stayed was cut too"
    );

    let after = rig.ctl(&[
        "allow",
        "add",
        "added",
        "--address",
        &CLOUD_NEW.to_string(),
        "--port",
        &ECHO.to_string(),
    ]);
    let after = names(&after);
    assert_eq!(after.last().map(String::as_str), Some("added"), "{after:?}");
    assert!(after.contains(&"keep".to_owned()), "{after:?}");
    daemon
        .wait_line("event=allow_added name=added", LOG)
        .expect("addition event");
    assert!(
        reachable(rig, CLOUD_NEW),
        "the added address is not reachable"
    );
    assert!(echoes(&mut kept, YES), "kept connection survives an add");
}

#[test]
fn toml_remove_cuts_open_connections_and_add_opens_at_once_and_both_persist() {
    let rig = Rig::new(1);
    echo_servers(&rig, &[CLOUD_ALLOWED, CLOUD_OTHER, CLOUD_NEW]);
    let path = rig.dir().join("provisioner.toml");
    std::fs::write(&path, toml_config()).unwrap();
    let mut daemon = rig.start_daemon_on(&path, None);
    remove_and_add(&rig, &daemon);

    // Written back: the rest of the file as it was, the entry gone, the new one appended.
    let text = std::fs::read_to_string(&path).unwrap();
    let expected = toml_config().replace(
        &format!("[allow.gone]\naddress = [\"{CLOUD_OTHER}\"]\nport = [{ECHO}]\n\n"),
        "",
    ) + &format!("\n[allow.added]\naddress = [\"{CLOUD_NEW}\"]\nport = [{ECHO}]\n");
    assert_eq!(text, expected);

    // A restart keeps both changes.
    daemon.kill9();
    let _daemon = rig.start_daemon_on(&path, None);
    assert!(reachable(&rig, CLOUD_NEW), "added entry lost on restart");
    assert!(
        refused_now(&rig, CLOUD_OTHER),
        "removed entry back on restart"
    );
    assert!(reachable(&rig, CLOUD_ALLOWED));
}

#[test]
fn refused_changes_leave_the_file_and_the_network_as_they_were() {
    let rig = Rig::new(1);
    echo_servers(&rig, &[CLOUD_ALLOWED, CLOUD_OTHER]);
    let path = rig.dir().join("provisioner.toml");
    std::fs::write(&path, toml_config()).unwrap();
    let _daemon = rig.start_daemon_on(&path, None);
    rig.dhcp(1).expect("lease");
    let before = std::fs::read(&path).unwrap();
    let mut open = connect(&rig, 1, CLOUD_OTHER, YES).expect("connect");
    let a = CLOUD_NEW.to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["allow", "add", "keep", "--address", &a],
            "remove it first",
        ),
        (
            &["allow", "remove", "gone", "nope"],
            "no allow entry 'nope'",
        ),
        (
            &[
                "allow",
                "add",
                "x",
                "--domain",
                "not a name",
                "--address",
                &a,
            ],
            "not a domain name",
        ),
        (
            &["allow", "add", "x", "--address", "192.168.1.0/24"],
            "protected network",
        ),
        (
            &["allow", "add", "x", "--address", "11.1.0.0/33"],
            "not an IPv4",
        ),
        (
            &["allow", "add", "x", "--address", &a, "--proto", "icmp"],
            "not a protocol",
        ),
        (
            &["allow", "add", "x", "--address", &a, "--port", "0"],
            "out of range",
        ),
        (&["allow", "add", "x", "--port", "443"], "allows nothing"),
        (
            &["allow", "add", "a.b", "--address", &a],
            "not an allow entry name",
        ),
        (&["allow", "list", "nope"], "no allow entry 'nope'"),
    ];
    for (args, needle) in cases {
        let out = rig.ctl_output(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{args:?} changed the file"
        );
    }
    for args in [
        &["allow", "add"][..],
        &["allow", "remove"],
        &["allow", "add", "x", "--address"],
        &["allow", "add", "x", "--colour", "red"],
    ] {
        let out = rig.ctl_output(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: usage error");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Nothing was removed by the remove that named an unknown entry.
    assert!(echoes(&mut open, YES), "a refused remove cut a connection");
    assert!(reachable(&rig, CLOUD_OTHER) && reachable(&rig, CLOUD_ALLOWED));
    assert!(refused_now(&rig, CLOUD_NEW));
    let listed = rig.ctl(&["allow", "list"]);
    assert_eq!(names(&listed), ["keep", "gone"]);

    // For people: a table.
    let out = rig.ctl_output(&["allow", "list"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "NAME  PROTO  PORTS  ADDRESSES  DOMAINS  LEARNED\nkeep  tcp    {ECHO}   {CLOUD_ALLOWED}  -        -\ngone  tcp    {ECHO}   {CLOUD_OTHER}  -        -\n"
        )
    );
}

/// The kit's `uci` directory, for the daemon's PATH.
fn kit_uci_dir() -> PathBuf {
    kit::bin("uci").parent().unwrap().to_path_buf()
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "needs OpenWrt's uci from the kit in ../shared/openwrt (tests/kit)"
)]
fn uci_changes_go_through_uci_and_show_in_uci_show() {
    let rig = Rig::new(1);
    echo_servers(&rig, &[CLOUD_ALLOWED, CLOUD_OTHER, CLOUD_NEW]);
    let path = rig.config_path();
    std::fs::write(&path, uci_config()).unwrap();
    let uci_dir = kit_uci_dir();
    let mut daemon = rig.start_daemon_on(&path, Some(&uci_dir));
    remove_and_add(&rig, &daemon);

    let show = || {
        let out = std::process::Command::new(kit::bin("uci"))
            .arg("-c")
            .arg(rig.dir())
            .args(["-t", rig.dir().join("uci-show").to_str().unwrap()])
            .args(["show", "provisioner"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = show();
    assert!(shown.contains("provisioner.added=allow\n"), "{shown}");
    assert!(
        shown.contains(&format!("provisioner.added.address='{CLOUD_NEW}'\n")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("provisioner.added.port='{ECHO}'\n")),
        "{shown}"
    );
    assert!(!shown.contains("provisioner.gone"), "{shown}");
    assert!(shown.contains("provisioner.keep=allow\n"), "{shown}");

    // A refused change through uci: the file's bytes as they were.
    let before = std::fs::read(&path).unwrap();
    let out = rig.ctl_output(&["allow", "add", "x", "--address", "192.168.1.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&path).unwrap(), before);

    daemon.kill9();
    let _daemon = rig.start_daemon_on(&path, Some(&uci_dir));
    assert!(reachable(&rig, CLOUD_NEW), "added entry lost on restart");
    assert!(
        refused_now(&rig, CLOUD_OTHER),
        "removed entry back on restart"
    );
}

/// A reload with traffic running (issue 14, item 3): ten reloads that each rebuild the
/// table leave an open connection of every client whose entry stays untouched (each of its
/// echoes, sent back to back throughout, comes back), and the one that removes an entry
/// cuts the connection open to it at once while nobody loses their binding.
#[test]
fn reloads_under_traffic_keep_what_they_still_permit_and_cut_the_rest_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let rig = Rig::new(2);
    echo_servers(&rig, &[CLOUD_ALLOWED, CLOUD_OTHER, CLOUD_NEW]);
    let daemon = rig.start_daemon(&uci_config());
    rig.dhcp(1).expect("lease");
    rig.dhcp(2).expect("lease");
    let mut kept: Vec<_> = [1, 2]
        .iter()
        .map(|&i| connect(&rig, i, CLOUD_ALLOWED, YES).expect("connect to keep"))
        .collect();
    let mut doomed = connect(&rig, 1, CLOUD_OTHER, YES).expect("connect to gone");
    assert!(echoes(&mut doomed, YES), "open");

    /// Stops the traffic also when an assertion fails (the scope would wait for it forever).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    let echoed = std::thread::scope(|s| {
        let stop = &stop;
        let stopping = Stop(stop);
        let traffic: Vec<_> = kept
            .iter_mut()
            .map(|conn| {
                s.spawn(move || {
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        assert!(echoes(conn, YES), "an echo was lost after {n}");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // Each reload changes the allow-list (an entry comes and goes), so the table is
        // rebuilt each time.
        for i in 0..10 {
            let extra = if i % 2 == 0 {
                format!(
                    "\nconfig allow 'new'\n\tlist address '{CLOUD_NEW}'\n\tlist port '{ECHO}'\n"
                )
            } else {
                String::new()
            };
            std::fs::write(rig.config_path(), uci_config() + &extra).unwrap();
            let r = rig.ctl(&["reload"]);
            assert!(matches!(r, Reply::Reloaded(_)), "{r:?}");
        }
        assert!(
            echoes(&mut doomed, YES),
            "cut by a reload that kept its entry"
        );
        let without_gone = uci_config().replace(
            &format!(
                "\nconfig allow 'gone'\n\tlist address '{CLOUD_OTHER}'\n\tlist port '{ECHO}'\n"
            ),
            "",
        );
        assert_ne!(without_gone, uci_config());
        std::fs::write(rig.config_path(), without_gone).unwrap();
        let r = rig.ctl(&["reload"]);
        assert!(matches!(r, Reply::Reloaded(_)), "{r:?}");
        // At once: the reload's reply came after the connection was ended.
        assert!(
            !echoes(&mut doomed, NO),
            "the open connection to the removed entry still carries data"
        );
        drop(stopping);
        traffic
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(echoed.iter().all(|&n| n > 10), "{echoed:?}");
    eprintln!("echoes through 11 reloads, per client: {echoed:?}");
    assert!(
        refused_now(&rig, CLOUD_OTHER),
        "a new connection got through"
    );
    assert!(reachable(&rig, CLOUD_ALLOWED), "the entry that stayed");
    let status = rig.status();
    assert_eq!(
        status.clients.len(),
        2,
        "a reload cost a binding: {status:?}"
    );
    for (i, conn) in kept.iter_mut().enumerate() {
        assert!(echoes(conn, YES), "client {}'s kept connection", i + 1);
    }
    drop(daemon);
}
