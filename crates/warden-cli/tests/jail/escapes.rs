//! Attacks that the jail must contain. Each assertion names what leaked.

use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    cgroup_dirs, host_shadow_line, kill_all, processes_with, unique, wait_gone, TempDir,
};

// ------------------------------------------------------------ secrets, /proc, /sys

#[test]
fn etc_shadow_is_not_readable() {
    let t = TempDir::new("e-shadow");
    let out = t
        .run([
            "--",
            "sh",
            "-c",
            "cat /etc/shadow; ls -a /etc; cat /etc/gshadow",
        ])
        .go();
    assert_ne!(out.code, 125, "warden failed\n{}", out.ctx());
    out.expect_stdout_lacks(&host_shadow_line(), "host /etc/shadow");
    assert!(
        !out.stdout.lines().any(|l| l == "shadow" || l == "gshadow"),
        "shadow files present in the jail's /etc\n{}",
        out.ctx()
    );
}

#[test]
fn host_passwd_users_are_not_visible() {
    let t = TempDir::new("e-passwd");
    let out = t.run(["--", "cat", "/etc/passwd"]).go();
    out.expect_ok("cat /etc/passwd");
    let host = fs::read_to_string("/etc/passwd").unwrap();
    for user in host.lines().filter_map(|l| l.split(':').next()) {
        if ["root", "nobody", "sandbox", ""].contains(&user) {
            continue;
        }
        assert!(
            !out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{user}:"))),
            "host user {user} is listed in the jail's /etc/passwd\n{}",
            out.ctx()
        );
    }
    out.expect_stdout_has("sandbox:x:1000:1000", "the generated sandbox user");
}

#[test]
fn proc_shows_only_jail_processes() {
    let t = TempDir::new("e-proc");
    let marker = unique("hostproc");
    let mut host = Command::new("sh")
        .args(["-c", "sleep 30", &marker])
        .spawn()
        .expect("host sleeper");
    let py = r#"
import os
pids = [p for p in os.listdir('/proc') if p.isdigit()]
print("count", len(pids))
for p in pids:
    try:
        print(p, open('/proc/%s/cmdline' % p, 'rb').read().replace(b'\0', b' ').decode())
    except OSError as e:
        print(p, "unreadable", e)
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    let _ = host.kill();
    let _ = host.wait();
    out.expect_ok("listing /proc");
    out.expect_stdout_lacks(&marker, "a host process in the jail's /proc");
    out.expect_stdout_lacks("cargo", "a host process (cargo) in the jail's /proc");
    let count: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(999);
    assert!(
        count <= 3,
        "{count} processes visible in the jail's /proc\n{}",
        out.ctx()
    );
}

#[test]
fn sys_is_absent() {
    let t = TempDir::new("e-sys");
    let out = t
        .run([
            "--",
            "python3",
            "-c",
            "import os\nprint('exists', os.path.exists('/sys'))\ntry:\n    print('entries', os.listdir('/sys'))\nexcept OSError as e:\n    print('denied', e.errno)",
        ])
        .go();
    out.expect_ok("/sys probe");
    out.expect_stdout_has("exists False", "/sys is present in the jail");
}

#[test]
fn dev_is_minimal() {
    let t = TempDir::new("e-dev");
    let out = t.run(["--", "ls", "-A", "/dev"]).go();
    out.expect_ok("ls /dev");
    let allowed = [
        "null", "zero", "full", "random", "urandom", "fd", "stdin", "stdout", "stderr", "shm",
        "pts", "ptmx",
    ];
    for name in out.stdout.lines() {
        assert!(
            allowed.contains(&name),
            "host device /dev/{name} is visible in the jail\n{}",
            out.ctx()
        );
    }
    for needed in ["null", "zero", "urandom"] {
        assert!(
            out.stdout.lines().any(|l| l == needed),
            "/dev/{needed} missing\n{}",
            out.ctx()
        );
    }
}

#[test]
fn host_loopback_server_is_unreachable() {
    let t = TempDir::new("e-net");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let py = format!(
        r#"
import socket
for host in ["127.0.0.1", "8.8.8.8", "1.1.1.1"]:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, {port} if host == "127.0.0.1" else 53))
        print("CONNECTED", host, flush=True)
    except OSError as e:
        print("blocked", host, e, flush=True)
