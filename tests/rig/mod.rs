//! Network-namespace test rig (root only): a router namespace between a fake internet
//! ("cloud"), a home LAN and a provisioning bridge with a port per client, plus the
//! servers and probes that leak tests need. See [`Rig::new`] for the topology.
//!
//! Every link is created inside a namespace, so the host's interfaces, routes and
//! nftables ruleset are never touched. Namespaces are named `pv<pid>-<n>-<role>`:
//! unique per rig, and a later run can tell (by the pid) which ones are stale.

// Each test crate (and the demo) that includes this module uses a different subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, getsockopt, socket, sockopt,
};
use nix::unistd::Pid;

pub mod l2;

// ---- Topology -------------------------------------------------------------------------

pub const WAN_IF: &str = "wan0";
pub const LAN_IF: &str = "lan0";
pub const PROV_IF: &str = "prov0";
/// The interface name inside the cloud namespace facing the router.
pub const ISP_IF: &str = "isp0";
/// The interface name inside the home and client namespaces.
pub const HOST_IF: &str = "eth0";

pub const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 2);
pub const CLOUD_ISP: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
pub const ROUTER_WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const CLOUD_ISP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
pub const HOME_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

pub const ROUTER_PROV: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 1);
pub const PROV_NET: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 0);
pub const PROV_PREFIX: u8 = 24;
pub const ROUTER_PROV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const PROV6_NET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0);
pub const PROV6_PREFIX: u8 = 64;
pub const PROV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];

/// The allowed cloud server (TCP 443, 8443; UDP 123, 124).
pub const CLOUD_ALLOWED: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 10);
/// A cloud server that is not allowed (TCP 443).
pub const CLOUD_OTHER: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 20);
/// The fake public resolver (DNS on UDP+TCP 53, a TCP listener on 853).
pub const CLOUD_DNS: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 53);
/// A second fake public resolver (DNS on UDP+TCP 53): same zone, same behaviour.
pub const CLOUD_DNS2: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 54);
/// An address in the cloud where no resolver listens: UDP 53 gets ICMP port unreachable,
/// TCP 53 a RST.
pub const CLOUD_DNS_DEAD: Ipv4Addr = Ipv4Addr::new(11, 1, 0, 55);
/// The live fake resolvers.
pub const DNS_SERVERS: [Ipv4Addr; 2] = [CLOUD_DNS, CLOUD_DNS2];
/// How many CNAME links the fake resolvers follow within the zone before they stop.
pub const DNS_MAX_CNAME_LINKS: usize = 8;
/// The IPv6 cloud server (TCP 443).
pub const CLOUD6_ALLOWED: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
/// What the fake resolvers answer to every A question for a name outside the test's zone
/// (see [`Rig::dns_zone`]), with [`DNS_TTL`].
pub const DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(11, 9, 9, 9);
pub const DNS_TTL: u32 = 60;

/// Namespaces and temp dirs are `pv<pid>-<n>-<role>`; `n` makes rigs of one process unique.
static RIG_COUNTER: AtomicUsize = AtomicUsize::new(0);
/// `ip netns add` mounts /run/netns on first use; concurrent first uses can race.
static NETNS_ADD: Mutex<()> = Mutex::new(());

// ---- Namespaces -----------------------------------------------------------------------

/// A named network namespace (`/run/netns/<name>`).
#[derive(Debug)]
pub struct Ns {
    pub name: String,
}

impl Ns {
    /// Runs `ip netns exec <name> args...` and returns its output (never panics on failure
    /// of the command itself, only if it cannot be started).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns exec {} {args:?}`: {e}", self.name))
    }

    /// Like [`Ns::exec`] but panics unless the command succeeds; returns its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        if !out.status.success() {
            panic!(
                "in {}: {args:?} failed ({}): {}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a fresh thread that joined this namespace with setns(2), so sockets
    /// created inside belong to it. A fresh thread because setns changes the calling
    /// thread for good; other threads (and /proc/self, /sys) keep the old view.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                drop(file);
                f()
            })
            .join()
        })
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

// ---- The rig --------------------------------------------------------------------------

/// The whole topology. Dropping it kills every process it started and deletes every
/// namespace and its temp dir, also while unwinding from a panic.
pub struct Rig {
    router: Ns,
    cloud: Ns,
    home: Ns,
    clients: Vec<Ns>,
    /// Namespaces actually created so far: a panic half-way through `new` still cleans up.
    created: Vec<String>,
    dir: PathBuf,
    dns: SharedDns,
    servers: Vec<JoinHandle<()>>,
    /// Dropping this wakes every server thread (its peer end polls readable) to exit.
    stop: Option<UnixStream>,
    procs: Mutex<Vec<Weak<ProcInner>>>,
    /// The thread that forks every `spawn`ed child; see `Rig::spawn`.
    spawner: Option<(Sender<SpawnJob>, JoinHandle<()>)>,
}

type SpawnJob = (Command, Sender<std::io::Result<Child>>);

