//! The object's methods, their argument policies (what `ubus -v list provisioner` shows),
//! and each call's arguments made into the control protocol's [`Request`], with the
//! checks provisionerctl made when rpcd's exec plugin called it: a malformed MAC, a
//! string where a number goes, an unknown action are usage errors, and nothing is asked.

use crate::control::Request;
use crate::control::protocol::AllowSpec;
use crate::core::MacAddr;

use super::blob::{self, ARRAY, Attrs, INT32, STRING, TABLE, Value};

pub struct Method {
    pub name: &'static str,
    pub args: &'static [(&'static str, u8)],
}

/// The methods and their arguments, in the order the rpcd plugin listed them.
pub const METHODS: &[Method] = &[
    Method {
        name: "status",
        args: &[],
    },
    Method {
        name: "clients",
        args: &[],
    },
    Method {
        name: "evict",
        args: &[("mac", STRING), ("ban", INT32)],
    },
    Method {
        name: "ban",
        args: &[("mac", STRING), ("secs", INT32)],
    },
    Method {
        name: "unban",
        args: &[("mac", STRING)],
    },
    Method {
        name: "window",
        args: &[
            ("action", STRING),
            ("secs", INT32),
            ("for", ARRAY),
            ("count", INT32),
        ],
    },
    Method {
        name: "allow_list",
        args: &[("name", STRING)],
    },
    Method {
        name: "allow_add",
        args: &[
            ("name", STRING),
            ("domain", ARRAY),
            ("address", ARRAY),
            ("proto", STRING),
            ("port", ARRAY),
            ("profile", STRING),
        ],
    },
    Method {
        name: "allow_remove",
        args: &[("name", ARRAY)],
    },
    Method {
        name: "reload",
        args: &[],
    },
    Method {
        name: "events",
        args: &[("since", INT32)],
    },
    Method {
        name: "metrics",
        args: &[],
    },
];

const MAX_ARGS: usize = 6;

/// The methods as ubus's signature attribute holds them: a table per method, of an int32
/// per argument whose value is its blobmsg type (as libubus's ubus_add_object writes it).
pub fn signature(buf: &mut Vec<u8>) {
    for m in METHODS {
        let at = blob::msg_start(buf, m.name.as_bytes());
        for (arg, ty) in m.args {
            let a = blob::msg_start(buf, arg.as_bytes());
            buf.extend_from_slice(&u32::from(*ty).to_be_bytes());
            blob::end(buf, a, blob::msg_word(INT32));
        }
        blob::end(buf, at, blob::msg_word(TABLE));
    }
}

pub fn find(name: &[u8]) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name.as_bytes() == name)
}

/// A call's arguments, by the method's argument list (others are ignored, as
/// blobmsg_parse does; of one named twice, the last).
struct Args<'a> {
    method: &'static Method,
    values: [Option<Value<'a>>; MAX_ARGS],
}

