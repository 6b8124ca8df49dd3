//! UDP for `net:connect:udp:` grants. A UDP socket of the supervisor's
//! handed to the program could `sendto` any address (an explicit address
//! overrides a datagram socket's peer), so none is handed over: the
//! program's own socket — in the jail's network namespace, where only its
//! loopback exists — is connected to a relay socket that a supervisor
//! thread bound inside that namespace, and the relay carries datagrams
//! between it and a socket of the supervisor's connected to the granted
//! destination. Whatever else the program sends goes nowhere.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::sys;

/// The largest datagram carried (the rest of a larger one is cut).
const MAX_DATAGRAM: usize = 65_536;

/// What relays of one run share: bytes moved by them, bytes the run's TCP
/// connections moved (kept current by the sampler), the run's byte limit.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub udp_bytes: AtomicU64,
    pub tcp_bytes: AtomicU64,
    pub max_bytes: Option<u64>,
    /// Relays stopped at the byte limit.
    pub cut: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Relay {
    pub record: usize,
    pub out: Arc<AtomicU64>,
    pub back: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` on a thread of its own that joins network namespace `netns`
/// (the process and its other threads stay where they are): the sockets
/// `f` makes belong to that namespace for good, and are used from any
/// thread afterwards.
pub(crate) fn in_netns<T: Send + 'static>(
    netns: std::fs::File,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::Builder::new()
        .name("warden-netns".into())
        .spawn(move || {
            sys::setns(netns.as_raw_fd(), libc::CLONE_NEWNET)?;
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("a thread in another network namespace failed"))?
}

/// A UDP socket bound to the loopback of task `pid`'s network namespace
/// (the jail's), for a program socket of `family`.
fn bind_inside(pid: libc::pid_t, family: i32) -> io::Result<UdpSocket> {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    in_netns(netns, move || {
        let local: SocketAddr = if family == libc::AF_INET6 {
            (Ipv6Addr::LOCALHOST, 0).into()
        } else {
            (Ipv4Addr::LOCALHOST, 0).into()
        };
        UdpSocket::bind(local)
    })
}

/// The sockaddr bytes of `addr`, as connect(2) takes them.
pub(crate) fn raw_sockaddr(addr: SocketAddr) -> Vec<u8> {
    let mut raw = Vec::with_capacity(28);
    match addr {
        SocketAddr::V4(v4) => {
            raw.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            raw.extend_from_slice(&v4.port().to_be_bytes());
            raw.extend_from_slice(&v4.ip().octets());
            raw.extend_from_slice(&[0u8; 8]);
        }
        SocketAddr::V6(v6) => {
            raw.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            raw.extend_from_slice(&v6.port().to_be_bytes());
            raw.extend_from_slice(&v6.flowinfo().to_be_bytes());
            raw.extend_from_slice(&v6.ip().octets());
            raw.extend_from_slice(&v6.scope_id().to_ne_bytes());
        }
    }
    raw
}

/// Starts a relay to `dest` for the program's socket of `family` in the
/// jail of task `pid`. Returns it, and the address (inside the jail) to
/// connect the program's socket to.
pub(crate) fn start(
    pid: libc::pid_t,
    family: i32,
    dest: SocketAddr,
    record: usize,
    shared: Arc<Shared>,
) -> io::Result<(Relay, SocketAddr)> {
    let local: SocketAddr = match dest.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let upstream = UdpSocket::bind(local)?;
    upstream.connect(dest)?;
    let inside = bind_inside(pid, family)?;
    let at = inside.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (out, back) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (halt, sent, got) = (stop.clone(), out.clone(), back.clone());
    let thread = std::thread::Builder::new()
        .name("warden-udp-relay".into())
        .spawn(move || carry(&inside, &upstream, &halt, &sent, &got, &shared))?;
    Ok((
        Relay {
            record,
            out,
            back,
            stop,
            thread: Some(thread),
        },
        at,
    ))
}

fn carry(
    inside: &UdpSocket,
    upstream: &UdpSocket,
    stop: &AtomicBool,
    sent: &AtomicU64,
    got: &AtomicU64,
    shared: &Shared,
) {
    let _ = inside.set_nonblocking(true);
    let _ = upstream.set_nonblocking(true);
    // The program's socket: the first sender (only the jail can reach
    // this socket; later datagrams from elsewhere are dropped).
    let mut program: Option<SocketAddr> = None;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Counts `n` more bytes; whether the run is still within its limit.
    let within = |n: usize| -> bool {
        let n = n as u64;
        let before = shared.udp_bytes.fetch_add(n, Ordering::Relaxed);
        shared
            .max_bytes
            .is_none_or(|max| before + n + shared.tcp_bytes.load(Ordering::Relaxed) <= max)
    };
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd {
                fd: inside.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: upstream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if sys::poll(&mut fds, 100).is_err() {
            return;
        }
        if fds[0].revents != 0 {
            while let Ok((n, from)) = inside.recv_from(&mut buf) {
                if program.is_some_and(|p| p != from) {
                    continue;
                }
                program = Some(from);
                if !within(n) {
                    shared.cut.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if upstream.send(&buf[..n]).is_ok() {
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        if fds[1].revents != 0 {
            while let Ok(n) = upstream.recv(&mut buf) {
                let Some(to) = program else { continue };
                if !within(n) {
                    shared.cut.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if inside.send_to(&buf[..n], to).is_ok() {
                    got.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_are_laid_out_as_the_kernel_reads_them() {
        let v4 = raw_sockaddr("11.22.33.44:53".parse().unwrap());
        assert_eq!(v4.len(), std::mem::size_of::<libc::sockaddr_in>());
        assert_eq!(&v4[2..8], &[0, 53, 11, 22, 33, 44]);
        let v6 = raw_sockaddr("[2a00:1::5]:5353".parse().unwrap());
        assert_eq!(v6.len(), std::mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(&v6[2..4], &5353u16.to_be_bytes());
    }
}
