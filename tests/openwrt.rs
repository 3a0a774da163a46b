//! The OpenWrt package's shell scripts (the uci-defaults script, the init script's start,
//! reload and wireless sync, /usr/libexec/provisioner-ssid) on OpenWrt router shapes, with
//! OpenWrt's own `uci` and firewall4 (the kit in ../shared/openwrt, see tests/kit): no
//! stand-in for uci, no root needed except for loading the rulesets (a private network
//! namespace each time, gone when `unshare` exits).
//!
//! Each shape is a router's /etc/config after its first boot (tests/openwrt/<shape>: network
//! and wireless as OpenWrt's config_generate and `wifi config` write them, the dhcp every
//! OpenWrt has, firewall4's own default firewall, the package's provisioner config): DSA,
//! swconfig, PPPoE, no Wi-Fi, 5 GHz only. The scripts run in busybox's ash (OpenWrt's
//! /bin/sh) when installed and in the host's sh, with a `uci` early in PATH that logs its
//! arguments and runs the kit's uci on the router's directories (`-c ROOT/etc/config -t
//! ROOT/tmp/.uci`), and stubs for `wifi`, `logger`, `nft` and procd's functions. The
//! results are read back with the real uci, rendered by the real fw4 (`fw4-print`), and
//! fw4's ruleset and the daemon's table are loaded side by side in a network namespace.
//! The daemon is never started.

mod kit;
mod pkgutil;
mod router;

use pkgutil::{check_config, root, run, shells, stderr, text};
use router::*;
use std::path::Path;
use std::process::Command;

/// The body of `chain NAME` in an nft ruleset.
fn chain(ruleset: &str, name: &str) -> Option<String> {
    let head = format!("\tchain {name} {{\n");
    let start = ruleset.find(&head)? + head.len();
    let len = ruleset[start..].find("\n\t}")?;
    Some(ruleset[start..start + len].to_owned())
}

/// Loads `files` one after the other into a fresh network namespace (fw4's own `nft -c`
/// check first), and returns `nft list tables` there. The namespace goes with `unshare`.
fn load_in_netns(files: &[&Path]) -> String {
    let root = nix_is_root();
    let mut c = Command::new("unshare");
    c.arg(if root { "-n" } else { "-rn" }).args([
        "sh",
        "-c",
        "nft -c -f \"$1\" || exit 1; for f; do nft -f \"$f\" || exit 1; done; nft list tables",
        "sh",
    ]);
    c.args(files);
    text(&run(&mut c))
}

fn nix_is_root() -> bool {
    text(&run(Command::new("id").arg("-u"))).trim() == "0"
}

/// Runs uci-defaults twice: the second run must change nothing (byte for byte) and not even
/// try. Returns what the first run said.
fn uci_defaults_twice(r: &Router) -> String {
    let said = stderr(&r.uci_defaults());
    r.nothing_staged();
    let first = r.files();
    r.clear_logs();
    r.uci_defaults();
    assert_eq!(r.files(), first, "the second run changed the config");
    let writes: Vec<String> = r
        .log("uci.log")
        .lines()
        .filter(|l| {
            let cmd = l.split_whitespace().find(|w| !w.starts_with('-'));
            !matches!(cmd, Some("get" | "show" | "commit"))
        })
        .map(str::to_owned)
        .collect();
    assert!(writes.is_empty(), "the second run wrote: {writes:?}");
    r.nothing_staged();
    check_config(&r.etc().join("provisioner"));
    said
}

/// fw4 puts a zone's rules in UCI order: the marked traffic's accept must come before the
/// catch-all reject.
fn rules_in_order(r: &Router) {
    let sections = r.sections("firewall");
    let at = |name: &str| sections.iter().position(|s| s == name);
    let closed = at("provision_closed").expect("provision_closed");
    if let Some(cloud) = at("provision_cloud") {
        assert!(
            cloud < closed,
            "provision_cloud after provision_closed: {sections:?}"
        );
    }
}

