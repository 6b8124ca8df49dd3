//! Warden's Linux jail backend. Each run gets fresh user, mount, PID,
//! network, IPC, UTS and cgroup namespaces, a minimal root built by
//! pivot_root, a seccomp allowlist whose refusals are reported by name,
//! and cgroup limits (v1 or v2) — with rlimit fallbacks that the report
//! names when no cgroup is available.
//!
//! The backend forks: call [`JailBackend::run`] from a single-threaded
//! process (the `warden` CLI is one).
#![deny(unsafe_code)]

mod cgroup;
mod child;
mod egress;
mod forward;
mod gvisor;
mod gvisor_init;
mod gvisor_net;
mod gvisor_rootfs;
mod idmap;
mod mounts;
mod proxy;
mod reached;
mod relay;
mod seccomp;
mod supervisor;
// The one module that makes raw system calls; every block is justified there.
#[allow(unsafe_code)]
pub mod sys;

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use warden_core::{Backend, BackendError, EnforcementMap, Invocation, Outcome, Status};
use warden_policy::Capability;

use crate::cgroup::{CgroupDriver, JailCgroup};
use crate::child::ChildPlan;
use crate::mounts::{GrantMount, MountPlan, SystemLayout};
use crate::seccomp::SeccompProgram;
use crate::supervisor::{classify, Watch};

pub use crate::cgroup::{parse_mountinfo as cgroup_mounts, CgroupMount};
pub use crate::gvisor::{runsc_path, GvisorBackend};
pub use crate::gvisor_init::{
    run_if_init as run_gvisor_init_if_asked, INIT_FLAG as GVISOR_INIT_FLAG,
};
pub use crate::seccomp::{jump as bpf_jump, stmt as bpf_stmt, SeccompError};

/// Holds (`true`) or releases SIGINT, SIGTERM, SIGHUP and SIGQUIT for the
/// calling thread. A command-line program holds them from its first
/// instruction, so that one arriving before a backend watches for them is
/// kept pending and still ends the run with a report (the jail's signalfd
/// reads it; the WASM backend releases them once its handler is in place);
/// commands that write no report release them.
pub fn hold_termination_signals(hold: bool) -> std::io::Result<()> {
    sys::mask_termination_signals(hold)
}

/// The uid and gid the program has inside the jail.
pub const SANDBOX_ID: u32 = 1000;

/// PATH inside the jail, used to find the program.
pub const JAIL_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The jail backend, prepared once: the seccomp program, the probed system
/// layout and the cgroup driver are reused by every run.
pub struct JailBackend {
    /// Started by root: the program runs as an unprivileged host user and
    /// grants are idmapped trees (see `idmap`).
    root_mode: bool,
    idmaps: std::cell::RefCell<idmap::IdMaps>,
    seccomp: SeccompProgram,
    /// The filter of runs with egress grants, compiled at the first one.
    seccomp_egress: std::cell::OnceCell<SeccompProgram>,
    layout: SystemLayout,
    cgroups: Result<Box<dyn CgroupDriver>, String>,
    /// Groups left by Warden processes killed mid-run are removed once,
    /// after the first run's jail is started (off its critical path).
    stale_cleaned: std::cell::Cell<bool>,
    /// The supervisor's argument strings, blanked in the jail's init.
    argv_area: Option<(usize, usize)>,
    signals: OwnedFd,
}

impl JailBackend {
    pub fn new() -> Result<Self, BackendError> {
        let seccomp = SeccompProgram::jail_default()
            .map_err(|e| BackendError::Unavailable("jail".into(), e.to_string()))?;
        let layout =
            SystemLayout::probe().map_err(|e| BackendError::setup("probe system layout", e))?;
        let cgroups = cgroup::detect();
        let signals = sys::signalfd_for_termination()
            .map_err(|e| BackendError::setup("watch termination signals", e))?;
        Ok(JailBackend {
            root_mode: sys::getuid() == 0,
            idmaps: Default::default(),
            seccomp,
            seccomp_egress: Default::default(),
            layout,
            cgroups,
            stale_cleaned: Default::default(),
            argv_area: sys::argv_area(),
            signals,
        })
    }
}

/// Root mode: maps the jail's uid/gid 1000 to the unprivileged sandbox
/// host id (only a privileged parent may map an id other than its own),
/// then tells the jail's init, which is waiting to take that identity.
fn map_ids(pid: libc::pid_t, notify: &OwnedFd) -> std::io::Result<()> {
    let map = format!("{SANDBOX_ID} {} 1\n", idmap::SANDBOX_HOST_ID);
    std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
    sys::send_fds(notify.as_raw_fd(), &[])
}

