//! The jail's filesystem: a plan of mount operations built in the
//! supervisor (where allocation and error reporting are easy) and applied
//! by the jail's init inside its new mount namespace.
//!
//! Every target is created and opened beneath the new root with symlinks
//! refused (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), and every
//! user-supplied source is either a detached mount tree prepared by the
//! supervisor (root mode) or opened the same way by the jail's init, so
//! neither end of a bind mount can be redirected by a symlink or `..`.
//! A bind is a detached clone of the source (open_tree) that gets
//! read-only, nosuid and nodev with mount_setattr(AT_RECURSIVE) — so mounts
//! nested beneath a grant get them too — before move_mount attaches it:
//! the tree is never visible writable. Warden's own part of the root is
//! created in a fresh tmpfs nobody else can reach, with directory
//! descriptors kept open, so it costs one system call per entry instead of
//! a probe-and-create walk.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::sys;

/// Where the new root is assembled inside the private mount namespace.
pub(crate) const STAGING: &std::ffi::CStr = c"/tmp";

#[derive(Debug)]
pub(crate) enum Source {
    /// A trusted host path (the system runtime).
    HostPath(CString),
    /// A user grant or the entry file: a canonical host path, relative to
    /// `/`, opened by the jail's init with every symlink refused before the
    /// staging root hides anything (a descriptor opened by the supervisor
    /// would belong to the wrong mount namespace and cannot be bound).
    Beneath(CString),
    /// A detached mount tree prepared by the supervisor (root mode: already
    /// idmapped, read-only as granted, nosuid, nodev); attached as is.
    Detached(OwnedFd),
}

#[derive(Debug)]
pub(crate) enum Op {
    Bind {
        source: Source,
        /// Relative to the new root, no leading `/`.
        target: CString,
        is_dir: bool,
        readonly: bool,
        /// Device nodes stay usable (only for the jail's own /dev entries).
        devices: bool,
    },
    Tmpfs {
        target: CString,
        options: CString,
        flags: libc::c_ulong,
    },
    Proc {
        target: CString,
    },
    /// A private devpts instance: the jail's own pseudo-terminals.
    Devpts {
        target: CString,
        options: CString,
    },
    /// Remounts a mount made earlier in the plan read-only.
    ReadOnly {
        target: CString,
    },
    /// Hardens a path under the jail's /proc: a directory is bound onto
    /// itself read-only, a file is hidden under /dev/null. Skipped when the
    /// kernel has no such entry.
    ProtectProc {
        target: CString,
        is_dir: bool,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    Dir {
        path: CString,
    },
    File {
        path: CString,
        contents: Vec<u8>,
    },
    /// A leased secret's value: a file readable by its owner only (the
    /// sandbox user, who creates it), wiped from memory with the plan.
    Secret {
        path: CString,
        /// Shown as `[secret]` by `Debug`.
        contents: warden_core::SecretValue,
    },
}

/// A leased secret to place in the jail: its file name and value.
pub(crate) type SecretFile = (String, warden_core::SecretValue);

#[derive(Debug, Default)]
pub(crate) struct MountPlan {
    pub ops: Vec<Op>,
    /// The leading operations that build Warden's own root (tmpfs, system
    /// binds, /etc, /proc, /dev, /tmp): their targets are created without
    /// probing first. Grants and the working directory come after.
    pub system_len: usize,
}

/// Host paths of the read-only system runtime.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// The few /etc entries interpreters need. Never shadow, gshadow, sudoers,
/// ssh keys or the host's passwd/group: those are generated.
const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "localtime",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "locale.alias",
    "os-release",
    "debian_version",
    "alternatives",
    "ssl",
    "python3.11",
    "python3.12",
    "python3.13",
    "php",
    "nodejs",
];

/// Regular /etc files up to this size are copied into the jail's root
/// (read once per process) rather than bind-mounted: a write into tmpfs is
/// cheaper than a bind mount plus its read-only remount.
const COPY_LIMIT: u64 = 256 << 10;

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// Options of the jail's devpts. A mount of devpts is always a new
/// instance (`newinstance` says so for kernels before 4.7): it holds only
/// the ptys opened through its own `ptmx`, never the host's. `ptmxmode`
/// lets the sandbox user open `ptmx`; a new pty belongs to its opener's
/// uid and gid (no `gid=`: the host's tty group is not mapped in the
/// jail's user namespace, and the mount would fail); `max` bounds how many
/// of the host's ptys (kernel.pty.max, shared by every instance but the
/// host's own reserve) one run can hold.
const DEVPTS_OPTIONS: &str = "newinstance,ptmxmode=0666,mode=0620,max=64";

