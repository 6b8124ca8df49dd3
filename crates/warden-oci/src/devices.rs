//! Device nodes in the container's /dev: the default set every OCI
//! runtime provides on a tmpfs /dev, and `linux.devices`. In a user
//! namespace mknod is not allowed: the host's node is bound instead.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::mounts::resolve_in_root;

/// null, zero, full, random, urandom, tty (character devices, 0666).
const DEFAULTS: &[(&str, u32, u32)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

const LINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
];

pub fn defaults(root: RawFd, userns: bool) -> Result<(), String> {
    for (path, major, minor) in DEFAULTS {
        node(
            root,
            Path::new(path),
            libc::S_IFCHR,
            *major,
            *minor,
            0o666,
            None,
            userns,
        )?;
    }
    for (link, target) in LINKS {
        let parent = resolve_in_root(root, Path::new("/dev"), true)
            .map_err(|e| format!("open /dev: {e}"))?;
        let name = CString::new(link.trim_start_matches("/dev/")).map_err(|e| e.to_string())?;
        let to = CString::new(*target).map_err(|e| e.to_string())?;
        // SAFETY: both strings are NUL-terminated; parent is open.
        let r = unsafe { libc::symlinkat(to.as_ptr(), parent.as_raw_fd(), name.as_ptr()) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("symlink {link}: {e}"));
            }
        }
    }
    Ok(())
}

pub fn make(root: RawFd, d: &LinuxDevice, userns: bool) -> Result<(), String> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(format!(
                "config.json: linux.devices: {}: type \"a\" is not a device",
                d.path().display()
            ))
        }
    };
    let (major, minor) = (
        u32::try_from(d.major())
            .map_err(|_| format!("linux.devices: {}: bad major", d.path().display()))?,
        u32::try_from(d.minor())
            .map_err(|_| format!("linux.devices: {}: bad minor", d.path().display()))?,
    );
    let owner = d.uid().zip(d.gid());
    node(
        root,
        d.path(),
        kind,
        major,
        minor,
        d.file_mode().unwrap_or(0o666) & 0o7777,
        owner,
        userns,
    )
}

#[allow(clippy::too_many_arguments)]
fn node(
    root: RawFd,
    path: &Path,
    kind: libc::mode_t,
    major: u32,
    minor: u32,
    mode: u32,
    owner: Option<(u32, u32)>,
    userns: bool,
) -> Result<(), String> {
    let what = |e: std::io::Error| format!("device {}: {e}", path.display());
    let parent_path = path.parent().unwrap_or(Path::new("/"));
    let parent = resolve_in_root(root, parent_path, true).map_err(what)?;
    let name =
        CString::new(path.file_name().unwrap_or_default().as_bytes()).map_err(|e| e.to_string())?;
    if userns {
        // The host's node, bound onto an empty file.
        let target = resolve_in_root(root, path, false).map_err(what)?;
        let host = CString::new(format!(
            "/dev/{}",
            path.strip_prefix("/dev").unwrap_or(path).display()
        ))
        .map_err(|e| e.to_string())?;
        let onto = CString::new(format!("/proc/self/fd/{}", target.as_raw_fd()))
            .map_err(|e| e.to_string())?;
        return warden_jail::sys::mount(Some(&host), &onto, None, libc::MS_BIND, None)
            .map_err(what);
    }
    // SAFETY: name is NUL-terminated, parent an open directory.
    let r = unsafe {
        libc::mknodat(
            parent.as_raw_fd(),
            name.as_ptr(),
            kind | mode as libc::mode_t,
            libc::makedev(major, minor),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(what(e));
        }
    }
    // SAFETY: name is NUL-terminated, parent an open directory; the mode
    // is set exactly (mknod's is cut by the umask).
    unsafe { libc::fchmodat(parent.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) };
    if let Some((uid, gid)) = owner {
        // SAFETY: as above; AT_SYMLINK_NOFOLLOW: the node itself.
        let r = unsafe {
            libc::fchownat(
                parent.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r < 0 {
            return Err(what(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
