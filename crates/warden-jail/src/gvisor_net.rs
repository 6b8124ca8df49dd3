//! Egress for the gVisor backend. The Sentry cannot be asked per connect
//! (its system calls are its own), so the sandbox gets a network namespace
//! of its own (runsc `--network=host`, inside a namespace the shim made)
//! holding only a loopback that carries the run's pinned destination
//! addresses. On each granted address and port the supervisor listens
//! there; a connection it accepts it makes again from its own namespace to
//! the same address and port — through the proxy for `net:http` and
//! `net:https` grants — and UDP datagrams it relays likewise. The DNS stub
//! answers at 127.0.0.1:53 there. Nothing else exists in that namespace:
//! every other destination is unreachable.

use std::collections::HashMap;
use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warden_core::Connection;
use warden_egress::{EgressPlan, Endpoint, Proxy, Verdict};

use crate::egress::Egress;
use crate::sys;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Shared = Arc<Mutex<Egress>>;

fn lock(e: &Shared) -> std::sync::MutexGuard<'_, Egress> {
    e.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct Net {
    egress: Shared,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The addresses the sandbox's loopback must carry.
pub(crate) fn addresses(endpoints: &[Endpoint]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for (ip, _, _) in endpoints {
        // `::` is a listener for every destination, not an address.
        if !ip.is_unspecified() && !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

enum Bound {
    Tcp(TcpListener, SocketAddr),
    Udp(UdpSocket, SocketAddr),
    /// Sees the first packet of every attempt on the loopback.
    Watch(std::os::fd::OwnedFd),
}

/// The classic BPF program of the watcher: TCP segments with SYN and no
/// ACK, and UDP datagrams, over IPv4 (any header length) or IPv6 (no
/// extension headers); the rest is not copied out of the kernel.
fn attempts_filter() -> Vec<libc::sock_filter> {
    use crate::seccomp::{jump, stmt, ALU_AND_K as AND, JEQ_K as JEQ, RET_K as RET};
    // Packet loads (the seccomp filters load only words from their data).
    const LDB_ABS: u16 = 0x30;
    const LDXB_MSH: u16 = 0xb1;
    const LDB_IND: u16 = 0x50;
    const RSH: u16 = 0x74;
    vec![
        stmt(LDB_ABS, 0),      // 0: version
        stmt(RSH, 4),          // 1
        jump(JEQ, 4, 0, 7),    // 2: IPv4 → 3, else → 10
        stmt(LDB_ABS, 9),      // 3: protocol
        jump(JEQ, 17, 12, 0),  // 4: UDP → accept
        jump(JEQ, 6, 0, 12),   // 5: TCP → 6, else reject
        stmt(LDXB_MSH, 0),     // 6: X = header length
        stmt(LDB_IND, 13),     // 7: TCP flags
        stmt(AND, 0x12),       // 8: SYN|ACK
        jump(JEQ, 0x02, 7, 8), // 9: SYN alone → accept, else reject
        jump(JEQ, 6, 0, 7),    // 10: IPv6 → 11, else reject
        stmt(LDB_ABS, 6),      // 11: next header
        jump(JEQ, 17, 4, 0),   // 12: UDP → accept
        jump(JEQ, 6, 0, 4),    // 13: TCP → 14, else reject
        stmt(LDB_ABS, 53),     // 14: TCP flags (40 + 13)
        stmt(AND, 0x12),       // 15
        jump(JEQ, 0x02, 0, 1), // 16: SYN alone → accept, else reject
        stmt(RET, 0xffff),     // 17: accept
        stmt(RET, 0),          // 18: reject
    ]
}

/// The destination and protocol of a packet the filter passed, and its
/// source: `(dest, proto, source)`.
fn attempt_of(packet: &[u8]) -> Option<(SocketAddr, &'static str, SocketAddr)> {
    let version = packet.first()? >> 4;
    let (proto, src, dst, l4): (u8, IpAddr, IpAddr, &[u8]) = match version {
        4 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            let a: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                *packet.get(9)?,
                IpAddr::from(a),
                IpAddr::from(b),
                packet.get(ihl..)?,
            )
        }
        6 => {
            let a: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                *packet.get(6)?,
                IpAddr::from(a),
                IpAddr::from(b),
                packet.get(40..)?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes(l4.get(0..2)?.try_into().ok()?);
    let dport = u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?);
    let proto = match proto {
        6 => "tcp",
        17 => "udp",
        _ => return None,
    };
    Some((
        SocketAddr::new(dst, dport),
        proto,
        SocketAddr::new(src, sport),
    ))
}

/// Records each attempt to a destination no listener serves (the kernel
/// has already refused it on the loopback) as a refused connection; a
/// UDP destination once.
fn watch(fd: &std::os::fd::OwnedFd, endpoints: &[Endpoint], egress: &Shared, stop: &AtomicBool) {
    let served = |a: &SocketAddr, udp: bool| {
        endpoints.iter().any(|&(ip, port, u)| {
            (ip == a.ip() || ip.is_unspecified()) && port == a.port() && u == udp
        })
    };
    let stub: SocketAddr = (Ipv4Addr::LOCALHOST, 53).into();
    let mut seen_udp: Vec<SocketAddr> = Vec::new();
    let mut buf = [0u8; 128];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, outgoing)) = sys::recv_packet(fd.as_raw_fd(), &mut buf) else {
            continue;
        };
        if !outgoing {
            continue;
        }
        let Some((dest, proto, source)) = attempt_of(&buf[..n]) else {
            continue;
        };
        let udp = proto == "udp";
        // Granted destinations, the DNS stub, and what they send back.
        if served(&dest, udp) || served(&source, udp) || dest == stub || source == stub {
            continue;
        }
        if udp {
            if seen_udp.contains(&dest) {
                continue;
            }
            if seen_udp.len() < 256 {
                seen_udp.push(dest);
            }
        }
        let mut e = lock(egress);
        let why = match e.plan().decide_proto(dest.ip(), dest.port(), udp) {
            Verdict::Refused(why) => why,
            Verdict::Allowed { grant, .. } => {
                format!("{grant} opens it, but the sandbox cannot reach it (not listed for the forwarder)")
            }
        };
        let mut c = Connection::attempt(dest.ip().to_string(), dest.port(), proto);
        c.reason = Some(why);
        e.record_forwarded(c);
    }
}

