//! `provisionerctl metrics` and the optional HTTP listener: the daemon's counters in the
//! Prometheus text format (version 0.0.4). Counted here as events are logged and batches
//! applied; gauges read from the state when asked.

use std::fmt::Write as _;
use std::time::Duration;

use crate::core::events::Event;

/// Upper bounds (seconds) of the set-batch latency histogram.
const BATCH_BUCKETS: [f64; 7] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25];

#[derive(Debug, Default)]
pub struct Metrics {
    /// (event kind, its reason or why, or ""), count: a few dozen at most, so a list.
    events: Vec<(&'static str, &'static str, u64)>,
    dns_replies: u64,
    batches: [u64; BATCH_BUCKETS.len()],
    batch_count: u64,
    batch_sum: Duration,
    batches_refused: u64,
}

/// What the state holds when metrics are asked for.
#[derive(Debug, Default)]
pub struct Gauges {
    pub clients: usize,
    pub max_clients: usize,
    pub bans: usize,
    pub learned: usize,
    pub window_open: bool,
    pub uptime: Duration,
    /// Bytes and packets of the current bindings, from the kernel (`None`: unreadable).
    pub traffic: Option<[(u64, u64); 2]>,
    pub journal_next: u64,
    /// Policy violations reported since the start (each refused question, each sampled
    /// blocked flow), and by the current clients.
    pub violations: u64,
    pub client_violations: u64,
}

impl Metrics {
    pub fn event(&mut self, e: &Event) {
        let (kind, reason) = (e.kind(), e.reason().unwrap_or(""));
        match self
            .events
            .iter_mut()
            .find(|(k, r, _)| *k == kind && *r == reason)
        {
            Some((_, _, n)) => *n += 1,
            None => self.events.push((kind, reason, 1)),
        }
    }

    pub fn dns_replies(&mut self, n: usize) {
        self.dns_replies += n as u64;
    }

