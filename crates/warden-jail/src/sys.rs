//! The jail's Linux system calls, each behind a small safe wrapper. This is
//! the one module with `unsafe` for syscalls; everything else calls these.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Forks with new namespaces: like fork(2), the child continues from here
/// with a copy of the address space, and gets 0.
///
/// # Safety
/// The caller must be single-threaded (the child only has the calling
/// thread), and the child must only `exec` or `_exit`, never return into
/// code that assumes the parent's process identity.
#[allow(unsafe_code)]
pub unsafe fn clone_fork(flags: libc::c_ulong) -> io::Result<libc::pid_t> {
    let flags = flags | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone with a null stack behaves like fork(2): the child
    // runs on a copy of the parent's stack. The caller guarantees the
    // process is single-threaded, so no lock is held by a vanished thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    check_long(ret).map(|pid| pid as libc::pid_t)
}

/// Plain fork(2).
///
/// # Safety
/// Same contract as [`clone_fork`].
#[allow(unsafe_code)]
pub unsafe fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the caller guarantees the process is single-threaded.
    check(unsafe { libc::fork() })
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and skips atexit handlers and stdio
    // flushing, which must not run twice in a forked child.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(code)
    }
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for socketpair to fill.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded; both fds are fresh and unowned.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable slice of buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a valid writable slice of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(n as usize);
    }
}

/// Writes a whole small file by path (used for /proc and cgroup files).
pub fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: path is a valid NUL-terminated string.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: open succeeded and we own the descriptor from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    write_all(fd.as_raw_fd(), data)
}

pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is either null (allowed by mount(2) for these
    // arguments) or a valid NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    })
    .map(drop)
}

pub fn umount_detach(target: &CStr) -> io::Result<()> {
    // SAFETY: target is a valid NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

pub fn pivot_root_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: both arguments are valid NUL-terminated strings; pivot_root
    // with new_root == put_old stacks the old root on top of the new one.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) }).map(drop)
}

pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: path is a valid NUL-terminated string.
    check(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: name is a valid buffer of name.len() bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes only flags.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// Marks every descriptor from `first` up close-on-exec.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    })
    .map(drop)
}

/// The hard limit of `resource` for this process.
pub fn hard_rlimit(resource: libc::__rlimit_resource_t) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit struct for the kernel to fill.
    check(unsafe { libc::getrlimit(resource, &mut lim) })?;
    Ok(lim.rlim_max)
}

/// Raises this process's hard limit of `resource` to `hard` (root may),
/// keeping its soft limit.
pub fn raise_hard_rlimit(resource: libc::__rlimit_resource_t, hard: u64) -> io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit struct for the kernel to fill.
    check(unsafe { libc::getrlimit(resource, &mut lim) })?;
    lim.rlim_max = hard;
    // SAFETY: lim is a valid rlimit struct.
    check(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: lim is a valid rlimit struct.
    check(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the prctl options used here take integer arguments only.
    check(unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
    .map(drop)
}

/// Drops every capability: bounding set, ambient set, then the
/// effective/permitted/inheritable sets; locks securebits so that uid 0
/// could not regain them either.
pub fn drop_all_capabilities() -> io::Result<()> {
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
    const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
    const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;
    prctl(
        libc::PR_SET_SECUREBITS,
        SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_NO_SETUID_FIXUP
            | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
    )?;
    for cap in 0..64 {
        match prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    // SAFETY: integer-only prctl.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data match the kernel's v3 layout (one header,
    // two data words); capset only reads them.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
}

/// Clears the effective, permitted and inheritable capability sets (which
/// needs no privilege: they only shrink).
fn clear_capability_sets() -> io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [0u32; 6];
    // SAFETY: header and data match the kernel's v3 layout (one header,
    // two data words of three u32 each); capset only reads them.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
}

/// The credentials of a task as the host sees them (`/proc/PID/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIds {
    /// Real, effective, saved and file-system uid.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<libc::gid_t>,
}

impl TaskIds {
    pub fn of(pid: libc::pid_t) -> io::Result<TaskIds> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        TaskIds::parse(&status)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc status"))
    }

    fn parse(status: &str) -> Option<TaskIds> {
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).map(|v| {
                v.split_whitespace()
                    .map(|n| n.parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
            })
        };
        let four = |v: Vec<u32>| <[u32; 4]>::try_from(v).ok();
        Some(TaskIds {
            uids: four(field("Uid:")?.ok()?)?,
            gids: four(field("Gid:")?.ok()?)?,
            groups: field("Groups:")?.ok()?,
        })
    }
}

