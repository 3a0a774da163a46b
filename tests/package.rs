//! The OpenWrt package, without the SDK, a router or root.
//!
//! - `scripts/ipk.sh` on a dummy binary (no cross build needed): the .ipk is unpacked with
//!   `tar` and checked member by member against what OpenWrt's ipkg-build makes and opkg
//!   reads; two builds are byte-identical.
//! - openwrt/Makefile against the crate: version, license, dependencies, the release
//!   profile the SDK builds with.
//! - The shell scripts: `sh -n` and busybox's ash (OpenWrt's shell) on every one,
//!   shellcheck on the package's own. busybox and shellcheck must be installed
//!   (scripts/deps.sh does): without them these tests fail, naming what is missing.
//!
//! The package's scripts running on OpenWrt router shapes, against OpenWrt's own uci and
//! firewall4: tests/openwrt.rs.

mod pkgutil;

use pkgutil::{Scratch, check_config, require, root, run, shells, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: &str = "1700000000";
/// `SOURCE_DATE_EPOCH` as `tar --utc -tv` shows it.
const EPOCH_LISTED: &str = "2023-11-14 22:13";
const ARCHES: [&str; 4] = [
    "mipsel_24kc",
    "mips_24kc",
    "arm_cortex-a7_neon-vfpv4",
    "aarch64_cortex-a53",
];

fn scratch(name: &str) -> Scratch {
    pkgutil::scratch("package", name)
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
/// `PKG_RELEASE` etc. from openwrt/Makefile, a value continued over lines (trailing
/// backslashes) joined into one as make does.
fn makefile_var(name: &str) -> String {
    let mk = std::fs::read_to_string(root().join("openwrt/Makefile")).unwrap();
    let joined = mk.replace("\\\n", " ");
    joined
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{name}:=")))
        .unwrap_or_else(|| panic!("{name} is not set in openwrt/Makefile"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
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

    // Control: every field the SDK writes for this package, in package-pack.mk's order.
    let control = p.control("control");
    let order: Vec<&str> = control
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": ").map(|(k, _)| k))
        .collect();
    assert_eq!(
        order,
        [
            "Package",
            "Version",
            "Depends",
            "Source",
            "SourceName",
            "License",
            "LicenseFiles",
            "Section",
            "SourceDateEpoch",
            "URL",
            "Maintainer",
            "Architecture",
            "Installed-Size",
            "Description",
        ]
    );
    let fields = control_fields(&control);
    for (f, v) in &fields {
        assert!(!v.trim().is_empty(), "control's {f} is empty: {fields:?}");
    }
    assert_eq!(fields["Package"], "provisioner");
    assert_eq!(fields["SourceName"], "provisioner");
    assert_eq!(fields["Version"], version());
    assert_eq!(fields["Architecture"], "mipsel_24kc");
    assert_eq!(fields["License"], env!("CARGO_PKG_LICENSE"));
    assert_eq!(fields["Section"], "net");
    assert_eq!(fields["SourceDateEpoch"], EPOCH);
    assert_eq!(fields["LicenseFiles"], "LICENSE-APACHE LICENSE-MIT");
    assert_eq!(fields["URL"], makefile_var("URL"));
    // A maintainer with an address: "Name <user@host>".
    let maintainer = &fields["Maintainer"];
    let address = maintainer
        .split_once(" <")
        .and_then(|(_, a)| a.strip_suffix('>'))
        .unwrap_or_else(|| panic!("Maintainer without an address: {maintainer}"));
    assert!(address.contains('@'), "{maintainer}");
    // As the SDK writes it: EXTRA_DEPENDS, libc, then DEPENDS' packages. The kmods as
    // OpenWrt's package/kernel/linux/modules/netfilter.mk names them: nf_tables
    // (kmod-nft-core), NAT (masquerade, redirect), the arp family (table arp provisioner),
    // nfnetlink_log (the daemon reads `log group` packets).
    let depends: Vec<&str> = fields["Depends"].split(", ").collect();
    assert_eq!(
        depends,
        [
            "hostapd",
            "libc",
            "nftables",
            "kmod-nft-core",
            "kmod-nft-nat",
            "kmod-nft-arp",
            "kmod-nfnetlink-log",
        ]
    );
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
            ("./usr/lib/", "drwxr-xr-x", None),
            ("./usr/lib/lua/", "drwxr-xr-x", None),
            ("./usr/lib/lua/prometheus-collectors/", "drwxr-xr-x", None),
            (
                "./usr/lib/lua/prometheus-collectors/provisioner.lua",
                "-rw-r--r--",
                None
            ),
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
            ("./usr/share/", "drwxr-xr-x", None),
            ("./usr/share/rpcd/", "drwxr-xr-x", None),
            ("./usr/share/rpcd/acl.d/", "drwxr-xr-x", None),
            (
                "./usr/share/rpcd/acl.d/provisioner.json",
                "-rw-r--r--",
                None
            ),
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
    same(
        "/usr/share/rpcd/acl.d/provisioner.json",
        &root().join("openwrt/files/provisioner.acl.json"),
    );
    same(
        "/usr/lib/lua/prometheus-collectors/provisioner.lua",
        &root().join("openwrt/files/provisioner.collector.lua"),
    );
    // The shipped config is valid as it is.
    check_config(&p.data("/etc/config/provisioner"));
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

/// Every shell script of the tree and of the unpacked package (built in `dir`), and the
/// package's unpacked tree.
fn all_scripts(dir: &Path) -> (Vec<PathBuf>, Unpacked) {
    let ipk = build(dir, "mips_24kc");
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
    (scripts, p)
}

#[test]
fn shell_scripts_parse() {
    let dir = scratch("syntax");
    let (scripts, _) = all_scripts(&dir);
    for script in &scripts {
        for sh in &shells() {
            run(Command::new(sh[0]).args(&sh[1..]).arg("-n").arg(script));
        }
    }
}

#[test]
fn the_package_scripts_pass_shellcheck() {
    require("shellcheck");
    let dir = scratch("shellcheck");
    let (scripts, p) = all_scripts(&dir);
    // shellcheck on the package's own scripts.
    let ours = |s: &Path| {
        s.starts_with(root().join("openwrt"))
            || s.starts_with(&p.dir)
            || s == root().join("scripts/ipk.sh")
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

/// `key = value` lines of a Cargo.toml table, e.g. `[profile.release]`.
fn cargo_table(table: &str) -> BTreeMap<String, String> {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let head = format!("[{table}]");
    toml.lines()
        .skip_while(|l| l.trim() != head)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

#[test]
fn makefile_and_ipk_agree_with_the_crate() {
    // The SDK reads the version from Cargo.toml; ipk.sh the rest from the Makefile.
    let mk = std::fs::read_to_string(root().join("openwrt/Makefile")).unwrap();
    assert!(mk.contains("PKG_VERSION:=$(shell sed -n 's/^version = "));
    assert_eq!(makefile_var("PKG_LICENSE"), env!("CARGO_PKG_LICENSE"));
    assert!(mk.contains("include $(TOPDIR)/feeds/packages/lang/rust/rust-package.mk"));
    assert!(mk.contains("$(eval $(call BuildPackage,provisioner))"));

    // The license texts are in the tree (Build/Prepare copies it; PKG_LICENSE_FILES are
    // relative to the build directory), one per license.
    let files = makefile_var("PKG_LICENSE_FILES");
    for f in files.split(' ') {
        assert!(
            root().join(f).is_file(),
            "PKG_LICENSE_FILES: {f} is missing"
        );
    }
    assert_eq!(
        files.split(' ').count(),
        env!("CARGO_PKG_LICENSE").split(" OR ").count()
    );

    // What the binary is built from: a change to any of them rebuilds the package.
    let depends = makefile_var("PKG_FILE_DEPENDS");
    let named: Vec<&str> = depends
        .split(' ')
        .map(|d| {
            d.strip_prefix("$(CURDIR)/../")
                .unwrap_or_else(|| panic!("PKG_FILE_DEPENDS: {d} is not in the source tree"))
        })
        .collect();
    for input in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        assert!(named.contains(&input), "PKG_FILE_DEPENDS lacks {input}");
    }
    for n in &named {
        assert!(
            root().join(n).exists(),
            "PKG_FILE_DEPENDS: {n} does not exist"
        );
    }

    // The release profile the SDK builds (rust-values.mk: opt-level z, LTO, one codegen
    // unit, no debug assertions, overflow checks, unwind) as Cargo.toml's, which make
    // cross and make ipk build: panic abort and overflow checks, both ways.
    let release = cargo_table("profile.release");
    assert_eq!(release["panic"], "abort");
    assert_eq!(release["overflow-checks"], "true");
    assert_eq!(release["opt-level"], "z");
    assert_eq!(release["codegen-units"], "1");
    let vars = mk
        .lines()
        .find_map(|l| l.strip_prefix("CARGO_PKG_VARS+="))
        .expect("CARGO_PKG_VARS+= in openwrt/Makefile");
    assert!(vars.contains("CARGO_PROFILE_RELEASE_PANIC=abort"), "{vars}");
    assert!(
        vars.contains("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true"),
        "{vars}"
    );

    // Vendored crates, when there are any, and then no network.
    assert!(mk.contains("ifneq ($(wildcard $(CURDIR)/../vendor/),)"));
    assert!(mk.contains("$(call Build/Compile/Cargo,,--offline"));
    assert!(mk.contains("source.vendored-sources.directory=\"$(PKG_BUILD_DIR)/vendor\""));
}