"#
    );
    let out = t.run(["--", "python3", "-c", &py]).go();
    out.expect_ok("network probe");
    out.expect_stdout_lacks("CONNECTED", "network access from the jail");
    match listener.accept() {
        Ok((_, peer)) => panic!(
            "the host's 127.0.0.1:{port} accepted a connection from {peer}\n{}",
            out.ctx()
        ),
        Err(e) => assert_eq!(e.kind(), ErrorKind::WouldBlock, "accept: {e}"),
    }
}

#[test]
fn only_loopback_interface() {
    let t = TempDir::new("e-ifaces");
    let out = t
        .run([
            "--",
            "python3",
            "-c",
            "import socket\nprint(sorted(n for _, n in socket.if_nameindex()))",
        ])
        .go();
    out.expect_ok("interfaces");
    assert_eq!(
        out.stdout.trim(),
        "['lo']",
        "network interfaces besides lo in the jail\n{}",
        out.ctx()
    );
}

// ------------------------------------------------------------ identity

#[test]
fn no_capabilities_no_new_privs_seccomp() {
    let t = TempDir::new("e-caps");
    let out = t.run(["--", "cat", "/proc/self/status"]).go();
    out.expect_ok("cat /proc/self/status");
    let field = |name: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{name} missing from /proc/self/status\n{}", out.ctx()))
    };
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            field(cap),
            "0000000000000000",
            "{cap} is not empty: capabilities leaked\n{}",
            out.ctx()
        );
    }
    assert_eq!(
        field("NoNewPrivs"),
        "1",
        "no_new_privs not set\n{}",
        out.ctx()
    );
    assert_eq!(
        field("Seccomp"),
        "2",
        "seccomp filter not active\n{}",
        out.ctx()
    );
    let uids = field("Uid");
    assert!(
        uids.split_whitespace().all(|u| u == "1000"),
        "the program does not run as uid 1000: {uids}\n{}",
        out.ctx()
    );
}

#[test]
fn runs_as_sandbox_user_in_own_session() {
    let t = TempDir::new("e-id");
    let out = t
        .run(["--", "python3", "-c", "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getsid(0) == os.getpid(), os.getgroups())"])
        .go();
    out.expect_ok("ids");
    let got = out.stdout.trim();
    assert!(
        got == "1000 1000 1000 True []" || got == "1000 1000 1000 True [1000]",
        "identity/session of the jailed program (want uid/euid/gid 1000, own session, no host groups)\n{}",
        out.ctx()
    );
}

#[test]
fn setuid_binaries_give_nothing() {
    let t = TempDir::new("e-suid");
    let bin = t.mkdir("bin");
    let id = bin.join("id");
    fs::copy("/usr/bin/id", &id).unwrap();
    // Owned by the host's root, setuid and setgid.
    fs::set_permissions(&id, fs::Permissions::from_mode(0o6755)).unwrap();
    let out = t
        .run([
            "--allow",
            "fs:read:./bin",
            "--",
            "sh",
            "-c",
            "./bin/id; /usr/bin/python3 -c 'import os; st = os.statvfs(\"bin\"); print(\"nosuid\", bool(st.f_flag & os.ST_NOSUID))'",
        ])
        .go();
    out.expect_ok("setuid id");
    out.expect_stdout_lacks("euid=", "a setuid binary changed the effective uid");
    out.expect_stdout_lacks("egid=", "a setgid binary changed the effective gid");
    out.expect_stdout_lacks("uid=0", "a setuid binary gave root");
    out.expect_stdout_has("uid=1000", "id output");
    out.expect_stdout_has("nosuid True", "granted mounts must be nosuid");
}

#[test]
fn hostname_is_warden() {
    let t = TempDir::new("e-host");
    let out = t
        .run([
            "--",
            "python3",
            "-c",
            "import os, socket\nprint(socket.gethostname(), os.uname().nodename)",
        ])
        .go();
    out.expect_ok("hostname");
    assert_eq!(
        out.stdout.trim(),
        "warden warden",
        "hostname inside the jail\n{}",
        out.ctx()
    );
}

