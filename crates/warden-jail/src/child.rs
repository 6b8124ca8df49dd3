//! Code that runs inside the jail: the init process (PID 1 of the new PID
//! namespace), which builds the root and reaps, and the program process it
//! forks, which drops every privilege and executes the untrusted program.
//! Both run in a single-threaded child of the supervisor and end in
//! `exec` or `_exit`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::mounts::{self, MountPlan, STAGING};
use crate::seccomp::SeccompProgram;
use crate::sys;

/// Messages from the jail to the supervisor on the status pipe: a tag,
/// a little-endian u32 length, then the payload.
pub(crate) const MSG_SETUP_ERROR: u8 = b'E';
pub(crate) const MSG_EXEC_ERROR: u8 = b'X';
pub(crate) const MSG_EXITED: u8 = b'W';
/// What init found at the end of the run (see [`Survey`]): seven u64s.
pub(crate) const MSG_SURVEY: u8 = b'S';

/// What the jail's init looks at when the program has exited, before the
/// jail is torn down: limits reached that leave no other trace (a full
/// `/tmp`, files cut at the file-size cap by a program that ignores
/// SIGXFSZ, as CPython does) and files left in a scratch working
/// directory, which vanish with the jail.
pub(crate) struct Survey {
    /// The working directory, when it lies in the jail's own `/tmp` and no
    /// grant covers it.
    pub scratch: Option<std::path::PathBuf>,
    /// The file-size limit.
    pub file_cap: u64,
}

/// Entries of /tmp looked at, at most: a program that made millions of
/// empty files does not hold the report back.
const SURVEY_ENTRIES: u32 = 100_000;

/// What the survey found; sent as [`MSG_SURVEY`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// Processes of the run reaped after being killed by SIGXFSZ.
    pub xfsz_kills: u64,
    pub tmp_used: u64,
    pub tmp_total: u64,
    pub tmp_full: bool,
    /// Regular files in /tmp exactly at the file-size cap.
    pub at_cap: u64,
    /// Regular files (and their bytes) in the scratch working directory.
    pub scratch_files: u64,
    pub scratch_bytes: u64,
}

impl Found {
    pub(crate) fn encode(&self) -> Vec<u8> {
        [
            self.xfsz_kills,
            self.tmp_used,
            self.tmp_total,
            u64::from(self.tmp_full),
            self.at_cap,
            self.scratch_files,
            self.scratch_bytes,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
    }

    pub(crate) fn decode(payload: &[u8]) -> Option<Found> {
        let v: Vec<u64> = payload
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let [xfsz_kills, tmp_used, tmp_total, full, at_cap, scratch_files, scratch_bytes] =
            v.as_slice()
        else {
            return None;
        };
        Some(Found {
            xfsz_kills: *xfsz_kills,
            tmp_used: *tmp_used,
            tmp_total: *tmp_total,
            tmp_full: *full != 0,
            at_cap: *at_cap,
            scratch_files: *scratch_files,
            scratch_bytes: *scratch_bytes,
        })
    }
}

impl Survey {
    /// Looks at /tmp (the jail's tmpfs, which the scratch directory is in).
    /// Symlinks are never followed and other filesystems (grants bound
    /// inside /tmp, the entry file) are not entered: only what the run
    /// wrote is counted.
    fn take(&self, xfsz_kills: u64) -> Found {
        use std::os::unix::fs::MetadataExt;
        let mut found = Found {
            xfsz_kills,
            ..Found::default()
        };
        if let Ok((used, total, full)) = sys::fs_usage(c"/tmp") {
            (found.tmp_used, found.tmp_total, found.tmp_full) = (used, total, full);
        }
        let Ok(tmp) = std::fs::symlink_metadata("/tmp") else {
            return found;
        };
        let mut budget = SURVEY_ENTRIES;
        let mut todo = vec![std::path::PathBuf::from("/tmp")];
        while let Some(dir) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let in_scratch = self.scratch.as_ref().is_some_and(|s| dir.starts_with(s));
            for entry in entries.flatten() {
                if budget == 0 {
                    return found;
                }
                budget -= 1;
                // fstatat(AT_SYMLINK_NOFOLLOW) on the directory's descriptor.
                let Ok(meta) = entry.metadata() else { continue };
                if meta.dev() != tmp.dev() {
                    continue;
                }
                let path = entry.path();
                if meta.is_dir() {
                    todo.push(path);
                } else if meta.is_file() {
                    if meta.len() == self.file_cap {
                        found.at_cap += 1;
                    }
                    if in_scratch {
                        found.scratch_files += 1;
                        found.scratch_bytes += meta.len();
                    }
                } else if in_scratch {
                    // A symlink, FIFO or socket left behind is a file too.
                    found.scratch_files += 1;
                }
            }
        }
        found
    }
}