pub(crate) const PASSWD: &str = "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n\
sandbox:x:1000:1000:warden sandbox:/tmp:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
pub(crate) const GROUP: &str = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n";
pub(crate) const HOSTS: &str =
    "127.0.0.1\tlocalhost warden\n::1\tlocalhost ip6-localhost ip6-loopback\n";

fn rel(path: &str) -> io::Result<CString> {
    sys::cstring(path.trim_start_matches('/'))
}

pub(crate) fn rel_path(path: &Path) -> io::Result<CString> {
    sys::cstring(
        path.as_os_str()
            .as_bytes()
            .strip_prefix(b"/")
            .unwrap_or(path.as_os_str().as_bytes()),
    )
}

/// The part of the plan that is the same for every run: probed once.
#[derive(Debug, Clone)]
pub(crate) struct SystemLayout {
    entries: Vec<SystemEntry>,
    /// Device nodes for /dev.
    devices: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum SystemEntry {
    Link { link: String, target: PathBuf },
    Dir { path: String },
    File { path: String },
    Copy { path: String, contents: Vec<u8> },
}

impl SystemLayout {
    /// The host's system paths and /etc entries, as probed.
    pub(crate) fn entries(&self) -> &[SystemEntry] {
        &self.entries
    }

    pub(crate) fn probe() -> io::Result<Self> {
        let mut entries = Vec::new();
        let candidates = SYSTEM_DIRS
            .iter()
            .map(|d| d.to_string())
            .chain(ETC_ENTRIES.iter().map(|e| format!("/etc/{e}")));
        for path in candidates {
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                entries.push(SystemEntry::Link {
                    target: fs::read_link(&path)?,
                    link: path,
                });
                continue;
            }
            if meta.is_file() && meta.len() <= COPY_LIMIT {
                // The size is known: one read, one to see the end.
                let mut contents = Vec::with_capacity(meta.len() as usize + 1);
                io::Read::read_to_end(
                    &mut io::Read::take(fs::File::open(&path)?, COPY_LIMIT + 1),
                    &mut contents,
                )?;
                entries.push(SystemEntry::Copy { path, contents });
                continue;
            }
            if meta.is_dir() {
                entries.push(SystemEntry::Dir { path });
            } else if meta.is_file() {
                entries.push(SystemEntry::File { path });
            }
        }
        if !entries
            .iter()
            .any(|e| matches!(e, SystemEntry::Dir { path, .. } if path == "/usr"))
        {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "/usr is not a directory on this host",
            ));
        }
        let devices = DEVICES.iter().map(|d| format!("/dev/{d}")).collect();
        Ok(SystemLayout { entries, devices })
    }
}

/// A user grant, resolved by the supervisor.
#[derive(Debug)]
pub(crate) struct GrantMount {
    pub path: PathBuf,
    /// Where the program sees it: `path`, or the place `--at` chose.
    pub inside: PathBuf,
    pub is_dir: bool,
    pub writable: bool,
    /// Root mode: the prepared tree to attach instead of binding `path`.
    pub detached: Option<OwnedFd>,
}

/// Opens a host path with every symlink refused, to check it as a bind
/// source: the `O_PATH` descriptor and whether it is a directory. The path
/// must already be canonical (absolute, no symlinks). Whatever is mounted
/// from it must come from this descriptor, never from the path again: a
/// directory above it can be swapped for a symlink in between.
pub(crate) fn inspect_source(path: &Path) -> io::Result<(OwnedFd, bool)> {
    let root = fs::File::open("/")?;
    let relative = rel_path(path)?;
    let fd: OwnedFd = if relative.as_bytes().is_empty() {
        root.into()
    } else {
        sys::open_beneath(root.as_raw_fd(), &relative, libc::O_PATH as u64)?
    };
    let is_dir = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))?.is_dir();
    Ok((fd, is_dir))
}