#[test]
fn root_and_system_dirs_are_not_writable() {
    let t = TempDir::new("e-rootfs");
    let marker = unique("rootfs");
    let py = format!(
        r#"
for p in ["/{m}", "/usr/{m}", "/etc/{m}", "/bin/{m}", "/lib/{m}", "/sbin/{m}", "/proc/{m}"]:
    try:
        open(p, "w").write("x")
        print("WROTE", p)
    except OSError as e:
        print("denied", p, e.errno)
"#,
        m = marker
    );
    let out = t.run(["--", "python3", "-c", &py]).go();
    out.expect_ok("writes to system dirs");
    out.expect_stdout_lacks("WROTE", "a write outside /tmp and the grants");
    for dir in ["/", "/usr/", "/etc/", "/bin/", "/lib/"] {
        assert!(
            !std::path::Path::new(&format!("{dir}{marker}")).exists(),
            "{dir}{marker} appeared on the host"
        );
    }
}

#[test]
fn inherited_descriptors_are_closed() {
    let t = TempDir::new("e-fds");
    let warden = crate::common::warden_bin();
    let report = t.report_path();
    let mut run = t
        .raw([
            "-c".to_string(),
            "exec 7</etc/passwd 8>>/tmp/warden-it-fd-leak; exec \"$0\" \"$@\"".into(),
            warden.display().to_string(),
            "run".into(),
            "--report".into(),
            report.display().to_string(),
            "--".into(),
            "python3".into(),
            "-c".into(),
            "import os\nprint(sorted(int(f) for f in os.listdir('/proc/self/fd')))".into(),
        ])
        .bin("/bin/sh".into());
    run.report = Some(report);
    let out = run.go();
    let _ = fs::remove_file("/tmp/warden-it-fd-leak");
    out.expect_ok("fd listing");
    assert_eq!(
        out.stdout.trim(),
        "[0, 1, 2, 3]",
        "descriptors beyond stdio reached the program (3 is listdir's own)\n{}",
        out.ctx()
    );
}

// ------------------------------------------------------------ seccomp

/// Calls `syscall(nr, args...)` through ctypes and prints its result.
const SYSCALL_PY: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = int(sys.argv[1], 0)
args = [ctypes.c_long(int(a, 0)) for a in sys.argv[2:]]
r = libc.syscall(ctypes.c_long(nr), *args)
if r == 0 and nr == 56:
    os._exit(0)  # the clone child, should the call ever succeed
print("ret", r, "errno", ctypes.get_errno(), flush=True)
"#;

fn denied_syscall(name: &str, detail: &str, nr: &str, args: &[&str]) {
    let t = TempDir::new(&format!("sc-{name}"));
    let mut argv = vec!["--", "python3", "-c", SYSCALL_PY, nr];
    argv.extend_from_slice(args);
    let out = t.run(argv).go();
    out.expect_stdout_has("ret -1 errno 1", &format!("{name} must fail with EPERM"));
    out.expect_status("violation", name);
    out.expect_violation(detail, name);
}

macro_rules! denied {
    ($($test:ident: $name:literal, $detail:literal, $nr:literal, [$($arg:literal),*];)*) => {$(
        #[test]
        fn $test() {
            denied_syscall($name, $detail, $nr, &[$($arg),*]);
        }
    )*};
}

denied! {
    seccomp_denies_ptrace: "ptrace", "ptrace", "101", ["0", "0", "0", "0"];
    seccomp_denies_mount: "mount", "mount", "165", ["0", "0", "0", "0", "0"];
    seccomp_denies_unshare_newuser: "unshare", "unshare", "272", ["0x10000000"];
    seccomp_denies_setns: "setns", "setns", "308", ["0", "0"];
    seccomp_denies_clone_newuser: "clone", "clone", "56", ["0x10000011", "0", "0", "0", "0"];
    seccomp_denies_keyctl: "keyctl", "keyctl", "250", ["0", "-3", "0"];
    seccomp_denies_add_key: "add_key", "add_key", "248", ["0", "0", "0", "0", "0"];
    seccomp_denies_bpf: "bpf", "bpf", "321", ["0", "0", "0"];
    seccomp_denies_io_uring_setup: "io_uring_setup", "io_uring_setup", "425", ["1", "0"];
    seccomp_denies_perf_event_open: "perf_event_open", "perf_event_open", "298", ["0", "0", "-1", "-1", "0"];
    seccomp_denies_userfaultfd: "userfaultfd", "userfaultfd", "323", ["0"];
    seccomp_denies_kexec_load: "kexec_load", "kexec", "246", ["0", "0", "0", "0"];
    seccomp_denies_init_module: "init_module", "module", "175", ["0", "0", "0"];
    seccomp_denies_finit_module: "finit_module", "module", "313", ["0", "0", "0"];
    seccomp_denies_process_vm_readv: "process_vm_readv", "process_vm_readv", "310", ["1", "0", "0", "0", "0", "0"];
    seccomp_denies_open_by_handle_at: "open_by_handle_at", "open_by_handle_at", "304", ["0", "0", "0"];
    seccomp_denies_mknod: "mknod", "mknod", "133", ["0", "0o20600", "259"];
}

