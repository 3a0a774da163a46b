//! A ubus of its own, the kit's real ubusd and rpcd (tests/kit), with the package's ACL
//! (openwrt/files/provisioner.acl.json) where the package installs it; the rig's daemon
//! provides the object `provisioner` on it (`provisionerd --ubus` [`Bus::socket`]). For
//! tests/ubus.rs and examples/bench_control.rs. Dropping the [`Bus`] kills rpcd and ubusd
//! (also while unwinding from a panic).
//!
//! Layout, under `dir`: `root/` stands for the router's `/` (rpcd's working directory: its
//! paths are relative to it in the kit), `acl/` (ubusd's, empty: uid 0 only), `ubus.sock`.
//! rpcd runs in a mount namespace of its own where `/etc` is an overlay holding
//! `/etc/config/rpcd` (its logins): the host's `/etc` is not touched.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::kit;

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
    ubusd: Option<Child>,
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
    /// Where the bus in `dir` has ubusd's socket: for `provisionerd --ubus`, also before
    /// the bus starts.
    pub fn socket(dir: &Path) -> PathBuf {
        dir.join("ubus.sock")
    }

    /// ubusd and rpcd (sessions, the ACL) in `dir` (created); returns once rpcd's
    /// `session` is on the bus. The daemon provides `provisioner` itself (`--ubus`
    /// [`Bus::socket`]): [`Bus::wait_for`] it.
    pub fn start(dir: &Path) -> Bus {
        let root = dir.join("root");
        let acls = root.join("usr/share/rpcd/acl.d");
        for d in [&acls, &root.join("var/run"), &dir.join("acl")] {
            fs::create_dir_all(d).unwrap();
        }
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
        let mut bus = Bus {
            dir: dir.to_owned(),
            sock: Bus::socket(dir),
            ubusd: None,
            rpcd: None,
        };
        bus.spawn();
        bus
    }

    /// ubusd, then rpcd on it (owned by the Bus from the start: a failure kills them).
    fn spawn(&mut self) {
        let _ = fs::remove_file(&self.sock);
        let ubusd = Command::new(kit::bin("ubusd"))
            .arg("-s")
            .arg(&self.sock)
            .arg("-A")
            .arg(self.dir.join("acl"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start ubusd");
        self.ubusd = Some(ubusd);
        wait_for("ubusd's socket", Duration::from_secs(10), || {
            self.sock.exists()
        });
        let path = format!(
            "{}:{}",
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
            .arg(self.dir.join("etc"))
            .arg(self.dir.join("root"))
            .arg(kit::bin("rpcd"))
            .arg(&self.sock)
            .env("PATH", path)
            .stdin(Stdio::null())
            .spawn()
            .expect("start rpcd");
        self.rpcd = Some(rpcd);
        self.wait_for("session", Duration::from_secs(10));
    }

    /// Until `object` is on the bus (`ubus wait_for`), or panics.
    pub fn wait_for(&self, object: &str, timeout: Duration) {
        let secs = timeout.as_secs().max(1).to_string();
        let out = self.ubus(&["-t", &secs, "wait_for", object]);
        assert!(
            out.status.success(),
            "{object} not on the bus within {timeout:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// ubusd (and rpcd with it) stopped and started again: every object is gone, and
    /// who provides one must put it back.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        for c in self.rpcd.iter_mut().chain(self.ubusd.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.rpcd = None;
        self.ubusd = None;
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
        self.stop();
    }
}
