//! provisioner: a restricted provisioner access point for OpenWrt routers.
//!
//! The crate is split the way the product is: a pure [`core`] that owns every decision and
//! takes `now` as an argument, and thin edges that turn sockets, files and the kernel into
//! events and actions ([`firewall`], [`dhcp`], [`config`]). The daemon loop in [`daemon`]
//! only shuttles between them.

pub mod config;
pub mod control;
pub mod core;
pub mod daemon;
pub mod dhcp;
pub mod dns;
pub mod firewall;
pub mod logging;
pub mod net;
mod netlink;
pub mod radio;
pub mod socks;
pub mod ubus;

/// Writes `bytes` as a seed input of the fuzz target `target` (fuzz/seeds/TARGET/NAME):
/// for the ignored `fuzz_seeds` tests, which make the seeds from the unit tests' samples
/// (`cargo test --lib fuzz_seeds -- --ignored`).
#[cfg(test)]
pub(crate) fn fuzz_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}
