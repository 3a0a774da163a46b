//! The OpenWrt package, without the SDK, a router or root.
//!
//! - `scripts/ipk.sh` on a dummy binary (no cross build needed): the .ipk is unpacked with
//!   `tar` and checked member by member against what OpenWrt's ipkg-build makes and opkg
//!   reads; two builds are byte-identical.
//! - The shell scripts: `sh -n` (and busybox's ash, OpenWrt's shell, when installed) on
//!   every one, shellcheck when installed; the uci-defaults script, the init script and
//!   provisioner-ssid run against a fake `uci` (tests/openwrt/uci) on OpenWrt-like configs
//!   (tests/openwrt/config) with stub `wifi`, `logger`, `nft` and procd functions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EPOCH: &str = "1700000000";
/// `SOURCE_DATE_EPOCH` as `tar --utc -tv` shows it.
const EPOCH_LISTED: &str = "2023-11-14 22:13";
const ARCHES: [&str; 4] = [
    "mipsel_24kc",
    "mips_24kc",
    "arm_cortex-a7_neon-vfpv4",
    "aarch64_cortex-a53",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory for one test, removed when the test passes (kept when it fails).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn scratch(name: &str) -> Scratch {
    let dir =
        std::env::temp_dir().join(format!("provisioner-package-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A stand-in for the cross-built binary.
fn dummy_binary(dir: &Path) -> PathBuf {
    let p = dir.join("provisioner-dummy");
    std::fs::write(&p, "#!/bin/sh\necho provisioner\n").unwrap();
    p
}

fn ipk_sh(binary: &Path, out: &Path, arch: &str) -> Command {
    let mut c = Command::new(root().join("scripts/ipk.sh"));
    c.arg("-b")
        .arg(binary)
        .arg("-o")
        .arg(out)
        .arg(arch)
        .env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

/// Builds the package; returns its path.
fn build(dir: &Path, arch: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let bin = dummy_binary(dir);
    let out = run(&mut ipk_sh(&bin, &dir.join("out"), arch));
    let path = PathBuf::from(text(&out).trim());
    assert!(path.is_file(), "{} was not written", path.display());
    path
}

/// `PKG_RELEASE` etc. from openwrt/Makefile.
fn makefile_var(name: &str) -> String {
    let mk = std::fs::read_to_string(root().join("openwrt/Makefile")).unwrap();
    mk.lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{name}:=")))
        .unwrap_or_else(|| panic!("{name} is not set in openwrt/Makefile"))
        .trim()
        .to_owned()
}

fn version() -> String {
    format!(
        "{}-r{}",
        env!("CARGO_PKG_VERSION"),
        makefile_var("PKG_RELEASE")
    )
}

/// One member of a tar listing.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
    time: String,
    name: String,
    link: Option<String>,
}

/// `tar --utc --numeric-owner -tv` of a gzipped tar, in archive order.
fn list(archive: &Path) -> Vec<Entry> {
    let out = run(Command::new("tar")
        .args(["--utc", "--numeric-owner", "-tvzf"])
        .arg(archive));
    text(&out)
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert!(w.len() == 6 || (w.len() == 8 && w[6] == "->"), "{l}");
            Entry {
                mode: w[0].into(),
                owner: w[1].into(),
                time: format!("{} {}", w[3], w[4]),
                name: w[5].into(),
                link: w.get(7).map(|s| s.to_string()),
            }
        })
        .collect()
}

fn extract(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run(Command::new("tar")
        .arg("-xpzf")
        .arg(archive)
        .arg("-C")
        .arg(into));
}

/// `Field: value` lines; a continuation line (leading space) belongs to the field before.
fn control_fields(control: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in control.lines() {
        if let Some(more) = line.strip_prefix(' ') {
            let v: &mut String = fields.get_mut(&last).expect("continuation after a field");
            v.push('\n');
            v.push_str(more);
        } else {
            let (k, v) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a field: {line}"));
            assert!(!fields.contains_key(k), "{k} twice");
            last = k.to_owned();
            fields.insert(last.clone(), v.to_owned());
        }
    }
    fields
}

/// The package, unpacked: outer members, control and data.
struct Unpacked {
    dir: PathBuf,
    outer: Vec<Entry>,
    control: Vec<Entry>,
    data: Vec<Entry>,
}

fn unpack(ipk: &Path, dir: &Path) -> Unpacked {
    let outer_dir = dir.join("outer");
    extract(ipk, &outer_dir);
    let control_dir = dir.join("control");
    extract(&outer_dir.join("control.tar.gz"), &control_dir);
    let data_dir = dir.join("data");
    extract(&outer_dir.join("data.tar.gz"), &data_dir);
    Unpacked {
        dir: dir.to_owned(),
        outer: list(ipk),
        control: list(&outer_dir.join("control.tar.gz")),
        data: list(&outer_dir.join("data.tar.gz")),
    }
}

impl Unpacked {
    fn outer(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join("outer").join(name)).unwrap()
    }
    fn control(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("control").join(name))
            .unwrap_or_else(|e| panic!("control member {name}: {e}"))
    }
    fn data(&self, path: &str) -> PathBuf {
        self.dir.join("data").join(path.trim_start_matches('/'))
    }
}

