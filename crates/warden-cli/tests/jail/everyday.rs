//! Everyday programs work in the jail as they do elsewhere, and are not
//! reported as violations: ps, top, git, tar, cp -p, install, a Python
//! venv, node, php, glibc's NUMA and affinity probes; HOME and the locale
//! are set; a private devpts gives working pseudo-terminals. Denied calls
//! that matter stay violations.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::common::{Outcome, TempDir};

/// Exit 0, status `exited`, and not a single violation.
fn expect_clean(out: &Outcome, what: &str) {
    out.expect_ok(what);
    assert!(
        out.violations().is_empty(),
        "{what}: an ordinary program was reported as a violation\n{}",
        out.ctx()
    );
}

fn sh(t: &TempDir, extra: &[&str], script: &str) -> Outcome {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["--", "sh", "-c", script].map(String::from));
    t.run(args).go()
}

// ------------------------------------------------------------ tools

#[test]
fn everyday_ps_aux() {
    let t = TempDir::new("ev-ps");
    let out = t.run(["--", "ps", "aux"]).go();
    expect_clean(&out, "ps aux");
    out.expect_stdout_has("COMMAND", "ps aux header");
    out.expect_stdout_has("ps aux", "ps lists itself");
    // Only the jail's own processes: its init and ps.
    assert_eq!(
        out.stdout.lines().count(),
        3,
        "ps aux sees processes beyond the jail's\n{}",
        out.ctx()
    );
}

#[test]
fn everyday_top_batch() {
    let t = TempDir::new("ev-top");
    let out = t.run(["--", "top", "-b", "-n1"]).go();
    expect_clean(&out, "top -b -n1");
    out.expect_stdout_has("Tasks:", "top summary");
    out.expect_stdout_has("top", "top lists itself");
}

/// git with a global config (in HOME) and a repository in a write grant.
#[test]
fn everyday_git_in_a_write_grant() {
    let t = TempDir::new("ev-git");
    let grant = format!("fs:write:{}", t.work().display());
    let out = sh(
        &t,
        &["--allow", &grant],
        "set -e
git config --global user.name 'Warden Test'
git config --global user.email test@example.invalid
git config --global init.defaultBranch main
git config --global --get user.name
git init -q repo
cd repo
echo hello > greeting.txt
git add greeting.txt
git commit -q -m 'first commit'
git log --format='%an <%ae> %s'
git status --short",
    );
    expect_clean(&out, "git config --global / init / add / commit / log");
    out.expect_stdout_has("Warden Test\n", "git config --global --get");
    out.expect_stdout_has(
        "Warden Test <test@example.invalid> first commit",
        "git log after a commit",
    );
    assert!(
        t.path("repo/.git/HEAD").is_file(),
        "the repository was not written to the grant\n{}",
        out.ctx()
    );
    assert_eq!(
        fs::read_to_string(t.path("repo/greeting.txt")).unwrap_or_default(),
        "hello\n",
        "the work tree was not written to the grant\n{}",
        out.ctx()
    );
}

/// tar creates and extracts files, a directory, a symlink and a FIFO
/// (mknod of a FIFO), in /tmp and into a write grant.
#[test]
fn everyday_tar_create_and_extract() {
    let t = TempDir::new("ev-tar");
    let grant = format!("fs:write:{}", t.work().display());
    let out = sh(
        &t,
        &["--allow", &grant],
        "set -e
mkdir -p /tmp/src/sub
echo one > /tmp/src/a.txt
echo two > /tmp/src/sub/b.txt
ln -s a.txt /tmp/src/link
mkfifo /tmp/src/fifo
tar -czf /tmp/src.tgz -C /tmp src
tar -tzf /tmp/src.tgz | sort
mkdir /tmp/out
tar -xzf /tmp/src.tgz -C /tmp/out
cat /tmp/out/src/a.txt /tmp/out/src/sub/b.txt
readlink /tmp/out/src/link
test -p /tmp/out/src/fifo && echo fifo-kept
tar -xzf /tmp/src.tgz",
    );
    expect_clean(&out, "tar create and extract");
    out.expect_stdout_has("src/sub/b.txt", "tar -t lists the archive");
    out.expect_stdout_has("one\ntwo\na.txt\nfifo-kept\n", "tar extracted in /tmp");
    assert_eq!(
        fs::read_to_string(t.path("src/sub/b.txt")).unwrap_or_default(),
        "two\n",
        "tar did not extract into the grant\n{}",
        out.ctx()
    );
}

