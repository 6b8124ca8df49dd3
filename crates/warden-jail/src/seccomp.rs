//! The jail's seccomp-bpf program: an allowlist for ordinary interpreters,
//! compiled once per process. Anything not allowed is sent to the
//! supervisor by user notification, recorded as a violation by name, and
//! refused with EPERM; a foreign ABI (i386, x32) is treated the same way.

use std::fmt;

use syscalls::x86_64::Sysno;

/// Syscalls an ordinary interpreter (python3, node, php, sh) needs: file
/// I/O beneath the jail's root, memory, processes and threads (clone is
/// filtered below), signals, time, polling, sockets (socket is filtered by
/// family below; the network namespace has only loopback) and System V IPC
/// (private to the IPC namespace). Kept as data; naming the `Sysno`
/// variants makes an unknown syscall a compile error. Each entry acts on
/// the caller itself, on what it already holds, or on what its namespaces
/// confine; the later additions say why they cannot reach outside.
const ALLOWED: &[Sysno] = &[
    Sysno::read,
    Sysno::write,
    Sysno::readv,
    Sysno::writev,
    Sysno::pread64,
    Sysno::pwrite64,
    Sysno::preadv,
    Sysno::pwritev,
    Sysno::preadv2,
    Sysno::pwritev2,
    Sysno::lseek,
    Sysno::close,
    Sysno::close_range,
    Sysno::dup,
    Sysno::dup2,
    Sysno::dup3,
    Sysno::fcntl,
    Sysno::flock,
    Sysno::fsync,
    Sysno::fdatasync,
    Sysno::sync,
    Sysno::syncfs,
    Sysno::sync_file_range,
    Sysno::ftruncate,
    Sysno::truncate,
    Sysno::fadvise64,
    Sysno::readahead,
    Sysno::sendfile,
    Sysno::splice,
    Sysno::tee,
    Sysno::vmsplice,
    Sysno::copy_file_range,
    Sysno::pipe,
    Sysno::pipe2,
    Sysno::stat,
    Sysno::fstat,
    Sysno::lstat,
    Sysno::newfstatat,
    Sysno::statx,
    Sysno::statfs,
    Sysno::fstatfs,
    Sysno::access,
    Sysno::faccessat,
    Sysno::faccessat2,
    Sysno::getdents,
    Sysno::getdents64,
    Sysno::getcwd,
    Sysno::chdir,
    Sysno::fchdir,
    Sysno::rename,
    Sysno::renameat,
    Sysno::renameat2,
    Sysno::rmdir,
    Sysno::link,
    Sysno::linkat,
    Sysno::unlink,
    Sysno::unlinkat,
    Sysno::symlink,
    Sysno::symlinkat,
    Sysno::readlink,
    Sysno::readlinkat,
    Sysno::chown,
    Sysno::fchown,
    Sysno::lchown,
    Sysno::fchownat,
    Sysno::umask,
    Sysno::utime,
    Sysno::utimes,
    Sysno::utimensat,
    Sysno::futimesat,
    Sysno::getxattr,
    Sysno::lgetxattr,
    Sysno::fgetxattr,
    Sysno::listxattr,
    Sysno::llistxattr,
    Sysno::flistxattr,
    // Extended attribute writes (cp -p, cp -a and install set ACLs
    // through them, and fail when refused): on files the program may
    // already write. The kernel itself refuses what carries privilege
    // without a capability: security.capability (file capabilities) needs
    // CAP_SETFCAP, other security.* and trusted.* CAP_SYS_ADMIN; an ACL
    // can name only ids mapped in the jail's user namespace (the sandbox
    // user, i.e. the grant's owner), so it grants no other host user more
    // than chmod could.
    Sysno::setxattr,
    Sysno::lsetxattr,
    Sysno::fsetxattr,
    Sysno::removexattr,
    Sysno::lremovexattr,
    Sysno::fremovexattr,
    Sysno::inotify_init,
    Sysno::inotify_init1,
    Sysno::inotify_add_watch,
    Sysno::inotify_rm_watch,
    Sysno::memfd_create,
    Sysno::brk,
    Sysno::mmap,
    Sysno::munmap,
    Sysno::mremap,
    Sysno::mprotect,
    Sysno::msync,
    Sysno::mincore,
    Sysno::madvise,
    Sysno::mlock,
    Sysno::mlock2,
    Sysno::munlock,
    Sysno::mlockall,
    Sysno::munlockall,
    Sysno::get_mempolicy,
    // NUMA placement of the caller's own memory (glibc, libnuma, procps
    // and runtimes probe and set it at start-up): a policy or home node for
    // the calling thread or its own address range. Allocation stays within
    // the nodes the kernel allows the task (cpuset) and is charged to the
    // run's memory cgroup; moving pages another process maps
    // (MPOL_MF_MOVE_ALL) needs CAP_SYS_NICE, which the program lacks.
    Sysno::set_mempolicy,
    Sysno::mbind,
    Sysno::set_mempolicy_home_node,
    // Seals the caller's own mappings against later change: restricts only
    // itself.
    Sysno::mseal,
    // A CET shadow stack in the caller's own address space (glibc's
    // makecontext when shadow stacks are on): memory like mmap's.
    Sysno::map_shadow_stack,
    Sysno::membarrier,
    Sysno::pkey_alloc,
    Sysno::pkey_free,
    Sysno::pkey_mprotect,
    Sysno::fork,
    Sysno::vfork,
    Sysno::execve,
    Sysno::execveat,
    Sysno::exit,
    Sysno::exit_group,
    Sysno::wait4,
    Sysno::waitid,
    Sysno::set_tid_address,
    Sysno::set_robust_list,
    Sysno::get_robust_list,
    Sysno::futex,
    Sysno::futex_waitv,
    // futex2: the same waits and wake-ups as futex, on the caller's own
    // or shared memory it has mapped.
    Sysno::futex_wake,
    Sysno::futex_wait,
    Sysno::futex_requeue,
    Sysno::rseq,
    Sysno::arch_prctl,
    Sysno::sched_yield,
    Sysno::sched_getaffinity,
    Sysno::sched_setaffinity,
    Sysno::sched_getparam,
    Sysno::sched_setparam,
    Sysno::sched_getscheduler,
    Sysno::sched_setscheduler,
    Sysno::sched_get_priority_max,
    Sysno::sched_get_priority_min,
    Sysno::sched_rr_get_interval,
    Sysno::sched_getattr,
    Sysno::sched_setattr,
    Sysno::getpriority,
    Sysno::setpriority,
    // I/O priority (ionice), the disk's counterpart of nice: only tasks of
    // the jail's PID namespace can be named (IOPRIO_WHO_USER skips the
    // rest), only those of the caller's uid changed, and the realtime
    // class needs CAP_SYS_NICE or CAP_SYS_ADMIN: what any unprivileged user
    // may do to its own processes.
    Sysno::ioprio_get,
    Sysno::ioprio_set,
    Sysno::getcpu,
    Sysno::getpid,
    Sysno::getppid,
    Sysno::gettid,
    Sysno::getpgid,
    Sysno::setpgid,
    Sysno::getpgrp,
    Sysno::getsid,
    Sysno::setsid,
    Sysno::getuid,
    Sysno::geteuid,
    Sysno::getgid,
    Sysno::getegid,
    Sysno::getresuid,
    Sysno::getresgid,
    Sysno::getgroups,
    Sysno::setuid,
    Sysno::setgid,
    Sysno::setreuid,
    Sysno::setregid,
    Sysno::setresuid,
    Sysno::setresgid,
    Sysno::setfsuid,
    Sysno::setfsgid,
    Sysno::capget,
    Sysno::capset,
    Sysno::getrlimit,
    Sysno::setrlimit,
    Sysno::prlimit64,
    Sysno::getrusage,
    Sysno::times,
    Sysno::uname,
    Sysno::sysinfo,
    Sysno::pidfd_open,
    Sysno::pidfd_send_signal,
    Sysno::landlock_create_ruleset,
    Sysno::landlock_add_rule,
    Sysno::landlock_restrict_self,
    Sysno::rt_sigaction,
    Sysno::rt_sigprocmask,
    Sysno::rt_sigreturn,
    Sysno::rt_sigpending,
    Sysno::rt_sigtimedwait,
    Sysno::rt_sigqueueinfo,
    Sysno::rt_tgsigqueueinfo,
    Sysno::rt_sigsuspend,
    Sysno::sigaltstack,
    Sysno::kill,
    Sysno::tkill,
    Sysno::tgkill,
    Sysno::pause,
    Sysno::alarm,
    Sysno::getitimer,
    Sysno::setitimer,
    Sysno::nanosleep,
    Sysno::clock_nanosleep,
    Sysno::clock_gettime,
    Sysno::clock_getres,
    Sysno::gettimeofday,
    Sysno::time,
    Sysno::timer_create,
    Sysno::timer_settime,
    Sysno::timer_gettime,
    Sysno::timer_getoverrun,
    Sysno::timer_delete,
    Sysno::timerfd_create,
    Sysno::timerfd_settime,
    Sysno::timerfd_gettime,
    Sysno::signalfd,
    Sysno::signalfd4,
    Sysno::eventfd,
    Sysno::eventfd2,
    Sysno::getrandom,
    Sysno::poll,
    Sysno::ppoll,
    Sysno::select,
    Sysno::pselect6,
    Sysno::epoll_create,
    Sysno::epoll_create1,
    Sysno::epoll_ctl,
    Sysno::epoll_wait,
    Sysno::epoll_pwait,
    Sysno::epoll_pwait2,
    Sysno::connect,
    Sysno::accept,
    Sysno::accept4,
    Sysno::bind,
    Sysno::listen,
    Sysno::shutdown,
    Sysno::getsockname,
    Sysno::getpeername,
    Sysno::socketpair,
    Sysno::setsockopt,
    Sysno::getsockopt,
    Sysno::sendto,
    Sysno::recvfrom,
    Sysno::sendmsg,
    Sysno::recvmsg,
    Sysno::sendmmsg,
    Sysno::recvmmsg,
    Sysno::shmget,
    Sysno::shmat,
    Sysno::shmdt,
    Sysno::shmctl,
    Sysno::semget,
    Sysno::semop,
    Sysno::semtimedop,
    Sysno::semctl,
    Sysno::msgget,
    Sysno::msgsnd,
    Sysno::msgrcv,
    Sysno::msgctl,
    Sysno::restart_syscall,
];

