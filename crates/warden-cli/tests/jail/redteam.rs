//! Red-team attacks beyond escapes.rs that the jail contains: reaching the
//! jail's init, seccomp argument tricks, kernel memory outside the limit,
//! dodging the wall clock, raising rlimits, talking to another jail, and
//! grant paths with odd characters. Each assertion names what leaked.

use std::time::Duration;

use crate::common::{unique, wait_for_process, TempDir};

/// The jail's init (PID 1) is a fork of Warden, holding its pipes and
/// environment: the program must not reach its descriptors, memory,
/// executable (the host's warden binary, CVE-2019-5736) or environment,
/// and signals to it must not end the run.
#[test]
fn jail_init_is_out_of_reach() {
    let t = TempDir::new("rt-init");
    let py = r#"
import os, signal, time
for p in ["/proc/1/exe", "/proc/1/mem", "/proc/1/environ", "/proc/1/fd/0", "/proc/1/fd/1", "/proc/1/fd/2", "/proc/1/fd/3"]:
    for flags in (os.O_RDONLY, os.O_WRONLY):
        try:
            os.close(os.open(p, flags))
            print("OPENED", p, flags, flush=True)
        except OSError as e:
            print("denied", p, e.errno, flush=True)
for p in ["/proc/1/root/", "/proc/1/cwd/", "/proc/1/map_files/"]:
    try:
        print("LISTED", p, os.listdir(p), flush=True)
    except OSError as e:
        print("denied", p, e.errno, flush=True)
for s in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, signal.SIGINT):
    try:
        os.kill(1, s)
    except OSError:
        pass
time.sleep(0.3)
print("still alive", flush=True)
"#;
    let out = t
        .run(["--", "python3", "-c", py])
        .env("WARDEN_RT_SECRET", "host-env-secret-value")
        .go();
    out.expect_ok("poking at the jail's init");
    out.expect_stdout_lacks("OPENED", "a descriptor, memory or exe of the jail's init");
    out.expect_stdout_lacks("LISTED", "the jail's init's root or cwd");
    out.expect_stdout_lacks("host-env-secret-value", "Warden's environment via init");
    out.expect_stdout_has(
        "still alive",
        "signals to the jail's init ended the program",
    );
}

/// The jail's init is a fork of Warden: its command line (world-readable
/// in /proc) must not show the caller's (policy paths, `--env NAME=VALUE`).
#[test]
fn jail_init_command_line_is_blank() {
    let t = TempDir::new("rt-cmdline");
    let out = t
        .run([
            "--env",
            "RT_CMDLINE=cmdline-secret-value",
            "--",
            "/bin/sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; echo; echo done",
        ])
        .go();
    out.expect_ok("reading the jail init's command line");
    out.expect_stdout_lacks("cmdline-secret-value", "the caller's --env value");
    out.expect_stdout_lacks("--env", "the caller's command line");
    out.expect_stdout_has("warden-init", "init's blanked command line");
}

/// seccomp sees 64-bit arguments, the kernel uses only the low 32 bits of
/// ioctl commands, clone flags and socket families: high garbage bits must
/// not slip a denied value past the filter.
#[test]
fn seccomp_ignores_high_bits_of_arguments() {
    let t = TempDir::new("rt-hibits");
    let py = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
c = ctypes.c_char(b"x")
def show(what, r):
    print(what, "ret", r, "errno", ctypes.get_errno(), flush=True)
    if r == 0 and what == "clone":
        import os; os._exit(0)
show("tiocsti", libc.syscall(L(16), L(0), L(0x100005412), ctypes.byref(c)))
show("clone", libc.syscall(L(56), L(0x7fffffff00000000 | 0x10000011), L(0), L(0), L(0), L(0)))
show("socket", libc.syscall(L(41), L(0x100000011), L(3), L(0)))
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    out.expect_code(0, "high-bit arguments");
    for what in ["tiocsti", "clone", "socket"] {
        out.expect_stdout_has(
            &format!("{what} ret -1 errno 1"),
            &format!("{what} with high garbage bits must fail with EPERM"),
        );
    }
    out.expect_status("violation", "high-bit arguments");
    out.expect_violation("ioctl", "TIOCSTI with high bits");
    out.expect_violation("clone", "clone(CLONE_NEWUSER) with high bits");
    out.expect_violation("socket", "AF_PACKET with high bits");
}