#[test]
fn ipk_is_what_ipkg_build_makes() {
    let dir = scratch("layout");
    let ipk = build(&dir, "mipsel_24kc");
    assert_eq!(
        ipk.file_name().unwrap().to_str().unwrap(),
        format!("provisioner_{}_mipsel_24kc.ipk", version())
    );
    let raw = std::fs::read(&ipk).unwrap();
    assert_eq!(
        &raw[..2],
        b"\x1f\x8b",
        "opkg reads a gzipped tar (not an ar archive)"
    );
    let p = unpack(&ipk, &dir.join("unpacked"));

    // Outer: the three members, in ipkg-build's order, root-owned, with the fixed time.
    let names: Vec<&str> = p.outer.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    );
    for e in &p.outer {
        assert_eq!(
            (e.mode.as_str(), e.owner.as_str()),
            ("-rw-r--r--", "0/0"),
            "{e:?}"
        );
        assert_eq!(e.time, EPOCH_LISTED, "{e:?}");
    }
    assert_eq!(p.outer("debian-binary"), b"2.0\n");

    // Control.
    let fields = control_fields(&p.control("control"));
    for f in [
        "Package",
        "Version",
        "Depends",
        "Source",
        "SourceName",
        "License",
        "Section",
        "Maintainer",
        "Architecture",
        "Installed-Size",
        "Description",
    ] {
        assert!(
            fields.get(f).is_some_and(|v| !v.trim().is_empty()),
            "control has no {f}: {fields:?}"
        );
    }
    assert_eq!(fields["Package"], "provisioner");
    assert_eq!(fields["SourceName"], "provisioner");
    assert_eq!(fields["Version"], version());
    assert_eq!(fields["Architecture"], "mipsel_24kc");
    assert_eq!(fields["License"], env!("CARGO_PKG_LICENSE"));
    assert_eq!(fields["Section"], "net");
    assert_eq!(fields["SourceDateEpoch"], EPOCH);
    let depends: Vec<&str> = fields["Depends"].split(", ").collect();
    for d in [
        "libc",
        "nftables",
        "kmod-nft-core",
        "kmod-nft-nat",
        "hostapd",
    ] {
        assert!(depends.contains(&d), "Depends lacks {d}: {depends:?}");
    }
    assert_eq!(depends.len(), 5, "{depends:?}");
    // ipkg-build's Installed-Size: the uncompressed data tar.
    let data_tar = run(Command::new("gzip")
        .arg("-dc")
        .arg(p.dir.join("outer/data.tar.gz")));
    assert_eq!(fields["Installed-Size"], data_tar.stdout.len().to_string());
    // Description as package-pack.mk writes it: the first line after "Description: ", the
    // rest each indented by one space (a continuation line).
    assert!(fields["Description"].starts_with(" A hidden, open, isolated"));

    assert_eq!(p.control("conffiles"), "/etc/config/provisioner\n");
    let members: Vec<(&str, &str)> = p
        .control
        .iter()
        .map(|e| (e.name.as_str(), e.mode.as_str()))
        .collect();
    assert_eq!(
        members,
        [
            ("./", "drwxr-xr-x"),
            ("./conffiles", "-rw-r--r--"),
            ("./control", "-rw-r--r--"),
            ("./postinst", "-rwxr-xr-x"),
            ("./postinst-pkg", "-rwxr-xr-x"),
            ("./prerm", "-rwxr-xr-x"),
            ("./prerm-pkg", "-rwxr-xr-x"),
        ]
    );
    for e in p.control.iter().chain(&p.data) {
        assert_eq!(
            (e.owner.as_str(), e.time.as_str()),
            ("0/0", EPOCH_LISTED),
            "{e:?}"
        );
    }
    // The SDK's generated scripts: OpenWrt's default_postinst (uci-defaults, enable, start
    // on a live system; enable only under IPKG_INSTROOT) and default_prerm (stop, disable).
    let postinst = p.control("postinst");
    assert!(postinst.starts_with("#!/bin/sh\n"));
    assert!(postinst.contains("[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0"));
    assert!(postinst.contains(". \"${IPKG_INSTROOT}/lib/functions.sh\""));
    assert!(postinst.contains("default_postinst \"$0\" \"$@\""));
    let prerm = p.control("prerm");
    assert!(prerm.contains(". \"${IPKG_INSTROOT}/lib/functions.sh\""));
    assert!(prerm.contains("default_prerm \"$0\" \"$@\""));
    // The Makefile's own, with make's $$ turned into $.
    for s in ["postinst-pkg", "prerm-pkg"] {
        let body = p.control(s);
        assert!(body.starts_with("#!/bin/sh\n"), "{s}");
        assert!(!body.contains("$$"), "{s} still has make's $$:\n{body}");
        assert!(
            body.contains("IPKG_INSTROOT"),
            "{s} must do nothing in an image build"
        );
    }
    assert!(p.control("postinst-pkg").contains("reload_config"));
    assert!(p.control("prerm-pkg").contains("PKG_UPGRADE"));
    // On removal the setup SSID goes down the way the window takes it down.
    assert!(
        p.control("prerm-pkg")
            .contains("/usr/libexec/provisioner-ssid down")
    );

    // Data.
    let data: Vec<(&str, &str, Option<&str>)> = p
        .data
        .iter()
        .map(|e| (e.name.as_str(), e.mode.as_str(), e.link.as_deref()))
        .collect();
    assert_eq!(
        data,
        [
            ("./", "drwxr-xr-x", None),
            ("./etc/", "drwxr-xr-x", None),
            ("./etc/config/", "drwxr-xr-x", None),
            ("./etc/config/provisioner", "-rw-------", None),
            ("./etc/init.d/", "drwxr-xr-x", None),
            ("./etc/init.d/provisioner", "-rwxr-xr-x", None),
            ("./etc/uci-defaults/", "drwxr-xr-x", None),
            ("./etc/uci-defaults/90-provisioner", "-rwxr-xr-x", None),
            ("./usr/", "drwxr-xr-x", None),
            ("./usr/libexec/", "drwxr-xr-x", None),
            ("./usr/libexec/provisioner-ssid", "-rwxr-xr-x", None),
            ("./usr/sbin/", "drwxr-xr-x", None),
            ("./usr/sbin/provisioner", "-rwxr-xr-x", None),
            (
                "./usr/sbin/provisionerctl",
                "lrwxrwxrwx",
                Some("provisioner")
            ),
            ("./usr/sbin/provisionerd", "lrwxrwxrwx", Some("provisioner")),
        ]
    );
    let same = |packaged: &str, source: &Path| {
        assert_eq!(
            std::fs::read(p.data(packaged)).unwrap(),
            std::fs::read(source).unwrap(),
            "{packaged}"
        );
    };
    same("/usr/sbin/provisioner", &dir.join("provisioner-dummy"));
    same(
        "/etc/init.d/provisioner",
        &root().join("openwrt/files/provisioner.init"),
    );
    same(
        "/etc/config/provisioner",
        &root().join("openwrt/files/provisioner.config"),
    );
    same(
        "/etc/uci-defaults/90-provisioner",
        &root().join("openwrt/files/provisioner.uci-defaults"),
    );
    same(
        "/usr/libexec/provisioner-ssid",
        &root().join("openwrt/files/provisioner.ssid"),
    );
    // The shipped config is valid as it is.
    check_config(&p.data("/etc/config/provisioner"));
}

