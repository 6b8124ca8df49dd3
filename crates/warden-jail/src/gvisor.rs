//! The gVisor backend: the same invocation as the jail's — its mount plan,
//! grants, limits and environment — written as an OCI bundle and run by
//! `runsc`, whose Sentry (a kernel in user space) answers the program's
//! system calls instead of the host's kernel.
//!
//! Warden's side, per run: a private run directory (0700) with the bundle,
//! runsc's state and the init's status directory; the run's cgroup (memory
//! and CPU of the whole sandbox: the Sentry, the gofer and the program);
//! and a shim process that joins the cgroup, enters a private mount
//! namespace where each grant is attached from the descriptor Warden
//! checked (a detached mount tree: no path is looked up again), puts the
//! leased secrets on a tmpfs there, and execs runsc. The program is the
//! sandbox's first process, as the sandbox user with no capabilities and
//! no_new_privs (Warden's binary goes first only to make a working
//! directory under the sandbox's /tmp: [`crate::gvisor_init`]); how it
//! ended is read from the Sentry's log. The jail's supervisor loop watches
//! the run: output caps, redaction, wall and CPU time, leases, termination
//! signals.

use std::cell::Cell;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use warden_core::{Backend, BackendError, EnforcementMap, Invocation, Outcome, Status};

use crate::cgroup::{CgroupDriver, JailCgroup};
use crate::child::MSG_SETUP_ERROR;
use crate::gvisor_init::{self, Ending, INIT_FLAG, INIT_PATH, STATUS_DIR, STATUS_FILE};
use crate::gvisor_rootfs::RootPlan;
use crate::mounts::{self, GrantMount, SystemLayout};
use crate::supervisor::{classify, Watch};
use crate::{sys, SANDBOX_ID};

/// Host tasks the sandbox itself needs besides the program's processes:
/// the Sentry's and the gofer's threads and, on the ptrace platform, a
/// stub process per address space. The program's own limit is
/// RLIMIT_NPROC inside the Sentry; the cgroup's bound only stops a
/// runaway sandbox.
const SANDBOX_TASKS: u32 = 512;

/// The gVisor backend, prepared once.
pub struct GvisorBackend {
    runsc: PathBuf,
    /// `ptrace` unless `WARDEN_GVISOR_PLATFORM` names another (systrap
    /// where runsc has it; Debian 12's runsc 20221219 has only ptrace and
    /// kvm, and KVM hangs in nested VMs).
    platform: String,
    layout: SystemLayout,
    /// The host cgroup bounding each sandbox; none when rootless and no
    /// cgroup is delegated (limits are then the Sentry's rlimits).
    cgroups: Option<Box<dyn CgroupDriver>>,
    /// Started by an ordinary user: its (uid, gid). The shim then enters
    /// a user namespace of its own (the user as its root) and runsc runs
    /// `--rootless`; the program is the sandbox's uid 0, with no
    /// capabilities, and the host sees only that user.
    rootless: Option<(u32, u32)>,
    signals: OwnedFd,
    /// Warden's own binary: the sandbox's init.
    init: PathBuf,
    /// Where run directories are made.
    runtime_dir: PathBuf,
    stale_cleaned: Cell<bool>,
    /// Grants are idmapped so that their owner is the sandbox user.
    idmaps: std::cell::RefCell<crate::idmap::IdMaps>,
}

fn unavailable(why: impl Into<String>) -> BackendError {
    BackendError::Unavailable("gvisor".into(), why.into())
}

/// runsc: `WARDEN_RUNSC`, else the first on PATH (or /usr/bin, /usr/sbin);
/// the error says which is missing. (warden-oci runs the same runsc.)
pub fn runsc_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("WARDEN_RUNSC").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("WARDEN_RUNSC={}: no such file", path.display()))
        };
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/bin", "/usr/sbin"])
        .map(|d| Path::new(d).join("runsc"))
        .find(|p| p.is_file());
    found.ok_or_else(|| {
        "runsc (gVisor) is not installed: apt-get install runsc, or set WARDEN_RUNSC".to_string()
    })
}

impl GvisorBackend {
    pub fn new() -> Result<Self, BackendError> {
        let rootless = (sys::getuid() != 0).then(|| (sys::getuid(), sys::getgid()));
        let runsc = runsc_path().map_err(unavailable)?;
        let cgroups = match (crate::cgroup::detect(), rootless) {
            (Ok(driver), _) => Some(driver),
            (Err(_), Some(_)) => None,
            (Err(why), None) => {
                return Err(unavailable(format!(
                    "no cgroup to bound the sandbox: {why}"
                )))
            }
        };
        let layout =
            SystemLayout::probe().map_err(|e| BackendError::setup("probe system layout", e))?;
        let signals = sys::signalfd_for_termination()
            .map_err(|e| BackendError::setup("watch termination signals", e))?;
        let init = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| BackendError::setup("find Warden's own binary", e))?;
        let runtime_dir = runtime_dir(rootless)?;
        let platform = std::env::var("WARDEN_GVISOR_PLATFORM")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "ptrace".into());
        if !platform
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(unavailable(format!(
                "WARDEN_GVISOR_PLATFORM={platform:?}: expected a runsc platform name such as ptrace or systrap"
            )));
        }
        Ok(GvisorBackend {
            runsc,
            platform,
            layout,
            cgroups,
            rootless,
            signals,
            init,
            runtime_dir,
            stale_cleaned: Cell::new(false),
            idmaps: std::cell::RefCell::new(crate::idmap::IdMaps::for_file_server(SANDBOX_ID)),
        })
    }
}

