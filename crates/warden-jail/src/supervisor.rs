//! The supervisor's side of a run: one poll loop over the program's
//! output, the jail's status pipe, the seccomp listener and termination
//! signals, enforcing wall-clock, CPU-time and output limits.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use warden_core::{Status, Violation};

use crate::cgroup::JailCgroup;
use crate::child::{Found, MSG_EXEC_ERROR, MSG_EXITED, MSG_SETUP_ERROR, MSG_SURVEY};
use crate::forward::Forwarder;
use crate::seccomp::syscall_name;
use crate::sys;

/// Why the supervisor stopped the jail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum StopCause {
    Timeout,
    CpuLimit,
    OutputLimit,
    Interrupted(u32),
    /// A lease of one of the run's secrets was revoked, expired or is gone.
    LeaseEnded,
}

/// The leases of a run's secrets, checked while it runs: a lease that
/// ends stops the run, so that the program can read the value no longer.
pub(crate) struct LeaseWatch {
    pub store: warden_secrets::LeaseStore,
    /// (secret name, lease id).
    pub leases: Vec<(String, String)>,
}

/// How often a running jail's leases are checked.
const LEASE_CHECK: Duration = Duration::from_millis(200);

impl LeaseWatch {
    /// Why the first lease that may no longer be used ended, if one did.
    fn ended(&self) -> Option<String> {
        let now = warden_secrets::unix_now();
        self.leases.iter().find_map(|(name, id)| {
            use warden_secrets::LeaseError as E;
            match self.store.check(id, now) {
                Err(e @ (E::Revoked(_) | E::Expired(_) | E::Unknown(_))) => Some(format!(
                    "stopped: the lease of secret {name} ended ({e}), so the program may no longer hold it"
                )),
                // A store that cannot be read now is not a revocation.
                _ => None,
            }
        })
    }
}

pub(crate) struct Watch<'a> {
    pub init_pid: libc::pid_t,
    pub cgroup: Option<&'a dyn JailCgroup>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub status: OwnedFd,
    pub notify: OwnedFd,
    pub signals: RawFd,
    pub wall_limit: Duration,
    pub cpu_limit: Option<Duration>,
    pub output_limit: u64,
    pub started: Instant,
    /// Redacts leased secrets from what reaches the caller.
    pub redactor: Option<std::sync::Arc<warden_secrets::Redactor>>,
    /// The leases of the run's secrets, if it holds any.
    pub leases: Option<LeaseWatch>,
    /// The run's egress, when it has `net:connect` grants.
    pub egress: Option<crate::egress::Egress>,
}

#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub stop: Option<StopCause>,
    /// Why a lease stopped the run ([`StopCause::LeaseEnded`]).
    pub lease_ended: Option<String>,
    pub setup_error: Option<String>,
    pub exec_errno: Option<i32>,
    /// Raw wait status of the program, with its CPU µs and max RSS.
    pub program: Option<(i32, u64, u64)>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// SHA-256 of the stdout and stderr bytes handed on to the caller
    /// (after redaction).
    pub stream_hashes: [sha2::Sha256; 2],
    pub truncated: bool,
    /// Bytes the program wrote to stdout and stderr, within the output
    /// limit or not.
    pub output_written: u64,
    /// Denied syscalls by name with their counts, in order of first
    /// occurrence.
    pub denied: Vec<(String, u64)>,
    /// What the jail's init found when the program had exited.
    pub found: Option<Found>,
    pub wall: Duration,
    /// Bytes of stdout and stderr the program wrote that never reached the
    /// caller (it closed its end, or did not read in time at the end).
    pub undelivered: [u64; 2],
    /// Without a cgroup, at a stop: CPU µs (own and reaped children's) and
    /// resident bytes of the jail's live processes, summed.
    pub sampled: Option<(u64, u64)>,
    /// The run's egress and the connections it made or was refused.
    pub egress: Option<crate::egress::Egress>,
}