/// Rejects capabilities this backend cannot enforce rather than ignoring them.
fn check_supported(cap: &Capability) -> Result<(), BackendError> {
    match cap {
        Capability::FsRead(_) | Capability::FsWrite(_) | Capability::Env(_) => Ok(()),
        // Leased by the engine (checked against `Invocation::secrets`).
        Capability::Secret(_) | Capability::SecretEnv(_) => Ok(()),
        // Native code reads the kernel's clocks and getrandom(2) without
        // asking: granting them changes nothing.
        Capability::ClockRead | Capability::RandomRead => Ok(()),
        c if c.is_limit() => Ok(()),
        // The supervisor makes the program's connections (see `egress`),
        // through its proxy for net:http and net:https (see `proxy`).
        Capability::NetConnect { .. }
        | Capability::NetHttp(_)
        | Capability::NetHttps(_)
        | Capability::NetDns => Ok(()),
        // Relayed by the supervisor (see `relay`): the program's UDP
        // socket stays in the jail's namespace.
        Capability::NetConnectUdp { .. } => Ok(()),
        other => Err(BackendError::Invalid(format!(
            "capability {other} cannot be enforced by the jail backend yet"
        ))),
    }
}

/// Host directories the jail shows read-only at their own path.
pub use crate::mounts::SYSTEM_DIRS;

/// The jail's own directories besides [`SYSTEM_DIRS`], which a grant shown
/// at another path (`--at`) must not shadow either.
const JAIL_OWN_DIRS: &[&str] = &["/proc", "/dev", "/etc"];

fn check_view(inside: &std::path::Path) -> Result<(), BackendError> {
    if !mounts::is_clean_absolute(inside) || inside == std::path::Path::new("/") {
        return Err(BackendError::Invalid(format!(
            "--at {}: the jail can show a grant at an absolute path other than / (it would hide the jail's own root)",
            inside.display()
        )));
    }
    let mut own_dirs = SYSTEM_DIRS.iter().chain(JAIL_OWN_DIRS);
    if let Some(own) = own_dirs.find(|d| inside.starts_with(d)) {
        return Err(BackendError::Invalid(format!(
            "--at {}: it would shadow the jail's own {own}; choose a path outside /usr, /proc, /dev, /etc, /bin, /sbin and /lib*",
            inside.display()
        )));
    }
    Ok(())
}

/// Canonical granted paths, each with whether it is writable.
fn resolve_grants(caps: &[Capability]) -> Result<Vec<(PathBuf, bool)>, BackendError> {
    let mut by_path: Vec<(PathBuf, bool)> = Vec::new();
    for cap in caps {
        check_supported(cap)?;
        let (path, writable) = match cap {
            Capability::FsRead(p) => (p, false),
            Capability::FsWrite(p) => (p, true),
            _ => continue,
        };
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| BackendError::Invalid(format!("grant {cap}: {}: {e}", path.display())))?;
        // A grant names exactly what is mounted: a path that resolves
        // through a symlink elsewhere is refused, not followed.
        if canonical != *path {
            return Err(BackendError::Invalid(format!(
                "grant {cap}: {} resolves through a symlink to {}; grant the real path instead",
                path.display(),
                canonical.display()
            )));
        }
        match by_path.iter_mut().find(|(p, _)| *p == canonical) {
            Some(entry) => entry.1 |= writable,
            None => by_path.push((canonical, writable)),
        }
    }
    Ok(by_path)
}

/// How grants are idmapped: the backend's user namespaces and the host id
/// a grant's owner appears as; `None` (an unprivileged jail): not at all.
type Idmapping<'a> = Option<(&'a std::cell::RefCell<idmap::IdMaps>, u32)>;

/// Checks each granted path and, with `idmapping`, prepares its idmapped
/// tree. Returns the mounts and any warnings for the report.
fn prepare_grants(
    inv: &Invocation,
    idmapping: Idmapping<'_>,
) -> Result<(Vec<GrantMount>, Vec<String>), BackendError> {
    let mut warnings = Vec::new();
    let mut mounts = Vec::new();
    for (path, writable) in resolve_grants(&inv.capabilities)? {
        let inside = inv.inside_path(&path).to_path_buf();
        if inside != path {
            check_view(&inside)?;
        }
        mounts.push(grant_mount(
            idmapping,
            path,
            inside,
            writable,
            &mut warnings,
        )?);
    }
    Ok((mounts, warnings))
}

/// The mount of host `path` at `inside`: checked through a descriptor
/// (no symlink anywhere), and with `idmapping` a detached, idmapped tree
/// made from that same descriptor.
fn grant_mount(
    idmapping: Idmapping<'_>,
    path: PathBuf,
    inside: PathBuf,
    writable: bool,
    warnings: &mut Vec<String>,
) -> Result<GrantMount, BackendError> {
    let invalid =
        |e: std::io::Error| BackendError::Invalid(format!("grant {}: {e}", path.display()));
    let (source, is_dir) = mounts::inspect_source(&path).map_err(invalid)?;
    let detached = match idmapping {
        Some((idmaps, host_id)) => {
            let (tree, idmapped) = idmaps
                .borrow_mut()
                .detached_tree(&source, writable)
                .map_err(|e| BackendError::setup(format!("prepare grant {}", path.display()), e))?;
            if !idmapped {
                warnings.push(format!(
                    "grant {}: its filesystem cannot be idmapped; the program accesses it as host uid {host_id} (others' permissions)",
                    path.display(),
                ));
            }
            Some(tree)
        }
        None => None,
    };
    Ok(GrantMount {
        path,
        inside,
        is_dir,
        writable,
        detached,
    })
}

