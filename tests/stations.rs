//! Stations with a real hostapd (wired driver + 802.1X standing in for the radio) and real
//! wpa_supplicant clients: admission, eviction of the oldest, turning newcomers away,
//! session limits, bans and cooldown, the activation window, restarts of the daemon and of
//! hostapd, and a burst of joins.

mod rig;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use provisioner::control::protocol::{Reply, StationState, WindowState};
use rig::*;

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(1500);
const LOG: Duration = Duration::from_secs(15);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn mac(i: usize) -> String {
    format!("02:00:00:00:00:{i:02x}")
}

/// The rig's config with hostapd (run by the rig: external) and these limits and window.
fn radio_config(rig: &Rig, limits: &str, window: &str) -> String {
    config(&format!(
        "config radio 'radio'\n\toption hostapd 'external'\n\toption ctrl_interface '{}'\n\toption ifname '{PROV_IF}'\n\nconfig limits 'limits'\n{limits}",
        rig.hostapd_ctrl_dir().display()
    ))
    .replace("\toption mode 'always'\n", window)
}

const ALWAYS: &str = "\toption mode 'always'\n";

fn cloud_ok(rig: &Rig, client: usize, timeout: Duration) -> bool {
    tcp(rig.client(client), sa(CLOUD_ALLOWED, 443), None, timeout).answered()
}

/// Associates client `i`, waits for its admission, gets it an address, checks it works.
fn join_and_use(rig: &Rig, daemon: &Proc, i: usize) -> Proc {
    let sta = rig.associate(i);
    daemon
        .wait_line(&format!("event=joined mac={}", mac(i)), LOG)
        .unwrap();
    daemon
        .wait_line(&format!("event=admitted mac={}", mac(i)), LOG)
        .unwrap();
    rig.dhcp(i).expect("an admitted station gets an address");
    assert!(cloud_ok(rig, i, YES), "client {i} cannot reach the cloud");
    sta
}

/// Every client's age (seconds) from `provisionerctl status`.
fn status_ages(rig: &Rig) -> Vec<u64> {
    rig.status().clients.iter().map(|c| c.age).collect()
}

/// The pid of a process named `comm` whose parent is `parent`, from /proc.
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (name == comm && ppid == parent).then_some(pid)
    })
}

/// The clients `provisionerctl status` lists, as their MACs.
fn status_clients(rig: &Rig) -> Vec<String> {
    rig.status()
        .clients
        .iter()
        .map(|c| c.mac.to_string())
        .collect()
}

#[test]
fn a_full_network_evicts_the_oldest_old_enough_client_and_bans_it() {
    let rig = Rig::new(3);
    let _h = rig.start_hostapd("");
    let d = rig.start_daemon(&radio_config(
        &rig,
        "\toption max_clients '2'\n\toption min_age '2s'\n\toption cooldown '1h'\n",
        ALWAYS,
    ));
    let _s1 = join_and_use(&rig, &d, 1);
    let _s2 = join_and_use(&rig, &d, 2);
    // Wait until both are older than min_age (2 s): the daemon's clock, asked (polled: an
    // age passing is no event).
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            let ages = status_ages(&rig);
            ages.len() == 2 && ages.iter().all(|&a| a >= 2)
        }),
        "{:?}",
        status_ages(&rig)
    );
    // Associating alone evicts nobody: the newcomer waits until it completes DHCP.
    let _s3 = rig.associate(3);
    d.wait_line(&format!("event=waiting mac={}", mac(3)), LOG)
        .unwrap();
    assert!(cloud_ok(&rig, 1, YES), "nobody is evicted before the DHCP");
    rig.dhcp(3).expect("the newcomer gets an address");
    d.wait_line(
        &format!("event=evicted mac={} reason=make_room", mac(1)),
        LOG,
    )
    .unwrap();
    d.wait_line(
        &format!("event=banned mac={} secs=3600 reason=make_room", mac(1)),
        LOG,
    )
    .unwrap();
    d.wait_line(&format!("event=admitted mac={}", mac(3)), LOG)
        .unwrap();
    // The evicted one is cut off at once, in the kernel; the others are not.
    assert!(
        !cloud_ok(&rig, 1, NO),
        "the evicted client still gets through"
    );
    assert!(cloud_ok(&rig, 2, YES));
    assert!(cloud_ok(&rig, 3, YES));
    let clients = status_clients(&rig);
    assert_eq!(clients, [mac(2), mac(3)]);
    let sets = rig
        .router()
        .exec_ok(&["nft", "list", "set", "inet", "provisioner", "banned"]);
    assert!(sets.contains(&mac(1)), "{sets}");
    // Trying again within the cooldown: turned away.
    rig.wpa_cli(1, &["reauthenticate"]);
    d.wait_line(
        &format!("event=turned_away mac={} reason=banned", mac(1)),
        LOG,
    )
    .unwrap();
    assert!(!cloud_ok(&rig, 1, NO));
}

