//! The container's first process, between clone and exec: it joins the
//! namespaces the spec names by path, builds its filesystem (mounts,
//! devices, pivot_root, masked and read-only paths), takes its hostname,
//! sysctls, limits, user and capabilities, says "ready" to `create`, waits
//! on the exec FIFO until `start`, and execs the process. Runs in a forked
//! child of a single-threaded process: allocation is safe, and every error
//! goes back to `create` as one line.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::caps;
use crate::mounts;

/// What the init is handed by the monitor.
pub struct InitPlan<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    /// Read: the monitor's "go" (maps written, cgroup joined).
    pub go: OwnedFd,
    /// Written: "ok" or the error, to `create`.
    pub status: OwnedFd,
    /// The exec FIFO, `O_PATH`, opened before the rootfs hides it.
    pub fifo: OwnedFd,
    /// A mount namespace of its own, made or joined by path (as runc, the
    /// rootfs is set up in a joined one too); else the host's is used and
    /// no mounts are made.
    pub mount_ns: bool,
    pub new_user_ns: bool,
    /// A uts namespace of its own (made or joined): hostname allowed.
    pub uts_ns: bool,
    /// For the hooks' state.
    pub id: String,
    pub bundle_dir: &'a Path,
    /// `process.terminal`: the console socket the master goes to.
    pub console: Option<std::os::unix::net::UnixStream>,
    /// `dev.warden.backend: wasm`: the engine binary (`O_PATH`).
    pub wasm_engine: Option<OwnedFd>,
    /// `--preserve-fds N`: descriptors 3..3+N go to the program.
    pub preserve_fds: u32,
}

impl InitPlan<'_> {
    fn hook_state(&self, status: &str) -> serde_json::Value {
        // Before pivot_root the host's /proc is still the one mounted:
        // /proc/self names this process by its host pid.
        let pid = std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str()?.parse().ok())
            .unwrap_or(0);
        let annotations = self.spec.annotations().clone().unwrap_or_default();
        crate::state::hook_state(&self.id, status, pid, self.bundle_dir, &annotations)
    }
}

fn send(fd: RawFd, msg: &[u8]) {
    let _ = warden_jail::sys::write_all(fd, msg);
}

/// Runs the init; never returns.
pub fn run(plan: InitPlan<'_>) -> ! {
    let status = plan.status.as_raw_fd();
    // startContainer hooks run in the container, before its program: their
    // state is taken now, while the host's pid can still be read.
    let start_state = plan.hook_state("created");
    // The FIFO is reopened through the host's /proc, opened now: the
    // container may have no /proc of its own (none mounted, or chrooted
    // without a mount namespace).
    let fds = match std::fs::File::open("/proc/self/fd") {
        Ok(d) => d,
        Err(e) => {
            send(status, format!("error: open /proc/self/fd: {e}").as_bytes());
            warden_jail::sys::exit_now(1)
        }
    };
    match prepare(&plan) {
        Ok(program) => {
            send(status, b"ok");
            drop(plan.status);
            wait_for_start(&fds, &plan.fifo);
            drop(fds);
            let hooks = plan.spec.hooks().clone().unwrap_or_default();
            if let Err(why) = crate::hooks::run_all(
                "startContainer",
                hooks.start_container().as_ref(),
                &start_state,
            ) {
                eprintln!("warden-oci: {why}");
                warden_jail::sys::exit_now(1)
            }
            exec(program)
        }
        Err(why) => {
            send(status, format!("error: {why}").as_bytes());
            warden_jail::sys::exit_now(1)
        }
    }
}

/// The program, resolved, with its argv and environment.
pub struct Program {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    /// `dev.warden.backend: wasm`: Warden's WebAssembly engine (the host's
    /// `warden-wasm`, opened before pivot_root) is exec'd through this
    /// descriptor, with the module and its arguments.
    engine: Option<RawFd>,
}

fn cstr(s: impl Into<Vec<u8>>, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} holds a NUL byte"))
}

