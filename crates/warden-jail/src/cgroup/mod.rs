//! Per-run cgroups behind one trait, with cgroup v1 and v2 side by side.
//! A driver is detected once; each run gets a fresh group under a parent
//! owned by Warden, and stale groups left by a killed Warden are removed
//! at the next start.

mod v1;
mod v2;

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use warden_core::EffectiveLimits;

/// `pids.max` for a program limit of `pids` processes and threads: the
/// jail's init (Warden's own PID 1) lives in the group too and is not the
/// program's to count.
pub(crate) fn pids_max(pids: u32) -> String {
    (u64::from(pids) + 1).to_string()
}

pub use v1::V1Driver;
pub use v2::V2Driver;

/// How often the kernel held a run's cgroup to its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitCounters {
    /// Processes the kernel's OOM killer killed in the group.
    pub oom_kills: u64,
    /// Forks and clones refused at `pids.max` (`pids.events` `max`).
    pub forks_refused: u64,
}

/// One run's cgroup.
pub trait JailCgroup {
    /// Descriptors, opened by the supervisor, into which the jail's init
    /// writes "0" to move itself into the group. A thread moving itself
    /// (v1 `tasks`) skips the global threadgroup lock whose RCU
    /// synchronisation otherwise stalls a run by up to tens of ms; the
    /// opener's credentials, not the writer's, are checked.
    fn join_handles(&self) -> io::Result<Vec<OwnedFd>>;
    /// CPU time used by every process of the run, in nanoseconds.
    fn cpu_usage_ns(&self) -> Option<u64>;
    fn peak_memory_bytes(&self) -> Option<u64>;
    /// The kernel's counts of the group's limits being reached.
    fn limit_counters(&self) -> LimitCounters;
    /// SIGKILLs every process still in the group.
    fn kill_all(&self);
    /// Removes the group; processes must be gone.
    fn remove(&self) -> io::Result<()>;
}

/// Creates per-run cgroups.
pub trait CgroupDriver: Send + Sync {
    /// Mechanism name for reports, e.g. `cgroup_v1`.
    fn mechanism(&self) -> &'static str;
    fn create(&self, name: &str, limits: &EffectiveLimits) -> io::Result<Box<dyn JailCgroup>>;
    /// Removes groups whose Warden process is gone.
    fn clean_stale(&self);
}

/// Picks the cgroup driver for this host: v2 when the unified hierarchy
/// carries the memory controller, else v1 when its memory, pids and CPU
/// controllers are mounted and writable. The error says why neither works.
pub fn detect() -> Result<Box<dyn CgroupDriver>, String> {
    let mountinfo = read_text("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let own = read_text("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mounts = parse_mountinfo(&mountinfo);
    let mut reasons = Vec::new();
    match V2Driver::new(&mounts, &own) {
        Ok(d) => return Ok(Box::new(d)),
        Err(e) => reasons.push(format!("cgroup v2: {e}")),
    }
    match V1Driver::new(&mounts, &own) {
        Ok(d) => return Ok(Box::new(d)),
        Err(e) => reasons.push(format!("cgroup v1: {e}")),
    }
    Err(reasons.join("; "))
}

/// A cgroup filesystem mount: (fstype, mount point, root within hierarchy, super options).
#[derive(Debug, Clone)]
pub struct CgroupMount {
    pub fstype: String,
    pub mount_point: PathBuf,
    pub root: String,
    pub options: Vec<String>,
}

/// The cgroup (v1) and cgroup2 mounts listed in a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let fstype = right[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        out.push(CgroupMount {
            fstype: fstype.to_string(),
            mount_point: PathBuf::from(unescape_mountinfo(left[4])),
            root: unescape_mountinfo(left[3]),
            options: right[2].split(',').map(str::to_string).collect(),
        });
    }
    out
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of our own cgroup in a hierarchy mounted at `mount`.
pub(crate) fn own_dir(mount: &CgroupMount, own_path: &str) -> PathBuf {
    let rel = own_path
        .strip_prefix(mount.root.as_str())
        .unwrap_or(own_path)
        .trim_start_matches('/');
    mount.mount_point.join(rel)
}

pub(crate) fn write(path: &Path, value: impl AsRef<[u8]>) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

pub(crate) fn open_for_join(path: &Path) -> io::Result<OwnedFd> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Reads a small kernel-generated text file (procfs, cgroupfs) in one
/// `read` where it fits: these files report size 0, so `fs::read_to_string`
/// would stat first and then grow its buffer in many small reads.
pub(crate) fn read_text(path: impl AsRef<Path>) -> io::Result<String> {
    let mut buf = Vec::with_capacity(16 << 10);
    // Through `Take`: `File`'s own `read_to_end` would stat and seek for a
    // size hint first, which these files do not have.
    io::Read::read_to_end(
        &mut io::Read::take(fs::File::open(path)?, 1 << 20),
        &mut buf,
    )?;
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_text(path).ok()?.trim().parse().ok()
}

/// Value of `key` in a flat-keyed file like memory.events or cpu.stat.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = read_text(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

pub(crate) fn kill_procs(dir: &Path) -> usize {
    let Ok(text) = read_text(dir.join("cgroup.procs")) else {
        return 0;
    };
    let mut n = 0;
    for pid in text
        .lines()
        .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
    {
        if crate::sys::kill(pid, libc::SIGKILL).is_ok() {
            n += 1;
        }
    }
    n
}

/// rmdir that waits briefly for exiting tasks to leave the group.
pub(crate) fn remove_dir_patiently(dir: &Path) -> io::Result<()> {
    let mut delay = std::time::Duration::from_micros(100);
    for _ in 0..40 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                kill_procs(dir);
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
    fs::remove_dir(dir)
}

/// Whether this process may create groups in `dir` (an ordinary user
/// without delegation may not: Warden then falls back to rlimits).
pub(crate) fn check_writable(dir: &Path) -> Result<(), String> {
    if crate::sys::writable(dir) {
        Ok(())
    } else {
        Err(format!(
            "this user may not create cgroups in {}",
            dir.display()
        ))
    }
}

/// Group names are `<warden pid>-<invocation id>`: a group whose Warden
/// process no longer exists is stale.
pub(crate) fn is_stale(name: &str) -> bool {
    let Some(pid) = name
        .split('-')
        .next()
        .and_then(|p| p.parse::<libc::pid_t>().ok())
    else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    matches!(crate::sys::kill(pid, 0), Err(e) if e.raw_os_error() == Some(libc::ESRCH))
}

pub(crate) fn clean_stale_in(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // d_type from readdir: no stat of every control file.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && is_stale(&name) {
            kill_procs(&entry.path());
            let _ = remove_dir_patiently(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_mountinfo() {
        let text =
            "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory\n\
                    36 25 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    40 25 0:32 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].fstype, "cgroup");
        assert!(m[0].options.contains(&"memory".to_string()));
        assert_eq!(m[1].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn own_dir_strips_mount_root() {
        let m = CgroupMount {
            fstype: "cgroup2".into(),
            mount_point: "/sys/fs/cgroup".into(),
            root: "/ns".into(),
            options: vec![],
        };
        assert_eq!(own_dir(&m, "/ns/a/b"), PathBuf::from("/sys/fs/cgroup/a/b"));
    }

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    #[test]
    fn stale_names() {
        assert!(!is_stale("not-a-pid"));
        assert!(!is_stale(&format!("{}-abc", std::process::id())));
        // pid_max is at most 2^22 on Linux, so this pid cannot exist.
        assert!(is_stale("99999999-abc"));
    }
}