#[test]
fn everyday_python_venv() {
    let t = TempDir::new("ev-venv");
    let out = sh(
        &t,
        &[],
        "set -e
python3 -m venv --without-pip /tmp/venv
/tmp/venv/bin/python -c 'import sys; print(sys.prefix, sys.prefix != sys.base_prefix)'",
    );
    expect_clean(&out, "python3 -m venv --without-pip");
    out.expect_stdout_has("/tmp/venv True", "the venv's python runs in the venv");
}

/// Interpreter start-up plus what they commonly probe: CPUs, affinity,
/// threads, subprocesses, the user's name and home.
#[test]
fn everyday_python_startup() {
    let t = TempDir::new("ev-py");
    let py = "import os, pwd, subprocess, threading\n\
t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
print(os.cpu_count() >= 1, len(os.sched_getaffinity(0)) >= 1)\n\
print(subprocess.run(['true']).returncode)\n\
print(pwd.getpwuid(os.getuid()).pw_name, os.path.expanduser('~'))";
    let out = t.run(["--", "python3", "-c", py]).go();
    expect_clean(&out, "python3 start-up");
    assert_eq!(
        out.stdout,
        "True True\n0\nsandbox /tmp\n",
        "python3 output\n{}",
        out.ctx()
    );
}

#[test]
fn everyday_node() {
    let t = TempDir::new("ev-node");
    let js = "const os = require('os');\
require('child_process').execSync('true');\
console.log(os.cpus().length >= 1, os.homedir(), 6 * 7)";
    let out = t.run(["--", "node", "-e", js]).go();
    expect_clean(&out, "node -e");
    assert_eq!(out.stdout, "true /tmp 42\n", "node output\n{}", out.ctx());
}

#[test]
fn everyday_php() {
    let t = TempDir::new("ev-php");
    let out = t
        .run([
            "--",
            "php",
            "-r",
            "echo 6*7, ' ', getenv('HOME'), ' ', json_encode([1, 2]), \"\\n\";",
        ])
        .go();
    expect_clean(&out, "php -r");
    assert_eq!(out.stdout, "42 /tmp [1,2]\n", "php output\n{}", out.ctx());
}

/// glibc's and libnuma's probes of memory placement and CPU affinity, on
/// the program's own memory: allowed and not recorded. Moving another
/// process's pages stays a violation.
#[test]
fn everyday_numa_and_affinity_probes() {
    let t = TempDir::new("ev-numa");
    let py = r#"
import ctypes, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return r, ctypes.get_errno() if r < 0 else 0
m = mmap.mmap(-1, 4096)
m.write(b"x")
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
mode = ctypes.c_int(-1)
print("get_mempolicy", sc(239, ctypes.byref(mode), 0, 0, 0, 0))
print("set_mempolicy", sc(238, 0, 0, 0))
print("mbind", sc(237, addr, 4096, 0, 0, 0, 0))
pages = (ctypes.c_void_p * 1)(addr)
status = (ctypes.c_int * 1)(-1)
print("move_pages", sc(279, 0, 1, pages, 0, status, 0), status[0] >= 0)
print("affinity", len(os.sched_getaffinity(0)) >= 1)
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    expect_clean(&out, "NUMA and affinity probes");
    for call in ["get_mempolicy", "set_mempolicy", "mbind"] {
        out.expect_stdout_has(&format!("{call} (0, 0)\n"), call);
    }
    out.expect_stdout_has("move_pages (0, 0) True\n", "move_pages of its own pages");
    out.expect_stdout_has("affinity True\n", "sched_getaffinity");

    let other = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
status = (ctypes.c_int * 1)(-1)
pages = (ctypes.c_void_p * 1)(4096)
r = libc.syscall(ctypes.c_long(279), ctypes.c_long(1), ctypes.c_long(1), pages, None, status, ctypes.c_long(0))
print("ret", r, "errno", ctypes.get_errno())
"#;
    let out = t.run(["--", "python3", "-c", other]).go();
    out.expect_stdout_has("ret -1 errno 1", "move_pages of PID 1 must fail with EPERM");
    out.expect_status("violation", "move_pages of another process");
    out.expect_violation("move_pages", "move_pages of another process");
}

/// FIFOs (mkfifo) and I/O priority (ionice) are ordinary; a device node
/// and the realtime I/O class are not granted (the first is a violation,
/// the second the kernel refuses: no CAP_SYS_NICE).
#[test]
fn everyday_mkfifo_and_ionice() {
    let t = TempDir::new("ev-fifo");
    let out = sh(
        &t,
        &[],
        "set -e
mkfifo /tmp/pipe
test -p /tmp/pipe && echo fifo
(echo through-fifo > /tmp/pipe &) ; cat /tmp/pipe
ionice
ionice -c3 true && echo idle-class
ionice -c1 true 2>/dev/null || echo realtime-refused",
    );
    expect_clean(&out, "mkfifo and ionice");
    out.expect_stdout_has("fifo\nthrough-fifo\n", "mkfifo");
    out.expect_stdout_has("idle-class\nrealtime-refused\n", "ionice");
}