impl Rig {
    /// Builds the topology with `clients` provisioning clients (1..=254) and starts all
    /// servers; they are listening when this returns.
    ///
    /// ```text
    ///  cloud ns                 router ns (forwarding on)                 home ns
    ///  isp0 11.0.0.1/30 ----- wan0 11.0.0.2/30        lan0 192.168.1.1 ----- eth0 192.168.1.10
    ///       2001:db8::1/64         2001:db8::2/64
    ///  lo: 11.1.0.10 .20 .53-.55   prov0 (bridge) 192.168.250.1/24, 2001:db8:2::1/64
    ///      2001:db8:1::10           |-- prov0-c1 ----- client 1 eth0 02:00:00:00:00:01
    ///                               |-- prov0-c2 ----- client 2 eth0 02:00:00:00:00:02
    /// ```
    ///
    /// The bridge's ports are not isolated (the daemon isolates them; a test of hostapd alone
    /// calls [`Rig::isolate_ports`]), so clients reach each other at layer 2 until then.
    ///
    /// The cloud has no route to 192.168.0.0/16, so only masqueraded IPv4 gets answers;
    /// it does route 2001:db8:2::/64 back via the router, so IPv6 leaks would work.
    /// rp_filter is off and DAD disabled everywhere, so the firewall under test (not
    /// kernel defaults inherited from the host) decides what passes, and v6 works at once.
    pub fn new(clients: usize) -> Rig {
        assert!(clients <= 254, "client MACs only have one byte");
        sweep_stale();

        let prefix = format!(
            "pv{}-{}",
            std::process::id(),
            RIG_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ns = |role: &str| Ns {
            name: format!("{prefix}-{role}"),
        };
        let (stop_tx, stop_rx) = UnixStream::pair().expect("socketpair");
        let mut rig = Rig {
            router: ns("router"),
            cloud: ns("cloud"),
            home: ns("home"),
            clients: (1..=clients).map(|i| ns(&format!("c{i}"))).collect(),
            created: Vec::new(),
            dir: std::env::temp_dir().join(&prefix),
            dns: SharedDns::default(),
            servers: Vec::new(),
            stop: Some(stop_tx),
            procs: Mutex::default(),
            spawner: Some(start_spawner()),
        };

        // From here on a panic drops `rig`, which removes whatever exists already.
        fs::create_dir_all(&rig.dir).expect("create rig dir");
        let script = rig.dir.join("udhcpc.sh");
        fs::write(&script, include_str!("udhcpc.sh")).expect("write udhcpc.sh");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod udhcpc.sh");

        let names: Vec<String> = rig.all_ns().map(|n| n.name.clone()).collect();
        for name in names {
            let _serial = lock(&NETNS_ADD);
            must(Command::new("ip").args(["netns", "add", &name]));
            rig.created.push(name);
        }
        for n in rig.all_ns() {
            let router = n.name == rig.router.name;
            n.run(|| set_sysctls(router));
        }
        rig.wire();
        rig.start_servers(stop_rx);
        rig
    }

    fn all_ns(&self) -> impl Iterator<Item = &Ns> {
        [&self.router, &self.cloud, &self.home]
            .into_iter()
            .chain(&self.clients)
    }

    fn wire(&self) {
        let (r, cloud, home) = (&self.router.name, &self.cloud.name, &self.home.name);
        // Links first (created from the router side, peers land in the other namespace).
        let mut links = vec![
            "link set lo up".to_string(),
            format!("link add {WAN_IF} type veth peer name {ISP_IF} netns {cloud}"),
            format!("link add {LAN_IF} type veth peer name {HOST_IF} netns {home}"),
            format!(
                "link add {PROV_IF} address {} type bridge",
                mac_str(PROV_MAC)
            ),
        ];
        for (i, c) in self.clients.iter().enumerate() {
            let (i, port) = (i + 1, Rig::client_port(i + 1));
            let mac = mac_str(Rig::client_mac(i));
            links.push(format!(
                "link add {port} type veth peer name {HOST_IF} address {mac} netns {}",
                c.name
            ));
            // As a router's bridge is before anyone isolates it: ports forward to each
            // other (the daemon's job is to stop that; see Rig::isolate_ports).
            links.push(format!("link set {port} master {PROV_IF}"));
        }
        ip_batch(r, &links);

        ip_batch(
            cloud,
            &[
                "link set lo up".into(),
                format!("addr add {CLOUD_ALLOWED}/32 dev lo"),
                format!("addr add {CLOUD_OTHER}/32 dev lo"),
                format!("addr add {CLOUD_DNS}/32 dev lo"),
                format!("addr add {CLOUD_DNS2}/32 dev lo"),
                format!("addr add {CLOUD_DNS_DEAD}/32 dev lo"),
                format!("addr add {CLOUD6_ALLOWED}/128 dev lo"),
                format!("addr add {CLOUD_ISP}/30 dev {ISP_IF}"),
                format!("addr add {CLOUD_ISP6}/64 dev {ISP_IF} nodad"),
                format!("link set {ISP_IF} up"),
                // v6 only: an IPv6 leak through the router must be able to get answers.
                format!("route add {PROV6_NET}/{PROV6_PREFIX} via {ROUTER_WAN6} dev {ISP_IF}"),
            ],
        );
        ip_batch(
            home,
            &[
                "link set lo up".into(),
                format!("addr add {HOME_HOST}/24 dev {HOST_IF}"),
                format!("link set {HOST_IF} up"),
                format!("route add default via {ROUTER_LAN} dev {HOST_IF}"),
            ],
        );
        for c in &self.clients {
            ip_batch(
                &c.name,
                &["link set lo up".into(), format!("link set {HOST_IF} up")],
            );
        }

        let mut conf = vec![
            format!("addr add {ROUTER_WAN}/30 dev {WAN_IF}"),
            format!("addr add {ROUTER_WAN6}/64 dev {WAN_IF} nodad"),
            format!("addr add {ROUTER_LAN}/24 dev {LAN_IF}"),
            format!("addr add {ROUTER_PROV}/{PROV_PREFIX} dev {PROV_IF}"),
            format!("addr add {ROUTER_PROV6}/{PROV6_PREFIX} dev {PROV_IF} nodad"),
            format!("link set {WAN_IF} up"),
            format!("link set {LAN_IF} up"),
            format!("link set {PROV_IF} up"),
        ];
        for i in 1..=self.clients.len() {
            conf.push(format!("link set {} up", Rig::client_port(i)));
        }
        conf.push(format!("route add default via {CLOUD_ISP} dev {WAN_IF}"));
        conf.push(format!("route add ::/0 via {CLOUD_ISP6} dev {WAN_IF}"));
        ip_batch(r, &conf);
    }

    fn start_servers(&mut self, stop: UnixStream) {
        use Service::{Dns, DnsTcp, Tcp, Udp};
        let any = |port| SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        let v4 = |ip: Ipv4Addr, port| SocketAddr::new(ip.into(), port);
        let mut plan: Vec<(&Ns, Vec<(SocketAddr, Kind)>)> = vec![
            (
                &self.cloud,
                vec![
                    (v4(CLOUD_ALLOWED, 443), Kind::Tcp("cloud-443".into())),
                    (v4(CLOUD_ALLOWED, 8443), Kind::Tcp("cloud-8443".into())),
                    (v4(CLOUD_OTHER, 443), Kind::Tcp("other-443".into())),
                    (v4(CLOUD_DNS, 853), Kind::Tcp("dot-853".into())),
                    (
                        SocketAddr::new(CLOUD6_ALLOWED.into(), 443),
                        Kind::Tcp("cloud6-443".into()),
                    ),
                    (v4(CLOUD_ALLOWED, 123), Kind::Udp("ntp-123".into())),
                    (v4(CLOUD_ALLOWED, 124), Kind::Udp("udp-124".into())),
                    (v4(CLOUD_DNS, 53), Kind::Dns),
                    (v4(CLOUD_DNS, 53), Kind::DnsTcp),
                    (v4(CLOUD_DNS2, 53), Kind::Dns),
                    (v4(CLOUD_DNS2, 53), Kind::DnsTcp),
                ],
            ),
            (
                &self.home,
                vec![
                    (any(22), Kind::Tcp("home-22".into())),
                    (any(80), Kind::Tcp("home-80".into())),
                ],
            ),
            (
                &self.router,
                vec![
                    (any(22), Kind::Tcp("router-22".into())),
                    (any(80), Kind::Tcp("router-80".into())),
                    (any(8080), Kind::Tcp("router-8080".into())),
                ],
            ),
        ];
        for (i, c) in self.clients.iter().enumerate() {
            plan.push((
                c,
                vec![(any(8080), Kind::Tcp(format!("client{}-8080", i + 1)))],
            ));
        }

        let mut threads = Vec::new();
        for (ns, specs) in plan {
            // Bind inside the namespace, then hand the sockets to a plain server thread:
            // a socket stays in the namespace it was created in.
            let services: Vec<Service> = ns.run(|| {
                specs
                    .into_iter()
                    .map(|(addr, kind)| {
                        let tcp = || TcpListener::bind(addr);
                        let udp = || UdpSocket::bind(addr);
                        let service = match kind {
                            Kind::Tcp(label) => tcp().map(|l| Tcp(l, label)),
                            Kind::Udp(label) => udp().map(|s| Udp(s, label)),
                            Kind::Dns => udp().map(Dns),
                            Kind::DnsTcp => tcp().map(DnsTcp),
                        }
                        .unwrap_or_else(|e| panic!("{}: bind {addr}: {e}", ns.name));
                        service.set_nonblocking();
                        service
                    })
                    .collect()
            });
            let stop = stop.try_clone().expect("clone stop socket");
            let dns = self.dns.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rig-srv-{}", ns.name))
                    .spawn(move || serve(services, stop, dns))
                    .expect("spawn server thread"),
            );
        }
        self.servers = threads;
    }

    pub fn router(&self) -> &Ns {
        &self.router
    }
    pub fn cloud(&self) -> &Ns {
        &self.cloud
    }
    pub fn home(&self) -> &Ns {
        &self.home
    }
    /// Client `i`, 1-based.
    pub fn client(&self, i: usize) -> &Ns {
        assert!(
            i >= 1 && i <= self.clients.len(),
            "no client {i} (rig has {})",
            self.clients.len()
        );
        &self.clients[i - 1]
    }
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
    /// Every namespace of this rig (router, cloud, home, clients).
    pub fn namespaces(&self) -> Vec<&Ns> {
        self.all_ns().collect()
    }
    /// MAC of client `i`'s eth0: 02:00:00:00:00:<i>.
    pub fn client_mac(i: usize) -> [u8; 6] {
        assert!((1..=254).contains(&i), "client index {i} out of range");
        [0x02, 0, 0, 0, 0, i as u8]
    }
    /// Isolates every client port of prov0 from the others, as a Wi-Fi AP's client isolation
    /// would: for tests of hostapd on its own, without the daemon (which isolates them).
    pub fn isolate_ports(&self) {
        let lines: Vec<String> = (1..=self.clients.len())
            .map(|i| {
                format!(
                    "link set {} type bridge_slave isolated on",
                    Rig::client_port(i)
                )
            })
            .collect();
        ip_batch(&self.router.name, &lines);
    }

    /// Takes client `i`'s port off the bridge (`false`) or puts it back (`true`), as netifd
    /// does when an interface comes and goes.
    pub fn attach_port(&self, i: usize, attached: bool) {
        let port = Rig::client_port(i);
        let how = if attached {
            format!("link set {port} master {PROV_IF}")
        } else {
            format!("link set {port} nomaster")
        };
        ip_batch(&self.router.name, &[how]);
    }

