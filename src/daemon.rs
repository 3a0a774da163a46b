//! The I/O loop: turns packets, signals and timers into core inputs and carries out what the
//! core returns. It holds no policy of its own.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::{Config, IfName};
use crate::control::{self, Order, Request, json_str};
use crate::core::time::Instant;
use crate::core::window::LocalTime;
use crate::core::{Core, DhcpSender, Effects, RadioCommand, SetChange};
use crate::dhcp;
use crate::dns::datagrams::{self, Inbox};
use crate::dns::{self, Out, Resolver, Route, TcpQuestion};
use crate::firewall::netlink::Monitor;
use crate::firewall::nflog::{self, Nflog};
use crate::firewall::{Firewall, Ruleset, TABLE};
use crate::net::Segment;
use crate::net::monitor::LinkMonitor;
use crate::radio::hostapd::Event as RadioEvent;
use crate::radio::link::RadioLink;

/// How often the daemon checks that its table is still there (an `fw4 flush` or a
/// hand-typed `nft flush ruleset` removes it) and puts it back.
const TABLE_CHECK: Duration = Duration::from_secs(1);

/// Where things are.
#[derive(Clone, Debug)]
pub struct Paths {
    pub config: PathBuf,
    /// The control socket (`provisionerctl`).
    pub control: PathBuf,
    /// Runtime files: a managed hostapd's config, our hostapd control sockets.
    pub run_dir: PathBuf,
}

pub fn run(paths: Paths) -> anyhow::Result<()> {
    let cfg = Config::load(&paths.config)?;
    warn_not_enforced(&cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(async { Daemon::start(paths, cfg)?.run().await })
}

fn warn_not_enforced(cfg: &Config) {
    for option in cfg.not_enforced() {
        warn!("{}", Config::not_enforced_warning(option));
    }
}

/// Local wall-clock time, for schedules.
fn local_now() -> LocalTime {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec())
        .unwrap_or(0);
    // SAFETY: localtime_r only writes the struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&t, &mut tm) };
    LocalTime {
        weekday: ((tm.tm_wday + 6) % 7) as u8,
        minute: (tm.tm_hour * 60 + tm.tm_min) as u16,
    }
}

/// The DNS server's sockets on the router's provisioning address, bound to the
/// provisioning interface: the kernel hands them only what arrived there (redirected DNS
/// included), so a host on the WAN or the home LAN that asks the provisioning address gets
/// no answer, and cannot ask in a client's name either.
struct DnsSockets {
    udp: UdpSocket,
    tcp_rx: mpsc::Receiver<TcpQuestion>,
    tcp_task: JoinHandle<()>,
}

impl DnsSockets {
    fn open(interface: &IfName, router: Ipv4Addr) -> anyhow::Result<Self> {
        let addr = SocketAddrV4::new(router, 53);
        let context = || {
            format!(
                "opening the DNS server on {addr} on {interface} (is another DNS server using it?)"
            )
        };
        let udp = UdpSocket::from_std(std::net::UdpSocket::from(
            bound(addr, interface, SockType::Datagram).with_context(context)?,
        ))?;
        let fd = bound(addr, interface, SockType::Stream).with_context(context)?;
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

/// A non-blocking socket bound to `addr` on `interface` (SO_BINDTODEVICE), even before the
/// address is configured (IP_FREEBIND): netifd may bring the interface up after us.
fn bound(
    addr: SocketAddrV4,
    interface: &IfName,
    ty: SockType,
) -> nix::Result<std::os::fd::OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Inet,
        ty,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    socket::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(interface.as_str()),
    )?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )?;
    // SAFETY: round-trips the owned fd through a raw fd without duplicating or closing it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd.into_raw_fd()) })
}

struct Daemon {
    paths: Paths,
    cfg: Config,
    core: Core,
    fw: Firewall,
    /// DHCP replies leave by this socket...
    dhcp: UdpSocket,
    /// ...and requests come in by this one, with the frame's source and port.
    dhcp_in: AsyncFd<dhcp::Listener>,
    /// The bridge's ports (isolated) and the router's neighbour entries for clients.
    segment: Segment,
    /// Link announcements: a port that joins the bridge is isolated at once.
    links: Option<AsyncFd<LinkMonitor>>,
    /// What our drop rules logged (refused ARP).
    nflog: Option<AsyncFd<Nflog>>,
    dns: DnsSockets,
    resolver: Resolver,
    radio: Option<RadioLink>,
    /// Announcements of ruleset changes: our table deleted from outside is put back at once.
    monitor: Option<AsyncFd<Monitor>>,
    orders: mpsc::Receiver<Order>,
    control_task: JoinHandle<()>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.control_task.abort();
        let _ = std::fs::remove_file(&self.paths.control);
    }
}