impl JailBackend {
    fn idmapping(&self) -> Idmapping<'_> {
        self.root_mode
            .then_some((&self.idmaps, idmap::SANDBOX_HOST_ID))
    }
}

fn cstrings(
    items: impl IntoIterator<Item = impl Into<Vec<u8>>>,
) -> Result<Vec<CString>, BackendError> {
    items
        .into_iter()
        .map(|s| {
            CString::new(s).map_err(|_| {
                BackendError::Invalid("argument or variable contains a NUL byte".into())
            })
        })
        .collect()
}

/// Candidate absolute paths for argv[0], looked up on the program's PATH
/// (as execvp would: an empty entry is the working directory).
fn candidates(program: &str, path: &str) -> Vec<Vec<u8>> {
    if program.contains('/') {
        return vec![program.as_bytes().to_vec()];
    }
    path.split(':')
        .map(|dir| match dir {
            "" => program.to_owned().into_bytes(),
            dir => format!("{dir}/{program}").into_bytes(),
        })
        .collect()
}

/// The program's rlimits are set inside its user namespace, where no hard
/// limit can be raised: one above Warden's own is raised here first (root
/// may), or refused with the limit named — not a late "confine program:
/// Operation not permitted".
fn within_hard_limits(rlimits: &[(libc::__rlimit_resource_t, u64)]) -> Result<(), BackendError> {
    for &(resource, value) in rlimits {
        let hard = sys::hard_rlimit(resource)
            .map_err(|e| BackendError::setup("read this process's rlimits", e))?;
        if value > hard && sys::raise_hard_rlimit(resource, value).is_err() {
            let (name, shell) = match resource {
                libc::RLIMIT_NOFILE => ("open-files", "ulimit -Hn"),
                libc::RLIMIT_NPROC => ("pids (RLIMIT_NPROC without a cgroup)", "ulimit -Hu"),
                libc::RLIMIT_FSIZE => ("file-size", "ulimit -Hf"),
                libc::RLIMIT_AS => ("memory (RLIMIT_AS without a cgroup)", "ulimit -Hv"),
                libc::RLIMIT_CPU => ("cpu-time (RLIMIT_CPU without a cgroup)", "ulimit -Ht"),
                _ => ("a limit", "ulimit -H"),
            };
            // RLIMIT_NPROC carries one more than asked, for the jail's init.
            let asked = if resource == libc::RLIMIT_NPROC {
                value - 1
            } else {
                value
            };
            return Err(BackendError::Invalid(format!(
                "{name} {asked} is above this process's hard limit {hard} ({shell}); raising it needs CAP_SYS_RESOURCE"
            )));
        }
    }
    Ok(())
}

struct Limits {
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    enforcement: EnforcementMap,
    warnings: Vec<String>,
}

fn plan_limits(
    inv: &Invocation,
    cgroup: Option<&'static str>,
    cgroup_error: Option<&str>,
) -> Limits {
    let l = &inv.limits;
    let mut rlimits = vec![
        (libc::RLIMIT_FSIZE, l.file_size_bytes),
        (libc::RLIMIT_NOFILE, l.open_files),
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_MEMLOCK, 64 << 10),
    ];
    let mut enforcement = EnforcementMap::new();
    let mut warnings = Vec::new();
    enforcement.insert("wall_time".into(), "supervisor".into());
    enforcement.insert("output".into(), "supervisor".into());
    enforcement.insert("file_size".into(), "rlimit_fsize".into());
    enforcement.insert("open_files".into(), "rlimit_nofile".into());
    enforcement.insert("tmpfs".into(), "tmpfs_size".into());
    match cgroup {
        Some(mechanism) => {
            let m = mechanism.to_string();
            enforcement.insert("memory".into(), m.clone().into());
            enforcement.insert("pids".into(), m.clone().into());
            if l.cpu_time.is_some() {
                enforcement.insert("cpu_time".into(), format!("{m}_accounting").into());
            }
            if l.cpu_percent.is_some() {
                enforcement.insert("cpu_share".into(), m.into());
            }
        }
        None => {
            let why = cgroup_error.unwrap_or("no cgroup available");
            rlimits.push((libc::RLIMIT_AS, l.memory_bytes));
            enforcement.insert("memory".into(), "rlimit_as".into());
            warnings.push(format!(
                "memory limit falls back to RLIMIT_AS (address space per process, not a total) because {why}"
            ));
            // The jail's init runs as the same user: one more than the program's.
            rlimits.push((libc::RLIMIT_NPROC, u64::from(l.pids) + 1));
            enforcement.insert("pids".into(), "rlimit_nproc".into());
            warnings
                .push("pids limit falls back to RLIMIT_NPROC (per user inside the jail)".into());
            if let Some(cpu) = l.cpu_time {
                rlimits.push((libc::RLIMIT_CPU, cpu.as_secs_f64().ceil().max(1.0) as u64));
                enforcement.insert("cpu_time".into(), "rlimit_cpu".into());
                warnings.push(
                    "cpu time limit falls back to RLIMIT_CPU (per process, whole seconds)".into(),
                );
            }
            if l.cpu_percent.is_some() {
                enforcement.insert("cpu_share".into(), "not_enforced".into());
                warnings.push(format!(
                    "cpu share limit cannot be enforced without a cgroup: {why}"
                ));
            }
        }
    }
    Limits {
        rlimits,
        enforcement,
        warnings,
    }
}