    pub fn batch(&mut self, took: Duration, applied: bool) {
        if !applied {
            self.batches_refused += 1;
        }
        self.batch_count += 1;
        self.batch_sum += took;
        let secs = took.as_secs_f64();
        for (b, le) in self.batches.iter_mut().zip(BATCH_BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge("provisioner_clients", "Admitted clients.", g.clients as u64);
        gauge(
            "provisioner_clients_max",
            "Clients allowed at once (max_clients).",
            g.max_clients as u64,
        );
        gauge("provisioner_bans", "MACs in their cooldown.", g.bans as u64);
        gauge(
            "provisioner_learned_addresses",
            "Client/address/port grants learned from DNS answers, held now.",
            g.learned as u64,
        );
        gauge(
            "provisioner_window_open",
            "1 while the activation window is open.",
            u64::from(g.window_open),
        );
        gauge(
            "provisioner_client_violations",
            "Violations reported against the current clients.",
            g.client_violations,
        );
        gauge(
            "provisioner_uptime_seconds",
            "Seconds since the daemon started.",
            g.uptime.as_secs(),
        );
        gauge(
            "provisioner_events_logged",
            "Audit events numbered so far.",
            g.journal_next.saturating_sub(1),
        );
        let _ = writeln!(
            out,
            "# HELP provisioner_violations_total Policy violations reported (refused questions, sampled blocked flows).\n# TYPE provisioner_violations_total counter\nprovisioner_violations_total {}",
            g.violations
        );
        let _ = writeln!(
            out,
            "# HELP provisioner_info The daemon's version.\n# TYPE provisioner_info gauge\nprovisioner_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        if let Some([(up_b, up_p), (down_b, down_p)]) = g.traffic {
            let _ = writeln!(
                out,
                "# HELP provisioner_client_bytes Bytes forwarded for the current clients' bindings, counted in the kernel (a binding's count goes with it).\n\
                 # TYPE provisioner_client_bytes gauge\n\
                 provisioner_client_bytes{{direction=\"up\"}} {up_b}\n\
                 provisioner_client_bytes{{direction=\"down\"}} {down_b}\n\
                 # HELP provisioner_client_packets Packets forwarded for the current clients' bindings.\n\
                 # TYPE provisioner_client_packets gauge\n\
                 provisioner_client_packets{{direction=\"up\"}} {up_p}\n\
                 provisioner_client_packets{{direction=\"down\"}} {down_p}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP provisioner_events_total Decisions by kind and reason (admitted, turned_away, evicted, dns_refused, flow_blocked...).\n# TYPE provisioner_events_total counter"
        );
        let mut events: Vec<_> = self.events.iter().collect();
        events.sort();
        for (kind, reason, n) in events {
            let _ = writeln!(
                out,
                "provisioner_events_total{{event=\"{kind}\",reason=\"{}\"}} {n}",
                label(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP provisioner_dns_replies_total DNS replies sent (answers and refusals).\n# TYPE provisioner_dns_replies_total counter\nprovisioner_dns_replies_total {}",
            self.dns_replies
        );
        let _ = writeln!(
            out,
            "# HELP provisioner_set_batch_seconds Time to apply a batch of set changes in the kernel.\n# TYPE provisioner_set_batch_seconds histogram"
        );
        for (n, le) in self.batches.iter().zip(BATCH_BUCKETS) {
            let _ = writeln!(
                out,
                "provisioner_set_batch_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "provisioner_set_batch_seconds_bucket{{le=\"+Inf\"}} {}\nprovisioner_set_batch_seconds_sum {}\nprovisioner_set_batch_seconds_count {}\n\
             # HELP provisioner_set_batches_refused_total Batches the kernel refused.\n# TYPE provisioner_set_batches_refused_total counter\nprovisioner_set_batches_refused_total {}",
            self.batch_count,
            self.batch_sum.as_secs_f64(),
            self.batch_count,
            self.batches_refused
        );
        out
    }
}

/// A label value as the text format wants it.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MacAddr;
    use crate::core::events::StationReason;

    #[test]
    fn counts_decisions_by_reason_and_renders_the_text_format() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut m = Metrics::default();
        for reason in [
            StationReason::Full,
            StationReason::Full,
            StationReason::Banned,
        ] {
            m.event(&Event::TurnedAway { mac, reason });
        }
        m.event(&Event::Admitted { mac, age: 0 });
        m.dns_replies(3);
        m.batch(Duration::from_micros(800), true);
        m.batch(Duration::from_millis(30), false);
        let text = m.render(&Gauges {
            clients: 1,
            max_clients: 8,
            window_open: true,
            traffic: Some([(100, 2), (2000, 3)]),
            ..Gauges::default()
        });
        for line in [
            "provisioner_clients 1",
            "provisioner_clients_max 8",
            "provisioner_window_open 1",
            "provisioner_events_total{event=\"turned_away\",reason=\"full\"} 2",
            "provisioner_events_total{event=\"turned_away\",reason=\"banned\"} 1",
            "provisioner_events_total{event=\"admitted\",reason=\"\"} 1",
            "provisioner_client_bytes{direction=\"down\"} 2000",
            "provisioner_dns_replies_total 3",
            "provisioner_set_batch_seconds_bucket{le=\"0.0005\"} 0",
            "provisioner_set_batch_seconds_bucket{le=\"0.001\"} 1",
            "provisioner_set_batch_seconds_bucket{le=\"0.05\"} 2",
            "provisioner_set_batch_seconds_bucket{le=\"+Inf\"} 2",
            "provisioner_set_batch_seconds_count 2",
            "provisioner_set_batches_refused_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Every sample line is `name{labels} value`, every metric has HELP and TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            let base = name.split('{').next().unwrap();
            let family = base
                .strip_suffix("_bucket")
                .or_else(|| base.strip_suffix("_sum"))
                .or_else(|| base.strip_suffix("_count"))
                .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(base);
            assert!(text.contains(&format!("# TYPE {family} ")), "{l}");
        }
    }
}