/// Namespace-creating clone flags (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET, NEWTIME).
const CLONE_NAMESPACE_FLAGS: u32 = 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000
    | 0x0000_0080;

/// Socket families allowed: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK.
const SOCKET_FAMILIES: &[u32] = &[1, 2, 10, 16];

/// ioctls refused even on the program's own descriptors: TIOCSTI (push
/// input into a terminal), TIOCLINUX, and TIOCSETD: attaching another line
/// discipline (n_hdlc, n_gsm, slip, ...) to one of the jail's ptys would
/// expose kernel code no ordinary program uses, and a known source of
/// privilege escalations.
const DENIED_IOCTLS: &[u32] = &[0x5412, 0x541C, 0x5423];

/// Syscalls with a file-mode argument, and its index.
const MODE_ARGS: &[(Sysno, u32)] = &[
    (Sysno::open, 2),
    (Sysno::openat, 3),
    (Sysno::creat, 1),
    (Sysno::mkdir, 1),
    (Sysno::mkdirat, 2),
    (Sysno::chmod, 1),
    (Sysno::fchmod, 1),
    (Sysno::fchmodat, 2),
    (Sysno::fchmodat2, 2),
];

/// fallocate(2) modes allowed: 0 (allocate and extend, which RLIMIT_FSIZE
/// checks), PUNCH_HOLE|KEEP_SIZE and COLLAPSE_RANGE (free space) and
/// ZERO_RANGE (extends like 0). KEEP_SIZE alone would allocate disk past the
/// file-size limit without growing the file; INSERT_RANGE and UNSHARE_RANGE
/// also allocate without that check.
const FALLOCATE_MODES: &[u32] = &[0, 0x01 | 0x02, 0x08, 0x10];