/// Warden's own state directories (the compile cache with its key, the
/// key-value stores) that a grant covers: each is hidden under an empty
/// read-only tmpfs, so that `fs:read:/var` does not hand out the key that
/// authenticates machine code. A grant inside one is refused.
fn state_masks(grants: &[GrantMount]) -> Result<Vec<PathBuf>, BackendError> {
    let mut masks: Vec<PathBuf> = Vec::new();
    if grants.is_empty() {
        return Ok(masks);
    }
    for dir in warden_core::state::default_state_dirs() {
        let Ok(dir) = std::fs::canonicalize(&dir) else {
            continue; // not there: nothing to hide
        };
        for g in grants {
            if g.path.starts_with(&dir) {
                return Err(BackendError::Invalid(format!(
                    "grant of {} refused: it is inside Warden's own state directory {}",
                    g.path.display(),
                    dir.display()
                )));
            }
            // Hidden where the program sees it.
            if let Ok(rel) = dir.strip_prefix(&g.path) {
                let inside = g.inside.join(rel);
                if !masks.contains(&inside) {
                    masks.push(inside);
                }
            }
        }
    }
    Ok(masks)
}

impl Backend for JailBackend {
    fn name(&self) -> &'static str {
        "jail"
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        self.run_gated(inv, &mut || Ok(()))
    }

    /// The gate is called once the jail's init exists and builds its root,
    /// before the run's cgroup is handed over (init forks the program only
    /// after that): the caller's work overlaps with the jail's set-up.
    fn run_gated(
        &self,
        inv: &Invocation,
        gate: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Outcome, BackendError> {
        let program = program_of(inv)?;
        let (grants, grant_warnings) = prepare_grants(inv, self.idmapping())?;
        let limits_plan = match &self.cgroups {
            Ok(driver) => plan_limits(inv, Some(driver.mechanism()), None),
            Err(why) => plan_limits(inv, None, Some(why)),
        };
        within_hard_limits(&limits_plan.rlimits)?;
        let mut hidden = state_masks(&grants)?;
        let scratch = scratch_dir(&inv.workdir, &grants);
        let mut grants = grants;
        // A processor's verified code, read-only at /processor: added after
        // the state-directory check, which refuses grants inside it.
        if let Some(code) = &inv.code {
            let inside = PathBuf::from(warden_core::PROCESSOR_DIR);
            let mut warnings = Vec::new();
            grants.push(grant_mount(
                self.idmapping(),
                code.clone(),
                inside.clone(),
                false,
                &mut warnings,
            )?);
            hidden.retain(|h| !h.starts_with(&inside));
        }
        let mut plan = MountPlan::build(
            &self.layout,
            grants,
            &hidden,
            &inv.workdir,
            inv.limits.tmpfs_bytes,
        )
        .map_err(|e| BackendError::setup("plan jail mounts", e))?;
        plan.add_secrets(&leased_secrets(inv)?)
            .map_err(|e| BackendError::setup("plan the secrets' tmpfs", e))?;
        let egress = egress_plan(&inv.capabilities)?;
        if let Some(e) = &egress {
            plan.add_hosts(&e.hosts_lines())
                .map_err(|e| BackendError::setup("plan the jail's /etc/hosts", e))?;
            // The resolver asks the jail's own loopback, which the
            // supervisor hands to its DNS stub.
            plan.add_etc_file("resolv.conf", b"nameserver 127.0.0.1\n")
                .map_err(|e| BackendError::setup("plan the jail's /etc/resolv.conf", e))?;
        }

        let mut limits = limits_plan;
        limits.warnings.extend(grant_warnings);
        self.run_in(inv, program, &plan, limits, scratch, egress, gate)
    }
}

/// The run's egress plan, its names resolved now (from the hosts file
/// named by `WARDEN_EGRESS_HOSTS`, else the system's resolver); `None`
/// without `net:connect` grants.
fn egress_plan(
    capabilities: &[Capability],
) -> Result<Option<warden_egress::EgressPlan>, BackendError> {
    warden_egress::EgressPlan::for_run(capabilities)
        .map_err(|e| BackendError::Invalid(e.to_string()))
}

impl JailBackend {
    /// Creates the run's cgroup (when there is a driver) and sends the
    /// jail's init the files to join it; with no driver, an empty message
    /// lets init go on under rlimits.
    fn create_cgroup(
        &self,
        inv: &Invocation,
        init_pid: libc::pid_t,
        notify: &OwnedFd,
    ) -> Result<Option<Box<dyn JailCgroup>>, BackendError> {
        let socket = std::os::fd::AsRawFd::as_raw_fd(notify);
        let Ok(driver) = &self.cgroups else {
            sys::send_fds(socket, &[]).map_err(|e| BackendError::setup("start jail", e))?;
            return Ok(None);
        };
        let name = format!("{}-{}", sys::getpid(), inv.invocation_id);
        let group = driver
            .create(&name, &inv.limits)
            .map_err(|e| BackendError::setup("create cgroup", e))?;
        let sent = group.join_handles().and_then(|fds| {
            let raw: Vec<_> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
            sys::send_fds(socket, &raw)
        });
        if let Err(e) = sent {
            let _ = sys::kill(init_pid, libc::SIGKILL);
            group.kill_all();
            let _ = group.remove();
            return Err(BackendError::setup("hand the cgroup to the jail", e));
        }
        if !self.stale_cleaned.replace(true) {
            driver.clean_stale();
        }
        Ok(Some(group))
    }