#[test]
fn an_operators_ban_disconnects_the_station_and_unban_lets_it_back() {
    let rig = Rig::new(2);
    let _h = rig.start_hostapd("");
    let d = rig.start_daemon(&radio_config(&rig, "\toption cooldown '1h'\n", ALWAYS));
    let _s1 = join_and_use(&rig, &d, 1);
    let _s2 = join_and_use(&rig, &d, 2);
    let reply = rig.ctl(&["ban", &mac(1), "10m"]);
    assert!(
        matches!(
            reply,
            Reply::Station(StationState {
                client: false,
                banned_secs: Some(590..=600),
                ..
            })
        ),
        "{reply:?}"
    );
    d.wait_line(
        &format!("event=evicted mac={} reason=operator", mac(1)),
        LOG,
    )
    .unwrap();
    d.wait_line(
        &format!("event=banned mac={} secs=600 reason=operator", mac(1)),
        LOG,
    )
    .unwrap();
    assert!(
        !cloud_ok(&rig, 1, NO),
        "the banned station still gets through"
    );
    assert!(cloud_ok(&rig, 2, YES));
    assert_eq!(status_clients(&rig), [mac(2)]);
    // Trying again while banned: turned away.
    rig.wpa_cli(1, &["reauthenticate"]);
    d.wait_line(
        &format!("event=turned_away mac={} reason=banned", mac(1)),
        LOG,
    )
    .unwrap();
    // Unbanned: the next try is admitted, and it gets through again.
    rig.ctl(&["unban", &mac(1)]);
    d.wait_line(&format!("event=unbanned mac={}", mac(1)), LOG)
        .unwrap();
    rig.wpa_cli(1, &["reauthenticate"]);
    d.wait_line(&format!("event=admitted mac={}", mac(1)), LOG)
        .unwrap();
    rig.dhcp(1).expect("an address once unbanned");
    assert!(cloud_ok(&rig, 1, YES));
}

#[test]
fn a_young_network_turns_the_newcomer_away_and_disturbs_nobody() {
    let rig = Rig::new(3);
    let _h = rig.start_hostapd("");
    let d = rig.start_daemon(&radio_config(
        &rig,
        "\toption max_clients '2'\n\toption min_age '10m'\n\toption cooldown '1h'\n",
        ALWAYS,
    ));
    let _s1 = join_and_use(&rig, &d, 1);
    let _s2 = join_and_use(&rig, &d, 2);
    let _s3 = rig.associate(3);
    d.wait_line(
        &format!("event=turned_away mac={} reason=full", mac(3)),
        LOG,
    )
    .unwrap();
    d.wait_line(
        &format!("event=banned mac={} secs=3600 reason=full", mac(3)),
        LOG,
    )
    .unwrap();
    assert!(rig.dhcp(3).is_err(), "a turned-away station got an address");
    assert!(cloud_ok(&rig, 1, YES) && cloud_ok(&rig, 2, YES));
    assert_eq!(status_clients(&rig), [mac(1), mac(2)]);
}