impl Net {
    /// Listens on every endpoint inside network namespace `netns` (the
    /// sandbox's, its addresses already on its loopback), starts the DNS
    /// stub there, and serves until [`Net::finish`].
    pub fn start(
        netns: std::fs::File,
        endpoints: &[Endpoint],
        mut egress: Egress,
    ) -> io::Result<Net> {
        let stub_ns = netns.try_clone()?;
        let wanted = endpoints.to_vec();
        let bound = crate::relay::in_netns(netns, move || {
            let mut bound = vec![Bound::Watch(sys::loopback_packet_socket(
                &attempts_filter(),
            )?)];
            for (ip, port, udp) in wanted {
                let at = SocketAddr::new(ip, port);
                bound.push(if udp {
                    Bound::Udp(UdpSocket::bind(at)?, at)
                } else if ip.is_unspecified() {
                    // Every destination on this port (all are local to
                    // the sandbox's loopback): IPv4 too through the
                    // dual-stack socket, or IPv4 alone without IPv6.
                    let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
                    let l = TcpListener::bind(at).or_else(|_| TcpListener::bind(v4))?;
                    Bound::Tcp(l, at)
                } else {
                    Bound::Tcp(TcpListener::bind(at)?, at)
                });
            }
            Ok(bound)
        })?;
        egress.start_stub_in(stub_ns);
        let egress: Shared = Arc::new(Mutex::new(egress));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for b in bound {
            let (egress, stop) = (egress.clone(), stop.clone());
            let endpoints = endpoints.to_vec();
            threads.push(
                std::thread::Builder::new()
                    .name("warden-gvisor-net".into())
                    .spawn(move || match b {
                        Bound::Tcp(l, at) => serve_tcp(&l, at, &egress, &stop),
                        Bound::Udp(s, at) => serve_udp(&s, at, &egress, &stop),
                        Bound::Watch(fd) => watch(&fd, &endpoints, &egress, &stop),
                    })?,
            );
        }
        Ok(Net {
            egress,
            stop,
            threads,
        })
    }