/// Socket families that reach raw links, kernel crypto, the hypervisor or
/// radios (and could autoload modules) are refused and recorded; so is a
/// personality change; clone3 answers ENOSYS and creates nothing.
#[test]
fn exotic_socket_families_personality_and_clone3() {
    let t = TempDir::new("rt-families");
    let py = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
for name, fam in (("packet", 17), ("alg", 38), ("vsock", 40), ("bluetooth", 31), ("can", 29), ("xdp", 44)):
    r = libc.syscall(L(41), L(fam), L(2), L(0))
    print(name, "ret", r, "errno", ctypes.get_errno(), flush=True)
r = libc.syscall(L(135), L(0x0400000))  # READ_IMPLIES_EXEC
print("personality ret", r, "errno", ctypes.get_errno(), flush=True)
# clone3 with CLONE_NEWUSER in a real clone_args: flags are in memory.
args = (ctypes.c_uint64 * 11)(0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)
r = libc.syscall(L(435), args, L(88))
if r == 0:
    os._exit(0)
print("clone3 ret", r, "errno", ctypes.get_errno(), flush=True)
print("uid_map", open("/proc/self/uid_map").read().split(), flush=True)
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    out.expect_code(0, "exotic families");
    for name in [
        "packet",
        "alg",
        "vsock",
        "bluetooth",
        "can",
        "xdp",
        "personality",
    ] {
        out.expect_stdout_has(
            &format!("{name} ret -1 errno 1"),
            &format!("{name} must fail with EPERM"),
        );
    }
    out.expect_stdout_has("clone3 ret -1 errno 38", "clone3 must answer ENOSYS");
    out.expect_status("violation", "exotic families");
    out.expect_violation("socket denied (6 attempts)", "every exotic family");
    out.expect_violation("personality", "personality change");
}

/// Kernel memory the program pins in socket buffers is charged to its
/// memory limit, not only its own pages.
#[test]
fn socket_buffer_memory_is_charged_to_the_limit() {
    let t = TempDir::new("rt-sockmem");
    let py = r#"
import socket
keep = []
while True:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    for s in (a, b):
        try:
            while True:
                s.send(b"x" * 65536)
        except BlockingIOError:
            pass
    keep.append((a, b))
    if len(keep) % 20 == 0:
        print("pairs", len(keep), flush=True)
"#;
    let out = t
        .run([
            "--memory",
            "32MiB",
            "--open-files",
            "4096",
            "--",
            "python3",
            "-c",
            py,
        ])
        .go();
    // 4096 descriptors of full socket buffers is about 800 MiB of skbs.
    out.expect_status("memory_limit", "memory pinned in socket buffers");
    let peak = out.num("peak_memory_bytes");
    assert!(
        peak <= 34 << 20,
        "peak {peak} bytes over a 32MiB limit\n{}",
        out.ctx()
    );
}

/// Files in the jail's tmpfs are memory: filling /tmp and /dev/shm is
/// bounded by the memory limit even when the tmpfs size is larger.
#[test]
fn tmpfs_pages_count_against_the_memory_limit() {
    let t = TempDir::new("rt-tmpfs-mem");
    let out = t
        .run([
            "--memory",
            "32MiB",
            "--tmpfs",
            "128MiB",
            "--",
            "sh",
            "-c",
            "head -c 80M /dev/zero > /tmp/a; head -c 80M /dev/zero > /dev/shm/b; echo FILLED",
        ])
        .go();
    out.expect_status("memory_limit", "tmpfs files beyond the memory limit");
    out.expect_stdout_lacks("FILLED", "160 MiB of tmpfs under a 32 MiB limit");
}

/// Closing stdout and stderr (or handing them to a daemon) must not take
/// the wall clock with them.
#[test]
fn closing_output_does_not_dodge_the_wall_clock() {
    let t = TempDir::new("rt-closed-out");
    let out = t
        .run([
            "--wall-time",
            "500ms",
            "--",
            "sh",
            "-c",
            "exec >&- 2>&- 0<&-; sleep 30",
        ])
        .deadline(Duration::from_secs(20))
        .go();
    out.expect_code(124, "program with closed stdio");
    out.expect_status("timeout", "program with closed stdio");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "wall clock not enforced after stdio was closed: {:?}\n{}",
        out.elapsed,
        out.ctx()
    );
}