#[test]
fn sessions_end_and_the_cooldown_ends_too() {
    let rig = Rig::new(1);
    let _h = rig.start_hostapd("");
    let d = rig.start_daemon(&radio_config(
        &rig,
        "\toption min_age '1s'\n\toption session '10s'\n\toption cooldown '5s'\n",
        ALWAYS,
    ));
    let _s1 = join_and_use(&rig, &d, 1);
    d.wait_line(
        &format!("event=evicted mac={} reason=session_ended", mac(1)),
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(!cloud_ok(&rig, 1, NO), "traffic after the session ended");
    // Within the cooldown hostapd lets it back in (the wired driver ignores the deny
    // list); the daemon turns it away.
    rig.wpa_cli(1, &["reauthenticate"]);
    d.wait_line(
        &format!("event=turned_away mac={} reason=banned", mac(1)),
        LOG,
    )
    .unwrap();
    d.wait_line(&format!("event=ban_ended mac={}", mac(1)), LOG)
        .unwrap();
    // After the cooldown: a new session.
    rig.wpa_cli(1, &["reauthenticate"]);
    d.wait_line(&format!("event=admitted mac={} age=0", mac(1)), LOG)
        .unwrap();
    rig.dhcp(1).unwrap();
    assert!(cloud_ok(&rig, 1, YES));
}

#[test]
fn the_window_opens_on_demand_and_closing_it_disconnects() {
    let rig = Rig::new(1);
    let h = rig.start_hostapd("");
    let cfg = radio_config(&rig, "", "\toption mode 'on_demand'\n").replace(
        "\toption hostapd 'external'\n",
        &format!(
            "\toption hostapd 'external'\n\toption ssid_command '{}'\n",
            rig.ssid_script().display()
        ),
    );
    let d = rig.start_daemon(&cfg);
    d.wait_line("SSID down: running", LOG).unwrap();
    assert!(!rig.status().window.open);
    let reply = rig.ctl(&["window", "open", "5"]);
    assert_eq!(
        reply,
        Reply::Window(WindowState {
            open: true,
            secs_left: Some(300),
            for_: Vec::new(),
            count: None,
            done: None,
        })
    );
    d.wait_line("event=window_opened secs=300", LOG).unwrap();
    d.wait_line("SSID up: running", LOG).unwrap();
    let _s1 = join_and_use(&rig, &d, 1);
    rig.ctl(&["window", "close"]);
    d.wait_line(
        &format!("event=evicted mac={} reason=window_closed", mac(1)),
        LOG,
    )
    .unwrap();
    d.wait_line("event=window_closed", LOG).unwrap();
    d.wait_line("SSID down: running", LOG).unwrap();
    assert!(!cloud_ok(&rig, 1, NO));
    // The SSID went down through the command (hostapd's own DISABLE would take every SSID
    // of an OpenWrt radio down), and hostapd's interface is really down: hostapd says so
    // for each of down, up, down.
    for event in ["AP-DISABLED", "AP-ENABLED", "AP-DISABLED"] {
        h.wait_line(event, LOG).unwrap();
    }
    assert_eq!(rig.ssid_calls(), ["down", "up", "down"]);
    let status = rig.hostapd_cli(&["status"]);
    assert!(status.contains("state=DISABLED"), "{status}");
}

#[test]
fn a_restarted_daemon_keeps_the_session_clock_and_reconciles_with_hostapd() {
    let rig = Rig::new(2);
    let _h = rig.start_hostapd("");
    let cfg = radio_config(
        &rig,
        "\toption session '30s'\n\toption min_age '1s'\n",
        ALWAYS,
    );
    let mut d = rig.start_daemon(&cfg);
    let _s1 = join_and_use(&rig, &d, 1);
    d.kill9();
    // While the daemon is down, client 2 joins (hostapd still runs).
    let _s2 = rig.associate(2);
    let d = rig.start_daemon(&cfg);
    d.wait_line(&format!("event=client_restored mac={}", mac(1)), LOG)
        .unwrap();
    d.wait_line("connected to hostapd", LOG).unwrap();
    // Reconciled: the station hostapd has but the daemon did not know is admitted.
    d.wait_line(&format!("event=admitted mac={}", mac(2)), LOG)
        .unwrap();
    assert!(
        cloud_ok(&rig, 1, YES),
        "client 1 kept its address and traffic"
    );
    // The session clock kept running: it ends 30 s after the first admission, not after
    // the restart.
    let line = d
        .wait_line(
            &format!("event=evicted mac={} reason=session_ended", mac(1)),
            Duration::from_secs(40),
        )
        .unwrap();
    let age: u64 = line
        .split("age=")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap();
    assert_eq!(age, 30, "{line}");
}

#[test]
fn a_hostapd_restart_is_survived() {
    let rig = Rig::new(1);
    let mut h = rig.start_hostapd("");
    let d = rig.start_daemon(&radio_config(&rig, "", ALWAYS));
    d.wait_line("connected to hostapd", LOG).unwrap();
    let _s1 = join_and_use(&rig, &d, 1);
    h.kill9();
    let _h2 = rig.start_hostapd("");
    d.wait_line("went away", LOG).unwrap();
    d.wait_line("connected to hostapd", LOG).unwrap();
    // The new hostapd has an empty table: the station left; it comes back when it
    // re-authenticates, within its session (its clock keeps running).
    d.wait_line(&format!("event=left mac={}", mac(1)), LOG)
        .unwrap();
    rig.wpa_cli(1, &["reauthenticate"]);
    d.wait_line(&format!("event=admitted mac={}", mac(1)), LOG)
        .unwrap();
    rig.dhcp(1).unwrap();
    assert!(cloud_ok(&rig, 1, YES));
}

#[test]
fn a_managed_hostapd_comes_and_goes_with_the_daemon() {
    let rig = Rig::new(1);
    // The rig's wired setup, but hostapd started by the daemon from its generated config.
    rig.router().exec_ok(&[
        "ip",
        "link",
        "set",
        PROV_IF,
        "type",
        "bridge",
        "group_fwd_mask",
        "8",
    ]);
    let users = rig.dir().join("eap_users");
    std::fs::write(
        &users,
        format!("\"{EAP_IDENTITY}\" MD5 \"{EAP_PASSWORD}\"\n"),
    )
    .unwrap();
    let cfg = config(&format!(
        "config radio 'radio'\n\toption hostapd 'managed'\n\toption ctrl_interface '{}'\n\toption driver 'wired'\n\tlist hostapd_option 'ieee8021x=1'\n\tlist hostapd_option 'eapol_version=2'\n\tlist hostapd_option 'eap_server=1'\n\tlist hostapd_option 'eap_user_file={}'\n\tlist hostapd_option 'eap_reauth_period=0'\n",
        rig.hostapd_ctrl_dir().display(),
        users.display()
    ));
    let mut d = rig.start_daemon(&cfg);
    d.wait_line("started hostapd", LOG).unwrap();
    d.wait_line("connected to hostapd", LOG).unwrap();
    let conf = std::fs::read_to_string(rig.dir().join("run/hostapd-prov0.conf")).unwrap();
    for line in [
        "ignore_broadcast_ssid=1",
        "ap_isolate=1",
        "max_num_sta=9",
        "wpa=0",
    ] {
        assert!(conf.contains(line), "{line} missing in\n{conf}");
    }
    let _s1 = join_and_use(&rig, &d, 1);
    assert!(rig.hostapd_request("PING", NO).is_some());
    let hostapd = child_named(d.pid(), "hostapd").expect("the daemon's hostapd");
    let hostapd = PidFd::open(hostapd).expect("pidfd of the daemon's hostapd");
    // SIGKILL to the daemon alone (not its process group): hostapd must not outlive it,
    // since nobody would enforce the SSID's limits.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), Signal::SIGKILL).unwrap();
    assert!(
        hostapd.exited_within(LOG),
        "hostapd still runs after the daemon was killed"
    );
    assert!(rig.hostapd_request("PING", NO).is_none());
    d.kill9();
}

#[test]
fn a_burst_of_250_stations_is_admitted_or_turned_away_correctly() {
    let rig = Rig::new(250);
    let _h = rig.start_hostapd("");
    let d = rig.start_daemon(&radio_config(
        &rig,
        "\toption max_clients '200'\n\toption min_age '10m'\n\toption cooldown '1h'\n\toption session '1h'\n",
        ALWAYS,
    ));
    d.wait_line("connected to hostapd", LOG).unwrap();
    let stations: Vec<Proc> = (1..=250).map(|i| rig.start_supplicant(i)).collect();
    // Every join is decided: 200 admitted, 50 turned away (all young), nobody evicted.
    let deadline = Instant::now() + Duration::from_secs(120);
    for decided in 0..250 {
        let left = deadline.saturating_duration_since(Instant::now());
        let decision = |l: &str| l.contains("event=admitted") || l.contains("event=turned_away");
        if let Err(e) = d.wait_line_where("a join decided", left, decision) {
            panic!("only {decided} of 250 joins decided: {e}");
        }
    }
    let lines = d.lines();
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("event=admitted"), 200);
    assert_eq!(count("event=turned_away mac="), 50);
    assert_eq!(count("event=evicted"), 0);
    assert_eq!(status_clients(&rig).len(), 200);
    let clients = rig
        .router()
        .exec_ok(&["nft", "list", "set", "inet", "provisioner", "clients"]);
    assert_eq!(clients.matches("since=").count(), 200);
    drop(stations);
}