/// Connects socket `sock` to the pathname unix address `addr` (the raw
/// sockaddr_un) as the task it belongs to would: a child process enters
/// the task's mount namespace (`mnt`), its root and working directory
/// (`root`, `cwd`: its /proc links, opened by the caller) and takes its
/// uids, gids and groups with no capabilities, so that the path is looked
/// up in the task's own view with its own permissions. The calling process
/// changes in nothing. `sock`'s send timeout bounds a blocking connect.
pub fn connect_unix_as(
    mnt: RawFd,
    root: RawFd,
    cwd: RawFd,
    ids: &TaskIds,
    sock: RawFd,
    addr: &[u8],
) -> io::Result<()> {
    // SAFETY: fork in a multi-threaded process: the child calls only
    // async-signal-safe syscalls on memory that was valid before the fork
    // (the descriptors, `ids` and `addr`), then _exit; it never returns
    // into Rust code that might take a lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let errno = (|| -> io::Result<()> {
            // SAFETY: integer-only syscalls on descriptors the parent
            // holds open.
            check(unsafe { libc::setns(mnt, libc::CLONE_NEWNS) })?;
            // SAFETY: as above.
            check(unsafe { libc::fchdir(root) })?;
            // SAFETY: a static, NUL-terminated path.
            check(unsafe { libc::chroot(c".".as_ptr()) })?;
            // SAFETY: as above.
            check(unsafe { libc::fchdir(cwd) })?;
            // SAFETY: groups is a valid slice of gid_t of the length passed.
            check(unsafe { libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) })?;
            let [rg, eg, sg, fg] = ids.gids;
            // SAFETY: integer-only calls.
            check(unsafe { libc::setresgid(rg, eg, sg) })?;
            // SAFETY: integer-only call.
            unsafe { libc::setfsgid(fg) };
            let [ru, eu, su, fu] = ids.uids;
            // SAFETY: integer-only calls.
            check(unsafe { libc::setresuid(ru, eu, su) })?;
            // SAFETY: integer-only call.
            unsafe { libc::setfsuid(fu) };
            // A task of uid 0 keeps root's capabilities through setresuid.
            clear_capability_sets()?;
            connect_raw(sock, addr)
        })()
        .err()
        .and_then(|e| e.raw_os_error())
        .unwrap_or(0);
        exit_now(errno.clamp(0, 255));
    }
    let (_, status) = loop {
        match waitpid(pid, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        None => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: integer-only prctl.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
    .map(drop)
}

/// Installs a seccomp filter and returns its user-notification listener.
pub fn seccomp_install_with_listener(filter: &[libc::sock_filter]) -> io::Result<OwnedFd> {
    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `filter`, which lives across the call; the
    // kernel copies the program.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    })?;
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Most descriptors sent in one message.
pub const MAX_FDS: usize = 8;

/// Sends up to [`MAX_FDS`] descriptors (possibly none) in one message
/// over a unix socket (SCM_RIGHTS).
pub fn send_fds(socket: RawFd, fds: &[RawFd]) -> io::Result<()> {
    send_fds_with(socket, &[0u8], fds)
}

/// Sends `payload` (at least one byte) with up to [`MAX_FDS`] descriptors
/// in one message (SCM_RIGHTS).
pub fn send_fds_with(socket: RawFd, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS || payload.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors, or nothing to send",
        ));
    }
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation; 8 fds fit in 64 bytes.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as usize;
        // SAFETY: msg_control points at a buffer of at least msg_controllen
        // bytes, so the first header and its data are inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg and everything it points to are valid for the call.
    let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message sent by [`send_fds`]: `Ok(None)` on end of stream,
