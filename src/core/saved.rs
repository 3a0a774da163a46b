//! Who was admitted when, and who is banned until when, as the run directory keeps it: the
//! kernel's sets hold the same with their timeouts and are the truth, but a table deleted
//! while the daemon was down (a firewall reload, `fw4 flush`) would otherwise take every
//! ban and session clock with it.

use std::fmt::Write;
use std::time::Duration;

use super::time::Instant;
use super::{ClientRecord, MacAddr, Snapshot};

/// The first line of a stations file this version writes.
const MAGIC: &str = "provisioner-stations 1";

/// Times are the monotonic clock's (the run directory does not outlive a boot), so a
/// wall-clock jump moves no session's end and no ban's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedStations {
    pub clients: Vec<(MacAddr, Instant)>,
    pub bans: Vec<(MacAddr, Instant)>,
}

impl SavedStations {
    /// One `client MAC ADMITTED_MS` or `ban MAC UNTIL_MS` line each, sealed.
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC}\n");
        for (mac, t) in &self.clients {
            let _ = writeln!(s, "client {mac} {}", t.as_millis());
        }
        for (mac, t) in &self.bans {
            let _ = writeln!(s, "ban {mac} {}", t.as_millis());
        }
        super::seal::seal(&mut s);
        s
    }

    /// A file [`Self::encode`] wrote, whole; anything else is `None`.
    pub fn decode(text: &str) -> Option<SavedStations> {
        let mut lines = super::seal::unseal(text)?.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut saved = SavedStations::default();
        for line in lines {
            let mut w = line.split(' ');
            let list = match w.next()? {
                "client" => &mut saved.clients,
                "ban" => &mut saved.bans,
                _ => return None,
            };
            let mac = w.next()?.parse().ok()?;
            let t = Instant::from_millis(w.next()?.parse().ok()?);
            if w.next().is_some() {
                return None;
            }
            list.push((mac, t));
        }
        Some(saved)
    }

    /// Adds to what the kernel held what only this file still knows: the bans that have
    /// not ended and the clients the kernel has no element for. What the kernel holds wins.
    pub fn fill_in(&self, kernel: &mut Snapshot, now: Instant) -> usize {
        let mut added = 0;
        for &(mac, until) in &self.bans {
            if until > now && !kernel.bans.iter().any(|(m, _)| *m == mac) {
                kernel.bans.push((mac, until.saturating_since(now)));
                added += 1;
            }
        }
        for &(mac, since) in &self.clients {
            if !kernel.clients.iter().any(|(c, _)| c.mac == mac) {
                kernel
                    .clients
                    .push((ClientRecord { mac, since }, Duration::ZERO));
                added += 1;
            }
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u8) -> MacAddr {
        format!("02:00:00:00:00:{i:02x}").parse().unwrap()
    }

    #[test]
    fn reads_back_as_written_and_a_torn_or_damaged_file_is_none() {
        let saved = SavedStations {
            clients: vec![(mac(1), Instant::from_millis(5_000))],
            bans: vec![(mac(2), Instant::from_millis(90_000))],
        };
        let text = saved.encode();
        assert_eq!(SavedStations::decode(&text), Some(saved));
        for cut in 0..text.len() {
            assert_eq!(SavedStations::decode(&text[..cut]), None, "cut at {cut}");
        }
        let flipped = text.replacen("90000", "90001", 1);
        assert_eq!(SavedStations::decode(&flipped), None);
        for body in ["client 02:00:00:00:00:01\n", "ban x 1\n", "who 1 2\n"] {
            let mut s = format!("{MAGIC}\n{body}");
            super::super::seal::seal(&mut s);
            assert_eq!(SavedStations::decode(&s), None, "{body:?}");
        }
    }

    #[test]
    fn the_kernel_wins_and_the_file_fills_in_only_what_it_lacks() {
        let now = Instant::from_millis(100_000);
        let saved = SavedStations {
            clients: vec![
                (mac(1), Instant::from_millis(1_000)),
                (mac(3), Instant::from_millis(2_000)),
            ],
            bans: vec![
                (mac(2), Instant::from_millis(160_000)),
                (mac(4), Instant::from_millis(50_000)),
                (mac(5), Instant::from_millis(200_000)),
            ],
        };
        let mut kernel = Snapshot {
            clients: vec![(
                ClientRecord {
                    mac: mac(1),
                    since: Instant::from_millis(1_500),
                },
                Duration::from_secs(60),
            )],
            bans: vec![(mac(5), Duration::from_secs(10))],
            ..Default::default()
        };
        assert_eq!(saved.fill_in(&mut kernel, now), 2);
        let since: Vec<_> = kernel
            .clients
            .iter()
            .map(|(c, _)| (c.mac, c.since))
            .collect();
        assert_eq!(
            since,
            [
                (mac(1), Instant::from_millis(1_500)),
                (mac(3), Instant::from_millis(2_000))
            ]
        );
        assert_eq!(
            kernel.bans,
            [
                (mac(5), Duration::from_secs(10)),
                (mac(2), Duration::from_secs(60))
            ],
            "a ended ban stays ended; the kernel's own time wins"
        );
    }
}
