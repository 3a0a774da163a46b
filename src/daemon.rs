//! The I/O loop: turns packets, signals and timers into core inputs and carries out what the
//! core returns. It holds no policy of its own.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::UdpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::{Config, IfName};
use crate::core::Core;
use crate::core::time::Instant;
use crate::dhcp;
use crate::firewall::{Firewall, Ruleset, TABLE};

/// How often the daemon checks that its table is still there (an `fw4 flush` or a
/// hand-typed `nft flush ruleset` removes it) and puts it back.
const TABLE_CHECK: Duration = Duration::from_secs(1);

pub fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(async { Daemon::start(path.to_owned(), cfg)?.run().await })
}

struct Daemon {
    path: PathBuf,
    cfg: Config,
    core: Core,
    fw: Firewall,
    dhcp: UdpSocket,
}

impl Daemon {
    fn start(path: PathBuf, cfg: Config) -> anyhow::Result<Daemon> {
        prepare_interface(&cfg.network.interface, cfg.network.router)?;
        let mut fw = Firewall::open().context("opening the nftables netlink socket")?;
        let now = Instant::now();
        let mut core = Core::new(&cfg);
        // Reconcile: bindings a previous run left in the kernel are taken over, so clients
        // keep their addresses and their traffic across a restart.
        let carried = fw
            .leases()
            .context("reading the leases a previous run left in the kernel")?;
        let restored = core.restore(&carried, now);
        install(&mut fw, &cfg, &core, now)?;
        let dhcp = dhcp::socket(&cfg.network.interface).with_context(|| {
            format!(
                "opening the DHCP server socket (UDP 67) on {}",
                cfg.network.interface
            )
        })?;
        let mut d = Daemon {
            path,
            cfg,
            core,
            fw,
            dhcp,
        };
        d.log_events();
        info!(
            "ready: table inet {TABLE} installed, DHCP serving {} on {}, {} lease(s) restored",
            d.cfg.network.subnet, d.cfg.network.interface, restored
        );
        Ok(d)
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut check = tokio::time::interval(TABLE_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 1500];
        loop {
            let wake = self
                .core
                .next_deadline()
                .map(|d| d.saturating_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                r = self.dhcp.recv_from(&mut buf) => match r {
                    Ok((n, _)) => self.on_dhcp(&buf[..n]).await,
                    Err(e) => warn!("DHCP socket: {e}"),
                },
                _ = tokio::time::sleep(wake) => {
                    let changes = self.core.handle_timeout(Instant::now());
                    if let Err(e) = self.fw.apply(&changes) {
                        error!("ending expired leases in the kernel: {e}");
                    }
                }
                _ = hup.recv() => self.reload(),
                _ = check.tick() => self.ensure_table(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            self.log_events();
        }
        // Fail-closed: the table stays, so the network stays as closed as it was; bindings
        // run out with their leases since nobody renews them.
        info!("stopping; table inet {TABLE} stays in place (provisionerd --flush removes it)");
        Ok(())
    }

    async fn on_dhcp(&mut self, packet: &[u8]) {
        let Some((req, header)) = dhcp::parse(packet) else {
            return;
        };
        let decision = self.core.handle_dhcp(req, Instant::now());
        // The binding must be in the kernel before the client learns its address.
        if let Err(e) = self.fw.apply(&decision.changes) {
            error!(
                "updating the lease set for {}: {e}; not answering, the client will retry",
                header.chaddr
            );
            return;
        }
        if let Some(reply) = decision.reply {
            let params = dhcp::Params {
                router: self.cfg.network.router,
                subnet: self.cfg.network.subnet,
            };
            let (bytes, dest) = dhcp::reply(&header, reply, &params);
            if let Err(e) = self.dhcp.send_to(&bytes, dest).await {
                warn!("sending a DHCP reply to {} at {dest}: {e}", header.chaddr);
            }
        }
    }

    /// SIGHUP: re-read the config; a bad one is reported and the running one kept.
    fn reload(&mut self) {
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload: {e}; keeping the last good configuration");
                return;
            }
        };
        let now = Instant::now();
        let mut core = self.core.clone();
        core.reconfigure(&new, now);
        let socket = if new.network.interface != self.cfg.network.interface {
            match prepare_interface(&new.network.interface, new.network.router)
                .and_then(|_| Ok(dhcp::socket(&new.network.interface)?))
            {
                Ok(s) => Some(s),
                Err(e) => {
                    error!("reload: {e:#}; keeping the last good configuration");
                    return;
                }
            }
        } else {
            None
        };
        if let Err(e) = install(&mut self.fw, &new, &core, now) {
            error!("reload: {e:#}; keeping the last good configuration");
            return;
        }
        if let Some(s) = socket {
            self.dhcp = s;
        }
        self.core = core;
        self.cfg = new;
        info!("reloaded {}", self.path.display());
    }

    fn ensure_table(&mut self) {
        match self.fw.table_exists() {
            Ok(true) => {}
            Ok(false) => {
                warn!("table inet {TABLE} was removed from outside (fw4 flush?); restoring it");
                if let Err(e) = install(&mut self.fw, &self.cfg, &self.core, Instant::now()) {
                    error!("restoring table inet {TABLE}: {e:#}");
                }
            }
            Err(e) => warn!("checking table inet {TABLE}: {e}"),
        }
    }

    fn log_events(&mut self) {
        for e in self.core.drain_events() {
            info!(target: "audit", "{e}");
        }
    }
}

/// Builds the ruleset for `cfg` carrying the core's live bindings, installs it atomically
/// and verifies it.
fn install(fw: &mut Firewall, cfg: &Config, core: &Core, now: Instant) -> anyhow::Result<()> {
    let rs = Ruleset::build(cfg, &core.bindings(now));
    fw.install(&rs)
        .with_context(|| format!("installing table inet {TABLE}"))
}

/// IPv6 is off on the provisioning interface: no addresses, no router advertisements, so
/// there is nothing for a client to use as a bypass (the table drops IPv6 as well).
fn prepare_interface(interface: &IfName, router: Ipv4Addr) -> anyhow::Result<()> {
    if nix::net::if_::if_nametoindex(interface.as_str()).is_err() {
        bail!("the provisioning interface {interface} does not exist");
    }
    let knob = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    if Path::new(&knob).exists() {
        std::fs::write(&knob, "1").with_context(|| format!("turning IPv6 off: writing {knob}"))?;
    }
    let has_router = nix::ifaddrs::getifaddrs()
        .map(|mut addrs| {
            addrs.any(|a| {
                a.interface_name == interface.as_str()
                    && a.address
                        .and_then(|s| s.as_sockaddr_in().map(|s| s.ip() == router))
                        .unwrap_or(false)
            })
        })
        .unwrap_or(false);
    if !has_router {
        warn!(
            "{interface} does not carry the router address {router}: clients will be sent to a gateway and DNS server that is not there"
        );
    }
    Ok(())
}

/// `provisionerd --flush`: remove the table on purpose.
pub fn flush() -> anyhow::Result<()> {
    let mut fw = Firewall::open().context("opening the nftables netlink socket")?;
    if fw.flush()? {
        info!("table inet {TABLE} removed: the provisioning network is no longer restricted");
    } else {
        info!("table inet {TABLE} was not there");
    }
    Ok(())
}
