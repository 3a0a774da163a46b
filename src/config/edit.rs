//! Runtime changes to the allow-list (`provisionerctl allow add/remove`), written back to
//! the config file, which stays the one source of truth.
//!
//! [`plan`] decides everything before anything is written: the change is made to the file's
//! parsed [`Document`] and the result checked by the loader's own schema, so what is
//! refused there (a name that is no domain, an address in a protected network, a bad port,
//! an entry without destinations) is refused here with nothing written. Then how to write
//! it: for a UCI file a `uci batch` script (OpenWrt's `uci` does the writing, so `uci show`
//! and LuCI see the change); for a TOML file its new text, the rest of it byte for byte as
//! it was (comments, order), to be written atomically ([`write_atomic`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::document::Section;
use super::{Config, ConfigError, schema, tomlfile, uci};

/// A new allow entry as the operator gave it: values as in the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewAllow {
    pub name: String,
    pub domains: Vec<String>,
    pub addresses: Vec<String>,
    pub proto: Option<String>,
    pub ports: Vec<String>,
    pub profile: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowChange {
    Add(NewAllow),
    Remove(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The change itself is wrong: nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The file as it is does not load: nothing was written.
    #[error("the config file does not load as it is ({0}); fix it first")]
    Broken(ConfigError),
    /// Writing failed.
    #[error("{0}")]
    Write(String),
}

/// How the change reaches the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writing {
    /// The TOML file's new content.
    Toml(Vec<u8>),
    /// `uci -c <dir> batch` with this script, for the package named after the file.
    Uci {
        dir: PathBuf,
        package: String,
        batch: String,
    },
}

/// A change decided: what the file will say once written, and how to write it.
#[derive(Clone, Debug)]
pub struct Edit {
    pub config: Config,
    pub writing: Writing,
}