/// S_ISUID | S_ISGID.
const SETID_BITS: u32 = 0o6000;

/// S_IFMT, the file-type bits of a mode.
const FILE_TYPE_BITS: u32 = 0o170000;

/// mknod(2) and mknodat(2), and the index of their mode argument.
const MKNOD_ARGS: &[(Sysno, u32)] = &[(Sysno::mknod, 1), (Sysno::mknodat, 2)];

/// File types mknod may create: those any unprivileged user may (a regular
/// file, given as 0 or S_IFREG, a FIFO as `mkfifo` makes, a socket inode).
/// Like a file created with open, they live only where the program may
/// write; device nodes (S_IFCHR, S_IFBLK) go to the supervisor.
const MKNOD_TYPES: &[u32] = &[0, 0o100000, 0o010000, 0o140000];

/// seccomp(2) operations allowed: SECCOMP_GET_ACTION_AVAIL, SECCOMP_GET_NOTIF_SIZES.
const SECCOMP_QUERIES: &[u32] = &[2, 3];

/// prctl(2) option that installs a seccomp filter.
const PR_SET_SECCOMP: u32 = 22;

/// personality(2) is allowed only to query (0xffffffff) or to set PER_LINUX.
const PERSONALITY_ALLOWED: &[u32] = &[0xffff_ffff, 0];

pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const fn offset_arg_low(i: u32) -> u32 {
    16 + 8 * i
}

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
pub(crate) const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const JGT_K: u16 = 0x25;
pub(crate) const RET_K: u16 = 0x06;
pub(crate) const ALU_AND_K: u16 = 0x54;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SeccompError {
    #[error("seccomp policy names unknown syscall {0:?}")]
    UnknownSyscall(String),
    #[error("seccomp program too long ({0} instructions)")]
    TooLong(usize),
}

/// A compiled filter, ready to install.
#[derive(Clone)]
pub struct SeccompProgram {
    instructions: Vec<libc::sock_filter>,
}

impl fmt::Debug for SeccompProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SeccompProgram({} instructions)",
            self.instructions.len()
        )
    }
}

/// A classic BPF statement (shared with warden-oci's compiler of OCI profiles).
pub fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A classic BPF jump.
pub fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn sysno(name: &str) -> Result<u32, SeccompError> {
    name.parse::<Sysno>()
        .map(|s| s.id() as u32)
        .map_err(|()| SeccompError::UnknownSyscall(name.to_string()))
}

impl SeccompProgram {
    /// Builds Warden's default jail filter.
    pub fn jail_default() -> Result<Self, SeccompError> {
        Self::build(false)
    }

    /// The jail filter of a run with egress grants: as the default, but
    /// every connect(2) goes to the supervisor, which makes an allowed
    /// connection itself and hands the program its socket (see `egress`).
    pub fn jail_with_egress() -> Result<Self, SeccompError> {
        Self::build(true)
    }

