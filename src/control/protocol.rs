//! The control protocol's requests and replies as types, and their one encoding: a JSON
//! object per line, each with the protocol `version`.
//!
//! ```text
//! {"version":1,"request":"status"}
//! {"version":1,"request":{"window_open":{"secs":900}}}
//! {"version":1,"window":{"open":true,"secs_left":900}}
//! {"version":1,"error":{"kind":"bad_request","message":"unknown variant `reboot`, ..."}}
//! ```
//!
//! The daemon refuses what it does not understand (unknown fields, another version) with a
//! reply saying so; a client reads the reply's kind from its type and ignores fields it
//! does not know, so replies can grow without breaking older clients.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::MacAddr;
use crate::core::oui::MacPrefix;

pub use super::audit::{EventLine, Events, Scalar};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// The longest request line the daemon reads; a longer one is refused and the connection
/// closed, so that a client cannot grow the daemon's memory.
pub const MAX_REQUEST: usize = 4096;

/// An order or question for the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// Open the activation window, for the configured duration or this many seconds (5 to
    /// 60 minutes); with `for`, for those devices only (MACs or vendor prefixes), until
    /// `count` (default 1) of them completed their setup.
    WindowOpen {
        #[serde(default)]
        secs: Option<u64>,
        #[serde(default, rename = "for", skip_serializing_if = "Vec::is_empty")]
        for_: Vec<MacPrefix>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
    WindowClose,
    /// Evict a client now, banning it for `ban_secs` if given.
    Evict {
        mac: MacAddr,
        #[serde(default)]
        ban_secs: Option<u64>,
    },
    /// Keep a MAC off for `secs` (default: the configured cooldown); a client goes at once.
    Ban {
        mac: MacAddr,
        #[serde(default)]
        secs: Option<u64>,
    },
    /// Lift a MAC's ban.
    Unban {
        mac: MacAddr,
    },
    /// Read the config file again (as SIGHUP does) and say how it went.
    Reload,
    /// The audit log: the kept events numbered after `since` (all kept without it); with
    /// `follow`, then every new event as it happens, one `event` line each, for as long as
    /// the connection stays open.
    Events {
        #[serde(default)]
        since: Option<u64>,
        #[serde(default)]
        follow: bool,
    },
    /// The allow entries, or the one named.
    AllowList {
        #[serde(default)]
        name: Option<String>,
    },
    /// Add an allow entry: written to the config file, then applied as a reload.
    AllowAdd(AllowSpec),
    /// Remove allow entries (all or none): written to the config file, then applied; open
    /// connections to what they granted are ended.
    AllowRemove {
        names: Vec<String>,
    },
    /// Every station the daemon knows, with its traffic as the kernel counted it.
    Clients,
    /// The daemon's counters and gauges in the Prometheus text format.
    Metrics,
}

/// A new allow entry, its values as the config file takes them (checked by the daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowSpec {
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    /// The vendor profile whose clients it is for; none: clients of no profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// The allow entries after `allow list`, `allow add` or `allow remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowEntries {
    pub entries: Vec<AllowInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowInfo {
    pub name: String,
    pub domains: Vec<String>,
    /// Addresses and networks, as CIDR (`11.1.0.10/32`).
    pub addresses: Vec<String>,
    pub proto: String,
    /// Ports and ranges (`443`, `8000-8100`).
    pub ports: Vec<String>,
    /// Distinct addresses learned for its domains now (by any client).
    pub learned: usize,
    /// The vendor profile whose clients it is for; none: clients of no profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// What the daemon answers: on the wire, the variant's name is the key beside `version`.
// One reply a request, moved once: boxing the status would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(Status),
    /// The window after an order to open or close it.
    Window(WindowState),
    /// A station after an order about it (evict, ban, unban).
    Station(StationState),
    /// The config file was read again and is running.
    Reloaded(Reloaded),
    /// A page of the audit log.
    Events(Events),
    /// One new event, to a follower.
    Event(EventLine),
    /// The allow entries (after a change: all of them, as now running).
    Allow(AllowEntries),
    /// `clients`: one row per station.
    Clients(Clients),
    Metrics(MetricsText),
    Error(Failure),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub window: WindowState,
    /// `None` without a radio section (a wired-only segment).
    pub radio: Option<RadioState>,
    pub clients: Vec<Client>,
    pub bans: Vec<Ban>,
    // Added later: an older daemon's reply leaves them at their defaults.
    /// `on_demand`, `always` or `schedule`.
    #[serde(default)]
    pub window_mode: String,
    /// When an opened window closes (RFC 3339, UTC).
    #[serde(default)]
    pub window_until: Option<String>,
    /// The client limit (`max_clients`); `clients` holds the count.
    #[serde(default)]
    pub max_clients: u16,
    /// Addresses learned from DNS answers (elements of `learned4`).
    #[serde(default)]
    pub learned: u64,
    #[serde(default)]
    pub rates: Rates,
    /// Seconds since the daemon started.
    #[serde(default)]
    pub uptime: u64,
    /// The daemon's version.
    #[serde(default)]
    pub version: String,
    /// The config file, and when it was last loaded (RFC 3339, UTC).
    #[serde(default)]
    pub config: String,
    #[serde(default)]
    pub config_loaded_at: String,
    #[serde(default)]
    pub quotas: Quotas,
}