/// Where run directories and the shared roots are made: /run/warden/gvisor
/// for root; for an ordinary user `$XDG_RUNTIME_DIR/warden/gvisor`, else
/// `/tmp/warden-gvisor-UID` — which must then be the user's own, mode
/// 0700 (another user could have made it first).
fn runtime_dir(rootless: Option<(u32, u32)>) -> Result<PathBuf, BackendError> {
    use std::os::unix::fs::MetadataExt;
    let dir = match rootless {
        None => PathBuf::from("/run/warden/gvisor"),
        Some((uid, _)) => match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            Some(d) => Path::new(&d).join("warden/gvisor"),
            None => std::env::temp_dir().join(format!("warden-gvisor-{uid}")),
        },
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| BackendError::setup(format!("create {}", dir.display()), e))?;
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| BackendError::setup(format!("inspect {}", dir.display()), e))?;
    if !meta.is_dir() || meta.uid() != sys::getuid() || meta.mode() & 0o077 != 0 {
        return Err(unavailable(format!(
            "{} is not a directory of this user's with mode 0700",
            dir.display()
        )));
    }
    Ok(dir)
}

/// A mount of the bundle.
struct OciMount {
    destination: PathBuf,
    kind: &'static str,
    source: PathBuf,
    options: Vec<String>,
    /// What its mount point in the rootfs is: a directory or a file.
    is_dir: bool,
}

/// A grant, attached by the shim at `at` (inside the run directory) in its
/// own mount namespace.
struct Attach {
    source: AttachSource,
    at: CString,
}

enum AttachSource {
    /// Root: the detached, idmapped tree Warden prepared.
    Tree(OwnedFd),
    /// Rootless: the host path (relative to /), opened by the shim in its
    /// own namespaces with symlinks and `..` refused, as the rootless
    /// jail's init does.
    Beneath(CString),
}

/// The run directory: removed when the run is over.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io_setup(what: &str) -> impl Fn(std::io::Error) -> BackendError + '_ {
    move |e| BackendError::setup(what, e)
}