/// cp -p, cp -a and install copy or set modes through ACL xattrs: they
/// work, in /tmp and in a write grant.
#[test]
fn everyday_cp_preserve_and_install() {
    let t = TempDir::new("ev-cp");
    let grant = format!("fs:write:{}", t.work().display());
    let out = sh(
        &t,
        &["--allow", &grant],
        "set -e
echo data > f
chmod 640 f
mkdir -p d/sub && echo inner > d/sub/g && ln -s g d/sub/link
cp -p f f.copy
cp -a d d.copy
install -m 755 f bin/tool 2>/dev/null || { mkdir bin; install -m 755 f bin/tool; }
install -d -m 700 private
cp -a d /tmp/d.copy && cp -p f /tmp/f.copy
stat -c '%a %n' f.copy bin/tool private /tmp/f.copy
readlink d.copy/sub/link",
    );
    expect_clean(&out, "cp -p / cp -a / install");
    out.expect_stdout_has(
        "640 f.copy\n755 bin/tool\n700 private\n640 /tmp/f.copy\ng\n",
        "modes kept and set",
    );
    assert_eq!(
        fs::read_to_string(t.path("d.copy/sub/g")).unwrap_or_default(),
        "inner\n",
        "cp -a did not copy into the grant\n{}",
        out.ctx()
    );
}

/// Extended attributes the program may set (user.*) work; file
/// capabilities and trusted.* are refused by the kernel itself (no
/// capability in the jail), so nothing privileged is planted in a grant.
#[test]
fn xattr_writes_cannot_plant_file_capabilities() {
    let t = TempDir::new("ev-xattr");
    let grant = format!("fs:write:{}", t.work().display());
    let py = r##"
import errno, os
for path in ("planted", "/tmp/planted"):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(path, 0o755)
    os.setxattr(path, "user.note", b"hi")
    print(path, "user", os.getxattr(path, "user.note"))
    os.removexattr(path, "user.note")
    # VFS_CAP_REVISION_2 | EFFECTIVE, permitted: CAP_SETUID.
    cap = bytes.fromhex("01000002" "80000000" "00000000" "00000000" "00000000")
    for name, value in (("security.capability", cap), ("trusted.x", b"1"), ("security.evil", b"1")):
        try:
            os.setxattr(path, name, value)
            print(path, name, "SET")
        except OSError as e:
            print(path, name, errno.errorcode[e.errno])
"##;
    let out = t.run(["--allow", &grant, "--", "python3", "-c", py]).go();
    expect_clean(&out, "xattr writes");
    for path in ["planted", "/tmp/planted"] {
        out.expect_stdout_has(&format!("{path} user b'hi'\n"), "a user.* xattr");
        for name in ["security.capability", "trusted.x", "security.evil"] {
            out.expect_stdout_has(&format!("{path} {name} EPERM\n"), name);
        }
    }
    out.expect_stdout_lacks("SET", "a privileged xattr was set");
    // On the host, the file in the grant carries no capability.
    let host = std::process::Command::new("python3")
        .arg("-c")
        .arg("import os, sys; print(sorted(os.listxattr(sys.argv[1])))")
        .arg(t.path("planted"))
        .output()
        .expect("run python3 on the host");
    assert_eq!(
        String::from_utf8_lossy(&host.stdout),
        "[]\n",
        "the granted file carries xattrs on the host\n{}",
        out.ctx()
    );
}

// ------------------------------------------------------------ environment

#[test]
fn home_is_set_and_writable() {
    let t = TempDir::new("ev-home");
    let out = sh(
        &t,
        &[],
        "set -e
echo \"HOME=$HOME\"
echo note > \"$HOME/.note\" && cat \"$HOME/.note\"
cd && pwd",
    );
    expect_clean(&out, "HOME");
    assert_eq!(
        out.stdout,
        "HOME=/tmp\nnote\n/tmp\n",
        "HOME must be the sandbox user's writable home\n{}",
        out.ctx()
    );
}

