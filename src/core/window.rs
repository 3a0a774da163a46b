//! The activation window (R1): the provisioning network is open always, on a schedule, or
//! on demand for a window (default 15 minutes, 5 to 60) opened by a command.

use std::time::Duration;

use super::MacAddr;
use super::oui::MacPrefix;
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
    /// Opened for named devices only (`window open --for`).
    expected: Option<Expected>,
}

/// A window opened for named devices only (a setup app that read the device's identity
/// from a QR code or a barcode): who may join, how many of them must complete (leave after
/// reaching their cloud) before it closes, and who has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub prefixes: Vec<MacPrefix>,
    /// At least 1.
    pub count: u32,
    /// The named devices that completed, each once.
    pub done: Vec<MacAddr>,
}

impl Expected {
    pub fn new(prefixes: Vec<MacPrefix>, count: u32) -> Expected {
        Expected {
            prefixes,
            count,
            done: Vec::new(),
        }
    }

    /// Whether `mac` is one of the devices the window is for.
    pub fn admits(&self, mac: MacAddr) -> bool {
        self.prefixes.iter().any(|p| p.matches(mac))
    }

    pub fn is_complete(&self) -> bool {
        self.done.len() >= self.count as usize
    }
}

/// An on-demand window as the run directory keeps it across a restart of the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedWindow {
    pub until: Instant,
    pub expected: Option<Expected>,
}

/// The first line of a window file this version writes.
pub const WINDOW_MAGIC: &str = "provisioner-window 1";

impl SavedWindow {
    /// A first line naming the format, its end (milliseconds of the monotonic clock), then,
    /// for a window opened for named devices, `for PREFIX` lines, a `count N` line and a
    /// `done MAC` line per device that completed; sealed with a checksum line, so that a
    /// file cut after its first lines is not read as a window for everyone.
    pub fn encode(&self) -> String {
        let mut out = format!("{WINDOW_MAGIC}\n{}\n", self.until.as_millis());
        if let Some(e) = &self.expected {
            for p in &e.prefixes {
                out.push_str(&format!("for {p}\n"));
            }
            out.push_str(&format!("count {}\n", e.count));
            for m in &e.done {
                out.push_str(&format!("done {m}\n"));
            }
        }
        crate::core::seal::seal(&mut out);
        out
    }