/// Allow entry names: what `uci` takes as a section name, in TOML too (a name must mean
/// the same in both).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Decides `change` on the config file at `path` holding `current`: refused (nothing to
/// write), or the config it leads to and how to write it.
pub fn plan(path: &Path, current: &[u8], change: &AllowChange) -> Result<Edit, EditError> {
    let file = path.display().to_string();
    let toml = path.extension().is_some_and(|e| e == "toml");
    let before = Config::parse_bytes(&file, current, toml).map_err(EditError::Broken)?;
    // Parsed as the loader does (it just succeeded, so this does too).
    let mut doc = if toml {
        let text = std::str::from_utf8(current).map_err(|e| EditError::Write(e.to_string()))?;
        tomlfile::parse(text).map_err(|(_, m)| EditError::Write(m))?
    } else {
        uci::parse(current).map_err(|e| EditError::Write(e.to_string()))?
    };
    let mut removed_at = Vec::new();
    match change {
        AllowChange::Add(new) => {
            if !valid_name(&new.name) {
                return Err(EditError::Refused(format!(
                    "'{}' is not an allow entry name (1-64 letters, digits and '_', as uci takes)",
                    uci::visible(new.name.as_bytes())
                )));
            }
            if before.allow.iter().any(|a| a.name == new.name) {
                return Err(EditError::Refused(format!(
                    "allow '{}' exists; remove it first (provisionerctl allow remove {})",
                    new.name, new.name
                )));
            }
            // In UCI one name is one section whatever its type: `set pkg.NAME=allow` would
            // turn a profile of that name into an allow entry.
            if let Some(other) = doc
                .sections
                .iter()
                .find(|s| s.name.as_deref() == Some(new.name.as_str()) && s.kind != "allow")
            {
                return Err(EditError::Refused(format!(
                    "'{}' is the name of the {} section; an allow entry needs another",
                    new.name, other.kind
                )));
            }
            doc.sections.push(section(new));
        }
        AllowChange::Remove(names) => {
            if names.is_empty() {
                return Err(EditError::Refused("no allow entry to remove".into()));
            }
            let unknown: Vec<&str> = names
                .iter()
                .filter(|n| !before.allow.iter().any(|a| &a.name == *n))
                .map(|n| n.as_str())
                .collect();
            if !unknown.is_empty() {
                return Err(EditError::Refused(format!(
                    "no allow entry {} (there are: {}); nothing removed",
                    unknown
                        .iter()
                        .map(|n| format!("'{}'", uci::visible(n.as_bytes())))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if before.allow.is_empty() {
                        "none".to_owned()
                    } else {
                        before
                            .allow
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            }
            // The schema names allow sections by their name, or `@allow[i]` (as uci does)
            // by their place among allow sections.
            let mut i = 0;
            doc.sections.retain(|s| {
                if s.kind != "allow" {
                    return true;
                }
                let name = s.name.clone().unwrap_or_else(|| format!("@allow[{i}]"));
                let gone = names.contains(&name);
                if gone {
                    removed_at.push((i, name));
                }
                i += 1;
                !gone
            });
        }
    }
    let config = schema::build(&file, &doc).map_err(|e| match change {
        AllowChange::Add(new) => EditError::Refused(format!(
            "allow '{}': {}{}",
            new.name,
            e.option
                .as_ref()
                .map(|o| format!("option '{o}': "))
                .unwrap_or_default(),
            uci::visible(e.message.as_bytes())
        )),
        AllowChange::Remove(_) => EditError::Refused(e.to_string()),
    })?;
    let writing = if toml {
        let text = std::str::from_utf8(current).expect("checked above");
        Writing::Toml(match change {
            AllowChange::Add(new) => toml_add(text, new),
            AllowChange::Remove(names) => toml_remove(text, names)?,
        })
    } else {
        let (dir, package) = uci_target(path)?;
        let mut batch = String::new();
        match change {
            AllowChange::Add(new) => uci_add(&mut batch, &package, new),
            AllowChange::Remove(_) => {
                // Highest place first: deleting `@allow[1]` renumbers those after it.
                removed_at.sort_by_key(|r| std::cmp::Reverse(r.0));
                for (_, name) in &removed_at {
                    batch.push_str(&format!("delete {package}.{name}\n"));
                }
            }
        }
        batch.push_str(&format!("commit {package}\n"));
        Writing::Uci {
            dir,
            package,
            batch,
        }
    };
    // What the new text will read as, exactly as the loader will read it.
    if let Writing::Toml(bytes) = &writing {
        match Config::parse_bytes(&file, bytes, true) {
            Ok(c) if c == config => {}
            _ => {
                return Err(EditError::Refused(
                    "the TOML file's allow tables are not all written as [allow.NAME] tables \
                     this can edit safely; change it by hand"
                        .into(),
                ));
            }
        }
    }
    Ok(Edit { config, writing })
}

/// The new entry as a section of the document (line 0: it is in no file yet).
fn section(new: &NewAllow) -> Section {
    let mut s = Section::new("allow", Some(&new.name), 0);
    for d in &new.domains {
        s.push("domain", d, 0, true);
    }
    for a in &new.addresses {
        s.push("address", a, 0, true);
    }
    if let Some(p) = &new.proto {
        s.push("proto", p, 0, false);
    }
    for p in &new.ports {
        s.push("port", p, 0, true);
    }
    if let Some(p) = &new.profile {
        s.push("profile", p, 0, false);
    }
    s
}

fn uci_target(path: &Path) -> Result<(PathBuf, String), EditError> {
    let package = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        })
        .ok_or_else(|| {
            EditError::Refused(format!(
                "{}: uci cannot name a package after this file",
                path.display()
            ))
        })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, package.to_owned()))
}

/// A value as `uci batch` reads it: single-quoted, a quote as `'\''`.
fn uci_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

fn uci_add(batch: &mut String, package: &str, new: &NewAllow) {
    let at = format!("{package}.{}", new.name);
    batch.push_str(&format!("set {at}=allow\n"));
    for (option, values) in [("domain", &new.domains), ("address", &new.addresses)] {
        for v in values {
            batch.push_str(&format!("add_list {at}.{option}={}\n", uci_quote(v)));
        }
    }
    if let Some(p) = &new.proto {
        batch.push_str(&format!("set {at}.proto={}\n", uci_quote(p)));
    }
    for p in &new.ports {
        batch.push_str(&format!("add_list {at}.port={}\n", uci_quote(p)));
    }
    if let Some(p) = &new.profile {
        batch.push_str(&format!("set {at}.profile={}\n", uci_quote(p)));
    }
}

