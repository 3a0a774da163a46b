//! Tells the tests whether OpenWrt's own userland kit (../shared/openwrt: real uci,
//! firewall4, ubusd, rpcd built from upstream source) is next to this checkout. Tests that
//! need it are `ignore`d with the reason where it is not (a user's clone), so they show up
//! as skipped instead of passing without having run.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(openwrt_kit)");
    println!("cargo::rerun-if-env-changed=OPENWRT_KIT");
    let kit = std::env::var_os("OPENWRT_KIT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/openwrt")
        });
    let script = kit.join("build.sh");
    println!("cargo::rerun-if-changed={}", script.display());
    if script.exists() {
        println!("cargo::rustc-cfg=openwrt_kit");
    }
}
