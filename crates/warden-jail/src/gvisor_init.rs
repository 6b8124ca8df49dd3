//! The gVisor backend's PID 1 inside the sandbox: Warden's own binary,
//! shown read-only at [`INIT_PATH`]. It starts as the sandbox's root (with
//! only CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_CHOWN, and no_new_privs), makes the
//! working directory, forks the program as the sandbox user, reaps every
//! process, and writes how the program ended to [`STATUS_DIR`] — a
//! directory only the sandbox's root may write — because runsc's own exit
//! status cannot tell `exit(137)` from a SIGKILL.

use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use crate::{sys, SANDBOX_ID};

/// The argument that makes the binary the sandbox's init.
pub const INIT_FLAG: &str = "--warden-gvisor-init";
/// Where the sandbox sees Warden's binary.
pub(crate) const INIT_PATH: &str = "/.warden/init";
/// Where init writes the program's ending (bound from the run directory).
pub(crate) const STATUS_DIR: &str = "/.warden/status";
pub(crate) const STATUS_FILE: &str = "exit";

/// Runs as the sandbox's init when `args` (the process's arguments after
/// the binary's name) start with [`INIT_FLAG`]: `INIT_FLAG WORKDIR PATH
/// PROGRAM [ARGS...]`. Never returns then. Outside a gVisor sandbox (not
/// PID 1) it refuses: it is not a command for people.
pub fn run_if_init(args: &[OsString]) {
    if args.first().map(|a| a.as_bytes()) != Some(INIT_FLAG.as_bytes()) {
        return;
    }
    if sys::getpid() != 1 {
        eprintln!("warden: {INIT_FLAG} is the gVisor sandbox's init, not a command");
        sys::exit_now(2);
    }
    let code = match init(&args[1..]) {
        Ok(()) => 0,
        Err(e) => {
            let _ = write_status(&format!("setup {e}"));
            125
        }
    };
    sys::exit_now(code);
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    sys::cstring(bytes.to_vec())
}

fn init(args: &[OsString]) -> std::io::Result<()> {
    let [workdir, path, program, ..] = args else {
        return Err(std::io::Error::other("init: missing arguments"));
    };
    let argv: Vec<CString> = args[2..]
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv)
        })
        .collect::<Result<_, _>>()?;
    let candidates: Vec<CString> = crate::candidates(
        &program.to_string_lossy(),
        &String::from_utf8_lossy(path.as_bytes()),
    )
    .into_iter()
    .map(|c| cstring(&c))
    .collect::<Result<_, _>>()?;
    let workdir = std::path::Path::new(workdir);
    make_workdir(workdir)?;
    let workdir = cstring(workdir.as_os_str().as_bytes())?;
    let (errno_r, errno_w) = sys::pipe()?;
    // SAFETY: init is single-threaded (nothing here starts a thread), and
    // the child only switches ids, changes directory and execs or _exits.
    #[allow(unsafe_code)]
    let pid = unsafe { sys::fork() }?;
    if pid == 0 {
        drop(errno_r);
        let errno = exec_program(&workdir, &candidates, &argv, &envp);
        let _ = sys::write_all(errno_w.as_raw_fd(), &errno.to_le_bytes());
        sys::exit_now(127);
    }
    drop(errno_w);
    let mut buf = [0u8; 4];
    let exec_errno = match sys::read(errno_r.as_raw_fd(), &mut buf) {
        Ok(4) => Some(i32::from_le_bytes(buf)),
        _ => None,
    };
    // PID 1 reaps every orphan; the program's own status is the one kept.
    let status = loop {
        match sys::waitpid(-1, 0) {
            Ok((p, st)) if p == pid => break st,
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    let line = match exec_errno {
        Some(errno) => format!("exec {errno}"),
        None if libc::WIFSIGNALED(status) => format!("signaled {}", libc::WTERMSIG(status)),
        None => format!("exited {}", libc::WEXITSTATUS(status)),
    };
    write_status(&line)
}

/// Makes the working directory (and its parents) when missing, owned by
/// the sandbox user, as the jail does inside its /tmp.
fn make_workdir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut made = std::path::PathBuf::from("/");
    let mut created = Vec::new();
    for part in dir.components().skip(1) {
        made.push(part);
        match std::fs::create_dir(&made) {
            Ok(()) => created.push(made.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("working directory {}: {e}", dir.display()),
                ))
            }
        }
    }
    // Given away only once made: init has no CAP_DAC_OVERRIDE to write
    // into a directory it no longer owns.
    for dir in created {
        std::os::unix::fs::chown(&dir, Some(SANDBOX_ID), Some(SANDBOX_ID))?;
    }
    Ok(())
}

/// The program's side of the fork: the sandbox user's identity (which
/// drops every capability init had), the working directory, then each
/// candidate path in turn. Returns the errno to report.
fn exec_program(
    workdir: &CString,
    candidates: &[CString],
    argv: &[CString],
    envp: &[CString],
) -> i32 {
    sys::unblock_all_signals();
    // The bounding set first (it takes CAP_SETPCAP, which the change of
    // uid below clears with every other capability).
    for cap in 0..64 {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return e.raw_os_error().unwrap_or(libc::EPERM),
        }
    }
    if let Err(e) = sys::switch_ids(SANDBOX_ID, SANDBOX_ID) {
        return e.raw_os_error().unwrap_or(libc::EPERM);
    }
    if let Err(e) = sys::chdir(workdir) {
        return e.raw_os_error().unwrap_or(libc::ENOENT);
    }
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // As execvp: ENOENT only when no candidate exists; another error of an
    // existing file (EACCES) is what is reported.
    let mut errno = libc::ENOENT;
    for path in candidates {
        let err = sys::execve(path, &argv_ptrs, &envp_ptrs);
        match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => {}
            Some(e) => errno = e,
            None => errno = libc::EIO,
        }
    }
    errno
}

fn write_status(line: &str) -> std::io::Result<()> {
    let dir = std::path::Path::new(STATUS_DIR);
    let tmp = dir.join(format!("{STATUS_FILE}.tmp"));
    std::fs::write(&tmp, line.as_bytes())?;
    std::fs::rename(&tmp, dir.join(STATUS_FILE))
}

/// How the program ended, as init wrote it.
#[derive(Debug, PartialEq)]
pub(crate) enum Ending {
    /// A raw wait status.
    Waited(i32),
    Exec(i32),
    Setup(String),
}

pub(crate) fn parse_status(text: &str) -> Option<Ending> {
    let (kind, value) = text.trim_end().split_once(' ')?;
    match kind {
        "exited" => value
            .parse::<i32>()
            .ok()
            .filter(|c| (0..=255).contains(c))
            .map(|c| Ending::Waited(c << 8)),
        "signaled" => value
            .parse::<i32>()
            .ok()
            .filter(|s| (1..=64).contains(s))
            .map(Ending::Waited),
        "exec" => value.parse().ok().map(Ending::Exec),
        "setup" => Some(Ending::Setup(value.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip_as_wait_statuses() {
        let Some(Ending::Waited(st)) = parse_status("exited 137\n") else {
            panic!("not parsed");
        };
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 137);
        let Some(Ending::Waited(st)) = parse_status("signaled 9") else {
            panic!("not parsed");
        };
        assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == 9);
        assert_eq!(parse_status("exec 13"), Some(Ending::Exec(13)));
        assert_eq!(parse_status("exited 300"), None);
        assert_eq!(parse_status("signaled 0"), None);
        assert_eq!(parse_status("garbage"), None);
    }
}
