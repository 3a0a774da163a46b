//! What tests/package.rs (the .ipk) and tests/openwrt.rs (the package's scripts on OpenWrt
//! router shapes) share: the source tree, scratch directories, running commands.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory for one test, removed when it is dropped, also when the test fails
/// (the failure message says what went wrong; rerun with `PROVISIONER_KEEP_SCRATCH=1` to
/// keep it for a look).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("PROVISIONER_KEEP_SCRATCH").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `<temp>/provisioner-<prefix>-<pid>-<name>`. No '.' in it: uci takes a config named by
/// its path only up to the first dot.
pub fn scratch(prefix: &str, name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "provisioner-{prefix}-{}-{name}",
        std::process::id()
    ));
    assert!(
        !dir.to_string_lossy().contains('.'),
        "{}: a scratch directory with a '.' in its path (set TMPDIR to one without)",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Panics unless `program` is installed: a test that needs it fails, naming it, rather
/// than pass without having run (scripts/deps.sh installs every one `make test` needs).
pub fn require(program: &str) {
    assert!(
        have(program),
        "{program} is not installed (scripts/deps.sh installs it)"
    );
}

/// busybox's ash (OpenWrt's /bin/sh), then the host's sh. busybox must be installed: a
/// script that only the host's sh ran has not been run as OpenWrt runs it.
pub fn shells() -> Vec<Vec<&'static str>> {
    require("busybox");
    vec![vec!["busybox", "sh"], vec!["sh"]]
}

/// The shipped config is valid as it is.
pub fn check_config(path: &Path) {
    run(Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["provisionerd", "--check"])
        .arg(path));
}
