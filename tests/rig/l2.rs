//! Layer 2 on the setup segment, as an attacker sees it: raw frames sent from a client's
//! eth0 (any source, any ethertype, forged ARP and DHCP), and a sniffer that records every
//! frame a client's eth0 receives. For the tests that isolation, ARP and DHCP hold.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Encodable, v4};

use super::util::{lock, poll_readable};
use super::{HOST_IF, Ns, PROV_MAC, ROUTER_PROV};

pub const BROADCAST: [u8; 6] = [0xff; 6];
/// An ethertype for experiments (IEEE 802 local experimental): no stack handles it.
pub const ETH_EXPERIMENTAL: u16 = 0x88b5;
const ETH_P_ALL: u16 = 0x0003;

/// A packet socket on `ns`'s eth0: `protocol` 0 sends only, ETH_P_ALL receives everything.
fn packet_socket(ns: &Ns, protocol: u16) -> OwnedFd {
    ns.run(|| {
        let proto = i32::from(protocol.to_be());
        // SAFETY: plain syscall; on success we own the new descriptor.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(HOST_IF).unwrap();
        // SAFETY: name is a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index != 0, "no {HOST_IF} in {}", ns.name);
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = index as i32;
        // SAFETY: sll is a valid sockaddr_ll of the stated size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    })
}

/// Sends whole Ethernet frames from `ns`'s eth0, whatever their source MAC.
pub struct Injector {
    fd: OwnedFd,
}

impl Injector {
    pub fn new(ns: &Ns) -> Injector {
        Injector {
            fd: packet_socket(ns, 0),
        }
    }

    pub fn send(&self, frame: &[u8]) {
        assert!(
            self.try_send(frame),
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Whether the whole frame went out (for best-effort sends).
    pub fn try_send(&self, frame: &[u8]) -> bool {
        // SAFETY: frame is a valid buffer of the stated length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        n == frame.len() as isize
    }
}

/// An Ethernet frame (padded to the minimum length).
pub fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// An ARP frame (`op` 1 request, 2 reply) from `src` claiming `sender_ip` is at
/// `sender_mac`.
pub fn arp(
    dst: [u8; 6],
    src: [u8; 6],
    op: u16,
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sender_mac);
    p.extend_from_slice(&sender_ip.octets());
    p.extend_from_slice(&target_mac);
    p.extend_from_slice(&target_ip.octets());
    ether(dst, src, 0x0806, &p)
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP frame (UDP checksum left out: zero means none).
pub fn udp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src_ip.octets());
    ip.extend_from_slice(&dst_ip.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ether(dst, src, 0x0800, &ip)
}

/// An IPv4/TCP SYN frame (checksums right: the receiver's stack checks them), e.g. one of
/// a SYN flood from made-up source ports.
pub fn tcp_syn_frame(
    dst: [u8; 6],
    src: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&rand_u32().to_be_bytes()); // sequence number
    tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src_ip.octets());
    pseudo.extend_from_slice(&dst_ip.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src_ip.octets());
    ip.extend_from_slice(&dst_ip.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ether(dst, src, 0x0800, &ip)
}

/// What a forged DHCP message says.
pub struct Dhcp {
    pub kind: MessageType,
    /// The MAC the message speaks for (`chaddr`).
    pub chaddr: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    /// Option 61 as a MAC (hardware type 1).
    pub client_id: Option<[u8; 6]>,
}

impl Dhcp {
    pub fn new(kind: MessageType, chaddr: [u8; 6]) -> Dhcp {
        Dhcp {
            kind,
            chaddr,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server_id: None,
            client_id: None,
        }
    }

    /// The message's bytes (a BOOTREQUEST).
    pub fn bytes(&self) -> Vec<u8> {
        let mut m = Message::new_with_id(
            rand_u32(),
            self.ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.chaddr,
        );
        m.set_opcode(Opcode::BootRequest);
        let mut opts = v4::DhcpOptions::new();
        opts.insert(DhcpOption::MessageType(self.kind));
        if let Some(ip) = self.requested {
            opts.insert(DhcpOption::RequestedIpAddress(ip));
        }
        if let Some(ip) = self.server_id {
            opts.insert(DhcpOption::ServerIdentifier(ip));
        }
        if let Some(id) = self.client_id {
            let mut v = vec![1];
            v.extend_from_slice(&id);
            opts.insert(DhcpOption::ClientIdentifier(v));
        }
        m.set_opts(opts);
        m.to_vec().expect("encode DHCP")
    }

    /// The whole frame from `src` (its own MAC, usually): unicast to the router when the
    /// message carries the sender's address (`ciaddr`), else broadcast from 0.0.0.0.
    pub fn frame(&self, src: [u8; 6]) -> Vec<u8> {
        let (dst, src_ip, dst_ip) = if self.ciaddr.is_unspecified() {
            (BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
        } else {
            (PROV_MAC, self.ciaddr, ROUTER_PROV)
        };
        udp_frame(dst, src, src_ip, dst_ip, 68, 67, &self.bytes())
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: b is valid for 4 bytes.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    u32::from_ne_bytes(b)
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let (a, b) = (rand_u32().to_ne_bytes(), rand_u32().to_ne_bytes());
    [0x02, a[0], a[1], a[2], b[0], b[1]]
}

/// A frame a sniffer saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
}

/// Records every frame `ns`'s eth0 receives (not what it sends) until dropped.
pub struct Sniffer {
    /// What was seen, and a signal for each new frame.
    seen: Arc<(Mutex<Vec<Seen>>, Condvar)>,
    stop: Option<std::os::unix::net::UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    pub fn new(ns: &Ns) -> Sniffer {
        let fd = packet_socket(ns, ETH_P_ALL);
        let seen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (stop, peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let out = seen.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                let Some(ready) = poll_readable(&[fd.as_fd(), peer.as_fd()], None) else {
                    return;
                };
                if ready[1] {
                    return;
                }
                // SAFETY: all-zero is a valid sockaddr_ll.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: buf and sll are valid for the lengths given.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        (&mut sll as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n < 14 || sll.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                lock(&out.0).push(Seen {
                    dst: buf[..6].try_into().unwrap(),
                    src: buf[6..12].try_into().unwrap(),
                    ethertype: u16::from_be_bytes([buf[12], buf[13]]),
                });
                out.1.notify_all();
            }
        });
        Sniffer {
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every frame seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen.0).clone()
    }

    /// Frames seen so far from `src`.
    pub fn from(&self, src: [u8; 6]) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.src == src).collect()
    }

    /// Waits until a frame matching `f` was seen; false after `timeout`.
    pub fn wait_for(&self, timeout: Duration, f: impl Fn(&Seen) -> bool) -> bool {
        self.wait_count(timeout, f, 1)
    }

    /// Waits until `n` frames matching `f` were seen; false after `timeout`.
    pub fn wait_count(&self, timeout: Duration, f: impl Fn(&Seen) -> bool, n: usize) -> bool {
        let deadline = Instant::now() + timeout;
        let (seen, arrived) = &*self.seen;
        let mut frames = lock(seen);
        loop {
            if frames.iter().filter(|s| f(s)).count() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            frames = arrived
                .wait_timeout(frames, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