fn check_config(path: &Path) {
    run(Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["provisionerd", "--check"])
        .arg(path));
}

#[test]
fn every_architecture_and_only_its_binary() {
    let dir = scratch("arches");
    let bin = dummy_binary(&dir);
    for arch in ARCHES {
        let out = run(&mut ipk_sh(&bin, &dir.join("out"), arch));
        let ipk = PathBuf::from(text(&out).trim());
        assert!(ipk.ends_with(format!("provisioner_{}_{arch}.ipk", version())));
        let p = unpack(&ipk, &dir.join(arch));
        assert_eq!(control_fields(&p.control("control"))["Architecture"], arch);
    }

    // An ELF binary must be for the architecture: (EI_DATA, e_machine) of each.
    let elf = |data: u8, machine: u16| {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 1;
        h[5] = data;
        let m = if data == 1 {
            machine.to_le_bytes()
        } else {
            machine.to_be_bytes()
        };
        h[18..20].copy_from_slice(&m);
        let p = dir.join(format!("elf-{data}-{machine}"));
        std::fs::write(&p, h).unwrap();
        p
    };
    let headers = [
        ("mipsel_24kc", elf(1, 8)),
        ("mips_24kc", elf(2, 8)),
        ("arm_cortex-a7_neon-vfpv4", elf(1, 40)),
        ("aarch64_cortex-a53", elf(1, 183)),
    ];
    for (i, (arch, own)) in headers.iter().enumerate() {
        let out = ipk_sh(own, &dir.join("elf-out"), arch).output().unwrap();
        assert!(out.status.success(), "{arch}: {out:?}");
        let (other, bin) = &headers[(i + 1) % headers.len()];
        let out = ipk_sh(bin, &dir.join("elf-out"), arch).output().unwrap();
        assert!(!out.status.success(), "{other}'s binary packaged as {arch}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run make cross first"), "{err}");
    }
    // The host's own build is no router binary (of another architecture, that is).
    let host = Path::new(env!("CARGO_BIN_EXE_provisioner"));
    let not_host = if cfg!(target_arch = "aarch64") {
        "mipsel_24kc"
    } else {
        "aarch64_cortex-a53"
    };
    let out = ipk_sh(host, &dir.join("elf-out"), not_host)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the host binary was packaged");
}

#[test]
fn missing_binary_or_unknown_architecture_fail_clearly() {
    let dir = scratch("missing");
    let out = Command::new(root().join("scripts/ipk.sh"))
        .arg("mips_24kc")
        .env("CARGO_TARGET_DIR", dir.join("no-target"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "mips-unknown-linux-musl/release/provisioner is missing: run make cross first"
        ),
        "{err}"
    );

    let out = ipk_sh(&dummy_binary(&dir), &dir.join("out"), "x86_64")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown ARCH 'x86_64'") && err.contains("mipsel_24kc"),
        "{err}"
    );
}

#[test]
fn builds_are_byte_identical() {
    let dir = scratch("repro");
    let a = build(&dir.join("a"), "aarch64_cortex-a53");
    // Another time, another temporary directory, another umask.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b_dir = dir.join("b");
    std::fs::create_dir_all(b_dir.join("tmp")).unwrap();
    let bin = dummy_binary(&b_dir);
    let out = run(Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$@\"")
        .arg("sh")
        .arg(root().join("scripts/ipk.sh"))
        .arg("-b")
        .arg(&bin)
        .arg("-o")
        .arg(b_dir.join("out"))
        .arg("aarch64_cortex-a53")
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("TMPDIR", b_dir.join("tmp")));
    let b = PathBuf::from(text(&out).trim());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

/// Every shell script in the tree, and the package's maintainer scripts.
fn shell_scripts() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, found);
            } else if p.extension().is_some_and(|x| x == "sh")
                || std::fs::read(&p).is_ok_and(|b| b.starts_with(b"#!/bin/sh"))
            {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    for d in ["scripts", "openwrt", "tests", ".ci"] {
        walk(&root().join(d), &mut found);
    }
    found.sort();
    found
}

#[test]
fn shell_scripts_parse() {
    let dir = scratch("syntax");
    let ipk = build(&dir, "mips_24kc");
    let p = unpack(&ipk, &dir.join("unpacked"));
    let mut scripts = shell_scripts();
    for s in ["postinst", "postinst-pkg", "prerm", "prerm-pkg"] {
        scripts.push(p.dir.join("control").join(s));
    }
    for must in [
        "scripts/ipk.sh",
        "openwrt/files/provisioner.init",
        "openwrt/files/provisioner.uci-defaults",
        "openwrt/files/provisioner.ssid",
    ] {
        assert!(scripts.contains(&root().join(must)), "{must} not found");
    }
    let mut shells = vec![vec!["sh"]];
    if have("busybox") {
        shells.push(vec!["busybox", "sh"]);
    }
    for script in &scripts {
        for sh in &shells {
            run(Command::new(sh[0]).args(&sh[1..]).arg("-n").arg(script));
        }
    }
    if !have("shellcheck") {
        eprintln!("shellcheck is not installed (scripts/deps.sh installs it): skipped");
        return;
    }
    // shellcheck on the package's own scripts.
    let ours = |s: &Path| {
        s.starts_with(root().join("openwrt"))
            || s.starts_with(&p.dir)
            || s == root().join("scripts/ipk.sh")
            || s == root().join("tests/openwrt/uci")
    };
    for script in scripts.iter().filter(|s| ours(s)) {
        // OpenWrt's scripts run in busybox ash: `local` is fine there (dash is the closest
        // shell shellcheck knows).
        let openwrt = script.starts_with(root().join("openwrt")) || script.starts_with(&p.dir);
        let mut c = Command::new("shellcheck");
        if openwrt {
            c.args(["-s", "dash"]);
        }
        run(c.args(["-e", "SC1091"]).arg(script));
    }
}

