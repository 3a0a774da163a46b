//! The binary's command line, without root: config validation and the printed ruleset.

use std::process::Command;

/// The binary; under `make cross-test` through the emulator named by
/// PROVISIONER_TEST_RUNNER (e.g. `qemu-mips-static`), as this test itself runs.
fn provisioner() -> Command {
    match std::env::var_os("PROVISIONER_TEST_RUNNER") {
        Some(runner) if !runner.is_empty() => {
            let mut c = Command::new(runner);
            c.arg(env!("CARGO_BIN_EXE_provisioner"));
            c
        }
        _ => Command::new(env!("CARGO_BIN_EXE_provisioner")),
    }
}

fn provisionerd(args: &[&str]) -> std::process::Output {
    provisioner()
        .arg("provisionerd")
        .args(args)
        .output()
        .expect("run provisioner")
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("provisioner-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_accepts_the_shipped_examples() {
    for f in ["etc/provisioner.uci", "etc/provisioner.toml"] {
        let out = provisionerd(&["--check", f]);
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{f}: ok\n"));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{f}: no warnings");
    }
}

#[test]
fn check_names_file_line_and_option() {
    let p = write(
        "bad",
        "config network\n\toption interface prov0\n\toption wan wan0\n\nconfig allow 'x'\n\tlist address '11.1.0.10'\n\tlist port '99999'\n",
    );
    let out = provisionerd(&["--check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "{}:7: option 'port': port 99999 is out of range (1-65535)",
            p.display()
        )
    );
    let p = write(
        "bad.toml",
        "[network]\ninterface = \"prov0\"\nwan = \"wan0\"\nsubnet = \"10.0.0.1/24\"\n",
    );
    let out = provisionerd(&["--check", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:4: option 'subnet': ", p.display())),
        "{err}"
    );
    let out = provisionerd(&["--check", "/nonexistent/provisioner"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/provisioner: cannot read"));
}

/// `--check` reads the file as `uci` does (see tests/uci_libuci.rs): it rejects files uci
/// cannot load, accepts comments that are not UTF-8 (uci ignores them), and a repeated
/// option means its last value.
#[test]
fn check_reads_the_file_as_uci_does() {
    let base = "config network 'network'\n\toption interface 'prov0'\n\toption wan 'wan0'\n";
    let check = |name: &str, text: &[u8]| {
        let dir = std::env::temp_dir().join(format!("provisioner-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let out = provisionerd(&["--check", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).replace(p.to_str().unwrap(), "F");
        (out.status.success(), err)
    };
    let dash = format!("{base}config allow 'acme-iot'\n\tlist address 11.0.0.1\n");
    assert_eq!(
        check("dash", dash.as_bytes()),
        (
            false,
            "F:4: invalid section name 'acme-iot' (letters, digits and _ only)\n".into()
        )
    );
    let (ok, err) = check("bom", format!("\u{feff}{base}").as_bytes());
    assert!(!ok);
    assert!(
        err.starts_with("F:1: the file starts with a byte-order mark (\\u{feff})"),
        "{err}"
    );
    let latin1 = [&b"# r\xe9seau\n"[..], base.as_bytes()].concat();
    let (ok, err) = check("latin1", &latin1);
    assert!(ok, "{err}");
    // The later `option wan` replaces the first, so the WAN is now the interface.
    let twice = format!("{base}\toption wan 'prov0'\n");
    assert_eq!(
        check("twice", twice.as_bytes()),
        (
            false,
            "F:2: option 'interface': 'prov0' is also the WAN; they must differ\n".into()
        )
    );
}

#[test]
fn print_ruleset_shows_our_tables_only() {
    let out = provisionerd(&["--print-ruleset", "-c", "etc/provisioner.uci"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(
        "table inet provisioner {}\ntable arp provisioner {}\ntable netdev provisioner {}\ndelete table inet provisioner\ndelete table arp provisioner\ndelete table netdev provisioner\n"
    ));
    assert!(text.contains("11.1.0.10 . tcp . 8883"));
}

#[test]
fn applet_is_chosen_by_name_or_first_argument() {
    let out = provisioner().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = provisioner()
        .args(["provisionerctl", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("leases"));
}

/// Runs `provisionerctl ARGS` against a socket that reads one request and answers `reply`;
/// returns what the daemon was asked and what provisionerctl did.
fn ctl_against(name: &str, args: &[&str], reply: &str) -> (String, std::process::Output) {
    use std::io::{BufRead, BufReader, Write};
    let dir = std::env::temp_dir().join(format!("provisioner-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let reply = reply.to_owned();
    let daemon = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut asked = String::new();
        BufReader::new(&s).read_line(&mut asked).unwrap();
        (&s).write_all(reply.as_bytes()).unwrap();
        asked
    });
    let out = provisioner()
        .args(["provisionerctl", "-s", path.to_str().unwrap()])
        .args(args)
        .output()
        .expect("run provisioner");
    (daemon.join().unwrap(), out)
}

#[test]
fn provisionerctl_says_what_the_reply_is() {
    // Success: the request in the protocol's form, the reply on stdout, exit 0.
    let window = r#"{"version":1,"window":{"open":true,"secs_left":420}}"#;
    let (asked, out) = ctl_against(
        "ok",
        &["--json", "window", "open", "7"],
        &format!("{window}\n"),
    );
    assert_eq!(
        asked.trim_end(),
        r#"{"version":1,"request":{"window_open":{"secs":420}}}"#
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), window);
    // The same for people; a duration with a unit.
    let (asked, out) = ctl_against("human", &["window", "open", "1h"], &format!("{window}\n"));
    assert!(asked.contains(r#"{"secs":3600}"#), "{asked}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "window open, closes in 7m\n"
    );

    // An error reply: its message on stderr, nothing on stdout, exit 1; whatever words
    // the message holds.
    let (_, out) = ctl_against(
        "error",
        &["status"],
        "{\"version\":1,\"error\":{\"kind\":\"stopping\",\"message\":\"window: it went\"}}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("window: it went"));
    // With --json, the error object on stdout too (a script reads its kind there).
    let refused = "{\"version\":1,\"error\":{\"kind\":\"refused\",\"message\":\"no\"}}";
    let (_, out) = ctl_against("error-json", &["--json", "status"], &format!("{refused}\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), refused);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no"));

    // A reply this build cannot read: a failure that shows it.
    let (_, out) = ctl_against("garbage", &["window", "close"], "{\"error\"\n");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not one this build reads"),
        "{out:?}"
    );

    // No daemon: exit 3, saying so.
    let out = provisioner()
        .args([
            "provisionerctl",
            "-s",
            "/nonexistent/provisioner.sock",
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is provisionerd running?"));
}

#[test]
fn print_config_is_what_a_shell_evals() {
    // Defaults resolved (the router is the subnet's first host, maxassoc one more than the
    // clients), and a value with a quote, a space and a `$` comes through literally.
    let cfg = write(
        "print-config",
        "config network 'network'\n\toption interface 'br-x'\n\toption wan 'wan0'\n\
         \toption subnet '10.42.0.0/16'\n\
         config limits\n\toption max_clients '20'\n\
         config radio\n\toption hostapd 'external'\n\
         \toption ssid_command \"/opt/it's a \\$HOME/ssid\"\n",
    );
    let out = provisionerd(&["--print-config", "-c", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let vars = String::from_utf8(out.stdout).unwrap();
    let script = "eval \"$1\"; printf '%s|' \"$provisioner_interface\" \"$provisioner_router\" \
         \"$provisioner_netmask\" \"$provisioner_prefix\" \"$provisioner_max_clients\" \
         \"$provisioner_radio\" \"$provisioner_radio_ifname\" \"$provisioner_radio_maxassoc\" \
         \"$provisioner_ssid_command\"";
    let sh = Command::new("sh")
        .args(["-c", script, "sh", &vars])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sh.stdout),
        "br-x|10.42.0.1|255.255.0.0|16|20|external|br-x|21|/opt/it's a $HOME/ssid|",
        "{vars}"
    );

    // No radio: empty radio values; a bad config: the error, nothing printed.
    let cfg = write(
        "print-config-wired",
        "config network 'network'\n\toption interface 'br-x'\n\toption wan 'wan0'\n",
    );
    let out = provisionerd(&["--print-config", "-c", cfg.to_str().unwrap()]);
    let vars = String::from_utf8(out.stdout).unwrap();
    assert!(vars.contains("provisioner_radio=''\n"), "{vars}");
    assert!(vars.contains("provisioner_radio_maxassoc='9'\n"), "{vars}");
    let cfg = write(
        "print-config-bad",
        "config network 'network'\n\toption interface 'br-x'\n\toption wan 'wan0'\n\
         config limits\n\toption max_clients 'many'\n",
    );
    let out = provisionerd(&["--print-config", "-c", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_clients"));
}

#[test]
fn window_open_for_devices_asks_for_them_and_bad_input_asks_nothing() {
    let window = r#"{"version":1,"window":{"open":true,"secs_left":900,"for":["00:11:22:33:44:55","00:11:23"],"count":2,"done":0}}"#;
    let (asked, out) = ctl_against(
        "for",
        &[
            "window",
            "open",
            "--for",
            "00:11:22:33:44:55",
            "--for",
            "00-11-23",
            "--count",
            "2",
        ],
        &format!("{window}\n"),
    );
    assert_eq!(
        asked.trim_end(),
        r#"{"version":1,"request":{"window_open":{"secs":null,"for":["00:11:22:33:44:55","00:11:23"],"count":2}}}"#
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "window open for 00:11:22:33:44:55, 00:11:23 (0 of 2 done), closes in 15m\n"
    );
    // Usage errors (exit 2) before any socket is opened: the path does not exist, so a
    // request would have failed with exit 3 instead.
    for (args, says) in [
        (&["--for", "00:11:zz"][..], "'00:11:zz' is not a MAC prefix"),
        (
            &["--for", "00:11:22", "--count", "0"][..],
            "0 is not in 1..",
        ),
        (&["--count", "2"][..], "--for"),
    ] {
        let out = provisioner()
            .args(["provisionerctl", "-s", "/nonexistent/provisioner.sock"])
            .args(["window", "open"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
