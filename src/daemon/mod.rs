//! The I/O loop: turns packets, signals and timers into the provisioner's inputs and carries
//! out what it decided, by draining its outbox after every input. It holds no policy of its
//! own: the loop (here), its sockets and listeners ([`sockets`]), and what it asks of the
//! system ([`system`]).

mod alarm;
mod allow;
mod clients;
mod metrics;
mod sockets;
mod system;

use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::control::audit::EventLine;
use crate::control::protocol::{self, RadioState, Status, WindowState};
use crate::control::{self, Failure, FailureKind, Order, Reply, Request};
use crate::core::events::{Event, FlowBlock};
use crate::core::journal::{self, Journal};
use crate::core::outbox::DhcpOut;
use crate::core::settings::Settings;
use crate::core::time::{Instant, WallTime};
use crate::core::{Command, DhcpSender, MacAddr, Provisioner, SetChange};
use crate::dhcp;
use crate::dns::datagrams::{self, Inbox};
use crate::dns::{self, Resolver, Route};
use crate::firewall::netlink::Monitor;
use crate::firewall::nflog::{self, Nflog};
use crate::firewall::{Firewall, Ruleset, TABLE};
use crate::net::Segment;
use crate::net::monitor::LinkMonitor;
use crate::radio::hostapd::Event as RadioEvent;
use crate::radio::link::RadioLink;
use sockets::{
    DnsSockets, announced, dhcp_sockets, next_radio_event, register, socks_listener, table_deleted,
    watch,
};
use system::{local_now, prepare_interface, read_window, router_addresses, write_window};

pub use system::remove_tables;

/// How often the daemon checks that its tables are still there (an `fw4 flush` or a
/// hand-typed `nft flush ruleset` removes them) and puts them back.
const TABLE_CHECK: Duration = Duration::from_secs(1);

/// Where things are.
#[derive(Clone, Debug)]
pub struct Paths {
    pub config: PathBuf,
    /// The control socket (`provisionerctl`).
    pub control: PathBuf,
    /// Runtime files: a managed hostapd's config, our hostapd control sockets, the window.
    pub run_dir: PathBuf,
    /// ubusd's socket, where the daemon provides the object `provisioner`; none: no ubus.
    pub ubus: Option<PathBuf>,
}

/// `json_log`: audit lines as JSON objects (`--log-format json`).
pub fn run(paths: Paths, json_log: bool) -> anyhow::Result<()> {
    let cfg = Config::load(&paths.config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(async { Daemon::start(paths, cfg, json_log)?.run().await })
}

struct Daemon {
    paths: Paths,
    cfg: Config,
    provisioner: Provisioner,
    fw: Firewall,
    /// DHCP replies leave by this socket...
    dhcp: UdpSocket,
    /// ...and requests come in by this one, with the frame's source.
    dhcp_in: AsyncFd<dhcp::Listener>,
    /// The bridge's ports (isolated) and the router's neighbour entries for clients.
    segment: Segment,
    /// Link and address announcements: a port that joins the bridge is isolated at once, a
    /// recreated provisioning interface taken back, the router's addresses followed.
    links: Option<AsyncFd<LinkMonitor>>,
    /// The provisioning interface's index the sockets and device hooks are on (`None`:
    /// it is gone).
    interface_index: Option<u32>,
    /// The router's addresses the rebinding guard was last given.
    router_addrs: Vec<std::net::Ipv4Addr>,
    /// What our drop rules logged (refused ARP).
    nflog: Option<AsyncFd<Nflog>>,
    dns: DnsSockets,
    resolver: Resolver,
    radio: Option<RadioLink>,
    /// Announcements of ruleset changes: our tables deleted from outside are put back at
    /// once.
    monitor: Option<AsyncFd<Monitor>>,
    orders: mpsc::Receiver<Order>,
    control_task: JoinHandle<()>,
    /// The ubus object (`Paths::ubus`).
    ubus_task: Option<JoinHandle<()>>,
    /// DNS replies of a turn, sent together.
    replies: Vec<dns::Reply>,
    /// The audit log's recent events, numbered...
    journal: Journal,
    /// ...and each new one for `events --follow`.
    feed: broadcast::Sender<control::Followed>,
    /// Audit lines as JSON objects (`--log-format json`) rather than key=value.
    json_log: bool,
    metrics: metrics::Metrics,
    /// Runs `threat alarm_command` for each alarm (`None`: none configured).
    alarms: Option<(alarm::Alarms, String, std::time::Duration)>,
    /// Connections of ended bindings are ended beside the loop, reported back here.
    flows: Option<crate::firewall::FlowEnder>,
    flows_done: mpsc::UnboundedReceiver<crate::firewall::FlowsEnded>,
    /// `/metrics` over HTTP (`config metrics`), and the way its requests come in.
    metrics_task: Option<JoinHandle<()>>,
    orders_tx: mpsc::Sender<Order>,
    /// When the daemon started (boot clock), and when it last loaded its config (wall
    /// clock), for `status`.
    started: Instant,
    config_loaded: std::time::SystemTime,
    /// Table checks since the counts were last read (see `clients::COUNTS_KEPT_EVERY`).
    checks: u32,
    socks: Relays,
    /// When the daily quotas' day ends (boot clock), and their last reading.
    day_end: Instant,
    quota_reading: crate::firewall::quotas::QuotaReading,
    /// An admission or ban changed since the run directory's copy was written.
    stations_changed: bool,
}

/// The SOCKS forwarder (`config socks`) as the loop sees it: its thread, what it asks,
/// and the relays it granted, checked whenever something may have ended what let them
/// open.
struct Relays {
    forwarder: Option<(crate::socks::Forwarder, crate::config::Socks)>,
    tx: mpsc::Sender<crate::socks::ToLoop>,
    rx: mpsc::Receiver<crate::socks::ToLoop>,
    /// Few (at most `socks total_connections`): a list.
    open: Vec<(u64, crate::core::socks::Granted, std::net::Ipv4Addr, u16)>,
    next: u64,
    /// Events were logged since the relays were last checked.
    recheck: bool,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.control_task.abort();
        if let Some(t) = &self.ubus_task {
            t.abort();
        }
        if let Some(t) = &self.metrics_task {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.paths.control);
    }
}

