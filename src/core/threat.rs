//! Threat responses (R12): what a client's violations, floods and spoofing cost it. The
//! grader is fed every sighting the core makes (each refused question, each blocked flow
//! the kernel sampled, each question over the client's DNS rate, each DHCP message, each
//! spoof), not the log lines, which are deduplicated; it answers with the response the
//! policy gives the sighting's grade. A pure state machine over the injected clock.
//!
//! | grade | what | default response |
//! | --- | --- | --- |
//! | violation | a blocked flow, a refused name or query type | report (warning, counted) |
//! | abuse | `violations` distinct ones within `window`; `flow_flood` blocked packets sampled, `dns_flood` questions over the DNS rate, or `dhcp_flood` DHCP messages, within `window` | ban for `ban` |
//!
//! A violation is counted once per target (a name and type, a destination and port) within
//! the window: a device retrying a name it may not have is one violation, a scan of ports
//! or hosts is many. A flood of packets to one blocked target is `flow_flood`.
//! | spoofing | a MAC/IP pair without a lease, a MAC with a second address, an address from a second MAC, DHCP speaking for another MAC, ARP claiming the router's or another's address | suspend (ban for `suspend`) and alarm |

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::MacAddr;
use super::events::{Event, Threat};
use super::time::Instant;

/// What a grade costs the client, mildest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Response {
    /// The event is logged (at info level), nothing more.
    Log,
    /// Logged at warning level and counted against the client (`clients`, metrics).
    Report,
    /// Reported, and the client evicted and banned for the policy's `ban`.
    Ban,
    /// Reported, the client evicted and banned for the policy's `suspend`, and an alarm
    /// raised (an event at alarm level; the operator's `alarm_command`).
    Suspend,
}

impl Response {
    pub fn as_str(self) -> &'static str {
        match self {
            Response::Log => "log",
            Response::Report => "report",
            Response::Ban => "ban",
            Response::Suspend => "suspend",
        }
    }

    pub fn parse(s: &str) -> Option<Response> {
        [
            Response::Log,
            Response::Report,
            Response::Ban,
            Response::Suspend,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The `threat` section, in the core's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreatPolicy {
    /// A single violation.
    pub violation: Response,
    /// Repeated violations, and floods.
    pub abuse: Response,
    pub spoofing: Response,
    /// This many distinct violations within `window` are abuse.
    pub violations: u32,
    pub window: Duration,
    /// Blocked packets sampled from the kernel (a few a second per client at most)
    /// within `window` that are a flood.
    pub flow_flood: u32,
    /// Questions refused for the client's DNS rate, within `window`, that are a flood.
    pub dns_flood: u32,
    /// DHCP messages within `window` that are a flood (a client needs four a lease).
    pub dhcp_flood: u32,
    /// How long `Ban` bans, and `Suspend`.
    pub ban: Duration,
    pub suspend: Duration,
}

impl Default for ThreatPolicy {
    fn default() -> Self {
        ThreatPolicy {
            violation: Response::Report,
            abuse: Response::Ban,
            spoofing: Response::Suspend,
            violations: 10,
            window: Duration::from_secs(60),
            flow_flood: 60,
            dns_flood: 100,
            dhcp_flood: 30,
            ban: Duration::from_secs(600),
            suspend: Duration::from_secs(86_400),
        }
    }
}

impl ThreatPolicy {
    pub fn response(&self, grade: Threat) -> Response {
        match grade {
            Threat::Routine => Response::Log,
            Threat::Violation => self.violation,
            Threat::Abuse => self.abuse,
            Threat::Spoofing => self.spoofing,
        }
    }

    /// How long a response bans (`None`: it does not).
    pub fn ban_of(&self, r: Response) -> Option<Duration> {
        match r {
            Response::Log | Response::Report => None,
            Response::Ban => Some(self.ban),
            Response::Suspend => Some(self.suspend),
        }
    }
}

/// The syslog-style level of an event under `policy`: chatty events are debug, routine
/// ones info, graded ones a warning (info when the policy only logs their grade), an alarm
/// an alarm.
pub fn level_of(e: &Event, policy: &ThreatPolicy) -> &'static str {
    if e.is_chatty() {
        return "debug";
    }
    if matches!(e, Event::Alarm { .. }) {
        return "alarm";
    }
    // Not a threat, but what an operator may need to act on: a quota used up.
    if matches!(e, Event::QuotaExceeded { .. }) {
        return "warning";
    }
    match policy.response(e.threat()) {
        Response::Log => "info",
        _ => "warning",
    }
}

