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