/// An OpenWrt-like /etc/config with a fake `uci` and stub commands, for running the
/// package's scripts.
struct Router {
    dir: Scratch,
    shell: Vec<&'static str>,
}

impl Router {
    fn new(name: &str, shell: &[&'static str]) -> Router {
        let dir = scratch(name);
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        for e in std::fs::read_dir(root().join("tests/openwrt/config")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), etc.join(e.file_name())).unwrap();
        }
        std::fs::copy(
            root().join("openwrt/files/provisioner.config"),
            etc.join("provisioner"),
        )
        .unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stub = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            run(Command::new("chmod").arg("755").arg(&p));
        };
        stub(
            "uci",
            &format!(
                "exec '{}' \"$@\"",
                root().join("tests/openwrt/uci").display()
            ),
        );
        stub("wifi", "echo \"wifi $*\" >>\"$STUB_LOG\"");
        stub("logger", "echo \"logger $*\" >>\"$STUB_LOG\"");
        // The table: a file; `nft list tables` shows it, `nft -f -` writes it.
        stub(
            "nft",
            "echo \"nft $*\" >>\"$STUB_LOG\"\n\
             case \"$*\" in\n\
             'list tables') [ ! -f \"$NFT_TABLE\" ] || echo 'table inet provisioner'; exit 0 ;;\n\
             '-f -') cat >\"$NFT_TABLE\"; exit 0 ;;\n\
             esac\n\
             exit 1",
        );
        // provisionerd: logged; --print-ruleset is the real one.
        stub(
            "provisionerd",
            &format!(
                "echo \"provisionerd $*\" >>\"$STUB_LOG\"\n\
                 case \" $* \" in *' --print-ruleset '*) exec '{}' provisionerd \"$@\" ;; esac\n\
                 exit 0",
                env!("CARGO_BIN_EXE_provisioner")
            ),
        );
        // procd's shell API, logged.
        std::fs::write(
            dir.join("procd-stubs.sh"),
            [
                "procd_open_instance",
                "procd_set_param",
                "procd_close_instance",
                "procd_add_reload_trigger",
                "procd_add_reload_interface_trigger",
                "procd_send_signal",
                "start",
                "stop",
            ]
            .iter()
            .map(|f| format!("{f}() {{ echo \"{f} $*\" >>\"$STUB_LOG\"; }}\n"))
            .collect::<String>(),
        )
        .unwrap();
        Router {
            dir,
            shell: shell.to_vec(),
        }
    }

    fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    fn env(&self, c: &mut Command) {
        c.env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.dir.join("bin").display()
                ),
            )
            .env("LC_ALL", "C")
            .env("UCI_CONFIG_DIR", self.etc())
            .env("UCI_SAVE_DIR", self.dir.join("staged"))
            .env("UCI_LOG", self.dir.join("uci.log"))
            .env("STUB_LOG", self.dir.join("stub.log"))
            .env("NFT_TABLE", self.dir.join("nft-table"));
    }

    /// Runs shell code in the router's shell and environment.
    fn sh(&self, script: &str) -> Output {
        let mut c = Command::new(self.shell[0]);
        c.args(&self.shell[1..])
            .arg("-c")
            .arg(script)
            .current_dir(&*self.dir);
        self.env(&mut c);
        run(&mut c)
    }

    /// What default_postinst does with it: `( cd /etc/uci-defaults && . ./<script> )`.
    fn uci_defaults(&self) {
        let script = root().join("openwrt/files/provisioner.uci-defaults");
        self.sh(&format!(". '{}'", script.display()));
    }

    /// Sources the init script with procd stubbed and the daemon's paths pointed here, then
    /// runs `code`.
    fn init(&self, code: &str) -> Output {
        let init = root().join("openwrt/files/provisioner.init");
        self.sh(&format!(
            ". '{}'\n. ./procd-stubs.sh\nPROG=provisionerd\nCONF='{}'\n{code}",
            init.display(),
            self.etc().join("provisioner").display()
        ))
    }

    /// Runs /usr/libexec/provisioner-ssid with `args` (as the daemon does: no shell around
    /// it); the output, whatever the exit status.
    fn ssid(&self, args: &[&str]) -> Output {
        let mut c = Command::new(self.shell[0]);
        c.args(&self.shell[1..])
            .arg(root().join("openwrt/files/provisioner.ssid"))
            .args(args)
            .current_dir(&*self.dir);
        self.env(&mut c);
        c.output().unwrap()
    }

    fn uci(&self, args: &[&str]) -> Output {
        let mut c = Command::new(root().join("tests/openwrt/uci"));
        c.args(args);
        self.env(&mut c);
        c.output().unwrap()
    }

    fn get(&self, reference: &str) -> Option<String> {
        let out = self.uci(&["-q", "get", reference]);
        out.status
            .success()
            .then(|| text(&out).trim_end_matches('\n').to_owned())
    }

    fn set(&self, assignment: &str) {
        assert!(
            self.uci(&["set", assignment]).status.success(),
            "{assignment}"
        );
    }

    fn commit(&self) {
        assert!(self.uci(&["commit"]).status.success());
    }

    /// The name of the first section of `pkg` of `ty` whose `option` is `value`.
    fn find(&self, pkg: &str, ty: &str, option: &str, value: &str) -> Option<String> {
        let show = text(&self.uci(&["-X", "show", pkg]));
        let mut sections: Vec<(String, String)> = Vec::new();
        let mut found = Vec::new();
        for line in show.lines() {
            let (key, v) = line.split_once('=').unwrap();
            let parts: Vec<&str> = key.split('.').collect();
            match parts.len() {
                2 => sections.push((parts[1].into(), v.into())),
                3 if parts[2] == option && v == format!("'{value}'") => {
                    found.push(parts[1].to_owned())
                }
                _ => {}
            }
        }
        sections
            .into_iter()
            .find(|(name, t)| t == ty && found.contains(name))
            .map(|(name, _)| name)
    }

    /// The section names of `pkg`, in order.
    fn sections(&self, pkg: &str) -> Vec<String> {
        text(&self.uci(&["-X", "show", pkg]))
            .lines()
            .filter_map(|l| {
                let (key, _) = l.split_once('=')?;
                let parts: Vec<&str> = key.split('.').collect();
                (parts.len() == 2).then(|| parts[1].to_owned())
            })
            .collect()
    }

    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(self.etc())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn clear_logs(&self) {
        for l in ["uci.log", "stub.log"] {
            let _ = std::fs::remove_file(self.dir.join(l));
        }
    }

    fn nothing_staged(&self) {
        let staged = std::fs::read_dir(self.dir.join("staged"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(staged, 0, "uncommitted uci changes");
    }
}

/// busybox's ash (OpenWrt's /bin/sh) when installed, and the host's sh.
fn shells() -> Vec<Vec<&'static str>> {
    let mut shells = vec![vec!["sh"]];
    if have("busybox") {
        shells.insert(0, vec!["busybox", "sh"]);
    }
    shells
}

