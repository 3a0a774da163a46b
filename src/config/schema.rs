//! The schema: which sections and options exist, their defaults, and the checks across
//! options. Works on the format-neutral [`Document`], so UCI and TOML share every rule.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::document::{Document, Entry, Section};
use super::value::{self, ValueResult};
use super::*;
use crate::core::oui::MacPrefix;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Reads the options of one section, remembering which were asked for so that anything
/// left over is reported as unknown.
struct Options<'a> {
    file: &'a str,
    section: &'a Section,
    known: Vec<&'static str>,
}

impl<'a> Options<'a> {
    fn new(file: &'a str, section: &'a Section) -> Self {
        Options {
            file,
            section,
            known: Vec::new(),
        }
    }

    fn error(&self, line: usize, option: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line,
            option: Some(option.to_owned()),
            message,
        }
    }

    fn entries(&self, name: &'static str) -> impl Iterator<Item = &'a Entry> + use<'a> {
        self.section.entries.iter().filter(move |e| e.name == name)
    }

    /// A single-valued option, parsed; `None` if absent. As a list is an error, and so is
    /// twice (which neither reader produces: a later UCI option replaces the earlier one, as
    /// in libuci, and TOML rejects a repeated key).
    fn scalar<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> ValueResult<T>,
    ) -> Result<Option<(T, usize)>, ConfigError> {
        self.known.push(name);
        let mut found = self.entries(name);
        let Some(first) = found.next() else {
            return Ok(None);
        };
        if first.list {
            return Err(self.error(first.line, name, "takes one value, not a list".into()));
        }
        if let Some(again) = found.next() {
            return Err(self.error(
                again.line,
                name,
                format!("given twice (first on line {})", first.line),
            ));
        }
        parse(&first.value)
            .map(|v| Some((v, first.line)))
            .map_err(|m| self.error(first.line, name, m))
    }

    /// A list option: every `list` line (UCI) or array element (TOML); a single `option`
    /// line is accepted as a one-element list.
    fn list<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> ValueResult<T>,
    ) -> Result<Vec<(T, usize)>, ConfigError> {
        self.known.push(name);
        self.entries(name)
            .map(|e| {
                parse(&e.value)
                    .map(|v| (v, e.line))
                    .map_err(|m| self.error(e.line, name, m))
            })
            .collect()
    }

    fn or<T>(v: Option<(T, usize)>, default: T) -> T {
        v.map(|(v, _)| v).unwrap_or(default)
    }

    /// Line of an option if given, else of the section header: where a cross-option error
    /// points.
    fn line(&self, v: Option<usize>) -> usize {
        v.unwrap_or(self.section.line)
    }

    /// Every option not asked for is unknown: name it and say what is known.
    fn finish(self) -> Result<(), ConfigError> {
        if let Some(e) = self
            .section
            .entries
            .iter()
            .find(|e| !self.known.contains(&e.name.as_str()))
        {
            return Err(self.error(
                e.line,
                &e.name,
                format!(
                    "unknown option in section {} (known: {})",
                    self.section.label(),
                    self.known.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Private, shared and link-local IPv4: the default `protect` list. A provisionee's cloud is
/// on the public Internet; nothing behind these is ever its business.
pub const DEFAULT_PROTECT: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];

/// Ports (ranges counted out) an allow entry with domains may have.
const MAX_DOMAIN_PORTS: u32 = 64;

const SINGLETONS: &[&str] = &[
    "network", "dhcp", "dns", "limits", "window", "radio", "metrics", "control", "threat", "socks",
];

/// hostapd.conf keys provisionerd sets itself (the product's promises: hidden, open,
/// isolated, bounded).
const HOSTAPD_OWN: &[&str] = &[
    "interface",
    "ctrl_interface",
    "ssid",
    "ignore_broadcast_ssid",
    "ap_isolate",
    "max_num_sta",
    "driver",
    "channel",
    "hw_mode",
    "country_code",
    "wpa",
    "wpa_passphrase",
    "auth_algs",
    "macaddr_acl",
];

pub fn build(file: &str, doc: &Document) -> Result<Config, ConfigError> {
    let top_error = |line: usize, message: String| ConfigError {
        file: file.to_owned(),
        line,
        option: None,
        message,
    };
    // Each singleton at most once; unknown section types are errors.
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for s in &doc.sections {
        if s.kind == "allow" || s.kind == "profile" {
            continue;
        }
        if !SINGLETONS.contains(&s.kind.as_str()) {
            return Err(top_error(
                s.line,
                format!(
                    "unknown section type '{}' (known: {}, allow, profile)",
                    s.kind,
                    SINGLETONS.join(", ")
                ),
            ));
        }
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == s.kind) {
            return Err(top_error(
                s.line,
                format!("section '{}' given twice (first on line {first})", s.kind),
            ));
        }
        seen.push((&s.kind, s.line));
    }
    let section = |kind: &str| doc.sections.iter().find(|s| s.kind == kind);
    let empty = |kind: &str| Section::new(kind, None, 0);

    let network_section = section("network").ok_or_else(|| {
        top_error(
            0,
            "no 'network' section: the provisioning interface and the WAN must be configured"
                .into(),
        )
    })?;
    let network = network(file, network_section)?;

    let limits_section = section("limits")
        .cloned()
        .unwrap_or_else(|| empty("limits"));
    let limits = limits(file, &limits_section)?;

    let dhcp_section = section("dhcp").cloned().unwrap_or_else(|| empty("dhcp"));
    let max_clients_line = limits_section
        .entries
        .iter()
        .find(|e| e.name == "max_clients")
        .map_or(limits_section.line, |e| e.line);
    let dhcp = dhcp(file, &dhcp_section, &network, &limits, max_clients_line)?;

    let dns_section = section("dns").cloned().unwrap_or_else(|| empty("dns"));
    let dns = dns(file, &dns_section)?;

    let window_section = section("window")
        .cloned()
        .unwrap_or_else(|| empty("window"));
    let window = window(file, &window_section)?;
    let radio = section("radio")
        .map(|s| radio(file, s, &network))
        .transpose()?;

    let control_group = section("control")
        .map(|s| control(file, s))
        .transpose()?
        .flatten();
    let metrics = section("metrics")
        .map(|s| metrics(file, s, &network))
        .transpose()?
        .flatten();

    let socks = section("socks")
        .map(|s| socks(file, s))
        .transpose()?
        .flatten();

    let threat = threat(
        file,
        &section("threat")
            .cloned()
            .unwrap_or_else(|| empty("threat")),
    )?;
    let mut profiles: Vec<ProfileConfig> = Vec::new();
    // Every prefix listed, with its profile and line: one prefix in two places is an error.
    let mut prefixes: Vec<(MacPrefix, String, usize)> = Vec::new();
    for s in doc.sections.iter().filter(|s| s.kind == "profile") {
        let p = profile(file, s, &limits, &mut prefixes)?;
        if profiles.iter().any(|q| q.profile.name == p.profile.name) {
            return Err(top_error(
                s.line,
                format!("profile '{}' given twice", p.profile.name),
            ));
        }
        profiles.push(p);
    }

    let mut allow = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in doc
        .sections
        .iter()
        .filter(|s| s.kind == "allow")
        .enumerate()
    {
        let entry = allow_entry(file, s, i, &network, &profiles)?;
        if !names.insert(entry.name.clone()) {
            return Err(top_error(
                s.line,
                format!("allow '{}' given twice", entry.name),
            ));
        }
        allow.push(entry);
    }
    if dns.upstream.is_empty() {
        if let Some((s, e)) = doc
            .sections
            .iter()
            .filter(|s| s.kind == "allow")
            .find_map(|s| {
                s.entries
                    .iter()
                    .find(|e| e.name == "domain")
                    .map(|e| (s, e))
            })
        {
            return Err(ConfigError {
                file: file.to_owned(),
                line: e.line,
                option: Some("domain".into()),
                message: format!(
                    "{} names domains, but section dns has no 'upstream' resolver to ask",
                    s.label()
                ),
            });
        }
    }
    Ok(Config {
        network,
        dhcp,
        dns,
        limits,
        window,
        radio,
        allow,
        profiles,
        metrics,
        control_group,
        threat,
        socks,
    })
}

/// `config socks`: the SOCKS5 forwarder, off unless `enabled`.
fn socks(file: &str, s: &Section) -> Result<Option<super::Socks>, ConfigError> {
    let mut o = Options::new(file, s);
    let enabled = o.scalar("enabled", value::boolean)?;
    let port = o.scalar("port", |v| value::unsigned(v, 1, 65535))?;
    let client = o.scalar("client_connections", |v| value::unsigned(v, 1, 64))?;
    let total = o.scalar("total_connections", |v| value::unsigned(v, 1, 1024))?;
    let timeout = o.scalar("handshake_timeout", |v| {
        value::duration_in(v, SECS(1), SECS(60))
    })?;
    o.finish()?;
    let o = Options::new(file, s);
    let port_line = o.line(port.as_ref().map(|v| v.1));
    let socks = super::Socks {
        port: Options::or(port, 1080) as u16,
        client_connections: Options::or(client, 4) as u16,
        total_connections: Options::or(total, 32) as u16,
        handshake_timeout: Options::or(timeout, SECS(10)),
    };
    // The router's own services on the provisioning address.
    if [53, 67].contains(&socks.port) {
        return Err(o.error(
            port_line,
            "port",
            format!("{} is the router's DNS or DHCP port", socks.port),
        ));
    }
    if socks.client_connections > socks.total_connections {
        return Err(o.error(
            s.line,
            "total_connections",
            "is lower than client_connections".into(),
        ));
    }
    let enabled_line = o.line(enabled.as_ref().map(|v| v.1));
    let enabled = Options::or(enabled, false);
    if enabled && !cfg!(feature = "socks") {
        return Err(o.error(
            enabled_line,
            "enabled",
            "this build has no SOCKS forwarder (built without the cargo feature 'socks')".into(),
        ));
    }
    Ok(enabled.then_some(socks))
}

/// `config threat`: what each grade costs a client, the counts that make abuse, the bans,
/// and the operator's alarm hook.
fn threat(file: &str, s: &Section) -> Result<super::Threat, ConfigError> {
    use crate::core::threat::{Response, ThreatPolicy};
    let mut o = Options::new(file, s);
    let response = |v: &str| {
        Response::parse(v)
            .ok_or_else(|| format!("'{v}' is not a response (log, report, ban, suspend)"))
    };
    let d = ThreatPolicy::default();
    let violation = o.scalar("violation", response)?;
    let abuse = o.scalar("abuse", response)?;
    let spoofing = o.scalar("spoofing", response)?;
    let violations = o.scalar("violations", |v| value::unsigned(v, 1, 1000))?;
    let window = o.scalar("window", |v| value::duration_in(v, SECS(1), SECS(86400)))?;
    let flow_flood = o.scalar("flow_flood", |v| value::unsigned(v, 1, 100_000))?;
    let dns_flood = o.scalar("dns_flood", |v| value::unsigned(v, 1, 100_000))?;
    let dhcp_flood = o.scalar("dhcp_flood", |v| value::unsigned(v, 4, 10_000))?;
    let ban = o.scalar("ban", |v| {
        value::duration_in(v, SECS(1), crate::core::stations::MAX_BAN)
    })?;
    let suspend = o.scalar("suspend", |v| {
        value::duration_in(v, SECS(1), crate::core::stations::MAX_BAN)
    })?;
    let alarm_command = o.scalar("alarm_command", |v| {
        if v.trim().is_empty() {
            Err("is empty (leave it out for no alarm command)".to_owned())
        } else if v.bytes().any(|b| b == 0 || b == b'\n') {
            Err("holds a newline or NUL".to_owned())
        } else {
            Ok(v.to_owned())
        }
    })?;
    let alarm_timeout = o.scalar("alarm_timeout", |v| {
        value::duration_in(v, SECS(1), SECS(600))
    })?;
    o.finish()?;
    Ok(super::Threat {
        policy: ThreatPolicy {
            violation: Options::or(violation, d.violation),
            abuse: Options::or(abuse, d.abuse),
            spoofing: Options::or(spoofing, d.spoofing),
            violations: Options::or(violations, u64::from(d.violations)) as u32,
            window: Options::or(window, d.window),
            flow_flood: Options::or(flow_flood, u64::from(d.flow_flood)) as u32,
            dns_flood: Options::or(dns_flood, u64::from(d.dns_flood)) as u32,
            dhcp_flood: Options::or(dhcp_flood, u64::from(d.dhcp_flood)) as u32,
            ban: Options::or(ban, d.ban),
            suspend: Options::or(suspend, d.suspend),
        },
        alarm_command: alarm_command.map(|v| v.0),
        alarm_timeout: Options::or(alarm_timeout, SECS(10)),
    })
}

/// A `config profile 'NAME'` section: the vendor prefixes of its devices and their limits.
fn profile(
    file: &str,
    s: &Section,
    limits: &Limits,
    prefixes: &mut Vec<(MacPrefix, String, usize)>,
) -> Result<ProfileConfig, ConfigError> {
    let mut o = Options::new(file, s);
    let ouis = o.list("oui", |v| {
        let p: MacPrefix = v.parse().map_err(|e: crate::core::oui::BadPrefix| e.to_string())?;
        if p.bits() < 24 {
            return Err(format!(
                "'{v}' is shorter than a vendor's prefix (an OUI has 6 hex digits, '00:11:22')"
            ));
        }
        let mac = crate::core::profile::mac_of(p.range().0);
        if !p.is_exact() && crate::core::oui::is_locally_administered(mac) {
            return Err(format!(
                "'{v}' is a locally administered (randomised) prefix: no vendor's, it matches no device (only a whole MAC may be one)"
            ));
        }
        Ok(p)
    })?;
    let session = o.scalar("session", |v| value::duration_in(v, SECS(10), SECS(86400)))?;
    let max_clients = o.scalar("max_clients", |v| value::unsigned(v, 1, 1024))?;
    let client_rate_up = o.scalar("client_rate_up", value::rate)?;
    let client_rate_down = o.scalar("client_rate_down", value::rate)?;
    let client_daily = o.scalar("client_daily", value::bytes)?;
    o.finish()?;
    let o = Options::new(file, s);
    for (rate, total, name) in [
        (&client_rate_up, limits.total_rate_up, "client_rate_up"),
        (
            &client_rate_down,
            limits.total_rate_down,
            "client_rate_down",
        ),
    ] {
        if let (Some((r, line)), Some(t)) = (rate, total) {
            if t < *r {
                return Err(o.error(
                    *line,
                    name,
                    "is higher than the network's total rate".into(),
                ));
            }
        }
    }
    let Some(name) = s.name.clone() else {
        return Err(ConfigError {
            file: file.to_owned(),
            line: s.line,
            option: None,
            message: "a profile needs a name (config profile 'NAME'): allow entries name it".into(),
        });
    };
    if ouis.is_empty() {
        return Err(ConfigError {
            file: file.to_owned(),
            line: s.line,
            option: None,
            message: format!(
                "{} matches no device: give its vendor prefixes ('list oui')",
                s.label()
            ),
        });
    }
    for (p, line) in &ouis {
        if let Some((_, other, first)) = prefixes.iter().find(|(q, ..)| q == p) {
            return Err(o.error(
                *line,
                "oui",
                format!("{p} is already profile '{other}''s (line {first}): a prefix belongs to one profile"),
            ));
        }
        prefixes.push((*p, name.clone(), *line));
    }
    if let Some((max, line)) = max_clients {
        if max > u64::from(limits.max_clients) {
            return Err(o.error(
                line,
                "max_clients",
                format!(
                    "{max} is more than the network's max_clients ({})",
                    limits.max_clients
                ),
            ));
        }
    }
    if let Some((d, line)) = session {
        if limits.min_age >= d {
            return Err(o.error(
                line,
                "session",
                format!(
                    "{} must be longer than limits min_age ({})",
                    value::show_duration(d),
                    value::show_duration(limits.min_age)
                ),
            ));
        }
    }
    Ok(ProfileConfig {
        profile: crate::core::profile::Profile {
            name,
            ouis: ouis.into_iter().map(|(p, _)| p).collect(),
            session: session.map(|v| v.0),
            max_clients: max_clients.map(|v| v.0 as u16),
        },
        client_rate_up: client_rate_up.map(|v| v.0),
        client_rate_down: client_rate_down.map(|v| v.0),
        client_daily: client_daily.map(|v| v.0),
    })
}

/// The control socket's group: a name as groupadd takes it (whether it exists is the
/// system's, checked when the socket is made).
fn control(file: &str, s: &Section) -> Result<Option<String>, ConfigError> {
    let mut o = Options::new(file, s);
    let group = o.scalar("group", |v| {
        let ok = (1..=32).contains(&v.len())
            && v.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(v.to_owned())
        } else {
            Err(format!(
                "'{v}' is not a group name (a-z, 0-9, _ and -, up to 32)"
            ))
        }
    })?;
    o.finish()?;
    Ok(group.map(|(g, _)| g))
}

/// The metrics listener: an address of the router's own, outside the provisioning
/// network (and not every address at once, which would include it).
fn metrics(file: &str, s: &Section, net: &Network) -> Result<Option<SocketAddrV4>, ConfigError> {
    let mut o = Options::new(file, s);
    let listen = o.scalar("listen", |v| {
        let a: SocketAddrV4 = v
            .parse()
            .map_err(|_| format!("'{v}' is not an IPv4 address and port (192.168.1.1:9100)"))?;
        if a.ip().is_unspecified() {
            Err(format!(
                "'{v}' would listen on every address, the provisioning network's too: give the router's LAN address"
            ))
        } else if net.subnet.contains(a.ip()) {
            Err(format!(
                "'{v}' is on the provisioning network ({}): give the router's LAN address",
                net.subnet
            ))
        } else if a.port() == 0 {
            Err(format!("'{v}' has no port"))
        } else {
            Ok(a)
        }
    })?;
    o.finish()?;
    Ok(listen.map(|(a, _)| a))
}

fn radio(file: &str, s: &Section, net: &Network) -> Result<Radio, ConfigError> {
    let mut o = Options::new(file, s);
    let mode = o.scalar("hostapd", |v| match v {
        "external" => Ok(RadioMode::External),
        "managed" => Ok(RadioMode::Managed),
        _ => Err(format!("'{v}' is not a hostapd mode (external: run by the system, managed: run by provisionerd)")),
    })?;
    let ctrl = o.scalar("ctrl_interface", |v| {
        if v.starts_with('/') && !v.contains('\n') {
            Ok(std::path::PathBuf::from(v))
        } else {
            Err(format!("'{v}' is not an absolute directory path"))
        }
    })?;
    let ifname = o.scalar("ifname", value::ifname)?;
    let ssid = o.scalar("ssid", |v| {
        if (1..=32).contains(&v.len()) && v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            Ok(v.to_owned())
        } else {
            Err(format!(
                "'{v}' is not an SSID (1-32 printable ASCII characters)"
            ))
        }
    })?;
    let word = |what: &'static str| {
        move |v: &str| {
            if !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                Ok(v.to_owned())
            } else {
                Err(format!("'{v}' is not a {what}"))
            }
        }
    };
    let driver = o.scalar("driver", word("driver name"))?;
    let channel = o.scalar("channel", |v| value::unsigned(v, 1, 233).map(|c| c as u16))?;
    let hw_mode = o.scalar("hw_mode", word("hardware mode"))?;
    let country = o.scalar("country", |v| {
        if v.len() == 2 && v.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(v.to_owned())
        } else {
            Err(format!("'{v}' is not a country code (two capital letters)"))
        }
    })?;
    let ssid_command = o.scalar("ssid_command", |v| {
        if v.starts_with('/') && !v.contains(['\n', '\0']) {
            Ok(std::path::PathBuf::from(v))
        } else {
            Err(format!("'{v}' is not an absolute path to a program"))
        }
    })?;
    let options = o.list("hostapd_option", |v| {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| format!("'{v}' is not key=value"))?;
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("'{k}' is not a hostapd.conf key"));
        }
        if HOSTAPD_OWN.contains(&k) {
            return Err(format!(
                "'{k}' is set by provisionerd (hidden, open, isolated, bounded)"
            ));
        }
        if val.contains(['\n', '\r']) {
            return Err("a value must be one line".into());
        }
        Ok((k.to_owned(), val.to_owned()))
    })?;
    o.finish()?;
    let o = Options::new(file, s);
    let Some((mode, _)) = mode else {
        return Err(o.error(
            s.line,
            "hostapd",
            "is required in section radio (external or managed)".into(),
        ));
    };
    if let (RadioMode::Managed, Some((_, line))) = (mode, &ssid_command) {
        return Err(o.error(
            *line,
            "ssid_command",
            "only applies with hostapd 'external' (a managed hostapd is ours to enable and disable)".into(),
        ));
    }
    if mode == RadioMode::External {
        for (name, line) in [
            ("ssid", ssid.as_ref().map(|v| v.1)),
            ("driver", driver.as_ref().map(|v| v.1)),
            ("channel", channel.as_ref().map(|v| v.1)),
            ("hw_mode", hw_mode.as_ref().map(|v| v.1)),
            ("country", country.as_ref().map(|v| v.1)),
            ("hostapd_option", options.first().map(|v| v.1)),
        ] {
            if let Some(line) = line {
                return Err(o.error(
                    line,
                    name,
                    "only applies with hostapd 'managed' (an external hostapd has its own config)"
                        .into(),
                ));
            }
        }
    }
    Ok(Radio {
        mode,
        ctrl_interface: Options::or(ctrl, "/var/run/hostapd".into()),
        ifname: Options::or(ifname, net.interface.clone()),
        ssid: Options::or(ssid, "setup".into()),
        driver: Options::or(driver, "nl80211".into()),
        channel: channel.map(|v| v.0),
        hw_mode: hw_mode.map(|v| v.0),
        country: country.map(|v| v.0),
        options: options.into_iter().map(|(kv, _)| kv).collect(),
        ssid_command: ssid_command.map(|(p, _)| p),
    })
}