/// Everything the child needs, prepared by the supervisor before forking.
pub(crate) struct ChildPlan<'a> {
    pub mounts: &'a MountPlan,
    /// Where the supervisor's argument strings are (to blank them here).
    pub argv_area: Option<(usize, usize)>,
    pub seccomp: &'a SeccompProgram,
    /// uid_map and gid_map lines the jail writes for itself (ordinary
    /// user); `None` in root mode, where the supervisor writes them.
    pub own_ids: Option<(Vec<u8>, Vec<u8>)>,
    pub workdir: CString,
    /// Absolute paths to try, in order (PATH lookup done in advance).
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// The program's stdin: a pipe from the supervisor, or `None` for the
    /// jail's /dev/null.
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub status: OwnedFd,
    /// Held open by the supervisor for the whole run: a hang-up means it died.
    pub alive: OwnedFd,
    /// The supervisor's own descriptors, inherited by the fork: closed
    /// first thing, or the hang-up above could never be seen and the jail
    /// would hold the supervisor's ends of its own pipes.
    pub parent_fds: Vec<RawFd>,
    pub notify: OwnedFd,
    /// A run with egress: bind the DNS stub's socket and hand it over.
    pub dns_stub: bool,
    /// What init looks at when the program has exited.
    pub survey: Survey,
}

/// Writes one status-pipe message: tag, length, payload (cut at 2 KiB).
pub(crate) fn send(status: RawFd, tag: u8, payload: &[u8]) {
    let payload = &payload[..payload.len().min(2048)];
    let mut msg = Vec::with_capacity(5 + payload.len());
    msg.push(tag);
    msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    msg.extend_from_slice(payload);
    let _ = sys::write_all(status, &msg);
}

fn fail(status: RawFd, what: &str, err: impl std::fmt::Display) -> ! {
    send(status, MSG_SETUP_ERROR, format!("{what}: {err}").as_bytes());
    sys::exit_now(125)
}

/// Entry point of PID 1 in the jail. Never returns.
pub(crate) fn run_init(plan: ChildPlan<'_>) -> ! {
    let status = plan.status.as_raw_fd();
    for fd in plan.parent_fds.iter().filter(|fd| **fd >= 0) {
        // SAFETY: these descriptors belong to the supervisor's side; this
        // forked copy never uses them, and nothing else here owns them.
        #[allow(unsafe_code)]
        unsafe {
            libc::close(*fd);
        }
    }
    // The program may read its PID 1's command line: make it say nothing
    // about the caller's.
    if let Some(area) = plan.argv_area {
        // SAFETY: the area was read from the supervisor's /proc/self/stat
        // before the fork, and this child is single-threaded.
        #[allow(unsafe_code)]
        unsafe {
            sys::scrub_argv(area, b"warden-init");
        }
    }
    // Die with the supervisor; taking PID 1 down takes the whole jail.
    if let Err(e) = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) {
        fail(status, "set parent-death signal", e);
    }
    // The supervisor may have died before the line above took effect.
    if sys::hung_up(plan.alive.as_raw_fd()) {
        sys::exit_now(125);
    }
    // Creating a network namespace is the costliest step here (≈ 0.45 ms):
    // a helper makes it while this process waits for its identity and
    // builds the root. It needs no id map: it has every capability in the
    // new user namespace from birth.
    let net = NetHelper::start();
    if let Err(e) = take_identity(&plan) {
        fail(status, "take the sandbox identity", e);
    }
    // A change of identity clears the parent-death signal: set it again.
    if let Err(e) = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) {
        fail(status, "set parent-death signal", e);
    }
    if sys::hung_up(plan.alive.as_raw_fd()) {
        sys::exit_now(125);
    }
    let mut namespaces = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if net.is_none() {
        namespaces |= libc::CLONE_NEWNET;
    }
    if let Err(e) = sys::unshare(namespaces) {
        fail(status, "create mount, network, IPC and UTS namespaces", e);
    }
    if let Err(e) = sys::sethostname(b"warden") {
        fail(status, "set hostname", e);
    }
    if let Err(msg) = build_root(plan.mounts) {
        fail(status, "build jail root", msg);
    }
    match net {
        Some(helper) => {
            if let Err(e) = helper.join() {
                fail(status, "enter the jail's network namespace", e);
            }
        }
        None => {
            if let Err(e) = sys::loopback_up() {
                fail(status, "bring up loopback", e);
            }
        }
    }
    if let Err(e) = sys::chdir(&plan.workdir) {
        fail(
            status,
            &format!("enter working directory {}", plan.workdir.to_string_lossy()),
            e,
        );
    }
    // The supervisor made the run's cgroup while we built the root, and
    // sends the files to write "0" into to join it (none without cgroups).
    // Nothing runs before this: the program is forked after.
    match sys::recv_fds(plan.notify.as_raw_fd()) {
        Ok(Some(join)) => {
            for fd in &join {
                if let Err(e) = sys::write_all(fd.as_raw_fd(), b"0") {
                    fail(status, "join the run's cgroup", e);
                }
            }
        }
        Ok(None) => sys::exit_now(125),
        Err(e) => fail(status, "receive the run's cgroup", e),
    }
    if let Err(e) = sys::unshare(libc::CLONE_NEWCGROUP) {
        fail(status, "create cgroup namespace", e);
    }
    // SAFETY: this child is single-threaded (forked from a single-threaded
    // supervisor) and the program branch ends in exec or _exit.
    #[allow(unsafe_code)]
    let program = match unsafe { sys::fork() } {
        Ok(0) => run_program(&plan),
        Ok(pid) => pid,
        Err(e) => fail(status, "fork program", e),
    };
    // The program's ends of the pipes must not stay open here.
    let status_fd = plan.status;
    drop(plan.stdin);
    drop(plan.stdout);
    drop(plan.stderr);
    drop(plan.notify);
    drop(plan.alive);
    let status = status_fd.as_raw_fd();
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    let _ = sys::drop_all_capabilities();
    let _ = sys::set_no_new_privs();
    reap(program, status, &plan.survey)
}

