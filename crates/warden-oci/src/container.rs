//! The lifecycle: `create` makes the container's namespaces, cgroup and
//! filesystem and leaves its first process waiting on the exec FIFO;
//! `start` releases it; `kill`, `pause`/`resume`, `ps` and `delete` act
//! on it through its record.
//!
//! Three processes take part. `create` itself (it exits when the
//! container is ready). The *monitor*, forked by `create`: the pid the
//! shim is given (`--pid-file`) and reaps — it clones the container's
//! first process, writes its id maps and cgroup membership, forwards the
//! signals it gets to it, and when it ends writes Warden's report and the
//! ledger entry, then ends the same way (exit code or signal), so the
//! shim sees the container's own status. The *init*: the container's
//! first process (see `init`), which execs the spec's process in place.

use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxNamespaceType;

use crate::cgroups::{self, Cgroup};
use crate::init::{self, InitPlan};
use crate::spec::Bundle;
use crate::state::{self, Record, Status};
use crate::OciError;

/// `create`'s options.
pub struct CreateOptions<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub systemd_cgroup: bool,
    /// Where the terminal's master goes (`process.terminal`).
    pub console_socket: Option<&'a Path>,
    /// `--preserve-fds N`: descriptors 3..3+N go to the process.
    pub preserve_fds: u32,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), OciError> {
    warden_jail::sys::pipe().map_err(|e| OciError::Io("create a pipe".into(), e))
}

fn read_all(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    // SAFETY: a duplicate of a descriptor this process owns, closed by File.
    let dup = unsafe { libc::dup(fd.as_raw_fd()) };
    if dup >= 0 {
        // SAFETY: dup returned a new descriptor owned by nobody else.
        let mut f = unsafe { std::fs::File::from_raw_fd(dup) };
        let _ = f.read_to_end(&mut out);
    }
    out
}