    // The run's prepared parts, each from its own step of `run`.
    #[allow(clippy::too_many_arguments)]
    fn run_in(
        &self,
        inv: &Invocation,
        program: &str,
        plan: &MountPlan,
        limits: Limits,
        scratch: Option<PathBuf>,
        egress: Option<warden_egress::EgressPlan>,
        gate: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Outcome, BackendError> {
        let seccomp = match &egress {
            None => &self.seccomp,
            Some(_) => match self.seccomp_egress.get() {
                Some(program) => program,
                None => {
                    let program = SeccompProgram::jail_with_egress()
                        .map_err(|e| BackendError::Unavailable("jail".into(), e.to_string()))?;
                    self.seccomp_egress.get_or_init(|| program)
                }
            },
        };
        let setup = |what: &'static str| move |e| BackendError::setup(what, e);
        let (stdout_r, stdout_w) = sys::pipe().map_err(setup("create stdout pipe"))?;
        let (stderr_r, stderr_w) = sys::pipe().map_err(setup("create stderr pipe"))?;
        let (status_r, status_w) = sys::pipe().map_err(setup("create status pipe"))?;
        let (alive_r, alive_w) = sys::pipe().map_err(setup("create liveness pipe"))?;
        // The program never gets the caller's stdin itself (it could chmod
        // or reopen the file, or drive the terminal): a pipe fed by a pump
        // thread, or the jail's /dev/null.
        let (stdin_r, stdin_w) = if sys::stdin_is_null() {
            (None, None)
        } else {
            let (r, w) = sys::pipe().map_err(setup("create stdin pipe"))?;
            (Some(r), Some(w))
        };
        let (notify_parent, notify_child) =
            sys::socketpair().map_err(setup("create notify socket"))?;

        let (env, path) = program_env(inv)?;
        let child_plan = ChildPlan {
            mounts: plan,
            argv_area: self.argv_area,
            seccomp,
            // An ordinary user maps its own ids (it may); root's maps are
            // written by the supervisor, to an unprivileged host id.
            own_ids: (!self.root_mode).then(|| {
                (
                    format!("{SANDBOX_ID} {} 1\n", sys::getuid()).into_bytes(),
                    format!("{SANDBOX_ID} {} 1\n", sys::getgid()).into_bytes(),
                )
            }),
            workdir: CString::new(inv.workdir.as_os_str().as_bytes()).map_err(|_| {
                BackendError::Invalid("working directory contains a NUL byte".into())
            })?,
            candidates: cstrings(candidates(program, path))?,
            argv: cstrings(inv.argv.iter().map(|a| a.as_bytes().to_vec()))?,
            envp: cstrings(env)?,
            rlimits: limits.rlimits.clone(),
            stdout: stdout_w,
            stderr: stderr_w,
            status: status_w,
            alive: alive_r,
            stdin: stdin_r,
            parent_fds: vec![
                stdin_w.as_ref().map_or(-1, |w| w.as_raw_fd()),
                stdout_r.as_raw_fd(),
                stderr_r.as_raw_fd(),
                status_r.as_raw_fd(),
                alive_w.as_raw_fd(),
                notify_parent.as_raw_fd(),
                self.signals.as_raw_fd(),
            ],
            notify: notify_child,
            dns_stub: egress.is_some(),
            survey: child::Survey {
                scratch: scratch.clone(),
                file_cap: inv.limits.file_size_bytes,
            },
        };

        // Only the namespaces that must exist at birth: the user namespace
        // (for privilege inside) and the PID namespace (init must be its
        // PID 1). The jail's init unshares the rest itself, so that their
        // cost overlaps with the supervisor's cgroup set-up instead of
        // adding to it.
        let flags = (libc::CLONE_NEWUSER | libc::CLONE_NEWPID) as libc::c_ulong;
        // Without a cgroup, the run's CPU time is what reaping its init adds
        // to this process's children's usage: init reaps every process of
        // its namespace, also those killed when it ends.
        let usage_before = sys::children_usage();
        let started = Instant::now();
        // Root mode: the user namespace is made with the sandbox host user
        // as its owner, because the kernel charges the per-user counters of
        // everything inside (inotify instances and watches, user and mount
        // namespaces) to the owner in the host namespace: owned by root, a
        // program that used up its 128 inotify instances starved host
        // root's own services of them. Root's capabilities are kept for the
        // clone itself.
        let mut plan = Some(child_plan);
        let mut clone = || {
            // SAFETY: Warden's CLI is single-threaded when it runs a jail
            // (see the crate docs), and the child only runs `run_init`,
            // which ends in exec or _exit: it never returns from here.
            #[allow(unsafe_code)]
            let cloned = unsafe { sys::clone_fork(flags) };
            if let Ok(0) = cloned {
                match plan.take() {
                    Some(p) => child::run_init(p),
                    None => sys::exit_now(125),
                }
            }
            cloned
        };
        let cloned = if self.root_mode {
            match sys::as_thread_euid(idmap::SANDBOX_HOST_ID, &mut clone) {
                Ok(cloned) => cloned,
                // Without root again every later step would fail anyway (a
                // jail already made dies with this process: PDEATHSIG).
                Err(e) => return Err(BackendError::setup("switch the namespace owner's uid", e)),
            }
        } else {
            clone()
        };
        // Close the child's ends here so EOF means the jail is gone.
        drop(plan);
        let init_pid = match cloned {
            Ok(pid) => pid,
            Err(e) => return Err(BackendError::setup("create namespaces (clone)", e)),
        };
        let mut stdin_hash = None;
        if let Some(w) = stdin_w {
            match forward::pump_stdin(w) {
                Ok(h) => stdin_hash = Some(h),
                Err(e) => {
                    let _ = sys::kill(init_pid, libc::SIGKILL);
                    let _ = sys::waitpid(init_pid, 0);
                    return Err(BackendError::setup("start the stdin pump", e));
                }
            }
        }

        if self.root_mode {
            if let Err(e) = map_ids(init_pid, &notify_parent) {
                let _ = sys::kill(init_pid, libc::SIGKILL);
                let _ = sys::waitpid(init_pid, 0);
                return Err(BackendError::setup("map the jail's user ids", e));
            }
        }
        // While the jail builds its root: the caller's gate, then the
        // run's cgroup, handed over; the jail joins it before the program
        // is forked, so a closed gate means the program never starts.
        if let Err(why) = gate() {
            let _ = sys::kill(init_pid, libc::SIGKILL);
            let _ = sys::waitpid(init_pid, 0);
            return Err(BackendError::Gate(why));
        }
        let cgroup = match self.create_cgroup(inv, init_pid, &notify_parent) {
            Ok(cg) => cg,
            Err(e) => {
                let _ = sys::kill(init_pid, libc::SIGKILL);
                let _ = sys::waitpid(init_pid, 0);
                return Err(e);
            }
        };
        let cgroup = cgroup.as_deref();
        let observed = supervisor::watch(Watch {
            init_pid,
            cgroup,
            stdout: stdout_r,
            stderr: stderr_r,
            status: status_r,
            notify: notify_parent,
            signals: std::os::fd::AsRawFd::as_raw_fd(&self.signals),
            wall_limit: inv.limits.wall_time,
            cpu_limit: inv.limits.cpu_time,
            output_limit: inv.limits.output_bytes,
            started,
            redactor: redactor(inv),
            leases: lease_watch(inv),
            egress: egress.map(|plan| {
                let mut e = egress::Egress::new(plan);
                e.max_connections = Some(inv.limits.net_connections);
                e.max_bytes = inv.limits.net_bytes;
                e.idle_timeout = inv.limits.net_idle;
                e
            }),
        });
        let _ = sys::waitpid(init_pid, 0);
        drop(alive_w);
        let usage_after = sys::children_usage();

        let counters = cgroup.map(|c| c.limit_counters());
        let oom = counters.is_some_and(|c| c.oom_kills > 0);
        let (mut status, mut exit_code, signal) = classify(&observed, oom);
        let (_, program_rss) = observed.program.map_or((0, 0), |(_, c, r)| (c, r));
        // Every process of the run, reaped through init (the program's own
        // rusage, which init reports, misses what was killed with init).
        let (sampled_cpu_us, sampled_rss) = observed.sampled.unwrap_or((0, 0));
        let run_cpu_us = usage_after
            .0
            .saturating_sub(usage_before.0)
            .max(sampled_cpu_us);
        // The largest single process of the run, when it is larger than any
        // child this process had before (RUSAGE_CHILDREN keeps a maximum).
        let run_rss = if usage_after.1 > usage_before.1 {
            usage_after.1
        } else {
            program_rss
        };
        let cpu_ms = cgroup
            .and_then(|c| c.cpu_usage_ns())
            .map_or(run_cpu_us / 1000, |ns| ns / 1_000_000);
        let peak_memory_bytes = cgroup
            .and_then(|c| c.peak_memory_bytes())
            .unwrap_or(run_rss.max(program_rss).max(sampled_rss));
        // Without a cgroup the CPU-time limit is RLIMIT_CPU: the kernel, not
        // the supervisor, kills (SIGXCPU at the soft limit, SIGKILL at the
        // hard one). A program so killed with its budget spent hit the limit.
        if let (None, Some(limit), Status::Signaled | Status::Violation) =
            (cgroup, inv.limits.cpu_time, status)
        {
            // (Accounting is by ticks: allow for one side's rounding.)
            let spent = Duration::from_micros(run_cpu_us) >= limit.mul_f64(0.95);
            if spent && matches!(signal, Some(libc::SIGKILL | libc::SIGXCPU)) {
                status = Status::CpuLimit;
            }
        }
        let mut error = observed.setup_error.clone();
        if let Some(errno) = observed.exec_errno {
            status = Status::Error;
            let (code, why) = exec_failure(program, errno, path, "jail");
            exit_code = Some(code);
            error = Some(why);
        }
        if status == Status::Error && error.is_none() {
            error = Some(stop_error(
                &observed,
                "the jail's init process died before the program finished",
            ));
        }
        if let Some(cg) = cgroup {
            cg.kill_all();
            let _ = cg.remove();
        }
        let mut warnings = limits.warnings;
        let mut violations = observed.violations();
        let mut connections = Vec::new();
        if let Some(e) = &observed.egress {
            warnings.extend(e.warnings());
            warnings.extend(e.stub_error.clone());
            violations.extend(e.violations());
            connections = e.connections.clone();
            // A refused connection is a violation, as a refused syscall
            // is (the program got EPERM for it).
            let refused = connections.iter().any(|c| !c.allowed) || e.unrecorded.1 > 0;
            if refused && matches!(status, Status::Exited | Status::Signaled) {
                status = Status::Violation;
            }
        }
        warnings.extend(undelivered(&observed));
        let program_signal = observed
            .program
            .and_then(|(st, _, _)| libc::WIFSIGNALED(st).then(|| libc::WTERMSIG(st)));
        let mut limits_reached = reached::limits_reached(&reached::Seen {
            limits: &inv.limits,
            status,
            stopped: observed.stop.is_some() || exit_code.is_none() && signal.is_some(),
            program_oom_killed: oom && program_signal == Some(libc::SIGKILL),
            counters,
            found: observed.found,
            output_written: observed.output_written,
            output_kept: observed.stdout_bytes + observed.stderr_bytes,
            truncated: observed.truncated,
        });
        if let Some(e) = &observed.egress {
            limits_reached.extend(e.limits_reached());
        }
        Ok(Outcome {
            status,
            exit_code,
            signal,
            wall_ms: observed.wall.as_millis() as u64,
            cpu_ms,
            peak_memory_bytes,
            stdout_bytes: observed.stdout_bytes,
            stderr_bytes: observed.stderr_bytes,
            truncated: observed.truncated,
            violations,
            enforcement: std::borrow::Cow::Owned(limits.enforcement),
            warnings,
            error,
            fuel_consumed: None,
            instantiate_us: None,
            logs: Vec::new(),
            logs_truncated: false,
            limits_reached,
            discarded: reached::discarded(scratch.as_deref(), observed.found),
            streams: Some(stream_digests(&observed, stdin_hash.as_ref())),
            module_digest: None,
            connections,
        })
    }
}

/// The program's environment (granted variables, leased secrets given as
/// variables, and PATH, HOME and the locale unless granted), with the PATH
/// its name is looked up on.
fn program_env(inv: &Invocation) -> Result<(Vec<Vec<u8>>, &str), BackendError> {
    // A granted PATH replaces the jail's default instead of following
    // it (two PATH entries would mean different things to different
    // programs).
    let granted_path = inv.env.iter().find(|(k, _)| k == "PATH");
    let path = granted_path.map_or(JAIL_PATH, |(_, v)| v.as_str());
    let mut env: Vec<Vec<u8>> = Vec::with_capacity(inv.env.len() + 4);
    if granted_path.is_none() {
        env.push(format!("PATH={JAIL_PATH}").into_bytes());
    }
    // What ordinary programs expect (git refuses `config --global`
    // without HOME), unless granted: HOME is the sandbox user's home in
    // the generated /etc/passwd, the private writable /tmp; the locale
    // is C.UTF-8 (glibc's, under /usr/lib/locale). LC_ALL would override
    // any granted locale variable, so it is only set when none is.
    const JAIL_HOME: &str = "/tmp";
    const JAIL_LOCALE: &str = "C.UTF-8";
    let granted = |name: &str| inv.env.iter().any(|(k, _)| k == name);
    let granted_locale = inv
        .env
        .iter()
        .any(|(k, _)| k == "LANG" || k.starts_with("LC_"));
    for (name, value, skip) in [
        ("HOME", JAIL_HOME, granted("HOME")),
        ("LANG", JAIL_LOCALE, granted("LANG")),
        ("LC_ALL", JAIL_LOCALE, granted_locale),
    ] {
        if !skip {
            env.push(format!("{name}={value}").into_bytes());
        }
    }
    env.extend(inv.env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()));
    for secret in inv.secrets.iter().filter(|s| s.env) {
        let value = std::str::from_utf8(secret.value.expose())
            .ok()
            .filter(|v| !v.contains('\0'))
            .ok_or_else(|| {
                BackendError::Invalid(format!(
                    "secret:{}:env: its value is not text without NUL bytes, so it cannot be an environment variable (use the file {}/{})",
                    secret.name,
                    warden_core::SECRETS_DIR,
                    secret.name
                ))
            })?;
        env.push(format!("{}={value}", warden_core::secret_env_name(&secret.name)).into_bytes());
    }
    Ok((env, path))
}