/// Entries of the jail's /proc that are bound read-only (directories) or
/// hidden (files): kernel tunables and the sysrq trigger, and scheduler and
/// timer internals that leak kernel state. Root-only entries (kcore,
/// kpage*) need no mount: the program is never host root, so their modes
/// keep it out, and each mount here costs start-up time.
const PROC_PROTECTED: &[(&str, bool)] = &[
    ("sys", true),
    ("irq", true),
    ("bus", true),
    ("fs", true),
    ("sysrq-trigger", false),
    ("timer_list", false),
    ("sched_debug", false),
    ("latency_stats", false),
];

impl MountPlan {
    pub(crate) fn build(
        layout: &SystemLayout,
        grants: Vec<GrantMount>,
        hidden: &[PathBuf],
        workdir: &Path,
        tmpfs_bytes: u64,
    ) -> io::Result<MountPlan> {
        let mut ops = Vec::with_capacity(layout.entries.len() + grants.len() + 24);
        ops.push(Op::Dir { path: rel("etc")? });
        for entry in &layout.entries {
            ops.push(match entry {
                SystemEntry::Link { link, target } => Op::Symlink {
                    target: sys::cstring(target.as_os_str().as_bytes())?,
                    link: rel(link)?,
                },
                SystemEntry::Copy { path, contents } => Op::File {
                    path: rel(path)?,
                    contents: contents.clone(),
                },
                SystemEntry::Dir { path } | SystemEntry::File { path } => Op::Bind {
                    source: Source::HostPath(sys::cstring(path.as_str())?),
                    target: rel(path)?,
                    is_dir: matches!(entry, SystemEntry::Dir { .. }),
                    readonly: true,
                    devices: false,
                },
            });
        }
        for (name, contents) in [
            ("etc/passwd", PASSWD),
            ("etc/group", GROUP),
            ("etc/hosts", HOSTS),
            ("etc/hostname", "warden\n"),
        ] {
            ops.push(Op::File {
                path: rel(name)?,
                contents: contents.as_bytes().to_vec(),
            });
        }
        ops.push(Op::Proc {
            target: rel("proc")?,
        });
        for (entry, is_dir) in PROC_PROTECTED {
            ops.push(Op::ProtectProc {
                target: rel(&format!("proc/{entry}"))?,
                is_dir: *is_dir,
            });
        }
        ops.push(Op::Tmpfs {
            target: rel("dev")?,
            options: sys::cstring("size=64k,nr_inodes=64,mode=0755")?,
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        });
        for dev in &layout.devices {
            ops.push(Op::Bind {
                source: Source::HostPath(sys::cstring(dev.as_str())?),
                target: rel(dev)?,
                is_dir: false,
                readonly: false,
                devices: true,
            });
        }
        // Pseudo-terminals (os.openpty, pexpect, script): a private devpts
        // with /dev/ptmx pointing at its multiplexer. There is no /dev/tty:
        // the program has no controlling terminal (setsid), and the host's
        // /dev/tty (bwrap binds it) is never handed in.
        ops.push(Op::Devpts {
            target: rel("dev/pts")?,
            options: sys::cstring(DEVPTS_OPTIONS)?,
        });
        for (link, target) in [
            ("dev/ptmx", "pts/ptmx"),
            ("dev/fd", "/proc/self/fd"),
            ("dev/stdin", "/proc/self/fd/0"),
            ("dev/stdout", "/proc/self/fd/1"),
            ("dev/stderr", "/proc/self/fd/2"),
        ] {
            ops.push(Op::Symlink {
                target: sys::cstring(target)?,
                link: rel(link)?,
            });
        }
        let tmp_options = sys::cstring(format!("size={tmpfs_bytes},mode=1777"))?;
        ops.push(Op::Tmpfs {
            target: rel("tmp")?,
            options: tmp_options,
            flags: libc::MS_NOSUID | libc::MS_NODEV,
        });
        // One tmpfs, one cap: POSIX shared memory lives in /tmp too.
        ops.push(Op::Symlink {
            target: sys::cstring("/tmp")?,
            link: rel("dev/shm")?,
        });
        // /dev is complete: nothing more may be created in it.
        ops.push(Op::ReadOnly {
            target: rel("dev")?,
        });
        let system_len = ops.len();
        // Parents before children, so a nested grant lands inside its parent's mount.
        let mut grants = grants;
        grants.sort_by_key(|g| g.inside.components().count());
        for g in grants {
            let source = match g.detached {
                Some(tree) => Source::Detached(tree),
                None => Source::Beneath(rel_path(&g.path)?),
            };
            ops.push(Op::Bind {
                target: rel_path(&g.inside)?,
                source,
                is_dir: g.is_dir,
                readonly: !g.writable,
                devices: false,
            });
        }
        // Directories a grant must not show (Warden's own state): an empty
        // tmpfs nobody can enter, after every grant.
        for dir in hidden {
            ops.push(Op::Tmpfs {
                target: rel_path(dir)?,
                options: sys::cstring("size=4k,nr_inodes=1,mode=000")?,
                flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            });
        }
        if workdir != Path::new("/") {
            ops.push(Op::Dir {
                path: rel_path(workdir)?,
            });
        }
        Ok(MountPlan { ops, system_len })
    }