/// Removes what a failed create made.
struct Undo<'a> {
    dir: &'a Path,
    cgroup: Option<Cgroup>,
    pids: Vec<i32>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in &self.pids {
            let _ = warden_jail::sys::kill(*pid, libc::SIGKILL);
        }
        for pid in &self.pids {
            let _ = warden_jail::sys::waitpid(*pid, 0);
        }
        if let Some(c) = &self.cgroup {
            c.remove();
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

pub fn create(o: &CreateOptions<'_>) -> Result<Record, OciError> {
    state::check_id(o.id)?;
    let bundle = Bundle::load(o.bundle)?;
    let backend = backend_of(&bundle)?;
    let gvisor = backend == "gvisor";
    if gvisor && o.preserve_fds > 0 {
        return Err(OciError::Unsupported(
            "--preserve-fds is not supported with dev.warden.backend: gvisor".into(),
        ));
    }
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // The shim's socket, connected here (its path is the host's); the init
    // sends the terminal's master over it.
    let console = match (terminal, o.console_socket) {
        // runsc takes the socket itself.
        (true, Some(_)) if gvisor => None,
        (true, Some(p)) => Some(std::os::unix::net::UnixStream::connect(p).map_err(|e| {
            OciError::Io(format!("connect to the console socket {}", p.display()), e)
        })?),
        (true, None) => {
            return Err(OciError::Usage(
                "process.terminal is true: --console-socket is needed".into(),
            ))
        }
        (false, Some(_)) => {
            return Err(OciError::Usage(
                "--console-socket given but process.terminal is false".into(),
            ))
        }
        (false, None) => None,
    };
    let dir = state::make_dir(o.root, o.id)?;
    let mut undo = Undo {
        dir: &dir,
        cgroup: None,
        pids: Vec::new(),
        armed: true,
    };
    let fifo = dir.join(state::EXEC_FIFO);
    let fifo_c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
        .map_err(|_| OciError::Usage("the root path holds a NUL".into()))?;
    // SAFETY: fifo_c is NUL-terminated.
    if unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o622) } < 0 {
        return Err(OciError::Io(
            format!("mkfifo {}", fifo.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // The mode exactly (mkfifo's is cut by the umask): the container's
    // user, whoever it is, opens it for writing.
    std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622))
        .map_err(|e| OciError::Io(format!("chmod {}", fifo.display()), e))?;
    let linux = bundle.spec.linux().clone().unwrap_or_default();
    let rel = cgroups::relative_path(linux.cgroups_path().as_deref(), o.id);
    let _ = o.systemd_cgroup; // cgroupfs is used where systemd is absent
    let cgroup = Cgroup::create(&rel, linux.resources().as_ref())?;
    undo.cgroup = Some(cgroup.clone());
    let fifo_fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(|e| OciError::Io(format!("open {}", fifo.display()), e))?;

    // The engine a WebAssembly container's process is: opened here, exec'd
    // by the container's init through the descriptor.
    let engine = match backend {
        "wasm" => Some(wasm_engine()?),
        _ => None,
    };
    let (pids_r, pids_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let record_dir = dir.clone();
    let monitor = {
        // SAFETY: warden-oci is single-threaded; the child runs `monitor`,
        // which never returns.
        match unsafe { warden_jail::sys::fork() } {
            Ok(0) if gvisor => {
                drop(pids_r);
                drop(status_r);
                drop(fifo_fd);
                monitor_gvisor(
                    &bundle,
                    &cgroup,
                    pids_w,
                    status_w,
                    &record_dir,
                    o.id,
                    o.console_socket,
                )
            }
            Ok(0) => {
                drop(pids_r);
                drop(status_r);
                monitor(
                    &bundle,
                    &cgroup,
                    pids_w,
                    status_w,
                    OwnedFd::from(fifo_fd),
                    &record_dir,
                    console,
                    engine,
                    o.preserve_fds,
                )
            }
            Ok(pid) => pid,
            Err(e) => return Err(OciError::Io("fork the monitor".into(), e)),
        }
    };
    undo.pids.push(monitor);
    drop(pids_w);
    drop(status_w);
    drop(fifo_fd);
    let said = read_all(&pids_r);
    let (pid, pid_start) = match std::str::from_utf8(&said).ok().and_then(|s| {
        let (a, b) = s.trim().split_once(' ')?;
        Some((a.parse::<i32>().ok()?, b.parse::<u64>().ok()?))
    }) {
        Some(p) => p,
        None => {
            let why = String::from_utf8_lossy(&read_all(&status_r)).into_owned();
            return Err(OciError::Create(if why.is_empty() {
                format!("the monitor failed: {}", String::from_utf8_lossy(&said))
            } else {
                why.trim_start_matches("error: ").to_string()
            }));
        }
    };
    let said = read_all(&status_r);
    if said != b"ok" {
        let why = String::from_utf8_lossy(&said);
        return Err(OciError::Create(if why.is_empty() {
            "the container's init ended before it was ready".into()
        } else {
            why.trim_start_matches("error: ").to_string()
        }));
    }
    let record = Record {
        id: o.id.to_string(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: jiff::Timestamp::now().to_string(),
        pid,
        pid_start,
        monitor_pid: monitor,
        cgroup: cgroup.clone(),
        freezer: cgroup.freezer(),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        backend: backend.into(),
        started: false,
        hooks: bundle.spec.hooks().clone(),
        seccomp: linux.seccomp().clone(),
        paused: false,
    };
    record.save(o.root)?;
    if let Some(p) = o.pid_file {
        write_pid_file(p, monitor)?;
    }
    undo.armed = false;
    Ok(record)
}

fn write_pid_file(path: &Path, pid: i32) -> Result<(), OciError> {
    let tmp = path.with_extension("warden-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| OciError::Io(format!("write {}", path.display()), e))
}

/// Warden's WebAssembly engine, `warden-wasm`: `WARDEN_WASM_BIN`, else
/// beside this binary, else on PATH; opened `O_PATH`.
fn wasm_engine() -> Result<OwnedFd, OciError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("warden-wasm")));
    let on_path = std::env::var("PATH").unwrap_or_default();
    let found = std::env::var_os("WARDEN_WASM_BIN")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(beside)
        .chain(on_path.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join("warden-wasm")))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            OciError::Unsupported(
                "dev.warden.backend=wasm: warden-wasm is not installed beside warden-oci (or set WARDEN_WASM_BIN)".into(),
            )
        })?;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&found)
        .map(OwnedFd::from)
        .map_err(|e| OciError::Io(format!("open {}", found.display()), e))
}

