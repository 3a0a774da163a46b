//! The audit log on the wire: an event as a flat JSON object (`seq`, `ts`, `level`,
//! `event`, then the event's own fields), the same object the daemon logs with
//! `--log-format json`. Decoded without knowing the event kinds, so a newer daemon's
//! events print in an older provisionerctl.
//!
//! ```text
//! {"seq":17,"ts":"2026-12-01T22:50:03.120Z","level":"info","event":"admitted","mac":"02:00:00:00:00:01","age":0}
//! ```

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::events::{Value, write_pair};
use crate::core::journal::Record;

/// A logged event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLine {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub ts: String,
    /// debug, info or warning.
    pub level: String,
    /// Its kind: admitted, evicted, dns_refused...
    pub event: String,
    /// The rest, in the event's order.
    pub fields: Vec<(String, Scalar)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scalar {
    Num(u64),
    Str(String),
}

/// A page of the audit log: `events --since SEQ`'s reply, and what a follower is told
/// when it read too slowly to be sent everything (`events` empty, `lost` > 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<EventLine>,
    /// The number the next event will get: `--since` it to read on from here.
    pub next: u64,
    /// Events after the asked-for number that are no longer kept (or, following, that
    /// were dropped for a reader too slow).
    pub lost: u64,
}

impl From<&Record> for EventLine {
    fn from(r: &Record) -> EventLine {
        let mut fields = Vec::new();
        r.event.fields(&mut |k, v| {
            fields.push((
                k.to_owned(),
                match v {
                    Value::Num(n) => Scalar::Num(n),
                    v => Scalar::Str(v.to_string()),
                },
            ))
        });
        EventLine {
            seq: r.seq,
            ts: r.at.to_string(),
            level: r.level().to_owned(),
            event: r.event.kind().to_owned(),
            fields,
        }
    }
}

impl EventLine {
    /// As one JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("event lines encode")
    }
}

/// For people: `#17 2026-12-01T22:50:03.120Z event=admitted mac=... age=0`, in the log's
/// `key=value` form (quoted where a value needs it).
impl fmt::Display for EventLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} event={}", self.seq, self.ts, self.event)?;
        for (k, v) in &self.fields {
            match v {
                Scalar::Num(n) => write_pair(f, k, Value::Num(*n))?,
                Scalar::Str(s) => write_pair(f, k, Value::Str(s))?,
            }
        }
        Ok(())
    }
}

impl Serialize for EventLine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4 + self.fields.len()))?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("ts", &self.ts)?;
        m.serialize_entry("level", &self.level)?;
        m.serialize_entry("event", &self.event)?;
        for (k, v) in &self.fields {
            match v {
                Scalar::Num(n) => m.serialize_entry(k, n)?,
                Scalar::Str(s) => m.serialize_entry(k, s)?,
            }
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar::Num(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for EventLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventLine, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EventLine;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<EventLine, A::Error> {
                let (mut seq, mut ts, mut level, mut event) = (None, None, None, None);
                let mut fields = Vec::new();
                while let Some(key) = m.next_key::<String>()? {
                    match key.as_str() {
                        "seq" => seq = Some(m.next_value()?),
                        "ts" => ts = Some(m.next_value()?),
                        "level" => level = Some(m.next_value()?),
                        "event" => event = Some(m.next_value()?),
                        _ => fields.push((key, m.next_value()?)),
                    }
                }
                Ok(EventLine {
                    seq: seq.ok_or_else(|| de::Error::missing_field("seq"))?,
                    ts: ts.ok_or_else(|| de::Error::missing_field("ts"))?,
                    level: level.ok_or_else(|| de::Error::missing_field("level"))?,
                    event: event.ok_or_else(|| de::Error::missing_field("event"))?,
                    fields,
                })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MacAddr;
    use crate::core::events::{DnsRefusal, Event};
    use crate::core::time::WallTime;

    #[test]
    fn an_event_is_one_flat_object_that_reads_back() {
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let r = Record::new(
            17,
            WallTime(1_796_165_403_120),
            Event::DnsRefused {
                mac,
                name: "evil \"x\"=1.example".into(),
                qtype: 16,
                reason: DnsRefusal::NotAllowed,
            },
        );
        let line = EventLine::from(&r);
        let json = line.to_json();
        assert_eq!(
            json,
            r#"{"seq":17,"ts":"2026-12-01T22:50:03.120Z","level":"warning","event":"dns_refused","mac":"02:00:00:00:00:01","name":"evil \"x\"=1.example","type":"TXT","reason":"not_allowed","threat":"violation"}"#
        );
        assert_eq!(serde_json::from_str::<EventLine>(&json).unwrap(), line);
        // For people, the client's chosen name stays one quoted value.
        assert_eq!(
            line.to_string(),
            r#"#17 2026-12-01T22:50:03.120Z event=dns_refused mac=02:00:00:00:00:01 name="evil \"x\"=1.example" type=TXT reason=not_allowed threat=violation"#
        );
    }

    #[test]
    fn the_log_line_is_the_events_display() {
        let r = Record::new(
            3,
            WallTime(0),
            Event::WindowOpened {
                secs: Some(900),
                expected: None,
            },
        );
        assert_eq!(r.event.to_string(), "event=window_opened secs=900");
        assert_eq!(
            EventLine::from(&r).to_string(),
            "#3 1970-01-01T00:00:00.000Z event=window_opened secs=900"
        );
    }
}