/// CPU time (µs, each process's own and its reaped children's) and
/// resident memory (bytes) summed over `init` and its descendants (every
/// process of the jail: orphans are reparented to init), from the host's
/// /proc. `None` if /proc cannot be read.
fn sample_namespace(init: libc::pid_t) -> Option<(u64, u64)> {
    let (ticks, page) = sys::proc_units();
    // (pid, parent, cpu ticks, resident pages) of every process.
    let mut all: Vec<(i64, i64, u64, u64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces and ')'):
        // state is field 3, ppid 4, utime..cstime 14..17, rss 24.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<i64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
        let cpu = (field(14) + field(15) + field(16) + field(17)).max(0) as u64;
        all.push((pid, field(4), cpu, field(24).max(0) as u64));
    }
    let mut children: std::collections::HashMap<i64, Vec<usize>> = Default::default();
    for (i, &(_, ppid, _, _)) in all.iter().enumerate() {
        children.entry(ppid).or_default().push(i);
    }
    let (mut cpu_ticks, mut rss_pages) = (0u64, 0u64);
    let mut todo: Vec<usize> = all
        .iter()
        .position(|&(pid, ..)| pid == i64::from(init))
        .into_iter()
        .collect();
    while let Some(i) = todo.pop() {
        let (pid, _, cpu, rss) = all[i];
        cpu_ticks += cpu;
        rss_pages += rss;
        todo.extend(children.get(&pid).into_iter().flatten().copied());
    }
    Some((cpu_ticks * 1_000_000 / ticks, rss_pages * page))
}

impl Observed {
    /// Counts `bytes` the program wrote to `stream` (0 stdout, 1 stderr)
    /// against `limit`, with `total` written so far on both: returns how
    /// many of them are within the limit, and marks the output truncated
    /// past it.
    fn count_output(&mut self, stream: usize, bytes: &[u8], total: &mut u64, limit: u64) -> u64 {
        let n = bytes.len() as u64;
        let allowed = limit.saturating_sub(*total).min(n);
        *total += n;
        self.output_written = *total;
        if stream == 0 {
            self.stdout_bytes += allowed;
        } else {
            self.stderr_bytes += allowed;
        }
        if allowed < n {
            self.truncated = true;
        }
        allowed
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.denied
            .iter()
            .map(|(name, count)| Violation {
                kind: "syscall".into(),
                detail: if *count == 1 {
                    format!("{name} denied")
                } else {
                    format!("{name} denied ({count} attempts)")
                },
            })
            .collect()
    }
}

/// At most this many distinct unknown syscall numbers are named; the rest are counted.
const MAX_DISTINCT_VIOLATIONS: usize = 64;

struct Stream {
    /// The read end of the program's pipe; `None` once closed.
    fd: Option<OwnedFd>,
    out: Forwarder,
    /// Holds back the tail that could begin a secret split across writes.
    redact: Option<warden_secrets::StreamRedactor>,
}

impl Stream {
    /// Hands `bytes` (the program's, within the output limit) on to the
    /// caller, redacted, and hashes what goes.
    fn deliver(&mut self, bytes: &[u8], hash: &mut sha2::Sha256) {
        use sha2::Digest as _;
        match &mut self.redact {
            Some(r) => {
                let mut out = Vec::with_capacity(bytes.len());
                r.push(bytes, &mut out);
                if !out.is_empty() {
                    hash.update(&out);
                    self.out.offer(out);
                }
            }
            None => {
                hash.update(bytes);
                self.out.offer(bytes.to_vec());
            }
        }
    }

    /// What the redactor still holds, at the end of the stream.
    fn flush(&mut self, hash: &mut sha2::Sha256) {
        use sha2::Digest as _;
        if let Some(r) = &mut self.redact {
            let mut out = Vec::new();
            r.finish(&mut out);
            if !out.is_empty() {
                hash.update(&out);
                self.out.offer(out);
            }
        }
    }
}

/// After the jail is gone, output still queued for a caller that does not
/// read it (a stopped terminal) is given this long, then dropped.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