/// Creates `path` inside the rootfs as a mount point: a directory, or an
/// empty file for a file mount. Parents are made as needed.
fn mount_point(rootfs: &Path, inside: &Path, is_dir: bool) -> std::io::Result<()> {
    let rel = inside.strip_prefix("/").unwrap_or(inside);
    let at = rootfs.join(rel);
    if is_dir {
        std::fs::create_dir_all(&at)
    } else {
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&at)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether `path` lies in a mount other than the rootfs (a mount point
/// cannot be made there from the host).
fn under_a_mount(path: &Path, mounts: &[OciMount]) -> bool {
    mounts
        .iter()
        .any(|m| path.starts_with(&m.destination) && path != m.destination)
}

impl GvisorBackend {
    /// The program's uid and gid inside the sandbox.
    fn sandbox_id(&self) -> u32 {
        if self.rootless.is_some() {
            0
        } else {
            SANDBOX_ID
        }
    }

    /// Writes the bundle (rootfs with its mount points and generated /etc,
    /// config.json) into `run`, and returns the trees the shim attaches.
    #[allow(clippy::too_many_arguments)]
    fn write_bundle(
        &self,
        inv: &Invocation,
        run: &Path,
        grants: &mut [GrantMount],
        hidden: &[PathBuf],
        has_secrets: bool,
        env: &[Vec<u8>],
        path: &str,
        egress: Option<&warden_egress::EgressPlan>,
    ) -> Result<Vec<Attach>, BackendError> {
        std::fs::create_dir_all(run.join("bundle")).map_err(io_setup("create the bundle"))?;
        let mut root = RootPlan::default();
        let mut mounts: Vec<OciMount> = Vec::new();
        let bind = |writable: bool| {
            let access = if writable { "rw" } else { "ro" };
            ["rbind", "nosuid", "nodev", access]
                .map(String::from)
                .to_vec()
        };
        for entry in self.layout.entries() {
            match entry {
                mounts::SystemEntry::Link { link, target } => {
                    root.symlink(Path::new(link), target);
                }
                mounts::SystemEntry::Copy { path, contents } => {
                    root.file(Path::new(path), contents);
                }
                // The small /etc directories are copied into the cached
                // root: each bind costs runsc about a millisecond.
                mounts::SystemEntry::Dir { path } if path.starts_with("/etc/") => {
                    root.tree(Path::new(path), Path::new(path));
                }
                mounts::SystemEntry::Dir { path } | mounts::SystemEntry::File { path } => {
                    mounts.push(OciMount {
                        destination: PathBuf::from(path),
                        kind: "bind",
                        source: PathBuf::from(path),
                        options: bind(false),
                        is_dir: matches!(entry, mounts::SystemEntry::Dir { .. }),
                    });
                }
            }
        }
        for (name, contents) in [
            ("etc/passwd", mounts::PASSWD),
            ("etc/group", mounts::GROUP),
            ("etc/hostname", "warden\n"),
        ] {
            root.file(Path::new(name), contents.as_bytes());
        }
        let mut hosts = mounts::HOSTS.to_string();
        if let Some(plan) = egress {
            hosts.push_str(&plan.hosts_lines());
            // The DNS stub answers on the sandbox's own loopback.
            root.file(Path::new("etc/resolv.conf"), b"nameserver 127.0.0.1\n");
        }
        root.file(Path::new("etc/hosts"), hosts.as_bytes());
        mounts.push(OciMount {
            destination: "/proc".into(),
            kind: "proc",
            source: "proc".into(),
            options: vec!["nosuid".into(), "noexec".into(), "nodev".into()],
            is_dir: true,
        });
        mounts.push(OciMount {
            destination: "/tmp".into(),
            kind: "tmpfs",
            source: "tmpfs".into(),
            options: vec![
                "nosuid".into(),
                "nodev".into(),
                format!("size={}", inv.limits.tmpfs_bytes),
                "mode=1777".into(),
            ],
            is_dir: true,
        });
        // Warden's init, where it makes the working directory: under the
        // sandbox's /tmp (a tmpfs the host cannot populate).
        let with_init = inv.workdir.starts_with("/tmp") && inv.workdir != Path::new("/tmp");
        if with_init {
            let status = run.join("status");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&status)
                .map_err(io_setup("create the status directory"))?;
            if self.rootless.is_none() {
                std::os::unix::fs::chown(&status, Some(SANDBOX_ID), Some(SANDBOX_ID))
                    .map_err(io_setup("give the status directory to the sandbox user"))?;
            }
            mounts.push(OciMount {
                destination: INIT_PATH.into(),
                kind: "bind",
                source: self.init.clone(),
                options: bind(false),
                is_dir: false,
            });
            mounts.push(OciMount {
                destination: STATUS_DIR.into(),
                kind: "bind",
                source: status,
                options: bind(true),
                is_dir: true,
            });
        }
        // Grants, parents before children, from the trees attached in the
        // shim's namespace at run/mnt/N.
        let mut attach = Vec::new();
        grants.sort_by_key(|g| g.inside.components().count());
        std::fs::create_dir(run.join("mnt")).map_err(io_setup("create the grants' directory"))?;
        for (i, g) in grants.iter_mut().enumerate() {
            let at = run.join("mnt").join(i.to_string());
            mount_point(&at, Path::new("/"), g.is_dir)
                .map_err(io_setup("create a grant's attachment point"))?;
            let source = match g.detached.take() {
                Some(tree) => AttachSource::Tree(tree),
                None if self.rootless.is_some() => AttachSource::Beneath(
                    mounts::rel_path(&g.path).map_err(io_setup("name a grant"))?,
                ),
                None => {
                    return Err(BackendError::Invalid(format!(
                        "grant {}: no prepared tree",
                        g.path.display()
                    )))
                }
            };
            attach.push(Attach {
                source,
                at: sys::cstring(at.as_os_str().as_bytes())
                    .map_err(io_setup("name a grant's attachment point"))?,
            });
            mounts.push(OciMount {
                destination: g.inside.clone(),
                kind: "bind",
                source: at,
                options: bind(g.writable),
                is_dir: g.is_dir,
            });
        }
        for dir in hidden {
            mounts.push(OciMount {
                destination: dir.clone(),
                kind: "tmpfs",
                source: "tmpfs".into(),
                options: vec![
                    "ro".into(),
                    "nosuid".into(),
                    "nodev".into(),
                    "noexec".into(),
                    "size=4k".into(),
                    "mode=000".into(),
                ],
                is_dir: true,
            });
        }
        if has_secrets {
            mounts.push(OciMount {
                destination: warden_core::SECRETS_DIR.into(),
                kind: "bind",
                source: run.join("secrets"),
                options: bind(false),
                is_dir: true,
            });
            std::fs::create_dir(run.join("secrets"))
                .map_err(io_setup("create the secrets' mount point"))?;
        }
        // Mount points the rootfs must hold (a read-only root cannot grow
        // them later); those inside another mount are that mount's.
        for m in &mounts {
            if !under_a_mount(&m.destination, &mounts) {
                root.mount_point(&m.destination, m.is_dir);
            }
        }
        let is_a_mount = mounts.iter().any(|m| m.destination == inv.workdir);
        if inv.workdir != Path::new("/") && !is_a_mount && !under_a_mount(&inv.workdir, &mounts) {
            root.owned_dir(&inv.workdir, self.sandbox_id());
        }
        let rootfs = root
            .materialize(&self.runtime_dir.join("rootfs"))
            .map_err(io_setup("build the sandbox's root"))?;

        let l = &inv.limits;
        let rlimit = |kind: &str, value: u64| json!({"type": kind, "hard": value, "soft": value});
        let mut args: Vec<String> = Vec::new();
        if with_init {
            args.extend([
                INIT_PATH.to_string(),
                INIT_FLAG.to_string(),
                inv.workdir.display().to_string(),
                path.to_string(),
            ]);
        }
        args.extend(inv.argv.iter().cloned());
        let cwd = if with_init {
            PathBuf::from("/")
        } else {
            inv.workdir.clone()
        };
        let env: Vec<String> = env
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        let none: [&str; 0] = [];
        let mut rlimits = vec![
            // Per user inside the Sentry: every process of the program,
            // the first one included.
            rlimit("RLIMIT_NPROC", u64::from(l.pids)),
            rlimit("RLIMIT_FSIZE", l.file_size_bytes),
            rlimit("RLIMIT_NOFILE", l.open_files),
            rlimit("RLIMIT_CORE", 0),
            rlimit("RLIMIT_MEMLOCK", 64 << 10),
        ];
        if self.cgroups.is_none() {
            // No host cgroup: memory and CPU time are the Sentry's
            // rlimits, per process (as for the rootless jail).
            rlimits.push(rlimit("RLIMIT_AS", l.memory_bytes));
            if let Some(cpu) = l.cpu_time {
                rlimits.push(rlimit(
                    "RLIMIT_CPU",
                    cpu.as_secs_f64().ceil().max(1.0) as u64,
                ));
            }
        }
        // With egress the sandbox uses the network namespace runsc runs in
        // (the shim's, see gvisor_net); without, one of its own.
        let namespaces: Vec<serde_json::Value> = ["pid", "ipc", "uts", "mount"]
            .into_iter()
            .chain(egress.is_none().then_some("network"))
            .map(|kind| json!({ "type": kind }))
            .collect();
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": self.sandbox_id(), "gid": self.sandbox_id()},
                "args": args,
                "env": env,
                "cwd": cwd,
                "noNewPrivileges": true,
                "capabilities": {
                    "bounding": none, "effective": none, "permitted": none,
                    "inheritable": none, "ambient": none
                },
                "rlimits": rlimits,
            },
            "root": {"path": rootfs, "readonly": true},
            "hostname": "warden",
            "mounts": mounts.iter().map(|m| json!({
                "destination": m.destination,
                "type": m.kind,
                "source": m.source,
                "options": m.options,
            })).collect::<Vec<_>>(),
            "linux": {
                "namespaces": namespaces
            }
        });
        let text = serde_json::to_vec(&config)
            .map_err(|e| BackendError::setup("write config.json", std::io::Error::other(e)))?;
        std::fs::write(run.join("bundle/config.json"), text)
            .map_err(io_setup("write config.json"))?;
        Ok(attach)
    }
}