#[test]
fn a_restart_keeps_an_open_window_open() {
    let rig = Rig::new(1);
    let _h = rig.start_hostapd("");
    let cfg = radio_config(&rig, "", "\toption mode 'on_demand'\n");
    let mut d = rig.start_daemon(&cfg);
    rig.ctl(&["window", "open", "10"]);
    let _s1 = join_and_use(&rig, &d, 1);
    d.kill9();
    let d = rig.start_daemon(&cfg);
    d.wait_line("event=window_opened", LOG).unwrap();
    d.wait_line(&format!("event=client_restored mac={}", mac(1)), LOG)
        .unwrap();
    assert!(rig.status().window.open);
    assert!(
        cloud_ok(&rig, 1, YES),
        "the restart disconnected the client"
    );
    assert!(!d.lines().iter().any(|l| l.contains("event=evicted")));
}

/// Lets one run of a gated `ssid_command` end: writes a line into the FIFO that the script
/// reads, which blocks until the script opens it.
fn release(gate: &std::path::Path) {
    let (tx, rx) = std::sync::mpsc::channel();
    let gate = gate.to_owned();
    std::thread::spawn(move || {
        let opened = std::fs::OpenOptions::new().write(true).open(&gate);
        let _ = tx.send(opened.and_then(|mut f| std::io::Write::write_all(&mut f, b"go\n")));
    });
    rx.recv_timeout(LOG)
        .expect("the ssid_command never came to the gate")
        .expect("write to the gate");
}