/// What the core saw a client do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// A refused name or query type, a flow the kernel blocked: the target (a hash of the
    /// name and type, or of the destination and port), counted once within the window.
    Violation(u64),
    /// A blocked packet the kernel sampled (each one, for `flow_flood`).
    FlowSample,
    /// A question refused for the client's own DNS rate.
    DnsOverRate,
    /// A DHCP message.
    Dhcp,
    Spoof,
}

/// The grader's answer to a sighting that costs more than a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub grade: Threat,
    pub response: Response,
    /// The sightings within the window that made it (1 for a single one).
    pub count: u32,
}

#[derive(Debug, Default)]
struct Tally {
    /// The distinct targets violated within the window, and when first.
    violations: VecDeque<(Instant, u64)>,
    flows: VecDeque<Instant>,
    dns: VecDeque<Instant>,
    dhcp: VecDeque<Instant>,
    /// Violations reported (counted against the client) since it was first seen.
    reported: u64,
}

impl Tally {
    fn is_idle(&self) -> bool {
        self.violations.is_empty()
            && self.flows.is_empty()
            && self.dns.is_empty()
            && self.dhcp.is_empty()
    }
}

/// The sightings of each client within the policy's window.
#[derive(Debug)]
pub struct Grader {
    policy: ThreatPolicy,
    tallies: HashMap<MacAddr, Tally>,
    /// Bans given (the response, until when): while one is in force, what its station
    /// does (a banned spoofer's ARP still reaches the kernel's log) costs nothing more
    /// unless it calls for a stronger response.
    in_force: HashMap<MacAddr, (Response, Instant)>,
    /// Violations reported since the start.
    total: u64,
}

/// Counts `now` into `times` (those older than `window` forgotten); whether that makes
/// `limit` within the window, when the count starts again.
fn count(times: &mut VecDeque<Instant>, now: Instant, window: Duration, limit: u32) -> (u32, bool) {
    while times
        .front()
        .is_some_and(|&t| now.saturating_since(t) >= window)
    {
        times.pop_front();
    }
    times.push_back(now);
    let n = times.len() as u32;
    if n >= limit {
        times.clear();
        (n, true)
    } else {
        (n, false)
    }
}

impl Grader {
    pub fn new(policy: ThreatPolicy) -> Grader {
        Grader {
            policy,
            tallies: HashMap::new(),
            in_force: HashMap::new(),
            total: 0,
        }
    }

    pub fn policy(&self) -> &ThreatPolicy {
        &self.policy
    }

    /// A new policy (a reload); what was counted stays.
    pub fn set_policy(&mut self, policy: ThreatPolicy) {
        self.policy = policy;
    }

    /// Grades what `mac` did now. `None`: a log line is all it costs (or not even that:
    /// a DHCP message or a question over the rate below the flood's count).
    pub fn observe(&mut self, mac: MacAddr, s: Sighting, now: Instant) -> Option<Verdict> {
        let p = &self.policy;
        let t = self.tallies.entry(mac).or_default();
        let mut new_violation = false;
        let (grade, n) = match s {
            Sighting::Spoof => (Threat::Spoofing, 1),
            Sighting::Violation(target) => {
                let v = &mut t.violations;
                while v
                    .front()
                    .is_some_and(|&(at, _)| now.saturating_since(at) >= p.window)
                {
                    v.pop_front();
                }
                new_violation = !v.iter().any(|&(_, k)| k == target);
                if new_violation {
                    v.push_back((now, target));
                }
                let n = v.len() as u32;
                if n >= p.violations {
                    v.clear();
                    (Threat::Abuse, n)
                } else {
                    (Threat::Violation, n)
                }
            }
            Sighting::FlowSample => match count(&mut t.flows, now, p.window, p.flow_flood) {
                (n, true) => (Threat::Abuse, n),
                _ => return None,
            },
            Sighting::DnsOverRate => match count(&mut t.dns, now, p.window, p.dns_flood) {
                (n, true) => (Threat::Abuse, n),
                _ => return None,
            },
            Sighting::Dhcp => match count(&mut t.dhcp, now, p.window, p.dhcp_flood) {
                (n, true) => (Threat::Abuse, n),
                _ => return None,
            },
        };
        let response = p.response(grade);
        if response == Response::Log {
            return None;
        }
        if let Some(&(given, until)) = self.in_force.get(&mac) {
            if until > now && given >= response && response >= Response::Ban {
                return None;
            }
        }
        if new_violation {
            t.reported += 1;
            self.total += 1;
        }
        Some(Verdict {
            grade,
            response,
            count: n,
        })
    }