/// What the shim does between fork and exec of runsc, with what it needs
/// prepared before the fork.
struct Shim<'a> {
    joins: Vec<OwnedFd>,
    attach: &'a [Attach],
    secrets_dir: Option<CString>,
    secrets: &'a [(CString, &'a [u8])],
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    status: OwnedFd,
    runsc: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    /// Rootless: the user's (uid, gid), its namespace's root.
    userns: Option<(u32, u32)>,
    /// Who owns the leased secrets' files inside.
    sandbox_id: u32,
    /// With egress: a network namespace of its own whose loopback carries
    /// these addresses; the shim says "ready" and waits for "go" (the
    /// supervisor listens there in between).
    network: Option<(Vec<std::net::IpAddr>, OwnedFd, OwnedFd)>,
}

impl Shim<'_> {
    /// Runs in the forked child: never returns.
    fn run(self) -> ! {
        let status = self.status.as_raw_fd();
        let fail = |what: &str, e: std::io::Error| -> ! {
            crate::child::send(status, MSG_SETUP_ERROR, format!("{what}: {e}").as_bytes());
            sys::exit_now(125)
        };
        for join in &self.joins {
            if let Err(e) = sys::write_all(join.as_raw_fd(), b"0") {
                fail("join the run's cgroup", e);
            }
        }
        if let Err(e) = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) {
            fail("tie runsc to Warden", e);
        }
        if let Some((uid, gid)) = self.userns {
            let mapped = sys::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS)
                .and_then(|()| sys::write_file(c"/proc/self/setgroups", b"deny"))
                .and_then(|()| {
                    sys::write_file(c"/proc/self/uid_map", format!("0 {uid} 1").as_bytes())
                })
                .and_then(|()| {
                    sys::write_file(c"/proc/self/gid_map", format!("0 {gid} 1").as_bytes())
                });
            if let Err(e) = mapped {
                fail("create the sandbox's user and mount namespaces", e);
            }
        } else if let Err(e) = sys::unshare(libc::CLONE_NEWNS) {
            fail("create the sandbox's mount namespace", e);
        }
        if let Some((addrs, ready, go)) = &self.network {
            if let Err(e) = sys::unshare(libc::CLONE_NEWNET) {
                fail("create the sandbox's network namespace", e);
            }
            if let Err(e) = sys::loopback_up() {
                fail("bring the sandbox's loopback up", e);
            }
            for ip in addrs {
                if let Err(e) = sys::add_loopback_address(*ip) {
                    fail("put a granted address on the sandbox's loopback", e);
                }
            }
            // Every other destination answered on the loopback, where the
            // supervisor sees the attempt (gvisor_net's watcher).
            if let Err(e) = sys::route_everything_to_loopback() {
                fail("route the sandbox's other destinations to its loopback", e);
            }
            let mut b = [0u8; 1];
            let told = sys::write_all(ready.as_raw_fd(), b"R")
                .and_then(|()| sys::read(go.as_raw_fd(), &mut b));
            if !matches!(told, Ok(1)) || b[0] != b'G' {
                fail(
                    "wait for the forwarder",
                    std::io::Error::other("the supervisor did not answer"),
                );
            }
        }
        if let Err(e) = sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None) {
            fail("make the mount namespace private", e);
        }
        for a in self.attach {
            let onto = match std::fs::File::open(std::ffi::OsStr::from_bytes(a.at.as_bytes())) {
                Ok(f) => f,
                Err(e) => fail("open a grant's attachment point", e),
            };
            let opened;
            let tree = match &a.source {
                AttachSource::Tree(tree) => tree,
                AttachSource::Beneath(rel) => {
                    opened = std::fs::File::open("/").and_then(|root| {
                        if rel.is_empty() {
                            return sys::open_tree_clone_at(root.as_raw_fd(), c"");
                        }
                        let source = sys::open_beneath(root.as_raw_fd(), rel, libc::O_PATH as u64)?;
                        sys::open_tree_clone_at(source.as_raw_fd(), c"")
                    });
                    match &opened {
                        Ok(t) => t,
                        Err(e) => fail(
                            "open a grant",
                            std::io::Error::from_raw_os_error(
                                e.raw_os_error().unwrap_or(libc::EIO),
                            ),
                        ),
                    }
                }
            };
            if let Err(e) = sys::move_mount_onto(tree.as_raw_fd(), onto.as_raw_fd()) {
                fail("attach a grant", e);
            }
        }
        if let Some(dir) = &self.secrets_dir {
            let bytes: usize = self.secrets.iter().map(|(_, v)| v.len()).sum();
            let size = (bytes + 4096 * (self.secrets.len() + 1)).next_multiple_of(4096);
            let options = format!(
                "size={size},nr_inodes={},mode=0500,uid={id},gid={id}",
                self.secrets.len() + 4,
                id = self.sandbox_id
            );
            let options = match sys::cstring(options) {
                Ok(o) => o,
                Err(e) => fail("size the secrets' tmpfs", e),
            };
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if let Err(e) = sys::mount(Some(c"tmpfs"), dir, Some(c"tmpfs"), flags, Some(&options)) {
                fail("mount the secrets' tmpfs", e);
            }
            for (path, value) in self.secrets {
                let written = std::fs::write(std::ffi::OsStr::from_bytes(path.as_bytes()), value)
                    .and_then(|()| {
                        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()));
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o400))?;
                        std::os::unix::fs::chown(p, Some(self.sandbox_id), Some(self.sandbox_id))
                    });
                if let Err(e) = written {
                    fail("write a leased secret", e);
                }
            }
        }
        let stdin = match &self.stdin {
            Some(fd) => Ok(fd.as_raw_fd()),
            None => std::fs::File::open("/dev/null").map(|f| {
                let fd = f.as_raw_fd();
                std::mem::forget(f);
                fd
            }),
        };
        let dups = stdin
            .and_then(|fd| sys::dup2(fd, 0))
            .and_then(|()| sys::dup2(self.stdout.as_raw_fd(), 1))
            .and_then(|()| sys::dup2(self.stderr.as_raw_fd(), 2))
            .and_then(|()| sys::dup2(status, 3))
            .and_then(|()| sys::cloexec_from(4));
        if let Err(e) = dups {
            fail("hand runsc its standard streams", e);
        }
        sys::unblock_all_signals();
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let err = sys::execve(&self.runsc, &ptrs(&self.argv), &ptrs(&self.env));
        fail("start runsc", err)
    }
}