    /// The router-side bridge port (a port of prov0) of client `i`.
    pub fn client_port(i: usize) -> String {
        format!("{PROV_IF}-c{i}")
    }

    /// Question names (lowercase, no trailing dot) the fake public resolvers (both) received,
    /// in arrival order; also those received while silent.
    pub fn dns_names_seen(&self) -> Vec<String> {
        lock(&self.dns)
            .seen
            .iter()
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// How many questions for `name` (any type; case and a trailing dot do not matter) the
    /// fake resolvers (both together) received so far. CNAME targets that a resolver follows
    /// itself are not questions: only what a client asked counts.
    pub fn dns_queries(&self, name: &str) -> usize {
        let name = dns_key(name);
        lock(&self.dns)
            .seen
            .iter()
            .filter(|(_, n)| *n == name)
            .count()
    }

    /// Like [`Rig::dns_queries`], for the resolver at `server` only ([`CLOUD_DNS`] or
    /// [`CLOUD_DNS2`]).
    pub fn dns_queries_at(&self, server: Ipv4Addr, name: &str) -> usize {
        assert_live_resolver(server);
        let name = dns_key(name);
        let dns = lock(&self.dns);
        dns.seen
            .iter()
            .filter(|(s, n)| *s == server && *n == name)
            .count()
    }

    /// Sets what both fake resolvers answer for `name` (case and a trailing dot do not
    /// matter) from now on, replacing an earlier entry; see [`FakeAnswer`].
    pub fn dns_zone(&self, name: &str, answer: FakeAnswer) {
        // A typo fails here, not as a puzzling answer later.
        for n in std::iter::once(name).chain(answer.cname.as_deref()) {
            if let Err(e) = fqdn(n) {
                panic!("dns_zone({name:?}): bad name {n:?}: {e}");
            }
        }
        lock(&self.dns).zone.insert(dns_key(name), answer);
    }

    /// Empties the zone: every name gets the default answer again.
    pub fn dns_clear_zone(&self) {
        lock(&self.dns).zone.clear();
    }

    /// Makes both fake resolvers stop answering (`true`) or answer again (`false`). While
    /// silent a resolver still records every question but sends nothing back: UDP queries
    /// are dropped; a TCP connection is read and held open (not closed when idle) until the
    /// client gives up. A question received while silent is never answered, also not once
    /// the switch flips back; later questions (also on the same connection) are.
    pub fn dns_silent(&self, silent: bool) {
        for server in DNS_SERVERS {
            self.dns_silent_at(server, silent);
        }
    }

    /// Like [`Rig::dns_silent`], for the resolver at `server` only ([`CLOUD_DNS`] or
    /// [`CLOUD_DNS2`]), e.g. to make a daemon fail over to the other one.
    pub fn dns_silent_at(&self, server: Ipv4Addr, silent: bool) {
        assert_live_resolver(server);
        let mut dns = lock(&self.dns);
        dns.silent.retain(|s| *s != server);
        if silent {
            dns.silent.push(server);
        }
    }

    /// A per-rig temp dir for config files etc., removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts `cmd` in `ns` (own process group) with stdout and stderr captured line by line.
    /// Killed (with its group) when the `Proc` or the rig is dropped, whichever is first,
    /// and by the kernel if the test process dies without running `Drop` (SIGKILL, ^C).
    pub fn spawn(&self, ns: &Ns, cmd: &[&str]) -> Proc {
        assert!(!cmd.is_empty(), "empty command");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns.name])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own group: kill9 also reaches helpers it forks.
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls (prctl, getppid) and no allocation.
        unsafe {
            command.pre_exec(move || {
                // PDEATHSIG fires when the forking *thread* exits, hence the spawner thread,
                // which lives exactly as long as the rig (or the process, if it is killed).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        let (jobs, _) = self.spawner.as_ref().expect("rig is alive");
        jobs.send((command, reply_tx))
            .expect("spawner thread is alive");
        let mut child = reply_rx
            .recv()
            .expect("spawner thread replies")
            .unwrap_or_else(|e| panic!("spawn {cmd:?} in {}: {e}", ns.name));
        let pidfd = pidfd_open(child.id()).expect("pidfd_open");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        spawn_reader(out, tx.clone());
        spawn_reader(err, tx);
        let inner = Arc::new(ProcInner {
            pid: child.id(),
            pidfd,
            child: Mutex::new(ChildState {
                child,
                status: None,
            }),
            out: Mutex::new(Lines {
                rx,
                lines: Vec::new(),
                used: Vec::new(),
                closed: false,
            }),
        });
        let mut procs = lock(&self.procs);
        procs.retain(|p| p.strong_count() > 0);
        procs.push(Arc::downgrade(&inner));
        drop(procs);
        Proc {
            inner,
            what: format!("{cmd:?} in {}", ns.name),
        }
    }

    /// Runs udhcpc once in client `client`'s namespace; the script applies the lease
    /// (address and default route). Returns the address, or udhcpc's output on failure.
    pub fn dhcp(&self, client: usize) -> Result<Ipv4Addr, String> {
        let script = self.dir.join("udhcpc.sh");
        let script = script.to_str().expect("utf-8 temp dir");
        let out = self.client(client).exec(&[
            "udhcpc", "-i", HOST_IF, "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", script,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("rig-udhcpc: bound ")?.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "udhcpc got no lease ({}): {stdout}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Best effort throughout: this also runs while unwinding, so it must not panic.
        for p in lock(&self.procs).drain(..) {
            if let Some(p) = p.upgrade() {
                p.kill();
            }
        }
        if let Some((jobs, thread)) = self.spawner.take() {
            drop(jobs);
            let _ = thread.join();
        }
        self.stop.take();
        for t in self.servers.drain(..) {
            let _ = t.join();
        }
        // Processes the tests or daemons started on their own (e.g. ns.exec + spawn).
        for name in &self.created {
            kill_ns_pids(name);
        }
        for name in self.created.drain(..).rev() {
            delete_ns(&name);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn set_sysctls(router: bool) {
    let mut values = vec![
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
        ("net/ipv6/conf/all/accept_dad", "0"),
        ("net/ipv6/conf/default/accept_dad", "0"),
    ];
    if router {
        values.push(("net/ipv4/ip_forward", "1"));
        values.push(("net/ipv6/conf/all/forwarding", "1"));
    }
    for (key, value) in values {
        // /proc/sys/net resolves against the calling thread's namespace (see Ns::run).
        let path = format!("/proc/sys/{key}");
        fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
}

// ---- The daemon under test ------------------------------------------------------------

/// The daemon binary: `PROVISIONER_BIN` if set (e.g. the release build for `make bench`;
/// a relative path is taken from the current directory); else cargo names it for
/// integration tests; the demo (an example, where cargo does not) uses the debug build next
/// to the sources.
pub fn daemon_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROVISIONER_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return std::path::absolute(&p).unwrap_or(p);
    }
    match option_env!("CARGO_BIN_EXE_provisioner") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/provisioner"),
    }
}

/// A UCI config for this topology: provisioning on prov0, out through wan0, the home LAN
/// protected, and the cloud server allowed on TCP 443 and UDP 123 only. `extra` is
/// appended (more sections, e.g. `config dhcp` or `config limits`).
pub fn config(extra: &str) -> String {
    format!(
        "config network 'network'
\toption interface '{PROV_IF}'
\toption wan '{WAN_IF}'
\toption subnet '{PROV_NET}/{PROV_PREFIX}'
\toption router '{ROUTER_PROV}'

config window 'window'
\toption mode 'always'

config allow 'cloud'
\tlist address '{CLOUD_ALLOWED}'
\tlist port '443'

config allow 'cloud_ntp'
\tlist address '{CLOUD_ALLOWED}'
\toption proto 'udp'
\tlist port '123'
{extra}"
    )
}

impl Rig {
    /// Where [`Rig::start_daemon`] writes the config (rewrite it and send SIGHUP to reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("provisioner")
    }

    /// Writes `config` and starts `provisionerd` in the router namespace; returns once the
    /// daemon says it is ready (table installed, DHCP listening).
    pub fn start_daemon(&self, config: &str) -> Proc {
        let path = self.config_path();
        fs::write(&path, config).expect("write config");
        let bin = daemon_bin();
        let p = self.spawn(
            self.router(),
            &[
                bin.to_str().expect("utf-8 path"),
                "provisionerd",
                "-c",
                path.to_str().expect("utf-8 path"),
                "--control",
                self.control_socket().to_str().expect("utf-8 path"),
                "--run-dir",
                self.dir.join("run").to_str().expect("utf-8 path"),
            ],
        );
        if let Err(e) = p.wait_line("ready", Duration::from_secs(30)) {
            panic!("provisionerd did not come up: {e}");
        }
        p
    }

    /// An `ssid_command` for the rig's hostapd, as the OpenWrt package's does through UCI:
    /// `up` enables and `down` disables hostapd's interface; every call is appended to
    /// `ssid.log` in the rig dir.
    pub fn ssid_script(&self) -> PathBuf {
        let path = self.dir.join("ssid");
        let script = format!(
            "#!/bin/sh\necho \"$1\" >> {log}\ncase \"$1\" in up) c=enable ;; down) c=disable ;; *) exit 2 ;; esac\nexec hostapd_cli -p {ctrl} -i {PROV_IF} $c >/dev/null\n",
            log = self.dir.join("ssid.log").display(),
            ctrl = self.dir.join("hostapd").display(),
        );
        fs::write(&path, script).expect("write ssid script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// What the rig's `ssid_command` was asked so far, in order.
    pub fn ssid_calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("ssid.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The daemon's control socket (for `provisionerctl -s`).
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// `provisionerctl -s <this rig's socket> args...`, run in the router namespace; its
    /// stdout (one JSON line).
    pub fn ctl(&self, args: &[&str]) -> String {
        let bin = daemon_bin();
        let sock = self.control_socket();
        let mut cmd = vec![
            bin.to_str().expect("utf-8 path"),
            "provisionerctl",
            "-s",
            sock.to_str().expect("utf-8 path"),
        ];
        cmd.extend_from_slice(args);
        self.router().exec_ok(&cmd).trim().to_owned()
    }

    /// `nft list tables` in the router namespace.
    pub fn router_tables(&self) -> String {
        self.router().exec_ok(&["nft", "list", "tables"])
    }
}

// ---- Stale state from killed runs and deletion ----------------------------------------

/// Deletes namespaces and temp dirs `pv<pid>-...` whose pid no longer exists (a test run
/// that was SIGKILLed never ran `Drop`), killing any processes still inside them.
pub fn sweep_stale() {
    let me = std::process::id();
    let stale = |name: &str| rig_pid(name).is_some_and(|pid| pid != me && !pid_alive(pid));
    for name in list_dir(Path::new("/run/netns")) {
        if stale(&name) {
            kill_ns_pids(&name);
            delete_ns(&name);
        }
    }
    let tmp = std::env::temp_dir();
    for name in list_dir(&tmp) {
        if stale(&name) {
            let _ = fs::remove_dir_all(tmp.join(name));
        }
    }
}

fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

fn rig_pid(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix("pv")?.split_once('-')?;
    pid.parse().ok().filter(|&p| p > 0 && p <= i32::MAX as u32)
}

fn pid_alive(pid: u32) -> bool {
    // EPERM still means it exists.
    !matches!(kill(Pid::from_raw(pid as i32), None), Err(Errno::ESRCH))
}

fn kill_ns_pids(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    let me = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        match pid.parse::<u32>() {
            Ok(pid) if pid != me => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            _ => {}
        }
    }
}

fn delete_ns(name: &str) {
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(out) if out.status.success() => {}
        // Someone else (a parallel sweep) may have been faster.
        _ if !Path::new("/run/netns").join(name).exists() => {}
        Ok(out) => eprintln!(
            "rig: ip netns del {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("rig: ip netns del {name}: {e}"),
    }
}

// ---- Child processes ------------------------------------------------------------------

/// A process started with [`Rig::spawn`]. Dropping it kills it.
pub struct Proc {
    inner: Arc<ProcInner>,
    what: String,
}

struct ProcInner {
    pid: u32,
    /// Readable once the process exits: lets `wait` block with a timeout, no polling.
    pidfd: OwnedFd,
    child: Mutex<ChildState>,
    out: Mutex<Lines>,
}

struct ChildState {
    child: Child,
    /// Set once reaped; until then the pid (and process group id) cannot be reused,
    /// so signalling by pid is safe.
    status: Option<ExitStatus>,
}

struct Lines {
    rx: Receiver<String>,
    lines: Vec<String>,
    /// Lines that already satisfied a `wait_line`.
    used: Vec<bool>,
    closed: bool,
}

impl Lines {
    fn push(&mut self, line: String) {
        self.lines.push(line);
        self.used.push(false);
    }

    /// Waits up to `timeout` for one more line (or for the end of the output).
    fn pull(&mut self, timeout: Duration) {
        match self.rx.recv_timeout(timeout) {
            Ok(line) => self.push(line),
            Err(RecvTimeoutError::Disconnected) => self.closed = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }

    /// Takes in every line already read, without waiting.
    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(line) => self.push(line),
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    fn tail(&self) -> String {
        let start = self.lines.len().saturating_sub(40);
        self.lines[start..].join("\n")
    }
}

impl ProcInner {
    fn kill(&self) {
        let mut st = lock(&self.child);
        if st.status.is_none() {
            // The group id is our unreaped child's pid, so it cannot have been reused.
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            st.status = st.child.wait().ok();
        }
    }
}

impl Proc {
    /// Waits for a stdout/stderr line containing `needle` that no earlier `wait_line`
    /// returned (so lines printed before the call count, and each line satisfies one wait).
    /// The error lists the output seen so far.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut out = lock(&self.inner.out);
        let mut from = 0;
        loop {
            if let Some(i) =
                (from..out.lines.len()).find(|&i| !out.used[i] && out.lines[i].contains(needle))
            {
                out.used[i] = true;
                return Ok(out.lines[i].clone());
            }
            from = out.lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if out.closed || left.is_zero() {
                let why = if out.closed {
                    "output closed"
                } else {
                    "timed out"
                };
                return Err(format!(
                    "{why} waiting for {needle:?} from {}; output so far:\n{}",
                    self.what,
                    out.tail()
                ));
            }
            out.pull(left);
        }
    }

    /// Every line seen so far (stdout and stderr interleaved as read).
    pub fn lines(&self) -> Vec<String> {
        let mut out = lock(&self.inner.out);
        out.drain();
        out.lines.clone()
    }

    /// SIGKILLs the process group and reaps the process.
    pub fn kill9(&mut self) {
        self.inner.kill();
    }

    /// Sends `sig` to the process (not its group); a no-op once it has been reaped.
    pub fn signal(&self, sig: Signal) {
        let st = lock(&self.inner.child);
        if st.status.is_none() {
            let _ = kill(Pid::from_raw(self.inner.pid as i32), sig);
        }
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if lock(&self.inner.child).status.is_none() {
            poll_readable(&[self.inner.pidfd.as_fd()], Some(timeout));
        }
        let mut st = lock(&self.inner.child);
        if st.status.is_none() {
            st.status = st.child.try_wait().ok().flatten();
        }
        st.status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.inner.kill();
    }
}

fn start_spawner() -> (Sender<SpawnJob>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    let thread = std::thread::Builder::new()
        .name("rig-spawner".into())
        .spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn());
            }
        })
        .expect("spawn rig-spawner thread");
    (tx, thread)
}

fn spawn_reader(pipe: impl Read + Send + 'static, tx: Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

// ---- Probes ---------------------------------------------------------------------------

/// What a probe observed. Probes never panic on network errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The server's line, without the newline.
    Answered(String),
    /// TCP RST / ICMP port unreachable (ECONNREFUSED).
    Refused,
    /// Nothing came back in time.
    TimedOut,
    /// Anything else (e.g. EHOSTUNREACH from an ICMP reject, ENETUNREACH, EPERM).
    Failed(String),
}

impl Probe {
    pub fn answered(&self) -> bool {
        matches!(self, Probe::Answered(_))
    }
}

/// TCP connect from `ns` to `dst` (optionally bound to `src` first, with IP_FREEBIND so a
/// spoofed source can be used) and read the server's line.
pub fn tcp(ns: &Ns, dst: impl Into<SocketAddr>, src: Option<IpAddr>, timeout: Duration) -> Probe {
    let dst = dst.into();
    ns.run(|| {
        let deadline = Instant::now() + timeout;
        let mut stream = match tcp_connect(dst, src, timeout) {
            Ok(s) => s,
            Err(p) => return p,
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Probe::TimedOut;
            }
            let _ = stream.set_read_timeout(Some(left));
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return io_probe("read", &e),
            }
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if line.is_empty() {
            Probe::Failed("connected, but closed without a line".into())
        } else {
            Probe::Answered(line)
        }
    })
}

/// One UDP datagram from `ns` to `dst`; the answer datagram, if any.
pub fn udp(ns: &Ns, dst: impl Into<SocketAddr>, timeout: Duration) -> Probe {
    let dst = dst.into();
    ns.run(|| match udp_exchange(dst, b"probe", timeout) {
        Ok(reply) => Probe::Answered(String::from_utf8_lossy(&reply).trim_end().to_string()),
        Err(p) => p,
    })
}

/// What a DNS query observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    /// NOERROR with these A records (possibly none).
    Answer(Vec<Ipv4Addr>),
    /// Another response code, e.g. "Refused", "NXDomain", "ServFail".
    Rcode(String),
    /// No response in time.
    NoAnswer,
    /// Could not ask or got garbage (refused connection, port unreachable, bad reply...).
    Failed(String),
}