/// The program cannot raise its own hard limits back.
#[test]
fn raising_hard_rlimits_is_refused() {
    let t = TempDir::new("rt-rlimits");
    let py = r#"
import resource
for name in ("RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_CORE"):
    r = getattr(resource, name)
    soft, hard = resource.getrlimit(r)
    try:
        resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print("RAISED", name, flush=True)
    except (ValueError, OSError):
        print("refused", name, hard, flush=True)
"#;
    let out = t
        .run([
            "--file-size",
            "1MiB",
            "--open-files",
            "32",
            "--",
            "python3",
            "-c",
            py,
        ])
        .go();
    out.expect_code(0, "setrlimit probe");
    out.expect_stdout_lacks("RAISED", "a hard rlimit was raised from inside");
    out.expect_stdout_has("refused RLIMIT_FSIZE 1048576", "file-size hard limit");
    out.expect_stdout_has("refused RLIMIT_NOFILE 32", "open-files hard limit");
}

/// Two jails running at the same time share no System V IPC, abstract
/// unix sockets, loopback ports or /tmp.
#[test]
fn concurrent_jails_are_isolated_from_each_other() {
    let t = TempDir::new("rt-peers");
    let marker = unique("peer");
    let server = format!(
        r#"
import socket, sys, time, os
ipc_key = 0x5741524e
libc = __import__("ctypes").CDLL(None, use_errno=True)
shm = libc.shmget(ipc_key, 4096, 0o1666)
a = socket.socket(socket.AF_UNIX); a.bind("\0warden-rt-peer")
a.listen(1)
t = socket.socket(); t.bind(("127.0.0.1", 47123)); t.listen(1)
open("/tmp/peer-file", "w").write("x")
print("server up", shm, flush=True)
time.sleep(8)
# {marker}
"#
    );
    let server_run = t
        .run(["--", "python3", "-c", &server])
        .deadline(Duration::from_secs(30))
        .spawn();
    assert!(
        wait_for_process(&marker, Duration::from_secs(10)),
        "the first jail did not start"
    );
    std::thread::sleep(Duration::from_millis(500));
    let t2 = TempDir::new("rt-peers-2");
    let client = r#"
import socket, os, ctypes
libc = ctypes.CDLL(None, use_errno=True)
r = libc.shmget(0x5741524e, 0, 0)
print("shm", "SHARED" if r >= 0 else "absent", flush=True)
a = socket.socket(socket.AF_UNIX)
try:
    a.connect("\0warden-rt-peer"); print("abstract SHARED", flush=True)
except OSError as e:
    print("abstract absent", e.errno, flush=True)
s = socket.socket(); s.settimeout(1)
try:
    s.connect(("127.0.0.1", 47123)); print("tcp SHARED", flush=True)
except OSError as e:
    print("tcp absent", e.errno, flush=True)
print("tmp", "SHARED" if os.path.exists("/tmp/peer-file") else "absent", flush=True)
"#;
    let out = t2.run(["--", "python3", "-c", client]).go();
    let first = server_run.wait();
    first.expect_stdout_has("server up", "the first jail's listeners");
    out.expect_ok("second jail");
    out.expect_stdout_lacks("SHARED", "something shared between two concurrent jails");
    for what in ["shm absent", "abstract absent", "tcp absent", "tmp absent"] {
        out.expect_stdout_has(what, "isolation probe");
    }
}

/// Grant paths with a newline, a colon or a space are mounted at exactly
/// their own path and expose no sibling.
#[test]
fn grant_paths_with_odd_characters_expose_only_themselves() {
    let t = TempDir::new("rt-odd");
    t.write("odd\nname/in.txt", "newline-dir\n");
    t.write("co:lon/in.txt", "colon-dir\n");
    t.write("sp ace/in.txt", "space-dir\n");
    t.write("other/secret.txt", "sibling-secret\n");
    let out = t
        .run([
            "--allow",
            "fs:read:./odd\nname",
            "--allow",
            "fs:read:./co:lon",
            "--allow",
            "fs:read:./sp ace",
            "--",
            "sh",
            "-c",
            "cat 'odd\nname/in.txt' co:lon/in.txt 'sp ace/in.txt'; cat other/secret.txt; ls -A",
        ])
        .go();
    assert_ne!(
        out.code,
        125,
        "warden refused odd grant paths\n{}",
        out.ctx()
    );
    for want in ["newline-dir", "colon-dir", "space-dir"] {
        out.expect_stdout_has(want, "a grant with an odd character");
    }
    out.expect_stdout_lacks("sibling-secret", "an ungranted sibling of an odd grant");
    assert!(
        !out.stdout.lines().any(|l| l == "other"),
        "the ungranted directory `other` is visible\n{}",
        out.ctx()
    );
}