impl Backend for GvisorBackend {
    fn name(&self) -> &'static str {
        "gvisor"
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        self.run_gated(inv, &mut || Ok(()))
    }

    fn run_gated(
        &self,
        inv: &Invocation,
        gate: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Outcome, BackendError> {
        let program = crate::program_of(inv)?;
        // Rootless: no idmapped trees (they need root); the shim opens
        // each grant in its own namespaces.
        let idmapping = self
            .rootless
            .is_none()
            .then_some((&self.idmaps, SANDBOX_ID));
        let (mut grants, mut grant_warnings) = crate::prepare_grants(inv, idmapping)?;
        let mut hidden = crate::state_masks(&grants)?;
        if let Some(code) = &inv.code {
            let inside = PathBuf::from(warden_core::PROCESSOR_DIR);
            grants.push(crate::grant_mount(
                idmapping,
                code.clone(),
                inside.clone(),
                false,
                &mut grant_warnings,
            )?);
            hidden.retain(|h| !h.starts_with(&inside));
        }
        let secrets = crate::leased_secrets(inv)?;
        let egress = crate::egress_plan(&inv.capabilities)?;
        if egress.is_some() && self.rootless.is_some() {
            return Err(BackendError::Invalid(
                "network grants under the gvisor backend need root: the supervisor listens inside the sandbox's network namespace, which an ordinary user cannot enter (run as root, or on the jail)".into(),
            ));
        }
        let endpoints = match &egress {
            None => Vec::new(),
            Some(plan) => plan.endpoints().map_err(|why| {
                BackendError::Invalid(format!(
                    "{why} cannot be served under the gvisor backend: its forwarder listens on each granted port (grant a port, TCP for wildcard hosts, or run on the jail)"
                ))
            })?,
        };
        let (env, path) = crate::program_env(inv)?;

        let name = format!("{}-{}", sys::getpid(), inv.invocation_id);
        let run = RunDir(self.runtime_dir.join(&name));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&run.0)
            .map_err(io_setup("create the run directory"))?;
        let attach = self.write_bundle(
            inv,
            &run.0,
            &mut grants,
            &hidden,
            !secrets.is_empty(),
            &env,
            path,
            egress.as_ref(),
        )?;
        let secret_paths: Vec<(CString, &[u8])> = secrets
            .iter()
            .map(|(n, v)| {
                sys::cstring(run.0.join("secrets").join(n).as_os_str().as_bytes())
                    .map(|p| (p, v.expose()))
            })
            .collect::<Result<_, _>>()
            .map_err(io_setup("name a secret's file"))?;

        let setup = |what: &'static str| move |e| BackendError::setup(what, e);
        let (stdout_r, stdout_w) = sys::pipe().map_err(setup("create stdout pipe"))?;
        let (stderr_r, stderr_w) = sys::pipe().map_err(setup("create stderr pipe"))?;
        let (status_r, status_w) = sys::pipe().map_err(setup("create status pipe"))?;
        let (stdin_r, stdin_w) = if sys::stdin_is_null() {
            (None, None)
        } else {
            let (r, w) = sys::pipe().map_err(setup("create stdin pipe"))?;
            (Some(r), Some(w))
        };
        // The jail's init hands the supervisor a seccomp listener on this
        // socket; runsc has none: its end is closed at once.
        let (notify, _) = sys::socketpair().map_err(setup("create notify socket"))?;
        let cstr = |s: &[u8]| {
            sys::cstring(s.to_vec()).map_err(|_| BackendError::Invalid("a path holds a NUL".into()))
        };
        let state = run.0.join("state");
        let log = run.0.join("runsc.log");
        let boot_log = run.0.join("boot.log");
        let mut boot_log_flag = b"--debug-log=".to_vec();
        boot_log_flag.extend_from_slice(boot_log.as_os_str().as_bytes());
        let platform = format!("--platform={}", self.platform);
        let bundle = run.0.join("bundle");
        let mut flags: Vec<&[u8]> = vec![
            self.runsc.as_os_str().as_bytes(),
            b"--root",
            state.as_os_str().as_bytes(),
            b"--log",
            log.as_os_str().as_bytes(),
            &boot_log_flag,
            b"--debug-command=boot",
            if egress.is_some() {
                b"--network=host"
            } else {
                b"--network=none"
            },
            platform.as_bytes(),
            b"--ignore-cgroups",
        ];
        if self.rootless.is_some() {
            flags.push(b"--rootless");
        }
        flags.extend([
            b"run".as_slice(),
            b"--bundle",
            bundle.as_os_str().as_bytes(),
            name.as_bytes(),
        ]);
        let argv: Vec<CString> = flags.into_iter().map(cstr).collect::<Result<_, _>>()?;
        let secrets_dir = if secrets.is_empty() {
            None
        } else {
            Some(cstr(run.0.join("secrets").as_os_str().as_bytes())?)
        };
        let runsc = cstr(self.runsc.as_os_str().as_bytes())?;
        let runsc_env = vec![cstr(b"PATH=/usr/sbin:/usr/bin:/sbin:/bin")?];
        let (network, handshake) = if egress.is_some() {
            let (ready_r, ready_w) = sys::pipe().map_err(setup("create the forwarder's pipe"))?;
            let (go_r, go_w) = sys::pipe().map_err(setup("create the forwarder's pipe"))?;
            (
                Some((crate::gvisor_net::addresses(&endpoints), ready_w, go_r)),
                Some((ready_r, go_w)),
            )
        } else {
            (None, None)
        };
        // The sandbox's host cgroup, made last (every later failure removes
        // it): memory and CPU of everything runsc starts; pids only as a
        // backstop (see SANDBOX_TASKS).
        let mut host_limits = inv.limits.clone();
        host_limits.pids = inv.limits.pids.saturating_add(SANDBOX_TASKS);
        let group: Option<Box<dyn JailCgroup>> = match &self.cgroups {
            Some(driver) => Some(
                driver
                    .create(&name, &host_limits)
                    .map_err(io_setup("create cgroup"))?,
            ),
            None => None,
        };
        let remove_group = |g: Option<&dyn JailCgroup>| {
            if let Some(g) = g {
                g.kill_all();
                let _ = g.remove();
            }
        };
        if let (Some(driver), false) = (&self.cgroups, self.stale_cleaned.replace(true)) {
            driver.clean_stale();
        }
        let joins = match group.as_ref().map(|g| g.join_handles()).transpose() {
            Ok(j) => j.unwrap_or_default(),
            Err(e) => {
                remove_group(group.as_deref());
                return Err(BackendError::setup("open the cgroup to join", e));
            }
        };
        let shim = Shim {
            joins,
            attach: &attach,
            secrets_dir,
            secrets: &secret_paths,
            stdin: stdin_r,
            stdout: stdout_w,
            stderr: stderr_w,
            status: status_w,
            runsc,
            argv,
            env: runsc_env,
            network,
            userns: self.rootless,
            sandbox_id: self.sandbox_id(),
        };

        if let Err(why) = gate() {
            remove_group(group.as_deref());
            return Err(BackendError::Gate(why));
        }
        let started = Instant::now();
        let usage_before = sys::children_usage();
        // SAFETY: the CLI runs a backend single-threaded (crate docs); the
        // child runs only `Shim::run`, which execs runsc or _exits.
        #[allow(unsafe_code)]
        let forked = unsafe { sys::fork() };
        let runsc_pid = match forked {
            Ok(0) => shim.run(),
            Ok(pid) => pid,
            Err(e) => {
                remove_group(group.as_deref());
                return Err(BackendError::setup("start runsc (fork)", e));
            }
        };
        drop(shim);
        let mut net = None;
        if let (Some((ready, go)), Some(plan)) = (handshake, egress) {
            match self.start_network(runsc_pid, &ready, &go, plan, inv, &endpoints) {
                Ok(n) => net = Some(n),
                Err(e) => {
                    let _ = sys::kill(runsc_pid, libc::SIGKILL);
                    remove_group(group.as_deref());
                    let _ = sys::waitpid(runsc_pid, 0);
                    return Err(e);
                }
            }
        }
        let mut stdin_hash = None;
        if let Some(w) = stdin_w {
            match crate::forward::pump_stdin(w) {
                Ok(h) => stdin_hash = Some(h),
                Err(e) => {
                    let _ = sys::kill(runsc_pid, libc::SIGKILL);
                    remove_group(group.as_deref());
                    let _ = sys::waitpid(runsc_pid, 0);
                    return Err(BackendError::setup("start the stdin pump", e));
                }
            }
        }
        let mut observed = crate::supervisor::watch(Watch {
            init_pid: runsc_pid,
            cgroup: group.as_deref(),
            stdout: stdout_r,
            stderr: stderr_r,
            status: status_r,
            notify,
            signals: self.signals.as_raw_fd(),
            wall_limit: inv.limits.wall_time,
            cpu_limit: inv.limits.cpu_time,
            output_limit: inv.limits.output_bytes,
            started,
            redactor: crate::redactor(inv),
            leases: crate::lease_watch(inv),
            egress: None,
        });
        let runsc_status = sys::waitpid(runsc_pid, 0).map(|(_, st)| st).ok();
        let sentry_status = std::fs::read_to_string(&boot_log)
            .ok()
            .and_then(|t| gvisor_init::parse_boot_log(&t));
        let init_said = std::fs::read_to_string(run.0.join("status").join(STATUS_FILE))
            .ok()
            .and_then(|t| gvisor_init::parse_status(&t));
        match (sentry_status, init_said) {
            // Init's record counts only where the Sentry agrees that it
            // ended as init does after a failed exec (127) or set-up (125).
            (Some(st), Some(Ending::Exec(errno))) if st == 127 << 8 => {
                observed.program = Some((st, 0, 0));
                observed.exec_errno = Some(errno);
            }
            (Some(st), Some(Ending::Setup(why))) if st == 125 << 8 => {
                observed.setup_error = Some(format!("the sandbox's init: {why}"));
            }
            (Some(st), _) => observed.program = Some((st, 0, 0)),
            // runsc refused to start the program: its own error says why.
            (None, _) => {
                if let Some(errno) = runsc_exec_error(&log) {
                    observed.program = Some((127 << 8, 0, 0));
                    observed.exec_errno = Some(errno);
                }
            }
        }
        let usage_after = sys::children_usage();
        let counters = group
            .as_ref()
            .map(|g| g.limit_counters())
            .unwrap_or_default();
        let oom = counters.oom_kills > 0;
        // No ending from init: the sandbox went down with the program in
        // it — under the OOM killer (a memory limit, said as such), or
        // runsc failed.
        if observed.program.is_none() && observed.setup_error.is_none() && observed.stop.is_none() {
            if oom {
                observed.program = Some((libc::SIGKILL, 0, 0));
            } else {
                observed.setup_error = Some(runsc_failure(runsc_status, &log));
            }
        }
        let (mut status, mut exit_code, signal) = classify(&observed, oom);
        // Without a cgroup: what runsc and the sandbox it reaped used (the
        // largest single process's peak — the Sentry's, the program's
        // memory included).
        let cpu_ms = match &group {
            Some(g) => g.cpu_usage_ns().map_or(0, |ns| ns / 1_000_000),
            None => usage_after.0.saturating_sub(usage_before.0) / 1000,
        };
        let peak_memory_bytes = match &group {
            Some(g) => g.peak_memory_bytes().unwrap_or(0),
            None if usage_after.1 > usage_before.1 => usage_after.1,
            None => 0,
        };
        remove_group(group.as_deref());
        let mut error = observed.setup_error.clone();
        if let Some(errno) = observed.exec_errno {
            status = Status::Error;
            let (code, why) = crate::exec_failure(program, errno, path, "sandbox");
            exit_code = Some(code);
            error = Some(why);
        }
        if status == Status::Error && error.is_none() {
            error = Some(crate::stop_error(
                &observed,
                "the sandbox ended before the program finished",
            ));
        }
        let mut warnings = vec![match group {
            Some(_) => format!(
                "gvisor: the memory limit ({}) bounds the whole sandbox, gVisor's own kernel (the Sentry) and file server included",
                warden_core::human_bytes(inv.limits.memory_bytes)
            ),
            None => format!(
                "gvisor rootless: no cgroup here, so the memory limit ({}) is RLIMIT_AS per process inside the Sentry (not a total) and CPU time RLIMIT_CPU; the program is the sandbox's uid 0 (the user's own id on the host), with no capabilities",
                warden_core::human_bytes(inv.limits.memory_bytes)
            ),
        }];
        warnings.extend(grant_warnings);
        warnings.extend(crate::undelivered(&observed));
        let program_signal = observed
            .program
            .and_then(|(st, _, _)| libc::WIFSIGNALED(st).then(|| libc::WTERMSIG(st)));
        let net = net.map(crate::gvisor_net::Net::finish);
        if net.as_ref().is_some_and(|n| n.refused)
            && matches!(status, Status::Exited | Status::Signaled)
        {
            status = Status::Violation;
        }
        let mut limits_reached = crate::reached::limits_reached(&crate::reached::Seen {
            limits: &inv.limits,
            status,
            stopped: observed.stop.is_some() || exit_code.is_none() && signal.is_some(),
            program_oom_killed: oom && program_signal == Some(libc::SIGKILL),
            counters: Some(crate::cgroup::LimitCounters {
                // The host group's pids bound is the sandbox's, not the program's.
                forks_refused: 0,
                ..counters
            }),
            found: None,
            output_written: observed.output_written,
            output_kept: observed.stdout_bytes + observed.stderr_bytes,
            truncated: observed.truncated,
        });
        let (mut violations, mut connections) = (Vec::new(), Vec::new());
        if let Some(n) = net {
            warnings.extend(n.warnings);
            violations = n.violations;
            connections = n.connections;
            limits_reached.extend(n.limits_reached);
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
            enforcement: std::borrow::Cow::Owned(enforcement(
                self.cgroups.as_ref().map(|c| c.mechanism()),
                inv,
            )),
            warnings,
            error,
            fuel_consumed: None,
            instantiate_us: None,
            logs: Vec::new(),
            logs_truncated: false,
            limits_reached,
            discarded: None,
            streams: Some(crate::stream_digests(&observed, stdin_hash.as_ref())),
            module_digest: None,
            connections,
        })
    }
}