fn prepare(plan: &InitPlan<'_>) -> Result<Program, String> {
    let spec = plan.spec;
    let mut b = [0u8; 1];
    if !matches!(warden_jail::sys::read(plan.go.as_raw_fd(), &mut b), Ok(1)) {
        return Err("the monitor did not let the init go on".into());
    }
    let linux = spec.linux().clone().unwrap_or_default();
    // Become the namespace's root first: the maps are written now.
    if plan.new_user_ns {
        ids(0, 0, &[]).map_err(|e| format!("become root in the user namespace: {e}"))?;
    }
    // Namespaces the spec names by path (the user namespace first: the
    // others are owned by it). The pid namespace was joined by the monitor.
    let mut joins: Vec<(LinuxNamespaceType, &Path)> = linux
        .namespaces()
        .iter()
        .flatten()
        .filter(|n| n.typ() != LinuxNamespaceType::Pid)
        .filter_map(|n| n.path().as_deref().map(|p| (n.typ(), p)))
        .collect();
    joins.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
    for (typ, path) in joins {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("open namespace {}: {e}", path.display()))?;
        warden_jail::sys::setns(f.as_raw_fd(), ns_flag(typ))
            .map_err(|e| format!("join namespace {}: {e}", path.display()))?;
    }
    // The seccomp agent's socket is the runtime's: connected now, while
    // its path still means what it does on the host.
    let agent = connect_agent(linux.seccomp().as_ref())?;
    if plan.mount_ns {
        filesystem(plan, &linux)?;
    } else {
        // Without a mount namespace of its own the container shares the
        // host's: it is chrooted into its rootfs (as runc does), and the
        // spec's mounts are not made, for they would land on the host.
        create_container_hooks(plan)?;
        let mounts = plan.spec.mounts().as_ref().is_some_and(|m| !m.is_empty());
        let masks = linux.masked_paths().as_ref().is_some_and(|m| !m.is_empty())
            || linux
                .readonly_paths()
                .as_ref()
                .is_some_and(|m| !m.is_empty());
        if mounts || masks {
            eprintln!(
                "warden-oci: warning: no mount namespace: the spec's mounts, masked and read-only paths are not applied (they would be the host's)"
            );
        }
        let rootfs = cstr(plan.rootfs.as_os_str().as_bytes(), "root.path")?;
        warden_jail::sys::chdir(&rootfs).map_err(|e| format!("chdir to the rootfs: {e}"))?;
        // SAFETY: "." is a valid NUL-terminated string.
        if unsafe { libc::chroot(c".".as_ptr()) } < 0 {
            return Err(format!("chroot: {}", std::io::Error::last_os_error()));
        }
        warden_jail::sys::chdir(c"/").map_err(|e| format!("chdir /: {e}"))?;
    }
    if let Some(h) = spec.hostname() {
        if !plan.uts_ns {
            return Err("config.json: hostname: set without a uts namespace".into());
        }
        warden_jail::sys::sethostname(h.as_bytes()).map_err(|e| format!("sethostname: {e}"))?;
    }
    if let Some(d) = spec.domainname() {
        // SAFETY: d points at d.len() valid bytes.
        let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if r < 0 {
            return Err(format!(
                "setdomainname: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    for (key, value) in linux.sysctl().iter().flatten() {
        // Keys were checked with the spec (namespaced ones only).
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("sysctl {key}: {e}"))?;
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or("config.json: process: missing")?;
    if let Some(console) = &plan.console {
        terminal(console, process)?;
    }
    // Before the profile is installed: it may not allow close_range.
    descriptors_for_exec(plan.preserve_fds)?;
    become_process(
        process,
        linux.seccomp().as_ref(),
        agent,
        &plan.hook_state("created"),
        plan.wasm_engine.as_ref().map(|e| e.as_raw_fd()),
    )
}

/// A connection to the profile's `listenerPath`, when a rule notifies.
pub fn connect_agent(
    profile: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<Option<std::os::unix::net::UnixStream>, String> {
    use oci_spec::runtime::LinuxSeccompAction::ScmpActNotify;
    let Some(p) = profile else { return Ok(None) };
    let notifies = p.default_action() == ScmpActNotify
        || p.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == ScmpActNotify);
    if !notifies {
        return Ok(None);
    }
    let path = p
        .listener_path()
        .clone()
        .ok_or("config.json: linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath")?;
    std::os::unix::net::UnixStream::connect(&path)
        .map(Some)
        .map_err(|e| format!("seccomp listener {}: {e}", path.display()))
}

/// What a container's process takes on, in its namespaces, before exec:
/// oom score, rlimits, capability sets, user and groups, umask, working
/// directory, no_new_privs; and the program looked up on its PATH. The
/// first process and `exec`'s processes alike.
pub fn become_process(
    process: &oci_spec::runtime::Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    agent: Option<std::os::unix::net::UnixStream>,
    state: &serde_json::Value,
    engine: Option<RawFd>,
) -> Result<Program, String> {
    let mut agent = agent;
    let filter = seccomp.map(crate::seccomp::compile).transpose()?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs the filter needs CAP_SYS_ADMIN: installed
    // while the process still has it, before its user and capabilities.
    if let (Some(f), false) = (&filter, nnp) {
        install_seccomp(f, seccomp, agent.take(), state)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("oom_score_adj: {e}"))?;
    }
    for r in process.rlimits().iter().flatten() {
        let resource = rlimit_resource(&r.typ().to_string())
            .ok_or_else(|| format!("config.json: process.rlimits: unknown {}", r.typ()))?;
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: lim is a valid rlimit.
        if unsafe { libc::setrlimit(resource, &lim) } < 0 {
            return Err(format!(
                "setrlimit {}: {}",
                r.typ(),
                std::io::Error::last_os_error()
            ));
        }
    }
    let env = env_of(process)?;
    let args = process.args().clone().unwrap_or_default();
    let argv: Vec<CString> = args
        .iter()
        .map(|a| cstr(a.as_bytes(), "process.args"))
        .collect::<Result<_, _>>()?;
    let path_var = process
        .env()
        .iter()
        .flatten()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    // Credentials and capabilities: the spec's sets, kept through the uid
    // change, then exactly those.
    let user = process.user();
    let wanted = caps::Sets::of(process.capabilities().as_ref())?;
    caps::drop_bounding(&wanted)?;
    caps::keep_across_setuid()?;
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    ids(user.uid(), user.gid(), &groups)
        .map_err(|e| format!("set user {}:{}: {e}", user.uid(), user.gid()))?;
    caps::set(&wanted)?;
    if let Some(mask) = user.umask() {
        // SAFETY: umask takes an integer.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    let cwd = process.cwd();
    std::env::set_current_dir(cwd).map_err(|e| format!("process.cwd {}: {e}", cwd.display()))?;
    if nnp {
        warden_jail::sys::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
        // As late as can be: the program's exec is all that follows.
        if let Some(f) = &filter {
            install_seccomp(f, seccomp, agent.take(), state)?;
        }
    }
    if let Some(engine) = engine {
        // A module is not a program: the engine runs it.
        return wasm_program(engine, process);
    }
    let first = args.first().ok_or("process.args: missing or empty")?;
    let path = find_program(first, &path_var)?;
    Ok(Program {
        path,
        argv,
        env,
        engine: None,
    })
}

/// `process.env` as exec takes it.
fn env_of(process: &oci_spec::runtime::Process) -> Result<Vec<CString>, String> {
    process
        .env()
        .iter()
        .flatten()
        .map(|e| cstr(e.as_bytes(), "process.env"))
        .collect()
}

/// The module `args[0]` names, run by the engine at `engine` with the
/// container's root as its only preopen (read-write, as the container's
/// filesystem is to a native process; the rootfs's own read-only mounts
/// still hold).
fn wasm_program(engine: RawFd, process: &oci_spec::runtime::Process) -> Result<Program, String> {
    let args = process.args().clone().unwrap_or_default();
    let module = args.first().ok_or("process.args: missing or empty")?;
    if !std::fs::metadata(module).is_ok_and(|m| m.is_file()) {
        return Err(format!("exec: {module:?}: no such module in the container"));
    }
    let mut argv: Vec<CString> = [
        "warden-wasm",
        "run",
        "--no-audit",
        "--quiet",
        "--allow",
        "fs:write:/",
        "--",
    ]
    .iter()
    .map(|a| cstr(a.as_bytes(), "argv"))
    .collect::<Result<_, _>>()?;
    for a in &args {
        argv.push(cstr(a.as_bytes(), "process.args")?);
    }
    let env = env_of(process)?;
    Ok(Program {
        path: cstr(b"warden-wasm".to_vec(), "argv")?,
        argv,
        env,
        engine: Some(engine),
    })
}

/// createContainer hooks: in the container's namespaces, its mounts made,
/// before pivot_root (their paths resolve in the runtime's filesystem).
fn create_container_hooks(plan: &InitPlan<'_>) -> Result<(), String> {
    let hooks = plan.spec.hooks().clone().unwrap_or_default();
    let state = plan.hook_state("creating");
    crate::hooks::run_all("createContainer", hooks.create_container().as_ref(), &state)
}

/// Installs the filter; a listener (SCMP_ACT_NOTIFY) goes to the profile's
/// `listenerPath` with the container's state, as runc sends it.
fn install_seccomp(
    f: &crate::seccomp::Compiled,
    profile: Option<&oci_spec::runtime::LinuxSeccomp>,
    agent: Option<std::os::unix::net::UnixStream>,
    state: &serde_json::Value,
) -> Result<(), String> {
    let listener = crate::seccomp::install(f)?;
    let Some(listener) = listener else {
        return Ok(());
    };
    let sock = agent.ok_or("the seccomp agent is not connected")?;
    let message = serde_json::json!({
        "ociVersion": "1.2.0",
        "fds": ["seccompFd"],
        "pid": state["pid"],
        "metadata": profile.and_then(|p| p.listener_metadata().clone()).unwrap_or_default(),
        "state": state,
    });
    warden_jail::sys::send_fds_with(
        sock.as_raw_fd(),
        message.to_string().as_bytes(),
        &[listener.as_raw_fd()],
    )
    .map_err(|e| format!("send the seccomp listener: {e}"))
}

/// A new terminal in the container's devpts: the slave becomes the
/// process's controlling terminal and stdio, the master goes to the
/// console socket (SCM_RIGHTS), as runc hands it to the shim.
pub fn terminal(
    console: &std::os::unix::net::UnixStream,
    process: &oci_spec::runtime::Process,
) -> Result<(), String> {
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")
        .map_err(|e| format!("open /dev/ptmx: {e}"))?;
    let m = master.as_raw_fd();
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an unsigned int;
    // both point at live locals.
    let ok = unsafe {
        libc::ioctl(m, libc::TIOCSPTLCK, &mut unlock) == 0
            && libc::ioctl(m, libc::TIOCGPTN, &mut n) == 0
    };
    if !ok {
        return Err(format!(
            "unlock the terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    let slave_path = format!("/dev/pts/{n}");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&slave_path)
        .map_err(|e| format!("open {slave_path}: {e}"))?;
    if let Some(size) = process.console_size() {
        let ws = libc::winsize {
            ws_row: size.height() as u16,
            ws_col: size.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: ws is a valid winsize for TIOCSWINSZ to read.
        unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &ws) };
    }
    warden_jail::sys::send_fds_with(console.as_raw_fd(), slave_path.as_bytes(), &[m])
        .map_err(|e| format!("send the terminal to the console socket: {e}"))?;
    drop(master);
    let s = slave.as_raw_fd();
    let _ = warden_jail::sys::setsid();
    // SAFETY: TIOCSCTTY takes an integer; s is the slave just opened.
    if unsafe { libc::ioctl(s, libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "make the terminal controlling: {}",
            std::io::Error::last_os_error()
        ));
    }
    // The process's own terminal, whatever user it runs as.
    // SAFETY: fchown takes integers; s is open.
    unsafe { libc::fchown(s, process.user().uid(), process.user().gid()) };
    for fd in 0..3 {
        warden_jail::sys::dup2(s, fd).map_err(|e| format!("the terminal as stdio: {e}"))?;
    }
    Ok(())
}

/// The filesystem: propagation, the rootfs as a mount, the spec's mounts,
/// default devices, pivot_root, masked and read-only paths.
fn filesystem(plan: &InitPlan<'_>, linux: &oci_spec::runtime::Linux) -> Result<(), String> {
    use warden_jail::sys;
    // The rootfs is bound and pivoted into under a recursively slave (or
    // private) `/`: pivot_root refuses shared mounts, and an unbindable one
    // cannot be bound. The requested shared or unbindable propagation is
    // given to the new root after the pivot, so a shared root still receives
    // the host's mounts (slave) and shares its own among its peers.
    let (before, after) = match linux.rootfs_propagation().as_deref() {
        None | Some("") | Some("rslave") | Some("slave") => (libc::MS_SLAVE, None),
        Some("private") | Some("rprivate") => (libc::MS_PRIVATE, None),
        Some("shared") | Some("rshared") => (libc::MS_SLAVE, Some(libc::MS_SHARED)),
        Some("unbindable") | Some("runbindable") => (libc::MS_SLAVE, Some(libc::MS_UNBINDABLE)),
        Some(other) => {
            return Err(format!(
                "config.json: linux.rootfsPropagation: unknown {other:?}"
            ))
        }
    };
    sys::mount(None, c"/", None, before | libc::MS_REC, None)
        .map_err(|e| format!("set / propagation: {e}"))?;
    let rootfs = cstr(plan.rootfs.as_os_str().as_bytes(), "root.path")?;
    sys::mount(
        Some(&rootfs),
        &rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| format!("bind the rootfs: {e}"))?;
    let root = std::fs::File::open(plan.rootfs).map_err(|e| format!("open the rootfs: {e}"))?;
    let mut dev_is_tmpfs = false;
    for m in plan.spec.mounts().iter().flatten() {
        mounts::mount_one(root.as_raw_fd(), m)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        crate::devices::defaults(root.as_raw_fd(), plan.new_user_ns)?;
    }
    for d in linux.devices().iter().flatten() {
        crate::devices::make(root.as_raw_fd(), d, plan.new_user_ns)?;
    }
    drop(root);
    create_container_hooks(plan)?;
    sys::chdir(&rootfs).map_err(|e| format!("chdir to the rootfs: {e}"))?;
    sys::pivot_root_here().map_err(|e| format!("pivot_root: {e}"))?;
    // The old root is stacked on the new one: detach it.
    sys::umount_detach(c".").map_err(|e| format!("detach the old root: {e}"))?;
    sys::chdir(c"/").map_err(|e| format!("chdir /: {e}"))?;
    for p in linux.masked_paths().iter().flatten() {
        mounts::mask(p)?;
    }
    for p in linux.readonly_paths().iter().flatten() {
        mounts::make_readonly(p)?;
    }
    if plan
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mounts::remount_root_readonly()?;
    }
    // Last: masking and read-only paths bind, which an unbindable root
    // would refuse.
    if let Some(flag) = after {
        sys::mount(None, c"/", None, flag | libc::MS_REC, None)
            .map_err(|e| format!("set the root's propagation: {e}"))?;
    }
    Ok(())
}

pub fn ns_flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => 0x80, // CLONE_NEWTIME
    }
}