#[test]
fn ssid_commands_run_one_at_a_time_in_order() {
    let rig = Rig::new(0);
    let _h = rig.start_hostapd("");
    // A slow command (like a `wifi reload`), logging when each run starts and ends. Each
    // run waits at a gate (a FIFO) until the test lets it end, so what the daemon is asked
    // while one runs does not depend on how long it takes.
    let log = rig.dir().join("slow.log");
    let gate = rig.dir().join("gate");
    rig.router().exec_ok(&["mkfifo", gate.to_str().unwrap()]);
    let script = rig.dir().join("slow-ssid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"start $1\" >> {l}\nread -r go < {g}\necho \"end $1\" >> {l}\n",
            l = log.display(),
            g = gate.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = radio_config(&rig, "", "\toption mode 'on_demand'\n").replace(
        "\toption hostapd 'external'\n",
        &format!(
            "\toption hostapd 'external'\n\toption ssid_command '{}'\n",
            script.display()
        ),
    );
    let d = rig.start_daemon(&cfg);
    // down (the window's first state) runs; up and down are asked while it does. The
    // events are logged once the daemon has handled what each asked of the radio.
    d.wait_line("SSID down: running", LOG).unwrap();
    rig.ctl(&["window", "open", "5"]);
    d.wait_line("event=window_opened", LOG).unwrap();
    rig.ctl(&["window", "close"]);
    d.wait_line("event=window_closed", LOG).unwrap();
    release(&gate);
    // The next run starts only after the first ended, and it is the last request's.
    d.wait_line("SSID down: running", LOG).unwrap();
    release(&gate);
    let runs = || std::fs::read_to_string(&log).unwrap_or_default();
    // (Polled: the script's last line is the only sign that it ended.)
    assert!(
        wait_until(LOG, Duration::from_millis(20), || runs().lines().count()
            >= 4),
        "{}",
        runs()
    );
    // The last request wins and nothing overlaps: the first run ends before the next starts.
    let lines: Vec<String> = runs().lines().map(str::to_owned).collect();
    assert_eq!(lines[..2], ["start down", "end down"], "{lines:?}");
    assert_eq!(lines[2..4], ["start down", "end down"], "{lines:?}");
    assert!(
        !d.lines().iter().any(|l| l.contains("SSID up: running")),
        "the up that the close overtook ran"
    );
}
