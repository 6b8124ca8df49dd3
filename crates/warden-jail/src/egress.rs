//! Egress for jailed programs: the supervisor makes their connections.
//!
//! A run with `net:connect` grants gets a seccomp filter that sends every
//! connect(2) to the supervisor. The jail keeps its own network namespace
//! with nothing in it but its loopback, so the program's own sockets can
//! reach nothing outside. For a connection to another address the
//! supervisor reads the address once from the program's memory, judges it
//! against the run's [`EgressPlan`] (names pinned before the run), and for
//! an allowed one connects a socket of its own, in its own network
//! namespace, to the address it read — then installs that socket in the
//! program in place of the one it called connect on
//! (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SETFD`) and answers the call with
//! success. What the program writes into its memory afterwards changes
//! nothing: the kernel never acts on that address again.
//!
//! No connect(2) is ever left to the kernel (`CONTINUE`): the kernel would
//! look the descriptor and the address up again, and a program that holds
//! a handed-over socket (of the supervisor's namespace) could swap it in
//! at that descriptor number in between. Connections inside the jail —
//! its own loopback, abstract AF_UNIX, AF_UNSPEC — are made by the
//! supervisor on the program's socket object (taken with pidfd_getfd)
//! with the address it read; a handed-over socket is never reconnected
//! (EISCONN); pathname AF_UNIX connects are made by a short-lived child of
//! the supervisor that enters the task's mount namespace, root, working
//! directory and credentials, so the path means what it means to the
//! program (a symlink the program planted resolves inside its own view).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use warden_core::{Connection, Violation};
use warden_egress::{canonical, EgressPlan, Verdict};

use crate::sys;
use crate::sys::notify::Notif;

/// Longest the supervisor waits for an allowed connection to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection attempts kept in the report; later ones are counted only.
const MAX_RECORDED: usize = 256;

/// Refused attempts named one by one among the violations; the rest are
/// summed in one.
const MAX_NAMED_REFUSALS: usize = 16;

/// How often held connections are sampled (bytes, idleness) and checked
/// for being closed by the program.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// An allowed connection whose socket the supervisor still holds a copy
/// of, to read its byte counters: released once no process of the jail
/// holds it any more (or the run ends), so that the program's close is
/// the connection's close within [`SAMPLE_EVERY`].
#[derive(Debug)]
struct Held {
    /// Index into `connections`.
    record: usize,
    sock: OwnedFd,
    inode: u64,
    shut: bool,
}

/// The egress of one run: its plan and what the program attempted.
#[derive(Debug)]
pub(crate) struct Egress {
    plan: EgressPlan,
    pub connections: Vec<Connection>,
    /// Attempts past [`MAX_RECORDED`], allowed and refused.
    pub unrecorded: (u64, u64),
    /// Most connections the run may make (allowed ones), if limited.
    pub max_connections: Option<u64>,
    /// Most bytes (sent and received, all connections) the run may move.
    pub max_bytes: Option<u64>,
    /// A connection with no data either way for this long is shut down.
    pub idle_timeout: Option<Duration>,
    made: u64,
    held: Vec<Held>,
    /// Bytes of connections no longer held.
    moved_before: u64,
    /// Connections cut at the byte limit, cut for idleness, and refused
    /// at the connection limit.
    cut_bytes: u64,
    cut_idle: u64,
    over_count: u64,
    /// The run's DNS stub, started at the first query.
    stub: Option<Stub>,
    /// Why it could not start.
    pub stub_error: Option<String>,
    /// The supervisor's own network namespace (SO_NETNS_COOKIE), where
    /// handed-over sockets live.
    own_netns: Option<u64>,
    /// The proxy of `net:http`/`net:https` connections, made at the first.
    proxy: Option<crate::proxy::Hub>,
    /// UDP relays (`net:connect:udp:`), and what they share.
    relays: Vec<crate::relay::Relay>,
    relays_unrecorded: Vec<crate::relay::Relay>,
    udp: Option<std::sync::Arc<crate::relay::Shared>>,
    /// The gVisor forwarder's limits, shared by its connections.
    forwarded: Option<std::sync::Arc<crate::gvisor_net::Limits>>,
    /// The stub's socket, bound at 127.0.0.1:53 by the jail's init in its
    /// own network namespace and handed over with the seccomp listener
    /// (so that the supervisor need not enter that namespace — which an
    /// ordinary user cannot).
    pub stub_socket: Option<UdpSocket>,
}