/// Runs uci-defaults twice: the second run must change nothing (and not even try).
fn uci_defaults_twice(r: &Router) {
    r.uci_defaults();
    r.nothing_staged();
    let first = r.files();
    r.clear_logs();
    r.uci_defaults();
    assert_eq!(r.files(), first, "the second run changed the config");
    let writes: Vec<String> = r
        .log("uci.log")
        .lines()
        .filter(|l| {
            let cmd = l
                .split_whitespace()
                .find(|w| !w.starts_with('-') && *w != "uci");
            !matches!(cmd, Some("get" | "show" | "commit"))
        })
        .map(str::to_owned)
        .collect();
    assert!(writes.is_empty(), "the second run wrote: {writes:?}");
    check_config(&r.etc().join("provisioner"));
}

/// fw4 puts a zone's rules in UCI order: the marked traffic's accept must come before the
/// catch-all reject.
fn rules_in_order(r: &Router) {
    let sections = r.sections("firewall");
    let at = |name: &str| sections.iter().position(|s| s == name);
    let closed = at("provision_closed").expect("provision_closed");
    if let Some(cloud) = at("provision_cloud") {
        assert!(
            cloud < closed,
            "provision_cloud after provision_closed: {sections:?}"
        );
    }
}

#[test]
fn uci_defaults_sets_up_the_router_once() {
    for shell in shells() {
        let r = Router::new(&format!("defaults-{}", shell.join("-")), &shell);
        uci_defaults_twice(&r);
        let g = |k: &str| {
            r.get(k)
                .unwrap_or_else(|| panic!("{k} is not set ({shell:?})"))
        };

        // network: the interface on an empty bridge, the provisioner's router address.
        assert_eq!(g("network.provision"), "interface");
        assert_eq!(g("network.provision.proto"), "static");
        assert_eq!(g("network.provision.device"), "br-provision");
        assert_eq!(g("network.provision.ipaddr"), "192.168.250.1");
        assert_eq!(g("network.provision.netmask"), "255.255.255.0");
        assert_eq!(g("network.provision.delegate"), "0");
        let dev = r
            .find("network", "device", "name", "br-provision")
            .expect("device");
        assert_eq!(g(&format!("network.{dev}.type")), "bridge");
        assert_eq!(g(&format!("network.{dev}.bridge_empty")), "1");
        assert_eq!(g(&format!("network.{dev}.ipv6")), "0");

        // wireless: on the 2.4 GHz radio, hidden, open, isolated, one spot more.
        let w = r
            .find("wireless", "wifi-iface", "ifname", "wl-provision")
            .expect("wifi-iface");
        for (opt, want) in [
            ("device", "radio1"),
            ("disabled", "1"),
            ("mode", "ap"),
            ("ssid", "setup"),
            ("network", "provision"),
            ("encryption", "none"),
            ("hidden", "1"),
            ("isolate", "1"),
            ("maxassoc", "9"),
        ] {
            assert_eq!(g(&format!("wireless.{w}.{opt}")), want, "{opt}");
        }
        // The home SSIDs are untouched.
        assert_eq!(g("wireless.default_radio1.network"), "lan");
        assert_eq!(g("wireless.default_radio1.encryption"), "sae-mixed");

        // firewall
        let z = r
            .find("firewall", "zone", "name", "provision")
            .expect("zone");
        for (opt, want) in [
            ("network", "provision"),
            ("input", "REJECT"),
            ("output", "ACCEPT"),
            ("forward", "REJECT"),
        ] {
            assert_eq!(g(&format!("firewall.{z}.{opt}")), want, "{opt}");
        }
        // Fail-closed at fw4's level too: no forwarding provision -> wan, only what
        // provisionerd's table marked goes out, everything else from the zone is rejected.
        assert_eq!(
            r.find("firewall", "forwarding", "src", "provision"),
            None,
            "a forwarding lets the setup network out without provisionerd's table"
        );
        let mark = g("firewall.provision_cloud.mark");
        for (opt, want) in [
            ("", "rule"),
            ("src", "provision"),
            ("dest", "wan"),
            ("proto", "all"),
            ("family", "ipv4"),
            ("mark", "0x40000000/0x40000000"),
            ("target", "ACCEPT"),
        ] {
            let key = format!(
                "firewall.provision_cloud{}{opt}",
                if opt.is_empty() { "" } else { "." }
            );
            assert_eq!(g(&key), want, "{key}");
        }
        for (opt, want) in [
            ("", "rule"),
            ("src", "provision"),
            ("dest", "*"),
            ("proto", "all"),
            ("target", "REJECT"),
        ] {
            let key = format!(
                "firewall.provision_closed{}{opt}",
                if opt.is_empty() { "" } else { "." }
            );
            assert_eq!(g(&key), want, "{key}");
        }
        assert_eq!(r.get("firewall.provision_closed.family"), None);
        rules_in_order(&r);
        // The mark is the one the daemon's table sets on what it lets out.
        let (bits, mask) = mark.split_once('/').unwrap();
        assert_eq!(bits, mask);
        let ruleset = run(Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(["provisionerd", "--print-ruleset", "--config"])
            .arg(r.etc().join("provisioner")));
        let ruleset = text(&ruleset);
        assert!(
            ruleset.contains(&format!("meta mark set meta mark | {bits} accept")),
            "the table does not set {bits}:\n{ruleset}"
        );
        let dhcp = r
            .find("firewall", "rule", "dest_port", "67")
            .expect("DHCP rule");
        let dns = r
            .find("firewall", "rule", "dest_port", "53")
            .expect("DNS rule");
        for (rule, proto) in [(&dhcp, "udp"), (&dns, "tcp udp")] {
            assert_eq!(g(&format!("firewall.{rule}.src")), "provision");
            assert_eq!(g(&format!("firewall.{rule}.proto")), proto);
            assert_eq!(g(&format!("firewall.{rule}.target")), "ACCEPT");
        }

        // dhcp: neither dnsmasq nor odhcpd serve there, dnsmasq does not bind there.
        let d = r
            .find("dhcp", "dhcp", "interface", "provision")
            .expect("dhcp section");
        assert_eq!(g(&format!("dhcp.{d}.ignore")), "1");
        assert_eq!(g("dhcp.@dnsmasq[0].notinterface"), "br-provision");
        assert_eq!(
            r.get("dhcp.lan.ignore"),
            None,
            "the LAN's DHCP is untouched"
        );

        // provisioner: the WAN device, the radio's ifname.
        assert_eq!(g("provisioner.network.wan"), "eth1");
        assert_eq!(g("provisioner.radio.hostapd"), "external");
        assert_eq!(g("provisioner.radio.ifname"), "wl-provision");
        assert_eq!(
            g("provisioner.radio.ssid_command"),
            "/usr/libexec/provisioner-ssid"
        );
        assert_eq!(r.log("stub.log"), "", "uci-defaults runs nothing else");
    }
}

