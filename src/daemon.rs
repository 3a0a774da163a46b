//! The I/O loop: turns packets, signals and timers into core inputs and carries out what the
//! core returns. It holds no policy of its own.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::{Config, IfName};
use crate::core::Core;
use crate::core::time::Instant;
use crate::dhcp;
use crate::dns::{self, Out, Resolver, Route, TcpQuestion};
use crate::firewall::{Firewall, Ruleset, TABLE};

/// How often the daemon checks that its table is still there (an `fw4 flush` or a
/// hand-typed `nft flush ruleset` removes it) and puts it back.
const TABLE_CHECK: Duration = Duration::from_secs(1);
/// DNS datagrams taken in one loop turn: their set changes go to the kernel as one batch.
const DNS_BATCH: usize = 64;

pub fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(async { Daemon::start(path.to_owned(), cfg)?.run().await })
}

/// The DNS server's sockets on the router's provisioning address.
struct DnsSockets {
    udp: UdpSocket,
    tcp_rx: mpsc::Receiver<TcpQuestion>,
    tcp_task: JoinHandle<()>,
}

impl DnsSockets {
    fn open(router: Ipv4Addr) -> anyhow::Result<Self> {
        let addr = SocketAddrV4::new(router, 53);
        let context =
            || format!("opening the DNS server on {addr} (is another DNS server using it?)");
        let udp = UdpSocket::from_std(std::net::UdpSocket::from(
            bound(addr, SockType::Datagram).with_context(context)?,
        ))?;
        let fd = bound(addr, SockType::Stream).with_context(context)?;
        socket::listen(&fd, socket::Backlog::new(64).expect("valid backlog"))
            .with_context(context)?;
        let tcp = TcpListener::from_std(std::net::TcpListener::from(fd))?;
        let (tx, tcp_rx) = mpsc::channel(64);
        let tcp_task = tokio::spawn(dns::serve_tcp(tcp, tx));
        Ok(DnsSockets {
            udp,
            tcp_rx,
            tcp_task,
        })
    }
}

impl Drop for DnsSockets {
    fn drop(&mut self) {
        self.tcp_task.abort();
    }
}

/// A non-blocking socket bound to `addr`, even before the address is configured
/// (IP_FREEBIND): netifd may bring the interface up after us.
fn bound(addr: SocketAddrV4, ty: SockType) -> nix::Result<std::os::fd::OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Inet,
        ty,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )?;
    // SAFETY: round-trips the owned fd through a raw fd without duplicating or closing it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd.into_raw_fd()) })
}

struct Daemon {
    path: PathBuf,
    cfg: Config,
    core: Core,
    fw: Firewall,
    dhcp: UdpSocket,
    dns: DnsSockets,
    resolver: Resolver,
}