    fn build(egress: bool) -> Result<Self, SeccompError> {
        let mut p = Vec::with_capacity(2 * ALLOWED.len() + 64);
        // Any other ABI goes to the supervisor, which records and refuses it.
        p.push(stmt(LD_W_ABS, OFFSET_ARCH));
        p.push(jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0));
        p.push(stmt(RET_K, RET_USER_NOTIF));
        p.push(stmt(LD_W_ABS, OFFSET_NR));
        p.push(jump(JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(RET_K, RET_USER_NOTIF));

        // clone: refuse new namespaces.
        let block = [
            stmt(LD_W_ABS, offset_arg_low(0)),
            jump(JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1),
            stmt(RET_K, RET_USER_NOTIF),
            stmt(RET_K, RET_ALLOW),
        ];
        push_guarded(&mut p, sysno("clone")?, &block);
        // clone3 passes its flags in memory, which BPF cannot read: answer
        // ENOSYS so libc falls back to clone, which is checked above.
        push_guarded(
            &mut p,
            sysno("clone3")?,
            &[stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32)],
        );
        if egress {
            push_guarded(&mut p, sysno("connect")?, &[stmt(RET_K, RET_USER_NOTIF)]);
        }
        push_guarded(
            &mut p,
            sysno("socket")?,
            &value_block(0, SOCKET_FAMILIES, RET_ALLOW, RET_USER_NOTIF),
        );
        push_guarded(
            &mut p,
            sysno("ioctl")?,
            &value_block(1, DENIED_IOCTLS, RET_USER_NOTIF, RET_ALLOW),
        );
        push_guarded(
            &mut p,
            Sysno::fallocate.id() as u32,
            &value_block(1, FALLOCATE_MODES, RET_ALLOW, RET_USER_NOTIF),
        );
        push_guarded(
            &mut p,
            sysno("personality")?,
            &value_block(0, PERSONALITY_ALLOWED, RET_ALLOW, RET_USER_NOTIF),
        );
        // Calls that create files or change modes: no setuid/setgid bits, so
        // nothing planted in a write grant can become a privileged binary.
        for (call, mode_arg) in MODE_ARGS {
            let block = [
                stmt(LD_W_ABS, offset_arg_low(*mode_arg)),
                jump(JSET_K, SETID_BITS, 0, 1),
                stmt(RET_K, RET_USER_NOTIF),
                stmt(RET_K, RET_ALLOW),
            ];
            push_guarded(&mut p, call.id() as u32, &block);
        }
        // mknod: FIFOs, sockets and regular files (with no setuid/setgid
        // bits); never device nodes.
        for (call, mode_arg) in MKNOD_ARGS {
            let block = masked_value_block(
                *mode_arg,
                FILE_TYPE_BITS | SETID_BITS,
                MKNOD_TYPES,
                RET_ALLOW,
                RET_USER_NOTIF,
            );
            push_guarded(&mut p, call.id() as u32, &block);
        }
        // move_pages on the caller's own pages only (pid 0: libnuma's
        // "which node holds this page" probe and moving its own memory);
        // another process's, even one in the jail, goes to the supervisor.
        push_guarded(
            &mut p,
            Sysno::move_pages.id() as u32,
            &value_block(0, &[0], RET_ALLOW, RET_USER_NOTIF),
        );
        // openat2 passes its mode in memory, out of BPF's reach: ENOSYS
        // makes libc and runtimes fall back to openat, checked above.
        push_guarded(
            &mut p,
            Sysno::openat2.id() as u32,
            &[stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32)],
        );
        // A filter of the program's own could answer a call before ours
        // reports it: installing filters is refused (queries are fine).
        push_guarded(
            &mut p,
            Sysno::seccomp.id() as u32,
            &value_block(0, SECCOMP_QUERIES, RET_ALLOW, RET_USER_NOTIF),
        );
        push_guarded(
            &mut p,
            Sysno::prctl.id() as u32,
            &value_block(0, &[PR_SET_SECCOMP], RET_USER_NOTIF, RET_ALLOW),
        );
        let mut numbers: Vec<u32> = ALLOWED.iter().map(|s| s.id() as u32).collect();
        numbers.sort_unstable();
        numbers.dedup();
        // Contiguous runs of allowed numbers become one range test each,
        // searched as a binary tree: a short program loads faster (the
        // kernel emulates it for every syscall number to fill its action
        // cache) and decides in a few comparisons.
        p.extend(range_tree(&ranges(&numbers))?);
        if p.len() > 4096 {
            return Err(SeccompError::TooLong(p.len()));
        }
        Ok(SeccompProgram { instructions: p })
    }

    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.instructions
    }
}

