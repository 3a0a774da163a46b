//! Network namespaces: [`Ns`] and running commands in one, their names (`pv<pid>-<n>-<role>`:
//! unique per rig, and a later run can tell by the pid which ones are stale), creating and
//! deleting them, and sweeping those a killed run left behind.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::util::lock;

/// Namespaces and temp dirs are `pv<pid>-<n>-<role>`; `n` makes rigs of one process unique.
static RIG_COUNTER: AtomicUsize = AtomicUsize::new(0);
/// `ip netns add` mounts /run/netns on first use; concurrent first uses can race.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// A named network namespace (`/run/netns/<name>`).
#[derive(Debug)]
pub struct Ns {
    pub name: String,
}

impl Ns {
    /// Runs `ip netns exec <name> args...` and returns its output (never panics on failure
    /// of the command itself, only if it cannot be started).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns exec {} {args:?}`: {e}", self.name))
    }

    /// Like [`Ns::exec`] but panics unless the command succeeds; returns its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        if !out.status.success() {
            panic!(
                "in {}: {args:?} failed ({}): {}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a fresh thread that joined this namespace with setns(2), so sockets
    /// created inside belong to it. A fresh thread because setns changes the calling
    /// thread for good; other threads (and /proc/self, /sys) keep the old view.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                drop(file);
                f()
            })
            .join()
        })
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// A fresh `pv<pid>-<n>` prefix for one rig's namespaces and temp dir.
pub(super) fn unique_prefix() -> String {
    format!(
        "pv{}-{}",
        std::process::id(),
        RIG_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `ip netns add <name>`; panics if that fails (not root, say).
pub(super) fn add_ns(name: &str) {
    let _serial = lock(&NETNS_ADD);
    must(Command::new("ip").args(["netns", "add", name]));
}

/// `ip -n <ns> -batch -`: one process for many commands keeps setup fast.
pub(super) fn ip_batch(ns: &str, lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip -batch");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(lines.join("\n").as_bytes())
        .expect("write ip batch");
    drop(stdin);
    let out = child.wait_with_output().expect("wait ip -batch");
    if !out.status.success() {
        let numbered: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{:>3} {l}", i + 1))
            .collect();
        panic!(
            "ip -n {ns} -batch failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            numbered.join("\n")
        );
    }
}

fn must(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---- Stale state from killed runs and deletion ----------------------------------------

/// Deletes namespaces and temp dirs `pv<pid>-...` whose pid no longer exists (a test run
/// that was SIGKILLed never ran `Drop`), killing any processes still inside them.
pub fn sweep_stale() {
    let me = std::process::id();
    let stale = |name: &str| rig_pid(name).is_some_and(|pid| pid != me && !pid_alive(pid));
    for name in list_dir(Path::new("/run/netns")) {
        if stale(&name) {
            kill_ns_pids(&name);
            delete_ns(&name);
        }
    }
    let tmp = std::env::temp_dir();
    for name in list_dir(&tmp) {
        if stale(&name) {
            let _ = fs::remove_dir_all(tmp.join(name));
        }
    }
}

fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

fn rig_pid(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix("pv")?.split_once('-')?;
    pid.parse().ok().filter(|&p| p > 0 && p <= i32::MAX as u32)
}

fn pid_alive(pid: u32) -> bool {
    // EPERM still means it exists.
    !matches!(kill(Pid::from_raw(pid as i32), None), Err(Errno::ESRCH))
}

pub(super) fn kill_ns_pids(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    let me = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        match pid.parse::<u32>() {
            Ok(pid) if pid != me => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            _ => {}
        }
    }
}

pub(super) fn delete_ns(name: &str) {
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(out) if out.status.success() => {}
        // Someone else (a parallel sweep) may have been faster.
        _ if !Path::new("/run/netns").join(name).exists() => {}
        Ok(out) => eprintln!(
            "rig: ip netns del {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("rig: ip netns del {name}: {e}"),
    }
}