/// The program to run (argv[0]), once the invocation's working directory
/// is known to be a clean absolute path.
fn program_of(inv: &Invocation) -> Result<&str, BackendError> {
    let program = inv
        .argv
        .first()
        .ok_or_else(|| BackendError::Invalid("no program to run".into()))?;
    if !mounts::is_clean_absolute(&inv.workdir) {
        return Err(BackendError::Invalid(format!(
            "working directory {} must be an absolute path without . or ..",
            inv.workdir.display()
        )));
    }
    Ok(program)
}

/// The exit status (127 not found, 126 cannot execute) and the message of
/// a failed exec of `program` with `errno`, inside `place` ("jail",
/// "sandbox"), looked up on `path`.
fn exec_failure(program: &str, errno: i32, path: &str, place: &str) -> (i32, String) {
    let err = std::io::Error::from_raw_os_error(errno);
    // Escaped: the name is the caller's, and may hold a newline.
    let shown = program.escape_debug();
    let why = if errno == libc::ENOENT && program.contains('/') {
        format!(
            "{shown}: no such file in the {place} (it shows /usr, /bin, /lib*, /tmp and granted paths; grant its directory with --allow fs:read:DIR)"
        )
    } else if errno == libc::ENOENT {
        format!("{shown}: command not found in the {place} (PATH={path})")
    } else {
        format!("{shown}: cannot execute: {err}")
    };
    (if errno == libc::ENOENT { 127 } else { 126 }, why)
}

