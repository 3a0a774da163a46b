//! Parsers for the value syntaxes the config uses. Each returns a message naming what was
//! expected; the schema adds file, line and option.

use std::fmt;

pub use crate::core::allow::{DomainPattern, PortRange, Proto};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ipnet::Ipv4Net;

pub type ValueResult<T> = Result<T, String>;

/// A network interface name as the kernel accepts it (IFNAMSIZ - 1 bytes, no `/`, `:`,
/// whitespace or quotes). Being strict here also keeps it safe to embed in the nft script.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn ifname(s: &str) -> ValueResult<IfName> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(IfName(s.to_owned()))
    } else {
        Err(format!(
            "'{s}' is not an interface name (1-15 of letters, digits, '-', '_', '.', '@')"
        ))
    }
}

pub fn ipv4(s: &str) -> ValueResult<Ipv4Addr> {
    s.parse::<Ipv4Addr>().map_err(|_| {
        if s.contains(':') {
            format!("'{s}' is IPv6; IPv6 is off on the provisioning network, give an IPv4 address")
        } else {
            format!("'{s}' is not an IPv4 address")
        }
    })
}

/// A CIDR whose host bits are zero (`10.0.0.0/8`); a bare address means `/32`.
pub fn ipv4_net(s: &str) -> ValueResult<Ipv4Net> {
    if !s.contains('/') {
        return ipv4(s).map(|a| Ipv4Net::new(a, 32).expect("32 is a valid prefix"));
    }
    let net: Ipv4Net = s.parse().map_err(|_| {
        if s.contains(':') {
            format!("'{s}' is IPv6; IPv6 is off on the provisioning network, give an IPv4 network")
        } else {
            format!("'{s}' is not an IPv4 address or network (CIDR)")
        }
    })?;
    if net.addr() != net.network() {
        return Err(format!(
            "'{s}' has host bits set; did you mean {}/{}?",
            net.network(),
            net.prefix_len()
        ));
    }
    Ok(net)
}

/// `1.1.1.1` or `1.1.1.1:5353`.
pub fn ipv4_socket(s: &str, default_port: u16) -> ValueResult<SocketAddrV4> {
    if let Ok(sa) = s.parse::<SocketAddrV4>() {
        if sa.port() == 0 {
            return Err(format!("'{s}': port 0 is not a port"));
        }
        return Ok(sa);
    }
    ipv4(s).map(|a| SocketAddrV4::new(a, default_port))
}

pub fn boolean(s: &str) -> ValueResult<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" | "enabled" => Ok(true),
        "0" | "no" | "off" | "false" | "disabled" => Ok(false),
        _ => Err(format!(
            "'{s}' is not a boolean (1/0, yes/no, on/off, true/false)"
        )),
    }
}

pub fn unsigned(s: &str, min: u64, max: u64) -> ValueResult<u64> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if v < min || v > max {
        return Err(format!("{v} is out of range ({min}-{max})"));
    }
    Ok(v)
}

/// `90`, `90s`, `15m`, `2h`, `1d`, or a sum such as `1h30m`. A bare number is seconds.
pub fn duration(s: &str) -> ValueResult<Duration> {
    let bad = || format!("'{s}' is not a duration (e.g. 90, 90s, 15m, 2h, 1d, 1h30m)");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let scale = match &rest[..unit_len] {
            "ms" => return Err(format!("'{s}': durations here are whole seconds or more")),
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_secs(total))
}

/// A duration within bounds, with the bounds in the message.
pub fn duration_in(s: &str, min: Duration, max: Duration) -> ValueResult<Duration> {
    let d = duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "'{s}' is out of range ({} to {})",
            show_duration(min),
            show_duration(max)
        ));
    }
    Ok(d)
}

pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
        _ if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// A bit rate in bytes per second, written as `512kbit`, `2mbit`, `1gbit` or `100kbyte`,
/// `5mbyte` (per second, decimal prefixes as tc and nft use them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate {
    pub bytes_per_sec: u64,
}

pub fn rate(s: &str) -> ValueResult<Rate> {
    let bad = || format!("'{s}' is not a rate (e.g. 512kbit, 2mbit, 1gbit, 100kbyte, 5mbyte)");
    let lower = s.to_ascii_lowercase();
    let digits = lower.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = lower[..digits].parse().map_err(|_| bad())?;
    let bits = match &lower[digits..] {
        "bit" => n,
        "kbit" => n.checked_mul(1_000).ok_or_else(bad)?,
        "mbit" => n.checked_mul(1_000_000).ok_or_else(bad)?,
        "gbit" => n.checked_mul(1_000_000_000).ok_or_else(bad)?,
        "byte" => n.checked_mul(8).ok_or_else(bad)?,
        "kbyte" => n.checked_mul(8_000).ok_or_else(bad)?,
        "mbyte" => n.checked_mul(8_000_000).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if bits < 8_000 {
        return Err(format!("'{s}' is below the smallest rate, 8kbit"));
    }
    Ok(Rate {
        bytes_per_sec: bits / 8,
    })
}

/// An amount of data: `500KB`, `50MB`, `2GB` (decimal), `1MiB`, `1GiB` (binary), or bytes.
pub fn bytes(s: &str) -> ValueResult<u64> {
    let bad = || format!("'{s}' is not an amount of data (e.g. 500KB, 50MB, 2GB, 1GiB)");
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let scale: u64 = match s[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(scale).ok_or_else(bad)?;
    if v == 0 {
        return Err(format!("'{s}': a quota of zero would refuse everything"));
    }
    Ok(v)
}

pub fn port_range(s: &str) -> ValueResult<PortRange> {
    let one = |p: &str| -> ValueResult<u16> {
        match p.parse::<u32>() {
            Ok(v @ 1..=65535) => Ok(v as u16),
            Ok(v) => Err(format!("port {v} is out of range (1-65535)")),
            Err(_) => Err(format!(
                "'{s}' is not a port or port range (e.g. 443, 8000-8100)"
            )),
        }
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let p = one(s)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!("'{s}': range is backwards"));
    }
    Ok(PortRange { first, last })
}

pub fn proto(s: &str) -> ValueResult<Proto> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(format!("'{s}' is not a protocol (tcp or udp)")),
    }
}

