//! OpenWrt's own userland (uci, firewall4 on ucode, ubusd, ubus, rpcd, jsonfilter), built
//! from upstream source by the kit in `../shared/openwrt` (or `$OPENWRT_KIT`) into
//! `target/openwrt`. Tests that use it carry
//! `#[cfg_attr(not(openwrt_kit), ignore = "...")]` (build.rs sets `openwrt_kit` when the
//! kit is there), so a clone without the kit reports them as ignored, never as passed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The kit's sources: `$OPENWRT_KIT`, else `../shared/openwrt` next to the checkout.
pub fn source() -> PathBuf {
    std::env::var_os("OPENWRT_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/openwrt"))
}

/// The built kit (`target/openwrt`), built on first use (idempotent and locked by the kit's
/// own build.sh, so parallel tests take turns; `scripts/deps.sh` builds it ahead). Panics
/// with the build's output if that fails: a present kit that does not build is a failure,
/// not a skip.
pub fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/openwrt");
        let build = source().join("build.sh");
        let out = Command::new(&build)
            .arg(&prefix)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", build.display()));
        assert!(
            out.status.success(),
            "{} {} failed ({}; scripts/deps.sh installs its build dependencies):\n{}{}",
            build.display(),
            prefix.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        prefix
    })
}

/// A program of the kit: `bin/uci`, `bin/fw4-print`, `bin/ubusd`, ...
pub fn bin(name: &str) -> PathBuf {
    let p = prefix().join("bin").join(name);
    assert!(p.exists(), "the OpenWrt kit has no {}", p.display());
    p
}
