//! The daemon under test: its binary, a config for the rig's topology, starting it in the
//! router namespace, its control socket (`provisionerctl`), the `ssid_command` the rig gives
//! it, and what it leaves in the router's nftables.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use provisioner::control::protocol::{Reply, Status};

use super::{CLOUD_ALLOWED, PROV_IF, PROV_NET, PROV_PREFIX, Proc, ROUTER_PROV, Rig, WAN_IF};

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
        let p = self.spawn_daemon(config, &[]);
        if let Err(e) = p.wait_line("ready", Duration::from_secs(30)) {
            panic!("provisionerd did not come up: {e}");
        }
        p
    }

    /// Writes `config` and starts `provisionerd` with `extra` arguments, without waiting
    /// (with `--syslog` it says "ready" elsewhere).
    pub fn spawn_daemon(&self, config: &str, extra: &[&str]) -> Proc {
        self.spawn_daemon_in(None, config, extra)
    }

    /// [`Rig::start_daemon`] with `dir` first in the daemon's PATH (the kit's `uci`, as a
    /// router has it).
    pub fn start_daemon_with_path(&self, dir: &Path, config: &str) -> Proc {
        self.start_daemon_in(Some(dir), config, &[])
    }

    /// [`Rig::start_daemon`] with `env` (`NAME=VALUE`) in its environment.
    pub fn start_daemon_env(&self, config: &str, env: &[&str]) -> Proc {
        let path = self.config_path();
        fs::write(&path, config).expect("write config");
        let bin = daemon_bin();
        let control = self.control_socket();
        let run = self.dir.join("run");
        let mut args = vec!["env"];
        args.extend(env);
        args.extend([
            bin.to_str().expect("utf-8 path"),
            "provisionerd",
            "-c",
            path.to_str().expect("utf-8 path"),
            "--control",
            control.to_str().expect("utf-8 path"),
            "--run-dir",
            run.to_str().expect("utf-8 path"),
            "--ubus",
            "none",
        ]);
        let p = self.spawn(self.router(), &args);
        if let Err(e) = p.wait_line("ready", Duration::from_secs(30)) {
            panic!("provisionerd did not come up: {e}");
        }
        p
    }

    /// [`Rig::start_daemon`] with `path_dir` first in its PATH and `extra` arguments.
    pub fn start_daemon_in(&self, path_dir: Option<&Path>, config: &str, extra: &[&str]) -> Proc {
        let p = self.spawn_daemon_in(path_dir, config, extra);
        if let Err(e) = p.wait_line("ready", Duration::from_secs(30)) {
            panic!("provisionerd did not come up: {e}");
        }
        p
    }

    /// The daemon on the config file at `path` as it is (a TOML one, say), with
    /// `path_dir` first in its PATH; returns once it is ready.
    pub fn start_daemon_on(&self, path: &Path, path_dir: Option<&Path>) -> Proc {
        let p = self.spawn_daemon_on(path, path_dir, &[]);
        if let Err(e) = p.wait_line("ready", Duration::from_secs(30)) {
            panic!("provisionerd did not come up: {e}");
        }
        p
    }

    fn spawn_daemon_in(&self, path_dir: Option<&Path>, config: &str, extra: &[&str]) -> Proc {
        let path = self.config_path();
        fs::write(&path, config).expect("write config");
        self.spawn_daemon_on(&path, path_dir, extra)
    }

    fn spawn_daemon_on(&self, path: &Path, path_dir: Option<&Path>, extra: &[&str]) -> Proc {
        let bin = daemon_bin();
        let mut args: Vec<String> = match path_dir {
            Some(d) => vec![
                "env".into(),
                format!(
                    "PATH={}:{}",
                    d.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            ],
            None => Vec::new(),
        };
        args.extend([
            bin.to_str().expect("utf-8 path").to_owned(),
            "provisionerd".into(),
            "-c".into(),
            path.to_str().expect("utf-8 path").into(),
            "--control".into(),
            self.control_socket().to_str().expect("utf-8 path").into(),
            "--run-dir".into(),
            self.dir.join("run").to_str().expect("utf-8 path").into(),
        ]);
        args.extend(extra.iter().map(|a| a.to_string()));
        // No ubus object unless a test asks for one: a ubusd of the host's is not ours.
        if !extra.contains(&"--ubus") {
            args.extend(["--ubus".into(), "none".into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(self.router(), &args)
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

    /// `provisionerctl ARGS` in the router namespace, as it ran (for its exit status and
    /// human output).
    pub fn ctl_output(&self, args: &[&str]) -> std::process::Output {
        let bin = daemon_bin();
        let sock = self.control_socket();
        let mut cmd = vec![
            bin.to_str().expect("utf-8 path"),
            "provisionerctl",
            "-s",
            sock.to_str().expect("utf-8 path"),
        ];
        cmd.extend_from_slice(args);
        self.router().exec(&cmd)
    }

    /// `provisionerctl --json ARGS`, its reply read as the control protocol's type; a
    /// reply that is an error (provisionerctl exits non-zero) fails the test with what it
    /// said.
    pub fn ctl(&self, args: &[&str]) -> Reply {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = self.ctl_output(&with_json);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "provisionerctl {args:?}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        Reply::decode(stdout.trim())
            .unwrap_or_else(|e| panic!("provisionerctl {args:?} printed {stdout:?}: {e}"))
    }

    /// `provisionerctl status`.
    pub fn status(&self) -> Status {
        match self.ctl(&["status"]) {
            Reply::Status(s) => s,
            other => panic!("status answered {other:?}"),
        }
    }

    /// `nft list tables` in the router namespace.
    pub fn router_tables(&self) -> String {
        self.router().exec_ok(&["nft", "list", "tables"])
    }
}