/// else the descriptors it carried (possibly none).
pub fn recv_fds(socket: RawFd) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: msg points at valid buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    let mut out = Vec::new();
    // SAFETY: recvmsg filled msg; we only read a header of type
    // SCM_RIGHTS, and only as many descriptors as its length holds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let data_len = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
            let count = (data_len / std::mem::size_of::<RawFd>()).min(MAX_FDS);
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for i in 0..count {
                out.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
            }
        }
    }
    Ok(Some(out))
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes only integers.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// waitpid(2) retrying on EINTR; returns (pid, raw status).
pub fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid int for waitpid to fill.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok((ret, status));
    }
}

/// Bytes used and total of the filesystem at `path`, and whether it has
/// no free block or no free inode left.
pub fn fs_usage(path: &CStr) -> io::Result<(u64, u64, bool)> {
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and st is a valid statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = st.f_frsize as u64;
    let total = st.f_blocks as u64 * block;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * block;
    let full = st.f_bavail == 0 || (st.f_files > 0 && st.f_favail == 0);
    Ok((used, total, full))
}

/// Clock ticks per second (the unit of CPU times in /proc) and the page
/// size (of resident sizes there).
pub fn proc_units() -> (u64, u64) {
    // SAFETY: sysconf takes an integer and returns one.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (ticks.max(1) as u64, page.max(1) as u64)
}

/// Children's resource usage: (user+system CPU in µs, max RSS in bytes).
pub fn children_usage() -> (u64, u64) {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is a valid rusage for the call to fill.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let us = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    (
        us(usage.ru_utime) + us(usage.ru_stime),
        usage.ru_maxrss as u64 * 1024,
    )
}

pub fn execve(
    path: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Error {
    // SAFETY: path is NUL-terminated; argv and envp are NULL-terminated
    // arrays of pointers to strings that the caller keeps alive.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Opens a directory or file beneath `dirfd` without following symlinks
/// anywhere on the way (openat2 RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH).
pub fn open_beneath(dirfd: RawFd, path: &CStr, flags: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; zero is a valid value of every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags | libc::O_CLOEXEC as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: how is a valid open_how of the size passed; path is
    // NUL-terminated.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn mkdirat(dirfd: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: name is NUL-terminated.
    check(unsafe { libc::mkdirat(dirfd, name.as_ptr(), mode) }).map(drop)
}

/// Creates an empty file to serve as a bind-mount target.
pub fn mkfileat(dirfd: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; O_NOFOLLOW refuses a symlink.
    let fd = check(unsafe {
        libc::openat(
            dirfd,
            name.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644 as libc::c_uint,
        )
    })?;
    // SAFETY: openat succeeded; close our new descriptor.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// Creates the symbolic link `name` in the directory open as `dirfd`.
pub fn symlinkat(target: &CStr, dirfd: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both are NUL-terminated strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dirfd, name.as_ptr()) }).map(drop)
}

/// Creates the file `name` in the directory open as `dirfd`, failing if
/// anything (a symlink included) already has that name; returns it open
/// for writing.
pub fn create_new_file(dirfd: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated.
    let fd = check(unsafe {
        libc::openat(
            dirfd,
            name.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: openat succeeded; the descriptor is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// struct mount_attr for mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_IDMAP: u64 = 0x10_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// open_tree(OPEN_TREE_CLONE | AT_RECURSIVE): a detached copy of the mount
/// tree at `path`, not following a symlink at its end.
pub fn open_tree_clone(path: &CStr) -> io::Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | AT_RECURSIVE
        | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    // SAFETY: path is NUL-terminated; open_tree takes no other pointers.
    let fd = check_long(unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags)
    })?;
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// open_tree(OPEN_TREE_CLONE | AT_RECURSIVE) of what `dirfd` refers to
/// (an `O_PATH` descriptor) when `name` is empty, else of `name` beneath
/// it, not following a symlink at its end.
pub fn open_tree_clone_at(dirfd: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | AT_RECURSIVE
        | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    // SAFETY: name is NUL-terminated; open_tree takes no other pointers.
    let fd =
        check_long(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, name.as_ptr(), flags) })?;
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// mount_setattr(AT_RECURSIVE): sets `attr_set` on the mount at `fd` and
/// every mount beneath it, idmapped through `userns` if given.
pub fn mount_setattr_recursive(fd: RawFd, attr_set: u64, userns: Option<RawFd>) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attr_set
            | if userns.is_some() {
                MOUNT_ATTR_IDMAP
            } else {
                0
            },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u as u64),
    };
    // SAFETY: attr is a valid mount_attr of the size passed; the path is
    // the empty string with AT_EMPTY_PATH, so `fd` itself is the target.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// move_mount: attaches the detached tree `from` onto the directory or