    /// Appends `lines` (hosts-file lines: the run's granted names at the
    /// addresses pinned for them) to the jail's /etc/hosts.
    pub fn add_hosts(&mut self, lines: &str) -> io::Result<()> {
        let target = rel("etc/hosts")?;
        for op in &mut self.ops {
            if let Op::File { path, contents } = op {
                if *path == target {
                    contents.extend_from_slice(lines.as_bytes());
                    return Ok(());
                }
            }
        }
        Err(io::Error::other(
            "the jail's /etc/hosts is not in its mount plan",
        ))
    }

    /// Adds `/etc/NAME` with `contents` to the jail's root.
    pub fn add_etc_file(&mut self, name: &str, contents: &[u8]) -> io::Result<()> {
        let target = rel(&format!("etc/{name}"))?;
        // Beside /etc/hosts, so that /etc exists when it is written.
        let hosts = rel("etc/hosts")?;
        let at = self
            .ops
            .iter()
            .position(|op| matches!(op, Op::File { path, .. } if *path == hosts))
            .ok_or_else(|| io::Error::other("the jail's /etc is not in its mount plan"))?;
        self.ops.insert(
            at + 1,
            Op::File {
                path: target,
                contents: contents.to_vec(),
            },
        );
        Ok(())
    }

    /// Adds the leased secrets: a private tmpfs at [`SECRETS_DIR`]
    /// (memory only, never on disk), one 0400 file per secret, then
    /// read-only.
    pub fn add_secrets(&mut self, secrets: &[SecretFile]) -> io::Result<()> {
        if secrets.is_empty() {
            return Ok(());
        }
        let dir = warden_core::SECRETS_DIR.trim_start_matches('/');
        let bytes: usize = secrets.iter().map(|(_, v)| v.expose().len()).sum();
        let size = (bytes + 4096 * (secrets.len() + 1)).next_multiple_of(4096);
        self.ops.push(Op::Tmpfs {
            target: rel(dir)?,
            options: sys::cstring(format!(
                "size={size},nr_inodes={},mode=0500",
                secrets.len() + 4
            ))?,
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        });
        for (name, value) in secrets {
            self.ops.push(Op::Secret {
                path: rel(&format!("{dir}/{name}"))?,
                contents: value.clone(),
            });
        }
        self.ops.push(Op::ReadOnly { target: rel(dir)? });
        Ok(())
    }
}

/// Lexical check used before any I/O: an absolute path with no `..`.
pub(crate) fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
}

// ---- Applied inside the jail's init (single-threaded child). ----