/// setgroups, setresgid, setresuid (raw syscalls: this process has one
/// thread).
pub fn ids(uid: u32, gid: u32, groups: &[libc::gid_t]) -> std::io::Result<()> {
    let check = |r: libc::c_long| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: groups is a valid slice of the length passed.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    // A user namespace whose setgroups is denied keeps its groups.
    if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        check(r)?;
    }
    // SAFETY: integer-only syscalls.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: integer-only syscall.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// `program` as execvp would find it on `path` (inside the container).
fn find_program(program: &str, path: &str) -> Result<CString, String> {
    let candidates: Vec<std::path::PathBuf> = if program.contains('/') {
        vec![program.into()]
    } else {
        path.split(':')
            .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(program))
            .collect()
    };
    for c in &candidates {
        if let Ok(meta) = std::fs::metadata(c) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return cstr(c.as_os_str().as_bytes(), "process.args[0]");
            }
        }
    }
    Err(format!(
        "exec: {program:?}: executable file not found{}",
        if program.contains('/') {
            ""
        } else {
            " in $PATH"
        }
    ))
}

/// Blocks until `start` reads the FIFO (its open for writing returns once
/// a reader has it open), then says so with one byte.
fn wait_for_start(fds: &std::fs::File, fifo: &OwnedFd) {
    let name = CString::new(fifo.as_raw_fd().to_string()).unwrap_or_default();
    // SAFETY: fds is an open directory, name a NUL-terminated string; the
    // descriptor returned is owned by the File made from it.
    let fd = unsafe {
        libc::openat(
            fds.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    match (fd >= 0).then_some(fd) {
        Some(fd) => {
            use std::io::Write as _;
            use std::os::fd::FromRawFd as _;
            // SAFETY: fd was just opened and is owned by nothing else.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let _ = f.write_all(b"0");
        }
        None => {
            let e = std::io::Error::last_os_error();
            eprintln!("warden-oci: waiting for start: {e}");
            warden_jail::sys::exit_now(1);
        }
    }
}

/// Only stdio and the `preserve` descriptors after it reach the program:
/// everything else this process holds (or inherited from whoever ran the
/// runtime) is closed on exec, as runc does. Called before the seccomp
/// profile is installed.
pub fn descriptors_for_exec(preserve: u32) -> Result<(), String> {
    let first_closed = 3 + preserve;
    for fd in 3..first_closed {
        // SAFETY: F_SETFD on a number that may not be open only fails.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, 0) };
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only marks descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_closed,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(format!("close_range: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn exec(p: Program) -> ! {
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let err = match p.engine {
        Some(fd) => {
            // SAFETY: fd is an open descriptor of the engine; argv and envp
            // are NULL-terminated arrays of NUL-terminated strings that
            // live through the call.
            unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    c"".as_ptr(),
                    ptrs(&p.argv).as_ptr(),
                    ptrs(&p.env).as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            std::io::Error::last_os_error()
        }
        None => warden_jail::sys::execve(&p.path, &ptrs(&p.argv), &ptrs(&p.env)),
    };
    eprintln!("warden-oci: exec {:?}: {err}", p.path);
    warden_jail::sys::exit_now(if err.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    })
}