#[test]
fn locale_is_c_utf8() {
    let t = TempDir::new("ev-locale");
    let py = "import locale, os, sys\n\
print(os.environ.get('LANG'), os.environ.get('LC_ALL'))\n\
print(locale.setlocale(locale.LC_ALL, ''), sys.getfilesystemencoding())\n\
print('\\u00e9t\\u00e9')";
    // The caller's own locale must not leak in: the jail's is C.UTF-8.
    let out = t
        .run(["--", "python3", "-c", py])
        .env("LANG", "fr_FR.UTF-8")
        .env("LC_ALL", "fr_FR.UTF-8")
        .go();
    expect_clean(&out, "locale");
    assert_eq!(
        out.stdout,
        "C.UTF-8 C.UTF-8\nC.UTF-8 utf-8\nété\n",
        "LANG and LC_ALL must be C.UTF-8 and usable\n{}",
        out.ctx()
    );
}

/// A granted variable keeps the caller's value; LC_ALL, which would
/// override a granted LANG, is then left unset.
#[test]
fn granted_home_and_lang_keep_the_callers_values() {
    let t = TempDir::new("ev-granted");
    let show = "echo \"HOME=$HOME LANG=$LANG LC_ALL=${LC_ALL-unset}\"";
    let out = t
        .run([
            "--allow",
            "env:LANG",
            "--env",
            "HOME=/tmp/elsewhere",
            "--",
            "sh",
            "-c",
            show,
        ])
        .env("LANG", "de_DE.UTF-8")
        .go();
    expect_clean(&out, "granted HOME and LANG");
    assert_eq!(
        out.stdout,
        "HOME=/tmp/elsewhere LANG=de_DE.UTF-8 LC_ALL=unset\n",
        "granted values must be kept\n{}",
        out.ctx()
    );
    let out = t
        .run(["--allow", "env:LC_ALL", "--", "sh", "-c", show])
        .env("LC_ALL", "C")
        .go();
    expect_clean(&out, "granted LC_ALL");
    assert_eq!(
        out.stdout,
        "HOME=/tmp LANG=C.UTF-8 LC_ALL=C\n",
        "a granted LC_ALL must be kept, the rest defaulted\n{}",
        out.ctx()
    );
}

// ------------------------------------------------------------ pseudo-terminals

#[test]
fn pty_openpty_works() {
    let t = TempDir::new("ev-openpty");
    let py = "import os, pty\n\
m, s = os.openpty()\n\
os.write(s, b'hi\\n')\n\
print(os.read(m, 10))\n\
print(os.ttyname(s), os.isatty(s))";
    let out = t.run(["--", "python3", "-c", py]).go();
    expect_clean(&out, "os.openpty");
    assert_eq!(
        out.stdout,
        "b'hi\\r\\n'\n/dev/pts/0 True\n",
        "a pty must carry data through its line discipline\n{}",
        out.ctx()
    );
}

#[test]
fn pty_script_works() {
    let t = TempDir::new("ev-script");
    let out = t
        .run(["--", "script", "-qc", "echo hi; tty", "/dev/null"])
        .go();
    expect_clean(&out, "script -qc");
    out.expect_stdout_has("hi", "script ran its command on a pty");
    out.expect_stdout_has("/dev/pts/0", "the command's terminal is the jail's pty");
}

/// A child on a pty as pexpect runs it (pty.fork: setsid, controlling
/// terminal, exec).
#[test]
fn pty_fork_gives_a_controlling_terminal() {
    let t = TempDir::new("ev-ptyfork");
    let py = r#"
import os, pty
pid, fd = pty.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", "test -t 0 && echo child-on-$(tty)"])
out = b""
while True:
    try:
        data = os.read(fd, 1024)
    except OSError:
        break
    if not data:
        break
    out += data
print(out.decode().strip(), os.waitpid(pid, 0)[1])
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    expect_clean(&out, "pty.fork");
    assert_eq!(
        out.stdout,
        "child-on-/dev/pts/0 0\n",
        "pty.fork\n{}",
        out.ctx()
    );
}

/// The jail's devpts is its own instance: the host's ptys are not there
/// (one is held open while the jail runs), it is not the host's
/// filesystem, its mount is nosuid and noexec, /dev/ptmx leads to it, and
/// the host's /dev/tty is not handed in.
#[test]
fn pty_devpts_is_a_private_instance() {
    let host_pty = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ptmx")
        .expect("open the host's /dev/ptmx");
    let host_names: Vec<String> = fs::read_dir("/dev/pts")
        .expect("list the host's /dev/pts")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "ptmx")
        .collect();
    assert!(!host_names.is_empty(), "the host holds a pty for this test");
    let host_dev = fs::metadata("/dev/pts").expect("stat /dev/pts").dev();
    let t = TempDir::new("ev-devpts");
    let py = r#"
