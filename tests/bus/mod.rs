//! A ubus of its own with rpcd publishing the package's exec plugin
//! (openwrt/files/provisioner.rpcd) and its ACL (openwrt/files/provisioner.acl.json), as
//! the package installs them, on the kit's real ubusd and rpcd (tests/kit), talking to the
//! rig's daemon. For tests/ubus.rs and examples/bench_control.rs. Dropping the [`Bus`]
//! kills rpcd and ubusd (also while unwinding from a panic).
//!
//! Layout, under `dir`: `root/` stands for the router's `/` (rpcd's working directory: its
//! paths are relative to it in the kit), `bin/provisionerctl` (the daemon binary, as the
//! package links it), `acl/` (ubusd's, empty: uid 0 only), `ubus.sock`. rpcd runs in a
//! mount namespace of its own where `/etc` is an overlay holding `/etc/config/rpcd` (its
//! logins): the host's `/etc` is not touched. The plugin runs in busybox's ash (OpenWrt's
//! /bin/sh) where busybox is installed.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::kit;
use crate::rig::daemon_bin;

/// rpcd's logins (`/etc/config/rpcd`, as LuCI's users are set up): `viewer` may read the
/// provisioner (the ACL group's read part), `operator` may also give it orders. Both
/// with the password [`PASSWORD`] (its MD5 crypt, as `uci set rpcd.@login[0].password`
/// takes one).
const RPCD_CONFIG: &str = "config login
\toption username 'viewer'
\toption password '$1$provisnr$H6Wqav1WLtDvkpCR78IxE0'
\tlist read 'luci-app-provisioner'

config login
\toption username 'operator'
\toption password '$1$provisnr$H6Wqav1WLtDvkpCR78IxE0'
\tlist read 'luci-app-provisioner'
\tlist write 'luci-app-provisioner'
";

pub const PASSWORD: &str = "secret";

pub struct Bus {
    pub dir: PathBuf,
    pub sock: PathBuf,
    ubusd: Child,
    rpcd: Option<Child>,
}

fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Bus {
    /// ubusd and rpcd in `dir` (created), the plugin pointed at `control` (the daemon's
    /// socket) through `PROVISIONER_SOCKET`; returns once `provisioner` is on the bus.
    pub fn start(dir: &Path, control: &Path) -> Bus {
        let root = dir.join("root");
        let plugins = root.join("usr/libexec/rpcd");
        let acls = root.join("usr/share/rpcd/acl.d");
        for d in [&plugins, &acls, &root.join("var/run"), &dir.join("acl")] {
            fs::create_dir_all(d).unwrap();
        }
        fs::create_dir_all(dir.join("bin")).unwrap();
        let _ = fs::remove_file(dir.join("bin/provisionerctl"));
        std::os::unix::fs::symlink(daemon_bin(), dir.join("bin/provisionerctl")).unwrap();

        let plugin = fs::read_to_string(source("openwrt/files/provisioner.rpcd")).unwrap();
        let plugin = match Path::new("/usr/bin/busybox").exists() {
            true => plugin.replacen("#!/bin/sh\n", "#!/usr/bin/busybox ash\n", 1),
            false => plugin,
        };
        let installed = plugins.join("provisioner");
        fs::write(&installed, plugin).unwrap();
        fs::set_permissions(&installed, fs::Permissions::from_mode(0o755)).unwrap();
        fs::copy(
            source("openwrt/files/provisioner.acl.json"),
            acls.join("provisioner.json"),
        )
        .unwrap();
        fs::copy(
            kit::prefix().join("share/rpcd/acl.d/unauthenticated.json"),
            acls.join("unauthenticated.json"),
        )
        .unwrap();
        let etc = dir.join("etc");
        for d in ["upper/config", "work"] {
            fs::create_dir_all(etc.join(d)).unwrap();
        }
        fs::write(etc.join("upper/config/rpcd"), RPCD_CONFIG).unwrap();

        let sock = dir.join("ubus.sock");
        let ubusd = Command::new(kit::bin("ubusd"))
            .arg("-s")
            .arg(&sock)
            .arg("-A")
            .arg(dir.join("acl"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start ubusd");
        // Owned by the Bus from here: a failure below kills what started.
        let mut bus = Bus {
            dir: dir.to_owned(),
            sock: sock.clone(),
            ubusd,
            rpcd: None,
        };
        wait_for("ubusd's socket", Duration::from_secs(10), || sock.exists());
        let path = format!(
            "{}:{}:{}",
            dir.join("bin").display(),
            kit::prefix().join("bin").display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        // `unshare -m` and `sh` exec: the child is rpcd itself.
        let rpcd = Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(
                "mount -t overlay overlay -o lowerdir=/etc,upperdir=\"$1/upper\",workdir=\"$1/work\" /etc \
                 && cd \"$2\" && exec \"$3\" -s \"$4\"",
            )
            .arg("sh")
            .arg(&etc)
            .arg(&root)
            .arg(kit::bin("rpcd"))
            .arg(&sock)
            .env("PATH", path)
            .env("PROVISIONER_SOCKET", control)
            .stdin(Stdio::null())
            .spawn()
            .expect("start rpcd");
        bus.rpcd = Some(rpcd);
        let out = bus.ubus(&["-t", "10", "wait_for", "provisioner", "session"]);
        assert!(
            out.status.success(),
            "rpcd did not publish provisioner and session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bus
    }

    /// `ubus -s SOCK ARGS`.
    pub fn ubus(&self, args: &[&str]) -> Output {
        Command::new(kit::bin("ubus"))
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("run ubus")
    }

    /// `ubus call OBJECT METHOD ARGS`: its reply, which must be a JSON object (ubus
    /// status 0).
    pub fn call(&self, object: &str, method: &str, args: &str) -> serde_json::Value {
        let out = self.ubus(&["call", object, method, args]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ubus call {object} {method} {args}: {}{stdout} ({})",
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("ubus call {object} {method} printed {stdout:?}: {e}"))
    }

    /// `ubus call provisioner METHOD ARGS`.
    pub fn provisioner(&self, method: &str, args: &str) -> serde_json::Value {
        self.call("provisioner", method, args)
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        for c in self.rpcd.iter_mut().chain([&mut self.ubusd]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
