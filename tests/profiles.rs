//! Vendor profiles in the netns rig: two vendors, each client reaching only its own
//! vendor's cloud, by name and by address; a client of no vendor (a randomised MAC whose
//! digits are a vendor's) gets DHCP and nothing else; a profile change by reload or by the
//! control socket takes effect at once, open connections included, and leaves the other
//! vendor's alone.

mod rig;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use nix::sys::signal::Signal;
use provisioner::control::protocol::Reply;
use rig::*;

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);
const LOG: Duration = Duration::from_secs(10);
/// Acme's cloud: a static address and a name's address.
const ACME_STATIC: Ipv4Addr = CLOUD_ALLOWED;
const ACME_NAMED: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 30);
const ACME_NAME: &str = "api.acme.example";
/// Bolt's cloud.
const BOLT_STATIC: Ipv4Addr = CLOUD_OTHER;
const BOLT_NAMED: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 40);
const BOLT_NAME: &str = "api.bolt.example";

/// Client 1 is an Acme device, client 2 a Bolt one (globally administered MACs under
/// each vendor's prefix); client 3 has Acme's digits with the local bit set: a randomised
/// MAC, no vendor's.
const MACS: [&str; 3] = [
    "00:a0:01:00:00:01",
    "00:b0:02:00:00:02",
    "02:a0:01:00:00:03",
];