/// Sorted, deduplicated numbers → inclusive ranges of consecutive values.
fn ranges(sorted: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in sorted {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// Decision code for `nr` (in the accumulator) against sorted, disjoint
/// ranges: ALLOW inside one, USER_NOTIF outside all. Every path returns.
fn range_tree(ranges: &[(u32, u32)]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    if ranges.len() <= 3 {
        let mut out = Vec::with_capacity(ranges.len() * 4 + 1);
        for &(lo, hi) in ranges {
            out.push(jump(JGT_K, hi, 3, 0)); // above this range: try the next
            out.push(jump(JGE_K, lo, 0, 1));
            out.push(stmt(RET_K, RET_ALLOW));
            out.push(stmt(RET_K, RET_USER_NOTIF)); // below it, so below all later ranges
        }
        out.push(stmt(RET_K, RET_USER_NOTIF));
        return Ok(out);
    }
    let (left, right) = ranges.split_at(ranges.len() / 2);
    let left_code = range_tree(left)?;
    let right_code = range_tree(right)?;
    let skip = u8::try_from(left_code.len()).map_err(|_| SeccompError::TooLong(left_code.len()))?;
    let mut out = Vec::with_capacity(1 + left_code.len() + right_code.len());
    // nr >= first of the right half: jump over the left half.
    out.push(jump(JGE_K, right[0].0, skip, 0));
    out.extend(left_code);
    out.extend(right_code);
    Ok(out)
}

/// `if nr == sysno { block }`, where the block always returns.
fn push_guarded(p: &mut Vec<libc::sock_filter>, sysno: u32, block: &[libc::sock_filter]) {
    p.push(jump(JEQ_K, sysno, 0, block.len() as u8));
    p.extend_from_slice(block);
    // The block clobbered the accumulator only on its own path, which
    // returns; the fall-through path still holds the syscall number.
}

/// Loads argument `arg` and returns `on_match` if it equals one of
/// `values`, else `otherwise`.
fn value_block(arg: u32, values: &[u32], on_match: u32, otherwise: u32) -> Vec<libc::sock_filter> {
    let mut b = vec![stmt(LD_W_ABS, offset_arg_low(arg))];
    for (i, v) in values.iter().enumerate() {
        let remaining = (values.len() - i - 1) as u8;
        // Match: jump over the remaining compares and the `otherwise` return.
        b.push(jump(JEQ_K, *v, remaining + 1, 0));
    }
    b.push(stmt(RET_K, otherwise));
    b.push(stmt(RET_K, on_match));
    b
}

/// Like [`value_block`], on argument `arg` masked with `mask` first.
fn masked_value_block(
    arg: u32,
    mask: u32,
    values: &[u32],
    on_match: u32,
    otherwise: u32,
) -> Vec<libc::sock_filter> {
    let mut b = value_block(arg, values, on_match, otherwise);
    b.insert(1, stmt(ALU_AND_K, mask));
    b
}

/// A readable name for a syscall the supervisor was notified about.
pub fn syscall_name(arch: u32, nr: i32) -> String {
    if arch != AUDIT_ARCH_X86_64 {
        let name = syscalls::x86::Sysno::new(nr as usize).map(|s| s.name());
        return match name {
            Some(n) => format!("{n} (i386 ABI)"),
            None => format!("#{nr} (foreign ABI 0x{arch:x})"),
        };
    }
    let x32 = nr as u32 & X32_SYSCALL_BIT != 0;
    let base = (nr as u32 & !X32_SYSCALL_BIT) as usize;
    let name = Sysno::new(base)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("#{nr}"));
    if x32 {
        format!("{name} (x32 ABI)")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_builds_and_fits() {
        let p = SeccompProgram::jail_default().expect("filter builds");
        // Range compression keeps the program short (it was ~540 as a flat list).
        assert!(
            p.instructions().len() < 400,
            "{} instructions",
            p.instructions().len()
        );
        // Last instruction is the default: notify.
        assert_eq!(p.instructions().last().map(|i| i.k), Some(RET_USER_NOTIF));
    }

    #[test]
    fn dangerous_syscalls_are_not_allowlisted() {
        for name in [
            "ptrace",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "process_vm_readv",
            "process_vm_writev",
            "open_by_handle_at",
            "name_to_handle_at",
            "mknod",
            "mknodat",
            "reboot",
            "swapon",
            "iopl",
            "ioperm",
            "fsopen",
            "move_mount",
            "open_tree",
            "kcmp",
            "acct",
            "clock_settime",
            "settimeofday",
            "sethostname",
            "syslog",
            "modify_ldt",
            "migrate_pages",
            "move_pages",
            "pidfd_getfd",
            "process_madvise",
        ] {
            let nr = sysno(name).expect("real syscall");
            assert!(
                !ALLOWED.iter().any(|s| s.id() as u32 == nr),
                "{name} must not be allowed"
            );
        }
    }

    /// A tiny interpreter for the instructions we emit, to check decisions.
    fn decide(p: &SeccompProgram, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut pc = 0usize;
        let mut acc: u32 = 0;
        loop {
            let i = p.instructions()[pc];
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        OFFSET_NR => nr,
                        OFFSET_ARCH => arch,
                        k => args[((k - 16) / 8) as usize] as u32,
                    };
                    pc += 1;
                }
                RET_K => return i.k,
                ALU_AND_K => {
                    acc &= i.k;
                    pc += 1;
                }
                code => {
                    let taken = match code {
                        JEQ_K => acc == i.k,
                        JGE_K => acc >= i.k,
                        JGT_K => acc > i.k,
                        JSET_K => acc & i.k != 0,
                        other => panic!("unexpected opcode {other:#x}"),
                    };
                    pc += 1 + if taken { i.jt as usize } else { i.jf as usize };
                }
            }
        }
    }

    #[test]
    fn decisions_match_the_policy() {
        let p = SeccompProgram::jail_default().unwrap();
        let arch = AUDIT_ARCH_X86_64;
        for nr in 0..600u32 {
            let name = Sysno::new(nr as usize).map(|s| s.name());
            let got = decide(&p, arch, nr, [0; 6]);
            let special = MODE_ARGS
                .iter()
                .chain(MKNOD_ARGS)
                .any(|(c, _)| c.id() as u32 == nr)
                || matches!(
                    name,
                    Some(
                        "clone"
                            | "clone3"
                            | "socket"
                            | "ioctl"
                            | "personality"
                            | "fallocate"
                            | "openat2"
                            | "seccomp"
                            | "prctl"
                            | "move_pages"
                    )
                );
            if special {
                continue;
            }
            let want = if ALLOWED.iter().any(|s| s.id() as u32 == nr) {
                RET_ALLOW
            } else {
                RET_USER_NOTIF
            };
            assert_eq!(got, want, "syscall {nr} ({name:?})");
        }
        let nr = |n: &str| sysno(n).unwrap();
        // clone: threads yes, namespaces no.
        assert_eq!(
            decide(&p, arch, nr("clone"), [0x3d0f00, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(&p, arch, nr("clone"), [0x1000_0000 | 0x11, 0, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("clone3"), [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            decide(&p, arch, nr("socket"), [1, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(&p, arch, nr("socket"), [17, 0, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("ioctl"), [0, 0x5412, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("ioctl"), [0, 0x5401, 0, 0, 0, 0]),
            RET_ALLOW
        );
        // TIOCSETD (line disciplines) is refused; a pty's own requests pass
        // (TIOCGPTN, TIOCSPTLCK, TIOCSCTTY, TIOCGWINSZ).
        assert_eq!(
            decide(&p, arch, nr("ioctl"), [3, 0x5423, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        for req in [0x8004_5430u64, 0x4004_5431, 0x540E, 0x5413] {
            assert_eq!(
                decide(&p, arch, nr("ioctl"), [3, req, 0, 0, 0, 0]),
                RET_ALLOW,
                "ioctl {req:#x}"
            );
        }
        // NUMA: own memory yes; move_pages of another process no.
        for call in ["set_mempolicy", "mbind", "get_mempolicy"] {
            assert_eq!(decide(&p, arch, nr(call), [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        }
        assert_eq!(decide(&p, arch, nr("move_pages"), [0; 6]), RET_ALLOW);
        assert_eq!(
            decide(&p, arch, nr("move_pages"), [2, 1, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("migrate_pages"), [0; 6]),
            RET_USER_NOTIF
        );
        // mknod: FIFOs, sockets, regular files; no devices, no setid bits.
        for (mode, want) in [
            (0o010644, RET_ALLOW),
            (0o140755, RET_ALLOW),
            (0o100600, RET_ALLOW),
            (0o000600, RET_ALLOW),
            (0o020666, RET_USER_NOTIF),
            (0o060660, RET_USER_NOTIF),
            (0o014755, RET_USER_NOTIF),
            (0o102755, RET_USER_NOTIF),
        ] {
            assert_eq!(
                decide(&p, arch, nr("mknod"), [0, mode, 0, 0, 0, 0]),
                want,
                "mknod mode {mode:o}"
            );
            assert_eq!(
                decide(&p, arch, nr("mknodat"), [3, 0, mode, 0, 0, 0]),
                want,
                "mknodat mode {mode:o}"
            );
        }
        // fallocate: allocation that grows the file (and so meets the
        // file-size limit) or frees space; not KEEP_SIZE preallocation.
        for (mode, want) in [
            (0, RET_ALLOW),
            (0x03, RET_ALLOW),
            (0x10, RET_ALLOW),
            (0x01, RET_USER_NOTIF),
            (0x11, RET_USER_NOTIF),
            (0x20, RET_USER_NOTIF),
            (0x40, RET_USER_NOTIF),
        ] {
            assert_eq!(
                decide(&p, arch, nr("fallocate"), [3, mode, 0, 1 << 30, 0, 0]),
                want,
                "fallocate mode {mode:#x}"
            );
        }
        assert_eq!(
            decide(&p, arch, nr("personality"), [0xffff_ffff, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(&p, arch, nr("personality"), [0x0040000, 0, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        // No setuid/setgid bits through any mode argument; plain modes pass.
        assert_eq!(
            decide(&p, arch, nr("chmod"), [0, 0o4755, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("chmod"), [0, 0o755, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(&p, arch, nr("openat"), [0, 0, 0x41, 0o6755, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("openat"), [0, 0, 0x41, 0o644, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(&p, arch, nr("mkdirat"), [0, 0, 0o2775, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("fchmodat2"), [0, 0, 0o2000, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("openat2"), [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(decide(&p, arch, nr("fsetxattr"), [0; 6]), RET_ALLOW);
        // No filters of the program's own; queries and other prctls pass.
        assert_eq!(
            decide(&p, arch, nr("seccomp"), [1, 0, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("seccomp"), [2, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(&p, arch, nr("prctl"), [22, 2, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(&p, arch, nr("prctl"), [15, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        // Foreign ABIs never reach the allowlist.
        assert_eq!(decide(&p, 0x4000_0003, 3, [0; 6]), RET_USER_NOTIF);
        assert_eq!(decide(&p, arch, X32_SYSCALL_BIT, [0; 6]), RET_USER_NOTIF);
    }

    /// The range tree agrees with a plain membership test for many random
    /// allowlists, including sizes around the linear/tree threshold.
    #[test]
    fn range_tree_matches_membership() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let count = (round % 40) as usize;
            let mut numbers: Vec<u32> = (0..count * 3).map(|_| (next() % 500) as u32).collect();
            numbers.sort_unstable();
            numbers.dedup();
            let mut code = vec![stmt(LD_W_ABS, OFFSET_NR)];
            code.extend(range_tree(&ranges(&numbers)).unwrap());
            let p = SeccompProgram { instructions: code };
            for nr in 0..520u32 {
                let want = if numbers.contains(&nr) {
                    RET_ALLOW
                } else {
                    RET_USER_NOTIF
                };
                assert_eq!(
                    decide(&p, AUDIT_ARCH_X86_64, nr, [0; 6]),
                    want,
                    "nr {nr} in {numbers:?}"
                );
            }
        }
    }

    #[test]
    fn ranges_merge_consecutive_numbers() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), vec![(0, 2), (5, 5), (7, 8)]);
        assert_eq!(ranges(&[]), vec![]);
    }

    #[test]
    fn unknown_names_fail_closed() {
        assert_eq!(
            sysno("no_such_call"),
            Err(SeccompError::UnknownSyscall("no_such_call".into()))
        );
    }

    #[test]
    fn names_for_reports() {
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 101), "ptrace");
        assert_eq!(
            syscall_name(AUDIT_ARCH_X86_64, (X32_SYSCALL_BIT | 101) as i32),
            "ptrace (x32 ABI)"
        );
        assert_eq!(syscall_name(0x4000_0003, 26), "ptrace (i386 ABI)");
    }
}