impl GvisorBackend {
    /// Waits for the shim's network namespace, listens there, and lets
    /// the shim go on to runsc.
    fn start_network(
        &self,
        shim: libc::pid_t,
        ready: &OwnedFd,
        go: &OwnedFd,
        plan: warden_egress::EgressPlan,
        inv: &Invocation,
        endpoints: &[warden_egress::Endpoint],
    ) -> Result<crate::gvisor_net::Net, BackendError> {
        let mut fds = [libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut b = [0u8; 1];
        let said = sys::poll(&mut fds, 10_000).and_then(|_| sys::read(ready.as_raw_fd(), &mut b));
        if !matches!(said, Ok(1)) || b[0] != b'R' {
            return Err(BackendError::setup(
                "prepare the sandbox's network",
                std::io::Error::other("the shim did not get its network namespace ready"),
            ));
        }
        let netns = std::fs::File::open(format!("/proc/{shim}/ns/net"))
            .map_err(io_setup("open the sandbox's network namespace"))?;
        let mut egress = crate::egress::Egress::new(plan);
        egress.max_connections = Some(inv.limits.net_connections);
        egress.max_bytes = inv.limits.net_bytes;
        egress.idle_timeout = inv.limits.net_idle;
        let net = crate::gvisor_net::Net::start(netns, endpoints, egress)
            .map_err(io_setup("listen on the granted addresses in the sandbox"))?;
        sys::write_all(go.as_raw_fd(), b"G").map_err(io_setup("start runsc"))?;
        Ok(net)
    }
}

/// Which mechanism holds each limit under gVisor.
fn enforcement(cgroup: Option<&'static str>, inv: &Invocation) -> EnforcementMap {
    let mut m = EnforcementMap::new();
    m.insert("wall_time".into(), "supervisor".into());
    m.insert("output".into(), "supervisor".into());
    m.insert("pids".into(), "gvisor_rlimit_nproc".into());
    m.insert("file_size".into(), "gvisor_rlimit_fsize".into());
    m.insert("open_files".into(), "gvisor_rlimit_nofile".into());
    m.insert("tmpfs".into(), "gvisor_tmpfs_size".into());
    m.insert("syscalls".into(), "gvisor_sentry".into());
    let Some(cgroup) = cgroup else {
        m.insert("memory".into(), "gvisor_rlimit_as".into());
        if inv.limits.cpu_time.is_some() {
            m.insert("cpu_time".into(), "gvisor_rlimit_cpu".into());
        }
        return m;
    };
    let sandbox = format!("{cgroup}_sandbox");
    m.insert("memory".into(), sandbox.clone().into());
    if inv.limits.cpu_time.is_some() {
        m.insert("cpu_time".into(), format!("{sandbox}_accounting").into());
    }
    if inv.limits.cpu_percent.is_some() {
        m.insert("cpu_share".into(), sandbox.into());
    }
    m
}

/// The errno of runsc's failure to start the program, from its log: the
/// Sentry looks the program up itself (no init in between).
fn runsc_exec_error(log: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(log).ok()?;
    if text.contains("error finding executable") {
        return Some(libc::ENOENT);
    }
    let load = text.split("failed to load ").nth(1)?;
    let cause = load.split('"').next().unwrap_or(load);
    Some(if cause.contains("no such file or directory") {
        libc::ENOENT
    } else if cause.contains("permission denied") {
        libc::EACCES
    } else if cause.contains("exec format error") {
        libc::ENOEXEC
    } else {
        return None;
    })
}

/// Why runsc ended without the program's status: its exit status and the
/// last message of its log.
fn runsc_failure(status: Option<i32>, log: &Path) -> String {
    let last = std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            // runsc logs JSON objects back to back; the last "msg" is the cause.
            text.rsplit("\"msg\":\"")
                .next()
                .filter(|_| text.contains("\"msg\":\""))
                .and_then(|rest| rest.split("\",\"").next())
                .map(|m| m.replace("\\n", " ").replace("\\\"", "\""))
        })
        .unwrap_or_default();
    let status = match status {
        Some(st) if libc::WIFEXITED(st) => format!("exit status {}", libc::WEXITSTATUS(st)),
        Some(st) if libc::WIFSIGNALED(st) => format!("signal {}", libc::WTERMSIG(st)),
        _ => "unknown status".into(),
    };
    if last.is_empty() {
        format!("runsc ended ({status}) before the program did")
    } else {
        format!("runsc ended ({status}) before the program did: {last}")
    }
}