/// The error of a run that ended in status `error` without one: why the
/// supervisor stopped it, else `otherwise`.
fn stop_error(observed: &supervisor::Observed, otherwise: &str) -> String {
    match observed.stop {
        Some(supervisor::StopCause::Interrupted(sig)) => format!("interrupted by signal {sig}"),
        Some(supervisor::StopCause::LeaseEnded) => observed
            .lease_ended
            .clone()
            .unwrap_or_else(|| "stopped: a secret's lease ended".into()),
        _ => otherwise.to_string(),
    }
}

/// Warnings for output the caller did not take.
fn undelivered(observed: &supervisor::Observed) -> Vec<String> {
    ["stdout", "stderr"]
        .iter()
        .zip(observed.undelivered)
        .filter(|(_, lost)| *lost > 0)
        .map(|(stream, lost)| {
            format!(
                "{lost} bytes of the program's {stream} were not delivered: the caller closed it or did not read it"
            )
        })
        .collect()
}

/// The secrets to place in the jail: every `secret:` grant must have its
/// lease (the engine makes them), and every name must be a plain file name.
fn leased_secrets(inv: &Invocation) -> Result<Vec<mounts::SecretFile>, BackendError> {
    for cap in &inv.capabilities {
        if let Capability::Secret(name) | Capability::SecretEnv(name) = cap {
            if !inv.secrets.iter().any(|s| &s.name == name) {
                return Err(BackendError::Invalid(format!(
                    "capability {cap} is granted but no lease was made for it"
                )));
            }
        }
    }
    inv.secrets
        .iter()
        .map(|s| {
            let plain = s
                .name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !plain {
                return Err(BackendError::Invalid(format!(
                    "secret name {:?} is not a plain file name",
                    s.name
                )));
            }
            Ok((s.name.clone(), s.value.clone()))
        })
        .collect()
}