impl<'a> Args<'a> {
    fn new(method: &'static Method, data: Attrs<'a>) -> Args<'a> {
        let mut values = [None; MAX_ARGS];
        for (name, value) in data.filter_map(|a| a.msg()) {
            if let Some(i) = method.args.iter().position(|(n, _)| n.as_bytes() == name) {
                // A null is no argument (as the plugin's empty string was).
                values[i] = (!matches!(value, Value::Unspec)).then_some(value);
            }
        }
        Args { method, values }
    }

    fn get(&self, arg: &str) -> (&'static str, Option<Value<'a>>) {
        let i = self
            .method
            .args
            .iter()
            .position(|(n, _)| *n == arg)
            .expect("an argument of the method");
        (self.method.args[i].0, self.values[i])
    }

    /// A string argument; an empty one is none (as the plugin took it).
    fn string(&self, arg: &str) -> Result<Option<&'a str>, String> {
        match self.get(arg) {
            (_, None) => Ok(None),
            (name, Some(Value::Str(s))) => match std::str::from_utf8(s) {
                Ok("") => Ok(None),
                Ok(s) => Ok(Some(s)),
                Err(_) => Err(format!("{name}: not UTF-8")),
            },
            (name, Some(v)) => Err(format!("{name}: expected a string, got {}", v.kind())),
        }
    }

    fn required(&self, arg: &str, what: &str) -> Result<&'a str, String> {
        self.string(arg)?
            .ok_or_else(|| format!("{}: missing ({what})", self.method.name))
    }

    fn mac(&self) -> Result<MacAddr, String> {
        self.required("mac", "a MAC address")?.parse()
    }

    /// A whole number of seconds (or a sequence number): an integer, or a string of
    /// digits (what the plugin passed on).
    fn number(&self, arg: &str) -> Result<Option<u64>, String> {
        let bad = |s: &dyn std::fmt::Display| format!("'{s}' is not a duration (whole seconds)");
        match self.get(arg) {
            (_, None) => Ok(None),
            (_, Some(Value::Int(n))) => u64::try_from(n).map(Some).map_err(|_| bad(&n)),
            (_, Some(Value::Str(s))) => {
                let s = String::from_utf8_lossy(s);
                match s.parse::<u64>() {
                    Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
                    _ => Err(bad(&s)),
                }
            }
            (name, Some(v)) => Err(format!("{name}: expected an integer, got {}", v.kind())),
        }
    }

    /// A list of strings: an array of strings (or numbers, as ports come), or one string.
    fn list(&self, arg: &str) -> Result<Vec<String>, String> {
        let (name, v) = self.get(arg);
        let one = |v: Value| match v {
            Value::Str(s) => std::str::from_utf8(s)
                .map(str::to_owned)
                .map_err(|_| format!("{name}: not UTF-8")),
            Value::Int(n) => Ok(n.to_string()),
            v => Err(format!("{name}: expected strings, got {}", v.kind())),
        };
        match v {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .map(|a| match a.msg() {
                    Some((_, v)) => one(v),
                    None => Err(format!("{name}: a malformed element")),
                })
                .collect(),
            Some(v @ Value::Str(_)) => Ok(vec![one(v)?]),
            Some(v) => Err(format!("{name}: expected an array, got {}", v.kind())),
        }
    }
}

/// The request a call of `method` with `data` (the blobmsg table's attributes) makes, or
/// the usage error that says why it makes none.
pub fn request(method: &'static Method, data: Attrs<'_>) -> Result<Request, String> {
    let a = Args::new(method, data);
    Ok(match method.name {
        "status" => Request::Status,
        "clients" => Request::Clients,
        "reload" => Request::Reload,
        "metrics" => Request::Metrics,
        "evict" => Request::Evict {
            mac: a.mac()?,
            ban_secs: a.number("ban")?,
        },
        "ban" => Request::Ban {
            mac: a.mac()?,
            secs: a.number("secs")?,
        },
        "unban" => Request::Unban { mac: a.mac()? },
        "window" => match a.string("action")? {
            Some("open") => Request::WindowOpen {
                secs: a.number("secs")?,
                for_: a
                    .list("for")?
                    .iter()
                    .map(|p| p.parse().map_err(|e| format!("for: {e}")))
                    .collect::<Result<_, String>>()?,
                count: a
                    .number("count")?
                    .map(|n| u32::try_from(n).map_err(|_| format!("count: {n} is too large")))
                    .transpose()?,
            },
            Some("close") => Request::WindowClose,
            _ => return Err("window: action must be \"open\" or \"close\"".into()),
        },
        "allow_list" => Request::AllowList {
            name: a.string("name")?.map(str::to_owned),
        },
        "allow_add" => Request::AllowAdd(AllowSpec {
            name: a.required("name", "the entry's name")?.to_owned(),
            domains: a.list("domain")?,
            addresses: a.list("address")?,
            proto: a.string("proto")?.map(str::to_owned),
            ports: a.list("port")?,
            profile: a.string("profile")?.map(str::to_owned),
        }),
        "allow_remove" => {
            let names = a.list("name")?;
            if names.is_empty() {
                return Err("allow_remove: name: at least one entry".into());
            }
            Request::AllowRemove { names }
        }
        "events" => Request::Events {
            since: a.number("since")?,
            follow: false,
        },
        other => unreachable!("{other} is in METHODS without a request"),
    })
}
