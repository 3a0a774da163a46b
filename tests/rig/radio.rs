//! The radio: hostapd and wpa_supplicant, 802.1X over the wired driver.
//!
//! There is no Wi-Fi radio in a namespace, so hostapd's `wired` driver with IEEE 802.1X
//! stands in for it: one hostapd on the bridge prov0 sees every client as a station, and a
//! client "associates" by running `wpa_supplicant -Dwired` (EAP-MD5) on its eth0. hostapd
//! then reports real stations, real events and a real control socket.
//!
//! How the frames get there: a supplicant sends EAPOL to the PAE group address
//! 01:80:c2:00:00:03. A Linux bridge never forwards that link-local group by default and
//! hands such frames up on the *port* (prov0-cN), not on prov0, so hostapd on prov0 would
//! see nothing. `group_fwd_mask 8` (bit 3 = ...:03) makes the bridge treat them as
//! forwardable multicast: they go up to prov0 (where hostapd listens) and, once every port is
//! isolated (the daemon does it), to no other client. hostapd answers each station by unicast
//! (`use_pae_group_addr=0`), which the bridge delivers to that station's port only.
//!
//! What the wired driver does differently from a radio (see tests/hostapd.rs):
//! - A station exists once hostapd receives any EAPOL frame from it (also: any DHCP packet
//!   to UDP port 67 on prov0, which the driver watches to detect stations).
//! - Nothing tells hostapd that a station went away: no association, no link, and hostapd
//!   cancels its inactivity timer for wired stations (ap_max_inactivity has no effect). The
//!   Procs of [`Rig::associate`] therefore send an EAPOL-Logoff for their client when they
//!   die, like a station that leaves the network.
//! - The deny ACL is not checked when a station appears; hostapd only disconnects denied
//!   stations that are present when the MAC is added.
//! - The driver binds UDP 0.0.0.0:67 on prov0 (SO_REUSEADDR). Unicast DHCP (renewals) then
//!   goes to whichever port-67 socket was bound last: start hostapd before the daemon.

use std::fs;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::l2::{Injector, ether};
use super::ns::ip_batch;
use super::util::poll_readable;
use super::{HOST_IF, PROV_IF, Proc, Rig};

/// Where 802.1X frames go (IEEE 802.1X port access entity group address).
const PAE_GROUP: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x03];

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
        let sock = Injector::new(ns);
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
        let pidfd = p.pidfd().try_clone_to_owned().expect("dup pidfd");
        let mac = Rig::client_mac(client);
        std::thread::Builder::new()
            .name(format!("rig-logoff-c{client}"))
            .spawn(move || {
                poll_readable(&[pidfd.as_fd()], None);
                // EtherType 802.1X, to the PAE group address; version 2, type 2
                // (EAPOL-Logoff), body length 0. Best effort: the namespace may be gone.
                let logoff = ether(PAE_GROUP, mac, 0x888e, &[0x02, 0x02, 0x00, 0x00]);
                sock.try_send(&logoff);
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