#[test]
fn uci_defaults_follows_the_provisioner_config() {
    for shell in shells() {
        let r = Router::new(&format!("defaults-cfg-{}", shell.join("-")), &shell);
        // A /16 without a router (the first host), more clients, PPPoE on the WAN, no
        // 2.4 GHz radio.
        r.set("provisioner.network.subnet=10.42.0.0/16");
        assert!(
            r.uci(&["delete", "provisioner.network.router"])
                .status
                .success()
        );
        r.set("provisioner.dhcp.pool_start=10.42.0.10");
        r.set("provisioner.limits.max_clients=20");
        r.set("network.wan.proto=pppoe");
        assert!(r.uci(&["delete", "wireless.radio1"]).status.success());
        assert!(
            r.uci(&["delete", "wireless.default_radio1"])
                .status
                .success()
        );
        r.commit();
        uci_defaults_twice(&r);
        assert_eq!(r.get("network.provision.ipaddr").unwrap(), "10.42.0.1");
        assert_eq!(r.get("network.provision.netmask").unwrap(), "255.255.0.0");
        assert_eq!(r.get("provisioner.network.wan").unwrap(), "pppoe-wan");
        let w = r
            .find("wireless", "wifi-iface", "ifname", "wl-provision")
            .unwrap();
        assert_eq!(r.get(&format!("wireless.{w}.device")).unwrap(), "radio0");
        assert_eq!(r.get(&format!("wireless.{w}.maxassoc")).unwrap(), "21");
    }
}

#[test]
fn uci_defaults_without_a_radio_drops_the_radio_section() {
    let r = Router::new("defaults-noradio", &shells()[0]);
    std::fs::remove_file(r.etc().join("wireless")).unwrap();
    uci_defaults_twice(&r);
    assert_eq!(r.get("provisioner.@radio[0]"), None);
    assert_eq!(r.get("network.provision.device").unwrap(), "br-provision");
    assert!(r.find("firewall", "zone", "name", "provision").is_some());
}

#[test]
fn uci_defaults_keeps_what_the_user_has() {
    let r = Router::new("defaults-user", &shells()[0]);
    // The user's own WAN device choice, SSID command and an existing provision zone without
    // our network.
    r.set("provisioner.network.wan=eth0.2");
    r.set("provisioner.radio.ssid_command=/root/ssid.sh");
    r.set("firewall.myzone=zone");
    r.set("firewall.myzone.name=provision");
    r.set("firewall.myzone.input=DROP");
    r.commit();
    uci_defaults_twice(&r);
    assert_eq!(r.get("provisioner.network.wan").unwrap(), "eth0.2");
    assert_eq!(
        r.get("provisioner.radio.ssid_command").unwrap(),
        "/root/ssid.sh"
    );
    assert_eq!(r.get("firewall.myzone.input").unwrap(), "DROP");
    assert_eq!(r.get("firewall.myzone.network").unwrap(), "provision");
    assert_eq!(
        r.get("firewall.provision"),
        None,
        "a second zone 'provision'"
    );
}

