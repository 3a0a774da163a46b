//! The daemon's link to its radio: keeps a hostapd control connection alive (reconnecting
//! when hostapd restarts, with a keepalive), runs hostapd itself in managed mode, and
//! carries out the core's radio commands. Holds no policy: what to do after a reconnect
//! (reconcile the station table, re-deny banned stations) is the core's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::hostapd::{Event, Hostapd, HostapdError};
use crate::config::{Radio, RadioMode};
use crate::core::{MacAddr, RadioCommand};

/// How often a lost hostapd is looked for again, and a managed one restarted.
const RETRY: Duration = Duration::from_secs(1);
const KEEPALIVE: Duration = Duration::from_secs(5);

pub struct RadioLink {
    cfg: Radio,
    /// hostapd's control socket: `<ctrl_interface>/<ifname>`.
    ctrl: PathBuf,
    local_dir: PathBuf,
    conf: PathBuf,
    max_num_sta: u32,
    hostapd: Option<Hostapd>,
    managed: Option<Child>,
    last_start: Option<Instant>,
    last_attempt: Option<Instant>,
    last_ping: Instant,
    /// The SSID state the window wants; applied again after every reconnect.
    enabled: Option<bool>,
    /// A running `ssid_command`, and what it was asked to do.
    ssid_command: Option<(Child, &'static str)>,
    /// What to ask it next, once the running one is done.
    ssid_next: Option<&'static str>,
}

impl RadioLink {
    /// `max_stations`: what a managed hostapd admits (the provisioner's
    /// `Settings::radio_max_stations`: one more than the clients, so that it sees a newcomer
    /// when the spots are full and decides).
    pub fn new(cfg: &Radio, max_stations: u32, run_dir: &Path) -> Self {
        RadioLink {
            ctrl: cfg.ctrl_interface.join(cfg.ifname.as_str()),
            local_dir: run_dir.join("hostapd-ctrl"),
            conf: run_dir.join(format!("hostapd-{}.conf", cfg.ifname)),
            max_num_sta: max_stations,
            cfg: cfg.clone(),
            hostapd: None,
            managed: None,
            last_start: None,
            last_attempt: None,
            last_ping: Instant::now(),
            enabled: None,
            ssid_command: None,
            ssid_next: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.hostapd.is_some()
    }

    /// The next hostapd event; never resolves while there is no connection.
    pub async fn next_event(&mut self) -> Result<Event, HostapdError> {
        match self.hostapd.as_mut() {
            Some(h) => h.next_event().await,
            None => std::future::pending().await,
        }
    }

    /// The connection broke: forget it (the next [`RadioLink::maintain`] reconnects).
    pub fn lost(&mut self, why: &HostapdError) {
        if self.hostapd.take().is_some() {
            warn!(
                "hostapd at {} went away ({why}); reconnecting",
                self.ctrl.display()
            );
        }
    }

    /// Called about once a second: starts or restarts a managed hostapd, reconnects, pings.
    /// Returns the station table after a (re)connect, for the core to reconcile with.
    pub async fn maintain(&mut self) -> Option<Vec<MacAddr>> {
        self.reap_ssid_command();
        if self.cfg.mode == RadioMode::Managed {
            self.supervise();
        }
        if let Some(h) = self.hostapd.as_mut() {
            if self.last_ping.elapsed() >= KEEPALIVE {
                self.last_ping = Instant::now();
                if let Err(e) = h.ping().await {
                    self.lost(&e);
                }
            }
            return None;
        }
        if self.last_attempt.is_some_and(|t| t.elapsed() < RETRY) {
            return None;
        }
        self.last_attempt = Some(Instant::now());
        let mut h = match Hostapd::connect(&self.ctrl, &self.local_dir).await {
            Ok(h) => h,
            Err(e) => {
                debug!("hostapd at {}: {e}", self.ctrl.display());
                return None;
            }
        };
        let stations = match h.stations().await {
            Ok(s) => s,
            Err(e) => {
                warn!("reading hostapd's station table: {e}");
                return None;
            }
        };
        info!(
            "connected to hostapd at {} ({} station(s))",
            self.ctrl.display(),
            stations.len()
        );
        self.last_ping = Instant::now();
        self.hostapd = Some(h);
        // A new hostapd starts enabled: tell it again (an external SSID's state is UCI's).
        if let (Some(enabled), RadioMode::Managed) = (self.enabled, self.cfg.mode) {
            self.set_enabled(enabled).await;
        }
        Some(
            stations
                .into_iter()
                .filter(|s| s.authorized)
                .map(|s| s.mac)
                .collect(),
        )
    }

    /// Runs the core's radio commands; a command hostapd refuses is logged, a lost
    /// connection ends the batch (the reconnect reconciles).
    pub async fn apply(&mut self, commands: &[RadioCommand]) {
        for c in commands {
            let result = match *c {
                RadioCommand::Enable => {
                    self.set_enabled(true).await;
                    continue;
                }
                RadioCommand::Disable => {
                    self.set_enabled(false).await;
                    continue;
                }
                _ => match self.hostapd.as_mut() {
                    None => return,
                    Some(h) => match *c {
                        RadioCommand::Deauthenticate(mac) => h.deauthenticate(mac).await,
                        RadioCommand::DenyAdd(mac) => h.deny_acl_add(mac).await,
                        RadioCommand::DenyDel(mac) => h.deny_acl_del(mac).await,
                        RadioCommand::Enable | RadioCommand::Disable => Ok(()),
                    },
                },
            };
            match result {
                Ok(()) => {}
                Err(HostapdError::Gone) | Err(HostapdError::Io(_)) => {
                    self.lost(&HostapdError::Gone);
                    return;
                }
                Err(e) => warn!("hostapd: {c:?}: {e}"),
            }
        }
    }

    /// SSID up (window open) or down (closed). A managed hostapd is ours: ENABLE /
    /// DISABLE. An external one serves other SSIDs on the same radio, which DISABLE would
    /// take down too: the operator's `ssid_command` does it (on OpenWrt, through UCI), or,
    /// without one, the SSID stays up and the core turns everyone away.
    async fn set_enabled(&mut self, on: bool) {
        if self.enabled == Some(on) && self.cfg.mode == RadioMode::External {
            return;
        }
        self.enabled = Some(on);
        let word = if on { "up" } else { "down" };
        if self.cfg.mode == RadioMode::External {
            match &self.cfg.ssid_command {
                Some(cmd) => self.run_ssid_command(cmd.clone(), word),
                None => info!(
                    "window {}: the SSID stays as it is (radio ssid_command is not set); stations are {}",
                    if on { "open" } else { "closed" },
                    if on { "admitted" } else { "turned away" }
                ),
            }
            return;
        }
        let Some(h) = self.hostapd.as_mut() else {
            return;
        };
        let result = if on {
            h.enable().await
        } else {
            h.disable().await
        };
        match result {
            Ok(()) => info!("SSID {word}"),
            Err(HostapdError::Gone) => self.lost(&HostapdError::Gone),
            // Already in that state: hostapd says FAIL.
            Err(e) => debug!("hostapd {}: {e}", if on { "ENABLE" } else { "DISABLE" }),
        }
    }

    /// Runs `<ssid_command> up|down` without waiting (a `wifi reload` takes seconds); its
    /// exit is collected by [`RadioLink::maintain`]. One run at a time, in order: while one
    /// runs, the latest request waits for it (two overlapping runs could both read the old
    /// state).
    fn run_ssid_command(&mut self, cmd: PathBuf, word: &'static str) {
        self.reap_ssid_command();
        if self.ssid_command.is_some() {
            self.ssid_next = Some(word);
            return;
        }
        match Command::new(&cmd)
            .arg(word)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => {
                info!("SSID {word}: running {} {word}", cmd.display());
                self.ssid_command = Some((child, word));
            }
            Err(e) => warn!("SSID {word}: cannot run {}: {e}", cmd.display()),
        }
    }