/// What uci-defaults must have set up on any router (`said`: its messages).
fn set_up(r: &Router, said: &str) {
    let shape = r.shape;
    let g = |k: &str| {
        r.get(k)
            .unwrap_or_else(|| panic!("{k} is not set ({shape:?})"))
    };

    // network: the interface on an empty bridge, the provisioner's router address.
    assert_eq!(g("network.provision"), "interface");
    assert_eq!(g("network.provision.proto"), "static");
    assert_eq!(g("network.provision.device"), "br-provision");
    assert_eq!(g("network.provision.ipaddr"), "192.168.250.1");
    assert_eq!(g("network.provision.netmask"), "255.255.255.0");
    assert_eq!(g("network.provision.delegate"), "0");
    let dev = r
        .find("network", "device", "name", "br-provision")
        .expect("device");
    assert_eq!(g(&format!("network.{dev}.type")), "bridge");
    assert_eq!(g(&format!("network.{dev}.bridge_empty")), "1");
    assert_eq!(g(&format!("network.{dev}.ipv6")), "0");

    // firewall
    let z = r
        .find("firewall", "zone", "name", "provision")
        .expect("zone");
    for (opt, want) in [
        ("network", "provision"),
        ("input", "REJECT"),
        ("output", "ACCEPT"),
        ("forward", "REJECT"),
        ("auto_helper", "0"),
    ] {
        assert_eq!(g(&format!("firewall.{z}.{opt}")), want, "{opt}");
    }
    // Fail-closed at fw4's level too: no forwarding provision -> wan, only what
    // provisionerd's table marked goes out, everything else from the zone is rejected.
    assert_eq!(
        r.find("firewall", "forwarding", "src", "provision"),
        None,
        "a forwarding lets the setup network out without provisionerd's table"
    );
    for (opt, want) in [
        ("", "rule"),
        ("src", "provision"),
        ("dest", "wan"),
        ("proto", "all"),
        ("family", "ipv4"),
        ("mark", "0x40000000/0x40000000"),
        ("target", "ACCEPT"),
    ] {
        let key = format!(
            "firewall.provision_cloud{}{opt}",
            if opt.is_empty() { "" } else { "." }
        );
        assert_eq!(g(&key), want, "{key}");
    }
    for (opt, want) in [
        ("", "rule"),
        ("src", "provision"),
        ("dest", "*"),
        ("proto", "all"),
        ("target", "REJECT"),
    ] {
        let key = format!(
            "firewall.provision_closed{}{opt}",
            if opt.is_empty() { "" } else { "." }
        );
        assert_eq!(g(&key), want, "{key}");
    }
    assert_eq!(r.get("firewall.provision_closed.family"), None);
    rules_in_order(r);
    // The mark is the one the daemon's table sets on what it lets out.
    let ruleset = run(Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["provisionerd", "--print-ruleset", "--config"])
        .arg(r.etc().join("provisioner")));
    let ruleset = text(&ruleset);
    assert!(
        ruleset.contains("meta mark set meta mark | 0x40000000 accept"),
        "the table does not set 0x40000000:\n{ruleset}"
    );
    let dhcp = r
        .find("firewall", "rule", "dest_port", "67")
        .expect("DHCP rule");
    let dns = r
        .find("firewall", "rule", "dest_port", "53")
        .expect("DNS rule");
    let socks = r
        .find("firewall", "rule", "dest_port", "1080")
        .expect("SOCKS rule");
    for (rule, proto) in [(&dhcp, "udp"), (&dns, "tcp udp"), (&socks, "tcp")] {
        assert_eq!(g(&format!("firewall.{rule}.src")), "provision");
        assert_eq!(g(&format!("firewall.{rule}.proto")), proto);
        assert_eq!(g(&format!("firewall.{rule}.target")), "ACCEPT");
    }

    // dhcp: neither dnsmasq nor odhcpd serve there, dnsmasq does not bind there.
    let d = r
        .find("dhcp", "dhcp", "interface", "provision")
        .expect("dhcp section");
    assert_eq!(g(&format!("dhcp.{d}.ignore")), "1");
    assert_eq!(g("dhcp.@dnsmasq[0].notinterface"), "br-provision");
    assert_eq!(
        r.get("dhcp.lan.ignore"),
        None,
        "the LAN's DHCP is untouched"
    );

    // provisioner: the WAN device.
    assert_eq!(g("provisioner.network.wan"), shape.wan);

    // wireless
    match shape.radio {
        Some((radio, radio_disabled)) => {
            // Hidden, open, isolated both ways (hostapd's ap_isolate; the bridge port's
            // isolated flag), one spot more, created down.
            let w = r.setup_iface();
            for (opt, want) in [
                ("device", radio),
                ("disabled", "1"),
                ("mode", "ap"),
                ("ssid", "setup"),
                ("network", "provision"),
                ("encryption", "none"),
                ("hidden", "1"),
                ("isolate", "1"),
                ("bridge_isolate", "1"),
                ("maxassoc", "9"),
            ] {
                assert_eq!(g(&format!("wireless.{w}.{opt}")), want, "{opt}");
            }
            assert_eq!(g("provisioner.radio.hostapd"), "external");
            assert_eq!(g("provisioner.radio.ifname"), "wl-provision");
            assert_eq!(
                g("provisioner.radio.ssid_command"),
                "/usr/libexec/provisioner-ssid"
            );
            // A radio OpenWrt left disabled stays so (enabling it would bring up its open
            // default SSID too); the user is told.
            let told = said.contains(&format!("radio {radio} is disabled"));
            assert_eq!(told, radio_disabled, "{said}");
            assert_eq!(
                r.get(&format!("wireless.{radio}.disabled")).as_deref(),
                radio_disabled.then_some("1")
            );
        }
        None => {
            assert_eq!(
                r.find("wireless", "wifi-iface", "ifname", "wl-provision"),
                None
            );
            assert_eq!(r.get("provisioner.@radio[0]"), None);
            assert!(said.contains("no radio in /etc/config/wireless"), "{said}");
        }
    }
}

/// The `wifi` calls in a stub log.
fn wifi_calls(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("wifi ")).collect()
}