    /// The window [`SavedWindow::encode`] wrote, or `None` if the text is not one: any line
    /// not understood makes the whole of it unreadable, so that a damaged file closes the
    /// window rather than opening it for everyone.
    pub fn decode(text: &str) -> Option<SavedWindow> {
        let mut lines = crate::core::seal::unseal(text)?.lines();
        if lines.next()? != WINDOW_MAGIC {
            return None;
        }
        let until = Instant::from_millis(lines.next()?.trim().parse().ok()?);
        let (mut prefixes, mut count, mut done) = (Vec::new(), None, Vec::new());
        for line in lines.map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once(' ')?;
            match key {
                "for" => prefixes.push(value.parse().ok()?),
                "count" if count.is_none() => count = Some(value.parse().ok().filter(|&n| n > 0)?),
                "done" => done.push(value.parse().ok()?),
                _ => return None,
            }
        }
        let expected = match (prefixes.is_empty(), count) {
            (true, None) if done.is_empty() => None,
            (false, Some(count)) => Some(Expected {
                prefixes,
                count,
                done,
            }),
            _ => return None,
        };
        Some(SavedWindow { until, expected })
    }
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
            expected: None,
        }
    }

    /// A new config keeps a window that was opened by hand.
    pub fn reconfigure(&mut self, cfg: &WindowSettings) {
        let open_until = self.open_until;
        let expected = self.expected.take();
        *self = Window::new(cfg);
        self.open_until = open_until;
        self.expected = expected;
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
        self.expected = None;
        until
    }

    /// [`Window::open`] for the devices `expected` names only.
    pub fn open_for(
        &mut self,
        duration: Option<Duration>,
        expected: Expected,
        now: Instant,
    ) -> Instant {
        let until = self.open(duration, now);
        self.expected = Some(expected);
        until
    }

    /// Re-opens a window a previous run opened (read back after a restart), for the same
    /// devices and with their progress.
    pub fn restore(&mut self, saved: SavedWindow, now: Instant) {
        if saved.until > now && self.mode != WindowMode::Always {
            self.open_until = Some(saved.until.min(now + MAX_WINDOW));
            self.expected = saved.expected;
        }
    }

    /// The devices an on-demand window that is open now was opened for (`None`: for
    /// everyone, or no such window).
    pub fn expected(&self, now: Instant) -> Option<&Expected> {
        self.open_until(now).and(self.expected.as_ref())
    }

    pub fn expected_mut(&mut self, now: Instant) -> Option<&mut Expected> {
        match self.open_until(now) {
            Some(_) => self.expected.as_mut(),
            None => None,
        }
    }

    /// What to keep across a restart: the open on-demand window, if any.
    pub fn saved(&self, now: Instant) -> Option<SavedWindow> {
        Some(SavedWindow {
            until: self.open_until(now)?,
            expected: self.expected.clone(),
        })
    }

    /// Whether an on-demand window was opened and its time ran out (not closed by hand).
    pub fn timed_out(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|u| u <= now)
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
        self.expected = None;
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
    fn everyone(until: Instant) -> SavedWindow {
        SavedWindow {
            until,
            expected: None,
        }
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
        w.restore(everyone(t(600)), t(100));
        assert!(w.is_open(t(599), NOON_MON) && !w.is_open(t(600), NOON_MON));
        w.restore(everyone(t(50)), t(100));
        assert!(w.is_open(t(100), NOON_MON), "an ended one changes nothing");
        let mut w = Window::new(&cfg(WindowMode::OnDemand, vec![]));
        w.restore(everyone(t(99_999)), t(0));
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

    #[test]
    fn a_saved_window_reads_back_as_written_and_damage_closes_it() {
        let mac: MacAddr = "00:11:22:33:44:55".parse().unwrap();
        let saved = SavedWindow {
            until: t(600),
            expected: Some(Expected {
                prefixes: vec![MacPrefix::exact(mac), "00:11:22:3".parse().unwrap()],
                count: 2,
                done: vec![mac],
            }),
        };
        let text = saved.encode();
        let body = format!(
            "{WINDOW_MAGIC}\n1600000\nfor 00:11:22:33:44:55\nfor 00:11:22:3\ncount 2\ndone 00:11:22:33:44:55\n"
        );
        assert!(text.starts_with(&body), "{text}");
        assert_eq!(SavedWindow::decode(&text), Some(saved));
        let sealed = |body: &str| {
            let mut s = format!("{WINDOW_MAGIC}\n{body}");
            crate::core::seal::seal(&mut s);
            s
        };
        assert_eq!(
            SavedWindow::decode(&sealed("1600000\n")),
            Some(everyone(t(600)))
        );
        // Torn anywhere (above all after its end, which alone would read as a window for
        // everyone) or written by an earlier version: closed.
        for cut in 0..text.len() {
            assert_eq!(SavedWindow::decode(&text[..cut]), None, "cut at {cut}");
        }
        assert_eq!(SavedWindow::decode("1600000\n"), None, "unsealed");
        // Whole but not understood: never a window for everyone.
        for bad in [
            "",
            "soon\n",
            "1600000\nfor 00:11:zz\ncount 1\n",
            "1600000\nfor 00:11:22\n",
            "1600000\ncount 1\n",
            "1600000\nfor 00:11:22\ncount 0\n",
            "1600000\nfor 00:11:22\ncount 1\ncount 2\n",
            "1600000\nfor 00:11:22\ncount 1\nwho knows\n",
            "1600000\ndone 00:11:22:33:44:55\n",
        ] {
            assert_eq!(SavedWindow::decode(&sealed(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn a_window_for_devices_admits_only_them_and_keeps_them_across_a_restore() {
        let mut w = Window::new(&cfg(WindowMode::OnDemand, vec![]));
        let e = Expected::new(vec!["00:11:22".parse().unwrap()], 1);
        w.open_for(None, e.clone(), t(0));
        let ours: MacAddr = "00:11:22:aa:bb:cc".parse().unwrap();
        let other: MacAddr = "00:11:23:aa:bb:cc".parse().unwrap();
        let x = w.expected(t(1)).unwrap();
        assert!(x.admits(ours) && !x.admits(other));
        let saved = w.saved(t(1)).unwrap();
        let mut w2 = Window::new(&cfg(WindowMode::OnDemand, vec![]));
        w2.restore(saved, t(2));
        assert_eq!(w2.expected(t(2)), Some(&e));
        assert!(w2.expected(t(900)).is_none(), "ended with its time");
        assert!(w2.timed_out(t(900)));
        w.open(None, t(3));
        assert!(w.expected(t(3)).is_none(), "opened again for everyone");
        w.open_for(None, e, t(4));
        w.close();
        assert!(w.expected(t(5)).is_none() && !w.timed_out(t(5)));
    }
}