    /// Stops serving; what the run's egress comes to.
    pub fn finish(self) -> NetReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut e = lock(&self.egress);
        e.finish();
        let mut warnings = e.warnings();
        warnings.extend(e.stub_error.clone());
        NetReport {
            connections: e.connections.clone(),
            violations: e.violations(),
            limits_reached: e.limits_reached(),
            warnings,
            refused: e.connections.iter().any(|c| !c.allowed) || e.unrecorded.1 > 0,
        }
    }
}

/// The egress part of a gVisor run's report.
pub(crate) struct NetReport {
    pub connections: Vec<Connection>,
    pub violations: Vec<warden_core::Violation>,
    pub limits_reached: Vec<warden_core::LimitReached>,
    pub warnings: Vec<String>,
    pub refused: bool,
}

/// Waits up to 100 ms for `fd` to be readable; false when stopping.
fn wait_readable(fd: i32, stop: &AtomicBool) -> bool {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    let _ = sys::poll(&mut fds, 100);
    !stop.load(Ordering::Relaxed)
}

fn record_for(egress: &Shared, at: SocketAddr, proto: &'static str) -> (Connection, Option<Proxy>) {
    let mut c = Connection::attempt(at.ip().to_string(), at.port(), proto);
    let mut e = lock(egress);
    let verdict = e.plan().decide_proto(at.ip(), at.port(), proto == "udp");
    let proxy = match verdict {
        Verdict::Allowed { grant, name, proxy } if e.admit() => {
            c.allowed = true;
            c.grant = Some(grant);
            c.name = name;
            proxy
        }
        Verdict::Allowed { .. } => {
            c.reason =
                Some("the run's limit of connections is reached (net:limit:connections)".into());
            None
        }
        Verdict::Refused(why) => {
            c.reason = Some(why);
            None
        }
    };
    (c, proxy)
}