#[test]
fn uci_defaults_migrates_an_install_of_the_previous_version() {
    for shell in shells() {
        let r = Router::new(&format!("defaults-migrate-{}", shell.join("-")), &shell);
        // What the previous version left: the same, but with a forwarding provision -> wan
        // instead of the mark rule and the catch-all, the wifi-iface up (no 'disabled') and
        // no ssid_command. And a forwarding provision -> wan of the user's own.
        r.uci_defaults();
        let w = r
            .find("wireless", "wifi-iface", "ifname", "wl-provision")
            .unwrap();
        for del in [
            "firewall.provision_cloud",
            "firewall.provision_closed",
            "provisioner.radio.ssid_command",
            &format!("wireless.{w}.disabled"),
        ] {
            assert!(r.uci(&["delete", del]).status.success(), "{del}");
        }
        r.set("firewall.provision_wan=forwarding");
        r.set("firewall.provision_wan.src=provision");
        r.set("firewall.provision_wan.dest=wan");
        let mine = text(&r.uci(&["add", "firewall", "forwarding"]))
            .trim()
            .to_owned();
        r.set(&format!("firewall.{mine}.src=provision"));
        r.set(&format!("firewall.{mine}.dest=wan"));
        r.commit();

        r.clear_logs();
        let out = r.sh(&format!(
            ". '{}'",
            root()
                .join("openwrt/files/provisioner.uci-defaults")
                .display()
        ));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("removed firewall.provision_wan"), "{said}");
        assert!(
            said.contains(" forwards provision -> wan: not ours"),
            "{said}"
        );
        r.nothing_staged();
        assert_eq!(r.get("firewall.provision_wan"), None, "ours is removed");
        // The user's is not ours to remove (an anonymous section's name changes with the
        // sections before it).
        let mine = r
            .find("firewall", "forwarding", "src", "provision")
            .expect("the user's forwarding");
        assert_eq!(
            r.get(&format!("firewall.{mine}.dest")).as_deref(),
            Some("wan")
        );
        assert!(
            said.contains(&format!("firewall.{mine} forwards")),
            "{said}"
        );
        assert_eq!(
            r.get("firewall.provision_cloud.mark").as_deref(),
            Some("0x40000000/0x40000000")
        );
        assert_eq!(
            r.get("firewall.provision_closed.target").as_deref(),
            Some("REJECT")
        );
        rules_in_order(&r);
        assert_eq!(
            r.get("provisioner.radio.ssid_command").as_deref(),
            Some("/usr/libexec/provisioner-ssid")
        );
        // An existing wifi-iface is the window's: left up, the daemon takes it down.
        assert_eq!(r.get(&format!("wireless.{w}.disabled")), None);
        // And from there on, nothing changes.
        uci_defaults_twice(&r);
    }
}

#[test]
fn uci_defaults_without_a_wan_zone_then_with_one() {
    let r = Router::new("defaults-nowan", &shells()[0]);
    r.set("firewall.@zone[1].name=internet");
    r.commit();
    uci_defaults_twice(&r);
    // Nothing goes out: no rule to a zone that is not there, the catch-all all the same.
    assert_eq!(r.get("firewall.provision_cloud"), None);
    assert_eq!(
        r.get("firewall.provision_closed.dest").as_deref(),
        Some("*")
    );
    assert_eq!(r.find("firewall", "forwarding", "src", "provision"), None);

    // A wan zone later (a reinstall runs uci-defaults again): the mark rule goes in before
    // the catch-all, or fw4 would never reach it.
    r.set("firewall.@zone[1].name=wan");
    r.commit();
    uci_defaults_twice(&r);
    assert_eq!(
        r.get("firewall.provision_cloud.dest").as_deref(),
        Some("wan")
    );
    rules_in_order(&r);
}

#[test]
fn init_keeps_the_wifi_iface_as_promised() {
    for shell in shells() {
        let r = Router::new(&format!("init-wifi-{}", shell.join("-")), &shell);
        r.uci_defaults();
        let w = r
            .find("wireless", "wifi-iface", "ifname", "wl-provision")
            .unwrap();
        // Someone opened it up, bridged it into the LAN and changed the limit.
        r.set(&format!("wireless.{w}.hidden=0"));
        r.set(&format!("wireless.{w}.isolate=0"));
        r.set(&format!("wireless.{w}.encryption=psk2"));
        r.set(&format!("wireless.{w}.network=lan provision"));
        r.set("provisioner.limits.max_clients=3");
        r.commit();
        r.clear_logs();

        r.init("provisioner_sync_wireless");
        r.nothing_staged();
        for (opt, want) in [
            ("hidden", "1"),
            ("isolate", "1"),
            ("encryption", "none"),
            ("network", "provision"),
            ("maxassoc", "4"),
            ("ssid", "setup"),
        ] {
            assert_eq!(
                r.get(&format!("wireless.{w}.{opt}")).unwrap(),
                want,
                "{opt}"
            );
        }
        let stubs = r.log("stub.log");
        assert_eq!(
            stubs.lines().filter(|l| *l == "wifi reload").count(),
            1,
            "{stubs}"
        );

        // In order: nothing written, no wifi reload.
        let before = r.files();
        r.clear_logs();
        r.init("provisioner_sync_wireless");
        assert_eq!(r.files(), before);
        assert_eq!(r.log("stub.log"), "");

        // Up or down is the window's (the daemon's ssid_command): left as it is, either way.
        for disabled in ["0", "1"] {
            r.set(&format!("wireless.{w}.disabled={disabled}"));
            r.commit();
            let before = r.files();
            r.clear_logs();
            r.init("provisioner_sync_wireless");
            assert_eq!(r.files(), before, "disabled={disabled}");
            assert_eq!(r.log("stub.log"), "", "disabled={disabled}");
        }

        // Not ours to keep with a managed hostapd.
        r.set("provisioner.radio.hostapd=managed");
        r.set(&format!("wireless.{w}.hidden=0"));
        r.commit();
        r.init("provisioner_sync_wireless");
        assert_eq!(r.get(&format!("wireless.{w}.hidden")).unwrap(), "0");
    }
}

