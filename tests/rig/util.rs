//! Small helpers every part of the rig uses: locks that survive a panicking test thread,
//! and poll(2).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// A poisoned lock only means another test thread panicked; the data is still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// poll(2) for input (or hangup) on `fds`: which ones are ready, `None` if poll failed.
/// A `None` timeout waits forever.
pub(super) fn poll_readable(fds: &[BorrowedFd], timeout: Option<Duration>) -> Option<Vec<bool>> {
    poll(fds, libc::POLLIN, timeout)
}

pub(super) fn poll_writable(fd: BorrowedFd, timeout: Duration) -> bool {
    poll(&[fd], libc::POLLOUT, Some(timeout)).is_some_and(|r| r[0])
}

fn poll(fds: &[BorrowedFd], events: libc::c_short, timeout: Option<Duration>) -> Option<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        })
        .collect();
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        // Rounded up: a sub-millisecond rest must not turn into a busy non-wait.
        let ms = deadline.map_or(-1, |d| {
            let left = d.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: pfds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Some(pfds.iter().map(|p| p.revents != 0).collect());
        }
        if Errno::last() != Errno::EINTR {
            return None;
        }
    }
}
