//! Processes the tests start: [`Rig::spawn`] and [`Proc`] (output read line by line,
//! signals, a pidfd to wait on), and the one thread that forks them all, so that the kernel
//! kills every child of a test process that dies without running `Drop`.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::util::{lock, poll_readable};
use super::{Ns, Rig};

/// A command for the spawner thread, and where it sends the child back.
pub(super) type SpawnJob = (Command, Sender<std::io::Result<Child>>);

impl Rig {
    /// Starts `cmd` in `ns` (own process group) with stdout and stderr captured line by line.
    /// Killed (with its group) when the `Proc` or the rig is dropped, whichever is first,
    /// and by the kernel if the test process dies without running `Drop` (SIGKILL, ^C).
    pub fn spawn(&self, ns: &Ns, cmd: &[&str]) -> Proc {
        assert!(!cmd.is_empty(), "empty command");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns.name])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own group: kill9 also reaches helpers it forks.
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls (prctl, getppid) and no allocation.
        unsafe {
            command.pre_exec(move || {
                // PDEATHSIG fires when the forking *thread* exits, hence the spawner thread,
                // which lives exactly as long as the rig (or the process, if it is killed).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        let (jobs, _) = self.spawner.as_ref().expect("rig is alive");
        jobs.send((command, reply_tx))
            .expect("spawner thread is alive");
        let mut child = reply_rx
            .recv()
            .expect("spawner thread replies")
            .unwrap_or_else(|e| panic!("spawn {cmd:?} in {}: {e}", ns.name));
        let pidfd = pidfd_open(child.id()).expect("pidfd_open");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        spawn_reader(out, tx.clone());
        spawn_reader(err, tx);
        let inner = Arc::new(ProcInner {
            pid: child.id(),
            pidfd,
            child: Mutex::new(ChildState {
                child,
                status: None,
            }),
            out: Mutex::new(Lines {
                rx,
                lines: Vec::new(),
                used: Vec::new(),
                closed: false,
            }),
        });
        let mut procs = lock(&self.procs);
        procs.retain(|p| p.strong_count() > 0);
        procs.push(Arc::downgrade(&inner));
        drop(procs);
        Proc {
            inner,
            what: format!("{cmd:?} in {}", ns.name),
        }
    }
}

/// A process started with [`Rig::spawn`]. Dropping it kills it.
pub struct Proc {
    inner: Arc<ProcInner>,
    what: String,
}

pub(super) struct ProcInner {
    pid: u32,
    /// Readable once the process exits: lets `wait` block with a timeout, no polling.
    pidfd: OwnedFd,
    child: Mutex<ChildState>,
    out: Mutex<Lines>,
}

struct ChildState {
    child: Child,
    /// Set once reaped; until then the pid (and process group id) cannot be reused,
    /// so signalling by pid is safe.
    status: Option<ExitStatus>,
}

struct Lines {
    rx: Receiver<String>,
    lines: Vec<String>,
    /// Lines that already satisfied a `wait_line`.
    used: Vec<bool>,
    closed: bool,
}

impl Lines {
    fn push(&mut self, line: String) {
        self.lines.push(line);
        self.used.push(false);
    }

    /// Waits up to `timeout` for one more line (or for the end of the output).
    fn pull(&mut self, timeout: Duration) {
        match self.rx.recv_timeout(timeout) {
            Ok(line) => self.push(line),
            Err(RecvTimeoutError::Disconnected) => self.closed = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }

    /// Takes in every line already read, without waiting.
    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(line) => self.push(line),
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    fn tail(&self) -> String {
        let start = self.lines.len().saturating_sub(40);
        self.lines[start..].join("\n")
    }
}

impl ProcInner {
    pub(super) fn kill(&self) {
        let mut st = lock(&self.child);
        if st.status.is_none() {
            // The group id is our unreaped child's pid, so it cannot have been reused.
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            st.status = st.child.wait().ok();
        }
    }
}

impl Proc {
    /// Waits for a stdout/stderr line containing `needle` that no earlier `wait_line`
    /// returned (so lines printed before the call count, and each line satisfies one wait).
    /// The error lists the output seen so far.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_line_where(&format!("{needle:?}"), timeout, |l| l.contains(needle))
    }

    /// Like [`Proc::wait_line`], for the first unused line that `matches` (`what` says which
    /// in the error).
    pub fn wait_line_where(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut out = lock(&self.inner.out);
        let mut from = 0;
        loop {
            if let Some(i) =
                (from..out.lines.len()).find(|&i| !out.used[i] && matches(&out.lines[i]))
            {
                out.used[i] = true;
                return Ok(out.lines[i].clone());
            }
            from = out.lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if out.closed || left.is_zero() {
                let why = if out.closed {
                    "output closed"
                } else {
                    "timed out"
                };
                return Err(format!(
                    "{why} waiting for {what} from {}; output so far:\n{}",
                    self.what,
                    out.tail()
                ));
            }
            out.pull(left);
        }
    }

    /// Every line seen so far (stdout and stderr interleaved as read).
    pub fn lines(&self) -> Vec<String> {
        let mut out = lock(&self.inner.out);
        out.drain();
        out.lines.clone()
    }

    /// SIGKILLs the process group and reaps the process.
    pub fn kill9(&mut self) {
        self.inner.kill();
    }

    /// Sends `sig` to the process (not its group); a no-op once it has been reaped.
    pub fn signal(&self, sig: Signal) {
        let st = lock(&self.inner.child);
        if st.status.is_none() {
            let _ = kill(Pid::from_raw(self.inner.pid as i32), sig);
        }
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The process's pidfd: polls readable once it has exited.
    pub(super) fn pidfd(&self) -> BorrowedFd<'_> {
        self.inner.pidfd.as_fd()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if lock(&self.inner.child).status.is_none() {
            poll_readable(&[self.inner.pidfd.as_fd()], Some(timeout));
        }
        let mut st = lock(&self.inner.child);
        if st.status.is_none() {
            st.status = st.child.try_wait().ok().flatten();
        }
        st.status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.inner.kill();
    }
}

pub(super) fn start_spawner() -> (Sender<SpawnJob>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    let thread = std::thread::Builder::new()
        .name("rig-spawner".into())
        .spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn());
            }
        })
        .expect("spawn rig-spawner thread");
    (tx, thread)
}

fn spawn_reader(pipe: impl Read + Send + 'static, tx: Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A process the rig did not start (one that a daemon forked, say), held by a pidfd: its
/// exit can be awaited, and its pid is never mistaken for a later process's.
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`, which must be running (ESRCH otherwise).
    pub fn open(pid: u32) -> std::io::Result<PidFd> {
        pidfd_open(pid).map(PidFd)
    }

    /// Waits up to `timeout` for the process to exit; whether it did.
    pub fn exited_within(&self, timeout: Duration) -> bool {
        poll_readable(&[self.0.as_fd()], Some(timeout)).is_some_and(|r| r[0])
    }
}