/// The backend the bundle asks for (`dev.warden.backend`, else the jail).
fn backend_of(bundle: &Bundle) -> Result<&'static str, OciError> {
    let asked = bundle
        .spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get("dev.warden.backend").cloned());
    let module = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref()?.first().cloned())
        .is_some_and(|a| a.ends_with(".wasm"));
    match asked.as_deref() {
        None if module => Ok("wasm"),
        None | Some("jail") => Ok("jail"),
        Some("gvisor") => Ok("gvisor"),
        Some("wasm") => Ok("wasm"),
        Some(other) => Err(OciError::Config(format!(
            "config.json: annotations.dev.warden.backend: {other:?} is not jail, gvisor or wasm"
        ))),
    }
}

/// The monitor of a gVisor container: a subreaper that runs `runsc
/// create`, whose sandbox it then inherits and waits for. Never returns.
fn monitor_gvisor(
    bundle: &Bundle,
    cgroup: &Cgroup,
    pids: OwnedFd,
    status: OwnedFd,
    dir: &Path,
    id: &str,
    console: Option<&Path>,
) -> ! {
    let _ = warden_jail::sys::setsid();
    let _ = warden_jail::sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    let sandbox = match crate::gvisor::create(dir, &bundle.dir, &bundle.spec, id, console) {
        Ok(pid) => pid,
        Err(why) => {
            let _ =
                warden_jail::sys::write_all(status.as_raw_fd(), format!("error: {why}").as_bytes());
            warden_jail::sys::exit_now(1)
        }
    };
    let start = state::start_time(sandbox).unwrap_or(0);
    let _ = warden_jail::sys::write_all(pids.as_raw_fd(), format!("{sandbox} {start}").as_bytes());
    let _ = warden_jail::sys::write_all(status.as_raw_fd(), b"ok");
    drop(pids);
    drop(status);
    crate::monitor::watch(sandbox, bundle, cgroup, dir)
}