fn network(file: &str, s: &Section) -> Result<Network, ConfigError> {
    let mut o = Options::new(file, s);
    let interface = o.scalar("interface", value::ifname)?;
    let wan = o.scalar("wan", value::ifname)?;
    let subnet = o.scalar("subnet", value::ipv4_net)?;
    let router = o.scalar("router", value::ipv4)?;
    let protect = o.list("protect", value::ipv4_net)?;
    o.finish()?;
    let o = Options::new(file, s);

    let Some((interface, if_line)) = interface else {
        return Err(o.error(
            s.line,
            "interface",
            "is required (the provisioning interface, e.g. 'br-provision')".into(),
        ));
    };
    let Some((wan, _)) = wan else {
        return Err(o.error(
            s.line,
            "wan",
            "is required (the WAN device provisioning traffic leaves by, e.g. 'eth1')".into(),
        ));
    };
    if wan == interface {
        return Err(o.error(
            if_line,
            "interface",
            format!("'{interface}' is also the WAN; they must differ"),
        ));
    }
    let (subnet, subnet_line) =
        subnet.unwrap_or_else(|| ("192.168.250.0/24".parse().expect("valid"), s.line));
    if !(16..=30).contains(&subnet.prefix_len()) {
        return Err(o.error(
            subnet_line,
            "subnet",
            format!("{subnet}: the prefix must be /16 to /30"),
        ));
    }
    let router_line = o.line(router.as_ref().map(|r| r.1));
    let router = router.map(|r| r.0).unwrap_or_else(|| first_host(subnet));
    if !is_host_in(subnet, router) {
        return Err(o.error(
            router_line,
            "router",
            format!("{router} is not a host address in the subnet {subnet}"),
        ));
    }
    let protect = if protect.is_empty() {
        DEFAULT_PROTECT
            .iter()
            .map(|n| n.parse().expect("valid"))
            .collect()
    } else {
        protect.into_iter().map(|(n, _)| n).collect()
    };
    Ok(Network {
        interface,
        wan,
        subnet,
        router,
        protect,
    })
}

fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

fn is_host_in(net: Ipv4Net, a: Ipv4Addr) -> bool {
    net.contains(&a) && a != net.network() && a != net.broadcast()
}

fn limits(file: &str, s: &Section) -> Result<Limits, ConfigError> {
    let mut o = Options::new(file, s);
    let max_clients = o.scalar("max_clients", |v| value::unsigned(v, 1, 1024))?;
    let min_age = o.scalar("min_age", value::duration)?;
    let session = o.scalar("session", |v| value::duration_in(v, SECS(10), SECS(86400)))?;
    let cooldown = o.scalar("cooldown", |v| {
        value::duration_in(v, SECS(0), SECS(7 * 86400))
    })?;
    let evict_interval = o.scalar("evict_interval", |v| {
        value::duration_in(v, SECS(0), SECS(3600))
    })?;
    let client_rate_up = o.scalar("client_rate_up", value::rate)?;
    let client_rate_down = o.scalar("client_rate_down", value::rate)?;
    let total_rate_up = o.scalar("total_rate_up", value::rate)?;
    let total_rate_down = o.scalar("total_rate_down", value::rate)?;
    let client_daily = o.scalar("client_daily", value::bytes)?;
    let total_daily = o.scalar("total_daily", value::bytes)?;
    let quota_reset = o.scalar("quota_reset", clock_time)?;
    let connection_rate = o.scalar("connection_rate", |v| value::unsigned(v, 0, 10_000))?;
    o.finish()?;
    let o = Options::new(file, s);

    let min_age_line = o.line(min_age.as_ref().map(|v| v.1));
    let limits = Limits {
        max_clients: Options::or(max_clients, 8) as u16,
        min_age: Options::or(min_age, SECS(120)),
        session: Options::or(session, SECS(900)),
        cooldown: Options::or(cooldown, SECS(300)),
        evict_interval: Options::or(evict_interval, SECS(10)),
        client_rate_up: client_rate_up.map(|v| v.0),
        client_rate_down: client_rate_down.map(|v| v.0),
        total_rate_up: total_rate_up.map(|v| v.0),
        total_rate_down: total_rate_down.map(|v| v.0),
        client_daily: client_daily.map(|v| v.0),
        total_daily: total_daily.map(|v| v.0),
        quota_reset: Options::or(quota_reset, 0),
        connection_rate: Options::or(connection_rate, 20) as u32,
    };
    if limits.min_age >= limits.session {
        return Err(o.error(
            min_age_line,
            "min_age",
            format!(
                "{} must be shorter than the session limit ({})",
                value::show_duration(limits.min_age),
                value::show_duration(limits.session)
            ),
        ));
    }
    for (client, total, name) in [
        (limits.client_rate_up, limits.total_rate_up, "total_rate_up"),
        (
            limits.client_rate_down,
            limits.total_rate_down,
            "total_rate_down",
        ),
    ] {
        if let (Some(c), Some(t)) = (client, total) {
            if t < c {
                return Err(o.error(s.line, name, "is lower than the per-client rate".into()));
            }
        }
    }
    Ok(limits)
}