fn fd_path(fd: RawFd) -> CString {
    // Cannot contain NUL: digits only.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// Walks `rel` beneath `root`, creating missing directories (and, if
/// `leaf_is_file`, an empty file as the last component), refusing
/// symlinks everywhere. Returns an O_PATH descriptor of the leaf.
fn ensure_beneath(root: RawFd, rel: &CString, leaf_is_file: bool) -> io::Result<OwnedFd> {
    // Fast path: the whole path already exists (one openat2, still beneath
    // root with no symlinks); otherwise walk and create.
    if !rel.as_bytes().is_empty() {
        match sys::open_beneath(root, rel, libc::O_PATH as u64) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    let bytes = rel.as_bytes();
    let parts: Vec<&[u8]> = bytes
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    let mut dir: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        if *part == b".." || *part == b"." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path component . or ..",
            ));
        }
        let name = sys::cstring(*part)?;
        let at = dir.as_ref().map_or(root, |d| d.as_raw_fd());
        let last = i + 1 == parts.len();
        let opened = sys::open_beneath(at, &name, libc::O_PATH as u64);
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if last && leaf_is_file {
                    sys::mkfileat(at, &name)?;
                } else {
                    match sys::mkdirat(at, &name, 0o755) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                }
                sys::open_beneath(at, &name, libc::O_PATH as u64)?
            }
            Err(e) => return Err(e),
        };
        dir = Some(fd);
    }
    match dir {
        Some(d) => Ok(d),
        None => sys::open_beneath(root, c".", libc::O_PATH as u64),
    }
}

/// Opens every grant source, in plan order, before the staging root is
/// mounted (it may hide them, e.g. grants under /tmp).
pub(crate) fn open_sources(plan: &MountPlan) -> Result<Vec<OwnedFd>, String> {
    let host_root = fs::File::open("/").map_err(|e| format!("open /: {e}"))?;
    let mut fds = Vec::new();
    for op in &plan.ops {
        if let Op::Bind {
            source: Source::Beneath(path),
            ..
        } = op
        {
            let fd = if path.as_bytes().is_empty() {
                sys::open_beneath(host_root.as_raw_fd(), c".", libc::O_PATH as u64)
            } else {
                sys::open_beneath(host_root.as_raw_fd(), path, libc::O_PATH as u64)
            };
            fds.push(fd.map_err(|e| format!("open grant /{}: {e}", path.to_string_lossy()))?);
        }
    }
    Ok(fds)
}

/// Applies the plan beneath `root` (the staging directory), taking grant
/// sources from `sources` (see [`open_sources`]). Returns a message naming
/// the failing step.
pub(crate) fn apply(plan: &MountPlan, sources: &[OwnedFd], root: RawFd) -> Result<(), String> {
    let mut sources = sources.iter();
    let mut staging = Staging {
        root,
        dirs: Vec::new(),
    };
    for (i, op) in plan.ops.iter().enumerate() {
        let source = match op {
            Op::Bind {
                source: Source::Beneath(_),
                ..
            } => sources.next().map(|fd| fd.as_raw_fd()),
            _ => None,
        };
        let fresh = i < plan.system_len;
        staging
            .apply(op, source, fresh)
            .map_err(|e| format!("{}: {e}", describe(op)))?;
    }
    Ok(())
}

fn describe(op: &Op) -> String {
    let show = |c: &CString| format!("/{}", c.to_string_lossy());
    match op {
        Op::Bind { target, .. } => format!("bind mount at {}", show(target)),
        Op::Tmpfs { target, .. } => format!("tmpfs at {}", show(target)),
        Op::Proc { target } => format!("proc at {}", show(target)),
        Op::Devpts { target, .. } => format!("devpts at {}", show(target)),
        Op::ReadOnly { target } => format!("read-only remount of {}", show(target)),
        Op::ProtectProc { target, .. } => format!("protect {}", show(target)),
        Op::Symlink { link, .. } => format!("symlink {}", show(link)),
        Op::Dir { path } => format!("directory {}", show(path)),
        Op::File { path, .. } => format!("file {}", show(path)),
        Op::Secret { path, .. } => format!("secret file {}", show(path)),
    }
}

/// Splits `a/b/c` into `a/b` and `c` (`""` and `c` for a single name).
fn split_parent(rel: &CString) -> io::Result<(CString, CString)> {
    let bytes = rel.as_bytes();
    let (parent, name) = match bytes.iter().rposition(|b| *b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b""[..], bytes),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "target must end in a name",
        ));
    }
    Ok((sys::cstring(parent)?, sys::cstring(name)?))
}