#[test]
fn seccomp_denies_several_and_counts_them() {
    let t = TempDir::new("sc-many");
    let py = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for nr, args in [(101, (0, 0, 0, 0)), (272, (0x10000000,)), (101, (0, 0, 0, 0))]:
    print(libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args]), ctypes.get_errno())
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    out.expect_status("violation", "several denied calls");
    out.expect_code(0, "the program itself exits 0 after denied calls");
    out.expect_violation("ptrace", "several denied calls");
    out.expect_violation("unshare", "several denied calls");
}

#[test]
fn seccomp_denies_tiocsti() {
    let t = TempDir::new("sc-tiocsti");
    let py = r#"
import ctypes, fcntl, os, termios
libc = ctypes.CDLL(None, use_errno=True)
c = ctypes.c_char(b'x')
for fd in (0, 1, 2):
    r = libc.ioctl(fd, termios.TIOCSTI, ctypes.byref(c))
    print("ret", r, "errno", ctypes.get_errno(), flush=True)
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    out.expect_stdout_lacks("ret 0", "TIOCSTI succeeded");
    out.expect_stdout_has("ret -1 errno 1", "TIOCSTI must fail with EPERM");
    out.expect_status("violation", "TIOCSTI");
    let named = out
        .violations()
        .iter()
        .any(|(_, d)| d.contains("ioctl") || d.contains("TIOCSTI"));
    assert!(named, "TIOCSTI not recorded as a violation\n{}", out.ctx());
}

/// `int 0x80` runs the i386 system call table from 64-bit code: getpid
/// there must be refused (EPERM, or the process killed), and recorded.
#[test]
fn seccomp_denies_i386_int80() {
    let t = TempDir::new("sc-i386");
    let py = r#"
import ctypes, mmap
# mov eax, 20 (i386 getpid); int 0x80; ret
code = bytes([0xb8, 0x14, 0x00, 0x00, 0x00, 0xcd, 0x80, 0xc3])
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
f = ctypes.CFUNCTYPE(ctypes.c_int)(addr)
print("ret", f(), flush=True)
"#;
    let out = t.run(["--", "python3", "-c", py]).go();
    let ret: Option<i64> = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ret "))
        .and_then(|n| n.trim().parse().ok());
    if let Some(ret) = ret {
        assert!(
            ret < 0,
            "i386 getpid via int 0x80 returned {ret}: the i386 ABI is open\n{}",
            out.ctx()
        );
    }
    let status = out.status();
    assert!(
        status == "violation" || status == "signaled",
        "i386 syscall not reported (status {status})\n{}",
        out.ctx()
    );
    assert!(
        !out.violations().is_empty(),
        "i386 syscall not recorded in violations\n{}",
        out.ctx()
    );
}

/// x32 ABI: syscall numbers with bit 30 set.
#[test]
fn seccomp_denies_x32_abi() {
    let t = TempDir::new("sc-x32");
    let out = t
        .run(["--", "python3", "-c", SYSCALL_PY, "0x40000027"]) // x32 getpid
        .go();
    out.expect_stdout_lacks("errno 0", "x32 getpid succeeded");
    out.expect_stdout_has("ret -1 errno 1", "x32 syscall must fail with EPERM");
    out.expect_status("violation", "x32 syscall");
    assert!(
        !out.violations().is_empty(),
        "x32 syscall not recorded\n{}",
        out.ctx()
    );
}