/// A short-lived child of init that creates the jail's network namespace
/// (and brings its loopback up) in parallel with init's other work, and
/// sends it to init as a descriptor; init joins it and reaps the helper.
struct NetHelper {
    /// Receives the namespace descriptor (none: the helper failed).
    socket: OwnedFd,
}

impl NetHelper {
    /// `None` if the helper cannot be started (init then makes the
    /// namespace itself).
    fn start() -> Option<NetHelper> {
        let (ours, theirs) = sys::socketpair().ok()?;
        // SAFETY: init is single-threaded; the child only makes system
        // calls on descriptors it owns and ends in _exit.
        #[allow(unsafe_code)]
        match unsafe { sys::fork() } {
            Ok(0) => {
                drop(ours);
                let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                let made = sys::unshare(libc::CLONE_NEWNET)
                    .and_then(|()| sys::loopback_up())
                    .and_then(|()| {
                        std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
                    });
                let _ = match &made {
                    Ok(ns) => sys::send_fds(theirs.as_raw_fd(), &[ns.as_raw_fd()]),
                    Err(_) => sys::send_fds(theirs.as_raw_fd(), &[]),
                };
                sys::exit_now(0);
            }
            Ok(_) => Some(NetHelper { socket: ours }),
            Err(_) => None,
        }
    }

    /// Waits for the namespace and joins it.
    fn join(self) -> std::io::Result<()> {
        let fds = sys::recv_fds(self.socket.as_raw_fd())?.unwrap_or_default();
        let ns = fds.first().ok_or_else(|| {
            std::io::Error::other("the helper could not create the network namespace")
        })?;
        sys::setns(ns.as_raw_fd(), libc::CLONE_NEWNET)
    }
}

/// Becomes uid/gid 1000 inside. An ordinary user maps its own ids to
/// 1000 (a single-id map it may write itself) and already is 1000; in root
/// mode the supervisor writes the maps, says so over the socket, and init
/// switches to 1000 (host "nobody") keeping its capabilities inside the
/// namespace, which has no uid 0.
fn take_identity(plan: &ChildPlan<'_>) -> std::io::Result<()> {
    match &plan.own_ids {
        Some((uid_map, gid_map)) => {
            sys::write_file(c"/proc/self/setgroups", b"deny")?;
            sys::write_file(c"/proc/self/uid_map", uid_map)?;
            sys::write_file(c"/proc/self/gid_map", gid_map)
        }
        None => {
            match sys::recv_fds(plan.notify.as_raw_fd())? {
                Some(_) => {}
                None => sys::exit_now(125),
            }
            sys::switch_ids(crate::SANDBOX_ID, crate::SANDBOX_ID)
        }
    }
}

fn build_root(plan: &MountPlan) -> Result<(), String> {
    let step = |what: &str, r: std::io::Result<()>| r.map_err(|e| format!("{what}: {e}"));
    step(
        "make mounts private",
        sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
    )?;
    let sources = mounts::open_sources(plan)?;
    step(
        "mount root tmpfs",
        sys::mount(
            Some(c"tmpfs"),
            STAGING,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(c"size=4m,nr_inodes=4096,mode=0755"),
        ),
    )?;
    let root: OwnedFd = std::fs::File::open(STAGING.to_str().unwrap_or("/tmp"))
        .map_err(|e| format!("open staging root: {e}"))?
        .into();
    mounts::apply(plan, &sources, root.as_raw_fd())?;
    drop(root);
    drop(sources);
    step("enter staging root", sys::chdir(STAGING))?;
    step("pivot_root", sys::pivot_root_here())?;
    step("detach old root", sys::umount_detach(c"."))?;
    step("enter new root", sys::chdir(c"/"))?;
    step(
        "make root read-only",
        sys::mount(
            None,
            c"/",
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        ),
    )
}