    /// The core banned `mac` for a verdict's `response` until `until`.
    pub fn banned(&mut self, mac: MacAddr, response: Response, until: Instant) {
        self.in_force.insert(mac, (response, until));
        if let Some(t) = self.tallies.get_mut(&mac) {
            t.violations.clear();
            t.flows.clear();
            t.dns.clear();
            t.dhcp.clear();
        }
    }

    /// An operator lifted `mac`'s ban: its next sighting is judged afresh.
    pub fn pardon(&mut self, mac: MacAddr) {
        self.in_force.remove(&mac);
    }

    /// Violations reported since the start, by anyone.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Violations reported against `mac`.
    pub fn reported(&self, mac: MacAddr) -> u64 {
        self.tallies.get(&mac).map_or(0, |t| t.reported)
    }

    /// Drops what no window holds any more, keeping what was reported of stations that
    /// are still here (`present`).
    pub fn forget_idle(&mut self, now: Instant, present: impl Fn(MacAddr) -> bool) {
        let window = self.policy.window;
        self.tallies.retain(|&mac, t| {
            while t
                .violations
                .front()
                .is_some_and(|&(x, _)| now.saturating_since(x) >= window)
            {
                t.violations.pop_front();
            }
            for q in [&mut t.flows, &mut t.dns, &mut t.dhcp] {
                while q
                    .front()
                    .is_some_and(|&x| now.saturating_since(x) >= window)
                {
                    q.pop_front();
                }
            }
            !t.is_idle() || (t.reported > 0 && present(mac))
        });
        self.in_force.retain(|_, &mut (_, until)| until > now);
    }

