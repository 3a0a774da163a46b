//! What the daemon asks of the system: the local time (schedules), the router's
//! addresses, the provisioning interface made ready, the on-demand window's end kept in
//! the run directory, and the deliberate removal of our tables.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tracing::{info, warn};

use crate::config::IfName;
use crate::config::edit::write_atomic;
use crate::core::saved::SavedStations;
use crate::core::window::{LocalTime, SavedWindow};
use crate::firewall::quotas::QuotaReading;
use crate::firewall::{Firewall, TABLE};

/// Local wall-clock time, for schedules.
pub(super) fn local_now() -> LocalTime {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec())
        .unwrap_or(0);
    // SAFETY: localtime_r only writes the struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&t, &mut tm) };
    LocalTime {
        weekday: ((tm.tm_wday + 6) % 7) as u8,
        minute: (tm.tm_hour * 60 + tm.tm_min) as u16,
    }
}

/// How long until the daily quotas' day ends: the next `reset` (minutes after local
/// midnight).
pub(super) fn until_quota_reset(reset: u16) -> std::time::Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec())
        .unwrap_or(0);
    // SAFETY: localtime_r only writes the struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&t, &mut tm) };
    let second = (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) as u32;
    crate::core::time::day_left(second, reset)
}

/// A state file as `decode` reads it: `None` if there is none (or it cannot be read), and
/// also for one `decode` refuses (torn, damaged, not UTF-8, another version's), which is
/// reported with what holds instead (`instead`).
fn read_state<T>(path: &Path, decode: impl FnOnce(&str) -> Option<T>, instead: &str) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    let decoded = String::from_utf8(bytes).ok().and_then(|t| decode(&t));
    if decoded.is_none() {
        warn!(
            "{}: torn, damaged or written by another version, ignored{instead}",
            path.display()
        );
    }
    decoded
}

/// Where the quotas' last reading is kept (tmpfs on OpenWrt: no flash is worn, and a
/// reboot starts the day afresh).
fn quota_file(run_dir: &Path) -> PathBuf {
    run_dir.join("quotas")
}

/// What a previous run read from the quota elements, if its day has not ended
/// (`now_unix`); a torn or damaged file is reported and ignored (the kernel's elements, if
/// any, are the truth anyway).
pub(super) fn read_quotas(run_dir: &Path, now_unix: u64) -> Option<QuotaReading> {
    let (r, day_end) = read_state(
        &quota_file(run_dir),
        QuotaReading::decode,
        " (the kernel's quota elements, if any, hold what was used)",
    )?;
    (day_end > now_unix).then_some(r)
}

/// Written whole, synced, then renamed over the last ([`write_atomic`]): a crash leaves the
/// old file or the new, never half of one.
pub(super) fn write_quotas(run_dir: &Path, reading: &QuotaReading, day_end_unix: u64) {
    let path = quota_file(run_dir);
    if let Err(e) = write_atomic(&path, reading.encode(day_end_unix).as_bytes()) {
        warn!(
            "{}: {e}; a restart without our tables would lose today's quota use",
            path.display()
        );
    }
}

/// Where an on-demand window's end is kept across a restart of the daemon (the run
/// directory is on tmpfs: a reboot closes the window, as it should).
fn window_file(run_dir: &Path) -> PathBuf {
    run_dir.join("window")
}

/// The window a previous run kept (see [`SavedWindow::encode`]); a file that does not
/// read as one (torn, damaged, another version's) is reported and closes the window: it is
/// never opened for everyone by mistake.
pub(super) fn read_window(run_dir: &Path) -> Option<SavedWindow> {
    read_state(
        &window_file(run_dir),
        SavedWindow::decode,
        "; the window stays closed",
    )
}

pub(super) fn write_window(run_dir: &Path, window: Option<SavedWindow>) {
    let path = window_file(run_dir);
    let result = match window {
        // Written whole, synced, renamed: a crash never leaves half a list of devices.
        Some(w) => write_atomic(&path, w.encode().as_bytes()),
        None => std::fs::remove_file(&path).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        }),
    };
    if let Err(e) = result {
        warn!("{}: {e}; a restart would close the window", path.display());
    }
}

/// Where admissions and bans are kept besides the kernel's sets.
fn stations_file(run_dir: &Path) -> PathBuf {
    run_dir.join("stations")
}

/// The admissions and bans a previous run kept; a torn or damaged file is reported and
/// ignored (the kernel's sets are the truth).
pub(super) fn read_stations(run_dir: &Path) -> Option<SavedStations> {
    read_state(
        &stations_file(run_dir),
        SavedStations::decode,
        " (the kernel's sets hold the admissions and bans)",
    )
}

/// Written whole, synced, renamed ([`write_atomic`]).
pub(super) fn write_stations(run_dir: &Path, saved: &SavedStations) {
    let path = stations_file(run_dir);
    if let Err(e) = write_atomic(&path, saved.encode().as_bytes()) {
        warn!(
            "{}: {e}; a restart after our tables were deleted would forget admissions and bans",
            path.display()
        );
    }
}

/// Every IPv4 address the router has (sorted, once each): never to be learned from a DNS
/// answer.
pub(super) fn router_addresses() -> Vec<Ipv4Addr> {
    let mut addrs: Vec<Ipv4Addr> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// IPv6 is off on the provisioning interface: no addresses, no router advertisements, so
/// there is nothing for a client to use as a bypass (the table drops IPv6 as well).
pub(super) fn prepare_interface(interface: &IfName, router: Ipv4Addr) -> anyhow::Result<()> {
    if nix::net::if_::if_nametoindex(interface.as_str()).is_err() {
        bail!("the provisioning interface {interface} does not exist");
    }
    let knob = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    if Path::new(&knob).exists() {
        std::fs::write(&knob, "1").with_context(|| format!("turning IPv6 off: writing {knob}"))?;
    }
    let has_router = nix::ifaddrs::getifaddrs()
        .map(|mut addrs| {
            addrs.any(|a| {
                a.interface_name == interface.as_str()
                    && a.address
                        .and_then(|s| s.as_sockaddr_in().map(|s| s.ip() == router))
                        .unwrap_or(false)
            })
        })
        .unwrap_or(false);
    if !has_router {
        warn!(
            "{interface} does not carry the router address {router}: clients will be sent to a gateway and DNS server that is not there"
        );
    }
    Ok(())
}

/// `provisionerd --flush`: removes our tables on purpose.
pub fn remove_tables() -> anyhow::Result<()> {
    let mut fw = Firewall::open().context("opening the nftables netlink socket")?;
    if fw.remove_tables()? {
        info!("table inet {TABLE} removed: the provisioning network is no longer restricted");
    } else {
        info!("table inet {TABLE} was not there");
    }
    Ok(())
}
