//! The container's mounts, made by its init in its own mount namespace:
//! every destination is resolved inside the rootfs (openat2
//! `RESOLVE_IN_ROOT`: an image's symlinks are followed, but never out of
//! it) and mounted through the descriptor (`/proc/self/fd/N`), so a
//! symlink cannot send a mount to the host.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

/// Mount flags and propagation from an OCI mount's options; what is not a
/// flag is the filesystem's data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub flags: libc::c_ulong,
    pub clear: libc::c_ulong,
    pub propagation: libc::c_ulong,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
}

pub fn parse_options(options: &[String]) -> Options {
    let mut o = Options::default();
    for opt in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                (0, 0)
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                (0, 0)
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let base = match opt.trim_start_matches('r') {
                    "private" => libc::MS_PRIVATE,
                    "shared" => libc::MS_SHARED,
                    "slave" => libc::MS_SLAVE,
                    _ => libc::MS_UNBINDABLE,
                };
                let rec = if opt.starts_with('r') {
                    libc::MS_REC
                } else {
                    0
                };
                o.propagation = base | rec;
                (0, 0)
            }
            // Options of other runtimes' making, not the kernel's.
            "tmpcopyup" | "idmap" | "ridmap" | "nosymfollow" => (0, 0),
            other => {
                o.data.push(other.to_string());
                (0, 0)
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.clear |= clear;
    }
    o
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn fd_path(fd: RawFd) -> CString {
    // A number holds no NUL: the default is never taken.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// Opens `path` (absolute, meant inside the rootfs `root`) as `O_PATH`,
/// creating what is missing — directories, and the last component as a
/// directory or an empty file — all resolved inside the rootfs.
pub fn resolve_in_root(root: RawFd, path: &Path, last_is_dir: bool) -> std::io::Result<OwnedFd> {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        return open_in_root(root, Path::new("."));
    }
    match open_in_root(root, &rel) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
        Err(_) => {}
    }
    let parent = resolve_in_root(root, rel.parent().unwrap_or(Path::new("")), true)?;
    let name = cstring(rel.file_name().unwrap_or_default().as_bytes())?;
    // SAFETY: parent is an open directory descriptor, name NUL-terminated.
    let made = unsafe {
        if last_is_dir {
            libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755)
        } else {
            let fd = libc::openat(
                parent.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o644,
            );
            if fd >= 0 {
                libc::close(fd);
            }
            fd.min(0)
        }
    };
    if made < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    open_in_root(root, &rel)
}