/// Asks `server` (over UDP, or TCP if `tcp`) for the A records of `name`, from `ns`.
pub fn dns(
    ns: &Ns,
    server: impl Into<SocketAddr>,
    name: &str,
    tcp: bool,
    timeout: Duration,
) -> Dns {
    let msg = match dns_exchange(ns, server.into(), name, RecordType::A, tcp, timeout) {
        Ok(m) => m,
        Err(DnsError::TimedOut) => return Dns::NoAnswer,
        Err(DnsError::Refused) => return Dns::Failed("refused".into()),
        Err(DnsError::Failed(e)) => return Dns::Failed(e),
    };
    if msg.metadata.response_code != ResponseCode::NoError {
        return Dns::Rcode(format!("{:?}", msg.metadata.response_code));
    }
    Dns::Answer(
        msg.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
    )
}

/// A DNS response as [`dns_query`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsReply {
    /// The response code's Debug name: "NoError", "NXDomain", "ServFail", "Refused", ...
    pub rcode: String,
    /// The A records of the answer section, in order.
    pub a: Vec<Ipv4Addr>,
    /// The AAAA records of the answer section, in order.
    pub aaaa: Vec<Ipv6Addr>,
    /// The CNAME targets of the answer section, in order (lowercase, no trailing dot).
    pub cnames: Vec<String>,
    /// The lowest TTL in the answer section; `None` without answer records.
    pub min_ttl: Option<u32>,
    /// Every answer record as `owner ttl TYPE data`, names lowercase, the owner without the
    /// trailing dot, e.g. `a.example 300 CNAME b.example.` or `b.example 60 A 11.1.0.10`.
    pub answers: Vec<String>,
    /// The TC bit: the server had more than fits (UDP).
    pub truncated: bool,
}