impl Daemon {
    fn start(paths: Paths, cfg: Config, json_log: bool) -> anyhow::Result<Daemon> {
        prepare_interface(&cfg.network.interface, cfg.network.router)?;
        let mut fw = Firewall::open().context("opening the nftables netlink socket")?;
        let now = Instant::now();
        let mut provisioner = Provisioner::new(&Settings::from(&cfg));
        let router_addrs = router_addresses();
        provisioner.set_router_addresses(&router_addrs);
        // Reconcile: what a previous run left in the kernel (clients with their session
        // clocks, bans, bindings, learned addresses) and an open window are taken over, so
        // a restart costs nobody their address, their traffic or a fresh session.
        let mut kernel = fw
            .snapshot(now)
            .context("reading what a previous run left in the kernel")?;
        if let Some(saved) = system::read_stations(&paths.run_dir) {
            let added = saved.fill_in(&mut kernel, now);
            if added > 0 {
                warn!(
                    "{added} admission(s) or ban(s) the kernel no longer held (run out, or our tables deleted while we were down) taken from {}; what ran out ends at once",
                    paths.run_dir.join("stations").display()
                );
            }
        }
        let restored = provisioner.restore(&kernel, read_window(&paths.run_dir), now);
        let day_end = now + system::until_quota_reset(cfg.limits.quota_reset);
        fw.set_day_end(day_end);
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(r) = system::read_quotas(&paths.run_dir, now_unix) {
            fw.seed_quotas(r);
        }
        install(&mut fw, &cfg, &provisioner, now)?;
        let mut segment = Segment::open(cfg.network.interface.as_str())
            .context("opening the rtnetlink socket")?;
        let isolated = isolate_ports(&mut segment);
        if let Err(e) = segment.reconcile(&provisioner.stations_snapshot(now).leases) {
            warn!("pinning the clients' neighbour entries: {e}");
        }
        let (dhcp, dhcp_in) = dhcp_sockets(&cfg)?;
        let dns = DnsSockets::open(&cfg.network.interface, cfg.network.router)?;
        let resolver = Resolver::new(&cfg);
        std::fs::create_dir_all(&paths.run_dir)
            .with_context(|| format!("creating {}", paths.run_dir.display()))?;
        let radio = cfg.radio.as_ref().map(|r| {
            RadioLink::new(
                r,
                provisioner.settings().radio_max_stations(),
                &paths.run_dir,
            )
        });
        let listener = control::bind(&paths.control)
            .with_context(|| format!("opening the control socket {}", paths.control.display()))?;
        if let Err(e) = control::share(&paths.control, cfg.control_group.as_deref()) {
            warn!("{e}");
        }
        let (flows_tx, flows_done) = mpsc::unbounded_channel();
        let flows = match crate::firewall::FlowEnder::start(flows_tx) {
            Ok(f) => Some(f),
            Err(e) => {
                warn!("connections of ended bindings are ended in the loop: {e}");
                None
            }
        };
        let (tx, orders) = mpsc::channel(16);
        let (feed, _) = broadcast::channel(control::FOLLOW_BACKLOG);
        let metrics_task = cfg.metrics.and_then(|a| serve_metrics(a, &tx));
        let control_task = tokio::spawn(control::serve(listener, tx.clone(), feed.clone()));
        let ubus_task = paths
            .ubus
            .clone()
            .map(|socket| tokio::spawn(crate::ubus::serve(socket, tx.clone())));
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
            "the kernel's log of refused ARP and flows",
            || Nflog::open(nflog::GROUP),
            "spoofed ARP and blocked flows are dropped but not reported",
        );
        let interface_index = crate::net::ifindex(cfg.network.interface.as_str());
        let (socks_tx, socks_rx) = mpsc::channel(crate::socks::QUEUE);
        let mut d = Daemon {
            socks: Relays {
                forwarder: None,
                tx: socks_tx,
                rx: socks_rx,
                open: Vec::new(),
                next: 0,
                recheck: false,
            },
            paths,
            cfg,
            provisioner,
            fw,
            dhcp,
            dhcp_in,
            segment,
            links,
            interface_index,
            router_addrs,
            nflog,
            dns,
            resolver,
            radio,
            monitor,
            orders,
            control_task,
            ubus_task,
            replies: Vec::new(),
            journal: Journal::new(journal::KEPT),
            feed,
            json_log,
            metrics: metrics::Metrics::default(),
            alarms: None,
            flows,
            flows_done,
            metrics_task,
            orders_tx: tx,
            started: now,
            config_loaded: std::time::SystemTime::now(),
            checks: 0,
            day_end,
            quota_reading: Default::default(),
            stations_changed: true,
        };
        d.set_alarms();
        d.set_socks()?;
        d.audit(Event::ConfigLoaded {
            file: d.paths.config.display().to_string().into(),
        });
        for e in isolated {
            d.audit(e);
        }
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
        self.provisioner.handle_timeout(Instant::now(), local_now());
        self.carry_out().await;
        loop {
            let now = Instant::now();
            let wake = self
                .provisioner
                .poll_timeout(now)
                .map(|(at, _)| at.saturating_since(now))
                .unwrap_or(Duration::from_secs(3600));
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
                                self.resolver.question(&mut self.provisioner, bytes, src, Route::Udp(src), now, &mut self.replies);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => warn!("DNS socket: {e}"),
                    }
                }
                Some(q) = self.dns.tcp_rx.recv() => {
                    self.resolver.question(&mut self.provisioner, &q.bytes, q.src, Route::Tcp(q.reply), Instant::now(), &mut self.replies);
                }
                Some(e) = self.dns.tcp_reports.recv() => self.audit(e),
                Some(done) = self.flows_done.recv() => self.flows_ended(done),
                done = self.resolver.done() => {
                    self.resolver.upstream_done(&mut self.provisioner, done, Instant::now(), &mut self.replies);
                }
                ev = next_radio_event(&mut self.radio) => self.on_radio_event(ev),
                deleted = table_deleted(&mut self.monitor) => if deleted {
                    self.ensure_table("announced by the kernel");
                },
                Some(order) = self.orders.recv() => self.on_order(order),
                Some(m) = self.socks.rx.recv() => self.on_socks(m),
                _ = tokio::time::sleep(wake) => {
                    self.provisioner.handle_timeout(Instant::now(), local_now());
                }
                _ = hup.recv() => {
                    let _ = self.reload();
                }
                _ = check.tick() => {
                    self.ensure_table("found missing");
                    self.follow_interface();
                    self.keep_counts();
                    self.keep_quotas();
                    self.isolate();
                    self.maintain_radio().await;
                    self.socks.recheck = true;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            self.carry_out().await;
            if std::mem::take(&mut self.socks.recheck) {
                self.check_relays();
            }
        }
        // Fail-closed: the tables stay, so the network stays as closed as it was; clients'
        // elements run out with their sessions and leases since nobody renews them.
        info!("stopping; table inet {TABLE} stays in place (provisionerd --flush removes it)");
        Ok(())
    }

    /// Drains the provisioner's outbox: DNS outcomes (which may hand it cached answers),
    /// the turn's batch of set changes (its result reported back, releasing what waited
    /// for it), commands, DHCP replies; then the DNS replies go out together and the
    /// events are logged.
    async fn carry_out(&mut self) {
        loop {
            let now = Instant::now();
            let mut progressed = false;
            while let Some(out) = self.provisioner.poll_dns() {
                progressed = true;
                self.resolver
                    .outcome(&mut self.provisioner, out, now, &mut self.replies);
            }
            if let Some(batch) = self.provisioner.poll_batch() {
                let started = std::time::Instant::now();
                let applied = self.fw.apply(&batch.changes);
                self.metrics.batch(started.elapsed(), applied.is_ok());
                match applied {
                    Ok(()) => {
                        self.follow_leases(&batch.changes);
                        self.provisioner.handle_batch_applied(batch.id);
                    }
                    Err(e) => {
                        error!(
                            "the kernel refused {} set change(s): {e}; taking back what they added",
                            batch.changes.len()
                        );
                        self.provisioner.handle_batch_refused(batch.id, now);
                    }
                }
                continue;
            }
            while let Some(c) = self.provisioner.poll_command() {
                progressed = true;
                self.command(c).await;
            }
            while let Some(out) = self.provisioner.poll_dhcp() {
                progressed = true;
                self.send_dhcp(out).await;
            }
            if !progressed {
                break;
            }
        }
        let replies = std::mem::take(&mut self.replies);
        self.metrics.dns_replies(replies.len());
        self.send_dns(replies).await;
        while let Some(e) = self.provisioner.poll_event() {
            self.audit(e);
        }
        if std::mem::take(&mut self.stations_changed) {
            let saved = self.provisioner.saved_stations(Instant::now());
            system::write_stations(&self.paths.run_dir, &saved);
        }
    }

    /// The alarm command's thread, as the config has it (started, replaced or stopped
    /// when the command or its timeout changed).
    fn set_alarms(&mut self) {
        let t = &self.cfg.threat;
        let want = t.alarm_command.clone().map(|c| (c, t.alarm_timeout));
        let have = self.alarms.as_ref().map(|(_, c, d)| (c.clone(), *d));
        if want == have {
            return;
        }
        self.alarms = want.and_then(|(c, d)| match alarm::Alarms::start(c.clone(), d) {
            Ok(a) => Some((a, c, d)),
            Err(e) => {
                warn!("threat alarm_command: cannot start its thread: {e}; alarms are logged only");
                None
            }
        });
    }

    /// Isolates the bridge ports that are not yet (retried by the next check); nothing to
    /// do while the provisioning interface is gone (said once, when it went).
    fn isolate(&mut self) {
        if self.interface_index.is_none() {
            return;
        }
        for e in isolate_ports(&mut self.segment) {
            self.audit(e);
        }
    }

    /// Logs an event and, unless it is one of those on every answer (debug only, not
    /// numbered: they would push the decisions out of the journal), numbers and keeps it
    /// and hands it to followers.
    fn audit(&mut self, e: Event) {
        self.metrics.event(&e);
        self.stations_changed |= matches!(
            e,
            Event::Admitted { .. }
                | Event::Evicted { .. }
                | Event::Left { .. }
                | Event::Banned { .. }
                | Event::Unbanned { .. }
                | Event::BanEnded { .. }
                | Event::ClientRestored { .. }
        );
        self.socks.recheck = true;
        if e.is_chatty() {
            debug!(target: "audit", "{e}");
            return;
        }
        let r = self
            .journal
            .push_graded(WallTime::now(), e, &self.provisioner.settings().threat);
        if let (Event::Alarm { .. }, Some((alarms, _, _))) = (&r.event, &self.alarms) {
            alarms.raise(EventLine::from(&*r));
        }
        let line = (self.json_log || self.feed.receiver_count() > 0).then(|| EventLine::from(&*r));
        match (&line, self.json_log) {
            (Some(l), true) => audit_line(r.level(), &l.to_json()),
            _ => audit_line(r.level(), &format_args!("{} seq={}", r.event, r.seq)),
        }
        if let Some(l) = line.filter(|_| self.feed.receiver_count() > 0) {
            let _ = self.feed.send((r.seq, Reply::Event(l).encode().into()));
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Radio(cmd) => {
                if let Some(r) = self.radio.as_mut() {
                    r.apply(&[cmd]).await;
                }
            }
            Command::EndFlows(ips) => {
                let ips = match &self.flows {
                    Some(f) => match f.end(ips) {
                        Ok(()) => return,
                        Err(ips) => ips,
                    },
                    None => ips,
                };
                // No worker (it could not start, or is gone): here, holding the loop.
                let r = self.fw.end_flows(&ips).map_err(|e| e.to_string());
                self.flows_ended((ips, r));
            }
            Command::RebuildTables => {
                if let Err(e) = install(&mut self.fw, &self.cfg, &self.provisioner, Instant::now())
                {
                    error!("rebuilding the tables after a refused batch: {e:#}");
                }
                if let Err(e) = self
                    .segment
                    .reconcile(&self.provisioner.stations_snapshot(Instant::now()).leases)
                {
                    warn!("pinning the clients' neighbour entries: {e}");
                }
            }
            Command::SaveWindow(until) => write_window(&self.paths.run_dir, until),
            Command::EndFlowsTo(closed) => {
                let ended = self
                    .fw
                    .end_flows_to(&closed)
                    .map_err(|e| warn!("ending connections the allow-list no longer grants: {e}"))
                    .ok();
                self.provisioner
                    .handle_allow_closed(&closed, ended.as_deref());
            }
        }
    }

    /// The connections of `ips` are ended (or could not be): the addresses go back to the
    /// pool.
    fn flows_ended(&mut self, (ips, result): crate::firewall::FlowsEnded) {
        match result {
            Ok(0) => {}
            Ok(n) => debug!("ended {n} connection(s) of {} address(es)", ips.len()),
            Err(e) => warn!("ending the connections of {ips:?}: {e}"),
        }
        self.provisioner.handle_flows_ended(&ips);
    }

    async fn send_dhcp(&mut self, out: DhcpOut) {
        let params = dhcp::Params {
            router: self.cfg.network.router,
            subnet: self.cfg.network.subnet,
        };
        let (bytes, dest) = dhcp::reply(&out.to, out.reply, &params);
        if let Err(e) = self.dhcp.send_to(&bytes, dest).await {
            warn!("sending a DHCP reply to {} at {dest}: {e}", out.to.chaddr);
        }
    }

    /// Sends DNS replies: UDP ones a batch per system call (when the socket's buffer is
    /// full the next reply waits for room; a reply the kernel refuses is dropped: the
    /// client asks again), TCP ones to their connection.
    async fn send_dns(&mut self, replies: Vec<dns::Reply>) {
        let mut datagrams: Vec<(Vec<u8>, SocketAddrV4)> = Vec::new();
        for r in replies {
            match r.route {
                Route::Udp(SocketAddr::V4(to)) => datagrams.push((r.bytes, to)),
                Route::Udp(SocketAddr::V6(_)) => {}
                Route::Tcp(conn) => {
                    let _ = conn.try_send(r.bytes);
                }
            }
        }
        let udp = &self.dns.udp;
        let mut sent = 0;
        while sent < datagrams.len() {
            let rest = &datagrams[sent..];
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

    fn on_radio_event(&mut self, ev: Result<RadioEvent, crate::radio::hostapd::HostapdError>) {
        let now = Instant::now();
        match ev {
            Ok(RadioEvent::StaConnected(mac)) => self.provisioner.handle_station_joined(mac, now),
            Ok(RadioEvent::StaDisconnected(mac))
                if self.provisioner.awaits_completion(mac, now) =>
            {
                let reached = self.reached_cloud(mac, now);
                self.provisioner
                    .handle_station_left_after(mac, reached, now, local_now());
            }
            Ok(RadioEvent::StaDisconnected(mac)) => self.provisioner.handle_station_left(mac, now),
            Ok(_) => {}
            Err(e) => {
                if let Some(r) = self.radio.as_mut() {
                    r.lost(&e);
                }
            }
        }
    }

    /// Whether the kernel forwarded traffic from `mac` to an allowed destination and
    /// answers back to it (its `count_up` and `count_down` elements, read while its binding
    /// still holds them): what says that a device reached its cloud. The counting chain
    /// runs after every accepting and dropping one, so it counts only what really went
    /// through, and an answer came back only on a connection the cloud accepted.
    fn reached_cloud(&mut self, mac: MacAddr, now: Instant) -> bool {
        let bindings = self.provisioner.bindings(now);
        let Some(&(_, ip)) = bindings.iter().find(|(m, _)| *m == mac) else {
            return false;
        };
        match self.fw.traffic_of(Some(&bindings)) {
            Ok(t) => t
                .get(&(mac, ip))
                .is_some_and(|t| t.up.packets > 0 && t.down.packets > 0),
            Err(e) => {
                warn!(
                    "reading {mac}'s traffic counters: {e}; its leaving does not count as a completed setup"
                );
                false
            }
        }
    }

    /// Keeps the radio link up; after a (re)connect the provisioner hears hostapd's
    /// station table.
    async fn maintain_radio(&mut self) {
        let Some(r) = self.radio.as_mut() else {
            return;
        };
        if let Some(present) = r.maintain().await {
            self.provisioner
                .handle_radio_connected(&present, Instant::now());
        }
    }

    fn on_order(&mut self, order: Order) {
        let now = Instant::now();
        let p = &mut self.provisioner;
        let done = match order.request {
            Request::Status => Ok(Reply::Status(self.status(now))),
            Request::Clients => Ok(self.clients(now)),
            Request::WindowOpen { secs, for_, count } => p
                .handle_window_open_for(
                    secs.map(Duration::from_secs),
                    for_,
                    count,
                    now,
                    local_now(),
                )
                .map(|_| Reply::Window(self.window_state(now))),
            Request::WindowClose => p
                .handle_window_close(now, local_now())
                .map(|()| Reply::Window(self.window_state(now))),
            Request::Evict { mac, ban_secs } => p
                .handle_evict(mac, ban_secs.map(Duration::from_secs), now)
                .map(|()| self.station_state(mac, now)),
            Request::Ban { mac, secs } => p
                .handle_ban(mac, secs.map(Duration::from_secs), now)
                .map(|_| self.station_state(mac, now)),
            Request::Unban { mac } => p
                .handle_unban(mac, now)
                .map(|()| self.station_state(mac, now)),
            Request::Metrics => Ok(self.metrics_reply(now)),
            Request::Events { since, .. } => {
                let page = self.journal.since(since);
                Ok(Reply::Events(protocol::Events {
                    events: page.records.iter().map(|r| EventLine::from(&**r)).collect(),
                    next: page.next,
                    lost: page.lost,
                }))
            }
            Request::Reload => {
                let config = self.paths.config.display().to_string();
                let _ = order.reply.send(match self.reload() {
                    Ok(()) => Reply::Reloaded(protocol::Reloaded { config }),
                    Err(e) => Failure::new(
                        FailureKind::Refused,
                        format!("{e}; kept the running configuration"),
                    )
                    .into(),
                });
                return;
            }
            Request::AllowList { name } => {
                let _ = order.reply.send(self.allow_entries(name.as_deref(), now));
                return;
            }
            Request::AllowAdd(spec) => {
                let reply = self.change_allow(crate::config::edit::AllowChange::Add(spec.into()));
                let _ = order.reply.send(reply);
                return;
            }
            Request::AllowRemove { names } => {
                let reply = self.change_allow(crate::config::edit::AllowChange::Remove(names));
                let _ = order.reply.send(reply);
                return;
            }
        };
        let reply = done.unwrap_or_else(|e| {
            info!("refused an operator's order: {e}");
            Failure::new(FailureKind::Refused, e.to_string()).into()
        });
        let _ = order.reply.send(reply);
    }

    fn metrics_reply(&mut self, now: Instant) -> Reply {
        let bindings = self.provisioner.bindings(now);
        let traffic = match self.fw.traffic_of(Some(&bindings)) {
            Ok(t) => Some(t.values().fold([(0, 0); 2], |[up, down], t| {
                [
                    (up.0 + t.up.bytes, up.1 + t.up.packets),
                    (down.0 + t.down.bytes, down.1 + t.down.packets),
                ]
            })),
            Err(e) => {
                warn!("reading the clients' traffic counters: {e}");
                None
            }
        };
        let p = &self.provisioner;
        let snap = p.stations_snapshot(now);
        let gauges = metrics::Gauges {
            clients: snap.clients.len(),
            max_clients: usize::from(p.settings().stations.max_clients),
            bans: snap.bans.len(),
            learned: p.learned_now(now),
            window_open: p.window_is_open(),
            uptime: now.saturating_since(self.started),
            traffic,
            journal_next: self.journal.next_seq(),
            violations: p.violations_total(),
            client_violations: snap.clients.iter().map(|(c, _)| p.violations(c.mac)).sum(),
        };
        Reply::Metrics(protocol::MetricsText {
            text: self.metrics.render(&gauges),
        })
    }

    fn station_state(&self, mac: MacAddr, now: Instant) -> Reply {
        let (client, ban) = self.provisioner.station_state(mac, now);
        Reply::Station(protocol::StationState {
            mac,
            client,
            banned_secs: ban.map(|d| d.as_secs()),
        })
    }

    fn window_state(&self, now: Instant) -> WindowState {
        let expected = self.provisioner.window_expected(now);
        WindowState {
            open: self.provisioner.window_is_open(),
            secs_left: self
                .provisioner
                .window_until(now)
                .map(|u| u.saturating_since(now).as_secs()),
            for_: expected.map(|e| e.prefixes.clone()).unwrap_or_default(),
            count: expected.map(|e| e.count),
            done: expected.map(|e| e.done.len() as u32),
        }
    }

    fn status(&self, now: Instant) -> Status {
        let snap = self.provisioner.stations_snapshot(now);
        let ips: std::collections::HashMap<MacAddr, std::net::Ipv4Addr> =
            snap.leases.iter().map(|l| (l.mac, l.ip)).collect();
        let clients = snap
            .clients
            .iter()
            .map(|(c, left)| protocol::Client {
                mac: c.mac,
                ip: ips.get(&c.mac).copied(),
                age: now.saturating_since(c.since).as_secs(),
                session_left: left.as_secs(),
            })
            .collect();
        let bans = snap
            .bans
            .iter()
            .map(|&(mac, left)| protocol::Ban {
                mac,
                left: left.as_secs(),
            })
            .collect();
        Status {
            window: self.window_state(now),
            radio: self.radio.as_ref().map(|r| {
                if r.is_connected() {
                    RadioState::Connected
                } else {
                    RadioState::Disconnected
                }
            }),
            clients,
            bans,
            ..self.status_more(now)
        }
    }

    /// Hands the DHCP requests waiting (a bounded number per turn, so that nothing else
    /// waits behind a flood) to the provisioner.
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
                Ok(Some(frame)) => self.on_dhcp(buf, frame),
                Ok(None) => {}
                Err(e) => {
                    warn!("DHCP socket: {e}");
                    return;
                }
            }
        }
    }

    fn on_dhcp(&mut self, buf: &[u8], frame: dhcp::Frame) {
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
        self.provisioner
            .handle_dhcp(msg.request, from, msg.to, Instant::now());
    }

    /// The router's neighbour entries follow the bindings the kernel just took.
    fn follow_leases(&mut self, changes: &[SetChange]) {
        if let Err(e) = self.segment.follow_leases(changes) {
            warn!("pinning the clients' neighbour entries: {e}");
        }
    }

    /// Links changed: take back a recreated provisioning interface, isolate any port that
    /// joined the bridge; addresses changed: the rebinding guard follows the router's.
    fn on_links(&mut self) {
        let Some(fd) = self.links.as_mut() else {
            return;
        };
        match fd.get_mut().read() {
            Ok(seen) => {
                if seen.links {
                    self.follow_interface();
                    self.isolate();
                }
                if seen.addresses {
                    self.follow_addresses();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => warn!("reading link announcements: {e}"),
        }
    }

    /// The provisioning interface deleted (netifd's network restart deletes the bridge) and
    /// created again is a new device: the sockets bound to the old one hear nothing and the
    /// device hooks were on it. Once one of that name is back, they move to it.
    fn follow_interface(&mut self) {
        let name = self.cfg.network.interface.clone();
        let now = crate::net::ifindex(name.as_str());
        if now == self.interface_index {
            return;
        }
        let was = std::mem::replace(&mut self.interface_index, now);
        let Some(index) = now else {
            warn!(
                "provisioning interface {name} is gone (it was index {}); the network stays closed until it is back",
                was.unwrap_or(0)
            );
            return;
        };
        match self.take_back_interface() {
            Ok(()) => warn!(
                "provisioning interface {name} is back as index {index}: DHCP, DNS and the device hooks are on it again"
            ),
            Err(e) => {
                // Tried again at the next announcement or check.
                self.interface_index = None;
                error!(
                    "provisioning interface {name} is back as index {index}; taking it over: {e:#}"
                );
            }
        }
    }

    /// Opens the sockets on the provisioning interface again and reinstalls the tables
    /// (the netdev chains hook the device as it is now), with the ports isolated and the
    /// clients' neighbour entries pinned there.
    fn take_back_interface(&mut self) -> anyhow::Result<()> {
        let net = &self.cfg.network;
        prepare_interface(&net.interface, net.router)?;
        let (out, listener) = dhcp_sockets(&self.cfg)?;
        let dns = DnsSockets::open(&net.interface, net.router)?;
        self.dhcp = out;
        self.dhcp_in = listener;
        self.dns = dns;
        let now = Instant::now();
        install(&mut self.fw, &self.cfg, &self.provisioner, now)?;
        self.isolate();
        if let Err(e) = self
            .segment
            .reconcile(&self.provisioner.stations_snapshot(now).leases)
        {
            warn!("pinning the clients' neighbour entries: {e}");
        }
        if self.socks.forwarder.is_some() {
            // Its listener was bound to the old device; its relays ended with it.
            self.socks.forwarder = None;
            self.socks.open.clear();
            self.set_socks()?;
        }
        Ok(())
    }

    /// The router's addresses changed (a new WAN address, say): none of them is ever to be
    /// learned from an answer.
    fn follow_addresses(&mut self) {
        let addrs = router_addresses();
        if addrs == self.router_addrs {
            return;
        }
        let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        info!(
            "router addresses changed; the rebinding guard now covers {}",
            list.join(" ")
        );
        self.provisioner.set_router_addresses(&addrs);
        self.router_addrs = addrs;
    }

    /// What our drop rules logged: refused ARP is a spoofing attempt to grade, a refused
    /// flow a violation to report.
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
        for l in logged.iter() {
            if l.prefix == nflog::PREFIX_ARP {
                if let Some(arp) = nflog::Arp::parse(&l.payload) {
                    self.provisioner
                        .handle_arp_refused(l.src, arp.sender_mac, arp.sender_ip, now);
                }
            } else if l.prefix == nflog::PREFIX_SPOOF {
                if let (Some(mac), Some(f)) = (l.src, nflog::Flow::parse(&l.payload)) {
                    self.provisioner.handle_ip_refused(mac, f.src, now);
                }
            } else if let Some(why) = l
                .prefix
                .strip_prefix(nflog::PREFIX_FLOW)
                .and_then(FlowBlock::from_name)
            {
                if let Some(f) = nflog::Flow::parse(&l.payload) {
                    self.provisioner
                        .handle_flow_blocked(l.src, f.src, f.dst, f.proto, f.port, why, now);
                }
            }
        }
    }

    /// SIGHUP: re-read the config; a bad one is reported and the running one kept. The new
    /// tables are installed before the provisioner switches, so a failure changes nothing.
    /// SIGHUP or `provisionerctl reload`: the config file read again and applied, or,
    /// whatever is wrong with it (file:line: option for a bad value), nothing changed and
    /// the error logged and returned.
    fn reload(&mut self) -> Result<(), String> {
        let result = self.try_reload();
        let file: std::sync::Arc<str> = self.paths.config.display().to_string().into();
        match &result {
            Ok(()) => {
                self.config_loaded = std::time::SystemTime::now();
                self.audit(Event::ConfigReloaded { file });
            }
            Err(e) => {
                error!("reload: {e}; keeping the last good configuration");
                self.audit(Event::ConfigRejected {
                    file,
                    error: e.as_str().into(),
                });
            }
        }
        result
    }

    fn try_reload(&mut self) -> Result<(), String> {
        let new = Config::load(&self.paths.config).map_err(|e| e.to_string())?;
        let now = Instant::now();
        let settings = Settings::from(&new);
        // Bound to another device, new sockets do not clash with the old ones on the same
        // address.
        let dns = if new.network.interface != self.cfg.network.interface
            || new.network.router != self.cfg.network.router
        {
            Some(
                DnsSockets::open(&new.network.interface, new.network.router)
                    .map_err(|e| format!("{e:#}"))?,
            )
        } else {
            None
        };
        let socket = if new.network.interface != self.cfg.network.interface
            || new.network.router != self.cfg.network.router
        {
            let opened = prepare_interface(&new.network.interface, new.network.router)
                .and_then(|_| dhcp_sockets(&new))
                .and_then(|s| {
                    let segment = Segment::open(new.network.interface.as_str())
                        .context("opening the rtnetlink socket")?;
                    Ok((s, segment))
                });
            Some(opened.map_err(|e| format!("{e:#}"))?)
        } else {
            None
        };
        let rs = Ruleset::build(&new, &self.provisioner.snapshot_under(&settings, now));
        if new.limits.quota_reset != self.cfg.limits.quota_reset {
            self.day_end = now + system::until_quota_reset(new.limits.quota_reset);
            self.fw.set_day_end(self.day_end);
        }
        self.fw
            .install(&rs)
            .map_err(|e| format!("installing table inet {TABLE}: {e:#}"))?;
        self.provisioner.handle_reload(&settings, now);
        self.router_addrs = router_addresses();
        self.provisioner.set_router_addresses(&self.router_addrs);
        if let Some(((out, listener), segment)) = socket {
            self.dhcp = out;
            self.dhcp_in = listener;
            self.segment = segment;
            self.interface_index = crate::net::ifindex(new.network.interface.as_str());
            self.isolate();
        }
        if let Err(e) = self
            .segment
            .reconcile(&self.provisioner.stations_snapshot(now).leases)
        {
            warn!("pinning the clients' neighbour entries: {e}");
        }
        if let Some(d) = dns {
            self.dns = d;
        }
        self.resolver.reconfigure(&new);
        if new.control_group != self.cfg.control_group {
            if let Err(e) = control::share(&self.paths.control, new.control_group.as_deref()) {
                warn!("{e}");
            }
        }
        if new.metrics != self.cfg.metrics {
            if let Some(t) = self.metrics_task.take() {
                t.abort();
            }
            self.metrics_task = new.metrics.and_then(|a| serve_metrics(a, &self.orders_tx));
        }
        let restart_socks = new.socks != self.cfg.socks
            || new.network.interface != self.cfg.network.interface
            || new.network.router != self.cfg.network.router;
        self.cfg = new;
        self.set_alarms();
        if restart_socks {
            // Its relays end with it: a new port or bound is a new forwarder.
            self.socks.forwarder = None;
            self.socks.open.clear();
            if let Err(e) = self.set_socks() {
                error!("{e:#}; the SOCKS forwarder is off");
            }
        }
        self.socks.recheck = true;
        Ok(())
    }

    /// The SOCKS forwarder as the config has it (`config socks`): started if enabled and
    /// not running.
    fn set_socks(&mut self) -> anyhow::Result<()> {
        let Some(limits) = self.cfg.socks else {
            self.socks.forwarder = None;
            self.socks.open.clear();
            return Ok(());
        };
        if self.socks.forwarder.is_some() {
            return Ok(());
        }
        let listener = socks_listener(
            &self.cfg.network.interface,
            self.cfg.network.router,
            limits.port,
        )?;
        let f = crate::socks::Forwarder::start(listener, limits, self.socks.tx.clone())
            .context("starting the SOCKS forwarder's thread")?;
        info!(
            "SOCKS forwarder on {}:{} ({} per client, {} in all)",
            self.cfg.network.router,
            limits.port,
            limits.client_connections,
            limits.total_connections
        );
        self.socks.forwarder = Some((f, limits));
        Ok(())
    }

    /// What the SOCKS thread asks or reports. A name the client may resolve on that port
    /// goes to the resolver as its own question would (the answer comes back on a route of
    /// its own); an address, given or resolved, is granted by the provisioner or refused.
    fn on_socks(&mut self, m: crate::socks::ToLoop) {
        use crate::socks::{Answer, Target, ToLoop};
        let now = Instant::now();
        match m {
            ToLoop::Ask(ask) => {
                let answer = match ask.target {
                    Target::Name(name) => self.socks_resolve(ask.client, &name, ask.port, now),
                    Target::Addr(ip) => {
                        match self.provisioner.socks_addr(ask.client, ip, ask.port, now) {
                            Err(why) => Answer::Refused(why),
                            Ok(granted) => {
                                let id = self.socks.next;
                                self.socks.next += 1;
                                self.socks.open.push((id, granted, ip, ask.port));
                                Answer::Granted(id)
                            }
                        }
                    }
                };
                if let Err(Answer::Granted(id)) = ask.reply.send(answer) {
                    // The connection went away meanwhile.
                    self.socks.open.retain(|r| r.0 != id);
                }
            }
            ToLoop::Refused {
                client,
                dest,
                port,
                why,
            } => {
                self.provisioner
                    .handle_socks_refused(client, &dest, port, why, now);
            }
            ToLoop::Closed(id) => self.socks.open.retain(|r| r.0 != id),
        }
    }

    /// A name `client` may reach on `port`: asked of the resolver as the client's own
    /// question; the answer comes back on a route of the connection's own.
    fn socks_resolve(
        &mut self,
        client: std::net::Ipv4Addr,
        name: &str,
        port: u16,
        now: Instant,
    ) -> crate::socks::Answer {
        if let Err(why) = self.provisioner.socks_name(client, name, port, now) {
            return crate::socks::Answer::Refused(why);
        }
        let question = crate::socks::question((self.socks.next & 0xffff) as u16, name);
        self.socks.next += 1;
        let (tx, rx) = mpsc::channel(1);
        let src = SocketAddr::V4(SocketAddrV4::new(client, 0));
        self.resolver.question(
            &mut self.provisioner,
            &question,
            src,
            Route::Tcp(tx),
            now,
            &mut self.replies,
        );
        crate::socks::Answer::Resolving {
            reply: rx,
            question,
        }
    }

    /// Cuts the relays whose client's session is over (ended, evicted, banned, gone) or
    /// whose entry no longer grants them. A relay is forgotten only when the thread says it
    /// closed, so one cut before it began is cut again at the next check.
    fn check_relays(&mut self) {
        let Some((f, _)) = &self.socks.forwarder else {
            self.socks.open.clear();
            return;
        };
        for (id, granted, ip, port) in &self.socks.open {
            if !self.provisioner.socks_still_granted(granted, *ip, *port) {
                f.cut(*id);
            }
        }
    }

    /// Puts the tables back if someone removed them. `how`: what made us look.
    fn ensure_table(&mut self, how: &str) {
        match self.fw.table_exists() {
            Ok(true) => {}
            Ok(false) => {
                let started = std::time::Instant::now();
                match install(&mut self.fw, &self.cfg, &self.provisioner, Instant::now()) {
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
}

/// Serves `/metrics` on `addr`; a failure to listen is logged, not fatal (the network
/// does not depend on its metrics).
fn serve_metrics(addr: SocketAddrV4, orders: &mpsc::Sender<Order>) -> Option<JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std);
    match listener {
        Ok(l) => {
            info!("serving /metrics on http://{addr}");
            Some(tokio::spawn(control::http::serve(l, orders.clone())))
        }
        Err(e) => {
            warn!("cannot serve /metrics on {addr}: {e} (provisionerctl metrics still works)");
            None
        }
    }
}

/// An audit line at its level (target `audit`, which the JSON log writes as it is).
fn audit_line(level: &str, line: &dyn std::fmt::Display) {
    match level {
        "alarm" => tracing::error!(target: "audit", "{line}"),
        "warning" => warn!(target: "audit", "{line}"),
        _ => info!(target: "audit", "{line}"),
    }
}

/// Builds the tables for `cfg` carrying the provisioner's live state, installs them
/// atomically and verifies them.
fn install(
    fw: &mut Firewall,
    cfg: &Config,
    provisioner: &Provisioner,
    now: Instant,
) -> anyhow::Result<()> {
    let rs = Ruleset::build(cfg, &provisioner.snapshot(now));
    fw.install(&rs)
        .with_context(|| format!("installing table inet {TABLE}"))
}

/// Isolates the bridge ports that are not yet; failures are logged (and retried by the
/// next check).
fn isolate_ports(segment: &mut Segment) -> Vec<Event> {
    match segment.isolate_ports() {
        Ok(ports) => ports
            .into_iter()
            .map(|p| Event::PortIsolated { port: p.into() })
            .collect(),
        Err(e) => {
            warn!("isolating the provisioning bridge's ports: {e}");
            Vec::new()
        }
    }
}