fn open_in_root(root: RawFd, rel: &Path) -> std::io::Result<OwnedFd> {
    let name = cstring(rel.as_os_str().as_bytes())?;
    // SAFETY: open_how is plain data; zero is valid for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: how is a valid open_how of the size passed; name is
    // NUL-terminated; root is an open directory.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned, owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn mount_raw(
    source: Option<&CString>,
    target: &CString,
    fstype: Option<&CString>,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> std::io::Result<()> {
    let p = |s: Option<&CString>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that lives
    // through the call.
    let r = unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes one spec mount inside the rootfs open at `root`.
pub fn mount_one(root: RawFd, m: &Mount) -> Result<(), String> {
    let dest = m.destination();
    let kind = m.typ().as_deref().unwrap_or("");
    let o = parse_options(m.options().as_deref().unwrap_or(&[]));
    let what = |e: std::io::Error| format!("mount {} ({kind}): {e}", dest.display());
    let bind = o.bind || kind == "bind";
    let source = m.source().clone().unwrap_or_default();
    // A bind's mount point is what its source is: a directory or a file.
    let is_dir = if bind {
        std::fs::metadata(&source)
            .map(|m| m.is_dir())
            .unwrap_or(true)
    } else {
        true
    };
    let target = resolve_in_root(root, dest, is_dir).map_err(what)?;
    let target_path = fd_path(target.as_raw_fd());
    let data = (!o.data.is_empty())
        .then(|| cstring(o.data.join(",").as_bytes()))
        .transpose()
        .map_err(what)?;
    if bind {
        let src = cstring(source.as_os_str().as_bytes()).map_err(what)?;
        let rec = if o.recursive { libc::MS_REC } else { 0 };
        mount_raw(Some(&src), &target_path, None, libc::MS_BIND | rec, None).map_err(what)?;
        // Flags other than the bind itself need a remount of the new mount,
        // reached through a fresh descriptor (the old one names the mount
        // point beneath it).
        let flags = o.flags & !libc::MS_REMOUNT;
        if flags != 0 {
            remount_bind(root, dest, is_dir, flags | rec).map_err(what)?;
        }
    } else {
        let fstype = cstring(kind.as_bytes()).map_err(what)?;
        let src = cstring(source.as_os_str().as_bytes()).map_err(what)?;
        let src = if source.as_os_str().is_empty() {
            cstring(kind.as_bytes()).map_err(what)?
        } else {
            src
        };
        match mount_raw(
            Some(&src),
            &target_path,
            Some(&fstype),
            o.flags,
            data.as_ref(),
        ) {
            Ok(()) => {}
            // A user namespace cannot mount sysfs without its own network
            // namespace: the host's, bound read-only, as runc does.
            Err(e) if kind == "sysfs" && e.raw_os_error() == Some(libc::EPERM) => {
                mount_raw(
                    Some(&cstring(b"/sys").map_err(what)?),
                    &target_path,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map_err(what)?;
                remount_bind(root, dest, true, libc::MS_RDONLY).map_err(what)?;
            }
            // cgroup v1 hierarchies are not mounted as a whole: an empty,
            // read-only tmpfs stands at the mount point.
            Err(e) if kind == "cgroup" => {
                let tmpfs = cstring(b"tmpfs").map_err(what)?;
                mount_raw(
                    Some(&tmpfs),
                    &target_path,
                    Some(&tmpfs),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    None,
                )
                .map_err(|_| what(e))?;
            }
            Err(e) => return Err(what(e)),
        }
    }
    if o.propagation != 0 {
        let on = resolve_in_root(root, dest, is_dir).map_err(what)?;
        mount_raw(None, &fd_path(on.as_raw_fd()), None, o.propagation, None).map_err(what)?;
    }
    Ok(())
}

/// Remounts the bind mount now at `dest` with `flags`, keeping the flags a
/// user namespace may not clear; reached through a fresh descriptor (one
/// taken before the bind names the mount point beneath it).
fn remount_bind(
    root: RawFd,
    dest: &Path,
    is_dir: bool,
    flags: libc::c_ulong,
) -> std::io::Result<()> {
    let on = resolve_in_root(root, dest, is_dir)?;
    let on_path = fd_path(on.as_raw_fd());
    let locked = locked_flags(&on_path);
    mount_raw(
        None,
        &on_path,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | flags | locked,
        None,
    )
}

/// The flags of the mount at `path` that a remount in a user namespace may
/// not clear (nosuid, nodev, noexec, rdonly, atime), from statvfs.
pub fn locked_flags(path: &CString) -> libc::c_ulong {
    // SAFETY: statvfs is plain data, filled by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated; st is valid for writing.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag;
    let mut out = 0;
    for (st_bit, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_bit != 0 {
            out |= ms;
        }
    }
    out
}

/// Remounts the rootfs itself read-only (after pivot_root: `/`).
pub fn remount_root_readonly() -> Result<(), String> {
    let root = cstring(b"/").map_err(|e| e.to_string())?;
    let locked = locked_flags(&root);
    mount_raw(
        None,
        &root,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked,
        None,
    )
    .map_err(|e| format!("make the rootfs read-only: {e}"))
}

/// Masks `path` (after pivot_root): /dev/null over a file, an empty
/// read-only tmpfs over a directory; a missing path needs nothing.
pub fn mask(path: &str) -> Result<(), String> {
    let target = cstring(path.as_bytes()).map_err(|e| e.to_string())?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let r = if meta.is_dir() {
        let tmpfs = cstring(b"tmpfs").map_err(|e| e.to_string())?;
        mount_raw(Some(&tmpfs), &target, Some(&tmpfs), libc::MS_RDONLY, None)
    } else {
        let null = cstring(b"/dev/null").map_err(|e| e.to_string())?;
        mount_raw(Some(&null), &target, None, libc::MS_BIND, None)
    };
    r.map_err(|e| format!("mask {path}: {e}"))
}

/// Makes `path` (after pivot_root) read-only: bound onto itself, remounted.
pub fn make_readonly(path: &str) -> Result<(), String> {
    let target = cstring(path.as_bytes()).map_err(|e| e.to_string())?;
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount_raw(
        Some(&target),
        &target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| format!("readonly {path}: {e}"))?;
    let locked = locked_flags(&target);
    mount_raw(
        None,
        &target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | locked,
        None,
    )
    .map_err(|e| format!("readonly {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_flags_propagation_and_data() {
        let o = parse_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "ro".into(),
            "rw".into(),
            "rbind".into(),
            "rslave".into(),
        ]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(
            o.data,
            vec!["mode=755".to_string(), "size=65536k".to_string()]
        );
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, libc::MS_SLAVE | libc::MS_REC);
        assert_eq!(parse_options(&["ro".into()]).flags, libc::MS_RDONLY);
    }
}