/// `uci show wireless` as lines, for comparing before and after.
fn wireless(r: &Router) -> Vec<String> {
    text(&r.uci(&["-X", "show", "wireless"]))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn ssid_command_brings_only_the_setup_ssid_up_and_down() {
    for shell in shells() {
        let r = Router::new(&format!("ssid-{}", shell.join("-")), &shell);
        r.uci_defaults();
        let w = r
            .find("wireless", "wifi-iface", "ifname", "wl-provision")
            .unwrap();
        let disabled = format!("wireless.{w}.disabled");
        // A second setup-like wifi-iface on the same radio, not ours: never touched.
        r.set("wireless.guest=wifi-iface");
        r.set("wireless.guest.device=radio1");
        r.set("wireless.guest.ssid=guest");
        r.set("wireless.guest.disabled=1");
        r.commit();
        assert_eq!(r.get(&disabled).as_deref(), Some("1"), "created down");

        let step = |arg: &str, want: &str, reload: bool| {
            let before = wireless(&r);
            r.clear_logs();
            let out = r.ssid(&[arg]);
            assert!(out.status.success(), "{arg}: {out:?}");
            r.nothing_staged();
            assert_eq!(r.get(&disabled).as_deref(), Some(want), "{arg}");
            let after = wireless(&r);
            let changed: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
            let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
            let stubs = r.log("stub.log");
            let reloads: Vec<&str> = stubs.lines().filter(|l| l.starts_with("wifi")).collect();
            if reload {
                // Only our wifi-iface's 'disabled', and a reload of its radio only.
                assert_eq!(changed, [&format!("{disabled}='{want}'")], "{arg}");
                assert!(gone.len() <= 1, "{arg}: {gone:?}");
                assert_eq!(reloads, ["wifi reload radio1"], "{arg}");
                assert!(stubs.contains("logger -t provisioner"), "{stubs}");
            } else {
                assert!(
                    changed.is_empty() && gone.is_empty(),
                    "{arg}: {changed:?} {gone:?}"
                );
                assert!(
                    reloads.is_empty(),
                    "{arg}: reloaded with nothing changed: {stubs}"
                );
                let writes: Vec<String> = r
                    .log("uci.log")
                    .lines()
                    .filter(|l| l.contains(" set ") || l.contains(" commit"))
                    .map(str::to_owned)
                    .collect();
                assert!(writes.is_empty(), "{arg}: {writes:?}");
            }
        };
        step("up", "0", true);
        step("up", "0", false);
        step("down", "1", true);
        step("down", "1", false);
        step("up", "0", true);
        // Unset 'disabled' is up: nothing to do.
        assert!(r.uci(&["delete", &disabled]).status.success());
        r.commit();
        let before = wireless(&r);
        r.clear_logs();
        assert!(r.ssid(&["up"]).status.success());
        assert_eq!(wireless(&r), before);
        assert_eq!(r.log("stub.log"), "");
        step("down", "1", true);
        assert_eq!(r.get("wireless.guest.disabled").as_deref(), Some("1"));
        assert_eq!(r.get("wireless.default_radio1.disabled"), None);

        // Usage: exit 2, nothing done.
        for args in [&[][..], &["sideways"], &["up", "now"]] {
            let out = r.ssid(args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
        }
        // No setup wifi-iface: a failure the daemon logs, nothing touched.
        r.set("provisioner.radio.ifname=wl-other");
        r.commit();
        let before = r.files();
        r.clear_logs();
        let out = r.ssid(&["up"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no wifi-iface with ifname 'wl-other'")
        );
        assert_eq!(r.files(), before);
        let stubs = r.log("stub.log");
        assert!(!stubs.lines().any(|l| l.starts_with("wifi ")), "{stubs}");
    }
}

#[test]
fn init_registers_the_daemon_with_procd() {
    let r = Router::new("init-procd", &shells()[0]);
    r.uci_defaults();
    r.clear_logs();
    let conf = r.etc().join("provisioner");
    let conf = conf.display();

    // First start of a boot: the table goes in, closed, before the daemon runs.
    r.init("start_service");
    let table = std::fs::read_to_string(r.dir.join("nft-table")).expect("table loaded");
    assert!(table.starts_with("table inet provisioner"), "{table}");
    assert!(table.contains("set clients"));
    let log = r.log("stub.log");
    let want = format!(
        "nft list tables\n\
         provisionerd --config {conf} --print-ruleset\n\
         nft -f -\n\
         procd_open_instance \n\
         procd_set_param command provisionerd --config {conf}\n\
         procd_set_param respawn 3600 5 0\n\
         procd_set_param stdout 1\n\
         procd_set_param stderr 1\n\
         procd_set_param netdev br-provision\n\
         procd_close_instance \n"
    );
    assert_eq!(log, want);

    // The table is there (a previous daemon's, with its clients): left alone.
    r.clear_logs();
    r.init("start_service");
    let log = r.log("stub.log");
    assert!(!log.contains("nft -f"), "{log}");
    assert!(!log.contains("--print-ruleset"), "{log}");

    r.clear_logs();
    r.init("service_triggers");
    assert_eq!(
        r.log("stub.log"),
        "procd_add_reload_trigger provisioner wireless\n\
         procd_add_reload_interface_trigger provision\n"
    );

    // Reload: SIGHUP first, then the instance registered again.
    r.clear_logs();
    r.init("reload_service");
    assert_eq!(
        r.log("stub.log"),
        "procd_send_signal provisioner * HUP\nstart \n"
    );

    // flush: stopped first (a running daemon would put the table back), then removed.
    r.clear_logs();
    r.init("flush");
    assert_eq!(r.log("stub.log"), "stop \nprovisionerd --flush\n");
}

#[test]
fn init_with_a_bad_config_still_starts_and_says_why() {
    let r = Router::new("init-bad", &shells()[0]);
    r.set("provisioner.network.subnet=192.168.250.0/33");
    r.commit();
    r.init("start_service");
    let log = r.log("stub.log");
    assert!(!log.contains("nft -f"), "{log}");
    assert!(log.contains("logger -t provisioner"), "{log}");
    assert!(log.contains("option 'subnet'"), "{log}");
    // procd still runs it (and respawns it): the daemon reports the error in the log.
    assert!(log.contains("procd_set_param respawn 3600 5 0"), "{log}");
}

#[test]
fn makefile_and_ipk_agree_with_the_crate() {
    // The SDK reads the version from Cargo.toml; ipk.sh the rest from the Makefile.
    let mk = std::fs::read_to_string(root().join("openwrt/Makefile")).unwrap();
    assert!(mk.contains("PKG_VERSION:=$(shell sed -n 's/^version = "));
    assert_eq!(makefile_var("PKG_LICENSE"), env!("CARGO_PKG_LICENSE"));
    assert!(mk.contains("include $(TOPDIR)/feeds/packages/lang/rust/rust-package.mk"));
    assert!(mk.contains("$(eval $(call BuildPackage,provisioner))"));
}