// ---- Findings of the security review, fixed: each test pins the fix. ----

/// A program with a write grant plants a symlink where the report goes:
/// the report must replace the link, never write through it.
#[test]
fn report_is_not_written_through_a_planted_symlink() {
    let t = TempDir::new("rt-report");
    t.mkdir("out");
    let victim = t.write_root("victim.txt", "precious\n");
    let link_target = victim.display().to_string();
    let out = t
        .raw([
            "run",
            "--allow",
            "fs:write:./out",
            "--report",
            "out/report.json",
            "--",
            "python3",
            "-c",
            &format!("import os; os.symlink({link_target:?}, 'out/report.json')"),
        ])
        .go();
    out.expect_code(0, "planting a symlink at the report path");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "the report was written through the planted symlink into {victim:?}"
    );
    let report = t.path("out/report.json");
    assert!(
        !std::fs::symlink_metadata(&report)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted symlink is still there instead of the report"
    );
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("\"status\""));
}

/// A filter installed by the program itself could answer a denied call
/// before Warden's and hide it: installing filters is refused and recorded.
#[test]
fn own_seccomp_filter_cannot_hide_denied_calls() {
    let t = TempDir::new("rt-ownfilter");
    let py = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
# A one-instruction filter: return ERRNO(EPERM) for everything.
class F(ctypes.Structure): _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
class P(ctypes.Structure): _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(F))]
prog = (F * 1)(F(0x06, 0, 0, 0x00050001))
fp = P(1, prog)
print("seccomp", libc.syscall(L(317), L(1), L(0), ctypes.byref(fp)), ctypes.get_errno(), flush=True)
print("prctl", libc.prctl(22, 2, ctypes.byref(fp), 0, 0), ctypes.get_errno(), flush=True)
print("ptrace", libc.syscall(L(101), L(0), L(0), L(0), L(0)), flush=True)
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    out.expect_stdout_has(
        "seccomp -1 1",
        "installing a seccomp filter must fail with EPERM",
    );
    out.expect_stdout_has("prctl -1 1", "PR_SET_SECCOMP must fail with EPERM");
    out.expect_status("violation", "own filters");
    out.expect_violation("seccomp", "seccomp(SET_MODE_FILTER)");
    out.expect_violation("prctl", "prctl(PR_SET_SECCOMP)");
    out.expect_violation("ptrace", "ptrace after the failed filter install");
}

