//! The servers the rig runs in its namespaces, all on one thread per namespace: in the
//! cloud the allowed and the other server, DoT's port and the fake public resolvers (see
//! [`super::fake_dns`]); on the home host, the router and every client a few TCP listeners.
//! Each TCP server writes one line, `<label> <peer address>`, and closes; each UDP server
//! answers a datagram with that line: a probe tells who answered and from where it was seen.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::fake_dns::{Handled, SharedDns, dns_reply, local_v4, serve_dns_tcp};
use super::util::poll_readable;
use super::{CLOUD_ALLOWED, CLOUD_DNS, CLOUD_DNS2, CLOUD_OTHER, CLOUD6_ALLOWED, Ns, Rig};

impl Rig {
    /// Binds every server in its namespace and starts the threads that serve them; they
    /// exit once `stop`'s peer is dropped.
    pub(super) fn start_servers(&mut self, stop: UnixStream) {
        use Service::{Dns, DnsTcp, Tcp, Udp};
        let any = |port| SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        let v4 = |ip: Ipv4Addr, port| SocketAddr::new(ip.into(), port);
        let mut plan: Vec<(&Ns, Vec<(SocketAddr, Kind)>)> = vec![
            (
                &self.cloud,
                vec![
                    (v4(CLOUD_ALLOWED, 443), Kind::Tcp("cloud-443".into())),
                    (v4(CLOUD_ALLOWED, 8443), Kind::Tcp("cloud-8443".into())),
                    (v4(CLOUD_OTHER, 443), Kind::Tcp("other-443".into())),
                    (v4(CLOUD_DNS, 853), Kind::Tcp("dot-853".into())),
                    (
                        SocketAddr::new(CLOUD6_ALLOWED.into(), 443),
                        Kind::Tcp("cloud6-443".into()),
                    ),
                    (v4(CLOUD_ALLOWED, 123), Kind::Udp("ntp-123".into())),
                    (v4(CLOUD_ALLOWED, 124), Kind::Udp("udp-124".into())),
                    (v4(CLOUD_DNS, 53), Kind::Dns),
                    (v4(CLOUD_DNS, 53), Kind::DnsTcp),
                    (v4(CLOUD_DNS2, 53), Kind::Dns),
                    (v4(CLOUD_DNS2, 53), Kind::DnsTcp),
                ],
            ),
            (
                &self.home,
                vec![
                    (any(22), Kind::Tcp("home-22".into())),
                    (any(80), Kind::Tcp("home-80".into())),
                ],
            ),
            (
                &self.router,
                vec![
                    (any(22), Kind::Tcp("router-22".into())),
                    (any(80), Kind::Tcp("router-80".into())),
                    (any(8080), Kind::Tcp("router-8080".into())),
                ],
            ),
        ];
        for (i, c) in self.clients.iter().enumerate() {
            plan.push((
                c,
                vec![(any(8080), Kind::Tcp(format!("client{}-8080", i + 1)))],
            ));
        }

        let mut threads = Vec::new();
        for (ns, specs) in plan {
            // Bind inside the namespace, then hand the sockets to a plain server thread:
            // a socket stays in the namespace it was created in.
            let services: Vec<Service> = ns.run(|| {
                specs
                    .into_iter()
                    .map(|(addr, kind)| {
                        let tcp = || TcpListener::bind(addr);
                        let udp = || UdpSocket::bind(addr);
                        let service = match kind {
                            Kind::Tcp(label) => tcp().map(|l| Tcp(l, label)),
                            Kind::Udp(label) => udp().map(|s| Udp(s, label)),
                            Kind::Dns => udp().map(Dns),
                            Kind::DnsTcp => tcp().map(DnsTcp),
                        }
                        .unwrap_or_else(|e| panic!("{}: bind {addr}: {e}", ns.name));
                        service.set_nonblocking();
                        service
                    })
                    .collect()
            });
            let stop = stop.try_clone().expect("clone stop socket");
            let dns = self.dns.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rig-srv-{}", ns.name))
                    .spawn(move || serve(services, stop, dns))
                    .expect("spawn server thread"),
            );
        }
        self.servers = threads;
    }
}

/// What to bind where: a labelled TCP or UDP line server, or a fake resolver.
enum Kind {
    Tcp(String),
    Udp(String),
    Dns,
    DnsTcp,
}

/// A bound server, served by [`serve`].
enum Service {
    Tcp(TcpListener, String),
    Udp(UdpSocket, String),
    Dns(UdpSocket),
    DnsTcp(TcpListener),
}

impl Service {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Service::Tcp(l, _) | Service::DnsTcp(l) => l.as_fd(),
            Service::Udp(s, _) | Service::Dns(s) => s.as_fd(),
        }
    }

    fn set_nonblocking(&self) {
        // Readiness can be stale (a connection reset before accept); never block the loop.
        let res = match self {
            Service::Tcp(l, _) | Service::DnsTcp(l) => l.set_nonblocking(true),
            Service::Udp(s, _) | Service::Dns(s) => s.set_nonblocking(true),
        };
        res.expect("set_nonblocking");
    }

    fn handle(&self, dns: &SharedDns, stop: &UnixStream) {
        match self {
            Service::Tcp(l, label) => {
                while let Ok((mut s, peer)) = l.accept() {
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    // One write, so one segment that leaves at once: the close that follows
                    // sends a RST if the client's request is still unread, and a RST throws
                    // away whatever is still queued to send (writeln! writes in pieces, and
                    // Nagle held the last ones back: a client got "cloud-443 11.0.0").
                    let line = format!("{label} {}\n", peer.ip().to_canonical());
                    let _ = s.write_all(line.as_bytes());
                }
            }
            Service::Udp(sock, label) => {
                let mut buf = [0u8; 2048];
                while let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(
                        format!("{label} {}", peer.ip().to_canonical()).as_bytes(),
                        peer,
                    );
                }
            }
            Service::Dns(sock) => {
                let server = local_v4(sock.local_addr());
                let mut buf = [0u8; 4096];
                while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    if let Handled::Reply(reply) = dns_reply(&buf[..n], server, dns, true) {
                        let _ = sock.send_to(&reply, peer);
                    }
                }
            }
            Service::DnsTcp(l) => {
                while let Ok((s, _)) = l.accept() {
                    let Ok(stop) = stop.try_clone() else {
                        continue;
                    };
                    let dns = dns.clone();
                    // Its own thread: a slow client must not stall the other servers.
                    std::thread::spawn(move || serve_dns_tcp(s, &dns, &stop));
                }
            }
        }
    }
}

fn serve(services: Vec<Service>, stop: UnixStream, dns: SharedDns) {
    let mut fds: Vec<BorrowedFd> = services.iter().map(Service::fd).collect();
    fds.push(stop.as_fd());
    loop {
        let Some(ready) = poll_readable(&fds, None) else {
            return;
        };
        if ready.last() == Some(&true) {
            return;
        }
        for (service, _) in services.iter().zip(&ready).filter(|(_, r)| **r) {
            service.handle(&dns, &stop);
        }
    }
}