    fn reap_ssid_command(&mut self) {
        let Some((child, word)) = self.ssid_command.as_mut() else {
            return;
        };
        match child.try_wait() {
            Ok(None) => return,
            Ok(Some(status)) if status.success() => {}
            Ok(Some(status)) => warn!("SSID {word}: the ssid_command failed ({status})"),
            Err(e) => warn!("SSID {word}: {e}"),
        }
        self.ssid_command = None;
        if let (Some(next), Some(cmd)) = (self.ssid_next.take(), self.cfg.ssid_command.clone()) {
            self.run_ssid_command(cmd, next);
        }
    }

    /// Managed mode: hostapd runs as our child with the config we write; restarted if it
    /// dies, killed when we stop (the SSID goes down with the daemon).
    fn supervise(&mut self) {
        if let Some(child) = self.managed.as_mut() {
            match child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => warn!("hostapd exited ({status}); restarting it"),
                Err(e) => warn!("hostapd: {e}; restarting it"),
            }
            self.managed = None;
            self.hostapd = None;
        }
        // A hostapd that keeps dying is restarted once per RETRY, not in a loop.
        if self.last_start.is_some_and(|t| t.elapsed() < RETRY) {
            return;
        }
        self.last_start = Some(Instant::now());
        if let Err(e) = std::fs::write(&self.conf, self.hostapd_conf()) {
            warn!("writing {}: {e}", self.conf.display());
            return;
        }
        let mut cmd = Command::new("hostapd");
        cmd.arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // If the daemon dies, even by SIGKILL, hostapd goes too: no SSID without the daemon
        // that enforces its limits.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                info!(
                    "started hostapd for {} ({})",
                    self.cfg.ifname,
                    self.conf.display()
                );
                self.managed = Some(child);
            }
            Err(e) => warn!("starting hostapd: {e} (is the hostapd package installed?)"),
        }
    }

    /// The generated hostapd.conf: hidden, open, isolated, bounded (R1), plus the
    /// operator's extra lines.
    pub fn hostapd_conf(&self) -> String {
        let r = &self.cfg;
        let mut c = format!(
            "# Written by provisionerd; changes are overwritten.\n\
             interface={}\n\
             driver={}\n\
             ctrl_interface={}\n\
             ssid={}\n\
             ignore_broadcast_ssid=1\n\
             ap_isolate=1\n\
             max_num_sta={}\n\
             macaddr_acl=0\n\
             auth_algs=1\n\
             wpa=0\n",
            r.ifname,
            r.driver,
            r.ctrl_interface.display(),
            r.ssid,
            self.max_num_sta
        );
        if let Some(ch) = r.channel {
            c.push_str(&format!("channel={ch}\n"));
        }
        if let Some(m) = &r.hw_mode {
            c.push_str(&format!("hw_mode={m}\n"));
        }
        if let Some(cc) = &r.country {
            c.push_str(&format!("country_code={cc}\n"));
        }
        for (k, v) in &r.options {
            c.push_str(&format!("{k}={v}\n"));
        }
        c
    }
}

impl Drop for RadioLink {
    /// A managed hostapd goes with the daemon: the SSID is down while nobody enforces it.
    fn drop(&mut self) {
        if let Some(mut child) = self.managed.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