/// The root being assembled, with the directories already opened in it.
///
/// A cached directory descriptor stays valid until something is mounted on
/// it or above it (the descriptor would then name the covered directory),
/// so every mount drops the entries at and beneath its target.
struct Staging {
    root: RawFd,
    dirs: Vec<(CString, OwnedFd)>,
}

impl Staging {
    /// The directory `rel` beneath the root (created if missing, symlinks
    /// refused), opened once.
    fn dir(&mut self, rel: &CString) -> io::Result<RawFd> {
        if rel.as_bytes().is_empty() {
            return Ok(self.root);
        }
        if let Some((_, fd)) = self.dirs.iter().find(|(p, _)| p == rel) {
            return Ok(fd.as_raw_fd());
        }
        let fd = ensure_beneath(self.root, rel, false)?;
        let raw = fd.as_raw_fd();
        self.dirs.push((rel.clone(), fd));
        Ok(raw)
    }

    /// Forgets cached directories at or beneath `target`, which is about
    /// to be covered by a mount.
    fn covered(&mut self, target: &CString) {
        let t = target.as_bytes();
        self.dirs.retain(|(p, _)| {
            let p = p.as_bytes();
            !(p == t || (p.len() > t.len() && p.starts_with(t) && p[t.len()] == b'/'))
        });
    }