pub fn domain_pattern(s: &str) -> ValueResult<DomainPattern> {
    let lower = s.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    let (wild, name) = match trimmed.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let bad = |why: &str| format!("'{s}' is not a domain name or *.suffix pattern: {why}");
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each label is 1-63 characters"));
        }
        if label.contains('*') {
            return Err(bad("'*' is only allowed as the whole first label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad("labels are letters, digits and inner hyphens"));
        }
    }
    if wild && !name.contains('.') {
        return Err(bad(
            "a wildcard must cover a domain, not a top-level domain",
        ));
    }
    Ok(if wild {
        DomainPattern::Suffix(name.to_owned())
    } else {
        DomainPattern::Exact(name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("2d").unwrap(), Duration::from_secs(172800));
        for bad in [
            "",
            "m",
            "15x",
            "1.5h",
            "-3",
            "15 m",
            "99999999999999999999d",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert!(duration("100ms").unwrap_err().contains("whole seconds"));
        let e = duration_in("2m", Duration::from_secs(300), Duration::from_secs(3600)).unwrap_err();
        assert!(e.contains("5m to 1h"), "{e}");
    }

    #[test]
    fn rates_and_bytes() {
        assert_eq!(rate("2mbit").unwrap().bytes_per_sec, 250_000);
        assert_eq!(rate("512KBIT").unwrap().bytes_per_sec, 64_000);
        assert_eq!(rate("100kbyte").unwrap().bytes_per_sec, 100_000);
        assert!(rate("2").is_err());
        assert!(rate("1kbit").unwrap_err().contains("smallest"));
        assert_eq!(bytes("50MB").unwrap(), 50_000_000);
        assert_eq!(bytes("1GiB").unwrap(), 1 << 30);
        assert!(bytes("0").is_err());
        assert!(bytes("5XB").is_err());
    }

    #[test]
    fn ports_and_protocols() {
        assert_eq!(
            port_range("443").unwrap(),
            PortRange {
                first: 443,
                last: 443
            }
        );
        assert_eq!(
            port_range("8000-8100").unwrap(),
            PortRange {
                first: 8000,
                last: 8100
            }
        );
        assert!(port_range("0").unwrap_err().contains("out of range"));
        assert!(port_range("65536").unwrap_err().contains("out of range"));
        assert!(port_range("90-80").unwrap_err().contains("backwards"));
        assert!(port_range("https").is_err());
        assert_eq!(proto("TCP").unwrap(), Proto::Tcp);
        assert!(proto("icmp").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(ipv4_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(ipv4_net("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert!(
            ipv4_net("10.0.0.1/8")
                .unwrap_err()
                .contains("did you mean 10.0.0.0/8")
        );
        assert!(ipv4_net("2001:db8::/32").unwrap_err().contains("IPv6"));
        assert!(ipv4("256.1.1.1").is_err());
        assert_eq!(
            ipv4_socket("1.1.1.1", 53).unwrap().to_string(),
            "1.1.1.1:53"
        );
        assert_eq!(ipv4_socket("1.1.1.1:5353", 53).unwrap().port(), 5353);
        assert!(ipv4_socket("1.1.1.1:0", 53).is_err());
    }

    #[test]
    fn interface_names() {
        assert!(ifname("br-provision").is_ok());
        assert!(ifname("wlan0.1").is_ok());
        for bad in [
            "",
            "a b",
            "eth0\"",
            "x/y",
            "0123456789abcdef",
            "..",
            "eth0;",
        ] {
            assert!(ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domain_patterns() {
        assert_eq!(
            domain_pattern("Setup.Example.COM.").unwrap(),
            DomainPattern::Exact("setup.example.com".into())
        );
        assert_eq!(
            domain_pattern("*.example.com").unwrap(),
            DomainPattern::Suffix("example.com".into())
        );
        for bad in [
            "",
            "*",
            "*.com",
            "a..b",
            "ex*.com",
            "-a.com",
            "a b.com",
            "*.*.a.com",
        ] {
            assert!(domain_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans() {
        assert!(boolean("Yes").unwrap());
        assert!(!boolean("0").unwrap());
        assert!(boolean("maybe").is_err());
    }
}