import os
print("before", sorted(os.listdir("/dev/pts")))
m, s = os.openpty()
print("after", sorted(os.listdir("/dev/pts")))
print("dev", os.stat("/dev/pts").st_dev)
print("ptmx", os.readlink("/dev/ptmx"), os.stat("/dev/ptmx").st_dev == os.stat("/dev/pts").st_dev)
print("tty", os.path.exists("/dev/tty"))
for line in open("/proc/self/mountinfo"):
    if " /dev/pts " in line:
        print("mount", line.strip())
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    drop(host_pty);
    expect_clean(&out, "devpts probe");
    out.expect_stdout_has("before ['ptmx']\n", "a fresh devpts holds only ptmx");
    out.expect_stdout_has("after ['0', 'ptmx']\n", "the jail's first pty is number 0");
    out.expect_stdout_has(
        "ptmx pts/ptmx True\n",
        "/dev/ptmx leads to the jail's devpts",
    );
    out.expect_stdout_has("tty False\n", "no /dev/tty in the jail");
    let jail_dev: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("dev "))
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or_else(|| panic!("no devpts st_dev printed\n{}", out.ctx()));
    assert_ne!(
        jail_dev,
        host_dev,
        "the jail's /dev/pts is the host's devpts\n{}",
        out.ctx()
    );
    let mount = out
        .stdout
        .lines()
        .find(|l| l.starts_with("mount "))
        .unwrap_or_else(|| panic!("/dev/pts is not a mount point in the jail\n{}", out.ctx()));
    for needed in ["nosuid", "noexec", "- devpts", "ptmxmode=666", "mode=620"] {
        assert!(
            mount.contains(needed),
            "/dev/pts mount lacks {needed:?}: {mount}\n{}",
            out.ctx()
        );
    }
    assert!(
        !mount.contains(" nodev"),
        "/dev/pts must keep its devices\n{}",
        out.ctx()
    );
}

/// A pty in the jail cannot push input (TIOCSTI) or swap its line
/// discipline (TIOCSETD): both refused and recorded.
#[test]
fn pty_cannot_inject_input_or_change_discipline() {
    let t = TempDir::new("ev-ptyioctl");
    let py = r#"
import ctypes, os, termios
libc = ctypes.CDLL(None, use_errno=True)
m, s = os.openpty()
c = ctypes.c_char(b'x')
for fd in (m, s):
    print("sti", libc.ioctl(fd, termios.TIOCSTI, ctypes.byref(c)), ctypes.get_errno())
n_hdlc = ctypes.c_int(13)
print("setd", libc.ioctl(s, 0x5423, ctypes.byref(n_hdlc)), ctypes.get_errno())
os.set_blocking(m, False)
try:
    print("read", os.read(m, 10))
except BlockingIOError:
    print("read nothing")
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    out.expect_code(0, "the program continues after refused ioctls");
    out.expect_stdout_lacks("sti 0 ", "TIOCSTI succeeded");
    out.expect_stdout_has("sti -1 1\nsti -1 1\n", "TIOCSTI must fail with EPERM");
    out.expect_stdout_has("setd -1 1\n", "TIOCSETD must fail with EPERM");
    out.expect_stdout_has("read nothing", "nothing was injected");
    out.expect_status("violation", "TIOCSTI/TIOCSETD on the jail's pty");
    out.expect_violation("ioctl", "TIOCSTI/TIOCSETD on the jail's pty");
}

// ------------------------------------------------------------ still denied

/// Calls `syscall(nr, args...)` through ctypes and prints its result.
const SYSCALL_PY: &str = r#"
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
args = [ctypes.c_long(int(a, 0)) for a in sys.argv[1:]]
print("ret", libc.syscall(*args), "errno", ctypes.get_errno(), flush=True)
"#;

#[test]
fn denied_calls_stay_violations() {
    for (name, args) in [
        ("ptrace", &["101", "0", "0", "0", "0"][..]),
        ("unshare", &["272", "0x10000000"][..]),
        ("unshare", &["272", "0x00020000"][..]),
        ("mount", &["165", "0", "0", "0", "0", "0"][..]),
        ("mknod", &["133", "0", "0o20600", "259"][..]),
    ] {
        let t = TempDir::new(&format!("ev-deny-{name}"));
        let mut argv = vec!["--", "python3", "-c", SYSCALL_PY];
        argv.extend_from_slice(args);
        let out = t.run(argv).go();
        out.expect_code(0, name);
        out.expect_stdout_has("ret -1 errno 1", &format!("{name} must fail with EPERM"));
        out.expect_status("violation", name);
        out.expect_violation(name, name);
    }
}