/// Why [`dns_query`] got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// Nothing came back in time.
    TimedOut,
    /// Nothing listens there: ICMP port unreachable (UDP) or a TCP RST (ECONNREFUSED).
    Refused,
    /// Anything else: another network error (e.g. host unreachable), a bad name, a reply
    /// that does not parse or does not match the query (id, question).
    Failed(String),
}

/// Asks `server` (over UDP, or TCP if `tcp`) from `ns` for the `qtype` records of `name`,
/// with RD set, and returns what came back, whatever the response code.
pub fn dns_query(
    ns: &Ns,
    server: impl Into<SocketAddr>,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<DnsReply, DnsError> {
    let msg = dns_exchange(ns, server.into(), name, qtype, tcp, timeout)?;
    let q = msg.queries.first();
    if msg.queries.len() != 1
        || q.is_some_and(|q| dns_key(&q.name.to_ascii()) != dns_key(name) || q.query_type != qtype)
    {
        return Err(DnsError::Failed(format!(
            "reply for {:?}, asked {name} {qtype}",
            msg.queries
        )));
    }
    let mut reply = DnsReply {
        rcode: format!("{:?}", msg.metadata.response_code),
        a: Vec::new(),
        aaaa: Vec::new(),
        cnames: Vec::new(),
        min_ttl: msg.answers.iter().map(|r| r.ttl).min(),
        answers: Vec::new(),
        truncated: msg.metadata.truncation,
    };
    for r in &msg.answers {
        match &r.data {
            RData::A(a) => reply.a.push(a.0),
            RData::AAAA(a) => reply.aaaa.push(a.0),
            RData::CNAME(c) => reply.cnames.push(dns_key(&c.0.to_ascii())),
            _ => {}
        }
        reply.answers.push(format!(
            "{} {} {} {}",
            dns_key(&r.name.to_ascii()),
            r.ttl,
            r.record_type(),
            r.data.to_string().to_ascii_lowercase()
        ));
    }
    Ok(reply)
}

/// One query (RD set) and its reply, checked to be a response with the query's id.
fn dns_exchange(
    ns: &Ns,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    match Name::from_ascii(name) {
        Ok(n) => query.add_query(Query::query(n, qtype)),
        Err(e) => return Err(DnsError::Failed(format!("bad name {name:?}: {e}"))),
    };
    let wire = query.to_vec().expect("encode DNS query");
    let id = query.metadata.id;
    let reply = ns.run(|| {
        if tcp {
            dns_tcp(server, &wire, timeout)
        } else {
            udp_exchange(server, &wire, timeout)
        }
    });
    let reply = match reply {
        Ok(r) => r,
        Err(Probe::TimedOut) => return Err(DnsError::TimedOut),
        Err(Probe::Refused) => return Err(DnsError::Refused),
        Err(p) => return Err(DnsError::Failed(format!("{p:?}"))),
    };
    match Message::from_vec(&reply) {
        Ok(m) if m.metadata.message_type != MessageType::Response => Err(DnsError::Failed(
            "reply is not a response (QR clear)".into(),
        )),
        Ok(m) if m.metadata.id != id => Err(DnsError::Failed(format!(
            "reply id {} for query {id}",
            m.metadata.id
        ))),
        Ok(m) => Ok(m),
        Err(e) => Err(DnsError::Failed(format!("bad reply: {e}"))),
    }
}

/// `busybox ping -c1 -W<secs>` from `ns` (whole seconds, at least one); true if answered.
pub fn ping(ns: &Ns, dst: impl Into<IpAddr>, timeout: Duration) -> bool {
    let secs = timeout.as_secs_f64().ceil().max(1.0).to_string();
    let dst = dst.into().to_string();
    ns.exec(&["busybox", "ping", "-c1", "-W", &secs, &dst])
        .status
        .success()
}

/// Polls `f` every `poll_every` until it holds or `timeout` passes. Only for conditions
/// nothing signals (e.g. a kernel timeout expiring); await events where they exist.
pub fn wait_until(timeout: Duration, poll_every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(poll_every);
    }
}

fn io_probe(what: &str, e: &std::io::Error) -> Probe {
    match e.kind() {
        ErrorKind::ConnectionRefused => Probe::Refused,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Probe::TimedOut,
        _ => Probe::Failed(format!("{what}: {e}")),
    }
}

fn errno_probe(what: &str, e: Errno) -> Probe {
    io_probe(what, &std::io::Error::from(e))
}

/// Non-blocking connect + poll, so the timeout is ours and the errno is reported as is.
fn tcp_connect(
    dst: SocketAddr,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Probe> {
    let family = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None).map_err(|e| errno_probe("socket", e))?;
    if let Some(src) = src {
        set_freebind(&fd, dst.is_ipv4());
        bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(src, 0)),
        )
        .map_err(|e| errno_probe(&format!("bind {src}"), e))?;
    }
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            if !poll_writable(fd.as_fd(), timeout) {
                return Err(Probe::TimedOut);
            }
            let err =
                getsockopt(&fd, sockopt::SocketError).map_err(|e| errno_probe("SO_ERROR", e))?;
            if err != 0 {
                return Err(errno_probe("connect", Errno::from_raw(err)));
            }
        }
        Err(e) => return Err(errno_probe("connect", e)),
    }
    let stream = TcpStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|e| io_probe("fcntl", &e))?;
    Ok(stream)
}