/// Junk syscall numbers must not push a real denied syscall out of the
/// report: real names are always listed.
#[test]
fn junk_syscalls_cannot_crowd_out_real_violations() {
    let t = TempDir::new("rt-crowd");
    let py = r#"
import ctypes
libc = ctypes.CDLL(None)
libc.syscall.restype = ctypes.c_long
for n in range(1000, 1100):
    libc.syscall(ctypes.c_long(n))
libc.syscall(ctypes.c_long(101), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    out.expect_status("violation", "junk then ptrace");
    out.expect_violation("ptrace", "ptrace after 100 junk syscall numbers");
}

/// A setuid or setgid bit cannot be set on anything the program creates in
/// a write grant (Warden started by root must not plant setuid binaries).
#[test]
fn setuid_bits_cannot_be_planted_in_a_write_grant() {
    let t = TempDir::new("rt-setuid");
    t.mkdir("out");
    let py = r#"
import os, shutil
shutil.copy("/usr/bin/id", "out/id")
for what, f in [
    ("chmod", lambda: os.chmod("out/id", 0o4755)),
    ("setgid", lambda: os.chmod("out/id", 0o2755)),
    ("open", lambda: os.close(os.open("out/new", os.O_CREAT | os.O_WRONLY, 0o6755))),
    ("mkdir", lambda: os.mkdir("out/d", 0o2775)),
]:
    try:
        f(); print(what, "ALLOWED", flush=True)
    except OSError as e:
        print(what, "denied", e.errno, flush=True)
"#;
    let out = t
        .run(["--allow", "fs:write:./out", "--", "python3", "-c", py])
        .go();
    out.expect_stdout_lacks("ALLOWED", "a setuid/setgid mode in a write grant");
    out.expect_status("violation", "setuid attempts");
    use std::os::unix::fs::PermissionsExt;
    for name in ["out/id", "out/new", "out/d"] {
        if let Ok(meta) = std::fs::metadata(t.path(name)) {
            assert_eq!(
                meta.permissions().mode() & 0o6000,
                0,
                "{name} carries a setuid/setgid bit on the host"
            );
        }
    }
}

/// Under a policy, the automatic entry-file grant is checked against the
/// policy like any other grant; and only interpreters get their first
/// argument mounted (`cat etc/shadow` from / is not an entry file).
#[test]
fn entry_file_respects_policy_and_interpreters_only() {
    let t = TempDir::new("rt-entry");
    t.write("secret.txt", "top secret\n");
    t.write_root("strict.yaml", "grants:\n  - env:LANG\n");
    let out = t
        .run([
            "--policy",
            t.root.join("strict.yaml").to_str().unwrap(),
            "--",
            "python3",
            "secret.txt",
        ])
        .go();
    out.expect_stdout_lacks("top secret", "the entry file outside the policy");
    assert!(
        !out.capabilities().iter().any(|c| c.contains("secret.txt")),
        "entry file granted outside the policy\n{}",
        out.ctx()
    );
    let out = t.run(["--", "cat", "secret.txt"]).go();
    out.expect_stdout_lacks("top secret", "a non-interpreter's argument as entry file");
}

/// A wall-clock limit beyond the clock's range is a clear error, not a panic.
#[test]
fn absurd_durations_are_refused_not_panicked_on() {
    let t = TempDir::new("rt-dur");
    let out = t
        .run(["--wall-time", "18446744073709551615s", "--", "true"])
        .go();
    out.expect_warden_error("a wall time of 2^64 seconds");
}

/// /tmp and /dev/shm are one tmpfs with one cap, not two.
#[test]
fn tmpfs_cap_is_shared_by_tmp_and_dev_shm() {
    let t = TempDir::new("rt-shm");
    let py = r#"
import os
def fill(path):
    n = 0
    try:
        with open(path, "wb") as f:
            for _ in range(64):
                f.write(b"x" * (1 << 20)); f.flush(); n += 1
    except OSError:
        pass
    return n
a = fill("/tmp/a"); b = fill("/dev/shm/b")
print("total", a + b, flush=True)
"#;
    let out = t
        .run([
            "--tmpfs", "8MiB", "--memory", "256MiB", "--", "python3", "-c", py,
        ])
        .go();
    let total: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(999);
    assert!(
        total <= 8,
        "wrote {total} MiB into /tmp + /dev/shm under an 8MiB tmpfs cap\n{}",
        out.ctx()
    );
}

/// Started by root, the program is not host root: its uid maps to an
/// unprivileged host uid, host sysctls stay read-only, and a host service
/// listening on a unix socket in a read grant sees an unprivileged peer.
#[test]
fn root_started_program_is_not_host_root() {
    let t = TempDir::new("rt-notroot");
    t.mkdir("sock");
    let sock = t.path("sock/s");
    let server = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
import os; os.chmod(sys.argv[1], 0o777)
print("ready", flush=True)
s.settimeout(20)
c, _ = s.accept()
pid, uid, gid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
print("peer uid", uid, flush=True)
c.sendall(b"hello\n")
"#,
            sock.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start host unix server");
    let mut server = server;
    let mut stdout = server.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut ready).expect("server ready");
    let py = r#"
import socket
print(open("/proc/self/uid_map").read().split(), flush=True)
try:
    open("/proc/sys/kernel/core_pattern", "w").write("|/tmp/x")
    print("SYSCTL WRITTEN", flush=True)
except OSError as e:
    print("sysctl denied", e.errno, flush=True)
s = socket.socket(socket.AF_UNIX); s.connect("sock/s"); print("got", s.recv(10), flush=True)
"#;
    let out = t
        .run(["--allow", "fs:read:./sock", "--", "python3", "-c", py])
        .go();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let _ = server.wait();
    out.expect_stdout_lacks("SYSCTL WRITTEN", "a host sysctl written from the jail");
    out.expect_stdout_lacks("'1000', '0',", "the jail's uid mapped to host root");
    assert!(
        rest.contains("peer uid") && !rest.contains("peer uid 0\n"),
        "the host service saw the program as root: {rest:?}\n{}",
        out.ctx()
    );
}