/// file open as `onto`.
pub fn move_mount_onto(from: RawFd, onto: RawFd) -> io::Result<()> {
    // SAFETY: both paths are empty strings with the *_EMPTY_PATH flags, so
    // only the two descriptors are used.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            c"".as_ptr(),
            onto,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Empties the supplementary groups, then sets real, effective and saved
/// gid and uid (in the caller's user namespace).
/// SECBIT_NO_SETUID_FIXUP: a change of uid leaves capabilities alone.
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;

/// Runs `f` with the calling thread's effective uid set to `uid` and its
/// capabilities kept (so that what `f` creates is owned by `uid`, yet made
/// with root's privilege: e.g. a user namespace where unprivileged ones are
/// restricted), then restores uid and securebits. Only this thread
/// changes: the raw syscalls, not libc's, which would change every thread.
pub fn as_thread_euid<T>(uid: u32, f: impl FnOnce() -> T) -> io::Result<T> {
    // SAFETY: integer-only prctl.
    let bits = check(unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) })? as libc::c_ulong;
    prctl(libc::PR_SET_SECUREBITS, bits | SECBIT_NO_SETUID_FIXUP)?;
    if let Err(e) = set_thread_euid(uid) {
        let _ = prctl(libc::PR_SET_SECUREBITS, bits);
        return Err(e);
    }
    let out = f();
    // The saved uid is still 0: switching back needs no privilege.
    set_thread_euid(0)?;
    prctl(libc::PR_SET_SECUREBITS, bits)?;
    Ok(out)
}

/// Sets the calling thread's effective uid only (real and saved uids are
/// kept).
fn set_thread_euid(uid: u32) -> io::Result<()> {
    // SAFETY: integer-only syscall; -1 leaves the real and saved uids as
    // they are.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_setresuid,
            -1 as libc::c_long,
            uid as libc::c_long,
            -1 as libc::c_long,
        )
    };
    check_long(ret).map(drop)
}

pub fn switch_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a zero-length group list with a null pointer is valid.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: integer-only calls.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: integer-only call.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// Brings the loopback interface up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes only integers.
    let sock =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: the descriptor is new and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq; SIOCGIFFLAGS fills its flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the flags member of the union was just filled by the kernel.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: req is a valid ifreq for SIOCSIFFLAGS to read.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }).map(drop)
}

/// The loopback interface's index in the calling thread's network
/// namespace.
fn loopback_index() -> io::Result<u32> {
    // SAFETY: the name is a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// Sends one rtnetlink request (`kind`, with `body` after its header) and
/// waits for the kernel's acknowledgement.
fn netlink_request(kind: u16, body: &[u8]) -> io::Result<()> {
    let total = 16 + body.len();
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    msg.extend_from_slice(body);
    // SAFETY: socket takes only integers.
    let sock = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: the descriptor is new and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: msg is a valid buffer of msg.len() bytes; with no address,
    // a netlink socket sends to the kernel.
    let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 256];
    // SAFETY: reply is a valid, writable buffer of its length.
    let got = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // An NLMSG_ERROR message: its error is the i32 after the header (0: ack).
    let got = got as usize;
    if got >= 20 && u16::from_ne_bytes([reply[4], reply[5]]) == libc::NLMSG_ERROR as u16 {
        let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(-errno));
        }
        return Ok(());
    }
    Err(io::Error::other("unexpected netlink reply"))
}