fn toml_string(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The file with `[allow.NAME]` appended, after a blank line.
fn toml_add(text: &str, new: &NewAllow) -> Vec<u8> {
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(&format!("[allow.{}]\n", new.name));
    let list = |vs: &[String], number: bool| {
        vs.iter()
            .map(|v| match v.parse::<u16>() {
                Ok(n) if number => n.to_string(),
                _ => toml_string(v),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !new.domains.is_empty() {
        out.push_str(&format!("domain = [{}]\n", list(&new.domains, false)));
    }
    if !new.addresses.is_empty() {
        out.push_str(&format!("address = [{}]\n", list(&new.addresses, false)));
    }
    if let Some(p) = &new.proto {
        out.push_str(&format!("proto = {}\n", toml_string(p)));
    }
    if !new.ports.is_empty() {
        out.push_str(&format!("port = [{}]\n", list(&new.ports, true)));
    }
    if let Some(p) = &new.profile {
        out.push_str(&format!("profile = {}\n", toml_string(p)));
    }
    out.into_bytes()
}

/// The file without the `[allow.NAME]` tables of `names`: from each header line to the end
/// of its last value's line, and the blank lines after it. Comments above a header and
/// everything else stay as they are.
fn toml_remove(text: &str, names: &[String]) -> Result<Vec<u8>, EditError> {
    use toml::de::{DeTable, DeValue};
    let cannot = |name: &str| {
        EditError::Refused(format!(
            "allow '{name}' is not written as an [allow.{name}] table this can edit safely; change the file by hand"
        ))
    };
    let root = DeTable::parse(text).map_err(|e| EditError::Write(e.message().to_owned()))?;
    let Some(allow) = root.get_ref().get("allow") else {
        return Err(cannot(&names[0]));
    };
    let DeValue::Table(allow) = allow.get_ref() else {
        return Err(cannot(&names[0]));
    };
    let line_start = |at: usize| text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = |at: usize| text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
    let mut cuts = Vec::new();
    for name in names {
        let (key, value) = allow
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == name.as_str())
            .ok_or_else(|| cannot(name))?;
        let DeValue::Table(inner) = value.get_ref() else {
            return Err(cannot(name));
        };
        let start = line_start(key.span().start);
        let header = text[start..line_end(start)].trim();
        if !header.starts_with('[') || header.starts_with("[[") {
            return Err(cannot(name));
        }
        let last = inner
            .iter()
            .map(|(_, v)| v.span().end)
            .max()
            .unwrap_or(key.span().end)
            .max(key.span().end);
        let mut end = line_end(last.saturating_sub(1).max(start));
        while end < text.len() {
            let next = line_end(end);
            if !text[end..next].trim().is_empty() {
                break;
            }
            end = next;
        }
        cuts.push(start..end);
    }
    cuts.sort_by_key(|c| c.start);
    let mut out = String::new();
    let mut at = 0;
    for c in cuts {
        if c.start < at {
            return Err(EditError::Write("overlapping tables".into()));
        }
        out.push_str(&text[at..c.start]);
        at = c.end;
    }
    out.push_str(&text[at..]);
    Ok(out.into_bytes())
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (same mode), synced,
/// renamed over it. A reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Edit {
    /// Writes the change: the TOML file atomically, or through `uci` (the program `uci`,
    /// e.g. `uci` from PATH) with a save directory of its own under `scratch`, so that
    /// changes someone staged with uci (LuCI's unsaved ones) are not committed with ours.
    pub fn write(&self, path: &Path, uci: &Path, scratch: &Path) -> Result<(), EditError> {
        match &self.writing {
            Writing::Toml(bytes) => write_atomic(path, bytes)
                .map_err(|e| EditError::Write(format!("writing {}: {e}", path.display()))),
            Writing::Uci { dir, batch, .. } => {
                let save = scratch.join("uci-save");
                let _ = std::fs::remove_dir_all(&save);
                std::fs::create_dir_all(&save)
                    .map_err(|e| EditError::Write(format!("creating {}: {e}", save.display())))?;
                let run = || -> std::io::Result<std::process::Output> {
                    let mut child = Command::new(uci)
                        .arg("-c")
                        .arg(dir)
                        .arg("-t")
                        .arg(&save)
                        .arg("batch")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()?;
                    child
                        .stdin
                        .take()
                        .expect("piped")
                        .write_all(batch.as_bytes())?;
                    child.wait_with_output()
                };
                let out = run();
                let _ = std::fs::remove_dir_all(&save);
                let out =
                    out.map_err(|e| EditError::Write(format!("running {}: {e}", uci.display())))?;
                if !out.status.success() {
                    return Err(EditError::Write(format!(
                        "{} batch failed ({}): {}{}",
                        uci.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stdout).trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"# The provisioner, for the lab.
[network]
interface = "prov0"   # the setup bridge
wan = "wan0"

[dns]
upstream = ["1.1.1.1"]

# Acme's cloud
[allow.acme]
address = ["11.1.0.10"]
port = [
  443,   # https
  8883,
]

[allow.ntp]
address = ["11.1.0.0/24"]
proto = "udp"
port = [123]

# the end
"#;

    const UCI: &str = "# lab
config network 'network'
\toption interface 'prov0'
\toption wan 'wan0'

config dns
\tlist upstream '1.1.1.1'

config profile 'vendor'
\tlist oui '00:a0:01'

config allow 'acme'
\tlist address '11.1.0.10'

config allow
\tlist address '11.1.0.20'

config allow 'ntp'
\tlist address '11.1.0.0/24'
\toption proto 'udp'
";

    fn add(name: &str, addresses: &[&str]) -> AllowChange {
        AllowChange::Add(NewAllow {
            name: name.into(),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            ports: vec!["443".into()],
            ..Default::default()
        })
    }

    fn remove(names: &[&str]) -> AllowChange {
        AllowChange::Remove(names.iter().map(|s| s.to_string()).collect())
    }

    fn toml(change: &AllowChange) -> Result<Edit, EditError> {
        plan(Path::new("/etc/p.toml"), TOML.as_bytes(), change)
    }

    fn text(e: &Edit) -> String {
        match &e.writing {
            Writing::Toml(b) => String::from_utf8(b.clone()).unwrap(),
            Writing::Uci { batch, .. } => batch.clone(),
        }
    }

    #[test]
    fn toml_add_appends_and_keeps_the_rest() {
        let e = toml(&AllowChange::Add(NewAllow {
            name: "fw".into(),
            domains: vec!["*.fw.example.com".into()],
            addresses: vec!["11.2.0.0/16".into()],
            proto: Some("tcp".into()),
            ports: vec!["443".into(), "8000-8010".into()],
            profile: None,
        }))
        .unwrap();
        let t = text(&e);
        assert_eq!(
            t,
            format!(
                "{TOML}\n[allow.fw]\ndomain = [\"*.fw.example.com\"]\naddress = [\"11.2.0.0/16\"]\nproto = \"tcp\"\nport = [443, \"8000-8010\"]\n"
            )
        );
        assert_eq!(e.config.allow.len(), 3);
        assert_eq!(e.config.allow[2].name, "fw");
        assert_eq!(Config::parse("p.toml", &t, true).unwrap(), e.config);
    }

    #[test]
    fn toml_remove_cuts_only_the_table() {
        let e = toml(&remove(&["acme"])).unwrap();
        let t = text(&e);
        assert_eq!(
            t,
            TOML.replace(
                "[allow.acme]\naddress = [\"11.1.0.10\"]\nport = [\n  443,   # https\n  8883,\n]\n\n",
                ""
            )
        );
        assert!(t.contains("# Acme's cloud\n[allow.ntp]"), "{t}");
        let names: Vec<_> = e.config.allow.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["ntp"]);
        // Both, the last one at the end of the file.
        let e = toml(&remove(&["ntp", "acme"])).unwrap();
        let t = text(&e);
        assert!(e.config.allow.is_empty());
        assert!(
            t.ends_with("upstream = [\"1.1.1.1\"]\n\n# Acme's cloud\n# the end\n"),
            "{t}"
        );
    }

    #[test]
    fn refusals_say_why_and_write_nothing() {
        let cases: &[(AllowChange, &str)] = &[
            (add("acme", &["11.3.0.1"]), "exists; remove it first"),
            (add("bad name", &["11.3.0.1"]), "not an allow entry name"),
            (add("@allow", &["11.3.0.1"]), "not an allow entry name"),
            (add("home", &["192.168.1.0/24"]), "protected network"),
            (add("x", &["11.3.0.1/8"]), "host bits"),
            (add("x", &["11.3.0.1/33"]), "not an IPv4 address"),
            (add("x", &[]), "allows nothing"),
            (
                AllowChange::Add(NewAllow {
                    name: "x".into(),
                    domains: vec!["not a name".into()],
                    ..Default::default()
                }),
                "not a domain name",
            ),
            (
                AllowChange::Add(NewAllow {
                    name: "x".into(),
                    addresses: vec!["11.3.0.1".into()],
                    proto: Some("icmp".into()),
                    ..Default::default()
                }),
                "not a protocol",
            ),
            (
                AllowChange::Add(NewAllow {
                    name: "x".into(),
                    addresses: vec!["11.3.0.1".into()],
                    ports: vec!["70000".into()],
                    ..Default::default()
                }),
                "out of range",
            ),
            (remove(&["acme", "nope"]), "no allow entry 'nope'"),
            (remove(&[]), "no allow entry to remove"),
        ];
        for (change, needle) in cases {
            for path in ["/etc/p.toml", "/etc/config/provisioner"] {
                let current = if path.ends_with("toml") { TOML } else { UCI };
                let e = plan(Path::new(path), current.as_bytes(), change).unwrap_err();
                assert!(matches!(e, EditError::Refused(_)), "{change:?}: {e}");
                assert!(e.to_string().contains(needle), "{change:?} {path}: {e}");
            }
        }
        let e = plan(
            Path::new("/etc/p.toml"),
            TOML.as_bytes(),
            &add("home", &["192.168.1.0/24"]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "allow 'home': option 'address': 192.168.1.0/24 overlaps the protected network 192.168.0.0/16; it can never be reached from the provisioning network"
        );
        // A file that does not load as it is: nothing is decided on it.
        let e = plan(
            Path::new("/etc/p.toml"),
            b"[network]\ninterface = 1\n",
            &add("x", &["11.3.0.1"]),
        )
        .unwrap_err();
        assert!(matches!(e, EditError::Broken(_)), "{e}");
        // Not an [allow.NAME] table: refused, not mangled.
        let dotted = "[network]\ninterface = \"prov0\"\nwan = \"wan0\"\n[allow]\nacme.address = [\"11.1.0.10\"]\n";
        let e = plan(
            Path::new("/etc/p.toml"),
            dotted.as_bytes(),
            &remove(&["acme"]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("by hand"), "{e}");
    }

    #[test]
    fn uci_batches_set_add_list_delete_and_commit() {
        let path = Path::new("/etc/config/provisioner");
        let e = plan(
            path,
            UCI.as_bytes(),
            &AllowChange::Add(NewAllow {
                name: "fw".into(),
                domains: vec!["fw.example.com".into()],
                addresses: vec!["11.2.0.0/16".into(), "11.4.0.1".into()],
                proto: Some("udp".into()),
                ports: vec!["123".into()],
                profile: Some("vendor".into()),
            }),
        )
        .unwrap();
        assert_eq!(
            e.writing,
            Writing::Uci {
                dir: "/etc/config".into(),
                package: "provisioner".into(),
                batch: "set provisioner.fw=allow\nadd_list provisioner.fw.domain='fw.example.com'\nadd_list provisioner.fw.address='11.2.0.0/16'\nadd_list provisioner.fw.address='11.4.0.1'\nset provisioner.fw.proto='udp'\nadd_list provisioner.fw.port='123'\nset provisioner.fw.profile='vendor'\ncommit provisioner\n".into(),
            }
        );
        assert_eq!(e.config.allow.last().unwrap().name, "fw");
        assert_eq!(
            e.config.allow.last().unwrap().profile.as_deref(),
            Some("vendor")
        );
        // Anonymous sections by their place, the later one first.
        let e = plan(path, UCI.as_bytes(), &remove(&["acme", "@allow[1]", "ntp"])).unwrap();
        assert_eq!(
            text(&e),
            "delete provisioner.ntp\ndelete provisioner.@allow[1]\ndelete provisioner.acme\ncommit provisioner\n"
        );
        assert!(e.config.allow.is_empty());
        assert_eq!(uci_quote("a'b"), "'a'\\''b'");
        // A profile's name is taken: uci would turn the profile into the entry.
        let e = plan(path, UCI.as_bytes(), &add("vendor", &["11.9.0.1"])).unwrap_err();
        assert!(e.to_string().contains("name of the profile section"), "{e}");
    }

    #[test]
    fn atomic_write_replaces_the_file_keeping_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("provisioner-edit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.toml");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        // Through a TOML edit: the file is the planned text.
        std::fs::write(&p, TOML).unwrap();
        let e = plan(&p, TOML.as_bytes(), &add("fw", &["11.3.0.1"])).unwrap();
        e.write(&p, Path::new("uci"), &dir).unwrap();
        assert_eq!(Config::load(&p).unwrap(), e.config);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