/// The daily quotas (bytes both ways; `None`: none) and the network's use of its own, as
/// the kernel counted it when last read (every 2 s).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub client_daily: Option<u64>,
    pub total_daily: Option<u64>,
    pub network_used: Option<u64>,
    /// The network used up its quota: nothing but DHCP and DNS is forwarded until the reset.
    pub network_over: bool,
    /// When the quotas' day ends (RFC 3339, UTC).
    pub resets_at: Option<String>,
}

/// The configured rates; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// DNS queries a second, per client and in all.
    pub dns_qps_client: u32,
    pub dns_qps_total: u32,
    /// Bytes a second, each client's and the whole network's, up and down.
    pub client_up: Option<u64>,
    pub client_down: Option<u64>,
    pub total_up: Option<u64>,
    pub total_down: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clients {
    pub stations: Vec<StationRow>,
}

/// What the daemon holds a station as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StationKind {
    Admitted,
    /// A newcomer waiting for a spot (it must complete DHCP).
    Waiting,
    Banned,
    /// Turned away lately (the last few), and not banned.
    TurnedAway,
}

/// One station in `clients`. Traffic is what was forwarded from it (up) and to it
/// (down), counted by the kernel per binding; the router's own DHCP and DNS are not in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationRow {
    pub mac: MacAddr,
    pub state: StationKind,
    pub ip: Option<Ipv4Addr>,
    /// Admitted clients: when (RFC 3339, UTC), seconds since, seconds left of the session.
    pub admitted_at: Option<String>,
    pub age: Option<u64>,
    pub session_left: Option<u64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub packets_up: u64,
    pub packets_down: u64,
    /// Seconds its ban has left.
    pub ban_left: Option<u64>,
    /// Policy violations reported against it (refused names, blocked flows).
    #[serde(default)]
    pub violations: u64,
    /// Turned away: why (`full`, `window_closed`, `banned`, ...) and when (RFC 3339).
    pub reason: Option<String>,
    pub turned_away_at: Option<String>,
    /// The vendor profile its MAC matches (the longest prefix); none: of no profile.
    #[serde(default)]
    pub profile: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowState {
    pub open: bool,
    /// Seconds until an opened window closes; `None` when it follows its mode alone
    /// (always, a schedule, or closed).
    pub secs_left: Option<u64>,
    /// The devices it is open for (none: for everyone).
    #[serde(default, rename = "for", skip_serializing_if = "Vec::is_empty")]
    pub for_: Vec<MacPrefix>,
    /// How many of them must complete before it closes, and how many have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u32>,
}

/// Prometheus text format (0.0.4), as `/metrics` serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsText {
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The file it read.
    pub config: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationState {
    pub mac: MacAddr,
    /// Admitted now.
    pub client: bool,
    /// Seconds its ban has left, if it is banned.
    pub banned_secs: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RadioState {
    Connected,
    Disconnected,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub mac: MacAddr,
    /// The address it holds, if it has taken one.
    pub ip: Option<Ipv4Addr>,
    /// Seconds since it was admitted.
    pub age: u64,
    pub session_left: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub mac: MacAddr,
    /// Seconds until the ban lifts.
    pub left: u64,
}

/// A MAC/IP binding the kernel holds (`provisionerctl leases --json`, read without the
/// daemon, in the same encoding).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub expires_in: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Not JSON, not a request this daemon knows, or over [`MAX_REQUEST`].
    BadRequest,
    /// Another protocol version than [`VERSION`].
    Version,
    /// Understood, and refused: not a client, not banned, a duration out of range.
    Refused,
    /// The daemon is stopping and did not carry it out.
    Stopping,
    /// Too many connections are open; try again.
    Busy,
    /// A ubus call's arguments do not make a request (a malformed MAC, a string for a
    /// number, an unknown action): nothing was asked of the daemon.
    Usage,
    /// The daemon could not answer (a ubus reply over ubusd's message limit).
    Failed,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    version: u32,
    request: Request,
}