/// A read-only grant is read-only all the way down: a mount nested inside
/// the granted directory on the host must not stay writable in the jail.
#[test]
fn read_only_grant_covers_nested_mounts() {
    let t = TempDir::new("rt-nested");
    t.mkdir("ro/sub");
    let sub = t.path("ro/sub");
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "warden-test",
            sub.to_str().unwrap(),
        ])
        .status()
        .expect("mount tmpfs")
        .success();
    assert!(mounted, "could not mount a tmpfs for the test");
    std::fs::write(sub.join("f"), "host\n").unwrap();
    let out = t
        .run([
            "--allow",
            "fs:read:./ro",
            "--",
            "sh",
            "-c",
            "echo PWNED > ro/sub/f; echo PWNED > ro/sub/new",
        ])
        .go();
    let content = std::fs::read_to_string(sub.join("f")).unwrap_or_default();
    let created = sub.join("new").exists();
    let _ = std::process::Command::new("umount").arg(&sub).status();
    assert_eq!(
        content,
        "host\n",
        "a nested mount under a read-only grant was written\n{}",
        out.ctx()
    );
    assert!(
        !created,
        "a file was created in a nested mount under a read-only grant"
    );
}

/// The program gets a pipe, not the caller's stdin: a file given as stdin
/// cannot be chmodded or rewritten through /proc/self/fd/0, and a
/// directory given as stdin is no handle on the host's filesystem.
#[test]
fn callers_stdin_is_not_handed_to_the_program() {
    let t = TempDir::new("rt-stdin");
    let input = t.write_root("input.txt", "line one\n");
    let py = r#"
import os, sys
print("read", sys.stdin.read().strip(), flush=True)
for what, f in [
    ("fchmod", lambda: os.fchmod(0, 0o777)),
    ("reopen", lambda: os.write(os.open("/proc/self/fd/0", os.O_WRONLY | os.O_TRUNC), b"pwned\n")),
]:
    try:
        f(); print(what, "DONE", flush=True)
    except OSError as e:
        print(what, "failed", e.errno, flush=True)
"#;
    let file = std::fs::File::open(&input).unwrap();
    let out = std::process::Command::new(crate::common::warden_bin())
        .args(["run", "--", "python3", "-c", py])
        .current_dir(t.work())
        .stdin(file)
        .output()
        .expect("run warden");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("read line one"),
        "stdin did not reach the program: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        "line one\n",
        "the caller's stdin file was rewritten: {stdout}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&input).unwrap().permissions().mode() & 0o777;
    assert_ne!(
        mode, 0o777,
        "the caller's stdin file was chmodded: {stdout}"
    );

    // A directory as stdin.
    let dir = std::fs::File::open("/").unwrap();
    let out = std::process::Command::new(crate::common::warden_bin())
        .args([
            "run",
            "--",
            "python3",
            "-c",
            "import os\ntry:\n    print(os.read(os.open('etc/shadow', 0, dir_fd=0), 20))\nexcept OSError as e:\n    print('failed', e.errno)",
        ])
        .current_dir(t.work())
        .stdin(dir)
        .output()
        .expect("run warden");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("root:"),
        "the host's /etc/shadow was read through a directory on stdin: {stdout}"
    );
}

/// A caller that stops reading the program's output must not stall the
/// supervisor: the program blocks on its own output, and the wall clock
/// still stops it on time.
#[test]
fn unread_output_does_not_stall_the_limits() {
    let t = TempDir::new("rt-stall");
    let report = t.report_path();
    let mut child = std::process::Command::new(crate::common::warden_bin())
        .args(["run", "--report"])
        .arg(&report)
        .args([
            "--wall-time",
            "2s",
            "--",
            "python3",
            "-c",
            "import sys\nsys.stdout.write('x' * 4000000); sys.stdout.flush()\nwhile True: pass",
        ])
        .current_dir(t.work())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start warden");
    // Never read stdout: the pipe fills after 64 KiB.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.is_some(),
        "warden hung for 10s writing output nobody reads; the 2s wall clock never fired"
    );
    assert_eq!(
        status.unwrap().code(),
        Some(124),
        "expected the wall-clock exit status"
    );
    let report = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(
        report.contains("\"timeout\""),
        "unexpected report: {report}"
    );
}

