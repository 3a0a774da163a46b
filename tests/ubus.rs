//! The ubus object `provisioner`, provided by the daemon itself (src/ubus), and its ACL
//! (openwrt/files/provisioner.acl.json), on the OpenWrt kit's real ubusd and rpcd
//! (tests/bus), with the daemon running in the netns rig: what `ubus call` answers is the
//! daemon's own JSON, orders reach it, bad ones change nothing, rpcd's sessions give a
//! read-only login the read methods alone, and the object is there whenever ubusd is
//! (started after the daemon, restarted).

mod bus;
mod kit;
mod rig;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use bus::Bus;
use rig::*;
use serde_json::{Value, json};

fn source(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The methods the object declares.
fn listed() -> BTreeSet<String> {
    provisioner::ubus::methods::METHODS
        .iter()
        .map(|m| m.name.to_owned())
        .collect()
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of methods: {v}"))
        .iter()
        .map(|m| m.as_str().expect("a method name").to_owned())
        .collect()
}

#[test]
fn the_acl_names_every_method_the_object_has_reads_apart_from_orders() {
    let acl: Value = serde_json::from_str(
        &std::fs::read_to_string(source("openwrt/files/provisioner.acl.json")).unwrap(),
    )
    .expect("the ACL is JSON");
    let group = &acl["luci-app-provisioner"];
    let read = names(&group["read"]["ubus"]["provisioner"]);
    let write = names(&group["write"]["ubus"]["provisioner"]);
    assert!(read.is_disjoint(&write), "{read:?} {write:?}");
    let all: BTreeSet<String> = read.union(&write).cloned().collect();
    assert_eq!(all, listed(), "the ACL and the object's methods differ");
    let reads: BTreeSet<String> = ["status", "clients", "allow_list", "events", "metrics"]
        .map(String::from)
        .into();
    assert_eq!(read, reads);
    assert_eq!(acl.as_object().unwrap().len(), 1, "one group, for LuCI");
}

/// `session access` for `function` of `provisioner` in session `sid`.
fn may(bus: &Bus, sid: &str, function: &str) -> bool {
    let r = bus.call(
        "session",
        "access",
        &json!({"ubus_rpc_session": sid, "scope": "ubus", "object": "provisioner", "function": function})
            .to_string(),
    );
    r["access"]
        .as_bool()
        .unwrap_or_else(|| panic!("session access: {r}"))
}

fn login(bus: &Bus, user: &str) -> String {
    let r = bus.call(
        "session",
        "login",
        &json!({"username": user, "password": bus::PASSWORD, "timeout": 60}).to_string(),
    );
    r["ubus_rpc_session"]
        .as_str()
        .unwrap_or_else(|| panic!("session login {user}: {r}"))
        .to_owned()
}

fn error(reply: &Value) -> (&str, &str) {
    let e = &reply["error"];
    match (e["kind"].as_str(), e["message"].as_str()) {
        (Some(k), Some(m)) => (k, m),
        _ => panic!("not an error reply: {reply}"),
    }
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "needs the OpenWrt kit (../shared/openwrt or $OPENWRT_KIT): real ubusd and rpcd"
)]
fn ubus_calls_reach_the_daemon_and_bad_ones_change_nothing() {
    let rig = Rig::new(2);
    // With OpenWrt's uci on its PATH, as on a router: allow_add writes through it. Started
    // before ubusd: the object is there once ubusd is.
    let uci_dir = kit::bin("uci").parent().unwrap().to_path_buf();
    let bus_dir = rig.dir().join("ubus");
    let socket = Bus::socket(&bus_dir);
    let daemon = rig.start_daemon_in(
        Some(&uci_dir),
        &config(""),
        &["--ubus", socket.to_str().unwrap()],
    );
    rig.dhcp(1).expect("a lease");
    rig.dhcp(2).expect("a lease");
    let mut bus = Bus::start(&bus_dir);
    bus.wait_for("provisioner", Duration::from_secs(10));
    let absent: Vec<String> = daemon
        .lines()
        .into_iter()
        .filter(|l| l.contains("no ubus object"))
        .collect();
    assert_eq!(
        absent.len(),
        1,
        "one line while ubusd was not there: {absent:?}"
    );

    // The methods and their argument types, as the daemon registered them.
    let out = bus.ubus(&["-v", "list", "provisioner"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for method in listed() {
        assert!(
            listing.contains(&format!("\"{method}\":")),
            "{method} missing: {listing}"
        );
    }
    for typed in [
        r#""evict":{"mac":"String","ban":"Integer"}"#,
        r#""window":{"action":"String","secs":"Integer","for":"Array","count":"Integer"}"#,
        r#""allow_add":{"name":"String","domain":"Array","address":"Array","proto":"String","port":"Array","profile":"String"}"#,
        r#""allow_remove":{"name":"Array"}"#,
        r#""events":{"since":"Integer"}"#,
        r#""status":{}"#,
    ] {
        assert!(listing.contains(typed), "{typed} not in: {listing}");
    }

    // status: the daemon's reply, as provisionerctl --json prints it.
    let daemon = rig.status();
    let s = bus.provisioner("status", "{}");
    assert_eq!(s["version"], 1, "{s}");
    assert_eq!(
        s["status"]["window"]["open"],
        json!(daemon.window.open),
        "{s}"
    );
    assert_eq!(s["status"]["window"]["open"], true, "mode always: {s}");
    let macs: BTreeSet<&str> = s["status"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mac"].as_str().unwrap())
        .collect();
    assert_eq!(macs, ["02:00:00:00:00:01", "02:00:00:00:00:02"].into());
    // All of it is the daemon's reply, nulls included, but for the clocks that moved.
    let mut want = serde_json::to_value(&daemon).unwrap();
    let mut got = s["status"].clone();
    for v in [&mut want, &mut got] {
        v["uptime"] = Value::Null;
        for c in v["clients"].as_array_mut().unwrap() {
            c["age"] = Value::Null;
            c["session_left"] = Value::Null;
        }
    }
    assert_eq!(got, want, "ubus's status is not the daemon's");

    // An evict of a client: gone, in the daemon's own status.
    let r = bus.provisioner("evict", r#"{"mac":"02:00:00:00:00:01"}"#);
    assert_eq!(r["station"]["mac"], "02:00:00:00:00:01", "{r}");
    assert_eq!(r["station"]["client"], false, "{r}");
    let after = rig.status();
    assert_eq!(after.clients.len(), 1, "{after:?}");
    assert_eq!(after.clients[0].mac.to_string(), "02:00:00:00:00:02");

    // Refused (not a client any more; never one), with the daemon's reason, and nothing
    // changed.
    for mac in ["02:00:00:00:00:01", "02:00:00:00:00:07"] {
        let r = bus.provisioner("evict", &json!({ "mac": mac }).to_string());
        let (kind, message) = error(&r);
        assert_eq!(kind, "refused", "{r}");
        assert!(message.contains(&format!("{mac} is not a client")), "{r}");
    }
    // Orders with a ban go through as durations in seconds; out of range is refused.
    let r = bus.provisioner("ban", r#"{"mac":"02:00:00:00:00:09","secs":3600}"#);
    let left = r["station"]["banned_secs"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    assert!((3590..=3600).contains(&left), "{r}");
    let r = bus.provisioner("unban", r#"{"mac":"02:00:00:00:00:09"}"#);
    assert_eq!(r["station"]["banned_secs"], Value::Null, "{r}");
    let r = bus.provisioner("evict", r#"{"mac":"02:00:00:00:00:02","ban":99999999}"#);
    assert_eq!(error(&r).0, "refused", "{r}");
    let r = bus.provisioner("window", r#"{"action":"reboot"}"#);
    assert_eq!(error(&r).0, "usage", "{r}");
    // A window for one device: a malformed MAC is usage; with mode 'always' the window is
    // open for everyone, and one for a device only is refused, saying why.
    let r = bus.provisioner("window", r#"{"action":"open","for":["00:11:zz"]}"#);
    let (kind, message) = error(&r);
    assert_eq!(kind, "usage", "{r}");
    assert!(message.contains("not a MAC prefix"), "{r}");
    let r = bus.provisioner(
        "window",
        r#"{"action":"open","for":["00:11:22:33:44:55"],"count":1}"#,
    );
    let (kind, message) = error(&r);
    assert_eq!(kind, "refused", "{r}");
    assert!(message.contains("always open"), "{r}");

    // Hostile strings are judged as what they stand for, refused as usage, and change
    // nothing: no shell runs them, no option is taken from them.
    let marker = rig.dir().join("pwned");
    let m = marker.display();
    for hostile in [
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("02:00:00:00:00:02; touch {m}"),
        format!("' ; touch {m}; '"),
        "--help".to_owned(),
        "02:00:00:00:00:02 --ban 1h".to_owned(),
        "02:00:00:00:00:02\n".to_owned(),
    ] {
        for (method, args) in [
            ("evict", json!({ "mac": hostile })),
            ("ban", json!({ "mac": hostile, "secs": 60 })),
            (
                "ban",
                json!({ "mac": "02:00:00:00:00:02", "secs": hostile }),
            ),
            ("unban", json!({ "mac": hostile })),
        ] {
            let r = bus.provisioner(method, &args.to_string());
            let (kind, message) = error(&r);
            assert_eq!(kind, "usage", "{method} {args}: {r}");
            assert!(
                message.contains("not a MAC address") || message.contains("not a duration"),
                "{method} {args}: {r}"
            );
        }
    }
    assert!(!marker.exists(), "a MAC string ran a command");
    let unchanged = rig.status();
    let macs = |s: &provisioner::control::protocol::Status| {
        s.clients.iter().map(|c| c.mac).collect::<Vec<_>>()
    };
    assert_eq!(macs(&unchanged), macs(&after), "{unchanged:?}");
    assert!(unchanged.bans.is_empty(), "{unchanged:?}");

    // The other methods, each the daemon's reply: clients with kernel counters, the audit
    // log (the eviction above in it), metrics, the allow-list and a change to it.
    let c = bus.provisioner("clients", "{}");
    assert!(
        c["clients"]["stations"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r["mac"] == "02:00:00:00:00:02")),
        "{c}"
    );
    let e = bus.provisioner("events", r#"{"since":0}"#);
    let events = e["events"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{e}"));
    assert!(
        events
            .iter()
            .any(|v| v["event"] == "evicted" && v["reason"] == "operator"),
        "{e}"
    );
    let m = bus.provisioner("metrics", "{}");
    let text = m["metrics"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{m}"));
    assert!(text.lines().any(|l| l == "provisioner_clients 1"), "{text}");
    let a = bus.provisioner(
        "allow_add",
        r#"{"name":"extra","address":["11.1.0.30"],"port":["8443"]}"#,
    );
    assert!(
        a["allow"]["entries"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["name"] == "extra")),
        "{a}"
    );
    let l = bus.provisioner("allow_list", r#"{"name":"extra"}"#);
    assert_eq!(l["allow"]["entries"][0]["ports"], json!(["8443"]), "{l}");
    let r = bus.provisioner("allow_remove", r#"{"name":["extra","nope"]}"#);
    assert_eq!(error(&r).0, "refused", "{r}");
    let r = bus.provisioner("allow_remove", r#"{"name":["extra"]}"#);
    assert!(r["allow"]["entries"].is_array(), "{r}");

    // rpcd's sessions, from the ACL file: a read-only login may read, not order.
    let viewer = login(&bus, "viewer");
    assert!(may(&bus, &viewer, "status"));
    assert!(may(&bus, &viewer, "clients"));
    assert!(!may(&bus, &viewer, "evict"));
    assert!(!may(&bus, &viewer, "window"));
    let operator = login(&bus, "operator");
    assert!(may(&bus, &operator, "status"));
    assert!(may(&bus, &operator, "evict"));
    assert!(!may(&bus, &operator, "reboot"));
    let r = bus.ubus(&[
        "call",
        "session",
        "login",
        &json!({"username": "operator", "password": "wrong"}).to_string(),
    ]);
    assert!(!r.status.success(), "a wrong password logged in: {r:?}");

    // ubusd restarted: its objects are gone, and the daemon puts its own back.
    bus.restart();
    bus.wait_for("provisioner", Duration::from_secs(10));
    let s = bus.provisioner("status", "{}");
    assert_eq!(
        s["status"]["clients"].as_array().map(Vec::len),
        Some(1),
        "{s}"
    );
}