/// The redactor of an invocation's leased secrets, if it has any.
/// The lease store of the state directory, to watch the run's leases in;
/// `None` when it holds no secret (or there is no state directory, which a
/// run with leases always has).
fn lease_watch(inv: &Invocation) -> Option<supervisor::LeaseWatch> {
    if inv.secrets.is_empty() {
        return None;
    }
    let state = warden_core::state::default_state_dir()?;
    let store = warden_secrets::LeaseStore::open(&state).ok()?;
    Some(supervisor::LeaseWatch {
        store,
        leases: inv
            .secrets
            .iter()
            .map(|s| (s.name.clone(), s.lease_id.clone()))
            .collect(),
    })
}

fn redactor(inv: &Invocation) -> Option<std::sync::Arc<warden_secrets::Redactor>> {
    (!inv.secrets.is_empty()).then(|| {
        let pairs: Vec<(&str, &[u8])> = inv
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.value.expose()))
            .collect();
        std::sync::Arc::new(warden_secrets::Redactor::new(&pairs))
    })
}

/// Hex SHA-256 of the three streams: stdin as the pump delivered it (the
/// empty string's when stdin was /dev/null), stdout and stderr as counted.
fn stream_digests(
    observed: &supervisor::Observed,
    stdin: Option<&forward::StdinHash>,
) -> warden_core::StreamDigests {
    use sha2::Digest as _;
    let stdin = stdin
        .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let [out, err] = observed.stream_hashes.clone();
    warden_core::StreamDigests {
        stdin: Some(hex(&stdin.finalize())),
        stdout: hex(&out.finalize()),
        stderr: hex(&err.finalize()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The working directory, when it is a scratch directory: inside the
/// jail's own `/tmp` (a private tmpfs) with no grant covering it, so that
/// what the program leaves there is gone with the jail.
fn scratch_dir(workdir: &std::path::Path, grants: &[GrantMount]) -> Option<PathBuf> {
    (workdir.starts_with("/tmp") && !grants.iter().any(|g| workdir.starts_with(&g.inside)))
        .then(|| workdir.to_path_buf())
}
