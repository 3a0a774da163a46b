//! A router's root for the OpenWrt package's scripts: /etc/config of one router shape, the
//! kit's real uci on it, stubs for what else the scripts call (wifi, logger, nft, procd),
//! and fw4 to render its ruleset. Shared by tests/openwrt.rs (the scripts) and tests/fw4.rs
//! (the rendered ruleset beside the daemon's, in the rig).

#![allow(dead_code)]

use crate::kit;
use crate::pkgutil::{self, Scratch, root, run, stderr, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A kind of router: its config files and what the package should make of them.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// tests/openwrt/<dir>: `network` and, with Wi-Fi, `wireless`.
    pub dir: &'static str,
    /// The WAN's layer-3 device (provisioner's `network wan`, fw4's wan zone device).
    pub wan: &'static str,
    /// The `wan` interface's device and protocol in /etc/config/network.
    pub wan_device: &'static str,
    pub wan_proto: &'static str,
    /// The radio the setup SSID goes on, and whether OpenWrt left that radio disabled.
    pub radio: Option<(&'static str, bool)>,
}

/// mediatek/filogic-like: DSA ports lan1..lan4 in br-lan and a `wan` port; a 5 GHz radio0
/// and a 2.4 GHz radio1, both set up with the home SSID.
pub const DSA: Shape = Shape {
    dir: "dsa",
    wan: "wan",
    wan_device: "wan",
    wan_proto: "dhcp",
    radio: Some(("radio1", false)),
};

/// ath79-like: a switch (swconfig) with VLAN 1 (eth0.1) for the LAN, VLAN 2 (eth0.2) for
/// the WAN; radios named by `hwmode` (a config kept over upgrades since 19.07), the 5 GHz
/// one first.
pub const SWCONFIG: Shape = Shape {
    dir: "swconfig",
    wan: "eth0.2",
    wan_device: "eth0.2",
    wan_proto: "dhcp",
    radio: Some(("radio1", false)),
};

/// DSA with the WAN on PPPoE (pppoe-wan), right after the first boot: both radios still
/// disabled, with OpenWrt's open `OpenWrt` SSID.
pub const PPPOE: Shape = Shape {
    dir: "pppoe",
    wan: "pppoe-wan",
    wan_device: "wan",
    wan_proto: "pppoe",
    radio: Some(("radio0", true)),
};

/// x86-like: eth0 in br-lan, eth1 the WAN, no radio and no /etc/config/wireless.
pub const NOWIFI: Shape = Shape {
    dir: "nowifi",
    wan: "eth1",
    wan_device: "eth1",
    wan_proto: "dhcp",
    radio: None,
};

/// One 5 GHz radio (`band '5g'`), nothing on 2.4 GHz.
pub const FIVE_GHZ: Shape = Shape {
    dir: "5ghz",
    wan: "wan",
    wan_device: "wan",
    wan_proto: "dhcp",
    radio: Some(("radio0", false)),
};

pub const PACKAGES: [&str; 5] = ["network", "wireless", "firewall", "dhcp", "provisioner"];

/// A router's root: ROOT/etc/config, ROOT/tmp/.uci (uncommitted changes, as /tmp/.uci on a
/// router), ROOT/bin (uci and the stubs).
pub struct Router {
    pub dir: Scratch,
    pub shell: Vec<&'static str>,
    pub shape: Shape,
}

impl Router {
    pub fn new(shape: Shape, name: &str, shell: &[&'static str]) -> Router {
        // Every uci, the kit's too, also applies the changes staged in the machine's own
        // /tmp/.uci (and reads /var/run/uci): there must be none for our configs.
        for d in ["/tmp/.uci", "/var/run/uci"] {
            for p in PACKAGES {
                let f = Path::new(d).join(p);
                assert!(
                    !f.exists(),
                    "{} exists: every uci on this machine reads it, remove it",
                    f.display()
                );
            }
        }
        let dir = pkgutil::scratch("openwrt", name);
        let etc = dir.join("etc/config");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let data = root().join("tests/openwrt");
        for f in ["network", "wireless"] {
            let src = data.join(shape.dir).join(f);
            if src.exists() {
                std::fs::copy(&src, etc.join(f)).unwrap();
            }
        }
        std::fs::copy(data.join("dhcp"), etc.join("dhcp")).unwrap();
        std::fs::copy(
            kit::prefix().join("share/firewall4/defaults/firewall"),
            etc.join("firewall"),
        )
        .unwrap();
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
        // The real uci on this router's directories; each call logged.
        stub(
            "uci",
            &format!(
                "printf '%s\\n' \"$*\" >>\"$UCI_LOG\"\nexec '{}' -c '{}' -t '{}' \"$@\"",
                kit::bin("uci").display(),
                etc.display(),
                dir.join("tmp/.uci").display()
            ),
        );
        stub("wifi", "echo \"wifi $*\" >>\"$STUB_LOG\"");
        stub("logger", "echo \"logger $*\" >>\"$STUB_LOG\"");
        stub("reload_config", "echo \"reload_config $*\" >>\"$STUB_LOG\"");
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
        // provisionerd: logged; --print-ruleset and --print-config are the real ones.
        stub(
            "provisionerd",
            &format!(
                "echo \"provisionerd $*\" >>\"$STUB_LOG\"\n\
                 case \" $* \" in *' --print-ruleset '* | *' --print-config '*) exec '{}' provisionerd \"$@\" ;; esac\n\
                 exit 0",
                env!("CARGO_BIN_EXE_provisioner")
            ),
        );
        // procd's shell API, logged; `start` runs start_service as /etc/rc.common does.
        let mut procd: String = [
            "procd_open_instance",
            "procd_set_param",
            "procd_close_instance",
            "procd_add_reload_trigger",
            "procd_add_reload_interface_trigger",
            "procd_send_signal",
            "stop",
        ]
        .iter()
        .map(|f| format!("{f}() {{ echo \"{f} $*\" >>\"$STUB_LOG\"; }}\n"))
        .collect();
        procd.push_str("start() { echo \"start $*\" >>\"$STUB_LOG\"; start_service \"$@\"; }\n");
        std::fs::write(dir.join("procd-stubs.sh"), procd).unwrap();
        Router {
            dir,
            shell: shell.to_vec(),
            shape,
        }
    }

    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc/config")
    }

    pub fn env(&self, c: &mut Command) {
        c.env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.dir.join("bin").display()
                ),
            )
            .env("LC_ALL", "C")
            // Where the scripts find the committed files (/etc/config on a router).
            .env("UCI_CONFIG_DIR", self.etc())
            .env("UCI_LOG", self.dir.join("uci.log"))
            .env("STUB_LOG", self.dir.join("stub.log"))
            .env("NFT_TABLE", self.dir.join("nft-table"))
            .current_dir(&*self.dir);
    }

    /// Shell code in the router's shell and environment; must succeed.
    pub fn sh(&self, script: &str) -> Output {
        let mut c = Command::new(self.shell[0]);
        c.args(&self.shell[1..]).arg("-c").arg(script);
        self.env(&mut c);
        run(&mut c)
    }

    /// What default_postinst does with it: `( cd /etc/uci-defaults && . ./<script> )`.
    pub fn uci_defaults(&self) -> Output {
        let script = root().join("openwrt/files/provisioner.uci-defaults");
        self.sh(&format!(". '{}'", script.display()))
    }

    /// Sources the init script with procd stubbed and the daemon's paths pointed here, then
    /// runs `code`.
    pub fn init(&self, code: &str) -> Output {
        let init = root().join("openwrt/files/provisioner.init");
        self.sh(&format!(
            ". '{}'\n. ./procd-stubs.sh\nPROG=provisionerd\nCONF='{}'\n{code}",
            init.display(),
            self.etc().join("provisioner").display()
        ))
    }

    /// Runs /usr/libexec/provisioner-ssid with `args` (as the daemon does: no shell around
    /// it); the output, whatever the exit status.
    pub fn ssid(&self, args: &[&str]) -> Output {
        let mut c = Command::new(self.shell[0]);
        c.args(&self.shell[1..])
            .arg(root().join("openwrt/files/provisioner.ssid"))
            .args(args);
        self.env(&mut c);
        c.output().unwrap()
    }

    /// The kit's uci on this router (not logged), as an administrator would run it.
    pub fn uci(&self, args: &[&str]) -> Output {
        let mut c = Command::new(kit::bin("uci"));
        c.arg("-c")
            .arg(self.etc())
            .arg("-t")
            .arg(self.dir.join("tmp/.uci"))
            .args(args);
        self.env(&mut c);
        c.output().unwrap()
    }

    /// `uci get`, staged changes included.
    pub fn get(&self, reference: &str) -> Option<String> {
        let out = self.uci(&["-q", "get", reference]);
        out.status
            .success()
            .then(|| text(&out).trim_end_matches('\n').to_owned())
    }

    /// `uci get` of what the file holds: the config named by its path has no staged changes.
    pub fn committed(&self, reference: &str) -> Option<String> {
        self.get(&format!("{}/{reference}", self.etc().display()))
    }

    pub fn set(&self, assignment: &str) {
        let out = self.uci(&["set", assignment]);
        assert!(out.status.success(), "uci set {assignment}: {out:?}");
    }

    pub fn delete(&self, reference: &str) {
        let out = self.uci(&["delete", reference]);
        assert!(out.status.success(), "uci delete {reference}: {out:?}");
    }

    pub fn commit(&self) {
        let out = self.uci(&["commit"]);
        assert!(out.status.success(), "uci commit: {out:?}");
    }

    /// `uci changes`: what is staged and not committed.
    pub fn staged(&self) -> String {
        text(&self.uci(&["changes"]))
    }

    pub fn nothing_staged(&self) {
        assert_eq!(self.staged(), "", "uncommitted uci changes");
    }

    /// The name of the first section of `pkg` of `ty` whose `option` is `value`.
    pub fn find(&self, pkg: &str, ty: &str, option: &str, value: &str) -> Option<String> {
        self.find_all(pkg, ty, option, value).into_iter().next()
    }

    /// The names of the sections of `pkg` of `ty` whose `option` is `value`, in order.
    pub fn find_all(&self, pkg: &str, ty: &str, option: &str, value: &str) -> Vec<String> {
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
            .filter(|(name, t)| t == ty && found.contains(name))
            .map(|(name, _)| name)
            .collect()
    }

    /// The section names of `pkg`, in order.
    pub fn sections(&self, pkg: &str) -> Vec<String> {
        self.show(pkg)
            .iter()
            .filter_map(|l| {
                let (key, _) = l.split_once('=')?;
                let parts: Vec<&str> = key.split('.').collect();
                (parts.len() == 2).then(|| parts[1].to_owned())
            })
            .collect()
    }

    /// `uci -X show pkg` as lines.
    pub fn show(&self, pkg: &str) -> Vec<String> {
        text(&self.uci(&["-X", "show", pkg]))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every file of /etc/config, byte for byte.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
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

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn clear_logs(&self) {
        for l in ["uci.log", "stub.log"] {
            let _ = std::fs::remove_file(self.dir.join(l));
        }
    }

    /// The setup wifi-iface's section name.
    pub fn setup_iface(&self) -> String {
        self.find("wireless", "wifi-iface", "ifname", "wl-provision")
            .expect("the setup wifi-iface")
    }

    /// What netifd's `network.interface dump` says once the router is up, for fw4.
    pub fn ubus_answers(&self) -> PathBuf {
        let s = self.shape;
        let iface = |name: &str, proto: &str, dev: &str, l3: &str, addr: &str, mask: u8| {
            format!(
                "{{ \"interface\": \"{name}\", \"up\": true, \"proto\": \"{proto}\", \
                 \"device\": \"{dev}\", \"l3_device\": \"{l3}\", \"ipv4-address\": \
                 [ {{ \"address\": \"{addr}\", \"mask\": {mask} }} ], \"data\": {{ }} }}"
            )
        };
        let json = format!(
            "{{ \"network.interface dump\": {{ \"interface\": [ {}, {}, {} ] }}, \
             \"service get_data\": {{ }} }}\n",
            iface("lan", "static", "br-lan", "br-lan", "192.168.1.1", 24),
            iface(
                "wan",
                s.wan_proto,
                s.wan_device,
                s.wan,
                "198.51.100.2",
                if s.wan_proto == "pppoe" { 32 } else { 24 }
            ),
            iface(
                "provision",
                "static",
                "br-provision",
                "br-provision",
                "192.168.250.1",
                24
            ),
        );
        let p = self.dir.join("ubus.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    /// fw4's ruleset for this router (`fw4 print`); fw4 must have nothing to say about our
    /// sections.
    pub fn fw4(&self) -> String {
        let out = run(Command::new(kit::bin("fw4-print"))
            .arg(self.etc())
            .arg(self.ubus_answers()));
        let said = stderr(&out);
        assert!(
            !said.to_lowercase().contains("provision"),
            "fw4 warns about our sections:\n{said}"
        );
        text(&out)
    }
}
