//! The daemon's sockets and listeners: DNS and DHCP on the provisioning interface, and the
//! netlink listeners the loop waits on.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{FromRawFd, IntoRawFd};

use anyhow::Context;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::config::{Config, IfName};
use crate::dhcp;
use crate::dns::{self, TcpQuestion};
use crate::firewall::TABLE;
use crate::firewall::netlink::Monitor;
use crate::radio::hostapd::{Event as RadioEvent, HostapdError};
use crate::radio::link::RadioLink;

/// The DNS server's sockets on the router's provisioning address, bound to the
/// provisioning interface: the kernel hands them only what arrived there (redirected DNS
/// included), so a host on the WAN or the home LAN that asks the provisioning address gets
/// no answer, and cannot ask in a client's name either.
pub(super) struct DnsSockets {
    pub(super) udp: UdpSocket,
    pub(super) tcp_rx: mpsc::Receiver<TcpQuestion>,
    /// Connections refused at a bound, for the audit log.
    pub(super) tcp_reports: mpsc::Receiver<crate::core::events::Event>,
    tcp_task: JoinHandle<()>,
}

impl DnsSockets {
    pub(super) fn open(interface: &IfName, router: Ipv4Addr) -> anyhow::Result<Self> {
        let addr = SocketAddrV4::new(router, 53);
        let context = || {
            format!(
                "opening the DNS server on {addr} on {interface} (is another DNS server using it?)"
            )
        };
        let udp = UdpSocket::from_std(std::net::UdpSocket::from(
            bound(addr, interface, SockType::Datagram).with_context(context)?,
        ))?;
        let fd = bound(addr, interface, SockType::Stream).with_context(context)?;
        socket::listen(&fd, socket::Backlog::new(64).expect("valid backlog"))
            .with_context(context)?;
        let tcp = TcpListener::from_std(std::net::TcpListener::from(fd))?;
        let (tx, tcp_rx) = mpsc::channel(64);
        let (reports, tcp_reports) = mpsc::channel(16);
        let tcp_task = tokio::spawn(dns::serve_tcp(tcp, tx, reports));
        Ok(DnsSockets {
            udp,
            tcp_rx,
            tcp_reports,
            tcp_task,
        })
    }
}

impl Drop for DnsSockets {
    fn drop(&mut self) {
        self.tcp_task.abort();
    }
}

/// The SOCKS forwarder's listener on the router's provisioning address and port, bound to
/// the provisioning interface like the DNS server's: a connection to that address that
/// arrives on the home LAN or the WAN finds no socket (and the input chain drops it before).
pub(super) fn socks_listener(
    interface: &IfName,
    router: Ipv4Addr,
    port: u16,
) -> anyhow::Result<std::net::TcpListener> {
    let addr = SocketAddrV4::new(router, port);
    let context = || format!("opening the SOCKS forwarder on {addr} on {interface}");
    let fd = bound(addr, interface, SockType::Stream).with_context(context)?;
    socket::listen(&fd, socket::Backlog::new(64).expect("valid backlog")).with_context(context)?;
    Ok(std::net::TcpListener::from(fd))
}

/// A non-blocking socket bound to `addr` on `interface` (SO_BINDTODEVICE), even before the
/// address is configured (IP_FREEBIND): netifd may bring the interface up after us.
fn bound(
    addr: SocketAddrV4,
    interface: &IfName,
    ty: SockType,
) -> nix::Result<std::os::fd::OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Inet,
        ty,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    socket::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(interface.as_str()),
    )?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )?;
    // SAFETY: round-trips the owned fd through a raw fd without duplicating or closing it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd.into_raw_fd()) })
}

/// The DHCP server's sockets: replies out, requests in.
pub(super) fn dhcp_sockets(cfg: &Config) -> anyhow::Result<(UdpSocket, AsyncFd<dhcp::Listener>)> {
    let net = &cfg.network;
    let context = || format!("opening the DHCP server (port 67) on {}", net.interface);
    let out = dhcp::socket(&net.interface).with_context(context)?;
    let listener = dhcp::Listener::open(&net.interface)
        .and_then(register)
        .with_context(context)?;
    Ok((out, listener))
}

/// Opens a non-blocking netlink listener for the loop; without it the daemon still works,
/// and says what is lost.
pub(super) fn watch<T: std::os::fd::AsRawFd>(
    what: &str,
    open: impl FnOnce() -> Result<T, crate::netlink::NetlinkError>,
    without: &str,
) -> Option<AsyncFd<T>> {
    match open().map_err(std::io::Error::other).and_then(register) {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!("cannot watch {what} ({e}): {without}");
            None
        }
    }
}

/// Hands `fd` to the event loop.
pub(super) fn register<T: std::os::fd::AsRawFd>(fd: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: every T here owns its descriptor for as long as it lives, and the AsyncFd
    // owns the T: the descriptor is neither closed nor replaced while registered.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Waits until a listener has something (the caller then reads all of it); never
/// resolves without one.
pub(super) async fn announced<T: std::os::fd::AsRawFd>(fd: &mut Option<AsyncFd<T>>) {
    let Some(fd) = fd.as_mut() else {
        return std::future::pending().await;
    };
    match fd.readable_mut().await {
        Ok(mut guard) => guard.clear_ready(),
        Err(_) => std::future::pending().await,
    }
}

/// Waits for ruleset announcements; true if our table may have been deleted. Never
/// resolves without a monitor.
pub(super) async fn table_deleted(monitor: &mut Option<AsyncFd<Monitor>>) -> bool {
    let Some(fd) = monitor.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return std::future::pending().await;
        };
        match guard.try_io(|m| m.get_mut().read(TABLE)) {
            Ok(Ok(deleted)) => return deleted,
            Ok(Err(e)) => {
                warn!("ruleset monitor: {e}");
                return false;
            }
            Err(_would_block) => continue,
        }
    }
}

/// The next hostapd event, or never when there is no radio.
pub(super) async fn next_radio_event(
    radio: &mut Option<RadioLink>,
) -> Result<RadioEvent, HostapdError> {
    match radio.as_mut() {
        Some(r) => r.next_event().await,
        None => std::future::pending().await,
    }
}