/// Ordinary programs cause no violations.
#[test]
fn ordinary_programs_have_no_violations() {
    let t = TempDir::new("sc-clean");
    for argv in [
        vec!["python3", "-c", "import json, os, subprocess, threading, tempfile; print(subprocess.run(['true']).returncode)"],
        vec!["node", "-e", "require('fs').writeFileSync('/tmp/a', 'x'); console.log(require('os').cpus().length > 0)"],
        vec!["php", "-r", "file_put_contents('/tmp/a', 'x'); echo 'ok';"],
    ] {
        let mut args = vec!["--"];
        args.extend(argv.iter().copied());
        let out = t.run(args).go();
        out.expect_ok(&format!("{argv:?}"));
        assert!(out.violations().is_empty(), "{argv:?} caused violations\n{}", out.ctx());
    }
}

// ------------------------------------------------------------ symlinks and paths

#[test]
fn symlink_inside_grant_to_etc_stays_in_jail() {
    let t = TempDir::new("e-sym-in");
    t.write("data/ok.txt", "ok\n");
    std::os::unix::fs::symlink("/etc", t.path("data/etc")).unwrap();
    let out = t
        .run([
            "--allow",
            "fs:read:./data",
            "--",
            "sh",
            "-c",
            "cat data/ok.txt; cat data/etc/shadow; ls data/etc/",
        ])
        .go();
    assert_ne!(out.code, 125, "warden failed\n{}", out.ctx());
    out.expect_stdout_has("ok", "the granted dir");
    out.expect_stdout_lacks(
        &host_shadow_line(),
        "host /etc/shadow through a symlink in a grant",
    );
    assert!(
        !out.stdout.lines().any(|l| l == "shadow"),
        "the host's /etc listed through a symlink\n{}",
        out.ctx()
    );
}