fn set_freebind(fd: &OwnedFd, v4: bool) {
    let (level, opt) = if v4 {
        (libc::SOL_IP, libc::IP_FREEBIND)
    } else {
        (libc::SOL_IPV6, libc::IPV6_FREEBIND)
    };
    let on: libc::c_int = 1;
    // SAFETY: valid fd and a c_int option value of the stated size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A connected UDP socket, so ICMP port unreachable surfaces as ECONNREFUSED.
fn udp_exchange(dst: SocketAddr, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, Probe> {
    let local: SocketAddr = if dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).map_err(|e| io_probe("bind", &e))?;
    sock.connect(dst).map_err(|e| io_probe("connect", &e))?;
    sock.send(payload).map_err(|e| io_probe("send", &e))?;
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| io_probe("timeout", &e))?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).map_err(|e| io_probe("recv", &e))?;
    buf.truncate(n);
    Ok(buf)
}

fn dns_tcp(server: SocketAddr, wire: &[u8], timeout: Duration) -> Result<Vec<u8>, Probe> {
    let deadline = Instant::now() + timeout;
    let mut s = tcp_connect(server, None, timeout)?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(wire);
    let _ = s.set_write_timeout(Some(left()));
    s.write_all(&framed).map_err(|e| io_probe("write", &e))?;
    let _ = s.set_read_timeout(Some(left()));
    let mut len = [0u8; 2];
    s.read_exact(&mut len)
        .map_err(|e| io_probe("read length", &e))?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    let _ = s.set_read_timeout(Some(left()));
    s.read_exact(&mut reply)
        .map_err(|e| io_probe("read reply", &e))?;
    Ok(reply)
}

// ---- Servers --------------------------------------------------------------------------

enum Kind {
    Tcp(String),
    Udp(String),
    Dns,
    DnsTcp,
}

enum Service {
    Tcp(TcpListener, String),
    Udp(UdpSocket, String),
    Dns(UdpSocket),
    DnsTcp(TcpListener),
}

impl Service {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Service::Tcp(l, _) | Service::DnsTcp(l) => l.as_fd(),
            Service::Udp(s, _) | Service::Dns(s) => s.as_fd(),
        }
    }

    fn set_nonblocking(&self) {
        // Readiness can be stale (a connection reset before accept); never block the loop.
        let res = match self {
            Service::Tcp(l, _) | Service::DnsTcp(l) => l.set_nonblocking(true),
            Service::Udp(s, _) | Service::Dns(s) => s.set_nonblocking(true),
        };
        res.expect("set_nonblocking");
    }

    fn handle(&self, dns: &SharedDns, stop: &UnixStream) {
        match self {
            Service::Tcp(l, label) => {
                while let Ok((mut s, peer)) = l.accept() {
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = writeln!(s, "{label} {}", peer.ip().to_canonical());
                }
            }
            Service::Udp(sock, label) => {
                let mut buf = [0u8; 2048];
                while let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(
                        format!("{label} {}", peer.ip().to_canonical()).as_bytes(),
                        peer,
                    );
                }
            }
            Service::Dns(sock) => {
                let server = local_v4(sock.local_addr());
                let mut buf = [0u8; 4096];
                while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    if let Handled::Reply(reply) = dns_reply(&buf[..n], server, dns, true) {
                        let _ = sock.send_to(&reply, peer);
                    }
                }
            }
            Service::DnsTcp(l) => {
                while let Ok((s, _)) = l.accept() {
                    let Ok(stop) = stop.try_clone() else {
                        continue;
                    };
                    let dns = dns.clone();
                    // Its own thread: a slow client must not stall the other servers.
                    std::thread::spawn(move || serve_dns_tcp(s, &dns, &stop));
                }
            }
        }
    }
}

fn serve(services: Vec<Service>, stop: UnixStream, dns: SharedDns) {
    let mut fds: Vec<BorrowedFd> = services.iter().map(Service::fd).collect();
    fds.push(stop.as_fd());
    loop {
        let Some(ready) = poll_readable(&fds, None) else {
            return;
        };
        if ready.last() == Some(&true) {
            return;
        }
        for (service, _) in services.iter().zip(&ready).filter(|(_, r)| **r) {
            service.handle(&dns, &stop);
        }
    }
}

/// An idle DNS-over-TCP connection is closed after this (unless its resolver is silent).
const DNS_TCP_IDLE: Duration = Duration::from_secs(5);

/// One DNS-over-TCP connection, until the client closes it, it idles for [`DNS_TCP_IDLE`],
/// or the rig goes away (`stop` polls readable).
fn serve_dns_tcp(mut s: TcpStream, dns: &Mutex<DnsState>, stop: &UnixStream) {
    let server = local_v4(s.local_addr());
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(DNS_TCP_IDLE));
    let _ = s.set_write_timeout(Some(DNS_TCP_IDLE));
    let mut idle_since = Instant::now();
    loop {
        let left = (idle_since + DNS_TCP_IDLE).saturating_duration_since(Instant::now());
        let Some(ready) = poll_readable(&[s.as_fd(), stop.as_fd()], Some(left)) else {
            return;
        };
        if ready[1] {
            return;
        }
        if !ready[0] {
            // Idle. A silent resolver holds the connection until the client gives up.
            if lock(dns).silent.contains(&server) {
                idle_since = Instant::now();
                continue;
            }
            return;
        }
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut msg).is_err() {
            return;
        }
        idle_since = Instant::now();
        match dns_reply(&msg, server, dns, false) {
            Handled::Reply(reply) => {
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if s.write_all(&framed).is_err() {
                    return;
                }
            }
            Handled::Silent => {}
            Handled::Garbage => return,
        }
    }
}

/// What the fake resolvers answer for one name of the test's zone ([`Rig::dns_zone`]), to
/// A and AAAA questions; other types always get an empty NOERROR.
#[derive(Clone, Debug, Default)]
pub struct FakeAnswer {
    /// Answer with a CNAME record (with `ttl`) to this name, followed by that name's records
    /// (from the zone, or the default answer if it is not in the zone), like a recursive
    /// resolver does; at most [`DNS_MAX_CNAME_LINKS`] links, and a loop just stops.
    /// `a` and `aaaa` are then ignored.
    pub cname: Option<String>,
    /// The records for A questions (none: NOERROR without answer records).
    pub a: Vec<Ipv4Addr>,
    /// The records for AAAA questions (none: NOERROR without answer records).
    pub aaaa: Vec<Ipv6Addr>,
    /// The TTL of every record of this name (also of its CNAME).
    pub ttl: u32,
    /// Answer with this response code (e.g. NXDomain, ServFail, Refused) and no records
    /// of this name; all other fields are ignored. At the end of a CNAME chain, the
    /// CNAMEs before it are kept (as real resolvers do, RFC 6604).
    pub rcode: Option<ResponseCode>,
}

/// The fake resolvers' state, shared by the rig and the server threads.
#[derive(Default)]
struct DnsState {
    /// Keyed by [`dns_key`].
    zone: HashMap<String, FakeAnswer>,
    /// (resolver, question name as [`dns_key`]) in arrival order.
    seen: Vec<(Ipv4Addr, String)>,
    /// Resolvers that currently do not answer.
    silent: Vec<Ipv4Addr>,
}

type SharedDns = Arc<Mutex<DnsState>>;

/// How names are compared: lowercase, without the trailing dot.
fn dns_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut n = Name::from_ascii(name)?;
    n.set_fqdn(true);
    Ok(n)
}

fn assert_live_resolver(server: Ipv4Addr) {
    assert!(
        DNS_SERVERS.contains(&server),
        "{server} is not a fake resolver (those are {DNS_SERVERS:?})"
    );
}