pub(crate) fn watch(w: Watch<'_>) -> Observed {
    let mut obs = Observed {
        egress: w.egress,
        ..Observed::default()
    };
    let (Ok(out), Ok(err)) = (Forwarder::new(1), Forwarder::new(2)) else {
        let _ = sys::kill(w.init_pid, libc::SIGKILL);
        obs.setup_error = Some("cannot start output threads".into());
        return obs;
    };
    let mut streams = [
        Stream {
            fd: Some(w.stdout),
            out,
            redact: w.redactor.as_ref().map(|r| r.stream()),
        },
        Stream {
            fd: Some(w.stderr),
            out: err,
            redact: w.redactor.as_ref().map(|r| r.stream()),
        },
    ];
    let mut jail_gone_at: Option<Instant> = None;
    for fd in streams.iter().filter_map(|s| s.fd.as_ref()) {
        let _ = sys::set_nonblocking(fd.as_raw_fd());
    }
    let mut status_buf = Vec::new();
    let mut status_open = true;
    let mut notify_sock = Some(w.notify);
    let mut listener: Option<OwnedFd> = None;
    let mut total_output = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut leases_checked = w.started;
    let mut egress_sampled = w.started;
    // The engine caps limits, but a deadline past the clock's range must
    // not panic: treat it as a day from now, re-armed as it approaches.
    let deadline = w
        .started
        .checked_add(w.wall_limit)
        .unwrap_or_else(|| w.started + Duration::from_secs(86_400));

    let kill = |obs: &mut Observed, cause: StopCause| {
        if obs.stop.is_none() {
            obs.stop = Some(cause);
            // Without a cgroup nothing else will know what the processes
            // killed with init had used: the kernel reaps them unaccounted.
            if w.cgroup.is_none() {
                obs.sampled = sample_namespace(w.init_pid);
            }
        }
        let _ = sys::kill(w.init_pid, libc::SIGKILL);
        if let Some(cg) = w.cgroup {
            cg.kill_all();
        }
    };

    while status_open || streams.iter().any(|s| s.fd.is_some()) {
        let now = Instant::now();
        for s in streams.iter_mut() {
            s.out.retry();
            // The caller's end is gone: so is the program's (`| head`).
            if s.out.broken() {
                s.fd = None;
            }
        }
        if let Some(gone) = jail_gone_at {
            if now.duration_since(gone) > DRAIN_GRACE {
                break;
            }
        }
        let mut timeout = if obs.stop.is_some() {
            Duration::from_millis(100)
        } else if now >= deadline {
            kill(&mut obs, StopCause::Timeout);
            continue;
        } else {
            deadline - now
        };
        if let (Some(limit), Some(cg), None) = (w.cpu_limit, w.cgroup, obs.stop) {
            let used = Duration::from_nanos(cg.cpu_usage_ns().unwrap_or(0));
            if used >= limit {
                kill(&mut obs, StopCause::CpuLimit);
                continue;
            }
            // Wake up before the budget could be spent on every core.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            let slice = ((limit - used) / cores)
                .clamp(Duration::from_millis(1), Duration::from_millis(100));
            timeout = timeout.min(slice);
        }
        if let (Some(leases), None) = (&w.leases, obs.stop) {
            if now.duration_since(leases_checked) >= LEASE_CHECK {
                leases_checked = now;
                if let Some(why) = leases.ended() {
                    obs.lease_ended = Some(why);
                    kill(&mut obs, StopCause::LeaseEnded);
                    continue;
                }
            }
            timeout = timeout.min(LEASE_CHECK);
        }

        if let Some(egress) = obs.egress.as_mut().filter(|e| e.holding()) {
            if now.duration_since(egress_sampled) >= crate::egress::SAMPLE_EVERY {
                egress_sampled = now;
                egress.sample(w.init_pid);
            }
            timeout = timeout.min(crate::egress::SAMPLE_EVERY);
        }

        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(6);
        let mut roles: Vec<u8> = Vec::with_capacity(6);
        let mut add = |fd: RawFd, role: u8| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            roles.push(role);
        };
        let mut any_blocked = false;
        for (i, s) in streams.iter().enumerate() {
            // A stream whose caller is not keeping up is left in its pipe
            // (the program blocks on it) until the queue has room.
            if let (Some(fd), false) = (&s.fd, s.out.blocked()) {
                add(fd.as_raw_fd(), i as u8);
            }
            any_blocked |= s.out.blocked();
        }
        if status_open {
            add(w.status.as_raw_fd(), 2);
        }
        if let Some(sock) = &notify_sock {
            add(sock.as_raw_fd(), 3);
        }
        if let Some(l) = &listener {
            add(l.as_raw_fd(), 4);
        }
        add(w.signals, 5);
        if any_blocked {
            timeout = timeout.min(Duration::from_millis(10));
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // Round up so we do not spin on sub-millisecond remainders.
        let ms = if Duration::from_millis(ms as u64) < timeout {
            ms + 1
        } else {
            ms
        };
        if sys::poll(&mut fds, ms).is_err() {
            kill(&mut obs, StopCause::Timeout);
            break;
        }
        for (pfd, role) in fds.iter().zip(roles.iter()) {
            if pfd.revents == 0 {
                continue;
            }
            match role {
                0 | 1 => {
                    let s = &mut streams[*role as usize];
                    let Some(fd) = &s.fd else { continue };
                    match sys::read(fd.as_raw_fd(), &mut buf) {
                        Ok(0) => s.fd = None,
                        Ok(n) => {
                            let allowed = obs.count_output(
                                *role as usize,
                                &buf[..n],
                                &mut total_output,
                                w.output_limit,
                            ) as usize;
                            if allowed > 0 {
                                s.deliver(&buf[..allowed], &mut obs.stream_hashes[*role as usize]);
                            }
                            if allowed < n {
                                kill(&mut obs, StopCause::OutputLimit);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => s.fd = None,
                    }
                }
                2 => match sys::read(w.status.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(_) => {
                        status_open = false;
                        obs.wall = w.started.elapsed();
                        jail_gone_at = Some(Instant::now());
                    }
                    Ok(n) => {
                        if status_buf.len() < 64 * 1024 {
                            status_buf.extend_from_slice(&buf[..n]);
                        }
                    }
                },
                3 => {
                    if let Some(sock) = &notify_sock {
                        match sys::recv_fds(sock.as_raw_fd()) {
                            // The listener, and in a run with egress the
                            // DNS stub's socket the init bound.
                            Ok(Some(mut fds)) if (1..=2).contains(&fds.len()) => {
                                if fds.len() == 2 {
                                    let stub = fds.pop().map(std::net::UdpSocket::from);
                                    if let Some(e) = obs.egress.as_mut() {
                                        e.stub_socket = stub;
                                    }
                                }
                                listener = fds.pop();
                                notify_sock = None;
                            }
                            _ => notify_sock = None,
                        }
                    }
                }
                4 => {
                    if pfd.revents & libc::POLLIN != 0 {
                        if let Some(l) = &listener {
                            handle_notification(l.as_raw_fd(), &mut obs, deadline);
                        }
                    } else {
                        // POLLHUP: no process with the filter is left.
                        listener = None;
                    }
                }
                _ => {
                    if let Some(sig) = sys::read_signal(w.signals) {
                        kill(&mut obs, StopCause::Interrupted(sig));
                    }
                }
            }
        }
    }
    if obs.wall.is_zero() {
        obs.wall = w.started.elapsed();
    }
    if let Some(egress) = obs.egress.as_mut() {
        egress.finish();
    }
    // What is still in the program's pipes (the caller did not read in
    // time, so the loop stopped reading): counted against the output limit
    // all the same, and as not delivered. The jail is gone, so a pipe holds
    // at most its capacity and then reads as closed.
    let mut left_in_pipe = [0u64; 2];
    for (i, s) in streams.iter_mut().enumerate() {
        let Some(fd) = s.fd.take() else { continue };
        while let Ok(n @ 1..) = sys::read(fd.as_raw_fd(), &mut buf) {
            left_in_pipe[i] += obs.count_output(i, &buf[..n], &mut total_output, w.output_limit);
        }
    }
    for (i, mut s) in streams.into_iter().enumerate() {
        s.flush(&mut obs.stream_hashes[i]);
        obs.undelivered[i] = s.out.finish(DRAIN_GRACE) + left_in_pipe[i];
    }
    parse_status(&status_buf, &mut obs);
    obs
}

fn handle_notification(listener: RawFd, obs: &mut Observed, deadline: Instant) {
    let Ok(n) = sys::notify::receive(listener) else {
        return;
    };
    if n.data.arch == crate::seccomp::AUDIT_ARCH_X86_64 && n.data.nr == libc::SYS_connect as i32 {
        if let Some(egress) = obs.egress.as_mut() {
            egress.handle_connect(listener, &n, deadline);
            return;
        }
    }
    let name = syscall_name(n.data.arch, n.data.nr);
    // Real syscalls are always named (there are a few hundred per ABI);
    // only numbers no kernel knows are lumped together past the cap, so
    // junk calls cannot push a dangerous one out of the report.
    let known = !name.starts_with('#');
    let key = match obs.denied.iter().position(|(n, _)| *n == name) {
        Some(i) => Some(i),
        None if known || obs.denied.len() < MAX_DISTINCT_VIOLATIONS => {
            obs.denied.push((name, 0));
            Some(obs.denied.len() - 1)
        }
        None => None,
    };
    let i = key.unwrap_or_else(|| {
        const UNKNOWN: &str = "(unknown syscall numbers)";
        obs.denied
            .iter()
            .position(|(n, _)| n == UNKNOWN)
            .unwrap_or_else(|| {
                obs.denied.push((UNKNOWN.to_string(), 0));
                obs.denied.len() - 1
            })
    });
    obs.denied[i].1 += 1;
    let _ = sys::notify::deny(listener, n.id, libc::EPERM);
}

fn parse_status(mut data: &[u8], obs: &mut Observed) {
    while data.len() >= 5 {
        let tag = data[0];
        let len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let Some(payload) = data.get(5..5 + len) else {
            break;
        };
        match tag {
            MSG_SETUP_ERROR => {
                obs.setup_error = Some(String::from_utf8_lossy(payload).into_owned())
            }
            MSG_EXEC_ERROR if payload.len() >= 4 => {
                obs.exec_errno = Some(i32::from_le_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            MSG_SURVEY => obs.found = Found::decode(payload),
            MSG_EXITED if payload.len() >= 20 => {
                let st = i32::from_le_bytes(payload[0..4].try_into().unwrap_or_default());
                let cpu = u64::from_le_bytes(payload[4..12].try_into().unwrap_or_default());
                let rss = u64::from_le_bytes(payload[12..20].try_into().unwrap_or_default());
                obs.program = Some((st, cpu, rss));
            }
            _ => {}
        }
        data = &data[5 + len..];
    }
}

/// Final status from what was observed. Limits Warden enforced come
/// first, then the kernel's OOM kill, then how the program ended.
pub(crate) fn classify(obs: &Observed, oom_killed: bool) -> (Status, Option<i32>, Option<i32>) {
    let (code, signal) = match obs.program {
        Some((st, _, _)) if libc::WIFEXITED(st) => (Some(libc::WEXITSTATUS(st)), None),
        Some((st, _, _)) if libc::WIFSIGNALED(st) => (None, Some(libc::WTERMSIG(st))),
        _ => (None, None),
    };
    let status = match obs.stop {
        Some(StopCause::Timeout) => return (Status::Timeout, None, Some(libc::SIGKILL)),
        Some(StopCause::CpuLimit) => return (Status::CpuLimit, None, Some(libc::SIGKILL)),
        Some(StopCause::OutputLimit) => return (Status::OutputLimit, None, Some(libc::SIGKILL)),
        Some(StopCause::Interrupted(sig)) => return (Status::Error, None, Some(sig as i32)),
        Some(StopCause::LeaseEnded) => return (Status::Error, None, Some(libc::SIGKILL)),
        // The OOM killer acted inside the run: say so, with the program's
        // own ending (it may have survived the loss of a child).
        None if oom_killed => return (Status::MemoryLimit, code, signal),
        // Output past the limit found in the pipes after the run (the caller
        // was not reading): the limit was passed, the program ended itself.
        None if obs.truncated => return (Status::OutputLimit, code, signal),
        None if obs.setup_error.is_some() => return (Status::Error, None, None),
        None if obs.exec_errno.is_some() => Status::Error,
        None if obs.program.is_none() => return (Status::Error, None, None),
        None if !obs.denied.is_empty() => Status::Violation,
        None if signal.is_some() => Status::Signaled,
        None => Status::Exited,
    };
    (status, code, signal)
}