/// A reply line (also what ubus callers get, as blobmsg). Written out rather than
/// `#[serde(flatten)]`, whose buffering decoder costs 10 KB on mipsel.
pub struct ReplyLine<'a>(pub &'a Reply);

impl Serialize for ReplyLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("version", &VERSION)?;
        match self.0 {
            Reply::Status(x) => m.serialize_entry("status", x)?,
            Reply::Window(x) => m.serialize_entry("window", x)?,
            Reply::Station(x) => m.serialize_entry("station", x)?,
            Reply::Reloaded(x) => m.serialize_entry("reloaded", x)?,
            Reply::Events(x) => m.serialize_entry("events", x)?,
            Reply::Event(x) => m.serialize_entry("event", x)?,
            Reply::Allow(x) => m.serialize_entry("allow", x)?,
            Reply::Clients(x) => m.serialize_entry("clients", x)?,
            Reply::Metrics(x) => m.serialize_entry("metrics", x)?,
            Reply::Error(x) => m.serialize_entry("error", x)?,
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Reply, D::Error> {
        struct Line;
        impl<'de> serde::de::Visitor<'de> for Line {
            type Value = Reply;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a reply object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Reply, A::Error> {
                use serde::de::Error;
                let mut reply = None;
                while let Some(key) = m.next_key::<String>()? {
                    let r = match key.as_str() {
                        "status" => Reply::Status(m.next_value()?),
                        "window" => Reply::Window(m.next_value()?),
                        "station" => Reply::Station(m.next_value()?),
                        "reloaded" => Reply::Reloaded(m.next_value()?),
                        "events" => Reply::Events(m.next_value()?),
                        "event" => Reply::Event(m.next_value()?),
                        "allow" => Reply::Allow(m.next_value()?),
                        "clients" => Reply::Clients(m.next_value()?),
                        "metrics" => Reply::Metrics(m.next_value()?),
                        "error" => Reply::Error(m.next_value()?),
                        // The version, and what a newer daemon added.
                        _ => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    if reply.replace(r).is_some() {
                        return Err(A::Error::custom("more than one reply in the line"));
                    }
                }
                reply.ok_or_else(|| {
                    A::Error::custom(
                        "no status, window, station, reloaded, allow, clients, metrics, events, event or error in the reply",
                    )
                })
            }
        }
        d.deserialize_map(Line)
    }
}

/// Only the version, whatever else the line holds: to refuse another version as that,
/// not as the fields it does not know.
#[derive(Deserialize)]
struct Versioned {
    version: Option<u32>,
}

impl Request {
    pub fn encode(&self) -> String {
        to_line(&RequestLine {
            version: VERSION,
            request: self.clone(),
        })
    }

    pub fn decode(line: &str) -> Result<Request, Failure> {
        let bad = |e: serde_json::Error| Failure::new(FailureKind::BadRequest, e.to_string());
        match serde_json::from_str::<Versioned>(line).map_err(bad)? {
            Versioned { version: None } => Err(Failure::new(
                FailureKind::BadRequest,
                format!("no \"version\" (this daemon speaks version {VERSION})"),
            )),
            Versioned { version: Some(v) } if v != VERSION => Err(Failure::new(
                FailureKind::Version,
                format!("protocol version {v} is not spoken here (this daemon speaks {VERSION})"),
            )),
            _ => Ok(serde_json::from_str::<RequestLine>(line)
                .map_err(bad)?
                .request),
        }
    }
}

impl Reply {
    pub fn encode(&self) -> String {
        to_line(&ReplyLine(self))
    }

    /// Reads a reply of any version that has the fields this build knows: a newer daemon
    /// may add fields, never change these.
    pub fn decode(line: &str) -> Result<Reply, serde_json::Error> {
        serde_json::from_str(line)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

impl From<Failure> for Reply {
    fn from(f: Failure) -> Reply {
        Reply::Error(f)
    }
}

/// The leases as the JSON array `provisionerctl leases --json` prints.
pub fn encode_leases(leases: &[Lease]) -> String {
    to_line(&leases)
}

fn to_line<T: Serialize + ?Sized>(value: &T) -> String {
    // Our types hold no maps with non-string keys and no floats: encoding cannot fail.
    serde_json::to_string(value).expect("control types encode")
}

impl Serialize for MacPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacPrefix, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn requests_round_trip_in_the_documented_form() {
        let cases = [
            (Request::Status, r#"{"version":1,"request":"status"}"#),
            (
                Request::WindowOpen {
                    secs: Some(900),
                    for_: vec![],
                    count: None,
                },
                r#"{"version":1,"request":{"window_open":{"secs":900}}}"#,
            ),
            (
                Request::WindowOpen {
                    secs: None,
                    for_: vec![],
                    count: None,
                },
                r#"{"version":1,"request":{"window_open":{"secs":null}}}"#,
            ),
            (
                Request::WindowOpen {
                    secs: None,
                    for_: vec![
                        "00:11:22:33:44:55".parse().unwrap(),
                        "00:11:2".parse().unwrap(),
                    ],
                    count: Some(2),
                },
                r#"{"version":1,"request":{"window_open":{"secs":null,"for":["00:11:22:33:44:55","00:11:2"],"count":2}}}"#,
            ),
            (
                Request::Evict {
                    mac: mac("02:00:00:00:00:01"),
                    ban_secs: Some(3600),
                },
                r#"{"version":1,"request":{"evict":{"mac":"02:00:00:00:00:01","ban_secs":3600}}}"#,
            ),
            (
                Request::Ban {
                    mac: mac("02:00:00:00:00:01"),
                    secs: None,
                },
                r#"{"version":1,"request":{"ban":{"mac":"02:00:00:00:00:01","secs":null}}}"#,
            ),
            (
                Request::Unban {
                    mac: mac("02:00:00:00:00:01"),
                },
                r#"{"version":1,"request":{"unban":{"mac":"02:00:00:00:00:01"}}}"#,
            ),
            (
                Request::WindowClose,
                r#"{"version":1,"request":"window_close"}"#,
            ),
            (Request::Reload, r#"{"version":1,"request":"reload"}"#),
        ];
        for (request, line) in cases {
            assert_eq!(request.encode(), line);
            assert_eq!(Request::decode(line), Ok(request));
        }
        assert_eq!(
            Request::decode(r#"{"version":1,"request":{"window_open":{}}}"#),
            Ok(Request::WindowOpen {
                secs: None,
                for_: vec![],
                count: None,
            })
        );
    }

    #[test]
    fn bad_requests_are_refused_saying_why() {
        let refused = |line: &str| Request::decode(line).unwrap_err();
        let f = refused("status");
        assert_eq!(f.kind, FailureKind::BadRequest);
        assert!(f.message.contains("expected"), "{f}");
        let f = refused(r#"{"request":"status"}"#);
        assert!(f.message.contains("no \"version\""), "{f}");
        let f = refused(r#"{"version":2,"request":"status","new":1}"#);
        assert_eq!(f.kind, FailureKind::Version);
        assert!(f.message.contains("version 2"), "{f}");
        let f = refused(r#"{"version":1,"request":"reboot"}"#);
        assert_eq!(f.kind, FailureKind::BadRequest);
        assert!(f.message.contains("reboot"), "{f}");
        // As the README shows it.
        let f = refused(r#"{"version":1,"request":"status","force":true}"#);
        assert_eq!(
            f.message,
            "unknown field `force`, expected `version` or `request` at line 1 column 39"
        );
        let f = refused(r#"{"version":1,"request":{"window_open":{"for":["00:11:zz"]}}}"#);
        assert_eq!(f.kind, FailureKind::BadRequest);
        assert!(f.message.contains("'00:11:zz' is not a MAC prefix"), "{f}");
        let f = refused(r#"{"version":1,"request":{"window_open":{"count":-1}}}"#);
        assert_eq!(f.kind, FailureKind::BadRequest);
        let f = refused(r#"{"version":1,"request":{"window_open":{"secs":"soon"}}}"#);
        assert!(f.message.contains("invalid type"), "{f}");
        let f = refused(r#"{"version":1,"request":{"window_open":{"hours":1}}}"#);
        assert!(f.message.contains("unknown field `hours`"), "{f}");
        let f = refused(r#"{"version":1,"request":{"evict":{"mac":"02:00:00:00:01"}}}"#);
        assert!(f.message.contains("not a MAC address"), "{f}");
        let f = refused(r#"{"version":1,"request":{"unban":{}}}"#);
        assert!(f.message.contains("missing field `mac`"), "{f}");
        let f = refused(r#"{"version":1,"request":"status"} trailing"#);
        assert!(f.message.contains("trailing"), "{f}");
    }

    #[test]
    fn replies_round_trip_and_say_their_kind() {
        let status = Reply::Status(Status {
            window: WindowState {
                open: true,
                secs_left: Some(300),
                for_: Vec::new(),
                count: None,
                done: None,
            },
            radio: Some(RadioState::Connected),
            clients: vec![
                Client {
                    mac: mac("02:00:00:00:00:01"),
                    ip: Some(Ipv4Addr::new(192, 168, 250, 2)),
                    age: 12,
                    session_left: 588,
                },
                Client {
                    mac: mac("02:00:00:00:00:02"),
                    ip: None,
                    age: 1,
                    session_left: 599,
                },
            ],
            bans: vec![Ban {
                mac: mac("02:00:00:00:00:03"),
                left: 3599,
            }],
            window_mode: "on_demand".into(),
            window_until: Some("2025-03-01T12:05:00Z".into()),
            max_clients: 8,
            learned: 3,
            rates: Rates {
                dns_qps_client: 10,
                dns_qps_total: 100,
                client_up: Some(125_000),
                ..Rates::default()
            },
            uptime: 61,
            version: "0.1.0".into(),
            config: "/etc/config/provisioner".into(),
            config_loaded_at: "2025-03-01T12:00:00Z".into(),
            quotas: Quotas {
                total_daily: Some(1_000_000_000),
                network_used: Some(5),
                ..Quotas::default()
            },
        });
        let line = status.encode();
        assert_eq!(
            line,
            concat!(
                r#"{"version":1,"status":{"window":{"open":true,"secs_left":300},"#,
                r#""radio":"connected","clients":["#,
                r#"{"mac":"02:00:00:00:00:01","ip":"192.168.250.2","age":12,"session_left":588},"#,
                r#"{"mac":"02:00:00:00:00:02","ip":null,"age":1,"session_left":599}],"#,
                r#""bans":[{"mac":"02:00:00:00:00:03","left":3599}],"#,
                r#""window_mode":"on_demand","window_until":"2025-03-01T12:05:00Z","#,
                r#""max_clients":8,"learned":3,"rates":{"dns_qps_client":10,"dns_qps_total":100,"#,
                r#""client_up":125000,"client_down":null,"total_up":null,"total_down":null},"#,
                r#""uptime":61,"version":"0.1.0","config":"/etc/config/provisioner","#,
                r#""config_loaded_at":"2025-03-01T12:00:00Z","quotas":{"client_daily":null,"#,
                r#""total_daily":1000000000,"network_used":5,"network_over":false,"resets_at":null}}}"#
            )
        );
        assert_eq!(Reply::decode(&line).unwrap(), status);
        // An older daemon's status, without the fields added since: still a status.
        let old = Reply::decode(
            r#"{"version":1,"status":{"window":{"open":false,"secs_left":null},"radio":null,"clients":[],"bans":[]}}"#,
        )
        .unwrap();
        let Reply::Status(old) = old else {
            panic!("{old:?}")
        };
        assert_eq!((old.max_clients, old.version.as_str()), (0, ""));

        let clients = Reply::Clients(Clients {
            stations: vec![StationRow {
                mac: mac("02:00:00:00:00:01"),
                state: StationKind::TurnedAway,
                ip: None,
                admitted_at: None,
                age: None,
                session_left: None,
                bytes_up: 0,
                bytes_down: 0,
                packets_up: 0,
                packets_down: 0,
                ban_left: None,
                violations: 0,
                reason: Some("full".into()),
                turned_away_at: Some("2025-03-01T12:00:00Z".into()),
                profile: None,
            }],
        });
        let line = clients.encode();
        assert!(
            line.starts_with(
                r#"{"version":1,"clients":{"stations":[{"mac":"02:00:00:00:00:01","state":"turned_away","#
            ),
            "{line}"
        );
        assert_eq!(Reply::decode(&line).unwrap(), clients);
        assert_eq!(
            Request::decode(r#"{"version":1,"request":"clients"}"#),
            Ok(Request::Clients)
        );
        assert!(!status.is_error());

        let error = Reply::from(Failure::new(
            FailureKind::Stopping,
            "the daemon is \"stopping\"\n",
        ));
        let line = error.encode();
        assert_eq!(
            line,
            r#"{"version":1,"error":{"kind":"stopping","message":"the daemon is \"stopping\"\n"}}"#
        );
        assert_eq!(Reply::decode(&line).unwrap(), error);
        assert!(error.is_error());
    }

    #[test]
    fn a_client_ignores_reply_fields_it_does_not_know() {
        let r = Reply::decode(
            r#"{"version":3,"uptime":5,"window":{"open":false,"secs_left":null,"mode":"always"}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Reply::Window(WindowState {
                open: false,
                secs_left: None,
                for_: Vec::new(),
                count: None,
                done: None,
            })
        );
        assert!(Reply::decode(r#"{"version":1}"#).is_err());
        assert!(
            Reply::decode(r#"{"version":1,"window":{"open":false,"secs_left":null},"error":{"kind":"stopping","message":""}}"#)
                .unwrap_err()
                .to_string()
                .contains("more than one reply")
        );
        assert!(Reply::decode(r#"{"version":1,"status":{"window":1}}"#).is_err());
    }

    #[test]
    fn macs_are_strings_and_bad_ones_are_refused() {
        let l = Lease {
            mac: mac("aa:bb:cc:dd:ee:ff"),
            ip: Ipv4Addr::new(10, 0, 0, 9),
            expires_in: 30,
        };
        assert_eq!(
            encode_leases(std::slice::from_ref(&l)),
            r#"[{"mac":"aa:bb:cc:dd:ee:ff","ip":"10.0.0.9","expires_in":30}]"#
        );
        assert!(
            serde_json::from_str::<Lease>(r#"{"mac":"aa:bb","ip":"10.0.0.9","expires_in":1}"#)
                .unwrap_err()
                .to_string()
                .contains("not a MAC address")
        );
    }

    #[test]
    fn allow_requests_and_replies_round_trip() {
        let cases = [
            (
                Request::AllowList { name: None },
                r#"{"version":1,"request":{"allow_list":{"name":null}}}"#,
            ),
            (
                Request::AllowAdd(AllowSpec {
                    name: "fw".into(),
                    domains: vec!["fw.example.com".into()],
                    addresses: vec!["11.1.0.30".into()],
                    proto: Some("tcp".into()),
                    ports: vec!["443".into()],
                    profile: None,
                }),
                r#"{"version":1,"request":{"allow_add":{"name":"fw","domains":["fw.example.com"],"addresses":["11.1.0.30"],"proto":"tcp","ports":["443"]}}}"#,
            ),
            (
                Request::AllowRemove {
                    names: vec!["a".into(), "b".into()],
                },
                r#"{"version":1,"request":{"allow_remove":{"names":["a","b"]}}}"#,
            ),
        ];
        for (request, line) in cases {
            assert_eq!(request.encode(), line);
            assert_eq!(Request::decode(line), Ok(request));
        }
        assert!(
            Request::decode(r#"{"version":1,"request":{"allow_add":{"name":"x","port":["1"]}}}"#)
                .unwrap_err()
                .message
                .contains("unknown field `port`")
        );
        let reply = Reply::Allow(AllowEntries {
            entries: vec![AllowInfo {
                name: "fw".into(),
                domains: vec!["*.fw.example.com".into()],
                addresses: vec![],
                proto: "tcp".into(),
                ports: vec!["443".into()],
                learned: 2,
                profile: None,
            }],
        });
        let line = reply.encode();
        assert_eq!(
            line,
            r#"{"version":1,"allow":{"entries":[{"name":"fw","domains":["*.fw.example.com"],"addresses":[],"proto":"tcp","ports":["443"],"learned":2}]}}"#
        );
        assert_eq!(Reply::decode(&line).unwrap(), reply);
    }
}