/// The IPv4 address a server socket is bound to (unspecified if unknown).
fn local_v4(addr: std::io::Result<SocketAddr>) -> Ipv4Addr {
    match addr.map(|a| a.ip().to_canonical()) {
        Ok(IpAddr::V4(ip)) => ip,
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

enum Handled {
    Reply(Vec<u8>),
    /// The resolver is silent: send nothing.
    Silent,
    /// Not a DNS message (or one we cannot encode an answer to).
    Garbage,
}

/// Records every question name (for `server`) and, unless `server` is silent, answers:
/// from the zone, else A questions with DNS_ANSWER and everything else with an empty
/// NOERROR. Over UDP (`udp`), an answer too big for the client is sent truncated (TC).
fn dns_reply(wire: &[u8], server: Ipv4Addr, dns: &Mutex<DnsState>, udp: bool) -> Handled {
    let Ok(req) = Message::from_vec(wire) else {
        return Handled::Garbage;
    };
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        resp.set_edns(edns);
    }
    {
        let mut state = lock(dns);
        for q in &req.queries {
            state.seen.push((server, dns_key(&q.name.to_ascii())));
        }
        if state.silent.contains(&server) {
            return Handled::Silent;
        }
        for q in &req.queries {
            resp.add_query(q.clone());
            let (rcode, records) = resolve(&state.zone, &q.name, q.query_type);
            resp.add_answers(records);
            if rcode != ResponseCode::NoError {
                resp.metadata.response_code = rcode;
            }
        }
    }
    let Ok(reply) = resp.to_vec() else {
        return Handled::Garbage;
    };
    if udp && reply.len() > usize::from(req.max_payload()) {
        return match resp.truncate().to_vec() {
            Ok(reply) => Handled::Reply(reply),
            Err(_) => Handled::Garbage,
        };
    }
    Handled::Reply(reply)
}

/// The response code and answer records for one question, like a recursive resolver:
/// CNAMEs within the zone are followed (at most [`DNS_MAX_CNAME_LINKS`]; a loop stops).
fn resolve(
    zone: &HashMap<String, FakeAnswer>,
    qname: &Name,
    qtype: RecordType,
) -> (ResponseCode, Vec<Record>) {
    let mut records = Vec::new();
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        return (ResponseCode::NoError, records);
    }
    // The question's spelling for the first owner (a client may check its 0x20 case).
    let mut owner = qname.clone();
    let mut visited = vec![dns_key(&owner.to_ascii())];
    loop {
        let Some(entry) = zone.get(visited.last().expect("not empty")) else {
            // Outside the zone: the rest of the internet.
            if qtype == RecordType::A {
                records.push(Record::from_rdata(owner, DNS_TTL, RData::A(A(DNS_ANSWER))));
            }
            return (ResponseCode::NoError, records);
        };
        if let Some(rcode) = entry.rcode {
            return (rcode, records);
        }
        let Some(target) = &entry.cname else {
            let ttl = entry.ttl;
            let data: Vec<RData> = if qtype == RecordType::A {
                entry.a.iter().map(|ip| RData::A(A(*ip))).collect()
            } else {
                entry.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect()
            };
            records.extend(
                data.into_iter()
                    .map(|d| Record::from_rdata(owner.clone(), ttl, d)),
            );
            return (ResponseCode::NoError, records);
        };
        let Ok(target_name) = fqdn(target) else {
            return (ResponseCode::ServFail, records);
        };
        records.push(Record::from_rdata(
            owner,
            entry.ttl,
            RData::CNAME(CNAME(target_name.clone())),
        ));
        let key = dns_key(target);
        if records.len() >= DNS_MAX_CNAME_LINKS || visited.contains(&key) {
            return (ResponseCode::NoError, records);
        }
        visited.push(key);
        owner = target_name;
    }
}

// ---- Small helpers --------------------------------------------------------------------

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// poll(2) for input (or hangup) on `fds`: which ones are ready, `None` if poll failed.
/// A `None` timeout waits forever.
fn poll_readable(fds: &[BorrowedFd], timeout: Option<Duration>) -> Option<Vec<bool>> {
    poll(fds, libc::POLLIN, timeout)
}

fn poll_writable(fd: BorrowedFd, timeout: Duration) -> bool {
    poll(&[fd], libc::POLLOUT, Some(timeout)).is_some_and(|r| r[0])
}