    /// The mount point `name` in `parent`, created if missing, opened
    /// `O_PATH` with symlinks refused. `fresh`: the parent is part of the
    /// root Warden itself is building, where nothing exists yet, so create
    /// first instead of probing.
    fn mount_point(
        &self,
        parent: RawFd,
        name: &CString,
        is_dir: bool,
        fresh: bool,
    ) -> io::Result<OwnedFd> {
        if !fresh {
            match sys::open_beneath(parent, name, libc::O_PATH as u64) {
                Ok(fd) => return Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        let made = if is_dir {
            sys::mkdirat(parent, name, 0o755)
        } else {
            sys::mkfileat(parent, name)
        };
        match made {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        sys::open_beneath(parent, name, libc::O_PATH as u64)
    }

    fn apply(&mut self, op: &Op, opened: Option<RawFd>, fresh: bool) -> io::Result<()> {
        match op {
            Op::Bind {
                source,
                target,
                is_dir,
                readonly,
                devices,
            } => {
                let (parent, name) = split_parent(target)?;
                let parent = self.dir(&parent)?;
                let point = self.mount_point(parent, &name, *is_dir, fresh)?;
                let cloned;
                let tree = match (source, opened) {
                    (Source::Detached(tree), _) => tree.as_raw_fd(),
                    (Source::HostPath(p), _) => {
                        cloned = sys::open_tree_clone(p)?;
                        cloned.as_raw_fd()
                    }
                    (Source::Beneath(_), Some(fd)) => {
                        cloned = sys::open_tree_clone_at(fd, c"")?;
                        cloned.as_raw_fd()
                    }
                    (Source::Beneath(_), None) => {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            "grant source was not opened",
                        ))
                    }
                };
                // Device nodes keep their own mount's flags; a prepared
                // (root-mode) tree already has its attributes.
                if !*devices && !matches!(source, Source::Detached(_)) {
                    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
                    if *readonly {
                        attrs |= sys::MOUNT_ATTR_RDONLY;
                    }
                    // Recursive: mounts nested beneath the source get the same.
                    sys::mount_setattr_recursive(tree, attrs, None)?;
                }
                sys::move_mount_onto(tree, point.as_raw_fd())?;
                self.covered(target);
                Ok(())
            }
            Op::ProtectProc { target, is_dir } => {
                let (parent, name) = split_parent(target)?;
                let parent = self.dir(&parent)?;
                let point = match sys::open_beneath(parent, &name, libc::O_PATH as u64) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(e),
                };
                let tree = if *is_dir {
                    sys::open_tree_clone_at(point.as_raw_fd(), c"")?
                } else {
                    sys::open_tree_clone(c"/dev/null")?
                };
                sys::mount_setattr_recursive(
                    tree.as_raw_fd(),
                    sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                    None,
                )?;
                sys::move_mount_onto(tree.as_raw_fd(), point.as_raw_fd())?;
                self.covered(target);
                Ok(())
            }
            Op::Tmpfs {
                target,
                options,
                flags,
            } => {
                let (parent, name) = split_parent(target)?;
                let parent = self.dir(&parent)?;
                let point = self.mount_point(parent, &name, true, fresh)?;
                sys::mount(
                    Some(c"tmpfs"),
                    &fd_path(point.as_raw_fd()),
                    Some(c"tmpfs"),
                    *flags,
                    Some(options),
                )?;
                self.covered(target);
                Ok(())
            }
            Op::Proc { target } => {
                let (parent, name) = split_parent(target)?;
                let parent = self.dir(&parent)?;
                let point = self.mount_point(parent, &name, true, fresh)?;
                sys::mount(
                    Some(c"proc"),
                    &fd_path(point.as_raw_fd()),
                    Some(c"proc"),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    None,
                )?;
                self.covered(target);
                Ok(())
            }
            Op::Devpts { target, options } => {
                let (parent, name) = split_parent(target)?;
                let parent = self.dir(&parent)?;
                let point = self.mount_point(parent, &name, true, fresh)?;
                // Not nodev: its pty nodes are what it is for. It stays
                // writable (`mesg` changes its pty's mode) when /dev is made
                // read-only, which remounts only /dev's own tmpfs.
                sys::mount(
                    Some(c"devpts"),
                    &fd_path(point.as_raw_fd()),
                    Some(c"devpts"),
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    Some(options),
                )?;
                self.covered(target);
                Ok(())
            }
            Op::Symlink { target, link } => {
                let (parent, name) = split_parent(link)?;
                let parent = self.dir(&parent)?;
                sys::symlinkat(target, parent, &name)
            }
            Op::ReadOnly { target } => {
                let fd = self.dir(target)?;
                sys::mount(
                    None,
                    &fd_path(fd),
                    None,
                    libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NOEXEC,
                    None,
                )
            }
            Op::Dir { path } => self.dir(path).map(drop),
            Op::File { path, contents } => {
                let (parent, name) = split_parent(path)?;
                let parent = self.dir(&parent)?;
                let file = fs::File::from(sys::create_new_file(parent, &name, 0o644)?);
                io::Write::write_all(&mut &file, contents)
            }
            Op::Secret { path, contents } => {
                let (parent, name) = split_parent(path)?;
                let parent = self.dir(&parent)?;
                let file = fs::File::from(sys::create_new_file(parent, &name, 0o400)?);
                io::Write::write_all(&mut &file, contents.expose())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_absolute_paths() {
        assert!(is_clean_absolute(Path::new("/a/b")));
        assert!(!is_clean_absolute(Path::new("a/b")));
        assert!(!is_clean_absolute(Path::new("/a/../b")));
    }

    #[test]
    fn layout_probe_finds_usr_and_never_secrets() {
        let layout = SystemLayout::probe().expect("probe");
        let paths: Vec<String> = layout
            .entries
            .iter()
            .map(|e| match e {
                SystemEntry::Link { link, .. } => link.clone(),
                SystemEntry::Dir { path, .. }
                | SystemEntry::File { path, .. }
                | SystemEntry::Copy { path, .. } => path.clone(),
            })
            .collect();
        assert!(paths.contains(&"/usr".to_string()));
        for secret in [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/passwd",
            "/etc/ssh",
            "/etc/sudoers",
            "/root",
            "/home",
        ] {
            assert!(
                !paths.contains(&secret.to_string()),
                "{secret} must not be mounted"
            );
        }
    }

    #[test]
    fn ensure_beneath_refuses_symlinks() {
        let dir = std::env::temp_dir().join(format!("warden-mounts-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
        let root = fs::File::open(&dir).unwrap();
        let err = ensure_beneath(root.as_raw_fd(), &CString::new("escape/x").unwrap(), false)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        let err =
            ensure_beneath(root.as_raw_fd(), &CString::new("escape").unwrap(), false).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ELOOP),
            "a symlink leaf is refused too"
        );
        let made = ensure_beneath(root.as_raw_fd(), &CString::new("a/b/c").unwrap(), true);
        assert!(made.is_ok());
        assert!(dir.join("a/b/c").is_file());
        fs::remove_dir_all(&dir).unwrap();
    }
}