/// The monitor (a child of `create`): never returns.
#[allow(clippy::too_many_arguments)]
fn monitor(
    bundle: &Bundle,
    cgroup: &Cgroup,
    pids: OwnedFd,
    status: OwnedFd,
    fifo: OwnedFd,
    dir: &Path,
    console: Option<std::os::unix::net::UnixStream>,
    wasm_engine: Option<OwnedFd>,
    preserve_fds: u32,
) -> ! {
    let status_fd = status.as_raw_fd();
    let fail = |why: String| -> ! {
        let _ = warden_jail::sys::write_all(status_fd, format!("error: {why}").as_bytes());
        warden_jail::sys::exit_now(1)
    };
    // Not tied to the caller's session or terminal: the shim reaps it.
    let _ = warden_jail::sys::setsid();
    let linux = bundle.spec.linux().clone().unwrap_or_default();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut flags = 0;
    for ns in &namespaces {
        match ns.path() {
            None => flags |= init::ns_flag(ns.typ()),
            // A pid namespace joined affects children only: the monitor
            // joins it, so the init is born in it.
            Some(p) if ns.typ() == LinuxNamespaceType::Pid => {
                let joined = std::fs::File::open(p)
                    .and_then(|f| warden_jail::sys::setns(f.as_raw_fd(), libc::CLONE_NEWPID));
                if let Err(e) = joined {
                    fail(format!("join pid namespace {}: {e}", p.display()));
                }
            }
            Some(_) => {}
        }
    }
    let new = |t: LinuxNamespaceType| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    let (go_r, go_w) = match pipe() {
        Ok(p) => p,
        Err(e) => fail(e.to_string()),
    };
    let plan = InitPlan {
        spec: &bundle.spec,
        rootfs: &bundle.rootfs,
        go: go_r,
        status: match status.try_clone() {
            Ok(s) => s,
            Err(e) => fail(format!("duplicate the status pipe: {e}")),
        },
        fifo,
        mount_ns: namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Mount),
        new_user_ns: new(LinuxNamespaceType::User),
        uts_ns: namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Uts),
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bundle_dir: &bundle.dir,
        console,
        wasm_engine,
        preserve_fds,
    };
    // SAFETY: clone without CLONE_VM behaves as fork (the child has its own
    // copy of memory); the process is single-threaded. The child runs
    // `init::run`, which never returns.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if child < 0 {
        fail(format!(
            "clone the container's namespaces: {}",
            std::io::Error::last_os_error()
        ));
    }
    if child == 0 {
        // Only the init's own ends stay open in it: `create` reads the
        // status pipe to its end.
        drop(go_w);
        drop(pids);
        drop(status);
        // The container ends with the monitor (a SIGKILL it cannot pass on).
        let _ = warden_jail::sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        init::run(plan)
    }
    let init = child as i32;
    drop(plan);
    let setup = (|| -> Result<(), String> {
        if new(LinuxNamespaceType::User) {
            write_id_maps(init, &linux)?;
        }
        cgroup.add(init).map_err(|e| e.to_string())?;
        Ok(())
    })();
    // prestart (deprecated) and createRuntime hooks: in the runtime's
    // namespaces, the container's made, before its filesystem is.
    let setup = setup.and_then(|()| {
        let hooks = bundle.spec.hooks().clone().unwrap_or_default();
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let annotations = bundle.spec.annotations().clone().unwrap_or_default();
        let st = state::hook_state(&id, "creating", init, &bundle.dir, &annotations);
        crate::hooks::run_all("prestart", hooks.prestart().as_ref(), &st)?;
        crate::hooks::run_all("createRuntime", hooks.create_runtime().as_ref(), &st)
    });
    if let Err(why) = setup {
        let _ = warden_jail::sys::kill(init, libc::SIGKILL);
        fail(why);
    }
    let start = state::start_time(init).unwrap_or(0);
    let _ = warden_jail::sys::write_all(pids.as_raw_fd(), format!("{init} {start}").as_bytes());
    drop(pids);
    let _ = warden_jail::sys::write_all(go_w.as_raw_fd(), b"G");
    drop(go_w);
    // What is said from here on is the init's.
    drop(status);
    crate::monitor::watch(init, bundle, cgroup, dir)
}

fn write_id_maps(pid: i32, linux: &oci_spec::runtime::Linux) -> Result<(), String> {
    let map = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let uid = map(linux.uid_mappings());
    let gid = map(linux.gid_mappings());
    if !uid.is_empty() {
        std::fs::write(format!("/proc/{pid}/uid_map"), uid)
            .map_err(|e| format!("write uid_map: {e}"))?;
    }
    if !gid.is_empty() {
        std::fs::write(format!("/proc/{pid}/gid_map"), gid)
            .map_err(|e| format!("write gid_map: {e}"))?;
    }
    Ok(())
}

/// Releases a created container: opens the FIFO's reading end and takes
/// the init's byte, watching that the init is still there.
pub fn start(root: &Path, id: &str) -> Result<(), OciError> {
    let mut record = Record::load(root, id)?;
    match record.status() {
        Status::Created => {}
        other => {
            return Err(OciError::State(format!(
                "cannot start a container that is {}",
                other.as_str()
            )))
        }
    }
    if record.backend == "gvisor" {
        crate::gvisor::run(&state::dir_of(root, id), &["start", id])?;
        record.started = true;
        return record.save(root);
    }
    let fifo = state::dir_of(root, id).join(state::EXEC_FIFO);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(|e| OciError::Io(format!("open {}", fifo.display()), e))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fds = [libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let _ = warden_jail::sys::poll(&mut fds, 50);
        let mut b = [0u8; 1];
        if fds[0].revents & libc::POLLIN != 0
            && matches!(warden_jail::sys::read(f.as_raw_fd(), &mut b), Ok(1))
        {
            break;
        }
        if !state::process_is(record.pid, record.pid_start) {
            return Err(OciError::State(
                "the container's process ended before start".into(),
            ));
        }
        if Instant::now() > deadline {
            return Err(OciError::State(
                "the container's init did not answer start".into(),
            ));
        }
    }
    let _ = std::fs::remove_file(&fifo);
    record.started = true;
    record.save(root)?;
    // poststart: a failure is a warning, the container runs on (runtime-spec).
    let hooks = record.hooks.clone().unwrap_or_default();
    let st = state::hook_state(
        id,
        "running",
        record.pid,
        &record.bundle,
        &record.annotations,
    );
    if let Err(why) = crate::hooks::run_all("poststart", hooks.poststart().as_ref(), &st) {
        eprintln!("warden-oci: warning: {why}");
    }
    Ok(())
}