fn toml_config(acme_oui: &str) -> String {
    format!(
        "[network]
interface = \"{PROV_IF}\"
wan = \"{WAN_IF}\"
subnet = \"{PROV_NET}/{PROV_PREFIX}\"
router = \"{ROUTER_PROV}\"

[window]
mode = \"always\"

[dns]
upstream = [\"{CLOUD_DNS}\"]

[profile.acme]
oui = [\"{acme_oui}\"]

[profile.bolt]
oui = [\"00:b0:02\"]

[allow.acme_static]
address = [\"{ACME_STATIC}\"]
port = [{ECHO}]
profile = \"acme\"

[allow.acme_cloud]
domain = [\"{ACME_NAME}\"]
port = [{ECHO}]
profile = \"acme\"

[allow.bolt_static]
address = [\"{BOLT_STATIC}\"]
port = [{ECHO}]
profile = \"bolt\"

[allow.bolt_cloud]
domain = [\"{BOLT_NAME}\"]
port = [{ECHO}]
profile = \"bolt\"
"
    )
}

/// The rig with `clients` clients under [`MACS`], echo servers at both clouds, the names
/// in the fake resolvers' zone, and the daemon running on [`toml_config`].
fn setup(clients: usize) -> (Rig, Proc) {
    let rig = Rig::new(clients);
    for (i, mac) in MACS.iter().enumerate().take(clients) {
        rig.client(i + 1)
            .exec_ok(&["ip", "link", "set", HOST_IF, "address", mac]);
    }
    echo_servers(&rig, &[ACME_STATIC, ACME_NAMED, BOLT_STATIC, BOLT_NAMED]);
    for (name, ip) in [(ACME_NAME, ACME_NAMED), (BOLT_NAME, BOLT_NAMED)] {
        rig.dns_zone(
            name,
            FakeAnswer {
                a: vec![ip],
                ttl: 300,
                ..FakeAnswer::default()
            },
        );
    }
    let path = rig.dir().join("provisioner.toml");
    std::fs::write(&path, toml_config("00:a0:01")).unwrap();
    let daemon = rig.start_daemon_on(&path, None);
    for i in 1..=clients {
        rig.dhcp(i).unwrap_or_else(|e| panic!("client {i}: {e}"));
    }
    (rig, daemon)
}

fn reaches(rig: &Rig, i: usize, dst: Ipv4Addr) -> bool {
    connect(rig, i, dst, YES).is_some_and(|mut s| echoes(&mut s, YES))
}

fn refused(rig: &Rig, i: usize, dst: Ipv4Addr) -> bool {
    connect(rig, i, dst, NO).is_none_or(|mut s| !echoes(&mut s, NO))
}

fn ask(rig: &Rig, i: usize, name: &str) -> DnsReply {
    dns_query(
        rig.client(i),
        SocketAddr::from((ROUTER_PROV, 53)),
        name,
        RecordType::A,
        false,
        YES,
    )
    .unwrap_or_else(|e| panic!("client {i} {name}: {e:?}"))
}

/// Client `i` resolves `name` to `ip`.
fn resolves(rig: &Rig, i: usize, name: &str, ip: Ipv4Addr) {
    let r = ask(rig, i, name);
    assert_eq!(
        (r.rcode.as_str(), r.a.as_slice()),
        ("NoError", &[ip][..]),
        "client {i} {name}"
    );
}

fn is_refused(rig: &Rig, i: usize, name: &str) -> bool {
    ask(rig, i, name).rcode == "Refused"
}

fn profile_of(rig: &Rig, mac: &str) -> Option<String> {
    match rig.ctl(&["clients"]) {
        Reply::Clients(c) => {
            c.stations
                .into_iter()
                .find(|s| s.mac.to_string() == mac)
                .unwrap_or_else(|| panic!("{mac} is no station"))
                .profile
        }
        other => panic!("not a clients reply: {other:?}"),
    }
}

#[test]
fn each_vendor_reaches_only_its_own_cloud_and_a_randomised_mac_nothing() {
    let (rig, _daemon) = setup(3);
    // Both vendors' devices resolve their own names first: the kernel then holds an
    // element for each name's address, so what follows proves the elements are per client.
    resolves(&rig, 1, ACME_NAME, ACME_NAMED);
    resolves(&rig, 2, BOLT_NAME, BOLT_NAMED);

    let cases = [
        (
            1,
            [ACME_STATIC, ACME_NAMED],
            [BOLT_STATIC, BOLT_NAMED],
            BOLT_NAME,
        ),
        (
            2,
            [BOLT_STATIC, BOLT_NAMED],
            [ACME_STATIC, ACME_NAMED],
            ACME_NAME,
        ),
    ];
    for (i, own, other, other_name) in cases {
        for dst in own {
            assert!(
                reaches(&rig, i, dst),
                "client {i} cannot reach its own {dst}"
            );
        }
        assert!(
            is_refused(&rig, i, other_name),
            "client {i} resolved {other_name}"
        );
        for dst in other {
            assert!(
                refused(&rig, i, dst),
                "client {i} reached the other vendor's {dst}"
            );
        }
    }

    // The randomised MAC: a lease (it got one in `setup`) and nothing else, neither name
    // nor address of either vendor.
    for name in [ACME_NAME, BOLT_NAME] {
        assert!(is_refused(&rig, 3, name), "client 3 resolved {name}");
    }
    for dst in [ACME_STATIC, ACME_NAMED, BOLT_STATIC, BOLT_NAMED] {
        assert!(refused(&rig, 3, dst), "client 3 reached {dst}");
    }

    assert_eq!(profile_of(&rig, MACS[0]).as_deref(), Some("acme"));
    assert_eq!(profile_of(&rig, MACS[1]).as_deref(), Some("bolt"));
    assert_eq!(profile_of(&rig, MACS[2]), None);
}

#[test]
fn a_profile_change_by_reload_or_the_control_socket_takes_effect_at_once() {
    let (rig, daemon) = setup(2);
    let path = rig.dir().join("provisioner.toml");
    resolves(&rig, 1, ACME_NAME, ACME_NAMED);
    let mut acme_static = connect(&rig, 1, ACME_STATIC, YES).expect("acme static");
    let mut acme_named = connect(&rig, 1, ACME_NAMED, YES).expect("acme named");
    let mut bolt_static = connect(&rig, 2, BOLT_STATIC, YES).expect("bolt static");
    for s in [&mut acme_static, &mut acme_named, &mut bolt_static] {
        assert!(echoes(s, YES), "open before the change");
    }

    // Reload: Acme's prefix moves away from client 1, which is now of no profile.
    std::fs::write(&path, toml_config("00:a0:09")).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_line("reloaded", LOG).expect("reload");
    // Every entry is judged again when prefixes move; Acme's say what they ended.
    for name in ["acme_static", "acme_cloud"] {
        daemon
            .wait_line(
                &format!("event=allow_changed name={name} flows_ended=1"),
                LOG,
            )
            .expect("the change ends the connection");
    }
    assert!(
        !echoes(&mut acme_static, NO),
        "the static connection survived"
    );
    assert!(
        !echoes(&mut acme_named, NO),
        "the learned connection survived"
    );
    assert!(refused(&rig, 1, ACME_STATIC) && refused(&rig, 1, ACME_NAMED));
    assert!(
        is_refused(&rig, 1, ACME_NAME),
        "still resolves its old vendor's name"
    );
    assert_eq!(profile_of(&rig, MACS[0]), None);
    // The twin: Bolt's client, whose profile did not change, keeps its connection.
    assert!(echoes(&mut bolt_static, YES), "bolt's connection was cut");
    assert!(reaches(&rig, 2, BOLT_STATIC));

    // The control socket: an entry added for Bolt opens to Bolt's client at once, and not
    // to client 1; removed, it closes its open connection and leaves the rest.
    let a = ACME_STATIC.to_string();
    let port = ECHO.to_string();
    let add = ["allow", "add", "shared", "--address", &a, "--port", &port];
    let out = rig.ctl_output(&[&add[..], &["--profile", "nope"]].concat());
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("no profile 'nope'"), "{said}");

    let r = rig.ctl(&[&add[..], &["--profile", "bolt"]].concat());
    let entry = match &r {
        Reply::Allow(a) => a.entries.iter().find(|e| e.name == "shared").cloned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(entry.and_then(|e| e.profile).as_deref(), Some("bolt"));
    assert!(
        std::fs::read_to_string(&path).unwrap().contains(
            "[allow.shared]\naddress = [\"11.1.0.10\"]\nport = [9000]\nprofile = \"bolt\"\n"
        ),
        "not written back"
    );
    let mut shared = connect(&rig, 2, ACME_STATIC, YES).expect("bolt reaches the shared address");
    assert!(echoes(&mut shared, YES));
    assert!(refused(&rig, 1, ACME_STATIC), "client 1 is of no profile");

    rig.ctl(&["allow", "remove", "shared"]);
    daemon
        .wait_line("event=allow_removed name=shared flows_ended=1", LOG)
        .expect("the removal ends the connection");
    assert!(
        !echoes(&mut shared, NO),
        "the removed entry's connection survived"
    );
    assert!(refused(&rig, 2, ACME_STATIC));
    assert!(
        echoes(&mut bolt_static, YES),
        "bolt's own connection was cut"
    );
}