    /// Stations with anything counted or in force (for tests: the state stays bounded).
    pub fn tracked(&self) -> usize {
        self.tallies.len() + self.in_force.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: MacAddr = MacAddr([0, 0x11, 0x22, 0, 0, 1]);
    const B: MacAddr = MacAddr([0, 0x11, 0x22, 0, 0, 2]);

    fn at(s: u64) -> Instant {
        Instant::from_millis((1000 + s) * 1000)
    }

    fn policy(n: u32) -> ThreatPolicy {
        ThreatPolicy {
            violations: n,
            ..ThreatPolicy::default()
        }
    }

    #[test]
    fn the_nth_violation_within_the_window_is_abuse() {
        let mut g = Grader::new(policy(3));
        let v = |g: &mut Grader, s| g.observe(A, Sighting::Violation(s), at(s)).unwrap();
        assert_eq!(v(&mut g, 0).response, Response::Report);
        assert_eq!(v(&mut g, 1).response, Response::Report);
        let third = v(&mut g, 2);
        assert_eq!(
            (third.grade, third.response, third.count),
            (Threat::Abuse, Response::Ban, 3)
        );
        // The count starts again.
        assert_eq!(v(&mut g, 3).response, Response::Report);
        assert_eq!(g.reported(A), 4);
        assert_eq!(g.reported(B), 0);
    }

    #[test]
    fn violations_spread_wider_than_the_window_are_not_abuse() {
        let mut g = Grader::new(policy(3));
        for s in [0, 40, 80, 120, 160] {
            let v = g.observe(A, Sighting::Violation(s), at(s)).unwrap();
            assert_eq!(v.grade, Threat::Violation, "at {s}s");
        }
    }

    #[test]
    fn each_client_is_counted_apart() {
        let mut g = Grader::new(policy(2));
        assert_eq!(
            g.observe(A, Sighting::Violation(1), at(0)).unwrap().grade,
            Threat::Violation
        );
        assert_eq!(
            g.observe(B, Sighting::Violation(1), at(0)).unwrap().grade,
            Threat::Violation
        );
        assert_eq!(
            g.observe(A, Sighting::Violation(2), at(1)).unwrap().grade,
            Threat::Abuse
        );
    }

    #[test]
    fn a_target_violated_again_is_one_violation_but_a_packet_flood_is_abuse() {
        let mut g = Grader::new(ThreatPolicy {
            violations: 3,
            flow_flood: 5,
            ..ThreatPolicy::default()
        });
        // A device retrying one name it may not have: one violation, however often.
        for s in 0..10 {
            let v = g.observe(A, Sighting::Violation(42), at(s)).unwrap();
            assert_eq!((v.grade, v.count), (Threat::Violation, 1), "at {s}s");
        }
        assert_eq!(g.reported(A), 1);
        // ...until the window has passed: then it is one again.
        assert_eq!(
            g.observe(A, Sighting::Violation(42), at(70)).unwrap().count,
            1
        );
        assert_eq!(g.reported(A), 2);
        // Packets to one blocked target, sampled: a flood at the count.
        for _ in 0..4 {
            assert_eq!(g.observe(B, Sighting::FlowSample, at(0)), None);
        }
        let v = g.observe(B, Sighting::FlowSample, at(1)).unwrap();
        assert_eq!(
            (v.grade, v.response, v.count),
            (Threat::Abuse, Response::Ban, 5)
        );
    }

    #[test]
    fn floods_are_abuse_only_at_their_count() {
        let mut g = Grader::new(ThreatPolicy {
            dns_flood: 3,
            dhcp_flood: 2,
            ..ThreatPolicy::default()
        });
        assert_eq!(g.observe(A, Sighting::DnsOverRate, at(0)), None);
        assert_eq!(g.observe(A, Sighting::DnsOverRate, at(0)), None);
        let v = g.observe(A, Sighting::DnsOverRate, at(1)).unwrap();
        assert_eq!((v.grade, v.response), (Threat::Abuse, Response::Ban));
        assert_eq!(g.observe(B, Sighting::Dhcp, at(0)), None);
        assert_eq!(
            g.observe(B, Sighting::Dhcp, at(1)).unwrap().grade,
            Threat::Abuse
        );
        // Floods are not violations: nothing reported against them.
        assert_eq!(g.reported(A), 0);
    }

    #[test]
    fn spoofing_suspends_at_once_and_the_policy_decides() {
        let mut g = Grader::new(ThreatPolicy::default());
        let v = g.observe(A, Sighting::Spoof, at(0)).unwrap();
        assert_eq!((v.grade, v.response), (Threat::Spoofing, Response::Suspend));
        assert_eq!(
            g.policy().ban_of(v.response),
            Some(Duration::from_secs(86_400))
        );
        g.set_policy(ThreatPolicy {
            spoofing: Response::Report,
            violation: Response::Log,
            ..ThreatPolicy::default()
        });
        assert_eq!(
            g.observe(A, Sighting::Spoof, at(1)).unwrap().response,
            Response::Report
        );
        assert_eq!(
            g.observe(A, Sighting::Violation(1), at(1)),
            None,
            "violations only logged"
        );
    }

    #[test]
    fn a_ban_in_force_is_not_given_again_but_may_grow() {
        let mut g = Grader::new(policy(1));
        let v = g.observe(A, Sighting::Violation(1), at(0)).unwrap();
        assert_eq!(v.response, Response::Ban);
        g.banned(A, v.response, at(600));
        assert_eq!(
            g.observe(A, Sighting::Violation(2), at(1)),
            None,
            "banned already"
        );
        // Spoofing while banned for abuse: the suspension is stronger.
        let s = g.observe(A, Sighting::Spoof, at(2)).unwrap();
        assert_eq!(s.response, Response::Suspend);
        g.banned(A, s.response, at(86_402));
        assert_eq!(
            g.observe(A, Sighting::Spoof, at(3)),
            None,
            "suspended already"
        );
        // Violations are still reported (counted), only not banned again.
        g.set_policy(ThreatPolicy::default());
        assert_eq!(
            g.observe(A, Sighting::Violation(3), at(4))
                .unwrap()
                .response,
            Response::Report
        );
        g.pardon(A);
        assert!(
            g.observe(A, Sighting::Spoof, at(5)).is_some(),
            "judged afresh"
        );
    }

    #[test]
    fn idle_state_is_forgotten() {
        let mut g = Grader::new(policy(5));
        g.observe(A, Sighting::Violation(1), at(0));
        g.observe(B, Sighting::Dhcp, at(0));
        g.forget_idle(at(30), |_| false);
        assert_eq!(g.tracked(), 2);
        g.forget_idle(at(61), |m| m == A);
        assert_eq!(g.tracked(), 1, "A's report kept while it is here");
        assert_eq!(g.reported(A), 1);
        g.forget_idle(at(62), |_| false);
        assert_eq!(g.tracked(), 0, "A gone: forgotten");
    }

    proptest! {
        /// Whatever the timing, a client is graded abuse exactly when `n` of its violations
        /// fall within the window since the last time it was (a sliding-window model).
        #[test]
        fn abuse_is_n_violations_within_the_window(
            n in 1u32..6,
            gaps in proptest::collection::vec(0u64..90, 1..40),
        ) {
            let mut g = Grader::new(policy(n));
            let mut model: Vec<u64> = Vec::new();
            let mut t = 0;
            for (step, gap) in (0u64..).zip(gaps) {
                t += gap;
                model.retain(|&x| t - x < 60);
                model.push(t);
                let abuse = model.len() as u32 >= n;
                if abuse {
                    model.clear();
                }
                let v = g.observe(A, Sighting::Violation(step), at(t)).unwrap();
                prop_assert_eq!(v.grade == Threat::Abuse, abuse);
                prop_assert!(v.count <= n);
            }
        }
    }
}