/// An rtnetlink attribute: length, type, payload, padded to 4 bytes.
fn rtattr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Adds `ip` (as a /32 or /128) to the loopback interface of the calling
/// thread's network namespace, by an RTM_NEWADDR netlink request.
pub fn add_loopback_address(ip: std::net::IpAddr) -> io::Result<()> {
    let (family, bytes): (u8, Vec<u8>) = match ip {
        std::net::IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        std::net::IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    let prefix = if family == libc::AF_INET as u8 {
        32
    } else {
        128
    };
    // ifaddrmsg, then the local and the peer address.
    let mut body = vec![family, prefix, 0, libc::RT_SCOPE_HOST];
    body.extend_from_slice(&loopback_index()?.to_ne_bytes());
    rtattr(&mut body, libc::IFA_LOCAL, &bytes);
    rtattr(&mut body, libc::IFA_ADDRESS, &bytes);
    netlink_request(libc::RTM_NEWADDR, &body)
}

/// Makes every IPv4 and IPv6 destination local to the loopback of the
/// calling thread's network namespace (`local default dev lo`, table
/// local): a connect to an address nothing listens on is answered at
/// once (RST, or ICMP port unreachable) on the loopback, where it can be
/// seen, instead of failing before any packet exists.
pub fn route_everything_to_loopback() -> io::Result<()> {
    let index = loopback_index()?;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        // rtmsg: family, dst_len 0 (default), src_len, tos, table,
        // protocol, scope, type; then flags (u32).
        let mut body = vec![
            family,
            0,
            0,
            0,
            libc::RT_TABLE_LOCAL,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_HOST,
            libc::RTN_LOCAL,
        ];
        body.extend_from_slice(&0u32.to_ne_bytes());
        rtattr(&mut body, libc::RTA_OIF, &index.to_ne_bytes());
        let made = netlink_request(libc::RTM_NEWROUTE, &body);
        // IPv6 may be off in the namespace: then nothing reaches it anyway.
        if family == libc::AF_INET as u8 {
            made?;
        }
    }
    Ok(())
}

/// A packet socket on the loopback of the calling thread's network
/// namespace (network-layer packets, no link header) passing only what
/// `filter` accepts; reads time out after 100 ms.
pub fn loopback_packet_socket(filter: &[libc::sock_filter]) -> io::Result<OwnedFd> {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket takes only integers.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    })?;
    // SAFETY: the descriptor is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `filter`, alive for the call; the kernel
    // copies the program.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    // SAFETY: sockaddr_ll is plain data; zero is valid for every field.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = loopback_index()? as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size passed.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: timeout is a valid timeval of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// One packet from a packet socket into `buf`: its length, and whether
/// it was outgoing (each loopback packet is seen leaving and arriving).
pub fn recv_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    // SAFETY: sockaddr_ll is plain data; zero is valid for every field.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: buf and addr are valid, writable buffers of the sizes given.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut addr as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, addr.sll_pkttype == libc::PACKET_OUTGOING))
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: fds is a valid slice of pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

/// Whether the other end of a pipe is closed (checked without blocking).
pub fn hung_up(fd: RawFd) -> bool {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    matches!(poll(&mut fds, 0), Ok(n) if n > 0 && fds[0].revents & libc::POLLHUP != 0)
}

/// Whether standard input is closed or is /dev/null (then the program
/// gets the jail's own /dev/null instead of a pump).
pub fn stdin_is_null() -> bool {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid stat buffer.
    if unsafe { libc::fstat(0, &mut st) } != 0 {
        return true;
    }
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3)
}

/// Whether writes to `fd` cannot block: a regular file or /dev/null.
pub fn never_blocks(fd: RawFd) -> bool {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return true;
    }
    let kind = st.st_mode & libc::S_IFMT;
    kind == libc::S_IFREG || (kind == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3))
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL takes integers only.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

pub fn cstring(s: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// access(2) W_OK: whether the real user may write in `path`.
pub fn writable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

pub fn getgid() -> u32 {
    // SAFETY: getgid cannot fail.
    unsafe { libc::getgid() }
}

pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT.
fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t for these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaddset(&mut set, sig);
        }
    }
    set
}

