//! The monitor's watch: it passes the signals it gets on to the
//! container's first process, and when that ends writes the container's
//! Warden report (`--root/ID/report.json`) and its ledger entry, then ends
//! as the container did, so the shim that reaps it sees the container's
//! own exit status.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use crate::cgroups::Cgroup;
use crate::spec::Bundle;

/// Signals passed on to the container (the rest keep their default).
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGALRM,
];

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset fill a plain sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

pub fn watch(init: i32, bundle: &Bundle, cgroup: &Cgroup, dir: &Path) -> ! {
    let started = Instant::now();
    // The container's stdio is its own: the monitor keeps no copy open
    // (a reader would wait for the monitor's end as well).
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = warden_jail::sys::dup2(null.as_raw_fd(), fd);
        }
    }
    let mut all: Vec<libc::c_int> = FORWARDED.to_vec();
    all.push(libc::SIGCHLD);
    let set = signal_set(&all);
    // SAFETY: set is a valid sigset_t; blocking is per thread (the only one).
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: set is valid; -1 asks for a new descriptor.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    let status = loop {
        // The child may have ended before the signalfd existed. Every child
        // is reaped (a gVisor monitor is a subreaper: runsc's processes come
        // to it); the one watched decides.
        let mut ended = None;
        while let Ok((pid, st)) = warden_jail::sys::waitpid(-1, libc::WNOHANG) {
            if pid <= 0 {
                break;
            }
            if pid == init {
                ended = Some(st);
            }
        }
        if let Some(st) = ended {
            break st;
        }
        if sfd < 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        // SAFETY: signalfd_siginfo is plain data; read fills it.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        // SAFETY: info is valid for its size.
        let n = unsafe {
            libc::read(
                sfd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                std::mem::size_of::<libc::signalfd_siginfo>(),
            )
        };
        if n <= 0 {
            continue;
        }
        let sig = info.ssi_signo as libc::c_int;
        if sig != libc::SIGCHLD {
            let _ = warden_jail::sys::kill(init, sig);
        }
    };
    let report = report(status, started, bundle, cgroup, dir);
    let tmp = dir.join(".report.json.tmp");
    if std::fs::write(&tmp, serde_json::to_vec_pretty(&report).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(crate::state::REPORT));
    }
    end_as(status)
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The container's outcome as a Warden report, with its ledger entry.
fn report(
    status: i32,
    started: Instant,
    bundle: &Bundle,
    cgroup: &Cgroup,
    dir: &Path,
) -> serde_json::Value {
    let (exit_code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    let dir_of = |c: &str| {
        cgroup
            .dirs
            .iter()
            .find(|(cs, _)| cgroup.v2 || cs.iter().any(|n| n == c))
            .map(|(_, d)| d.clone())
    };
    let mem = dir_of("memory");
    let (peak, oom) = match &mem {
        Some(d) if cgroup.v2 => (
            read_number(&d.join("memory.peak")),
            std::fs::read_to_string(d.join("memory.events"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                }),
        ),
        Some(d) => (
            read_number(&d.join("memory.max_usage_in_bytes")),
            std::fs::read_to_string(d.join("memory.oom_control"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                }),
        ),
        None => (None, None),
    };
    let cpu_ns = if cgroup.v2 {
        dir_of("cpu").and_then(|d| {
            std::fs::read_to_string(d.join("cpu.stat"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                        .map(|us| us * 1000)
                })
        })
    } else {
        dir_of("cpuacct").and_then(|d| read_number(&d.join("cpuacct.usage")))
    };
    let oom_killed = oom.unwrap_or(0) > 0 && signal == Some(libc::SIGKILL);
    let status_text = match (exit_code, signal) {
        _ if oom_killed => "oom",
        (Some(_), _) => "exited",
        (_, Some(_)) => "signaled",
        _ => "error",
    };
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut event = serde_json::json!({
        "container": id,
        "bundle": bundle.dir,
        "status": status_text,
        "exit_code": exit_code,
        "signal": signal,
        "wall_ms": started.elapsed().as_millis() as u64,
        "cpu_ms": cpu_ns.map_or(0, |ns| ns / 1_000_000),
        "peak_memory_bytes": peak.unwrap_or(0),
        "backend": crate::monitor::backend_name(bundle),
        "runtime": "warden-oci",
        "args": bundle.spec.process().as_ref().and_then(|p| p.args().clone()).unwrap_or_default(),
    });
    let audit = ledger(&event);
    match audit {
        Ok(a) => {
            event["audit"] =
                serde_json::json!({"origin": a.origin, "index": a.index, "leaf_hash": a.leaf_hash})
        }
        Err(why) => event["warnings"] = serde_json::json!([format!("no ledger entry: {why}")]),
    }
    event
}

/// The node's ledger: the state directory's (`WARDEN_STATE`, else
/// Warden's default for this user).
fn ledger(event: &serde_json::Value) -> Result<warden_core::AuditRef, String> {
    let state = warden_core::state::default_state_dir().ok_or("no state directory")?;
    let mut audit = warden_engine::audit::Audit::open(&state).map_err(|e| e.to_string())?;
    audit
        .record("container", event.clone())
        .map_err(|e| e.to_string())
}

/// Ends as the container did: its exit code, or killed by its signal.
fn end_as(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: resetting a disposition and unblocking take integers
        // and a valid sigset.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let set = signal_set(&[sig]);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        // No core file of the monitor's own.
        let _ = warden_jail::sys::setrlimit(libc::RLIMIT_CORE, 0);
        let _ = warden_jail::sys::kill(warden_jail::sys::getpid(), sig);
        warden_jail::sys::exit_now(128 + sig)
    }
    warden_jail::sys::exit_now(crate::container::exit_code(status))
}

fn backend_name(bundle: &Bundle) -> String {
    bundle
        .spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get("dev.warden.backend").cloned())
        .unwrap_or_else(|| "jail".into())
}
