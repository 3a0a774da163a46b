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

/// From `second` of the local day to the next `reset` (minutes after midnight): at most a
/// day, and never less than a minute (a reset a second away, as the clocks drift, is the
/// day after's), so that one day end is never taken for two.
pub fn day_left(second: u32, reset: u16) -> std::time::Duration {
    const DAY: u32 = 86_400;
    let reset = u32::from(reset) * 60 % DAY;
    let left = (reset + DAY - second % DAY) % DAY;
    let left = if left < 60 { left + DAY } else { left };
    std::time::Duration::from_secs(u64::from(left))
}

/// Whether the wall clock moved under a day end set `left` from now, the local time now
/// putting it `want` from now: more than five minutes apart, a day either way being no
/// difference (in the day's last minute [`day_left`] gives the day after's). NTP setting
/// the clock of a router that booted without one, or an operator's `date`, moves the day
/// end with it; drift and a late tick do not.
pub fn day_end_moved(left: std::time::Duration, want: std::time::Duration) -> bool {
    const DAY: i64 = 86_400;
    let d = (want.as_secs() as i64 - left.as_secs() as i64).rem_euclid(DAY);
    d.min(DAY - d) > 300
}

#[cfg(test)]
mod day_tests {
    use super::{day_end_moved, day_left};
    use std::time::Duration;

    #[test]
    fn a_day_end_moves_with_a_clock_jump_and_not_with_drift() {
        let s = Duration::from_secs;
        assert!(!day_end_moved(s(3600), s(3600)));
        assert!(!day_end_moved(s(3600), s(3620)), "drift");
        // The day's last minute: the day after's end is the same end.
        assert!(!day_end_moved(s(30), day_left(4 * 3600 - 30, 4 * 60)));
        assert!(!day_end_moved(s(0), s(86_400)));
        // NTP sets a clock that started at 1970-01-01 00:00 to 14:00: the day ends in
        // 10 h, not in the 24 h left on the boot clock.
        assert!(day_end_moved(s(86_400 - 60), day_left(14 * 3600, 0)));
        // Set back by two hours.
        assert!(day_end_moved(s(3600), s(3 * 3600)));
    }

    #[test]
    fn the_day_ends_at_the_next_reset() {
        let h = |h: u64| Duration::from_secs(h * 3600);
        // Midnight resets: from noon, 12 h; from one second past, almost a day.
        assert_eq!(day_left(12 * 3600, 0), h(12));
        assert_eq!(day_left(1, 0), h(24) - Duration::from_secs(1));
        // At 04:00 exactly, the next is tomorrow's; from 03:00, in an hour.
        assert_eq!(day_left(4 * 3600, 4 * 60), h(24));
        assert_eq!(day_left(3 * 3600, 4 * 60), h(1));
        // Half a minute before: the day after (the one at hand is taken as passed).
        assert_eq!(
            day_left(4 * 3600 - 30, 4 * 60),
            h(24) + Duration::from_secs(30)
        );
        // From late evening, across midnight.
        assert_eq!(day_left(23 * 3600, 4 * 60), h(5));
    }
}