/// Where the stub's socket comes from.
enum StubSocket {
    /// Bound by a thread of the supervisor's that joins this namespace.
    In(std::fs::File),
    /// Bound already (by the jail's init).
    Bound(UdpSocket),
}

/// The DNS stub of a run: a UDP socket of the supervisor's on the host's
/// loopback, answered by a thread of its own from the run's plan. The
/// program's resolver reaches it through the jail's own 127.0.0.1:53: a
/// connect there is handed a socket connected to the stub.
#[derive(Debug)]
struct Stub {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    queries: std::sync::Arc<std::sync::Mutex<Vec<warden_egress::DnsQuery>>>,
}

/// Queries kept for the report; later ones are answered, not listed.
const MAX_QUERIES: usize = 256;

impl Stub {
    /// Binds 127.0.0.1:53 inside the network namespace of task `pid`
    /// (from a thread that joins it) and answers there.
    fn start(plan: &EgressPlan, at: StubSocket) -> std::io::Result<Stub> {
        let resolver = EgressPlan::run_resolver().map_err(std::io::Error::other)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (plan, halt, log) = (plan.clone(), stop.clone(), queries.clone());
        let (bound_tx, bound_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("warden-dns".into())
            .spawn(move || {
                use std::os::fd::AsRawFd as _;
                let socket = match at {
                    // Only this thread moves into the jail's network namespace.
                    StubSocket::In(netns) => sys::setns(netns.as_raw_fd(), libc::CLONE_NEWNET)
                        .and_then(|()| UdpSocket::bind((Ipv4Addr::LOCALHOST, 53))),
                    StubSocket::Bound(s) => Ok(s),
                };
                let socket = socket.and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_millis(100)))?;
                    Ok(s)
                });
                let socket = match socket {
                    Ok(s) => {
                        let _ = bound_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                let mut buf = [0u8; 1500];
                while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some((reply, query)) = plan.answer(&buf[..n], &*resolver) else {
                        continue;
                    };
                    let _ = socket.send_to(&reply, from);
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    if log.len() < MAX_QUERIES && !log.contains(&query) {
                        log.push(query);
                    }
                }
            })?;
        match bound_rx.recv_timeout(Duration::from_secs(2)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("the stub thread did not start")),
        }
        Ok(Stub {
            stop,
            thread: Some(thread),
            queries,
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Egress {
    pub fn new(plan: EgressPlan) -> Egress {
        Egress {
            plan,
            connections: Vec::new(),
            unrecorded: (0, 0),
            max_connections: None,
            max_bytes: None,
            idle_timeout: None,
            made: 0,
            held: Vec::new(),
            moved_before: 0,
            cut_bytes: 0,
            cut_idle: 0,
            over_count: 0,
            stub: None,
            stub_error: None,
            own_netns: UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .ok()
                .and_then(|s| sys::netns_cookie(s.as_raw_fd()).ok()),
            proxy: None,
            relays: Vec::new(),
            relays_unrecorded: Vec::new(),
            udp: None,
            forwarded: None,
            stub_socket: None,
        }
    }

    /// Answers notification `n` (a connect(2)) on `listener`. `deadline`
    /// bounds how long a connection may take to be made.
    pub fn handle_connect(&mut self, listener: RawFd, n: &Notif, deadline: Instant) {
        let pid = n.pid as libc::pid_t;
        let fd = n.data.args[0] as RawFd;
        // Large enough for any sockaddr the jail's families use
        // (sockaddr_un is the largest, 110 bytes).
        let mut raw = [0u8; 128];
        let len = (n.data.args[2] as usize).min(raw.len());
        let read = sys::read_process_memory(pid, n.data.args[1], &mut raw[..len]);
        // The memory read was the call's only if the call is still pending.
        if !sys::notify::id_valid(listener, n.id) {
            return;
        }
        let Ok(read) = read else {
            let _ = sys::notify::deny(listener, n.id, libc::EFAULT);
            return;
        };
        let raw = &raw[..read];
        // The socket object the call is about, taken once: whatever the
        // program puts at that descriptor number afterwards, the
        // supervisor acts on this object only. (No call is ever left to
        // the kernel: it would look the descriptor and the address up
        // again, and the program may hold sockets of the supervisor's
        // network namespace that it swaps in between.) The notifying task
        // may be any thread; pidfd_open wants the thread group's leader.
        let theirs = match sys::take_fd_copy(thread_group(pid), fd) {
            Ok(f) => f,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EBADF);
                let _ = sys::notify::deny(listener, n.id, errno);
                return;
            }
        };
        // Still the call we were told of (its task, so its pid, is alive).
        if !sys::notify::id_valid(listener, n.id) {
            return;
        }
        let their_fd = theirs.as_raw_fd();
        let Ok(sock_type) = sys::socket_option(their_fd, libc::SOL_SOCKET, libc::SO_TYPE) else {
            let _ = sys::notify::deny(listener, n.id, libc::ENOTSOCK);
            return;
        };
        // A socket the supervisor handed over lives in the supervisor's
        // network namespace: it is connected, and stays as it is. (A
        // kernel without SO_NETNS_COOKIE cannot tell them apart: refused.)
        match (sys::netns_cookie(their_fd), self.own_netns) {
            (Ok(theirs), Some(ours)) if theirs != ours => {}
            (Ok(_), Some(_)) => {
                let _ = sys::notify::deny(listener, n.id, libc::EISCONN);
                return;
            }
            _ => {
                let _ = sys::notify::deny(listener, n.id, libc::EPERM);
                return;
            }
        }
        let dest = inet_destination(raw);
        let inside = dest.is_none_or(|d| {
            let ip = canonical(d.ip());
            ip.is_loopback() || ip.is_unspecified()
        });
        if inside {
            // The jail's own loopback, AF_UNIX, AF_UNSPEC, netlink: made by
            // the supervisor on the program's socket, with the address it
            // read, inside the jail's namespaces.
            if dest.is_some_and(|d| d.port() == 53) && sock_type == libc::SOCK_DGRAM {
                self.ensure_stub(pid);
            }
            let errno = match unix_path(raw) {
                Some(_) => match UnixView::of(pid) {
                    // Still the call whose task's view was taken.
                    Ok(_) if !sys::notify::id_valid(listener, n.id) => return,
                    Ok(view) => view.connect(their_fd, raw, deadline).err(),
                    Err(e) => Some(e.raw_os_error().unwrap_or(libc::EACCES)),
                },
                None => connect_inside(their_fd, raw, deadline).err(),
            };
            let _ = match errno {
                None => sys::notify::succeed(listener, n.id, 0),
                Some(e) => sys::notify::deny(listener, n.id, e),
            };
            return;
        }
        let Some(dest) = dest else { return };
        let ip = canonical(dest.ip());
        let proto = match sock_type {
            libc::SOCK_STREAM => "tcp",
            libc::SOCK_DGRAM => "udp",
            // SOCK_SEQPACKET, SOCK_RAW and the like: no egress.
            _ => {
                let _ = sys::notify::deny(listener, n.id, libc::EPERM);
                return;
            }
        };
        let verdict = if self.max_connections.is_some_and(|max| self.made >= max) {
            self.over_count += 1;
            Verdict::Refused(format!(
                "the run's limit of {} connections is reached (net:limit:connections)",
                self.made
            ))
        } else {
            self.plan.decide_proto(ip, dest.port(), proto == "udp")
        };
        let mut record = Connection::attempt(ip.to_string(), dest.port(), proto);
        match verdict {
            Verdict::Refused(why) => {
                record.reason = Some(why);
                let _ = sys::notify::deny(listener, n.id, libc::EPERM);
            }
            Verdict::Allowed { grant, name, proxy } => {
                record.allowed = true;
                record.grant = Some(grant);
                record.name = name;
                let timeout = deadline
                    .saturating_duration_since(Instant::now())
                    .min(CONNECT_TIMEOUT)
                    .max(Duration::from_millis(1));
                if proto == "udp" {
                    match self.relay_udp(pid, &theirs, dest, deadline) {
                        Ok(()) => {
                            self.made += 1;
                            record.bytes_out = Some(0);
                            record.bytes_in = Some(0);
                            let _ = sys::notify::succeed(listener, n.id, 0);
                        }
                        Err(errno) => {
                            record.reason = Some(format!(
                                "relay failed: {}",
                                std::io::Error::from_raw_os_error(errno)
                            ));
                            let _ = sys::notify::deny(listener, n.id, errno);
                        }
                    }
                    self.record(record);
                    return;
                }
                let via = proxy.map(|kind| (kind, self.connections.len()));
                match self.connect_for(listener, n, pid, fd, &theirs, dest, timeout, proto, via) {
                    Ok(ours) => {
                        self.made += 1;
                        // Datagrams are not counted (no tcp_info).
                        if proto == "tcp" && self.connections.len() < MAX_RECORDED {
                            record.bytes_out = Some(0);
                            record.bytes_in = Some(0);
                            let inode = sys::inode(ours.as_raw_fd()).unwrap_or(0);
                            self.held.push(Held {
                                record: self.connections.len(),
                                sock: ours,
                                inode,
                                shut: false,
                            });
                        }
                    }
                    Err(e) => {
                        record.reason = Some(format!("connect failed: {e}"));
                        let errno = e.raw_os_error().unwrap_or(libc::ECONNREFUSED);
                        let _ = sys::notify::deny(listener, n.id, errno);
                    }
                }
            }
        }
        self.record(record);
    }

    /// UDP: connects the program's own socket (in the jail's namespace) to
    /// a relay bound there, which carries its datagrams to `dest` (see
    /// `relay`). Returns the errno to answer on failure.
    fn relay_udp(
        &mut self,
        pid: libc::pid_t,
        theirs: &OwnedFd,
        dest: SocketAddr,
        deadline: Instant,
    ) -> Result<(), i32> {
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        let family = sys::socket_option(theirs.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)
            .map_err(errno)?;
        let max_bytes = self.max_bytes;
        let shared = self
            .udp
            .get_or_insert_with(|| {
                std::sync::Arc::new(crate::relay::Shared {
                    max_bytes,
                    ..Default::default()
                })
            })
            .clone();
        let record = self.connections.len();
        let (mut relay, at) =
            crate::relay::start(thread_group(pid), family, dest, record, shared).map_err(errno)?;
        if let Err(e) = connect_inside(
            theirs.as_raw_fd(),
            &crate::relay::raw_sockaddr(at),
            deadline,
        ) {
            relay.stop();
            return Err(e);
        }
        if record < MAX_RECORDED {
            self.relays.push(relay);
        } else {
            // Not recorded: carried all the same, its bytes uncounted here.
            self.relays_unrecorded.push(relay);
        }
        Ok(())
    }

    /// Connects a socket of the supervisor's to `dest` and installs it in
    /// the program as descriptor `fd`, with the file status flags and
    /// common options of the program's own socket; then answers success.
    /// Returns the supervisor's copy of the socket.
    #[allow(clippy::too_many_arguments)]
    fn connect_for(
        &mut self,
        listener: RawFd,
        n: &Notif,
        pid: libc::pid_t,
        fd: RawFd,
        theirs: &OwnedFd,
        dest: SocketAddr,
        timeout: Duration,
        proto: &str,
        via: Option<(warden_egress::Proxy, usize)>,
    ) -> std::io::Result<OwnedFd> {
        let their_fd = theirs.as_raw_fd();
        let domain = sys::socket_option(their_fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
        // The same address family as the program's socket, so that what
        // getpeername/getsockname tell it is in the form it expects.
        let target = match (domain, dest) {
            (libc::AF_INET6, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            (libc::AF_INET, SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
                None => return Err(std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
            },
            _ => dest,
        };
        let ours = if proto == "udp" {
            let local: SocketAddr = match target {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(local)?;
            socket.connect(target)?;
            OwnedFd::from(socket)
        } else if let Some((kind, record)) = via {
            // The real connection is the proxy's; the program gets one end
            // of a loopback connection whose other end the proxy reads.
            let upstream = TcpStream::connect_timeout(&dest, timeout)?;
            if self.proxy.is_none() {
                self.proxy = Some(crate::proxy::Hub::new()?);
            }
            let hub = self
                .proxy
                .as_ref()
                .ok_or_else(|| std::io::Error::other("no proxy"))?;
            OwnedFd::from(hub.carry(upstream, dest.ip(), kind, self.plan.clone(), record)?)
        } else {
            OwnedFd::from(TcpStream::connect_timeout(&target, timeout)?)
        };
        let flags = sys::status_flags(their_fd)?;
        if flags & libc::O_NONBLOCK != 0 {
            sys::set_nonblocking(ours.as_raw_fd())?;
        }
        for (level, name) in [
            (libc::IPPROTO_TCP, libc::TCP_NODELAY),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        ] {
            if let Ok(v) = sys::socket_option(their_fd, level, name) {
                let _ = sys::set_socket_option(ours.as_raw_fd(), level, name, v);
            }
        }
        let cloexec = close_on_exec(pid, fd);
        sys::notify::install_fd(listener, n.id, ours.as_raw_fd(), fd, cloexec)?;
        sys::notify::succeed(listener, n.id, 0)?;
        Ok(ours)
    }

    /// Starts the DNS stub in the jail's network namespace (that of task
    /// `pid`) at the first query, once; a failure is a warning.
    fn ensure_stub(&mut self, pid: libc::pid_t) {
        if self.stub.is_some() || self.stub_error.is_some() {
            return;
        }
        let started = match self.stub_socket.take() {
            Some(bound) => Stub::start(&self.plan, StubSocket::Bound(bound)),
            None => std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .and_then(|netns| Stub::start(&self.plan, StubSocket::In(netns))),
        };
        match started {
            Ok(stub) => self.stub = Some(stub),
            Err(e) => {
                self.stub_error = Some(format!(
                    "the DNS stub could not start in the jail ({e}): names resolve from the jail's /etc/hosts only"
                ))
            }
        }
    }

    /// The run's plan.
    pub fn plan(&self) -> &EgressPlan {
        &self.plan
    }

    /// Starts the DNS stub in network namespace `netns` (the gVisor
    /// sandbox's); a failure is a warning.
    pub fn start_stub_in(&mut self, netns: std::fs::File) {
        if self.stub.is_some() || self.stub_error.is_some() {
            return;
        }
        match Stub::start(&self.plan, StubSocket::In(netns)) {
            Ok(stub) => self.stub = Some(stub),
            Err(e) => {
                self.stub_error = Some(format!(
                    "the DNS stub could not start in the sandbox ({e}): names resolve from its /etc/hosts only"
                ))
            }
        }
    }

    /// Whether one more connection is within `net:limit:connections`;
    /// counts it when it is.
    pub fn admit(&mut self) -> bool {
        if self.max_connections.is_some_and(|max| self.made >= max) {
            self.over_count += 1;
            return false;
        }
        self.made += 1;
        true
    }

    /// The run's byte and idle limits for a forwarder (the gVisor
    /// backend's), with the bytes it moves counted across connections.
    pub fn forward_limits(&mut self) -> std::sync::Arc<crate::gvisor_net::Limits> {
        let (max_bytes, idle) = (self.max_bytes, self.idle_timeout);
        self.forwarded
            .get_or_insert_with(|| {
                std::sync::Arc::new(crate::gvisor_net::Limits {
                    moved: Default::default(),
                    max_bytes,
                    idle,
                })
            })
            .clone()
    }

    /// A forwarded connection was cut at the byte limit (`bytes`) or for
    /// idleness.
    pub fn note_cut(&mut self, bytes: bool) {
        if bytes {
            self.cut_bytes += 1;
        } else {
            self.cut_idle += 1;
        }
    }

    /// Records a connection made by a forwarder (the gVisor backend's);
    /// its index, when it was recorded.
    pub fn record_forwarded(&mut self, c: Connection) -> Option<usize> {
        let index = self.connections.len();
        self.record(c);
        (index < self.connections.len()).then_some(index)
    }

    /// A forwarded connection's bytes (the program's view), and why the
    /// proxy closed it (`refused`: it turns not allowed), or cut it at a limit (`cut`:
    /// it stays allowed, with the reason).
    pub fn update_forwarded(
        &mut self,
        index: usize,
        (out, back): (u64, u64),
        refused: Option<String>,
        cut: Option<String>,
    ) {
        if let Some(c) = self.connections.get_mut(index) {
            c.bytes_out = Some(out);
            c.bytes_in = Some(back);
            if let Some(why) = refused {
                c.allowed = false;
                c.reason = Some(why);
            } else if let Some(why) = cut {
                c.reason = Some(why);
            }
        }
    }

    /// Whether connections are held (the supervisor should call
    /// [`Egress::sample`] every [`SAMPLE_EVERY`]).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Reads the held connections' byte counters, cuts those past the
    /// run's byte limit or idle too long, and releases those no process of
    /// the jail (`init` and its descendants) holds any more.
    pub fn sample(&mut self, init: libc::pid_t) {
        if self.held.is_empty() {
            return;
        }
        // Which sockets the jail still holds, before the counters are
        // read: one it closed has then written all it ever will.
        let open = jail_socket_inodes(init);
        self.read_counters();
        let moved = self.moved();
        if let Some(udp) = &self.udp {
            let tcp =
                moved.saturating_sub(udp.udp_bytes.load(std::sync::atomic::Ordering::Relaxed));
            udp.tcp_bytes
                .store(tcp, std::sync::atomic::Ordering::Relaxed);
        }
        for h in &mut self.held {
            if h.shut {
                continue;
            }
            let over = self.max_bytes.filter(|max| moved > *max);
            let idle = self
                .idle_timeout
                .filter(|limit| sys::tcp_idle(h.sock.as_raw_fd()).is_ok_and(|idle| idle >= *limit));
            if over.is_none() && idle.is_none() {
                continue;
            }
            // Shutting down our copy shuts the program's: it is one socket.
            let _ = sys::shutdown(h.sock.as_raw_fd());
            h.shut = true;
            let c = &self.connections[h.record];
            let why = match (over, idle) {
                (Some(max), _) => {
                    self.cut_bytes += 1;
                    format!(
                    "connection to {} cut: the run moved {moved} bytes, past its net:limit:bytes of {max}",
                    shown(&c.dest, c.port)
                )
                }
                (None, Some(limit)) => {
                    self.cut_idle += 1;
                    format!(
                        "connection to {} cut: no data for {} ms (idle timeout)",
                        shown(&c.dest, c.port),
                        limit.as_millis()
                    )
                }
                _ => continue,
            };
            self.connections[h.record].reason = Some(why);
        }
        let (keep, gone): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.inode != 0 && open.contains(&h.inode));
        self.held = keep;
        for h in gone {
            self.release(h);
        }
    }

    /// The run is over: final counters, every copy closed, the stub
    /// stopped.
    pub fn finish(&mut self) {
        if let Some(stub) = self.stub.as_mut() {
            stub.stop();
        }
        self.read_counters();
        for h in std::mem::take(&mut self.held) {
            self.release(h);
        }
        for relay in self
            .relays
            .iter_mut()
            .chain(self.relays_unrecorded.iter_mut())
        {
            relay.stop();
        }
        for relay in &self.relays {
            if let Some(c) = self.connections.get_mut(relay.record) {
                c.bytes_out = Some(relay.out.load(std::sync::atomic::Ordering::Relaxed));
                c.bytes_in = Some(relay.back.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
        if let Some(udp) = &self.udp {
            self.cut_bytes += udp.cut.load(std::sync::atomic::Ordering::Relaxed);
        }
        // What the proxy refused (a Host or server name not granted).
        if let Some(hub) = &self.proxy {
            let refusals = hub.refusals.lock().unwrap_or_else(|e| e.into_inner());
            for (record, why) in refusals.iter() {
                if let Some(c) = self.connections.get_mut(*record) {
                    c.allowed = false;
                    c.reason = Some(why.clone());
                }
            }
        }
    }

    fn release(&mut self, h: Held) {
        let c = &self.connections[h.record];
        self.moved_before += c.bytes_out.unwrap_or(0) + c.bytes_in.unwrap_or(0);
    }

    fn read_counters(&mut self) {
        for h in &self.held {
            if let Ok((out, inn)) = sys::tcp_bytes(h.sock.as_raw_fd()) {
                let c = &mut self.connections[h.record];
                c.bytes_out = Some(out);
                c.bytes_in = Some(inn);
            }
        }
    }

    /// Bytes moved by the run's connections so far, both ways.
    fn moved(&self) -> u64 {
        self.udp.as_ref().map_or(0, |u| {
            u.udp_bytes.load(std::sync::atomic::Ordering::Relaxed)
        }) + self.moved_before
            + self
                .held
                .iter()
                .map(|h| {
                    let c = &self.connections[h.record];
                    c.bytes_out.unwrap_or(0) + c.bytes_in.unwrap_or(0)
                })
                .sum::<u64>()
    }

    fn record(&mut self, c: Connection) {
        if self.connections.len() < MAX_RECORDED {
            self.connections.push(c);
        } else if c.allowed {
            self.unrecorded.0 += 1;
        } else {
            self.unrecorded.1 += 1;
        }
    }

    /// The network limits the run reached.
    pub fn limits_reached(&self) -> Vec<warden_core::LimitReached> {
        use warden_core::LimitReached;
        let mut out = Vec::new();
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        if let (Some(max), true) = (self.max_bytes, self.cut_bytes > 0) {
            out.push(LimitReached::new(
                "net_bytes",
                warden_core::human_bytes(max),
                plural(self.cut_bytes, "connection cut", "connections cut"),
                self.cut_bytes,
                false,
            ));
        }
        if let (Some(max), true) = (self.max_connections, self.over_count > 0) {
            out.push(LimitReached::new(
                "net_connections",
                plural(max, "connection", "connections"),
                plural(self.over_count, "connect refused", "connects refused"),
                self.over_count,
                false,
            ));
        }
        if let (Some(idle), true) = (self.idle_timeout, self.cut_idle > 0) {
            out.push(LimitReached::new(
                "net_idle",
                warden_core::human_duration(idle),
                plural(self.cut_idle, "idle connection cut", "idle connections cut"),
                self.cut_idle,
                false,
            ));
        }
        out
    }

    /// The plan's warnings (names that did not resolve, and the like).
    pub fn warnings(&self) -> Vec<String> {
        self.plan.warnings.clone()
    }

    /// One `net` violation per refused attempt (the first few), and one
    /// for the rest.
    pub fn violations(&self) -> Vec<Violation> {
        let refused: Vec<&Connection> = self.connections.iter().filter(|c| !c.allowed).collect();
        let mut out: Vec<Violation> = refused
            .iter()
            .take(MAX_NAMED_REFUSALS)
            .map(|c| Violation {
                kind: "net".into(),
                detail: format!(
                    "{} connection to {} refused: {}",
                    c.proto,
                    shown(&c.dest, c.port),
                    c.reason.as_deref().unwrap_or("not granted")
                ),
            })
            .collect();
        if let Some(stub) = &self.stub {
            let queries = stub.queries.lock().unwrap_or_else(|e| e.into_inner());
            for q in queries
                .iter()
                .filter(|q| !q.answered)
                .take(MAX_NAMED_REFUSALS)
            {
                out.push(Violation {
                    kind: "net".into(),
                    detail: format!(
                        "dns query for {} ({}) refused: {}",
                        warden_core::printable(&q.name),
                        q.qtype,
                        q.reason.unwrap_or("not granted")
                    ),
                });
            }
        }
        let more = (refused.len().saturating_sub(MAX_NAMED_REFUSALS)) as u64 + self.unrecorded.1;
        if more > 0 {
            out.push(Violation {
                kind: "net".into(),
                detail: format!("{more} more connection attempts refused"),
            });
        }
        out
    }
}

fn shown(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The destination of a sockaddr_in or sockaddr_in6, if `raw` is one.
fn inet_destination(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    match family as i32 {
        libc::AF_INET if raw.len() >= 8 => {
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 if raw.len() >= 24 => {
            let octets: [u8; 16] = raw[8..24].try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

/// The inodes of the sockets the processes of the jail hold: `init` and
/// its descendants, found through each task's `children` list.
fn jail_socket_inodes(init: libc::pid_t) -> std::collections::HashSet<u64> {
    let mut inodes = std::collections::HashSet::new();
    let mut pending = vec![init];
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = pending.pop() {
        if !seen.insert(pid) || seen.len() > 65_536 {
            continue;
        }

        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let inode = link
                    .to_str()
                    .and_then(|l| l.strip_prefix("socket:["))
                    .and_then(|l| l.strip_suffix(']'))
                    .and_then(|n| n.parse().ok());
                if let Some(inode) = inode {
                    inodes.insert(inode);
                }
            }
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            pending.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<libc::pid_t>().ok()),
            );
        }
    }
    inodes
}

/// The path of a pathname AF_UNIX address (not an abstract or unnamed
/// one), printable.
fn unix_path(raw: &[u8]) -> Option<String> {
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    if family as i32 != libc::AF_UNIX {
        return None;
    }
    let path = raw.get(2..)?;
    if path.first().is_none_or(|b| *b == 0) {
        return None;
    }
    let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
    Some(String::from_utf8_lossy(&path[..end]).into_owned())
}

/// connect(2) of the program's socket `fd` (the supervisor's copy) to the
/// address bytes `raw` it read, inside the jail's network namespace (the
/// socket's own), with a send timeout so a blocking connect cannot hold
/// the supervisor past `deadline` (or 10 s).
fn connect_inside(fd: RawFd, raw: &[u8], deadline: Instant) -> Result<(), i32> {
    with_send_timeout(fd, deadline, || sys::connect_raw(fd, raw))
}

/// Runs `connect` (on socket `fd`) with the socket's send timeout — which
/// bounds a blocking connect — lowered to what is left before `deadline`.
fn with_send_timeout(
    fd: RawFd,
    deadline: Instant,
    connect: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), i32> {
    let limit = deadline
        .saturating_duration_since(Instant::now())
        .min(CONNECT_TIMEOUT)
        .max(Duration::from_millis(1));
    let before = sys::send_timeout(fd).ok();
    let _ = sys::set_send_timeout(fd, Some(limit));
    let result = connect();
    let _ = sys::set_send_timeout(fd, before.flatten());
    result.map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))
}

/// What a pathname AF_UNIX connect of a jailed task is looked up in: its
/// mount namespace, root, working directory and credentials, taken from
/// /proc while the task waits in the notified call.
struct UnixView {
    mnt: std::fs::File,
    root: std::fs::File,
    cwd: std::fs::File,
    ids: sys::TaskIds,
}

impl UnixView {
    fn of(tid: libc::pid_t) -> std::io::Result<UnixView> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |what: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(format!("/proc/{tid}/{what}"))
        };
        Ok(UnixView {
            // setns wants a real open of the namespace file, not O_PATH.
            mnt: std::fs::File::open(format!("/proc/{tid}/ns/mnt"))?,
            root: open("root")?,
            cwd: open("cwd")?,
            ids: sys::TaskIds::of(tid)?,
        })
    }

    /// Connects the task's socket `fd` (the supervisor's copy of it) to
    /// the address `raw` the task passed, as the task would.
    fn connect(&self, fd: RawFd, raw: &[u8], deadline: Instant) -> Result<(), i32> {
        with_send_timeout(fd, deadline, || {
            sys::connect_unix_as(
                self.mnt.as_raw_fd(),
                self.root.as_raw_fd(),
                self.cwd.as_raw_fd(),
                &self.ids,
                fd,
                raw,
            )
        })
    }
}

/// The thread group (process) of task `tid`, from `/proc/TID/status`;
/// `tid` itself when that cannot be read.
fn thread_group(tid: libc::pid_t) -> libc::pid_t {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// Whether descriptor `fd` of `pid` is close-on-exec (its fdinfo flags).
fn close_on_exec(pid: libc::pid_t, fd: RawFd) -> bool {
    let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
        return true;
    };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i64::from_str_radix(f.trim(), 8).ok())
        .is_none_or(|flags| flags & libc::O_CLOEXEC as i64 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_from_raw_sockaddrs() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[11, 22, 33, 44]);
        assert_eq!(
            inet_destination(&v4),
            Some("11.22.33.44:8080".parse().unwrap())
        );
        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"2a00:1::5".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            inet_destination(&v6),
            Some("[2a00:1::5]:443".parse().unwrap())
        );
        // Short, AF_UNIX and truncated forms are not destinations.
        assert_eq!(inet_destination(&v4[..6]), None);
        assert_eq!(inet_destination(&v6[..20]), None);
        let mut unix = [0u8; 16];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(inet_destination(&unix), None);
        assert_eq!(inet_destination(&[]), None);
    }
}