fn dhcp(
    file: &str,
    s: &Section,
    net: &Network,
    limits: &Limits,
    max_clients_line: usize,
) -> Result<Dhcp, ConfigError> {
    let mut o = Options::new(file, s);
    let lease_time = o.scalar("lease_time", |v| {
        value::duration_in(v, SECS(10), SECS(86400))
    })?;
    let pool_start = o.scalar("pool_start", value::ipv4)?;
    o.finish()?;
    let o = Options::new(file, s);

    // A pool that does not fit is the fault of pool_start if given, else of max_clients.
    let (line, option) = match &pool_start {
        Some((_, line)) => (*line, "pool_start"),
        None => (max_clients_line, "max_clients"),
    };
    // Default: right after the router when it is the first host, else the first host.
    let pool_start = pool_start.map(|p| p.0).unwrap_or_else(|| {
        let first = first_host(net.subnet);
        if first == net.router {
            Ipv4Addr::from(u32::from(first) + 1)
        } else {
            first
        }
    });
    let first = u32::from(pool_start);
    let last = first.saturating_add(u32::from(limits.max_clients) - 1);
    let range = format!("{pool_start}-{}", Ipv4Addr::from(last));
    if !is_host_in(net.subnet, pool_start) || !is_host_in(net.subnet, Ipv4Addr::from(last)) {
        return Err(o.error(
            line,
            option,
            format!(
                "the pool {range} ({} addresses, one per client of limits.max_clients) does not fit in the subnet {}",
                limits.max_clients, net.subnet
            ),
        ));
    }
    let router = u32::from(net.router);
    if (first..=last).contains(&router) {
        return Err(o.error(
            line,
            "pool_start",
            format!(
                "the pool {range} contains the router's address {}",
                net.router
            ),
        ));
    }
    // The addresses for waiting newcomers follow, as far as the subnet has room.
    let spare = (last + 1..)
        .take_while(|&a| a != router && is_host_in(net.subnet, Ipv4Addr::from(a)))
        .take(crate::core::stations::MAX_WAITING)
        .count() as u16;
    Ok(Dhcp {
        lease_time: Options::or(lease_time, SECS(300)),
        pool_start,
        pool_size: limits.max_clients + spare,
    })
}

