//! Metrics in the netns rig: `provisionerctl metrics` counts what happened, and the HTTP
//! listener answers the home LAN but never the provisioning network.

mod rig;

use std::net::SocketAddr;
use std::time::Duration;

use rig::*;

const PORT: u16 = 9100;

fn scrape(ns: &Ns, host: std::net::Ipv4Addr) -> String {
    let get = format!(
        "import urllib.request\nprint(urllib.request.urlopen('http://{host}:{PORT}/metrics', timeout=5).read().decode(), end='')"
    );
    ns.exec_ok(&["python3", "-c", &get])
}

/// Runs the shipped collector's scrape() under lua5.1 as the exporter would, with a
/// `provisionerctl` on the PATH that asks `socket`.
fn collect(rig: &Rig, name: &str, socket: &std::path::Path) -> std::process::Output {
    let bin_dir = rig.dir().join(name);
    std::fs::create_dir_all(&bin_dir).unwrap();
    let ctl = bin_dir.join("provisionerctl");
    std::fs::write(
        &ctl,
        format!(
            "#!/bin/sh\nexec {} provisionerctl -s {} \"$@\"\n",
            daemon_bin().display(),
            socket.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let collector = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("openwrt/files/provisioner.collector.lua");
    let harness = format!(
        "function output(s) io.write(s, '\\n') end\n\
         local c = dofile('{}')\n\
         local ok, err = pcall(c.scrape)\n\
         if not ok then io.stderr:write(err, '\\n') os.exit(1) end\n",
        collector.display()
    );
    std::process::Command::new("lua5.1")
        .args(["-e", &harness])
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("lua5.1 (scripts/deps.sh installs it)")
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_decisions_and_are_served_to_the_lan_only() {
    let rig = Rig::new(1);
    let cfg = config(&format!(
        "\nconfig metrics 'metrics'\n\toption listen '{ROUTER_LAN}:{PORT}'\n"
    ));
    let d = rig.start_daemon(&cfg);
    d.wait_line(
        &format!("serving /metrics on http://{ROUTER_LAN}:{PORT}"),
        Duration::from_secs(5),
    )
    .unwrap();
    rig.dhcp(1).expect("lease");
    let refused = dns(
        rig.client(1),
        SocketAddr::from((ROUTER_PROV, 53)),
        "elsewhere.example",
        false,
        Duration::from_secs(5),
    );
    assert!(
        matches!(&refused, Dns::Rcode(r) if r == "Refused"),
        "{refused:?}"
    );
    d.wait_line("event=dns_refused", Duration::from_secs(5))
        .unwrap();

    let out = rig.ctl_output(&["metrics"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(sample(&text, "provisioner_clients"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "provisioner_events_total{event=\"dns_refused\",reason=\"not_allowed\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "provisioner_events_total{event=\"lease_granted\",reason=\"\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "provisioner_dns_replies_total").unwrap() >= 1.0);
    assert!(sample(&text, "provisioner_set_batch_seconds_count").unwrap() >= 1.0);

    // Served to the home LAN...
    let scraped = scrape(rig.home(), ROUTER_LAN);
    assert_eq!(
        sample(&scraped, "provisioner_clients"),
        Some(1.0),
        "{scraped}"
    );
    // Through OpenWrt's exporter: the collector passes the same text on (in its Lua, 5.1,
    // with the exporter's output() and provisionerctl on the PATH, as on a router).
    let collected = collect(&rig, "collector", &rig.control_socket());
    assert!(collected.status.success(), "{collected:?}");
    let collected = String::from_utf8_lossy(&collected.stdout).into_owned();
    assert!(
        collected.contains("# TYPE provisioner_clients gauge\n"),
        "{collected}"
    );
    assert_eq!(
        sample(&collected, "provisioner_clients"),
        Some(1.0),
        "{collected}"
    );
    // Without a daemon to ask, the scrape fails (the exporter reports it unsuccessful).
    let lost = collect(&rig, "collector-lost", &rig.dir().join("nobody.sock"));
    assert!(!lost.status.success(), "{lost:?}");
    assert!(
        String::from_utf8_lossy(&lost.stderr).contains("provisionerd does not answer"),
        "{lost:?}"
    );

    // ... and to nobody on the provisioning network, by either of the router's addresses.
    for host in [ROUTER_LAN, ROUTER_PROV] {
        let p = tcp(
            rig.client(1),
            SocketAddr::from((host, PORT)),
            None,
            Duration::from_secs(1),
        );
        assert!(!p.answered(), "a client reached {host}:{PORT}: {p:?}");
    }
}
