//! Configuration: one validated [`Config`] from either UCI (`/etc/config/provisioner`, what
//! OpenWrt's `uci` reads and writes) or TOML. Both syntaxes parse into the same
//! [`document::Document`], and one schema ([`schema`]) turns that into a `Config`, so an error
//! always names the file, the line and the option.

pub mod document;
pub mod edit;
mod schema;
mod tomlfile;
pub mod uci;
pub mod value;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use ipnet::Ipv4Net;

pub use crate::core::allow::AllowEntry;
pub use crate::core::window::{ScheduleSpan, WindowMode, WindowSettings as Window};
pub use value::{DomainPattern, IfName, PortRange, Proto, Rate};

/// A config error: where it is and what is wrong with it.
/// Displays as `file:line: option 'name': message` (no line when it is about the whole file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem is the file as a whole (unreadable, empty).
    pub line: usize,
    pub option: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", uci::visible(self.file.as_bytes()))?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        // Values are quoted into messages as written: a BOM or a control byte in them must
        // show, not be printed raw into a terminal or a log line.
        if let Some(o) = &self.option {
            write!(f, ": option '{}'", uci::visible(o.as_bytes()))?;
        }
        write!(f, ": {}", uci::visible(self.message.as_bytes()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub network: Network,
    pub dhcp: Dhcp,
    pub dns: Dns,
    pub limits: Limits,
    pub window: Window,
    /// `None`: no radio under our control; a station is whoever asks for DHCP.
    pub radio: Option<Radio>,
    pub allow: Vec<AllowEntry>,
    /// `config profile` sections: vendor profiles, by MAC prefix.
    pub profiles: Vec<ProfileConfig>,
    /// `config metrics` / `option listen`: where `/metrics` is served over HTTP (never on
    /// the provisioning network); `None`: only `provisionerctl metrics`.
    pub metrics: Option<std::net::SocketAddrV4>,
    /// `config control` / `option group`: the group that may use the control socket too
    /// (mode 0660); `None`: root only (0600).
    pub control_group: Option<String>,
    /// `config threat`: the responses to violations, floods and spoofing, and the alarm.
    pub threat: Threat,
    /// `config socks` with `option enabled 1`: the SOCKS5 forwarder; `None`: off.
    pub socks: Option<Socks>,
}

/// The SOCKS5 forwarder's listener and bounds (`config socks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socks {
    /// TCP port on the router's provisioning address (1080).
    pub port: u16,
    /// Connections (handshakes included) one client may hold at once.
    pub client_connections: u16,
    /// Connections at once, from everyone.
    pub total_connections: u16,
    /// From accepting a connection to its request being answered.
    pub handshake_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Threat {
    pub policy: crate::core::threat::ThreatPolicy,
    /// Run (by `/bin/sh -c`) with each alarm event as JSON on stdin and in `PROVISIONER_*`
    /// variables, one at a time, killed after `alarm_timeout`.
    pub alarm_command: Option<String>,
    pub alarm_timeout: Duration,
}

/// A vendor profile: what the core decides by, and what this version only carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileConfig {
    pub profile: crate::core::profile::Profile,
    /// Each client's rates, replacing the network's per-client ones for this profile's
    /// clients (`limits total_rate_*` still hold for everyone together).
    pub client_rate_up: Option<Rate>,
    pub client_rate_down: Option<Rate>,
    /// Bytes per day per client of this profile: checked, not enforced yet (as
    /// `limits client_daily`).
    pub client_daily: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RadioMode {
    /// hostapd is run by the system (OpenWrt's netifd from UCI wireless); we use its
    /// control socket.
    External,
    /// We run hostapd with a config we generate.
    Managed,
}

/// The hidden, open setup SSID and the hostapd that serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Radio {
    pub mode: RadioMode,
    /// hostapd's control directory; its socket is `<ctrl_interface>/<ifname>`.
    pub ctrl_interface: std::path::PathBuf,
    /// The interface hostapd serves (the AP's; may be a port of `network.interface`).
    pub ifname: IfName,
    /// Managed only.
    pub ssid: String,
    pub driver: String,
    pub channel: Option<u16>,
    pub hw_mode: Option<String>,
    pub country: Option<String>,
    /// Extra `key=value` lines for the generated hostapd.conf.
    pub options: Vec<(String, String)>,
    /// External only: run as `<command> up` / `<command> down` when the window opens and
    /// closes (on OpenWrt: the wifi-iface's `disabled` and `wifi reload`). hostapd's own
    /// DISABLE would take down every SSID of the radio, the home network's too.
    pub ssid_command: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The provisioning interface: the AP interface, or the bridge it is a port of.
    pub interface: IfName,
    /// The only interface provisioning traffic may leave by (masqueraded).
    pub wan: IfName,
    pub subnet: Ipv4Net,
    /// The router's address on the provisioning subnet: DHCP server, DNS, gateway.
    pub router: Ipv4Addr,
    /// Destinations never reachable from the provisioning network, whatever the allow-list
    /// says: the home LAN and every private range by default.
    pub protect: Vec<Ipv4Net>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcp {
    pub lease_time: Duration,
    /// First address of the pool: `limits.max_clients` addresses for clients, and up to
    /// [`crate::core::stations::MAX_WAITING`] more (as the subnet has room) offered only to
    /// newcomers that wait for a spot.
    pub pool_start: Ipv4Addr,
    pub pool_size: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    pub upstream: Vec<SocketAddrV4>,
    /// Learned addresses live for the record's TTL clamped to [ttl_floor, ttl_cap], plus grace.
    pub ttl_floor: Duration,
    pub ttl_cap: Duration,
    pub ttl_grace: Duration,
    /// Queries per second a single client may send, and all clients together.
    pub client_qps: u32,
    pub total_qps: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_clients: u16,
    /// A client younger than this is never evicted to make room (it may be mid-setup).
    pub min_age: Duration,
    pub session: Duration,
    pub cooldown: Duration,
    /// The shortest time between two evictions to make room (a burst of newcomers, real or
    /// forged, displaces at most one client per interval).
    pub evict_interval: Duration,
    pub client_rate_up: Option<Rate>,
    pub client_rate_down: Option<Rate>,
    pub total_rate_up: Option<Rate>,
    pub total_rate_down: Option<Rate>,
    /// Bytes per day, both directions.
    pub client_daily: Option<u64>,
    pub total_daily: Option<u64>,
    /// When the day of the daily quotas begins, in minutes after local midnight.
    pub quota_reset: u16,
    /// New connections a client may open each second (twice that at once); 0: no limit.
    /// Held in the kernel, so that a SYN flood through an allow-list entry does not fill
    /// the router's conntrack table.
    pub connection_rate: u32,
}

/// What the provisioner is told: the settings it decides by, from this config.
impl From<&Config> for crate::core::settings::Settings {
    fn from(c: &Config) -> Self {
        let l = &c.limits;
        crate::core::settings::Settings {
            router: c.network.router,
            subnet: c.network.subnet,
            protect: c.network.protect.clone(),
            radio: c.radio.is_some(),
            pool_start: c.dhcp.pool_start,
            pool_size: c.dhcp.pool_size,
            lease_time: c.dhcp.lease_time,
            stations: crate::core::stations::Policy {
                max_clients: l.max_clients,
                min_age: l.min_age,
                session: l.session,
                cooldown: l.cooldown,
                evict_interval: l.evict_interval,
            },
            window: c.window.clone(),
            allow: c.allow.clone(),
            profiles: c.profiles.iter().map(|p| p.profile.clone()).collect(),
            ttl: crate::core::allow::TtlPolicy {
                floor: c.dns.ttl_floor,
                cap: c.dns.ttl_cap,
                grace: c.dns.ttl_grace,
            },
            client_qps: c.dns.client_qps,
            total_qps: c.dns.total_qps,
            threat: c.threat.policy.clone(),
        }
    }
}

impl Config {
    /// Reads and validates a config file; TOML if the name ends in `.toml`, UCI otherwise.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        // Bytes, not a String: libuci reads any bytes, and a comment that is not UTF-8 is no
        // reason to reject a file `uci` reads.
        let text = std::fs::read(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            option: None,
            message: format!("cannot read: {e}"),
        })?;
        let toml = path.extension().is_some_and(|e| e == "toml");
        Config::parse_bytes(&file, &text, toml)
    }

    /// Parses config text; `file` is only used in errors.
    pub fn parse(file: &str, text: &str, toml: bool) -> Result<Config, ConfigError> {
        Config::parse_bytes(file, text.as_bytes(), toml)
    }

    /// Parses a config file's bytes; `file` is only used in errors. UCI as libuci reads it
    /// ([`uci`]); TOML must be UTF-8.
    pub fn parse_bytes(file: &str, text: &[u8], toml: bool) -> Result<Config, ConfigError> {
        let error = |line, option, message| ConfigError {
            file: file.to_owned(),
            line,
            option,
            message,
        };
        let doc = if toml {
            let text = std::str::from_utf8(text).map_err(|e| {
                let line = text[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                error(line, None, "not UTF-8 text (TOML files must be)".to_owned())
            })?;
            tomlfile::parse(text).map_err(|(line, message)| error(line, None, message))?
        } else {
            uci::parse(text).map_err(|e| error(e.line, e.option, e.message))?
        };
        schema::build(file, &doc)
    }

    /// The resolved values the OpenWrt scripts need (defaults applied, derived values
    /// computed here once), as `name='value'` lines a shell can `eval`
    /// (`provisionerd --print-config`), each name prefixed `provisioner_` so that it
    /// cannot clobber a script's own variable. An absent radio section prints
    /// `provisioner_radio=''`.
    pub fn shell_vars(&self) -> String {
        let n = &self.network;
        let radio = self.radio.as_ref();
        let vars = [
            ("interface", n.interface.as_str().to_owned()),
            ("wan", n.wan.as_str().to_owned()),
            ("subnet", n.subnet.to_string()),
            ("prefix", n.subnet.prefix_len().to_string()),
            ("netmask", n.subnet.netmask().to_string()),
            ("router", n.router.to_string()),
            ("max_clients", self.limits.max_clients.to_string()),
            (
                "radio",
                match radio.map(|r| r.mode) {
                    None => "",
                    Some(RadioMode::External) => "external",
                    Some(RadioMode::Managed) => "managed",
                }
                .to_owned(),
            ),
            (
                "radio_ifname",
                radio.map_or(String::new(), |r| r.ifname.as_str().to_owned()),
            ),
            (
                "radio_maxassoc",
                crate::core::settings::Settings::from(self)
                    .radio_max_stations()
                    .to_string(),
            ),
            (
                "ssid_command",
                radio
                    .and_then(|r| r.ssid_command.as_ref())
                    .map_or(String::new(), |p| p.display().to_string()),
            ),
        ];
        let mut out = String::new();
        for (name, value) in vars {
            out.push_str("provisioner_");
            out.push_str(name);
            out.push_str("='");
            // In single quotes everything is literal but the quote itself: ' -> '\''.
            out.push_str(&value.replace('\'', "'\\''"));
            out.push_str("'\n");
        }
        out
    }

    /// The DHCP pool: `max_clients` addresses from `pool_start`.
    pub fn pool(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let start = u32::from(self.dhcp.pool_start);
        (0..u32::from(self.limits.max_clients)).map(move |i| Ipv4Addr::from(start + i))
    }
}