fn dns(file: &str, s: &Section) -> Result<Dns, ConfigError> {
    let mut o = Options::new(file, s);
    let upstream = o.list("upstream", |v| value::ipv4_socket(v, 53))?;
    let ttl_floor = o.scalar("ttl_floor", value::duration)?;
    let ttl_cap = o.scalar("ttl_cap", |v| {
        value::duration_in(v, SECS(1), SECS(7 * 86400))
    })?;
    let ttl_grace = o.scalar("ttl_grace", |v| value::duration_in(v, SECS(0), SECS(3600)))?;
    let client_qps = o.scalar("client_qps", |v| value::unsigned(v, 1, 10_000))?;
    let total_qps = o.scalar("total_qps", |v| value::unsigned(v, 1, 1_000_000))?;
    o.finish()?;
    let o = Options::new(file, s);

    let floor_line = o.line(ttl_floor.as_ref().map(|v| v.1));
    let qps_line = o.line(total_qps.as_ref().map(|v| v.1));
    let dns = Dns {
        upstream: upstream.into_iter().map(|(u, _)| u).collect(),
        ttl_floor: Options::or(ttl_floor, SECS(60)),
        ttl_cap: Options::or(ttl_cap, SECS(3600)),
        ttl_grace: Options::or(ttl_grace, SECS(120)),
        client_qps: Options::or(client_qps, 20) as u32,
        total_qps: Options::or(total_qps, 500) as u32,
    };
    if dns.ttl_floor > dns.ttl_cap {
        return Err(o.error(floor_line, "ttl_floor", "is above ttl_cap".into()));
    }
    if dns.total_qps < dns.client_qps {
        return Err(o.error(qps_line, "total_qps", "is lower than client_qps".into()));
    }
    Ok(dns)
}

fn window(file: &str, s: &Section) -> Result<Window, ConfigError> {
    let mut o = Options::new(file, s);
    let mode = o.scalar("mode", |v| match v {
        "always" => Ok(WindowMode::Always),
        "on_demand" => Ok(WindowMode::OnDemand),
        "schedule" => Ok(WindowMode::Schedule),
        _ => Err(format!("'{v}' is not a mode (always, on_demand, schedule)")),
    })?;
    let duration = o.scalar("duration", |v| value::duration_in(v, SECS(300), SECS(3600)))?;
    let schedule = o.list("schedule", schedule_span)?;
    o.finish()?;
    let o = Options::new(file, s);

    let mode_line = o.line(mode.as_ref().map(|m| m.1));
    let window = Window {
        mode: Options::or(mode, WindowMode::OnDemand),
        duration: Options::or(duration, SECS(900)),
        schedule: schedule.iter().map(|(s, _)| *s).collect(),
    };
    match (window.mode, window.schedule.is_empty()) {
        (WindowMode::Schedule, true) => Err(o.error(
            mode_line,
            "schedule",
            "mode 'schedule' needs at least one 'schedule' entry (e.g. 'Mon-Fri 08:00-20:00')"
                .into(),
        )),
        (WindowMode::Always | WindowMode::OnDemand, false) => Err(o.error(
            schedule[0].1,
            "schedule",
            "is only used with mode 'schedule'".into(),
        )),
        _ => Ok(window),
    }
}

/// `HH:MM`, local time: minutes after midnight.
fn clock_time(v: &str) -> ValueResult<u16> {
    let bad = || format!("'{v}' is not a time of day (HH:MM, e.g. '04:00')");
    let (h, m) = v.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || v.trim().len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `Mon-Fri 08:00-20:00`, `Sat,Sun 10:00-12:00`, `daily 22:00-02:00`.
fn schedule_span(v: &str) -> ValueResult<ScheduleSpan> {
    let bad =
        || format!("'{v}' is not a schedule (e.g. 'Mon-Fri 08:00-20:00', 'daily 09:00-17:30')");
    let (days, times) = v.trim().split_once(' ').ok_or_else(bad)?;
    let day = |d: &str| {
        DAYS.iter()
            .position(|x| x.eq_ignore_ascii_case(d))
            .ok_or_else(bad)
    };
    let mut mask = 0u8;
    if days.eq_ignore_ascii_case("daily") {
        mask = 0x7f;
    } else {
        for part in days.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut d = a;
                    loop {
                        mask |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => mask |= 1 << day(part)?,
            }
        }
    }
    let clock = |t: &str| -> ValueResult<u16> {
        let (h, m) = t.split_once(':').ok_or_else(bad)?;
        let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 24 || m > 59 || (h == 24 && m != 0) || t.len() != 5 {
            return Err(bad());
        }
        Ok(h * 60 + m)
    };
    let (start, end) = times.trim().split_once('-').ok_or_else(bad)?;
    let (start, end) = (clock(start)?, clock(end)?);
    if start == end {
        return Err(format!("'{v}': the span is empty"));
    }
    Ok(ScheduleSpan {
        days: mask,
        start,
        end,
    })
}

