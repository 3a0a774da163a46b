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
fn check_warns_of_options_not_enforced() {
    let p = write(
        "daily",
        "config network\n\toption interface 'prov0'\n\toption wan 'wan0'\nconfig limits\n\toption client_daily '50MB'\n",
    );
    let out = provisionerd(&["--check", p.to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: limits client_daily is set but not enforced"),
        "{err}"
    );
    assert!(!err.contains("total_daily"), "{err}");
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

#[test]
fn print_ruleset_shows_the_one_table() {
    let out = provisionerd(&["--print-ruleset", "-c", "etc/provisioner.uci"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("table inet provisioner {}\ndelete table inet provisioner\n"));
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
