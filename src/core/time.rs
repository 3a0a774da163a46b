//! Time as the core sees it: a monotonic instant that survives daemon restarts.

use std::time::Duration;

/// Milliseconds on the system's boot clock (`CLOCK_BOOTTIME`). Unlike `std::time::Instant`
/// it is meaningful across processes, so a restarted daemon can compare the deadlines it
/// reads back from the kernel with its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Reads the boot clock. The one impure function here; the core never calls it.
    pub fn now() -> Self {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .expect("CLOCK_BOOTTIME is available on every Linux this runs on");
        Instant(ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000)
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }
}

impl std::ops::Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_sub(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }
}

/// A wall-clock time, milliseconds since the Unix epoch, shown as RFC 3339 in UTC
/// (`2026-12-01T22:50:03.120Z`). Written out (days to civil date, Howard Hinnant's
/// algorithm) rather than pulling a date crate onto the router for one format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct WallTime(pub u64);

impl WallTime {
    pub fn now() -> WallTime {
        WallTime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    }
}

impl std::fmt::Display for WallTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (secs, ms) = (self.0 / 1000, self.0 % 1000);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod wall_tests {
    use super::WallTime;

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(WallTime(0).to_string(), "1970-01-01T00:00:00.000Z");
        // date -u -d @1796165403 → 2026-12-01T22:50:03Z
        assert_eq!(
            WallTime(1_796_165_403_120).to_string(),
            "2026-12-01T22:50:03.120Z"
        );
        // A leap day, and the last millisecond of a century year that is not leap.
        assert_eq!(
            WallTime(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            WallTime(4_107_542_399_999).to_string(),
            "2100-02-28T23:59:59.999Z"
        );
    }
}