fn serve_tcp(listener: &TcpListener, at: SocketAddr, egress: &Shared, stop: &AtomicBool) {
    let _ = listener.set_nonblocking(true);
    let mut carried = Vec::new();
    while wait_readable(listener.as_raw_fd(), stop) {
        let Ok((conn, _)) = listener.accept() else {
            continue;
        };
        let _ = conn.set_nonblocking(false);
        // The destination the program connected to (a listener on `::`
        // gets every one on its port).
        let dest = match conn.local_addr() {
            Ok(local) if at.ip().is_unspecified() => {
                SocketAddr::new(warden_egress::canonical(local.ip()), local.port())
            }
            _ => at,
        };
        let egress = egress.clone();
        carried.push(std::thread::spawn(move || carry_tcp(conn, dest, &egress)));
        carried.retain(|t| !t.is_finished());
    }
    // The sandbox is gone, and with it the inside ends of what is still
    // carried: those finish at once (a second at most is waited for).
    let until = std::time::Instant::now() + Duration::from_secs(1);
    for t in carried {
        while !t.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

fn carry_tcp(conn: TcpStream, at: SocketAddr, egress: &Shared) {
    let (mut record, proxy) = record_for(egress, at, "tcp");
    if !record.allowed {
        // Accepted already (a listener on `::` takes every destination on
        // its port): reset, so the program's first read fails.
        let _ = sys::reset_on_close(conn.as_raw_fd());
        drop(conn);
        lock(egress).record_forwarded(record);
        return;
    }
    let upstream = match TcpStream::connect_timeout(&at, CONNECT_TIMEOUT) {
        Ok(u) => u,
        Err(e) => {
            record.reason = Some(format!("connect failed: {e}"));
            let _ = conn.shutdown(Shutdown::Both);
            lock(egress).record_forwarded(record);
            return;
        }
    };
    let counter = conn.try_clone().ok();
    let index = lock(egress).record_forwarded(record);
    let plan = lock(egress).plan().clone();
    let limits = lock(egress).forward_limits();
    let limited = limits.max_bytes.is_some() || limits.idle.is_some();
    let (refused, cut) = match proxy {
        Some(kind) if !limited => (through_proxy(kind, conn, upstream, at.ip(), &plan), None),
        _ => {
            // Spliced, so that the limits hold: straight to the upstream
            // connection, or for net:http/net:https to the proxy, through
            // a loopback pair of the supervisor's.
            let (refused, cut) = match proxy {
                None => {
                    let cut = splice(&conn, &upstream, &limits);
                    let _ = upstream.shutdown(Shutdown::Both);
                    (None, cut)
                }
                Some(kind) => {
                    match proxied_with_limits(&conn, upstream, kind, at.ip(), plan, &limits) {
                        Ok(done) => done,
                        Err(e) => (Some(format!("carrying the connection: {e}")), None),
                    }
                }
            };
            let _ = conn.shutdown(Shutdown::Both);
            let why = match cut {
                Some(Cut::Bytes(max)) => {
                    lock(egress).note_cut(true);
                    Some(format!(
                        "cut: the run moved more than its net:limit:bytes of {max}"
                    ))
                }
                Some(Cut::Idle(idle)) => {
                    lock(egress).note_cut(false);
                    Some(format!(
                        "cut: no data for {} ms (idle timeout)",
                        idle.as_millis()
                    ))
                }
                None => None,
            };
            (refused, why)
        }
    };
    // The program's bytes are what this end of its connection received
    // and sent, reversed.
    let (sent, received) = counter
        .and_then(|c| sys::tcp_bytes(c.as_raw_fd()).ok())
        .unwrap_or((0, 0));
    if let Some(i) = index {
        lock(egress).update_forwarded(i, (received, sent), refused, cut);
    }
}

/// Carries `conn` through the proxy of `kind` to `upstream`.
fn through_proxy(
    kind: Proxy,
    conn: TcpStream,
    upstream: TcpStream,
    ip: IpAddr,
    plan: &EgressPlan,
) -> Option<String> {
    match kind {
        Proxy::Http => crate::proxy::http(conn, upstream, ip, plan).err(),
        Proxy::Tls => crate::proxy::tls(conn, upstream, ip, plan).err(),
    }
}

/// The proxy on one end of a loopback pair, the sandbox's connection
/// spliced to the other under `limits`; the proxy's refusal and the cut.
fn proxied_with_limits(
    conn: &TcpStream,
    upstream: TcpStream,
    kind: Proxy,
    ip: IpAddr,
    plan: EgressPlan,
    limits: &Limits,
) -> std::io::Result<(Option<String>, Option<Cut>)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let (near, far) = crate::proxy::pair(&listener)?;
    drop(listener);
    let upstream_end = upstream.try_clone()?;
    let checker = std::thread::Builder::new()
        .name("warden-proxy".into())
        .spawn(move || through_proxy(kind, far, upstream, ip, &plan))?;
    let cut = splice(conn, &near, limits);
    let _ = near.shutdown(Shutdown::Both);
    if cut.is_some() {
        let _ = upstream_end.shutdown(Shutdown::Both);
    }
    let refused = checker.join().unwrap_or(None);
    Ok((refused, cut))
}

/// The run's network limits, as the forwarder holds them.
#[derive(Debug)]
pub(crate) struct Limits {
    /// Bytes every forwarded connection moved so far, both ways.
    pub moved: AtomicU64,
    pub max_bytes: Option<u64>,
    pub idle: Option<Duration>,
}

/// Why a spliced connection was cut.
enum Cut {
    Bytes(u64),
    Idle(Duration),
}

/// Carries `inside` (the sandbox's end) and `outside` both ways in one
/// loop, so that the run's byte limit and the idle timeout (no data
/// either way) hold; returns the cut, if one was made.
fn splice(inside: &TcpStream, outside: &TcpStream, limits: &Limits) -> Option<Cut> {
    use std::io::{Read as _, Write as _};
    let mut open = [true, true]; // reading inside, reading outside
    let mut buf = vec![0u8; 64 << 10];
    let mut last = std::time::Instant::now();
    while open[0] || open[1] {
        let wait = limits.idle.map_or(1000, |idle| {
            idle.saturating_sub(last.elapsed())
                .as_millis()
                .clamp(1, 1000) as i32
        });
        let mut fds: Vec<libc::pollfd> = [(inside, open[0]), (outside, open[1])]
            .iter()
            .map(|(s, on)| libc::pollfd {
                fd: if *on { s.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if sys::poll(&mut fds, wait).is_err() {
            return None;
        }
        if let Some(idle) = limits.idle.filter(|i| last.elapsed() >= *i) {
            return Some(Cut::Idle(idle));
        }
        for (i, (mut from, mut to)) in [(inside, outside), (outside, inside)]
            .into_iter()
            .enumerate()
        {
            if !open[i] || fds[i].revents == 0 {
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    open[i] = false;
                    let _ = to.shutdown(Shutdown::Write);
                }
                Ok(n) => {
                    last = std::time::Instant::now();
                    let moved = limits.moved.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                    if let Some(max) = limits.max_bytes.filter(|m| moved > *m) {
                        return Some(Cut::Bytes(max));
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        return None;
                    }
                }
            }
        }
    }
    None
}

/// UDP at `at`: each sender inside gets its own socket to `at` outside.
fn serve_udp(inside: &UdpSocket, at: SocketAddr, egress: &Shared, stop: &AtomicBool) {
    let _ = inside.set_nonblocking(true);
    struct Peer {
        upstream: UdpSocket,
        index: Option<usize>,
        out: u64,
        back: u64,
    }
    let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
    let mut refused: Vec<SocketAddr> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<libc::pollfd> = std::iter::once(inside.as_raw_fd())
            .chain(peers.values().map(|p| p.upstream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let _ = sys::poll(&mut fds, 100);
        while let Ok((n, from)) = inside.recv_from(&mut buf) {
            if refused.contains(&from) {
                continue;
            }
            let peer = match peers.entry(from) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let (record, _) = record_for(egress, at, "udp");
                    if !record.allowed {
                        lock(egress).record_forwarded(record);
                        refused.push(from);
                        continue;
                    }
                    let local: SocketAddr = match at.ip() {
                        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                    };
                    let Ok(upstream) =
                        UdpSocket::bind(local).and_then(|u| u.connect(at).map(|()| u))
                    else {
                        continue;
                    };
                    let _ = upstream.set_nonblocking(true);
                    let index = lock(egress).record_forwarded(record);
                    slot.insert(Peer {
                        upstream,
                        index,
                        out: 0,
                        back: 0,
                    })
                }
            };
            if peer.upstream.send(&buf[..n]).is_ok() {
                peer.out += n as u64;
            }
        }
        for (from, p) in peers.iter_mut() {
            while let Ok(n) = p.upstream.recv(&mut buf) {
                if inside.send_to(&buf[..n], from).is_ok() {
                    p.back += n as u64;
                }
            }
        }
    }
    let mut e = lock(egress);
    for p in peers.values() {
        if let Some(i) = p.index {
            e.update_forwarded(i, (p.out, p.back), None, None);
        }
    }
}