/// Reaps every process of the jail until the program itself exits (and
/// counts those killed by SIGXFSZ, the file-size limit), then reports what
/// the survey finds, the program's status and resource use, and exits: the
/// kernel then kills whatever else is left in the PID namespace.
fn reap(program: libc::pid_t, status: RawFd, survey: &Survey) -> ! {
    let mut xfsz_kills = 0u64;
    loop {
        match sys::waitpid(-1, libc::__WALL) {
            Ok((pid, wstatus)) => {
                if libc::WIFSIGNALED(wstatus) && libc::WTERMSIG(wstatus) == libc::SIGXFSZ {
                    xfsz_kills += 1;
                }
                if pid != program {
                    continue;
                }
                let (cpu_us, maxrss) = sys::children_usage();
                send(status, MSG_SURVEY, &survey.take(xfsz_kills).encode());
                let mut payload = Vec::with_capacity(20);
                payload.extend_from_slice(&wstatus.to_le_bytes());
                payload.extend_from_slice(&cpu_us.to_le_bytes());
                payload.extend_from_slice(&maxrss.to_le_bytes());
                send(status, MSG_EXITED, &payload);
                sys::exit_now(0);
            }
            Err(_) => sys::exit_now(0),
        }
    }
}

/// The program process: drop everything, then exec. Never returns.
fn run_program(plan: &ChildPlan<'_>) -> ! {
    let status = plan.status.as_raw_fd();
    if let Err(e) = drop_privileges_and_filter(plan) {
        fail(status, "confine program", e);
    }
    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = plan
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut errno = libc::ENOENT;
    for path in &plan.candidates {
        let err = sys::execve(path, &argv, &envp);
        let code = err.raw_os_error().unwrap_or(libc::ENOENT);
        // Keep the most telling error: "exists but cannot run" beats "not found".
        if code != libc::ENOENT && code != libc::ENOTDIR {
            errno = code;
        }
    }
    send(status, MSG_EXEC_ERROR, &errno.to_le_bytes());
    sys::exit_now(if errno == libc::ENOENT { 127 } else { 126 })
}

fn drop_privileges_and_filter(plan: &ChildPlan<'_>) -> std::io::Result<()> {
    // A new session: no controlling terminal, so no TIOCSTI into the caller's.
    sys::setsid()?;
    match &plan.stdin {
        Some(pipe) => sys::dup2(pipe.as_raw_fd(), 0)?,
        None => {
            let null = std::fs::File::open("/dev/null")?;
            sys::dup2(null.as_raw_fd(), 0)?;
        }
    }
    sys::dup2(plan.stdout.as_raw_fd(), 1)?;
    sys::dup2(plan.stderr.as_raw_fd(), 2)?;
    // Undo what the supervisor set for itself: blocked termination signals
    // and an ignored SIGPIPE would otherwise survive exec.
    sys::unblock_all_signals();
    // SAFETY: resetting a signal disposition to its default takes integers only.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // The DNS stub's socket, bound here while the port is still ours to
    // bind; the supervisor answers on it. Without it the supervisor binds
    // one itself from inside this namespace (root only), or warns.
    let stub = plan
        .dns_stub
        .then(|| std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 53)).ok())
        .flatten();
    sys::drop_all_capabilities()?;
    sys::set_no_new_privs()?;
    let listener = sys::seccomp_install_with_listener(plan.seccomp.instructions())?;
    // From here on only allowlisted syscalls may be used, or we would block
    // on a supervisor that does not yet hold the listener.
    let handed = [
        listener.as_raw_fd(),
        stub.as_ref().map_or(-1, |s| s.as_raw_fd()),
    ];
    let count = if stub.is_some() { 2 } else { 1 };
    sys::send_fds(plan.notify.as_raw_fd(), &handed[..count])?;
    drop(listener);
    drop(stub);
    // Limits last: an open-files limit below the descriptors Warden itself
    // still holds here must not break the set-up (setrlimit is allowlisted).
    for (resource, value) in &plan.rlimits {
        sys::setrlimit(*resource, *value)?;
    }
    // Every descriptor but stdio closes at exec; the status pipe stays
    // usable until then to report an exec failure.
    sys::cloexec_from(3)
}