/// Blocks (`block`) or unblocks the termination signals in the calling
/// thread: a blocked one stays pending for whoever takes it later (a
/// signalfd, or a handler once unblocked).
pub fn mask_termination_signals(block: bool) -> io::Result<()> {
    let set = termination_set();
    let how = if block {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: set is initialised; the old mask is not needed.
    check(unsafe { libc::sigprocmask(how, &set, std::ptr::null_mut()) }).map(drop)
}

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGQUIT and returns a signalfd that
/// reports them, so the supervisor can tear the jail down and still write
/// its report.
pub fn signalfd_for_termination() -> io::Result<OwnedFd> {
    let set = termination_set();
    mask_termination_signals(true)?;
    // SAFETY: set is initialised.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unblocks every signal (in the jailed child, before exec).
pub fn unblock_all_signals() {
    // SAFETY: set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub fn read_signal(fd: RawFd) -> Option<u32> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    // SAFETY: info is a writable buffer of its own size.
    let n = unsafe {
        libc::read(
            fd,
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            std::mem::size_of::<libc::signalfd_siginfo>(),
        )
    };
    (n == std::mem::size_of::<libc::signalfd_siginfo>() as isize).then_some(info.ssi_signo)
}

/// Seccomp user-notification: receive one request, answer it with an errno.
pub mod notify {
    use super::*;

    #[repr(C)]
    #[derive(Default)]
    pub struct SeccompData {
        pub nr: i32,
        pub arch: u32,
        pub instruction_pointer: u64,
        pub args: [u64; 6],
    }

    #[repr(C)]
    #[derive(Default)]
    pub struct Notif {
        pub id: u64,
        pub pid: u32,
        pub flags: u32,
        pub data: SeccompData,
    }

    #[repr(C)]
    struct Resp {
        id: u64,
        val: i64,
        error: i32,
        flags: u32,
    }

    // _IOWR('!', 0, struct seccomp_notif) and _IOWR('!', 1, struct seccomp_notif_resp)
    const NOTIF_RECV: libc::c_ulong = 0xC050_2100;
    const NOTIF_SEND: libc::c_ulong = 0xC018_2101;

    pub fn receive(listener: RawFd) -> io::Result<Notif> {
        let mut notif = Notif::default();
        // SAFETY: notif is a zeroed struct of the size encoded in the
        // ioctl number, as the kernel requires.
        check(unsafe { libc::ioctl(listener, NOTIF_RECV, &mut notif as *mut Notif) })?;
        Ok(notif)
    }

    pub fn deny(listener: RawFd, id: u64, errno: i32) -> io::Result<()> {
        respond(listener, id, 0, -errno, 0)
    }

    /// Answers the call as if it had returned `val`.
    pub fn succeed(listener: RawFd, id: u64, val: i64) -> io::Result<()> {
        respond(listener, id, val, 0, 0)
    }

    fn respond(listener: RawFd, id: u64, val: i64, error: i32, flags: u32) -> io::Result<()> {
        let resp = Resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: resp matches struct seccomp_notif_resp.
        check(unsafe { libc::ioctl(listener, NOTIF_SEND, &resp as *const Resp) }).map(drop)
    }

    /// Whether notification `id` is still pending: its task is still
    /// blocked in that call (so memory read from it was that call's, and
    /// its pid was not reused).
    pub fn id_valid(listener: RawFd, id: u64) -> bool {
        // _IOW('!', 2, __u64)
        const NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
        // SAFETY: the argument is a pointer to a u64 the kernel reads.
        unsafe { libc::ioctl(listener, NOTIF_ID_VALID, &id as *const u64) == 0 }
    }

    #[repr(C)]
    struct AddFd {
        id: u64,
        flags: u32,
        srcfd: u32,
        newfd: u32,
        newfd_flags: u32,
    }

    /// Installs `src` (ours) in the notifying task as its descriptor
    /// `target`, replacing what was there (SECCOMP_ADDFD_FLAG_SETFD).
    pub fn install_fd(
        listener: RawFd,
        id: u64,
        src: RawFd,
        target: RawFd,
        cloexec: bool,
    ) -> io::Result<()> {
        // _IOW('!', 3, struct seccomp_notif_addfd)
        const NOTIF_ADDFD: libc::c_ulong = 0x4018_2103;
        const SECCOMP_ADDFD_FLAG_SETFD: u32 = 1;
        let add = AddFd {
            id,
            flags: SECCOMP_ADDFD_FLAG_SETFD,
            srcfd: src as u32,
            newfd: target as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: add matches struct seccomp_notif_addfd; the kernel only
        // reads it.
        check(unsafe { libc::ioctl(listener, NOTIF_ADDFD, &add as *const AddFd) }).map(drop)
    }
}

/// The address range of this process's argument strings (what
/// `/proc/PID/cmdline` shows), from `/proc/self/stat`.
pub fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may
    // itself contain spaces or parentheses: field 3 is the first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (start < end && end - start < (1 << 21)).then_some((start, end))
}

/// Overwrites this process's argument strings with `name` and zeros, so
/// that `/proc/PID/cmdline` of the jail's init does not show the caller's
/// command line (policy paths, `--env NAME=VALUE`) to the program.
///
/// # Safety
///
/// `area` must come from [`argv_area`] of this process or of the process
/// it was forked from, and no other thread may be running.
pub unsafe fn scrub_argv(area: (usize, usize), name: &[u8]) {
    let (start, end) = area;
    let len = end - start;
    // SAFETY: [start, end) is the argument strings area the kernel reports
    // for this process (inherited unchanged across fork): part of the
    // initial stack mapping, readable and writable for the life of the
    // process, and no other thread runs (the caller's contract). Nothing
    // borrows it as Rust data; Rust's `env::args` would read valid, empty
    // strings afterwards.
    #[allow(unsafe_code)]
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, len);
        area.fill(0);
        let n = name.len().min(len.saturating_sub(1));
        area[..n].copy_from_slice(&name[..n]);
    }
}