/// Signal names as runc takes them: `KILL`, `SIGKILL`, `9`.
pub fn parse_signal(s: &str) -> Result<i32, OciError> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(OciError::Usage(format!("unknown signal {s:?}"))),
    };
    Ok(n)
}

pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
    let record = Record::load(root, id)?;
    if record.status() == Status::Stopped {
        return Err(OciError::State("container not running".into()));
    }
    if record.backend == "gvisor" {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        return crate::gvisor::run(&state::dir_of(root, id), &args);
    }
    if all {
        for pid in cgroups::procs(&record.cgroup.paths()) {
            let _ = warden_jail::sys::kill(pid, signal);
        }
        return Ok(());
    }
    warden_jail::sys::kill(record.pid, signal)
        .map_err(|e| OciError::Io(format!("kill {}", record.pid), e))
}

pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), OciError> {
    let record = match Record::load(root, id) {
        Ok(r) => r,
        // A container whose create died before writing its record: with
        // --force its directory goes too.
        // As runc: --force of a container that is not there (or whose
        // create died before its record) succeeds, removing what is left.
        Err(OciError::NotFound(_)) if force => {
            let _ = std::fs::remove_dir_all(state::dir_of(root, id));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match record.status() {
        Status::Stopped | Status::Created => {}
        status if !force => {
            return Err(OciError::State(format!(
                "cannot delete container {id} that is not stopped: {}",
                status.as_str()
            )))
        }
        _ => {}
    }
    if record.backend == "gvisor" {
        // runsc removes its sandbox and state; what is left is killed below.
        let _ = crate::gvisor::run(&state::dir_of(root, id), &["delete", "--force", id]);
    }
    // Everything in the cgroup goes (a frozen group is thawed so the kill
    // lands), then the groups and the directory.
    if let Some(f) = &record.freezer {
        let _ = cgroups::set_frozen(f, false);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = cgroups::procs(&record.cgroup.paths());
        if state::process_is(record.pid, record.pid_start) {
            left.push(record.pid);
        }
        if left.is_empty() {
            break;
        }
        for pid in left {
            let _ = warden_jail::sys::kill(pid, libc::SIGKILL);
        }
        if Instant::now() > deadline {
            return Err(OciError::State(format!(
                "container {id}: processes survived SIGKILL"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The monitor writes the report as the container ends: give it a
    // moment, so that the ledger entry is not lost with the directory.
    let deadline = Instant::now() + Duration::from_secs(5);
    while record.monitor_pid > 0
        && state::start_time(record.monitor_pid).is_some()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    record.cgroup.remove();
    // poststop: a failure is a warning, the deletion goes on.
    let hooks = record.hooks.clone().unwrap_or_default();
    let st = state::hook_state(id, "stopped", 0, &record.bundle, &record.annotations);
    if let Err(why) = crate::hooks::run_all("poststop", hooks.poststop().as_ref(), &st) {
        eprintln!("warden-oci: warning: {why}");
    }
    std::fs::remove_dir_all(state::dir_of(root, id))
        .map_err(|e| OciError::Io(format!("remove {}", state::dir_of(root, id).display()), e))
}

pub fn pause(root: &Path, id: &str, frozen: bool) -> Result<(), OciError> {
    let mut record = Record::load(root, id)?;
    if record.backend == "gvisor" {
        // runsc pauses inside its Sentry (and checks the state itself).
        let verb = if frozen { "pause" } else { "resume" };
        crate::gvisor::run(&state::dir_of(root, id), &[verb, id])?;
        record.paused = frozen;
        return record.save(root);
    }
    let status = record.status();
    let ok = if frozen {
        status == Status::Running
    } else {
        status == Status::Paused
    };
    if !ok {
        return Err(OciError::State(format!(
            "container {id} is {}, not {}",
            status.as_str(),
            if frozen { "running" } else { "paused" }
        )));
    }
    let f = record
        .freezer
        .as_ref()
        .ok_or_else(|| OciError::Unsupported("no freezer cgroup here".into()))?;
    cgroups::set_frozen(f, frozen)
}

pub fn ps(root: &Path, id: &str) -> Result<Vec<i32>, OciError> {
    let record = Record::load(root, id)?;
    Ok(cgroups::procs(&record.cgroup.paths()))
}

/// Writes new resources (a `linux.resources` object) into the cgroup.
pub fn update(root: &Path, id: &str, resources: serde_json::Value) -> Result<(), OciError> {
    let record = Record::load(root, id)?;
    if record.status() == Status::Stopped {
        return Err(OciError::State("container not running".into()));
    }
    let r: oci_spec::runtime::LinuxResources = serde_path_to_error::deserialize(resources)
        .map_err(|e| OciError::Config(format!("resources: {}: {}", e.path(), e.inner())))?;
    record.cgroup.apply(&r)
}

/// Every container under `root`.
pub fn list(root: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for e in entries.flatten() {
        if let Some(id) = e.file_name().to_str() {
            if let Ok(r) = Record::load(root, id) {
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The exit status as a shell gives it.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// `exec`'s options.
pub struct ExecOptions<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub process: oci_spec::runtime::Process,
    pub pid_file: Option<&'a Path>,
    pub detach: bool,
    pub ignore_paused: bool,
    pub console_socket: Option<&'a Path>,
    /// `--preserve-fds N`: descriptors 3..3+N go to the process.
    pub preserve_fds: u32,
}

/// Runs another process in a running container: a child joins the
/// container's cgroup and namespaces (the user namespace first, the mount
/// namespace last) and forks the process there — a pid namespace takes
/// effect for children only — which takes on its user, capabilities and
/// limits and execs. This process is a subreaper, so the process is its
/// own to wait for (and the shim's, the next subreaper up, once this one
/// has gone with --detach).
pub fn exec(o: &ExecOptions<'_>) -> Result<i32, OciError> {
    let record = Record::load(o.root, o.id)?;
    match record.status() {
        Status::Running => {}
        Status::Paused if o.ignore_paused => {}
        other => {
            return Err(OciError::State(format!(
                "cannot exec in a container that is {}",
                other.as_str()
            )))
        }
    }
    if record.backend == "gvisor" {
        if o.preserve_fds > 0 {
            return Err(OciError::Unsupported(
                "--preserve-fds is not supported with dev.warden.backend: gvisor".into(),
            ));
        }
        return crate::gvisor::exec(&state::dir_of(o.root, o.id), o);
    }
    let kinds = ["user", "ipc", "uts", "net", "pid", "cgroup", "mnt"];
    let mut joins: Vec<(std::fs::File, libc::c_int)> = Vec::new();
    for kind in kinds {
        let theirs = format!("/proc/{}/ns/{kind}", record.pid);
        let same = match (
            std::fs::metadata(&theirs),
            std::fs::metadata(format!("/proc/self/ns/{kind}")),
        ) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            }
            _ => false,
        };
        if same {
            continue;
        }
        let f =
            std::fs::File::open(&theirs).map_err(|e| OciError::Io(format!("open {theirs}"), e))?;
        let flag = match kind {
            "user" => libc::CLONE_NEWUSER,
            "ipc" => libc::CLONE_NEWIPC,
            "uts" => libc::CLONE_NEWUTS,
            "net" => libc::CLONE_NEWNET,
            "pid" => libc::CLONE_NEWPID,
            "cgroup" => libc::CLONE_NEWCGROUP,
            _ => libc::CLONE_NEWNS,
        };
        joins.push((f, flag));
    }
    // The container's pid must still be the one whose namespaces were taken.
    if !state::process_is(record.pid, record.pid_start) {
        return Err(OciError::State("container not running".into()));
    }
    let console = match (o.process.terminal().unwrap_or(false), o.console_socket) {
        (true, Some(p)) => Some(std::os::unix::net::UnixStream::connect(p).map_err(|e| {
            OciError::Io(format!("connect to the console socket {}", p.display()), e)
        })?),
        (true, None) => return Err(OciError::Usage("a terminal needs --console-socket".into())),
        (false, _) => None,
    };
    warden_jail::sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1)
        .map_err(|e| OciError::Io("become a subreaper".into(), e))?;
    let (pid_r, pid_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    // SAFETY: warden-oci is single-threaded; the child only joins, forks
    // and _exits (or runs the process set-up, which execs or _exits).
    let joiner = match unsafe { warden_jail::sys::fork() } {
        Ok(0) => {
            drop(pid_r);
            drop(status_r);
            let fail = |why: String| -> ! {
                let _ = warden_jail::sys::write_all(
                    status_w.as_raw_fd(),
                    format!("error: {why}").as_bytes(),
                );
                warden_jail::sys::exit_now(1)
            };
            if let Err(e) = record.cgroup.add(warden_jail::sys::getpid()) {
                fail(e.to_string());
            }
            // Before the mount namespace changes what the path means.
            let agent = match init::connect_agent(record.seccomp.as_ref()) {
                Ok(a) => a,
                Err(why) => fail(why),
            };
            for (f, flag) in &joins {
                if let Err(e) = warden_jail::sys::setns(f.as_raw_fd(), *flag) {
                    fail(format!("join the container's namespace ({flag:#x}): {e}"));
                }
            }
            drop(joins);
            // SAFETY: still single-threaded; the grandchild runs the
            // process set-up, which execs or _exits.
            match unsafe { warden_jail::sys::fork() } {
                Ok(0) => {
                    drop(pid_w);
                    // Ends with the runtime only when the runtime waits.
                    let state = state::hook_state(
                        o.id,
                        "running",
                        record.pid,
                        &record.bundle,
                        &record.annotations,
                    );
                    if let Some(c) = &console {
                        if let Err(why) = init::terminal(c, &o.process) {
                            fail(why);
                        }
                    }
                    let seccomp = record.seccomp.as_ref();
                    if let Err(why) = init::descriptors_for_exec(o.preserve_fds) {
                        fail(why);
                    }
                    let program =
                        match init::become_process(&o.process, seccomp, agent, &state, None) {
                            Ok(p) => p,
                            Err(why) => fail(why),
                        };
                    drop(status_w);
                    init::exec(program)
                }
                Ok(pid) => {
                    let _ =
                        warden_jail::sys::write_all(pid_w.as_raw_fd(), pid.to_string().as_bytes());
                    warden_jail::sys::exit_now(0)
                }
                Err(e) => fail(format!("fork in the container: {e}")),
            }
        }
        Ok(pid) => pid,
        Err(e) => return Err(OciError::Io("fork".into(), e)),
    };
    drop(pid_w);
    drop(status_w);
    drop(joins);
    let said = read_all(&pid_r);
    let _ = warden_jail::sys::waitpid(joiner, 0);
    let status = read_all(&status_r);
    if !status.is_empty() {
        return Err(OciError::Create(
            String::from_utf8_lossy(&status)
                .trim_start_matches("error: ")
                .to_string(),
        ));
    }
    let pid: i32 = std::str::from_utf8(&said)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| OciError::Create("the process did not start in the container".into()))?;
    if let Some(p) = o.pid_file {
        write_pid_file(p, pid)?;
    }
    if o.detach {
        return Ok(0);
    }
    let (_, st) = warden_jail::sys::waitpid(pid, 0)
        .map_err(|e| OciError::Io("wait for the process".into(), e))?;
    Ok(exit_code(st))
}
