//! `make demo`: brings up the netns rig, runs provisionerd on its router, and shows a new
//! device getting an address, reaching its maker's cloud and being refused everywhere else.
//! Exits non-zero if anything does not behave as shown. Needs root (namespaces, nft).

#[path = "../tests/rig/mod.rs"]
mod rig;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use rig::*;

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Prints one probe's outcome; false if it was not what the demo promises.
fn show(what: &str, want: bool, got: Probe) -> bool {
    let ok = got.answered() == want;
    let verdict = match &got {
        Probe::Answered(line) => format!("reached ({line})"),
        other => format!("refused ({other:?})"),
    };
    println!(
        "   {} {what}: {verdict}",
        if ok { "as expected:" } else { "UNEXPECTED: " }
    );
    ok
}

fn main() -> ExitCode {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("demo: needs root (network namespaces and nftables)");
        return ExitCode::FAILURE;
    }
    println!("== Bringing up the rig: a router between the 'cloud', a home LAN and one new device");
    let rig = Rig::new(1);
    println!("   cloud: {CLOUD_ALLOWED} (the maker's setup server), {CLOUD_OTHER} (someone else)");
    println!("   home LAN: {HOME_HOST}; router: {ROUTER_PROV} on the provisioning network");

    println!("   the setup SSID: hostapd (its wired driver with 802.1X stands in for the radio)");
    let _hostapd = rig.start_hostapd("");
    let cfg = config(&format!(
        "config radio 'radio'\n\toption hostapd 'external'\n\toption ctrl_interface '{}'\n\toption ssid_command '{}'\n",
        rig.hostapd_ctrl_dir().display(),
        rig.ssid_script().display()
    ))
    .replace("\toption mode 'always'\n", "\toption mode 'on_demand'\n");
    println!("\n== Starting provisionerd with this config (/etc/config/provisioner):\n");
    for line in cfg.lines().filter(|l| !l.trim().is_empty()) {
        println!("   {line}");
    }
    let mut daemon = rig.start_daemon(&cfg);
    println!(
        "\n   {}",
        daemon.lines().last().cloned().unwrap_or_default()
    );
    if let Err(e) = daemon.wait_line("SSID down: running", Duration::from_secs(10)) {
        eprintln!("demo: {e}");
        return ExitCode::FAILURE;
    }
    println!("   the window is closed, so the SSID is down");

    println!("\n== The owner opens the activation window: provisionerctl window open 5");
    println!("   {}", rig.ctl(&["window", "open", "5"]).encode());

    println!(
        "\n== The device joins the hidden SSID (wpa_supplicant) and asks for an address (udhcpc)"
    );
    let _station = rig.associate(1);
    match daemon.wait_line("event=admitted", Duration::from_secs(10)) {
        Ok(line) => println!("   {}", &line[line.find("event=").unwrap_or(0)..]),
        Err(e) => {
            eprintln!("demo: the device was not admitted: {e}");
            return ExitCode::FAILURE;
        }
    }
    let ip = match rig.dhcp(1) {
        Ok(ip) => ip,
        Err(e) => {
            eprintln!("demo: the device got no address: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("   got {ip}; the router bound it to the device's MAC before answering:");
    let leases = rig.router().exec_ok(&[
        daemon_bin().to_str().expect("utf-8 path"),
        "provisionerctl",
        "leases",
    ]);
    print!("   {leases}");
    println!(
        "   provisionerctl status: {}",
        rig.ctl(&["status"]).encode()
    );

    let dev = rig.client(1);
    let mut wrong: usize = 0;
    println!("\n== What the device can reach");
    wrong += !show(
        &format!("its cloud {CLOUD_ALLOWED}:443 (the server sees the router's WAN address)"),
        true,
        tcp(dev, sa(CLOUD_ALLOWED, 443), None, YES),
    ) as usize;
    println!("\n== And what it cannot (it even configures IPv6 by hand to try)");
    dev.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:2::100/64",
        "dev",
        HOST_IF,
        "nodad",
    ]);
    dev.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        &ROUTER_PROV6.to_string(),
    ]);
    for (what, dst) in [
        ("the same server on another port", sa(CLOUD_ALLOWED, 8443)),
        ("another server on the Internet", sa(CLOUD_OTHER, 443)),
        ("a host on the home LAN (SSH)", sa(HOME_HOST, 22)),
        ("the router's SSH", sa(ROUTER_PROV, 22)),
        ("the router's web admin", sa(ROUTER_PROV, 80)),
        ("DNS over TLS to a public resolver", sa(CLOUD_DNS, 853)),
        ("the cloud over IPv6", sa(CLOUD6_ALLOWED, 443)),
    ] {
        wrong += !show(what, false, tcp(dev, dst, None, NO)) as usize;
    }
    let dns_answer = dns(dev, sa(CLOUD_DNS, 53), "leak.demo.test", false, NO);
    let leaked = rig.dns_names_seen().iter().any(|n| n == "leak.demo.test");
    println!(
        "   {} a public DNS resolver: {dns_answer:?}, the resolver saw the query: {leaked}",
        if leaked {
            "UNEXPECTED: "
        } else {
            "as expected:"
        }
    );
    if leaked {
        wrong += 1;
    }

    println!("\n== Killing the daemon with SIGKILL: the network stays closed");
    daemon.kill9();
    wrong += !show(
        "another server, with the daemon dead",
        false,
        tcp(dev, sa(CLOUD_OTHER, 443), None, NO),
    ) as usize;
    wrong += !show(
        "the home LAN, with the daemon dead",
        false,
        tcp(dev, sa(HOME_HOST, 22), None, NO),
    ) as usize;

    println!("\n== Tearing down the rig");
    drop(rig);
    if wrong == 0 {
        println!("demo: everything behaved as shown");
        ExitCode::SUCCESS
    } else {
        println!("demo: {wrong} thing(s) did not behave as expected");
        ExitCode::FAILURE
    }
}