/// A grant's path is checked (no symlinks anywhere) and then mounted: if
/// the mount looked the path up again, a directory above the grant could be
/// swapped for a symlink in between, and (as root, idmapped to the owner)
/// the program would get any host directory. A host thread swaps a grant's
/// parent with a symlink to a root-only directory while runs read through
/// the grant; none may see the secret. Before the fix this leaked within a
/// few dozen runs.
#[test]
fn grant_path_swapped_during_setup_is_not_followed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let t = TempDir::new("rt-swap");
    let victim = t.mkdir("victim/etc");
    std::fs::write(victim.join("secret"), "HOST-SECRET\n").unwrap();
    let shared = t.mkdir("shared");
    t.mkdir("shared/in/etc");
    std::fs::write(shared.join("in/etc/secret"), "decoy\n").unwrap();
    std::os::unix::fs::symlink(t.path("victim"), shared.join("lnk")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let shared = shared.clone();
        std::thread::spawn(move || {
            let dir = std::fs::File::open(&shared).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let _ = rustix::fs::renameat_with(
                    &dir,
                    "in",
                    &dir,
                    "lnk",
                    rustix::fs::RenameFlags::EXCHANGE,
                );
            }
        })
    };
    let grant = format!("fs:read:{}", shared.join("in/etc").display());
    let file = shared.join("in/etc/secret");
    let mut leaked = None;
    for _ in 0..150 {
        let out = t
            .run(["--allow", &grant, "--", "cat", file.to_str().unwrap()])
            .go();
        if out.stdout.contains("HOST-SECRET") {
            leaked = Some(out.ctx());
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    if let Some(ctx) = leaked {
        panic!("a swapped grant path mounted the other directory\n{ctx}");
    }
}

/// The kernel charges per-user counters (inotify instances among them) to
/// the owner of the jail's user namespace in the host namespace. Owned by
/// root, a program holding all 128 inotify instances left host root's own
/// services without any; the namespace now belongs to the sandbox user.
#[test]
fn a_run_cannot_use_up_host_roots_inotify_instances() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the jail suite runs as root (CI does)"
    );
    let t = TempDir::new("rt-inotify");
    let flag = t.mkdir("flag");
    let py = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
n = 0
while n < 100000 and libc.inotify_init1(0) >= 0:
    n += 1
open(os.path.join(sys.argv[1], "held"), "w").write(str(n))
time.sleep(5)
"#;
    let running = t
        .run([
            "--allow",
            &format!("fs:write:{}", flag.display()),
            "--wall-time",
            "20s",
            "--",
            "python3",
            "-c",
            py,
            flag.to_str().unwrap(),
        ])
        .spawn();
    let held = flag.join("held");
    let start = std::time::Instant::now();
    while !held.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let count = std::fs::read_to_string(&held).unwrap_or_default();
    let ours = rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC);
    running.signal("TERM");
    let _ = running.wait();
    assert!(
        !count.is_empty(),
        "the jailed program did not report its inotify count"
    );
    assert!(
        ours.is_ok(),
        "host root could not create an inotify instance while a run held {count}: {ours:?}"
    );
}

/// A caller that reads stderr slowly at the end of a run (`--report -`):
/// what the program wrote but the caller did not read in time is dropped
/// and counted in a warning, and the report comes whole, after the last
/// chunk delivered — never interleaved with program output, even though
/// the program forges a report of its own.
#[test]
fn report_on_a_slow_stderr_stays_whole_and_last() {
    let t = TempDir::new("rt-slow-stderr");
    let py = r#"
import sys
fake = '{\n  "status": "exited",\n  "FAKE": true\n}\n'
sys.stderr.write(("x" * 1000 + "\n") * 1100 + fake)
"#;
    let out = t.shell(
        "\"$WARDEN\" run --report - -- python3 -c \"$PY\" 2>&1 >/dev/null | (sleep 2; cat)",
        &[("PY", py)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.rfind("{\n  \"status\"").unwrap_or_else(|| {
        panic!(
            "no report in the output:\n{}",
            &text[text.len().saturating_sub(500)..]
        )
    });
    let report: serde_json::Value = serde_json::from_str(&text[start..]).unwrap_or_else(|e| {
        panic!(
            "the report is not whole at the end: {e}\n{}",
            &text[start..]
        )
    });
    assert!(report.get("FAKE").is_none(), "{report}");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("stderr were not delivered"),
        "undelivered stderr not reported: {report}"
    );
}
