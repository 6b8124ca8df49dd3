//! The gVisor backend's first process when the working directory must be
//! made inside the sandbox (a directory under its private /tmp, which the
//! host cannot populate): Warden's own binary, shown read-only at
//! [`INIT_PATH`], running as the sandbox user. It makes the directory,
//! enters it and execs the program in its own place — no second process,
//! which under gVisor costs a fork and an exec (≈ 12–16 ms on ptrace). If
//! the exec fails it records the errno in [`STATUS_DIR`]. How the program
//! ended is read from the Sentry's log either way (see `gvisor`), never
//! from anything the program can write.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::sys;

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
    let Err(e) = init(&args[1..]);
    let _ = write_status(&format!("setup {e}"));
    sys::exit_now(125);
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    sys::cstring(bytes.to_vec())
}

fn init(args: &[OsString]) -> std::io::Result<std::convert::Infallible> {
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
    let errno = exec_program(&workdir, &candidates, &argv, &envp);
    write_status(&format!("exec {errno}"))?;
    sys::exit_now(127)
}

/// Makes the working directory (and its parents) when missing: init runs
/// as the sandbox user, so they are the program's.
fn make_workdir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("working directory {}: {e}", dir.display()),
            )
        })
}

/// Enters the working directory and execs each candidate path in turn,
/// as the sandbox user (the process's own identity: the bundle's user).
/// Returns the errno to report.
fn exec_program(
    workdir: &CString,
    candidates: &[CString],
    argv: &[CString],
    envp: &[CString],
) -> i32 {
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

/// What init recorded: it could not exec the program, or could not set up.
#[derive(Debug, PartialEq)]
pub(crate) enum Ending {
    Exec(i32),
    Setup(String),
}

pub(crate) fn parse_status(text: &str) -> Option<Ending> {
    let (kind, value) = text.trim_end().split_once(' ')?;
    match kind {
        "exec" => value.parse().ok().map(Ending::Exec),
        "setup" => Some(Ending::Setup(value.to_string())),
        _ => None,
    }
}

/// The raw wait status of the sandbox's first process, from the Sentry's
/// own log (`Exiting with status: N`, written by runsc's boot process on
/// the host — nothing inside the sandbox can write it). runsc's exit code
/// cannot serve: it says 137 for both `exit(137)` and SIGKILL.
pub(crate) fn parse_boot_log(text: &str) -> Option<i32> {
    const MARK: &str = "Exiting with status: ";
    let line = text.lines().rev().find(|l| l.contains(MARK))?;
    let value = line.rsplit(MARK).next()?.trim();
    let raw: u32 = value.parse().ok()?;
    let raw = i32::try_from(raw).ok()?;
    // A real wait status: an exit code in the second byte, or a signal.
    let exited = raw & 0x7f == 0 && raw >> 16 == 0;
    let signaled = (1..=64).contains(&(raw & 0x7f)) && raw >> 8 == 0;
    (exited || signaled).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentrys_wait_status_tells_exit_137_from_sigkill() {
        let log = "I1207 11:42:34.644593 22167 boot.go:389] application exiting with killed by signal 9\n\
                   I1207 11:42:34.644845 22167 main.go:266] Exiting with status: 9\n";
        let st = parse_boot_log(log).unwrap();
        assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == 9);
        let st = parse_boot_log("x main.go:266] Exiting with status: 35072\n").unwrap();
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 137);
        assert_eq!(parse_boot_log("Exiting with status: 99999999\n"), None);
        assert_eq!(parse_boot_log("Exiting with status: -1\n"), None);
        assert_eq!(parse_boot_log("nothing here"), None);
        assert_eq!(parse_status("exec 13"), Some(Ending::Exec(13)));
        assert_eq!(parse_status("exited 0"), None);
    }
}
