//! Wall-clock times for people and scripts: RFC 3339 in UTC, written here rather than by
//! a date crate (a few lines against the flash budget). The core's clock is the boot clock;
//! a time on it becomes a wall-clock time by its distance from now.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::time::{Instant, civil_from_days};

/// `at` (boot clock) as seconds since the Unix epoch, given what both clocks say now.
pub fn unix_secs_of(at: Instant, now: Instant, wall_now: SystemTime) -> u64 {
    let wall = wall_now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let wall = if at <= now {
        wall.saturating_sub(now.saturating_since(at))
    } else {
        wall + at.saturating_since(now)
    };
    wall.as_secs()
}

/// `2025-03-01T12:00:05Z`.
pub fn rfc3339(unix_secs: u64) -> String {
    let (days, rem) = (unix_secs / 86_400, unix_secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_the_calendars() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // A leap day, and the day after.
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(rfc3339(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
        // Every day of 1970-2100 follows the one before.
        let mut last = (1969, 12, 31);
        for day in 0..47_847 {
            let (y, m, d) = civil_from_days(day);
            let next_month = d == 1 && (m == last.1 % 12 + 1);
            assert!(
                (y, m, d) == (last.0, last.1, last.2 + 1)
                    || (next_month && (y == last.0 || (m == 1 && y == last.0 + 1))),
                "{last:?} then {:?}",
                (y, m, d)
            );
            last = (y, m, d);
        }
    }

    #[test]
    fn boot_clock_times_become_wall_clock_times() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let now = Instant::from_millis(50_000);
        assert_eq!(
            unix_secs_of(Instant::from_millis(20_000), now, wall),
            1_699_999_970
        );
        assert_eq!(
            unix_secs_of(Instant::from_millis(110_000), now, wall),
            1_700_000_060
        );
    }
}