fn poll(fds: &[BorrowedFd], events: libc::c_short, timeout: Option<Duration>) -> Option<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        })
        .collect();
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        // Rounded up: a sub-millisecond rest must not turn into a busy non-wait.
        let ms = deadline.map_or(-1, |d| {
            let left = d.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: pfds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Some(pfds.iter().map(|p| p.revents != 0).collect());
        }
        if Errno::last() != Errno::EINTR {
            return None;
        }
    }
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn must(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n <ns> -batch -`: one process for many commands keeps setup fast.
fn ip_batch(ns: &str, lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip -batch");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(lines.join("\n").as_bytes())
        .expect("write ip batch");
    drop(stdin);
    let out = child.wait_with_output().expect("wait ip -batch");
    if !out.status.success() {
        let numbered: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{:>3} {l}", i + 1))
            .collect();
        panic!(
            "ip -n {ns} -batch failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            numbered.join("\n")
        );
    }
}

// ---- hostapd and wpa_supplicant: 802.1X over the wired driver as the radio ------------
//
// There is no Wi-Fi radio in a namespace, so hostapd's `wired` driver with IEEE 802.1X
// stands in for it: one hostapd on the bridge prov0 sees every client as a station, and a
// client "associates" by running `wpa_supplicant -Dwired` (EAP-MD5) on its eth0. hostapd
// then reports real stations, real events and a real control socket.
//
// How the frames get there: a supplicant sends EAPOL to the PAE group address
// 01:80:c2:00:00:03. A Linux bridge never forwards that link-local group by default and
// hands such frames up on the *port* (prov0-cN), not on prov0, so hostapd on prov0 would
// see nothing. `group_fwd_mask 8` (bit 3 = ...:03) makes the bridge treat them as
// forwardable multicast: they go up to prov0 (where hostapd listens) and, once every port is
// isolated (the daemon does it), to no other client. hostapd answers each station by unicast
// (`use_pae_group_addr=0`), which the bridge delivers to that station's port only.
//
// What the wired driver does differently from a radio (see tests/hostapd.rs):
// - A station exists once hostapd receives any EAPOL frame from it (also: any DHCP packet
//   to UDP port 67 on prov0, which the driver watches to detect stations).
// - Nothing tells hostapd that a station went away: no association, no link, and hostapd
//   cancels its inactivity timer for wired stations (ap_max_inactivity has no effect). The
//   Procs of [`Rig::associate`] therefore send an EAPOL-Logoff for their client when they
//   die, like a station that leaves the network.
// - The deny ACL is not checked when a station appears; hostapd only disconnects denied
//   stations that are present when the MAC is added.
// - The driver binds UDP 0.0.0.0:67 on prov0 (SO_REUSEADDR). Unicast DHCP (renewals) then
//   goes to whichever port-67 socket was bound last: start hostapd before the daemon.

/// The one EAP identity hostapd knows, and its EAP-MD5 password.
pub const EAP_IDENTITY: &str = "iot";
pub const EAP_PASSWORD: &str = "provision";

/// How long [`Rig::start_hostapd`] waits for the control socket to answer.
pub const HOSTAPD_START: Duration = Duration::from_secs(10);
/// How long [`Rig::associate`] waits for the supplicant to be authorized. A supplicant
/// waits 2 s for the authenticator before its first EAPOL-Start, and retries every 30 s.
pub const ASSOCIATE: Duration = Duration::from_secs(70);

impl Rig {
    /// hostapd's `ctrl_interface` directory (hostapd creates it, and removes it on exit).
    pub fn hostapd_ctrl_dir(&self) -> PathBuf {
        self.dir.join("hostapd")
    }

    /// hostapd's control socket for prov0: `<ctrl_interface>/prov0`.
    pub fn hostapd_ctrl(&self) -> PathBuf {
        self.hostapd_ctrl_dir().join(PROV_IF)
    }

    /// The config file [`Rig::start_hostapd`] writes.
    pub fn hostapd_conf_path(&self) -> PathBuf {
        self.dir.join("hostapd.conf")
    }

    /// Writes the config and starts hostapd (wired driver, 802.1X, its own EAP server) in
    /// the router namespace on prov0; returns once its control socket answers PING.
    /// `extra_conf` lines are appended, so they override the defaults (e.g.
    /// `eap_reauth_period=5`). Also lets prov0 pass EAPOL up (see above). hostapd's
    /// stdout carries its events, e.g. `prov0: AP-STA-CONNECTED 02:00:00:00:00:01`.
    /// Call it again (after killing the last one) to restart hostapd.
    pub fn start_hostapd(&self, extra_conf: &str) -> Proc {
        ip_batch(
            &self.router.name,
            &[format!("link set {PROV_IF} type bridge group_fwd_mask 8")],
        );
        let users = self.dir.join("hostapd.eap_user");
        fs::write(
            &users,
            format!("\"{EAP_IDENTITY}\"\tMD5\t\"{EAP_PASSWORD}\"\n"),
        )
        .expect("write hostapd.eap_user");
        let conf = format!(
            "interface={PROV_IF}
driver=wired
ctrl_interface={ctrl}
logger_stdout=-1
logger_stdout_level=2
ieee8021x=1
eapol_version=2
eap_server=1
eap_user_file={users}
# Answer each station by unicast: the PAE group address would reach every client.
use_pae_group_addr=0
# No periodic re-authentication (default 3600 s): it only adds EAP events.
eap_reauth_period=0
{extra_conf}
",
            ctrl = self.hostapd_ctrl_dir().display(),
            users = users.display(),
        );
        let path = self.hostapd_conf_path();
        fs::write(&path, conf).expect("write hostapd.conf");
        let mut p = self.spawn(
            self.router(),
            &["hostapd", path.to_str().expect("utf-8 path")],
        );
        let deadline = Instant::now() + HOSTAPD_START;
        loop {
            if self.hostapd_ping() {
                return p;
            }
            if let Some(status) = p.wait(Duration::from_millis(20)) {
                panic!("hostapd exited ({status}):\n{}", p.lines().join("\n"));
            }
            if Instant::now() >= deadline {
                panic!(
                    "hostapd's control socket did not answer within {HOSTAPD_START:?}:\n{}",
                    p.lines().join("\n")
                );
            }
        }
    }

    /// Whether hostapd's control socket answers PING with PONG (within 200 ms).
    pub fn hostapd_ping(&self) -> bool {
        self.hostapd_request("PING", Duration::from_millis(200))
            .is_some_and(|r| r == "PONG\n")
    }

    /// Sends one command to hostapd's control socket from a socket of our own and returns
    /// the reply, `None` if nothing answers in time. For checks; the daemon's client is
    /// `provisioner::radio::hostapd`.
    pub fn hostapd_request(&self, command: &str, timeout: Duration) -> Option<String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let local = self
            .dir
            .join(format!("rig-hostapd-{}", N.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_file(&local);
        let sock = std::os::unix::net::UnixDatagram::bind(&local).ok()?;
        let reply = (|| {
            sock.connect(self.hostapd_ctrl()).ok()?;
            sock.set_read_timeout(Some(timeout)).ok()?;
            sock.send(command.as_bytes()).ok()?;
            let mut buf = vec![0u8; 16 * 1024];
            let n = sock.recv(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })();
        let _ = fs::remove_file(&local);
        reply
    }

    /// `hostapd_cli -p <ctrl dir> -i prov0 args...`: its stdout.
    pub fn hostapd_cli(&self, args: &[&str]) -> String {
        let dir = self.hostapd_ctrl_dir();
        let mut cmd = vec![
            "hostapd_cli",
            "-p",
            dir.to_str().expect("utf-8"),
            "-i",
            PROV_IF,
        ];
        cmd.extend_from_slice(args);
        self.router().exec_ok(&cmd)
    }

    /// wpa_supplicant's `ctrl_interface` directory for client `client`.
    pub fn supplicant_ctrl_dir(&self, client: usize) -> PathBuf {
        self.dir.join(format!("wpa-c{client}"))
    }

    /// Starts wpa_supplicant (wired driver, 802.1X with EAP-MD5) on client `client`'s eth0
    /// and waits until it is authorized (`CTRL-EVENT-CONNECTED` after
    /// `CTRL-EVENT-EAP-SUCCESS`); hostapd has sent `AP-STA-CONNECTED` by then. Killing or
    /// dropping the Proc = the station leaves: an EAPOL-Logoff for the client goes out
    /// when the process dies (hostapd then sends `AP-STA-DISCONNECTED`).
    pub fn associate(&self, client: usize) -> Proc {
        let p = self.start_supplicant(client);
        if let Err(e) = p.wait_line("CTRL-EVENT-CONNECTED", ASSOCIATE) {
            panic!("client {client} was not authorized: {e}");
        }
        p
    }

    /// The wpa_supplicant config file [`Rig::start_supplicant`] writes for `client`.
    pub fn supplicant_conf_path(&self, client: usize) -> PathBuf {
        self.dir.join(format!("wpa-c{client}.conf"))
    }

    /// Starts wpa_supplicant like [`Rig::associate`] but returns at once, without waiting
    /// for it to be authorized (e.g. for a client that hostapd should refuse). The Proc
    /// sends the EAPOL-Logoff on death all the same.
    pub fn start_supplicant(&self, client: usize) -> Proc {
        let ns = self.client(client);
        let conf = self.supplicant_conf_path(client);
        fs::write(
            &conf,
            format!(
                "ctrl_interface={ctrl}
ap_scan=0
eapol_version=2
network={{
\tkey_mgmt=IEEE8021X
\teap=MD5
\tidentity=\"{EAP_IDENTITY}\"
\tpassword=\"{EAP_PASSWORD}\"
\teapol_flags=0
}}
",
                ctrl = self.supplicant_ctrl_dir(client).display()
            ),
        )
        .expect("write wpa_supplicant conf");
        // Opened before the supplicant starts: the Logoff must not depend on setns later,
        // when the namespace may already be going away.
        let sock = ns.run(|| pae_socket(HOST_IF)).expect("EAPOL socket");
        let p = self.spawn(
            ns,
            &[
                "wpa_supplicant",
                "-Dwired",
                "-i",
                HOST_IF,
                "-c",
                conf.to_str().expect("utf-8 path"),
            ],
        );
        let pidfd = p.inner.pidfd.try_clone().expect("dup pidfd");
        let mac = Rig::client_mac(client);
        std::thread::Builder::new()
            .name(format!("rig-logoff-c{client}"))
            .spawn(move || {
                poll_readable(&[pidfd.as_fd()], None);
                send_eapol_logoff(&sock, mac);
            })
            .expect("spawn logoff thread");
        p
    }

    /// `wpa_cli -p <ctrl dir> -i eth0 args...` for client `client`: its stdout. E.g.
    /// `logoff` (EAPOL-Logoff: the station leaves), `logon`, `reauthenticate` (a new
    /// EAPOL-Start: the station joins again), `status`.
    pub fn wpa_cli(&self, client: usize, args: &[&str]) -> String {
        let dir = self.supplicant_ctrl_dir(client);
        let mut cmd = vec!["wpa_cli", "-p", dir.to_str().expect("utf-8"), "-i", HOST_IF];
        cmd.extend_from_slice(args);
        self.client(client).exec_ok(&cmd)
    }
}

/// A raw packet socket on `ifname` that sends whole Ethernet frames and receives nothing.
fn pae_socket(ifname: &str) -> std::io::Result<OwnedFd> {
    // Protocol 0: no frames are queued to this socket; it only sends.
    // SAFETY: plain syscall; on success we own the new descriptor.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).expect("no NUL in interface name");
    // SAFETY: name is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the stated size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// An EAPOL-Logoff from `mac` to the PAE group address (best effort: the namespace may
/// be gone already).
fn send_eapol_logoff(sock: &OwnedFd, mac: [u8; 6]) {
    let mut frame = vec![0x01, 0x80, 0xc2, 0x00, 0x00, 0x03];
    frame.extend_from_slice(&mac);
    // EtherType 802.1X; version 2, type 2 (EAPOL-Logoff), body length 0.
    frame.extend_from_slice(&[0x88, 0x8e, 0x02, 0x02, 0x00, 0x00]);
    frame.resize(60, 0);
    // SAFETY: frame is a valid buffer of the stated length.
    unsafe {
        libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0);
    }
}