/// Only uci-defaults' own work: nothing but uci ran (`wifi config`, to write a missing
/// /etc/config/wireless, only when there is none and the kernel has radios).
fn ran_nothing_else(r: &Router) {
    let stubs = r.log("stub.log");
    // The values it works from are the daemon's (--print-config), asked once.
    let asked = format!(
        "provisionerd --config {} --print-config",
        r.etc().join("provisioner").display()
    );
    assert_eq!(stubs.lines().filter(|l| *l == asked).count(), 1, "{stubs}");
    let others: Vec<&str> = stubs
        .lines()
        .filter(|l| *l != "wifi config" && *l != asked)
        .collect();
    assert!(others.is_empty(), "{stubs}");
    if r.shape.radio.is_some() {
        assert!(
            !stubs.contains("wifi config"),
            "wifi config with a wireless config"
        );
    }
}

/// A shape, in one shell: uci-defaults twice, the init script's start and reload, the SSID
/// up and down, fw4.
fn exercise(shape: Shape, shell: &[&'static str]) {
    let r = Router::new(shape, &format!("{}-{}", shape.dir, shell.join("-")), shell);
    let home = r.show("wireless");
    r.clear_logs();
    let said = uci_defaults_twice(&r);
    set_up(&r, &said);
    r.clear_logs();
    // The home SSIDs and radios are untouched: only the setup wifi-iface is new.
    let ours = shape.radio.map(|_| format!("wireless.{}", r.setup_iface()));
    let theirs: Vec<String> = r
        .show("wireless")
        .into_iter()
        .filter(|l| {
            ours.as_ref().is_none_or(|o| {
                !(l.starts_with(&format!("{o}=")) || l.starts_with(&format!("{o}.")))
            })
        })
        .collect();
    assert_eq!(theirs, home);

    // The init script: start, a second start, reload. uci-defaults left nothing to put right.
    let before = r.files();
    r.init("start_service");
    r.init("start_service");
    r.init("reload_service");
    r.nothing_staged();
    assert_eq!(r.files(), before, "start or reload changed a config");
    let stubs = r.log("stub.log");
    assert!(wifi_calls(&stubs).is_empty(), "{stubs}");
    assert_eq!(stubs.matches("procd_close_instance").count(), 3, "{stubs}");
    assert_eq!(stubs.matches("nft -f -").count(), 1, "{stubs}");

    if let Some((radio, radio_disabled)) = shape.radio {
        let w = r.setup_iface();
        // Drifted (LuCI, by hand): put back on the next start, with one wifi reload; then
        // nothing more to do.
        r.set(&format!("wireless.{w}.hidden=0"));
        r.set(&format!("wireless.{w}.bridge_isolate=0"));
        r.commit();
        r.clear_logs();
        r.init("start_service");
        r.nothing_staged();
        assert_eq!(r.get(&format!("wireless.{w}.hidden")).as_deref(), Some("1"));
        assert_eq!(
            r.get(&format!("wireless.{w}.bridge_isolate")).as_deref(),
            Some("1")
        );
        let stubs = r.log("stub.log");
        assert_eq!(
            stubs.lines().filter(|l| *l == "wifi reload").count(),
            1,
            "{stubs}"
        );
        let before = r.files();
        r.clear_logs();
        r.init("reload_service");
        assert_eq!(r.files(), before);
        assert!(wifi_calls(&r.log("stub.log")).is_empty());

        // The window: up, up again (nothing), down, down again (nothing).
        let disabled = format!("wireless.{w}.disabled");
        for (arg, want, changes) in [
            ("up", "0", true),
            ("up", "0", false),
            ("down", "1", true),
            ("down", "1", false),
        ] {
            let before = r.files();
            r.clear_logs();
            let out = r.ssid(&[arg]);
            assert!(out.status.success(), "{arg}: {out:?}");
            r.nothing_staged();
            assert_eq!(r.get(&disabled).as_deref(), Some(want), "{arg}");
            let stubs = r.log("stub.log");
            let reloads = wifi_calls(&stubs);
            if changes {
                let mut after = r.files();
                let wireless = after.remove("wireless");
                let mut was = before.clone();
                was.remove("wireless");
                assert_eq!(after, was, "{arg}: another config changed");
                assert_ne!(wireless.as_ref(), before.get("wireless"), "{arg}");
                assert_eq!(reloads, [format!("wifi reload {radio}")], "{arg}");
                assert_eq!(
                    stubs.contains(&format!("radio {radio} is disabled")),
                    radio_disabled && arg == "up",
                    "{arg}: {stubs}"
                );
            } else {
                assert_eq!(r.files(), before, "{arg} again");
                assert!(reloads.is_empty(), "{arg} again: {stubs}");
            }
            // After each, start and reload leave the window's choice alone.
            let before = r.files();
            r.clear_logs();
            r.init("start_service");
            assert_eq!(r.files(), before, "start after {arg}");
        }
    } else {
        // No setup SSID to bring up or down: a failure the daemon logs, nothing touched.
        let before = r.files();
        let out = r.ssid(&["up"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            stderr(&out).contains("no wifi-iface with ifname"),
            "{out:?}"
        );
        assert_eq!(r.files(), before);
        assert!(wifi_calls(&r.log("stub.log")).is_empty());
    }

    // fw4 renders it: the zone on br-provision, DHCP and DNS in, only marked traffic out to
    // the WAN and the rest rejected, in that order; no conntrack helper on the zone.
    let fw4 = r.fw4();
    assert!(
        fw4.contains("define provision_devices = { \"br-provision\" }"),
        "{fw4}"
    );
    let input = chain(&fw4, "input_provision").expect("chain input_provision");
    assert!(input.contains("udp dport 67 counter accept"), "{input}");
    assert!(input.contains("udp dport 53 counter accept"), "{input}");
    assert!(input.contains("tcp dport 53 counter accept"), "{input}");
    assert!(input.contains("tcp dport 1080 counter accept"), "{input}");
    let forward = chain(&fw4, "forward_provision").expect("chain forward_provision");
    let lines: Vec<&str> = forward.lines().map(str::trim).collect();
    let cloud = lines
        .iter()
        .position(|l| {
            l.contains("meta mark and 0x40000000 == 0x40000000")
                && l.contains("jump accept_to_wan")
                && l.contains("Allow-Provision-Cloud")
        })
        .unwrap_or_else(|| panic!("no mark rule in forward_provision:\n{forward}"));
    let closed = lines
        .iter()
        .position(|l| l.contains("jump handle_reject") && l.contains("Reject-Provision-Forward"))
        .unwrap_or_else(|| panic!("no provision_closed in forward_provision:\n{forward}"));
    assert!(cloud < closed, "{forward}");
    let to_wan = chain(&fw4, "accept_to_wan").expect("chain accept_to_wan");
    assert!(
        to_wan.contains(&format!("oifname \"{}\"", shape.wan)),
        "{to_wan}"
    );
    assert!(!fw4.contains("helper_provision"), "{fw4}");

    // It loads, and the daemon's table next to it.
    let fw4_file = r.dir.join("fw4.nft");
    std::fs::write(&fw4_file, &fw4).unwrap();
    let ours = r.dir.join("provisioner.nft");
    std::fs::write(
        &ours,
        text(&run(Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(["provisionerd", "--print-ruleset", "--config"])
            .arg(r.etc().join("provisioner")))),
    )
    .unwrap();
    let tables = load_in_netns(&[&fw4_file, &ours]);
    assert!(tables.contains("table inet fw4"), "{tables}");
    assert!(tables.contains("table inet provisioner"), "{tables}");
    // Every table of the daemon's (inet, and arp where it has one).
    for table in std::fs::read_to_string(&ours)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
    {
        let name = table.trim_end_matches(['{', '}', ' ']);
        assert!(
            tables.lines().any(|l| l == format!("table {name}")),
            "table {name} not loaded: {tables}"
        );
    }
}

fn exercise_in_every_shell(shape: Shape) {
    for shell in shells() {
        exercise(shape, &shell);
    }
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn dsa_router() {
    exercise_in_every_shell(DSA);
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn swconfig_router() {
    exercise_in_every_shell(SWCONFIG);
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn pppoe_router() {
    exercise_in_every_shell(PPPOE);
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn router_without_wifi() {
    exercise_in_every_shell(NOWIFI);
    // `wifi config` on a router without radios writes an empty /etc/config/wireless: the
    // same.
    let r = Router::new(NOWIFI, "nowifi-empty", &shells()[0]);
    std::fs::write(r.etc().join("wireless"), "").unwrap();
    let said = uci_defaults_twice(&r);
    set_up(&r, &said);
    ran_nothing_else(&r);
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn router_with_5ghz_only() {
    exercise_in_every_shell(FIVE_GHZ);
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn uci_defaults_runs_nothing_but_uci() {
    for shape in [DSA, SWCONFIG, PPPOE, NOWIFI, FIVE_GHZ] {
        let r = Router::new(shape, &format!("quiet-{}", shape.dir), &shells()[0]);
        r.uci_defaults();
        ran_nothing_else(&r);
    }
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn an_administrators_staged_wireless_change_stays_staged() {
    for shell in shells() {
        let r = Router::new(DSA, &format!("staged-{}", shell.join("-")), &shell);
        r.uci_defaults();
        let w = r.setup_iface();
        // Half-done work of the administrator's, staged (`uci set` without `uci commit`).
        r.set("wireless.radio0.channel=11");
        let staged = r.staged();
        assert_eq!(staged, "wireless.radio0.channel='11'\n");
        let committed_channel = r.committed("wireless.radio0.channel");
        assert_eq!(committed_channel.as_deref(), Some("36"));

        // The window opens: our change is in the file, theirs still staged only.
        r.clear_logs();
        assert!(r.ssid(&["up"]).status.success());
        assert_eq!(
            r.committed(&format!("wireless.{w}.disabled")).as_deref(),
            Some("0")
        );
        assert_eq!(r.staged(), staged, "provisioner-ssid up");
        assert_eq!(r.committed("wireless.radio0.channel"), committed_channel);
        assert!(r.log("stub.log").contains("wifi reload"));

        // The wifi-iface drifted (written straight to the file, leaving the staged change
        // alone); start puts it back, and commits nothing of theirs.
        let out = r.uci(&[
            "set",
            &format!("{}/wireless.{w}.hidden=0", r.etc().display()),
        ]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(r.staged(), staged);
        r.clear_logs();
        r.init("start_service");
        assert_eq!(
            r.committed(&format!("wireless.{w}.hidden")).as_deref(),
            Some("1")
        );
        assert_eq!(r.staged(), staged, "the init script's wireless sync");
        assert_eq!(r.committed("wireless.radio0.channel"), committed_channel);
        assert!(r.log("stub.log").contains("wifi reload"));

        // The window closes.
        assert!(r.ssid(&["down"]).status.success());
        assert_eq!(
            r.committed(&format!("wireless.{w}.disabled")).as_deref(),
            Some("1")
        );
        assert_eq!(r.staged(), staged, "provisioner-ssid down");
        assert_eq!(r.committed("wireless.radio0.channel"), committed_channel);

        // When they commit, theirs goes in on top of ours.
        r.commit();
        assert_eq!(
            r.committed("wireless.radio0.channel").as_deref(),
            Some("11")
        );
        assert_eq!(
            r.committed(&format!("wireless.{w}.disabled")).as_deref(),
            Some("1")
        );
        assert_eq!(
            r.committed(&format!("wireless.{w}.hidden")).as_deref(),
            Some("1")
        );
    }
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn fw4_attaches_no_conntrack_helper_to_the_setup_zone() {
    let r = Router::new(DSA, "helpers", &shells()[0]);
    r.uci_defaults();
    let z = r.find("firewall", "zone", "name", "provision").unwrap();
    assert_eq!(
        r.get(&format!("firewall.{z}.auto_helper")).as_deref(),
        Some("0")
    );
    assert!(!r.fw4().contains("helper_provision"));

    // An install of the previous version has the zone without it, and fw4 attaches its
    // helpers (every one loaded on this machine; the chain and its jump in any case).
    r.delete(&format!("firewall.{z}.auto_helper"));
    r.commit();
    let fw4 = r.fw4();
    assert!(chain(&fw4, "helper_provision").is_some(), "{fw4}");
    assert!(
        fw4.contains("iifname \"br-provision\" jump helper_provision"),
        "{fw4}"
    );
    // The upgrade runs uci-defaults again: the zone gets it.
    r.uci_defaults();
    assert_eq!(
        r.get(&format!("firewall.{z}.auto_helper")).as_deref(),
        Some("0")
    );
    assert!(!r.fw4().contains("helper_provision"));

    // One the user set is the user's.
    r.set(&format!("firewall.{z}.auto_helper=1"));
    r.commit();
    uci_defaults_twice(&r);
    assert_eq!(
        r.get(&format!("firewall.{z}.auto_helper")).as_deref(),
        Some("1")
    );
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn uci_defaults_follows_the_provisioner_config() {
    for shell in shells() {
        let r = Router::new(DSA, &format!("defaults-cfg-{}", shell.join("-")), &shell);
        // A /16 without a router (the first host), more clients.
        r.set("provisioner.network.subnet=10.42.0.0/16");
        r.delete("provisioner.network.router");
        r.set("provisioner.dhcp.pool_start=10.42.0.10");
        r.set("provisioner.limits.max_clients=20");
        r.commit();
        uci_defaults_twice(&r);
        assert_eq!(r.get("network.provision.ipaddr").unwrap(), "10.42.0.1");
        assert_eq!(r.get("network.provision.netmask").unwrap(), "255.255.0.0");
        let w = r.setup_iface();
        assert_eq!(r.get(&format!("wireless.{w}.maxassoc")).unwrap(), "21");
        // fw4 takes the zone's subnet from netifd; the rules are the same.
        assert!(r.fw4().contains("Allow-Provision-Cloud"));
    }
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn uci_defaults_with_a_config_the_daemon_refuses_sets_nothing_up() {
    let r = Router::new(DSA, "defaults-bad", &shells()[0]);
    r.set("provisioner.network.subnet=192.168.250.0/33");
    r.commit();
    let before = r.files();
    let script = root().join("openwrt/files/provisioner.uci-defaults");
    // As /etc/init.d/boot runs it: `( . ./script ) && rm -f script`.
    let out = text(&r.sh(&format!("( . '{}' ) 2>&1; echo rc=$?", script.display())));
    assert!(out.ends_with("rc=1\n"), "{out}");
    assert!(out.contains("option 'subnet'"), "the daemon's error: {out}");
    assert!(out.contains("nothing set up"), "{out}");
    assert_eq!(r.files(), before, "nothing written");
    r.nothing_staged();

    // Fixed: the next run sets everything up.
    r.set("provisioner.network.subnet=192.168.250.0/24");
    r.commit();
    r.uci_defaults();
    assert_eq!(r.get("network.provision.ipaddr").unwrap(), "192.168.250.1");
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn uci_defaults_keeps_what_the_user_has() {
    let r = Router::new(DSA, "defaults-user", &shells()[0]);
    // The user's own WAN device choice, SSID command and an existing provision zone without
    // our network.
    r.set("provisioner.network.wan=eth0.2");
    r.set("provisioner.radio.ssid_command=/root/ssid.sh");
    r.set("firewall.myzone=zone");
    r.set("firewall.myzone.name=provision");
    r.set("firewall.myzone.input=DROP");
    r.commit();
    uci_defaults_twice(&r);
    assert_eq!(r.get("provisioner.network.wan").unwrap(), "eth0.2");
    assert_eq!(
        r.get("provisioner.radio.ssid_command").unwrap(),
        "/root/ssid.sh"
    );
    assert_eq!(r.get("firewall.myzone.input").unwrap(), "DROP");
    assert_eq!(r.get("firewall.myzone.network").unwrap(), "provision");
    // No conntrack helpers on it either.
    assert_eq!(r.get("firewall.myzone.auto_helper").unwrap(), "0");
    assert_eq!(
        r.get("firewall.provision"),
        None,
        "a second zone 'provision'"
    );
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn uci_defaults_migrates_an_install_of_the_previous_version() {
    for shell in shells() {
        let r = Router::new(
            DSA,
            &format!("defaults-migrate-{}", shell.join("-")),
            &shell,
        );
        // What the previous versions left: the same, but with a forwarding provision -> wan
        // instead of the mark rule and the catch-all, the wifi-iface up (no 'disabled'),
        // no ssid_command, no bridge_isolate, a zone with fw4's conntrack helpers. And a
        // forwarding provision -> wan of the user's own.
        r.uci_defaults();
        let w = r.setup_iface();
        let z = r.find("firewall", "zone", "name", "provision").unwrap();
        for del in [
            "firewall.provision_cloud",
            "firewall.provision_closed",
            "provisioner.radio.ssid_command",
            &format!("wireless.{w}.disabled"),
            &format!("wireless.{w}.bridge_isolate"),
            &format!("firewall.{z}.auto_helper"),
        ] {
            r.delete(del);
        }
        r.set("firewall.provision_wan=forwarding");
        r.set("firewall.provision_wan.src=provision");
        r.set("firewall.provision_wan.dest=wan");
        let mine = text(&r.uci(&["add", "firewall", "forwarding"]))
            .trim()
            .to_owned();
        r.set(&format!("firewall.{mine}.src=provision"));
        r.set(&format!("firewall.{mine}.dest=wan"));
        r.commit();
        // Its name as uci-defaults sees it (an anonymous section's name changes with the
        // sections before it: once provision_wan is gone, it has another).
        let provision = r.find_all("firewall", "forwarding", "src", "provision");
        assert_eq!(provision.len(), 2, "{provision:?}");
        assert_eq!(provision[0], "provision_wan");
        let mine_before = &provision[1];

        let said = stderr(&r.uci_defaults());
        assert!(said.contains("removed firewall.provision_wan"), "{said}");
        assert!(
            said.contains(" forwards provision -> wan: not ours"),
            "{said}"
        );
        r.nothing_staged();
        assert_eq!(r.get("firewall.provision_wan"), None, "ours is removed");
        // The user's is not ours to remove (an anonymous section's name changes with the
        // sections before it).
        let mine = r
            .find("firewall", "forwarding", "src", "provision")
            .expect("the user's forwarding");
        assert_eq!(
            r.get(&format!("firewall.{mine}.dest")).as_deref(),
            Some("wan")
        );
        assert!(
            said.contains(&format!("firewall.{mine_before} forwards")),
            "{said}"
        );
        assert_eq!(
            r.get("firewall.provision_cloud.mark").as_deref(),
            Some("0x40000000/0x40000000")
        );
        assert_eq!(
            r.get("firewall.provision_closed.target").as_deref(),
            Some("REJECT")
        );
        rules_in_order(&r);
        assert_eq!(
            r.get("provisioner.radio.ssid_command").as_deref(),
            Some("/usr/libexec/provisioner-ssid")
        );
        assert_eq!(
            r.get(&format!("firewall.{z}.auto_helper")).as_deref(),
            Some("0")
        );
        assert_eq!(
            r.get(&format!("wireless.{w}.bridge_isolate")).as_deref(),
            Some("1")
        );
        // An existing wifi-iface is the window's: left up, the daemon takes it down.
        assert_eq!(r.get(&format!("wireless.{w}.disabled")), None);
        // And from there on, nothing changes.
        uci_defaults_twice(&r);
    }
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn uci_defaults_without_a_wan_zone_then_with_one() {
    let r = Router::new(DSA, "defaults-nowan", &shells()[0]);
    let wan = r.find("firewall", "zone", "name", "wan").unwrap();
    r.set(&format!("firewall.{wan}.name=internet"));
    r.commit();
    uci_defaults_twice(&r);
    // Nothing goes out: no rule to a zone that is not there, the catch-all all the same.
    assert_eq!(r.get("firewall.provision_cloud"), None);
    assert_eq!(
        r.get("firewall.provision_closed.dest").as_deref(),
        Some("*")
    );
    assert_eq!(r.find("firewall", "forwarding", "src", "provision"), None);

    // A wan zone later (a reinstall runs uci-defaults again): the mark rule goes in before
    // the catch-all, or fw4 would never reach it.
    r.set(&format!("firewall.{wan}.name=wan"));
    r.commit();
    uci_defaults_twice(&r);
    assert_eq!(
        r.get("firewall.provision_cloud.dest").as_deref(),
        Some("wan")
    );
    rules_in_order(&r);
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn init_keeps_the_wifi_iface_as_promised() {
    for shell in shells() {
        let r = Router::new(DSA, &format!("init-wifi-{}", shell.join("-")), &shell);
        r.uci_defaults();
        let w = r.setup_iface();
        // Someone opened it up, bridged it into the LAN, took the isolation off and changed
        // the limit.
        r.set(&format!("wireless.{w}.hidden=0"));
        r.set(&format!("wireless.{w}.isolate=0"));
        r.delete(&format!("wireless.{w}.bridge_isolate"));
        r.set(&format!("wireless.{w}.encryption=psk2"));
        r.set(&format!("wireless.{w}.network=lan provision"));
        r.set("provisioner.limits.max_clients=3");
        r.commit();
        r.clear_logs();

        r.init("provisioner_sync_wireless");
        r.nothing_staged();
        for (opt, want) in [
            ("hidden", "1"),
            ("isolate", "1"),
            ("bridge_isolate", "1"),
            ("encryption", "none"),
            ("network", "provision"),
            ("maxassoc", "4"),
            ("ssid", "setup"),
        ] {
            assert_eq!(
                r.get(&format!("wireless.{w}.{opt}")).unwrap(),
                want,
                "{opt}"
            );
        }
        let stubs = r.log("stub.log");
        assert_eq!(
            stubs.lines().filter(|l| *l == "wifi reload").count(),
            1,
            "{stubs}"
        );

        // In order: nothing written, no wifi reload; only the daemon asked for the values.
        let asked = format!(
            "provisionerd --config {} --print-config\n",
            r.etc().join("provisioner").display()
        );
        let before = r.files();
        r.clear_logs();
        r.init("provisioner_sync_wireless");
        assert_eq!(r.files(), before);
        assert_eq!(r.log("stub.log"), asked);

        // Up or down is the window's (the daemon's ssid_command): left as it is, either way.
        for disabled in ["0", "1"] {
            r.set(&format!("wireless.{w}.disabled={disabled}"));
            r.commit();
            let before = r.files();
            r.clear_logs();
            r.init("provisioner_sync_wireless");
            assert_eq!(r.files(), before, "disabled={disabled}");
            assert_eq!(r.log("stub.log"), asked, "disabled={disabled}");
        }

        // Not ours to keep with a managed hostapd.
        r.set("provisioner.radio.hostapd=managed");
        r.set(&format!("wireless.{w}.hidden=0"));
        r.commit();
        r.init("provisioner_sync_wireless");
        assert_eq!(r.get(&format!("wireless.{w}.hidden")).unwrap(), "0");
    }
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn ssid_command_brings_only_the_setup_ssid_up_and_down() {
    for shell in shells() {
        let r = Router::new(DSA, &format!("ssid-{}", shell.join("-")), &shell);
        r.uci_defaults();
        let w = r.setup_iface();
        let disabled = format!("wireless.{w}.disabled");
        // A second setup-like wifi-iface on the same radio, not ours: never touched.
        r.set("wireless.guest=wifi-iface");
        r.set("wireless.guest.device=radio1");
        r.set("wireless.guest.ssid=guest");
        r.set("wireless.guest.disabled=1");
        r.commit();
        assert_eq!(r.get(&disabled).as_deref(), Some("1"), "created down");

        let step = |arg: &str, want: &str, reload: bool| {
            let before = r.show("wireless");
            r.clear_logs();
            let out = r.ssid(&[arg]);
            assert!(out.status.success(), "{arg}: {out:?}");
            r.nothing_staged();
            assert_eq!(r.get(&disabled).as_deref(), Some(want), "{arg}");
            let after = r.show("wireless");
            let changed: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
            let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
            let stubs = r.log("stub.log");
            let reloads = wifi_calls(&stubs);
            if reload {
                // Only our wifi-iface's 'disabled', and a reload of its radio only.
                assert_eq!(changed, [&format!("{disabled}='{want}'")], "{arg}");
                assert!(gone.len() <= 1, "{arg}: {gone:?}");
                assert_eq!(reloads, ["wifi reload radio1"], "{arg}");
                assert!(stubs.contains("logger -t provisioner"), "{stubs}");
            } else {
                assert!(
                    changed.is_empty() && gone.is_empty(),
                    "{arg}: {changed:?} {gone:?}"
                );
                assert!(
                    reloads.is_empty(),
                    "{arg}: reloaded with nothing changed: {stubs}"
                );
                let writes: Vec<String> = r
                    .log("uci.log")
                    .lines()
                    .filter(|l| l.contains("set ") || l.contains("commit"))
                    .map(str::to_owned)
                    .collect();
                assert!(writes.is_empty(), "{arg}: {writes:?}");
            }
        };
        step("up", "0", true);
        step("up", "0", false);
        step("down", "1", true);
        step("down", "1", false);
        step("up", "0", true);
        // Unset 'disabled' is up: nothing to do.
        r.delete(&disabled);
        r.commit();
        let before = r.show("wireless");
        r.clear_logs();
        assert!(r.ssid(&["up"]).status.success());
        assert_eq!(r.show("wireless"), before);
        assert_eq!(r.log("stub.log"), "");
        step("down", "1", true);
        assert_eq!(r.get("wireless.guest.disabled").as_deref(), Some("1"));
        assert_eq!(r.get("wireless.default_radio1.disabled"), None);

        // Usage: exit 2, nothing done.
        for args in [&[][..], &["sideways"], &["up", "now"]] {
            let out = r.ssid(args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
        }
        // No setup wifi-iface: a failure the daemon logs, nothing touched.
        r.set("provisioner.radio.ifname=wl-other");
        r.commit();
        let before = r.files();
        r.clear_logs();
        let out = r.ssid(&["up"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("no wifi-iface with ifname 'wl-other'"));
        assert_eq!(r.files(), before);
        let stubs = r.log("stub.log");
        assert!(wifi_calls(&stubs).is_empty(), "{stubs}");
    }
}

/// The shell block of README.md's "Installing on a router" that follows `after`.
fn readme_block(after: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rest = &readme[readme
        .find(after)
        .unwrap_or_else(|| panic!("README: {after}"))..];
    let start = rest.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let len = rest[start..].find("```\n").expect("its end");
    rest[start..start + len].to_owned()
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn a_wired_setup_port_as_the_readme_says() {
    for shell in shells() {
        let r = Router::new(DSA, &format!("wired-{}", shell.join("-")), &shell);
        r.uci_defaults();
        r.clear_logs();
        r.sh(&readme_block("On a DSA router, for `lan4`:"));
        r.nothing_staged();
        assert_eq!(r.log("stub.log"), "reload_config \n");
        let lan = r.find("network", "device", "name", "br-lan").unwrap();
        assert_eq!(
            r.get(&format!("network.{lan}.ports")).as_deref(),
            Some("lan1 lan2 lan3")
        );
        let dev = r.find("network", "device", "name", "br-provision").unwrap();
        assert_eq!(
            r.get(&format!("network.{dev}.ports")).as_deref(),
            Some("lan4")
        );
        // What netifd sets the bridge port's isolated flag from (device.c: "isolate").
        let port = r.find("network", "device", "name", "lan4").unwrap();
        assert_eq!(
            r.get(&format!("network.{port}.isolate")).as_deref(),
            Some("1")
        );
        // uci-defaults (an upgrade), the init script and fw4 take it as it is.
        let before = r.files();
        uci_defaults_twice(&r);
        r.init("start_service");
        assert_eq!(r.files(), before);
        assert!(r.fw4().contains("Allow-Provision-Cloud"));
    }
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn init_registers_the_daemon_with_procd() {
    let r = Router::new(DSA, "init-procd", &shells()[0]);
    r.uci_defaults();
    r.clear_logs();
    let conf = r.etc().join("provisioner");
    let conf = conf.display();

    // First start of a boot: the table goes in, closed, before the daemon runs.
    r.init("start_service");
    let table = std::fs::read_to_string(r.dir.join("nft-table")).expect("table loaded");
    assert!(table.starts_with("table inet provisioner"), "{table}");
    assert!(table.contains("set clients"));
    // The config's values, asked of the daemon: for the wifi-iface, then for the netdev.
    let asked = format!("provisionerd --config {conf} --print-config\n");
    let registered = format!(
        "{asked}{asked}procd_open_instance \n\
         procd_set_param command provisionerd --config {conf} --syslog\n\
         procd_set_param respawn 3600 5 0\n\
         procd_set_param stdout 1\n\
         procd_set_param stderr 1\n\
         procd_set_param netdev br-provision\n\
         procd_close_instance \n"
    );
    assert_eq!(
        r.log("stub.log"),
        format!(
            "nft list tables\n\
             provisionerd --config {conf} --print-ruleset\n\
             nft -f -\n\
             {registered}"
        )
    );

    // The table is there (a previous daemon's, with its clients): left alone.
    r.clear_logs();
    r.init("start_service");
    assert_eq!(r.log("stub.log"), format!("nft list tables\n{registered}"));

    r.clear_logs();
    r.init("service_triggers");
    assert_eq!(
        r.log("stub.log"),
        format!(
            "procd_add_reload_trigger provisioner wireless\n\
             {asked}\
             procd_add_reload_interface_trigger provision\n"
        )
    );

    // Reload: SIGHUP first, then the instance registered again (rc.common's start runs
    // start_service).
    r.clear_logs();
    r.init("reload_service");
    assert_eq!(
        r.log("stub.log"),
        format!("procd_send_signal provisioner * HUP\nstart \nnft list tables\n{registered}")
    );

    // flush: stopped first (a running daemon would put the table back), then removed.
    r.clear_logs();
    r.init("flush");
    assert_eq!(r.log("stub.log"), "stop \nprovisionerd --flush\n");
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: OpenWrt's uci and fw4 are needed, skipped"
)]
fn init_with_a_bad_config_still_starts_and_says_why() {
    let r = Router::new(DSA, "init-bad", &shells()[0]);
    r.set("provisioner.network.subnet=192.168.250.0/33");
    r.commit();
    r.init("start_service");
    let log = r.log("stub.log");
    assert!(!log.contains("nft -f"), "{log}");
    assert!(log.contains("logger -t provisioner"), "{log}");
    assert!(log.contains("option 'subnet'"), "{log}");
    // procd still runs it (and respawns it): the daemon reports the error in the log.
    assert!(log.contains("procd_set_param respawn 3600 5 0"), "{log}");
}