/// Joins the `nstype` namespace open as `fd` (a /proc/PID/ns file).
pub fn setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns takes only integers.
    check(unsafe { libc::setns(fd, nstype) }).map(drop)
}

/// Reads up to `buf.len()` bytes at `addr` in process `pid`; how many.
pub fn read_process_memory(pid: libc::pid_t, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec covers exactly `buf`, which the kernel
    // writes; the remote one is only read, in the other process, by the
    // kernel (a bad address there is EFAULT, not our memory).
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A copy of descriptor `fd` of process `pid` (pidfd_open + pidfd_getfd).
pub fn take_fd_copy(pid: libc::pid_t, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor.
    let pidfd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: pidfd is the descriptor just returned, owned here only.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes integers and returns a new descriptor.
    let copy =
        check_long(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: a new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

/// Makes closing TCP socket `fd` send a reset (SO_LINGER with a zero
/// timeout): the peer's next read fails with ECONNRESET.
pub fn reset_on_close(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: linger is a valid struct linger of the size passed, only read.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// An integer socket option of `fd`.
pub fn socket_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writing, len holds value's size.
    check(unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) })?;
    Ok(value)
}

/// Sets an integer socket option of `fd`.
pub fn set_socket_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: i32,
) -> io::Result<()> {
    // SAFETY: value is a c_int of the size passed, only read.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The file status flags of `fd` (fcntl F_GETFL).
pub fn status_flags(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no argument.
    check(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// Bytes the program wrote (sent once, or still waiting to be sent) and
/// bytes received on TCP socket `fd`, from its tcp_info: tcpi_bytes_sent
/// less tcpi_bytes_retrans plus tcpi_notsent_bytes, and
/// tcpi_bytes_received less the peer's FIN (the kernel counts sequence
/// space, so a FIN counts one).
pub fn tcp_bytes(fd: RawFd) -> io::Result<(u64, u64)> {
    let info = tcp_info(fd)?;
    // TCP states (include/net/tcp_states.h) after the peer's FIN.
    const TIME_WAIT: u8 = 6;
    const CLOSE: u8 = 7;
    const CLOSE_WAIT: u8 = 8;
    const LAST_ACK: u8 = 9;
    const CLOSING: u8 = 11;
    let their_fin_seen = matches!(info[0], TIME_WAIT | CLOSE | CLOSE_WAIT | LAST_ACK | CLOSING);
    let notsent = u32::from_ne_bytes(info[144..148].try_into().unwrap_or([0; 4]));
    let sent = u64_at(&info, 200).saturating_sub(u64_at(&info, 208)) + u64::from(notsent);
    let received = u64_at(&info, 128).saturating_sub(u64::from(their_fin_seen));
    Ok((sent, received))
}

/// How long TCP socket `fd` has had no data either way (the smaller of
/// tcp_info's tcpi_last_data_sent and tcpi_last_data_recv, ms).
pub fn tcp_idle(fd: RawFd) -> io::Result<std::time::Duration> {
    let info = tcp_info(fd)?;
    let at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().unwrap_or([0; 4]));
    // tcpi_last_data_sent at 44, tcpi_last_data_recv at 52.
    Ok(std::time::Duration::from_millis(u64::from(
        at(44).min(at(52)),
    )))
}

fn u64_at(info: &[u8], o: usize) -> u64 {
    u64::from_ne_bytes(info[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// struct tcp_info of `fd`, up to tcpi_bytes_retrans (216 bytes: Linux
/// 4.19 and later).
fn tcp_info(fd: RawFd) -> io::Result<[u8; 216]> {
    let mut info = [0u8; 216];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: info and len are valid for writing, len holds info's size.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    if (len as usize) < info.len() {
        return Err(io::Error::other(
            "tcp_info without byte counters (Linux before 4.19)",
        ));
    }
    Ok(info)
}

/// shutdown(fd, SHUT_RDWR).
pub fn shutdown(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes integers.
    check(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) }).map(drop)
}

/// The inode number of `fd`.
pub fn inode(fd: RawFd) -> io::Result<u64> {
    // SAFETY: st is written by fstat before it is read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_ino)
}

/// The cookie of the network namespace socket `fd` belongs to
/// (SO_NETNS_COOKIE, Linux 5.14).
pub fn netns_cookie(fd: RawFd) -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: value and len are valid for writing, len holds value's size.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// connect(2) of `fd` to the socket address bytes `addr`.
pub fn connect_raw(fd: RawFd, addr: &[u8]) -> io::Result<()> {
    // sockaddr_storage is aligned for every family; the bytes are copied
    // into it rather than passed from an unaligned buffer.
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = addr
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: storage is at least `len` bytes and does not overlap addr.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    };
    // SAFETY: storage holds `len` initialized bytes of a socket address.
    check(unsafe {
        libc::connect(
            fd,
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    })
    .map(drop)
}

/// SO_SNDTIMEO of `fd` (`None`: none).
pub fn send_timeout(fd: RawFd) -> io::Result<Option<std::time::Duration>> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: tv and len are valid for writing, len holds tv's size.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    })?;
    let d = std::time::Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.max(0) as u32) * 1000);
    Ok((!d.is_zero()).then_some(d))
}

/// Sets SO_SNDTIMEO of `fd` (`None`: none).
pub fn set_send_timeout(fd: RawFd, timeout: Option<std::time::Duration>) -> io::Result<()> {
    let d = timeout.unwrap_or_default();
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: tv is a timeval of the size passed, only read.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::TaskIds;

    #[test]
    fn task_ids_are_read_from_a_proc_status() {
        let status = "Name:\tpython3\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65533\nGroups:\t\nNSpid:\t9\t1\n";
        assert_eq!(
            TaskIds::parse(status),
            Some(TaskIds {
                uids: [65534; 4],
                gids: [65534, 65534, 65534, 65533],
                groups: vec![],
            })
        );
        let with_groups = status.replace("Groups:\t", "Groups:\t4 24 ");
        assert_eq!(TaskIds::parse(&with_groups).unwrap().groups, vec![4, 24]);
        assert_eq!(TaskIds::parse("Uid:\t1\t2\n"), None);
        assert_eq!(TaskIds::parse(&status.replace("65533", "x")), None);
        // The caller's own status is readable.
        assert!(TaskIds::of(std::process::id() as i32).is_ok());
    }
}