/// `fs:read:./data/../../etc` names `<root>/etc` (lexically); nothing else
/// — above all not the host's /etc — may appear.
#[test]
fn dotdot_grant_names_only_its_canonical_path() {
    let t = TempDir::new("e-dotdot");
    t.mkdir("data");
    let decoy = t.root.join("etc");
    fs::create_dir_all(&decoy).unwrap();
    fs::write(decoy.join("marker.txt"), "decoy-etc\n").unwrap();
    let script = format!(
        "cat {0}/marker.txt; cat {0}/shadow; cat /etc/shadow",
        decoy.display()
    );
    let out = t
        .run([
            "--allow",
            "fs:read:./data/../../etc",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .go();
    out.expect_stdout_lacks(&host_shadow_line(), "host /etc/shadow through a `..` grant");
    assert!(
        !out.capabilities().iter().any(|c| c == "fs:read:/etc"),
        "a `..` grant became fs:read:/etc\n{}",
        out.ctx()
    );
    if out.code != 125 {
        out.expect_stdout_has("decoy-etc", "the `..` grant's canonical target");
        assert!(
            out.capabilities()
                .contains(&format!("fs:read:{}", decoy.display())),
            "capabilities do not name the canonical grant\n{}",
            out.ctx()
        );
    }
}

/// `hop` is a symlink to /usr/lib: the kernel resolves `hop/../../etc` to
/// /etc, a lexical reading to `<root>/etc`. Either way the host's /etc
/// must not come out of it unannounced.
#[test]
fn dotdot_through_symlink_does_not_reach_host_etc() {
    let t = TempDir::new("e-dotdot-sym");
    std::os::unix::fs::symlink("/usr/lib", t.path("hop")).unwrap();
    let decoy = t.root.join("etc");
    fs::create_dir_all(&decoy).unwrap();
    fs::write(decoy.join("marker.txt"), "decoy-etc\n").unwrap();
    let out = t
        .run([
            "--allow",
            "fs:read:./hop/../../etc",
            "--",
            "sh",
            "-c",
            "cat /etc/shadow",
        ])
        .go();
    out.expect_stdout_lacks(
        &host_shadow_line(),
        "host /etc/shadow through symlink + `..` in a grant",
    );
    assert!(
        !out.capabilities().iter().any(|c| c == "fs:read:/etc"),
        "a `..` grant through a symlink became fs:read:/etc\n{}",
        out.ctx()
    );
}

/// A grant whose path is itself a symlink to /etc/.
#[test]
fn grant_that_is_a_symlink_to_etc_exposes_no_shadow() {
    let t = TempDir::new("e-sym-grant");
    std::os::unix::fs::symlink("/etc/", t.path("etclink")).unwrap();
    let out = t
        .run([
            "--allow",
            "fs:read:./etclink",
            "--",
            "sh",
            "-c",
            "cat etclink/shadow; cat /etc/shadow; ls etclink/ /etc/",
        ])
        .go();
    out.expect_stdout_lacks(
        &host_shadow_line(),
        "host /etc/shadow through a grant that is a symlink",
    );
    if out.code != 125 {
        // Whatever was mounted, the report must name the canonical path, not the link.
        let caps = out.capabilities();
        assert!(
            !caps.iter().any(|c| c.ends_with("/etclink")),
            "capabilities name the symlink, not the canonical path it grants: {caps:?}\n{}",
            out.ctx()
        );
    }
}

/// A symlink in a write grant, pointing at a host file outside it: writing
/// through it must not change the host file.
#[test]
fn symlink_in_write_grant_cannot_write_outside() {
    let t = TempDir::new("e-sym-write");
    t.mkdir("out");
    let victim = t.write_root("victim.txt", "original\n");
    std::os::unix::fs::symlink(&victim, t.path("out/link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", t.path("out/hostlink")).unwrap();
    let host_hostname = fs::read_to_string("/etc/hostname").ok();
    let out = t
        .run([
            "--allow",
            "fs:write:./out",
            "--",
            "sh",
            "-c",
            "echo pwned > out/link; echo pwned > out/hostlink; true",
        ])
        .go();
    assert_ne!(out.code, 125, "warden failed\n{}", out.ctx());
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "original\n",
        "a host file outside the grant was written through a symlink"
    );
    assert_eq!(
        fs::read_to_string("/etc/hostname").ok(),
        host_hostname,
        "the host's /etc/hostname was written through a symlink"
    );
}

// ------------------------------------------------------------ nothing outlives the run

#[test]
fn double_forked_daemon_does_not_outlive_the_run() {
    let t = TempDir::new("e-daemon");
    let marker = unique("daemon");
    let script = format!(
        "(setsid python3 -c 'import time; time.sleep(100)' {marker} &) ; \
         (setsid sh -c 'sleep 100; echo {marker}' &) ; sleep 0.3; echo parent-done"
    );
    let out = t.run(["--", "sh", "-c", &script]).go();
    out.expect_ok("daemonizing parent");
    out.expect_stdout_has("parent-done", "daemonizing parent");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "warden waited for the daemon: {:?}\n{}",
        out.elapsed,
        out.ctx()
    );
    let left = wait_gone(&marker, Duration::from_secs(2));
    kill_all(&left);
    assert!(
        left.is_empty(),
        "processes outlived the run: {left:?}\n{}",
        out.ctx()
    );
}

fn leftover_cgroups(invocation_id: &str) -> Vec<std::path::PathBuf> {
    cgroup_dirs(&|name, _| name.contains(invocation_id))
}

#[test]
fn no_cgroup_is_left_behind() {
    let t = TempDir::new("e-cgroup");
    for args in [
        vec!["--", "true"],
        vec!["--wall-time", "300ms", "--", "sleep", "5"],
        vec![
            "--memory",
            "16MiB",
            "--",
            "python3",
            "-c",
            "a = b'x' * (64 << 20)",
        ],
    ] {
        let out = t.run(args.clone()).go();
        let id = out.report()["invocation_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(!id.is_empty(), "no invocation_id\n{}", out.ctx());
        let left = leftover_cgroups(&id);
        assert!(
            left.is_empty(),
            "cgroups left behind by {args:?}: {left:?}\n{}",
            out.ctx()
        );
    }
}

#[test]
fn jail_processes_are_gone_after_timeout() {
    let t = TempDir::new("e-timeout-procs");
    let marker = unique("timeout");
    let script = format!("python3 -c 'import time; time.sleep(100)' {marker} & wait");
    let out = t
        .run(["--wall-time", "500ms", "--", "sh", "-c", &script])
        .go();
    out.expect_code(124, "timeout");
    let left = wait_gone(&marker, Duration::from_secs(2));
    kill_all(&left);
    assert!(
        left.is_empty(),
        "processes survived a timeout: {left:?}\n{}",
        out.ctx()
    );
    assert!(processes_with(&marker).is_empty());
}