fn allow_entry(
    file: &str,
    s: &Section,
    index: usize,
    net: &Network,
    profiles: &[ProfileConfig],
) -> Result<AllowEntry, ConfigError> {
    let mut o = Options::new(file, s);
    let domains = o.list("domain", value::domain_pattern)?;
    let nets = o.list("address", value::ipv4_net)?;
    let proto = o.scalar("proto", value::proto)?;
    let ports = o.list("port", value::port_range)?;
    let profile = o.scalar("profile", |v| Ok(v.to_owned()))?;
    o.finish()?;
    let o = Options::new(file, s);
    if let Some((p, line)) = &profile {
        if !profiles.iter().any(|q| q.profile.name == *p) {
            let known: Vec<&str> = profiles.iter().map(|q| q.profile.name.as_str()).collect();
            return Err(o.error(
                *line,
                "profile",
                if known.is_empty() {
                    format!("no profile '{p}' (there are no 'config profile' sections)")
                } else {
                    format!("no profile '{p}' (there are: {})", known.join(", "))
                },
            ));
        }
    }

    if domains.is_empty() && nets.is_empty() {
        return Err(ConfigError {
            file: file.to_owned(),
            line: s.line,
            option: None,
            message: format!(
                "{} allows nothing: give a 'domain' or an 'address'",
                s.label()
            ),
        });
    }
    // Learned addresses are one set element per port: keep a name's cost bounded.
    let port_count: u32 = ports
        .iter()
        .map(|(p, _)| u32::from(p.last - p.first) + 1)
        .sum();
    if !domains.is_empty() && port_count > MAX_DOMAIN_PORTS {
        let line = ports.last().map_or(s.line, |p| p.1);
        return Err(o.error(
            line,
            "port",
            format!(
                "{port_count} ports with 'domain' entries; at most {MAX_DOMAIN_PORTS} (each is one element per learned address)"
            ),
        ));
    }
    for (n, line) in &nets {
        if let Some(p) = net.protect.iter().find(|p| p.contains(n) || n.contains(*p)) {
            return Err(o.error(
                *line,
                "address",
                format!("{n} overlaps the protected network {p}; it can never be reached from the provisioning network"),
            ));
        }
        if net.subnet.contains(n) || n.contains(&net.subnet) {
            return Err(o.error(
                *line,
                "address",
                format!("{n} overlaps the provisioning subnet {}", net.subnet),
            ));
        }
    }
    Ok(AllowEntry {
        // Anonymous UCI sections are named the way `uci show` names them.
        name: s.name.clone().unwrap_or_else(|| format!("@allow[{index}]")),
        domains: domains.into_iter().map(|(d, _)| d).collect(),
        nets: nets.into_iter().map(|(n, _)| n).collect(),
        proto: Options::or(proto, Proto::Tcp),
        profile: profile.map(|(p, _)| p),
        ports: {
            let ports: Vec<_> = ports.into_iter().map(|(p, _)| p).collect();
            if ports.is_empty() {
                vec![PortRange {
                    first: 443,
                    last: 443,
                }]
            } else {
                ports
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
config network 'network'
\toption interface 'prov0'
\toption wan 'wan0'
\toption subnet '192.168.250.0/24'
\tlist protect '192.168.1.0/24'

config limits 'limits'
\toption max_clients '4'

config allow 'acme'
\tlist address '11.1.0.10'
\tlist port '443'
\tlist port '8883'

config allow
\tlist address '11.1.0.0/24'
\toption proto 'udp'
\tlist port '123'
";

    fn uci(text: &str) -> Result<Config, ConfigError> {
        Config::parse("/etc/config/provisioner", text, false)
    }

    #[test]
    fn good_config_with_defaults() {
        let c = uci(GOOD).unwrap();
        assert_eq!(c.network.interface.as_str(), "prov0");
        assert_eq!(c.network.router, Ipv4Addr::new(192, 168, 250, 1));
        assert_eq!(c.dhcp.pool_start, Ipv4Addr::new(192, 168, 250, 2));
        assert_eq!(c.pool().count(), 4);
        assert_eq!(c.dhcp.lease_time, SECS(300));
        assert_eq!(c.limits.session, SECS(900));
        assert_eq!(c.window.mode, WindowMode::OnDemand);
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.allow[0].ports.len(), 2);
        assert_eq!(c.allow[1].name, "@allow[1]");
        assert_eq!(c.allow[1].proto, Proto::Udp);
    }

    #[test]
    fn default_protect_is_every_private_range() {
        let c = uci("config network\n option interface p\n option wan w\n").unwrap();
        assert_eq!(c.network.protect.len(), DEFAULT_PROTECT.len());
        assert!(c.allow.is_empty());
    }

    /// Each bad input names its line and option.
    #[test]
    #[cfg(feature = "socks")]
    fn socks_is_off_unless_enabled_and_has_defaults() {
        let base = "config network\n option interface prov0\n option wan wan0\n";
        assert_eq!(uci(base).unwrap().socks, None);
        assert_eq!(
            uci(&format!("{base}config socks\n option port 1081\n"))
                .unwrap()
                .socks,
            None
        );
        let c = uci(&format!("{base}config socks\n option enabled 1\n")).unwrap();
        assert_eq!(
            c.socks,
            Some(crate::config::Socks {
                port: 1080,
                client_connections: 4,
                total_connections: 32,
                handshake_timeout: Duration::from_secs(10),
            })
        );
        let with = |extra: &str| uci(&format!("{base}config socks\n option enabled 1\n{extra}"));
        let e = with(" option port 53\n").unwrap_err();
        assert_eq!((e.line, e.option.as_deref()), (6, Some("port")), "{e}");
        let e = with(" option client_connections 8\n option total_connections 4\n").unwrap_err();
        assert_eq!(e.option.as_deref(), Some("total_connections"), "{e}");
        let e = with(" option handshake_timeout 0s\n").unwrap_err();
        assert_eq!(e.option.as_deref(), Some("handshake_timeout"), "{e}");
        let e = with(" option bind 1\n").unwrap_err();
        assert_eq!(e.option.as_deref(), Some("bind"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_option() {
        let base = "config network\n option interface prov0\n option wan wan0\n";
        let cases: &[(&str, usize, Option<&str>, &str)] = &[
            (
                "config network\n option interface prov0\n",
                1,
                Some("wan"),
                "is required",
            ),
            (
                "config network\n option interface prov0\n option wan prov0\n",
                2,
                Some("interface"),
                "also the WAN",
            ),
            (
                "config network\n option interface prov0\n option wan wan0\n option subnet '10.0.0.1/24'\n",
                4,
                Some("subnet"),
                "host bits",
            ),
            (
                "config network\n option interface prov0\n option wan wan0\n option router '10.9.9.9'\n",
                4,
                Some("router"),
                "not a host address",
            ),
            (
                "config network\n option interface prov0\n option wan wan0\n option colour red\n",
                4,
                Some("colour"),
                "unknown option in section network",
            ),
            (
                "config network\n list interface prov0\n option wan w\n",
                2,
                Some("interface"),
                "not a list",
            ),
            (
                "config network\n option interface 'a b'\n option wan w\n",
                2,
                Some("interface"),
                "not an interface name",
            ),
            ("config limits\n", 0, None, "no 'network' section"),
        ];
        for (text, line, option, needle) in cases {
            let e = uci(text).unwrap_err();
            assert_eq!(
                (e.line, e.option.as_deref()),
                (*line, *option),
                "{text:?}: {e}"
            );
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with("/etc/config/provisioner:"), "{e}");
        }
        let with = |extra: &str| uci(&format!("{base}{extra}")).unwrap_err();
        let e = with("config allow 'x'\n list address '11.0.0.0/8'\n list port '70000'\n");
        assert_eq!((e.line, e.option.as_deref()), (6, Some("port")), "{e}");
        assert!(e.message.contains("out of range"), "{e}");
        let e = with("config allow 'x'\n list address '192.168.1.5'\n");
        assert_eq!((e.line, e.option.as_deref()), (5, Some("address")), "{e}");
        assert!(
            e.message.contains("protected network 192.168.0.0/16"),
            "{e}"
        );
        let e = with(
            "config dns\n list upstream 1.1.1.1\nconfig allow 'x'\n list domain 'a.example'\n list port '1000-2000'\n",
        );
        assert_eq!((e.line, e.option.as_deref()), (8, Some("port")), "{e}");
        assert!(e.message.contains("at most 64"), "{e}");
        let e = with("config allow 'x'\n option proto tcp\n");
        assert!(e.message.contains("allows nothing"), "{e}");
        let e = with("config allow 'x'\n list domain 'a.example.com'\n");
        assert_eq!((e.line, e.option.as_deref()), (5, Some("domain")), "{e}");
        assert!(e.message.contains("upstream"), "{e}");
        // Two sections named 'x' are one, as in uci.
        let c = uci(&format!(
            "{base}config allow 'x'\n list address 1.2.3.4\nconfig allow 'x'\n list address 1.2.3.5\n"
        ))
        .unwrap();
        assert_eq!(c.allow.len(), 1);
        assert_eq!(c.allow[0].nets.len(), 2);
        let e = with("config limits\n option max_clients 300\n");
        assert_eq!(
            (e.line, e.option.as_deref()),
            (5, Some("max_clients")),
            "{e}"
        );
        assert!(e.message.contains("does not fit"), "{e}");
        let e = with("config dhcp\n option pool_start 192.168.250.250\n");
        assert_eq!(
            (e.line, e.option.as_deref()),
            (5, Some("pool_start")),
            "{e}"
        );
        assert!(e.message.contains("does not fit"), "{e}");
        let e = with("config limits\n option min_age 20m\n");
        assert_eq!((e.line, e.option.as_deref()), (5, Some("min_age")), "{e}");
        let e = with("config limits\n option connection_rate 10001\n");
        assert_eq!(
            (e.line, e.option.as_deref()),
            (5, Some("connection_rate")),
            "{e}"
        );
        let e = with("config window\n option duration 2m\n");
        assert_eq!((e.line, e.option.as_deref()), (5, Some("duration")), "{e}");
        let e = with("config window\n option mode schedule\n");
        assert!(e.message.contains("needs at least one"), "{e}");
        let e = with("config dhcp\n option pool_start 192.168.250.1\n");
        assert!(e.message.contains("router"), "{e}");
        let e = with("config wifi\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("unknown section type"), "{e}");
        let e = with("config network\n");
        assert!(e.message.contains("given twice"), "{e}");

        // The metrics listener: never on the provisioning network, nor on every address.
        let e = with("config metrics\n option listen 0.0.0.0:9100\n");
        assert_eq!((e.line, e.option.as_deref()), (5, Some("listen")), "{e}");
        assert!(e.message.contains("every address"), "{e}");
        let e = with("config metrics\n option listen 192.168.250.1:9100\n");
        assert!(e.message.contains("provisioning network"), "{e}");
        let e = with("config metrics\n option listen 192.168.1.1\n");
        assert!(e.message.contains("address and port"), "{e}");
        let e = with("config control\n option group 'root; rm'\n");
        assert_eq!((e.line, e.option.as_deref()), (5, Some("group")), "{e}");
    }

    /// What `uci show` shows is what is enforced: a later `option` replaces the earlier
    /// value (or list), a `list` after an `option` appends, sections of one name merge, and
    /// an empty option changes nothing (libuci's rules, see `uci.rs`).
    #[test]
    fn repeated_options_mean_what_uci_shows() {
        let base =
            "config network 'n'\n option interface prov0\n option interface prov1\n option wan w\n";
        let c = uci(base).unwrap();
        assert_eq!(c.network.interface.as_str(), "prov1");
        let ports = |extra: &str| {
            let c = uci(&format!(
                "{base}config allow 'a'\n list address 11.0.0.1\n{extra}"
            ))
            .unwrap();
            let a = &c.allow[0];
            a.ports
                .iter()
                .map(|p| (p.first, p.last))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ports(" option port '443'\n option port '8883'\n"),
            [(8883, 8883)]
        );
        assert_eq!(
            ports(" list port '443'\n list port '80'\n option port '8883'\n"),
            [(8883, 8883)]
        );
        assert_eq!(
            ports(" option port '443'\n list port '8883'\n"),
            [(443, 443), (8883, 8883)]
        );
        assert_eq!(
            ports(" option port '8883'\n option port ''\n"),
            [(8883, 8883)]
        );
        assert_eq!(ports(" list port 443#https\n"), [(443, 443)]);
        assert_eq!(
            ports(
                " list port 1\nconfig allow 'b'\n list address 11.0.0.2\nconfig allow 'a'\n list port 2\n"
            ),
            [(1, 1), (2, 2)]
        );
        // The merged option's error points at the line the bad value came from.
        let e = uci(&format!(
            "{base}config allow 'a'\n list address 11.0.0.1\n list port 1\nconfig allow 'a'\n list port 99999\n"
        ))
        .unwrap_err();
        assert_eq!((e.line, e.option.as_deref()), (9, Some("port")), "{e}");
        // An option after a list of the same name replaces it, and is still one value.
        let e = uci(&format!(
            "{base}config dns\n list upstream 1.1.1.1\n option upstream 'x'\n"
        ))
        .unwrap_err();
        assert_eq!((e.line, e.option.as_deref()), (7, Some("upstream")), "{e}");
    }

    #[test]
    fn errors_show_invisible_characters_escaped() {
        let e = uci("config network\n option interface 'a\u{feff}b'\n option wan w\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/config/provisioner:2: option 'interface': 'a\\u{feff}b' is not an interface name (1-15 of letters, digits, '-', '_', '.', '@')"
        );
        let e = Config::parse_bytes(
            "f",
            b"config network\n option interface '\x01\xff'\n",
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:2: option 'interface': '\\u{1}\\xff' is not UTF-8 text (uci accepts any bytes, provisioner reads text)"
        );
        let e = Config::parse_bytes("f", b"\xef\xbb\xbfconfig network\n", false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f:1: the file starts with a byte-order mark (\\u{feff})"),
            "{e}"
        );
        let e = Config::parse_bytes("f.toml", b"[network]\n\ninterface = \"\xff\"\n", true)
            .unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (3, "not UTF-8 text (TOML files must be)")
        );
    }

    #[test]
    fn threat_section_defaults_values_and_errors() {
        use crate::core::threat::{Response, ThreatPolicy};
        let base = "config network\n option interface p\n option wan w\n";
        let c = uci(base).unwrap();
        assert_eq!(c.threat.policy, ThreatPolicy::default());
        assert_eq!(
            (c.threat.alarm_command, c.threat.alarm_timeout),
            (None, SECS(10))
        );
        let c = uci(&format!(
            "{base}config threat\n option violation ban\n option spoofing report\n option violations 3\n option window 30s\n option suspend 6h\n option alarm_command 'logger x'\n"
        ))
        .unwrap();
        let p = &c.threat.policy;
        assert_eq!(
            (p.violation, p.spoofing, p.abuse),
            (Response::Ban, Response::Report, Response::Ban)
        );
        assert_eq!(
            (p.violations, p.window, p.suspend),
            (3, SECS(30), SECS(6 * 3600))
        );
        assert_eq!(c.threat.alarm_command.as_deref(), Some("logger x"));
        for (bad, want) in [
            (
                " option violation bogus\n",
                "5: option 'violation': 'bogus' is not a response",
            ),
            (" option violations 0\n", "5: option 'violations'"),
            (" option dhcp_flood 2\n", "5: option 'dhcp_flood'"),
            (" option suspend 40d\n", "5: option 'suspend'"),
            (
                " option alarm_command ' '\n",
                "5: option 'alarm_command': is empty",
            ),
            (
                " option alarm 'x'\n",
                "5: option 'alarm': unknown option in section threat",
            ),
        ] {
            let e = uci(&format!("{base}config threat\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn radio_section() {
        let base = "config network\n option interface prov0\n option wan wan0\n";
        let c = uci(base).unwrap();
        assert!(c.radio.is_none());
        let c = uci(&format!(
            "{base}config radio\n option hostapd external\n option ifname wlan1\n"
        ))
        .unwrap();
        let r = c.radio.unwrap();
        assert_eq!((r.mode, r.ifname.as_str()), (RadioMode::External, "wlan1"));
        assert_eq!(
            r.ctrl_interface,
            std::path::PathBuf::from("/var/run/hostapd")
        );
        let c = uci(&format!(
            "{base}config radio\n option hostapd managed\n option ssid 'simple_setup'\n option driver wired\n list hostapd_option 'ieee8021x=1'\n"
        ))
        .unwrap();
        let r = c.radio.unwrap();
        assert_eq!(
            (r.ssid.as_str(), r.driver.as_str()),
            ("simple_setup", "wired")
        );
        assert_eq!(r.ifname.as_str(), "prov0");
        assert_eq!(r.options, [("ieee8021x".to_owned(), "1".to_owned())]);
        let bad = |extra: &str| uci(&format!("{base}config radio\n{extra}")).unwrap_err();
        let e = bad(" option hostapd external\n option ssid x\n");
        assert_eq!((e.line, e.option.as_deref()), (6, Some("ssid")), "{e}");
        let e = bad(" option hostapd managed\n list hostapd_option 'ignore_broadcast_ssid=0'\n");
        assert!(e.message.contains("set by provisionerd"), "{e}");
        let c = uci(&format!(
            "{base}config radio\n option hostapd external\n option ssid_command '/usr/libexec/provisioner-ssid'\n"
        ))
        .unwrap();
        assert_eq!(
            c.radio.unwrap().ssid_command.as_deref(),
            Some(std::path::Path::new("/usr/libexec/provisioner-ssid"))
        );
        let e = bad(" option hostapd managed\n option ssid_command '/bin/true'\n");
        assert_eq!(e.option.as_deref(), Some("ssid_command"), "{e}");
        let e = bad(" option hostapd external\n option ssid_command 'relative'\n");
        assert!(e.message.contains("absolute"), "{e}");
        let e = bad(" option ssid x\n");
        assert!(e.message.contains("required"), "{e}");
        let e = bad(
            " option hostapd managed\n option ssid 'this ssid is far too long to be an ssid'\n",
        );
        assert_eq!(e.option.as_deref(), Some("ssid"));
    }

    #[test]
    fn schedules() {
        let s = schedule_span("Mon-Fri 08:00-20:00").unwrap();
        assert_eq!((s.days, s.start, s.end), (0b0011111, 480, 1200));
        assert_eq!(
            schedule_span("Sat,Sun 22:00-02:00").unwrap().days,
            0b1100000
        );
        assert_eq!(
            schedule_span("Fri-Mon 10:00-11:00").unwrap().days,
            0b1110001
        );
        assert_eq!(schedule_span("daily 00:00-24:00").unwrap().days, 0x7f);
        for bad in [
            "Mon",
            "Mon 8-20",
            "Xyz 08:00-09:00",
            "Mon 08:00-08:00",
            "Mon 25:00-26:00",
        ] {
            assert!(schedule_span(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_and_uci_give_the_same_config() {
        let toml = r#"
[network]
interface = "prov0"
wan = "wan0"
subnet = "192.168.250.0/24"
protect = ["192.168.1.0/24"]

[limits]
max_clients = 4

[allow.acme]
address = ["11.1.0.10"]
port = [443, 8883]
"#;
        let from_toml = Config::parse("p.toml", toml, true).unwrap();
        let from_uci = uci(GOOD).unwrap();
        assert_eq!(from_toml.network, from_uci.network);
        assert_eq!(from_toml.limits, from_uci.limits);
        assert_eq!(from_toml.allow[0], from_uci.allow[0]);
        let e = Config::parse(
            "p.toml",
            "[network]\ninterface = \"prov0\"\nwan = \"w\"\nbogus = 1\n",
            true,
        )
        .unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.line, e.option.as_deref()),
            ("p.toml", 4, Some("bogus"))
        );
    }

    /// The shipped examples are valid and say the same thing.
    #[test]
    fn profiles_bind_entries_and_are_checked_where_they_are_written() {
        let base = "config network\n option interface prov0\n option wan wan0\n";
        let ok = uci(&format!(
            "{base}config limits\n option max_clients 8\nconfig profile 'acme'\n list oui '00:11:22'\n list oui '00:11:23:4'\n option session 10m\n option max_clients 2\n option client_daily 50MB\nconfig profile 'pro'\n list oui '00:11:22:3'\nconfig allow 'cloud'\n list address 11.1.0.10\n option profile 'acme'\nconfig allow 'open'\n list address 11.1.0.20\n"
        ))
        .unwrap();
        assert_eq!(ok.profiles.len(), 2);
        let acme = &ok.profiles[0];
        assert_eq!(acme.profile.ouis.len(), 2);
        assert_eq!(acme.profile.session, Some(Duration::from_secs(600)));
        assert_eq!(acme.profile.max_clients, Some(2));
        assert_eq!(acme.client_daily, Some(50_000_000));
        assert_eq!(ok.allow[0].profile.as_deref(), Some("acme"));
        assert_eq!(ok.allow[1].profile, None);

        let with = |extra: &str| uci(&format!("{base}{extra}")).unwrap_err();
        let cases: &[(&str, usize, Option<&str>, &str)] = &[
            (
                "config profile 'a'\n list oui '00:11:2g'\n",
                5,
                Some("oui"),
                "not a MAC prefix",
            ),
            (
                "config profile 'a'\n list oui '00:11'\n",
                5,
                Some("oui"),
                "shorter than a vendor's prefix",
            ),
            (
                "config profile 'a'\n list oui '02:11:22'\n",
                5,
                Some("oui"),
                "locally administered",
            ),
            (
                "config profile 'a'\n list oui '00:11:22'\nconfig profile 'b'\n list oui '00:11:22'\n",
                7,
                Some("oui"),
                "already profile 'a''s (line 5)",
            ),
            (
                "config profile 'a'\n option session 1h\n",
                4,
                None,
                "matches no device",
            ),
            (
                "config profile\n list oui '00:11:22'\n",
                4,
                None,
                "needs a name",
            ),
            (
                "config profile 'a'\n list oui '00:11:22'\n option max_clients 9\n",
                6,
                Some("max_clients"),
                "more than the network's max_clients (8)",
            ),
            (
                "config limits\n option total_rate_up 1mbit\nconfig profile 'a'\n list oui '00:11:22'\n option client_rate_up 2mbit\n",
                8,
                Some("client_rate_up"),
                "higher than the network's total rate",
            ),
            (
                "config profile 'a'\n list oui '00:11:22'\n option vendor x\n",
                6,
                Some("vendor"),
                "unknown option in section profile",
            ),
            (
                "config profile 'a'\n list oui '00:11:22'\nconfig allow 'x'\n list address 11.1.0.1\n option profile 'b'\n",
                8,
                Some("profile"),
                "no profile 'b' (there are: a)",
            ),
            (
                "config allow 'x'\n list address 11.1.0.1\n option profile 'b'\n",
                6,
                Some("profile"),
                "no profile 'b' (there are no 'config profile' sections)",
            ),
        ];
        for (extra, line, option, needle) in cases {
            let e = with(extra);
            assert_eq!(
                (e.line, e.option.as_deref()),
                (*line, *option),
                "{extra:?}: {e}"
            );
            assert!(e.message.contains(needle), "{extra:?}: {e}");
        }
    }

    #[test]
    fn toml_profiles_are_the_uci_ones() {
        let uci = uci(
            "config network\n option interface prov0\n option wan wan0\nconfig profile 'acme'\n list oui '00:11:22'\nconfig allow 'cloud'\n list address 11.1.0.10\n option profile 'acme'\n",
        )
        .unwrap();
        let toml = Config::parse(
            "/etc/p.toml",
            "[network]\ninterface = \"prov0\"\nwan = \"wan0\"\n[profile.acme]\noui = [\"00:11:22\"]\n[allow.cloud]\naddress = [\"11.1.0.10\"]\nprofile = \"acme\"\n",
            true,
        )
        .unwrap();
        assert_eq!(uci, toml);
    }

    #[test]
    fn shipped_examples_parse() {
        let root = env!("CARGO_MANIFEST_DIR");
        let uci = Config::load(&std::path::Path::new(root).join("etc/provisioner.uci")).unwrap();
        let toml = Config::load(&std::path::Path::new(root).join("etc/provisioner.toml")).unwrap();
        assert_eq!(uci, toml);
        assert!(uci.profiles.is_empty(), "the profiles are commented out");
    }

    /// The commented vendor profiles of the examples, uncommented (from the first profile
    /// to the end of the comment block), load, and alike in UCI and TOML.
    #[test]
    fn the_examples_commented_profiles_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let uncomment = |file: &str, start: &str| {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let mut out = String::new();
            let mut on = false;
            for line in text.lines() {
                on = (on || line.starts_with(start)) && line.starts_with('#');
                let line = match on {
                    true => line.trim_start_matches('#').trim_start_matches(' '),
                    false => line,
                };
                out.push_str(line);
                out.push('\n');
            }
            out
        };
        let uci = Config::parse(
            "u",
            &uncomment("etc/provisioner.uci", "#config profile"),
            false,
        )
        .unwrap();
        let toml =
            Config::parse("t", &uncomment("etc/provisioner.toml", "# [profile."), true).unwrap();
        assert_eq!(uci, toml);
        assert_eq!(uci.profiles.len(), 2);
        assert_eq!(uci.allow.iter().filter(|e| e.profile.is_some()).count(), 2);
        let openwrt = uncomment("openwrt/files/provisioner.config", "#config profile");
        let c = Config::parse("o", &openwrt, false).unwrap();
        assert_eq!(c.profiles.len(), 2);
    }
}
