//! `provisionerctl allow list/add/remove`: the allow-list as it runs, and changes to it
//! written back to the config file (the one source of truth, so a restart keeps them) and
//! then applied exactly as a reload applies the file.
//!
//! A change is decided on the file before anything is written ([`edit::plan`], with the
//! loader's own checks); a refused one leaves the file and the running state as they were.
//! If the written file does not read back as planned, or applying it fails, the old bytes
//! are put back.

use std::path::Path;

use tracing::{error, info};

use super::Daemon;
use crate::config::edit::{self, AllowChange, EditError, NewAllow};
use crate::config::{AllowEntry, Config};
use crate::control::protocol::{AllowEntries, AllowInfo, AllowSpec};
use crate::control::{Failure, FailureKind, Reply};
use crate::core::time::Instant;

/// The program that writes UCI configs (OpenWrt's, from PATH: /sbin/uci).
const UCI: &str = "uci";

fn info_of(e: &AllowEntry, learned: usize) -> AllowInfo {
    AllowInfo {
        name: e.name.clone(),
        domains: e.domains.iter().map(|d| d.to_string()).collect(),
        addresses: e.nets.iter().map(|n| n.to_string()).collect(),
        proto: e.proto.as_str().to_owned(),
        ports: e.ports.iter().map(|p| p.to_string()).collect(),
        learned,
        profile: e.profile.clone(),
    }
}

fn refused(message: impl Into<String>) -> Reply {
    Failure::new(FailureKind::Refused, message).into()
}

impl From<AllowSpec> for NewAllow {
    fn from(s: AllowSpec) -> NewAllow {
        NewAllow {
            name: s.name,
            domains: s.domains,
            addresses: s.addresses,
            proto: s.proto,
            ports: s.ports,
            profile: s.profile,
        }
    }
}

impl Daemon {
    /// The running allow entries (or the one named), with what is learned for each.
    pub(super) fn allow_entries(&self, name: Option<&str>, now: Instant) -> Reply {
        let learned = self.provisioner.learned_per_entry(now);
        let entries: Vec<AllowInfo> = self
            .cfg
            .allow
            .iter()
            .zip(learned.into_iter().chain(std::iter::repeat(0)))
            .filter(|(e, _)| name.is_none_or(|n| e.name == n))
            .map(|(e, l)| info_of(e, l))
            .collect();
        match name {
            Some(n) if entries.is_empty() => refused(format!("no allow entry '{n}'")),
            _ => Reply::Allow(AllowEntries { entries }),
        }
    }

    /// `allow add` / `allow remove`: decided, written, applied; or refused with nothing
    /// changed.
    pub(super) fn change_allow(&mut self, change: AllowChange) -> Reply {
        match self.try_change_allow(&change) {
            Ok(()) => {
                info!("allow-list changed in {}", self.paths.config.display());
                self.allow_entries(None, Instant::now())
            }
            Err(e) => {
                info!("refused an allow-list change: {e}");
                refused(e)
            }
        }
    }

    fn try_change_allow(&mut self, change: &AllowChange) -> Result<(), String> {
        let path = self.paths.config.clone();
        let show = path.display().to_string();
        let before = std::fs::read(&path).map_err(|e| format!("cannot read {show}: {e}"))?;
        // The file is what runs: an edit made to it and not yet reloaded would go live
        // unseen with this change, so it must be applied (or undone) on its own first.
        let toml = path.extension().is_some_and(|e| e == "toml");
        if let Ok(on_disk) = Config::parse_bytes(&show, &before, toml) {
            if on_disk != self.cfg {
                return Err(format!(
                    "{show} was changed since it was loaded and says something else than the running configuration; \
                     run provisionerctl reload first (or undo that edit)"
                ));
            }
        }
        let plan = edit::plan(&path, &before, change).map_err(|e| e.to_string())?;
        let restore = |why: String| -> String {
            match edit::write_atomic(&path, &before) {
                Ok(()) => format!("{why}; {show} was put back as it was"),
                Err(e) => {
                    error!("putting {show} back after a failed allow-list change: {e}");
                    format!("{why}; and putting {show} back failed: {e}")
                }
            }
        };
        if let Err(e) = plan.write(&path, Path::new(UCI), &self.paths.run_dir) {
            // uci may have written part of it before failing; ours is atomic.
            return Err(match e {
                EditError::Write(_) if std::fs::read(&path).ok().as_ref() != Some(&before) => {
                    restore(e.to_string())
                }
                e => e.to_string(),
            });
        }
        match Config::load(&path) {
            Ok(c) if c == plan.config => {}
            Ok(_) => {
                return Err(restore(format!(
                    "{show} does not read back as the change planned"
                )));
            }
            Err(e) => {
                return Err(restore(format!(
                    "{show} does not load after the change: {e}"
                )));
            }
        }
        self.try_reload().map_err(|e| {
            restore(format!(
                "applying it failed ({e}); kept the running configuration"
            ))
        })
    }
}