impl Daemon {
    fn start(paths: Paths, cfg: Config) -> anyhow::Result<Daemon> {
        prepare_interface(&cfg.network.interface, cfg.network.router)?;
        let mut fw = Firewall::open().context("opening the nftables netlink socket")?;
        let now = Instant::now();
        let mut core = Core::new(&cfg);
        core.set_router_addresses(&cfg, &router_addresses());
        // Reconcile: what a previous run left in the kernel (clients with their session
        // clocks, bans, bindings, learned addresses) is taken over, so a restart costs
        // nobody their address, their traffic or a fresh session.
        let kernel = fw
            .snapshot(now)
            .context("reading what a previous run left in the kernel")?;
        let restored = core.restore(&kernel, now);
        if let Some(until) = read_window(&paths.run_dir) {
            core.restore_window(until, now);
        }
        install(&mut fw, &cfg, &core, now)?;
        let mut segment = Segment::open(cfg.network.interface.as_str())
            .context("opening the rtnetlink socket")?;
        isolate_ports(&mut segment);
        if let Err(e) = segment.reconcile(&core.snapshot(now).leases) {
            warn!("pinning the clients' neighbour entries: {e}");
        }
        let (dhcp, dhcp_in) = dhcp_sockets(&cfg)?;
        let dns = DnsSockets::open(&cfg.network.interface, cfg.network.router)?;
        let resolver = Resolver::new(&cfg);
        std::fs::create_dir_all(&paths.run_dir)
            .with_context(|| format!("creating {}", paths.run_dir.display()))?;
        let radio = cfg
            .radio
            .as_ref()
            .map(|r| RadioLink::new(r, cfg.limits.max_clients, &paths.run_dir));
        let listener = control::bind(&paths.control)
            .with_context(|| format!("opening the control socket {}", paths.control.display()))?;
        let (tx, orders) = mpsc::channel(16);
        let control_task = tokio::spawn(control::serve(listener, tx));
        // SAFETY: the Monitor owns its fd for as long as it lives, and the AsyncFd owns it.
        let register = |m| unsafe { AsyncFd::register(m) }.map_err(|e| e.into_parts().1);
        let monitor = match Monitor::open()
            .map_err(std::io::Error::other)
            .and_then(register)
        {
            Ok(m) => Some(m),
            Err(e) => {
                warn!(
                    "cannot watch the ruleset ({e}); a deleted table is noticed within {TABLE_CHECK:?}"
                );
                None
            }
        };
        let links = watch(
            "link announcements",
            LinkMonitor::open,
            "a port joining the bridge is isolated within a second",
        );
        let nflog = watch(
            "the kernel's log of refused ARP",
            || Nflog::open(nflog::GROUP),
            "spoofed ARP is dropped but not reported",
        );
        let mut d = Daemon {
            paths,
            cfg,
            core,
            fw,
            dhcp,
            dhcp_in,
            segment,
            links,
            nflog,
            dns,
            resolver,
            radio,
            monitor,
            orders,
            control_task,
        };
        d.log_events();
        info!(
            "ready: table inet {TABLE} installed, DHCP serving {} on {}, DNS on {}:53, {} client(s) restored",
            d.cfg.network.subnet, d.cfg.network.interface, d.cfg.network.router, restored,
        );
        Ok(d)
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut check = tokio::time::interval(TABLE_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 1600];
        let mut logged = Vec::new();
        let mut inbox = Inbox::default();
        // The window's first state: SSID up or down, and who may stay.
        let mut fx = Effects::default();
        self.core
            .handle_timeout(Instant::now(), local_now(), &mut fx);
        self.flush(Out::default(), fx).await;
        self.log_events();
        loop {
            let now = Instant::now();
            let wake = self
                .core
                .next_deadline(now)
                .map(|d| d.saturating_since(now))
                .unwrap_or(Duration::from_secs(3600));
            let mut out = Out::default();
            let mut fx = Effects::default();
            tokio::select! {
                r = self.dhcp_in.readable() => match r {
                    Ok(ready) => {
                        drop(ready);
                        self.drain_dhcp(&mut buf).await;
                    }
                    Err(e) => warn!("DHCP socket: {e}"),
                },
                _ = announced(&mut self.links) => self.on_links(),
                _ = announced(&mut self.nflog) => self.on_logged(&mut logged),
                r = self.dns.udp.readable() => {
                    let now = Instant::now();
                    // Everything waiting, up to a batch, in one call: its set changes share
                    // one transaction, and its replies one sendmmsg. The rest waits, unread.
                    let udp = &self.dns.udp;
                    let got = r.and_then(|()| {
                        udp.try_io(Interest::READABLE, || inbox.recv(udp.as_raw_fd()))
                    });
                    match got {
                        Ok(_) => {
                            for (bytes, src) in inbox.iter() {
                                let src = SocketAddr::V4(src);
                                self.resolver.question(&mut self.core, bytes, src, Route::Udp(src), now, &mut out);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => warn!("DNS socket: {e}"),
                    }
                }
                Some(q) = self.dns.tcp_rx.recv() => {
                    self.resolver.question(&mut self.core, &q.bytes, q.src, Route::Tcp(q.reply), Instant::now(), &mut out);
                }
                done = self.resolver.done() => {
                    self.resolver.upstream_done(&mut self.core, done, Instant::now(), &mut out);
                }
                ev = next_radio_event(&mut self.radio) => self.on_radio_event(ev, &mut fx),
                deleted = table_deleted(&mut self.monitor) => if deleted {
                    self.ensure_table("announced by the kernel");
                },
                Some(order) = self.orders.recv() => self.on_order(order, &mut fx),
                _ = tokio::time::sleep(wake) => {
                    self.core.handle_timeout(Instant::now(), local_now(), &mut fx);
                }
                _ = hup.recv() => self.reload(),
                _ = check.tick() => {
                    self.ensure_table("found missing");
                    isolate_ports(&mut self.segment);
                    self.maintain_radio(&mut fx).await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            self.flush(out, fx).await;
            self.log_events();
        }
        // Fail-closed: the table stays, so the network stays as closed as it was; clients'
        // elements run out with their sessions and leases since nobody renews them.
        info!("stopping; table inet {TABLE} stays in place (provisionerd --flush removes it)");
        Ok(())
    }

    /// Applies a turn's set changes in one transaction, then sends the radio commands and
    /// the DNS replies that depend on them (or SERVFAIL where a change could not be made).
    async fn flush(&mut self, mut out: Out, fx: Effects) {
        let mut changes = fx.changes;
        changes.append(&mut out.changes);
        let applied = match self.fw.apply(&changes) {
            Ok(()) => true,
            Err(e) => {
                error!("updating the sets ({} change(s)): {e}", changes.len());
                false
            }
        };
        if applied {
            self.follow_leases(&changes);
        }
        if let Some(r) = self.radio.as_mut() {
            r.apply(&fx.radio).await;
        }
        let mut datagrams = Vec::new();
        for r in out.replies {
            let bytes = match (applied, r.servfail) {
                (false, Some(servfail)) => servfail,
                _ => r.bytes,
            };
            match r.route {
                Route::Udp(SocketAddr::V4(to)) => datagrams.push((bytes, to)),
                Route::Udp(SocketAddr::V6(_)) => {}
                // Never waits: the connection has room for its one answer (or is gone).
                Route::Tcp(conn) => {
                    let _ = conn.try_send(bytes);
                }
            }
        }
        self.send_dns(&datagrams).await;
    }

    /// Sends UDP replies, a batch per system call. When the socket's buffer is full the
    /// next reply waits for room; a reply the kernel refuses is dropped (the client asks
    /// again).
    async fn send_dns(&mut self, msgs: &[(Vec<u8>, SocketAddrV4)]) {
        let udp = &self.dns.udp;
        let mut sent = 0;
        while sent < msgs.len() {
            let rest = &msgs[sent..];
            match udp.try_io(Interest::WRITABLE, || {
                datagrams::send(udp.as_raw_fd(), rest)
            }) {
                // (At least one: sendmmsg reports no empty success, and a loop must end.)
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = udp.send_to(&rest[0].0, rest[0].1).await {
                        debug!("DNS reply to {}: {e}", rest[0].1);
                    }
                    sent += 1;
                }
                Err(e) => {
                    debug!("DNS reply to {}: {e}", rest[0].1);
                    sent += 1;
                }
            }
        }
    }

    fn on_radio_event(
        &mut self,
        ev: Result<RadioEvent, crate::radio::hostapd::HostapdError>,
        fx: &mut Effects,
    ) {
        let now = Instant::now();
        match ev {
            Ok(RadioEvent::StaConnected(mac)) => self.core.station_joined(mac, now, fx),
            Ok(RadioEvent::StaDisconnected(mac)) => self.core.station_left(mac, now, fx),
            Ok(_) => {}
            Err(e) => {
                if let Some(r) = self.radio.as_mut() {
                    r.lost(&e);
                }
            }
        }
    }

    /// Keeps the radio link up; after a (re)connect, hostapd's station table and deny list
    /// are brought in line with the core.
    async fn maintain_radio(&mut self, fx: &mut Effects) {
        let Some(r) = self.radio.as_mut() else {
            return;
        };
        let Some(present) = r.maintain().await else {
            return;
        };
        let now = Instant::now();
        // Bans outlive a hostapd restart: deny them again.
        fx.radio.extend(
            self.core
                .snapshot(now)
                .bans
                .iter()
                .map(|(mac, _)| RadioCommand::DenyAdd(*mac)),
        );
        self.core.reconcile_stations(&present, now, fx);
    }

    fn on_order(&mut self, order: Order, fx: &mut Effects) {
        let now = Instant::now();
        let reply = match order.request {
            Request::Status => self.status_json(now),
            Request::WindowOpen(minutes) => {
                let until = self.core.open_window(
                    minutes.map(|m| Duration::from_secs(m * 60)),
                    now,
                    local_now(),
                    fx,
                );
                write_window(&self.paths.run_dir, Some(until));
                format!(
                    "{{\"window\":\"open\",\"secs\":{}}}",
                    until.saturating_since(now).as_secs()
                )
            }
            Request::WindowClose => {
                write_window(&self.paths.run_dir, None);
                self.core.close_window(now, local_now(), fx);
                format!(
                    "{{\"window\":\"{}\"}}",
                    if self.core.window_is_open() {
                        "open"
                    } else {
                        "closed"
                    }
                )
            }
        };
        let _ = order.reply.send(reply);
    }

    fn status_json(&self, now: Instant) -> String {
        let snap = self.core.snapshot(now);
        let clients: Vec<String> = snap
            .clients
            .iter()
            .map(|(c, left)| {
                let ip = snap
                    .leases
                    .iter()
                    .find(|l| l.mac == c.mac)
                    .map_or("null".into(), |l| json_str(&l.ip.to_string()));
                format!(
                    "{{\"mac\":{},\"ip\":{ip},\"age\":{},\"session_left\":{}}}",
                    json_str(&c.mac.to_string()),
                    now.saturating_since(c.since).as_secs(),
                    left.as_secs()
                )
            })
            .collect();
        let bans: Vec<String> = snap
            .bans
            .iter()
            .map(|(mac, left)| {
                format!(
                    "{{\"mac\":{},\"left\":{}}}",
                    json_str(&mac.to_string()),
                    left.as_secs()
                )
            })
            .collect();
        let until = self.core.window_until(now).map_or("null".into(), |u| {
            u.saturating_since(now).as_secs().to_string()
        });
        format!(
            "{{\"window\":{{\"open\":{},\"secs_left\":{until}}},\"radio\":{},\"clients\":[{}],\"bans\":[{}]}}",
            self.core.window_is_open(),
            match &self.radio {
                None => "null",
                Some(r) if r.is_connected() => "\"connected\"",
                Some(_) => "\"disconnected\"",
            },
            clients.join(","),
            bans.join(",")
        )
    }

    async fn on_dhcp(&mut self, buf: &[u8], frame: dhcp::Frame) {
        let Some(msg) = dhcp::parse(&buf[frame.payload.clone()]) else {
            return;
        };
        // The bridge learned the frame's port from the frame itself, before passing it up.
        let port = self.segment.port_of(frame.src).unwrap_or_else(|e| {
            debug!("looking up the bridge port of {}: {e}", frame.src);
            frame.port
        });
        let from = DhcpSender {
            frame: frame.src,
            port,
            client_id: msg.client_id,
        };
        let decision = self.core.handle_dhcp(msg.request, from, Instant::now());
        self.log_events();
        // The binding must be in the kernel before the client learns its address.
        if let Err(e) = self.fw.apply(&decision.effects.changes) {
            error!(
                "updating the lease set for {}: {e}; not answering, the client will retry",
                msg.header.chaddr
            );
            return;
        }
        self.follow_leases(&decision.effects.changes);
        if let Some(r) = self.radio.as_mut() {
            r.apply(&decision.effects.radio).await;
        }
        if let Some(reply) = decision.reply {
            let params = dhcp::Params {
                router: self.cfg.network.router,
                subnet: self.cfg.network.subnet,
            };
            let (bytes, dest) = dhcp::reply(&msg.header, reply, &params);
            if let Err(e) = self.dhcp.send_to(&bytes, dest).await {
                warn!(
                    "sending a DHCP reply to {} at {dest}: {e}",
                    msg.header.chaddr
                );
            }
        }
    }

    /// Serves the DHCP requests waiting (a bounded number per turn, so that nothing else
    /// waits behind a flood), one at a time: each may need its binding in the kernel before
    /// its reply leaves.
    async fn drain_dhcp(&mut self, buf: &mut [u8]) {
        for _ in 0..64 {
            let got = match self.dhcp_in.readable().await {
                Ok(mut ready) => match ready.try_io(|fd| fd.get_ref().recv(buf)) {
                    Ok(got) => got,
                    Err(_would_block) => return,
                },
                Err(e) => Err(e),
            };
            match got {
                Ok(Some(frame)) => self.on_dhcp(buf, frame).await,
                Ok(None) => {}
                Err(e) => {
                    warn!("DHCP socket: {e}");
                    return;
                }
            }
        }
    }

    /// The router's neighbour entries follow the bindings the kernel just took.
    fn follow_leases(&mut self, changes: &[SetChange]) {
        if let Err(e) = self.segment.follow_leases(changes) {
            warn!("pinning the clients' neighbour entries: {e}");
        }
    }

    /// Links changed: isolate any port that joined the bridge.
    fn on_links(&mut self) {
        let Some(fd) = self.links.as_mut() else {
            return;
        };
        match fd.get_mut().read() {
            Ok(false) => {}
            Ok(true) => isolate_ports(&mut self.segment),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => warn!("reading link announcements: {e}"),
        }
    }

    /// What our drop rules logged: refused ARP is a spoofing attempt to grade.
    fn on_logged(&mut self, logged: &mut Vec<nflog::Logged>) {
        let Some(fd) = self.nflog.as_mut() else {
            return;
        };
        logged.clear();
        if let Err(e) = fd.get_mut().read(logged) {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                warn!("reading the kernel's log: {e}");
            }
        }
        let now = Instant::now();
        for l in logged.iter().filter(|l| l.prefix == nflog::PREFIX_ARP) {
            if let Some(arp) = nflog::Arp::parse(&l.payload) {
                self.core
                    .arp_refused(l.src, arp.sender_mac, arp.sender_ip, now);
            }
        }
    }

    /// SIGHUP: re-read the config; a bad one is reported and the running one kept.
    fn reload(&mut self) {
        let new = match Config::load(&self.paths.config) {
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
        // Bound to another device, new sockets do not clash with the old ones on the same
        // address.
        let dns = if new.network.interface != self.cfg.network.interface
            || new.network.router != self.cfg.network.router
        {
            match DnsSockets::open(&new.network.interface, new.network.router) {
                Ok(d) => Some(d),
                Err(e) => {
                    error!("reload: {e:#}; keeping the last good configuration");
                    return;
                }
            }
        } else {
            None
        };
        let socket = if new.network.interface != self.cfg.network.interface
            || new.network.router != self.cfg.network.router
        {
            match prepare_interface(&new.network.interface, new.network.router)
                .and_then(|_| dhcp_sockets(&new))
                .and_then(|s| {
                    let segment = Segment::open(new.network.interface.as_str())
                        .context("opening the rtnetlink socket")?;
                    Ok((s, segment))
                }) {
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
        if let Some(((out, listener), segment)) = socket {
            self.dhcp = out;
            self.dhcp_in = listener;
            self.segment = segment;
            isolate_ports(&mut self.segment);
            if let Err(e) = self.segment.reconcile(&core.snapshot(now).leases) {
                warn!("pinning the clients' neighbour entries: {e}");
            }
        }
        if let Some(d) = dns {
            self.dns = d;
        }
        self.resolver.reconfigure(&new);
        warn_not_enforced(&new);
        self.core = core;
        self.cfg = new;
        info!("reloaded {}", self.paths.config.display());
    }

    /// Puts the table back if someone removed it. `how`: what made us look.
    fn ensure_table(&mut self, how: &str) {
        match self.fw.table_exists() {
            Ok(true) => {}
            Ok(false) => {
                let started = std::time::Instant::now();
                match install(&mut self.fw, &self.cfg, &self.core, Instant::now()) {
                    Ok(()) => warn!(
                        "table inet {TABLE} was removed from outside (fw4 flush?; {how}); restored with its elements in {} ms",
                        started.elapsed().as_millis()
                    ),
                    Err(e) => error!(
                        "table inet {TABLE} was removed from outside ({how}); restoring it: {e:#}"
                    ),
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
    let rs = Ruleset::build(cfg, &core.snapshot(now));
    fw.install(&rs)
        .with_context(|| format!("installing table inet {TABLE}"))
}

/// Where an on-demand window's end is kept across a restart of the daemon (the run
/// directory is on tmpfs: a reboot closes the window, as it should).
fn window_file(run_dir: &Path) -> PathBuf {
    run_dir.join("window")
}

fn read_window(run_dir: &Path) -> Option<Instant> {
    let text = std::fs::read_to_string(window_file(run_dir)).ok()?;
    text.trim().parse().ok().map(Instant::from_millis)
}

fn write_window(run_dir: &Path, until: Option<Instant>) {
    let path = window_file(run_dir);
    let result = match until {
        Some(u) => std::fs::write(&path, u.as_millis().to_string()),
        None => std::fs::remove_file(&path).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        }),
    };
    if let Err(e) = result {
        warn!("{}: {e}; a restart would close the window", path.display());
    }
}

/// The DHCP server's sockets: replies out, requests in.
fn dhcp_sockets(cfg: &Config) -> anyhow::Result<(UdpSocket, AsyncFd<dhcp::Listener>)> {
    let net = &cfg.network;
    let context = || format!("opening the DHCP server (port 67) on {}", net.interface);
    let out = dhcp::socket(&net.interface).with_context(context)?;
    let listener = dhcp::Listener::open(&net.interface)
        .and_then(register)
        .with_context(context)?;
    Ok((out, listener))
}

/// Isolates the bridge ports that are not yet; failures are logged (and retried by the
/// next check).
fn isolate_ports(segment: &mut Segment) {
    match segment.isolate_ports() {
        Ok(ports) => {
            for port in ports {
                info!(target: "audit", "event=port_isolated port={port}");
            }
        }
        Err(e) => warn!("isolating the provisioning bridge's ports: {e}"),
    }
}

/// Opens a non-blocking netlink listener for the loop; without it the daemon still works,
/// and says what is lost.
fn watch<T: std::os::fd::AsRawFd>(
    what: &str,
    open: impl FnOnce() -> Result<T, crate::netlink::NetlinkError>,
    without: &str,
) -> Option<AsyncFd<T>> {
    match open().map_err(std::io::Error::other).and_then(register) {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!("cannot watch {what} ({e}): {without}");
            None
        }
    }
}

/// Hands `fd` to the event loop.
fn register<T: std::os::fd::AsRawFd>(fd: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: every T here owns its descriptor for as long as it lives, and the AsyncFd
    // owns the T: the descriptor is neither closed nor replaced while registered.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Waits until a listener has something (the caller then reads all of it); never
/// resolves without one.
async fn announced<T: std::os::fd::AsRawFd>(fd: &mut Option<AsyncFd<T>>) {
    let Some(fd) = fd.as_mut() else {
        return std::future::pending().await;
    };
    match fd.readable_mut().await {
        Ok(mut guard) => guard.clear_ready(),
        Err(_) => std::future::pending().await,
    }
}

/// Waits for ruleset announcements; true if our table may have been deleted. Never
/// resolves without a monitor.
async fn table_deleted(monitor: &mut Option<AsyncFd<Monitor>>) -> bool {
    let Some(fd) = monitor.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return std::future::pending().await;
        };
        match guard.try_io(|m| m.get_mut().read(TABLE)) {
            Ok(Ok(deleted)) => return deleted,
            Ok(Err(e)) => {
                warn!("ruleset monitor: {e}");
                return false;
            }
            Err(_would_block) => continue,
        }
    }
}

/// The next hostapd event, or never when there is no radio.
async fn next_radio_event(
    radio: &mut Option<RadioLink>,
) -> Result<RadioEvent, crate::radio::hostapd::HostapdError> {
    match radio.as_mut() {
        Some(r) => r.next_event().await,
        None => std::future::pending().await,
    }
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
    if fw.remove_tables()? {
        info!("table inet {TABLE} removed: the provisioning network is no longer restricted");
    } else {
        info!("table inet {TABLE} was not there");
    }
    Ok(())
}