impl Daemon {
    fn start(path: PathBuf, cfg: Config) -> anyhow::Result<Daemon> {
        prepare_interface(&cfg.network.interface, cfg.network.router)?;
        let mut fw = Firewall::open().context("opening the nftables netlink socket")?;
        let now = Instant::now();
        let mut core = Core::new(&cfg);
        core.set_router_addresses(&cfg, &router_addresses());
        // Reconcile: bindings and learned addresses a previous run left in the kernel are
        // taken over, so clients keep their addresses and their traffic across a restart.
        let carried = fw
            .leases()
            .context("reading the leases a previous run left in the kernel")?;
        let learned = fw
            .learned()
            .context("reading the learned addresses a previous run left in the kernel")?;
        let restored = core.restore(&carried, &learned, now);
        install(&mut fw, &cfg, &core, now)?;
        let dhcp = dhcp::socket(&cfg.network.interface).with_context(|| {
            format!(
                "opening the DHCP server socket (UDP 67) on {}",
                cfg.network.interface
            )
        })?;
        let dns = DnsSockets::open(cfg.network.router)?;
        let resolver = Resolver::new(&cfg);
        let mut d = Daemon {
            path,
            cfg,
            core,
            fw,
            dhcp,
            dns,
            resolver,
        };
        d.log_events();
        info!(
            "ready: table inet {TABLE} installed, DHCP serving {} on {}, DNS on {}:53, {} lease(s) restored",
            d.cfg.network.subnet, d.cfg.network.interface, d.cfg.network.router, restored
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
        let mut dns_buf = vec![0u8; 4096];
        loop {
            let wake = self
                .core
                .next_deadline()
                .map(|d| d.saturating_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            let mut out = Out::default();
            tokio::select! {
                r = self.dhcp.recv_from(&mut buf) => match r {
                    Ok((n, _)) => self.on_dhcp(&buf[..n]).await,
                    Err(e) => warn!("DHCP socket: {e}"),
                },
                r = self.dns.udp.recv_from(&mut dns_buf) => {
                    let now = Instant::now();
                    let mut next = r.map_err(|e| warn!("DNS socket: {e}")).ok();
                    // Take what else is waiting (up to a batch), so that its set changes
                    // share one transaction; the rest waits for the next turn, unread.
                    for taken in 1..=DNS_BATCH {
                        let Some((n, src)) = next else { break };
                        self.resolver.question(&mut self.core, &dns_buf[..n], src, Route::Udp(src), now, &mut out);
                        if taken == DNS_BATCH {
                            break;
                        }
                        next = self.dns.udp.try_recv_from(&mut dns_buf).ok();
                    }
                }
                Some(q) = self.dns.tcp_rx.recv() => {
                    self.resolver.question(&mut self.core, &q.bytes, q.src, Route::Tcp(q.reply), Instant::now(), &mut out);
                }
                done = self.resolver.done() => {
                    self.resolver.upstream_done(&mut self.core, done, Instant::now(), &mut out);
                }
                _ = tokio::time::sleep(wake) => {
                    out.changes = self.core.handle_timeout(Instant::now());
                }
                _ = hup.recv() => self.reload(),
                _ = check.tick() => self.ensure_table(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            self.flush(out).await;
            self.log_events();
        }
        // Fail-closed: the table stays, so the network stays as closed as it was; bindings
        // run out with their leases since nobody renews them.
        info!("stopping; table inet {TABLE} stays in place (provisionerd --flush removes it)");
        Ok(())
    }

    /// Applies a turn's set changes in one transaction, then sends the replies that
    /// depend on them (or SERVFAIL where the change could not be made).
    async fn flush(&mut self, out: Out) {
        let applied = match self.fw.apply(&out.changes) {
            Ok(()) => true,
            Err(e) => {
                error!("updating the sets ({} change(s)): {e}", out.changes.len());
                false
            }
        };
        for r in out.replies {
            let bytes = match (applied, r.servfail) {
                (false, Some(servfail)) => servfail,
                _ => r.bytes,
            };
            match r.route {
                Route::Udp(to) => {
                    if let Err(e) = self.dns.udp.send_to(&bytes, to).await {
                        debug!("DNS reply to {to}: {e}");
                    }
                }
                Route::Tcp(conn) => {
                    let _ = conn.send(bytes);
                }
            }
        }
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
        core.set_router_addresses(&new, &router_addresses());
        let dns = if new.network.router != self.cfg.network.router {
            match DnsSockets::open(new.network.router) {
                Ok(d) => Some(d),
                Err(e) => {
                    error!("reload: {e:#}; keeping the last good configuration");
                    return;
                }
            }
        } else {
            None
        };
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
        if let Some(d) = dns {
            self.dns = d;
        }
        self.resolver.reconfigure(&new);
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
            if e.is_chatty() {
                debug!(target: "audit", "{e}");
            } else {
                info!(target: "audit", "{e}");
            }
        }
    }
}

/// Builds the ruleset for `cfg` carrying the core's live bindings, installs it atomically
/// and verifies it.
fn install(fw: &mut Firewall, cfg: &Config, core: &Core, now: Instant) -> anyhow::Result<()> {
    let rs = Ruleset::build(cfg, &core.bindings(now), &core.learned(now));
    fw.install(&rs)
        .with_context(|| format!("installing table inet {TABLE}"))
}

/// Every IPv4 address the router has: never to be learned from a DNS answer.
fn router_addresses() -> Vec<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
                .collect()
        })
        .unwrap_or_default()
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
