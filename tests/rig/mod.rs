//! Network-namespace test rig (root only): a router namespace between a fake internet
//! ("cloud"), a home LAN and a provisioning bridge with a port per client, plus the
//! servers and probes that leak tests need. [`Rig::new`] builds it all; dropping the
//! [`Rig`] takes it all down again.
//!
//! Every link is created inside a namespace, so the host's interfaces, routes and
//! nftables ruleset are never touched.
//!
//! Where things are:
//! - `topology.rs`: the interfaces, addresses and routes (a diagram), the bridge's ports.
//! - `ns.rs`: [`Ns`] (commands and threads in a namespace), naming, creating and deleting
//!   namespaces, sweeping those of killed runs ([`sweep_stale`]).
//! - `procs.rs`: [`Rig::spawn`] and [`Proc`]: processes, their output, signals, exits.
//! - `daemon.rs`: the daemon under test: [`config`], [`Rig::start_daemon`], [`Rig::ctl`].
//! - `probes.rs`: [`tcp`], [`udp`], [`dns`], [`dns_query`], [`ping`], [`Rig::dhcp`],
//!   [`wait_until`].
//! - `servers.rs`: the listeners in every namespace; `fake_dns.rs`: the fake public
//!   resolvers ([`Rig::dns_zone`], [`Rig::dns_silent`], [`Rig::dns_queries`]).
//! - `radio.rs`: hostapd and wpa_supplicant standing in for the radio.
//! - `l2.rs`: raw frames and a sniffer on the setup segment.
//! - `load.rs`: [`load`]: concurrent TCP transfers, each measured over one common window.
//! - `udhcpc.sh`: the DHCP client's event script.

// Each test crate (and the demo) that includes this module uses a different subset.
#![allow(dead_code)]

mod daemon;
mod echo;
mod fake_dns;
pub mod l2;
mod load;
mod ns;
mod probes;
mod procs;
mod radio;
mod servers;
mod topology;
mod util;

// The rig's API, as one namespace (`use rig::*`); a test crate that uses none of a file's
// items would otherwise be told its re-export is unused.
#[allow(unused_imports)]
pub use {
    daemon::*, echo::*, fake_dns::*, load::*, ns::*, probes::*, procs::*, radio::*, topology::*,
};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, Weak};
use std::thread::JoinHandle;

use fake_dns::SharedDns;
use ns::{add_ns, delete_ns, kill_ns_pids, unique_prefix};
use probes::UDHCPC_SCRIPT;
use procs::{ProcInner, SpawnJob, start_spawner};
use util::lock;

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

impl Rig {
    /// Builds the topology (see `topology.rs`) with `clients` provisioning clients (1..=254)
    /// and starts all servers; they are listening when this returns.
    pub fn new(clients: usize) -> Rig {
        assert!(clients <= 254, "client MACs only have one byte");
        sweep_stale();

        let prefix = unique_prefix();
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
        let script = rig.udhcpc_script();
        fs::write(&script, UDHCPC_SCRIPT).expect("write udhcpc.sh");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod udhcpc.sh");

        let names: Vec<String> = rig.all_ns().map(|n| n.name.clone()).collect();
        for name in names {
            add_ns(&name);
            rig.created.push(name);
        }
        for n in rig.all_ns() {
            let router = n.name == rig.router.name;
            n.run(|| topology::set_sysctls(router));
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

    /// A per-rig temp dir for config files etc., removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
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
