//! The activation window (R1): the provisioning network is open always, on a schedule, or
//! on demand for a window (default 15 minutes, 5 to 60) opened by a command.

use std::time::Duration;

use super::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowMode {
    Always,
    OnDemand,
    Schedule,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSettings {
    pub mode: WindowMode,
    /// Length of an on-demand activation window.
    pub duration: Duration,
    pub schedule: Vec<ScheduleSpan>,
}

/// `Mon-Fri 08:00-20:00`: on the given weekdays, from `start` to `end` (minutes after
/// midnight, local time); an `end` before `start` runs past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleSpan {
    /// Bit 0 is Monday, bit 6 Sunday.
    pub days: u8,
    pub start: u16,
    pub end: u16,
}

/// Local wall-clock time, as schedules are written: weekday (0 = Monday) and minute of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub weekday: u8,
    pub minute: u16,
}

pub const MIN_WINDOW: Duration = Duration::from_secs(5 * 60);
pub const MAX_WINDOW: Duration = Duration::from_secs(60 * 60);

#[derive(Clone, Debug)]
pub struct Window {
    mode: WindowMode,
    duration: Duration,
    schedule: Vec<ScheduleSpan>,
    /// An on-demand window (any mode but `always` can be opened by hand).
    open_until: Option<Instant>,
}

fn in_span(s: &ScheduleSpan, t: LocalTime) -> bool {
    let day = |d: u8| s.days & (1 << d) != 0;
    let yesterday = (t.weekday + 6) % 7;
    if s.start < s.end {
        day(t.weekday) && (s.start..s.end).contains(&t.minute)
    } else {
        // Past midnight: the evening part on the listed day, the morning part the day after.
        (day(t.weekday) && t.minute >= s.start) || (day(yesterday) && t.minute < s.end)
    }
}

impl Window {
    pub fn new(cfg: &WindowSettings) -> Self {
        Window {
            mode: cfg.mode,
            duration: cfg.duration,
            schedule: cfg.schedule.clone(),
            open_until: None,
        }
    }

    /// A new config keeps a window that was opened by hand.
    pub fn reconfigure(&mut self, cfg: &WindowSettings) {
        let open_until = self.open_until;
        *self = Window::new(cfg);
        self.open_until = open_until;
    }

    pub fn is_open(&self, now: Instant, local: LocalTime) -> bool {
        match self.mode {
            WindowMode::Always => true,
            WindowMode::OnDemand => self.open_until.is_some_and(|u| u > now),
            WindowMode::Schedule => {
                self.open_until.is_some_and(|u| u > now)
                    || self.schedule.iter().any(|s| in_span(s, local))
            }
        }
    }

    /// Opens (or extends) an on-demand window; `duration` defaults to the configured one and
    /// is clamped to 5-60 minutes. Returns when it closes.
    pub fn open(&mut self, duration: Option<Duration>, now: Instant) -> Instant {
        let d = duration
            .unwrap_or(self.duration)
            .clamp(MIN_WINDOW, MAX_WINDOW);
        let until = now + d;
        self.open_until = Some(until);
        until
    }

    /// Re-opens a window a previous run opened (read back after a restart).
    pub fn restore(&mut self, until: Instant, now: Instant) {
        if until > now && self.mode != WindowMode::Always {
            self.open_until = Some(until.min(now + MAX_WINDOW));
        }
    }

    /// Whether the window is open whatever an order says: always, or within a span of its
    /// schedule.
    pub fn held_open(&self, local: LocalTime) -> bool {
        match self.mode {
            WindowMode::Always => true,
            WindowMode::OnDemand => false,
            WindowMode::Schedule => self.schedule.iter().any(|s| in_span(s, local)),
        }
    }

    pub fn mode(&self) -> WindowMode {
        self.mode
    }

    /// Closes an on-demand window (a schedule or `always` stays as it is).
    pub fn close(&mut self) {
        self.open_until = None;
    }

    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        self.open_until.filter(|&u| u > now)
    }

    /// When the open/closed state may next change: the end of an on-demand window, or, on a
    /// schedule, the next minute boundary (schedules have minute resolution).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let until = self.open_until.filter(|&u| u > now);
        let minute = (self.mode == WindowMode::Schedule).then(|| now + Duration::from_secs(60));
        [until, minute].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: WindowMode, schedule: Vec<ScheduleSpan>) -> WindowSettings {
        WindowSettings {
            mode,
            duration: Duration::from_secs(900),
            schedule,
        }
    }
    fn t(s: u64) -> Instant {
        Instant::from_millis(1_000_000 + s * 1000)
    }
    const NOON_MON: LocalTime = LocalTime {
        weekday: 0,
        minute: 720,
    };

    #[test]
    fn on_demand_opens_for_its_duration_clamped() {
        let mut w = Window::new(&cfg(WindowMode::OnDemand, vec![]));
        assert!(!w.is_open(t(0), NOON_MON));
        assert_eq!(w.open(None, t(0)), t(900));
        assert!(w.is_open(t(899), NOON_MON) && !w.is_open(t(900), NOON_MON));
        assert_eq!(
            w.open(Some(Duration::from_secs(10)), t(0)),
            t(300),
            "at least 5 min"
        );
        assert_eq!(
            w.open(Some(Duration::from_secs(99999)), t(0)),
            t(3600),
            "at most 1 h"
        );
        w.close();
        assert!(!w.is_open(t(1), NOON_MON));
        assert_eq!(w.next_deadline(t(1)), None);
    }

    #[test]
    fn a_restored_window_stays_open_until_its_end() {
        let mut w = Window::new(&cfg(WindowMode::OnDemand, vec![]));
        w.restore(t(600), t(100));
        assert!(w.is_open(t(599), NOON_MON) && !w.is_open(t(600), NOON_MON));
        w.restore(t(50), t(100));
        assert!(w.is_open(t(100), NOON_MON), "an ended one changes nothing");
        let mut w = Window::new(&cfg(WindowMode::OnDemand, vec![]));
        w.restore(t(99_999), t(0));
        assert_eq!(
            w.open_until(t(0)),
            Some(t(3600)),
            "never longer than the longest window"
        );
    }

    #[test]
    fn always_is_always() {
        let mut w = Window::new(&cfg(WindowMode::Always, vec![]));
        w.close();
        assert!(w.is_open(t(0), NOON_MON));
    }

    #[test]
    fn schedules_including_past_midnight() {
        let office = ScheduleSpan {
            days: 0b0011111,
            start: 8 * 60,
            end: 20 * 60,
        };
        let night = ScheduleSpan {
            days: 0b0100000,
            start: 22 * 60,
            end: 2 * 60,
        }; // Sat 22:00-02:00
        let w = Window::new(&cfg(WindowMode::Schedule, vec![office, night]));
        let at = |weekday, h: u16, m: u16| LocalTime {
            weekday,
            minute: h * 60 + m,
        };
        assert!(w.is_open(t(0), at(0, 12, 0)));
        assert!(w.is_open(t(0), at(4, 8, 0)));
        assert!(!w.is_open(t(0), at(4, 20, 0)));
        assert!(!w.is_open(t(0), at(5, 12, 0)), "Saturday noon");
        assert!(w.is_open(t(0), at(5, 23, 0)), "Saturday night");
        assert!(
            w.is_open(t(0), at(6, 1, 59)),
            "early Sunday, from Saturday's span"
        );
        assert!(!w.is_open(t(0), at(6, 2, 0)));
        assert!(!w.is_open(t(0), at(0, 1, 0)), "not Monday morning");
        assert_eq!(w.next_deadline(t(0)), Some(t(60)));
    }
}
