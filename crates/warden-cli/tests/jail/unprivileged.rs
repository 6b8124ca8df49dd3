//! Warden started by an ordinary user (uid 65534 through setpriv): it still
//! isolates, and the report says which limits fell back to rlimits.

use crate::common::{host_shadow_line, TempDir, MIB};

const NOBODY: u32 = 65534;

fn unprivileged(tag: &str) -> (TempDir, std::path::PathBuf) {
    let t = TempDir::new(tag);
    t.open_to_everyone();
    let bin = t.private_warden();
    (t, bin)
}

#[test]
fn python3_runs_as_ordinary_user() {
    let (t, bin) = unprivileged("u-py");
    let out = t
        .run([
            "--",
            "python3",
            "-c",
            "import os; print('hello', os.getuid())",
        ])
        .bin(bin)
        .user(NOBODY)
        .go();
    out.expect_ok("python3 as an ordinary user");
    out.expect_stdout_has("hello", "python3 as an ordinary user");
}

#[test]
fn report_says_which_limits_fell_back() {
    let (t, bin) = unprivileged("u-fallback");
    let out = t
        .run([
            "--memory",
            "128MiB",
            "--cpu-time",
            "5s",
            "--pids",
            "32",
            "--",
            "true",
        ])
        .bin(bin)
        .user(NOBODY)
        .go();
    out.expect_ok("true as an ordinary user");
    let r = out.report();
    let enforcement = &r["enforcement"];
    assert_eq!(
        enforcement["memory"],
        "rlimit_as",
        "memory mechanism without a cgroup\n{}",
        out.ctx()
    );
    for key in [
        "memory",
        "cpu_time",
        "pids",
        "wall_time",
        "output",
        "file_size",
        "open_files",
        "tmpfs",
    ] {
        assert!(
            enforcement.get(key).and_then(|v| v.as_str()).is_some(),
            "limit {key} has no enforcement entry as an ordinary user (silently dropped)\n{}",
            out.ctx()
        );
    }
    let warnings: Vec<String> = r["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("memory") && w.contains("RLIMIT_AS")),
        "no warning that memory fell back to RLIMIT_AS: {warnings:?}\n{}",
        out.ctx()
    );
    for key in ["memory", "pids", "cpu_time"] {
        let mechanism = enforcement[key].as_str().unwrap_or("");
        if mechanism.starts_with("rlimit") {
            let word = key.replace('_', " ");
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains(key) || w.contains(&word)),
                "{key} fell back to {mechanism} but no warning says so: {warnings:?}\n{}",
                out.ctx()
            );
        }
    }
}

#[test]
fn memory_is_still_bounded() {
    let (t, bin) = unprivileged("u-mem");
    let py = r#"
a = []
try:
    for i in range(512):
        a.append(b'\x01' * (1 << 20))
    print("held", len(a), flush=True)
except MemoryError:
    print("MemoryError at", len(a), flush=True)
"#;
    let out = t
        .run([
            "--memory",
            "128MiB",
            "--wall-time",
            "30s",
            "--",
            "python3",
            "-c",
            py,
        ])
        .bin(bin)
        .user(NOBODY)
        .go();
    assert_ne!(
        out.code,
        125,
        "warden failed as an ordinary user\n{}",
        out.ctx()
    );
    out.expect_stdout_lacks(
        "held 512",
        "512MiB allocated under --memory 128MiB (no bound as an ordinary user)",
    );
    if let Some(n) = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("MemoryError at "))
        .and_then(|n| n.trim().parse::<u64>().ok())
    {
        assert!(
            n * MIB <= 128 * MIB,
            "{n}MiB held under a 128MiB RLIMIT_AS\n{}",
            out.ctx()
        );
    }
}

#[test]
fn isolation_holds_as_ordinary_user() {
    let (t, bin) = unprivileged("u-iso");
    let py = r#"
import os, socket, ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
print("ptrace", libc.syscall(101, 0, 0, 0, 0), ctypes.get_errno())
print("procs", len([p for p in os.listdir('/proc') if p.isdigit()]))
print("sys", os.path.exists('/sys'))
print("host", socket.gethostname())
try:
    print(open('/etc/shadow').read())
except OSError as e:
    print("shadow", e.errno)
st = open('/proc/self/status').read()
print([l for l in st.splitlines() if l.startswith(('CapEff', 'NoNewPrivs', 'Seccomp:'))])
"#;
    let out = t
        .run(["--", "python3", "-c", py])
        .bin(bin)
        .user(NOBODY)
        .go();
    assert_ne!(
        out.code,
        125,
        "warden failed as an ordinary user\n{}",
        out.ctx()
    );
    out.expect_stdout_has("ptrace -1 1", "ptrace as an ordinary user");
    out.expect_stdout_has("sys False", "/sys as an ordinary user");
    out.expect_stdout_has("host warden", "hostname as an ordinary user");
    out.expect_stdout_lacks(&host_shadow_line(), "host /etc/shadow as an ordinary user");
    out.expect_stdout_has(
        "'CapEff:\\t0000000000000000'",
        "capabilities as an ordinary user",
    );
    out.expect_stdout_has("'NoNewPrivs:\\t1'", "no_new_privs as an ordinary user");
    out.expect_stdout_has("'Seccomp:\\t2'", "seccomp as an ordinary user");
    out.expect_violation("ptrace", "ptrace as an ordinary user");
}

#[test]
fn grants_work_as_ordinary_user() {
    let (t, bin) = unprivileged("u-grant");
    t.write("data/x.txt", "unpriv-data\n");
    let out_dir = t.mkdir("out");
    for dir in [t.path("data"), out_dir.clone()] {
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
    }
    let out = t
        .run([
            "--allow",
            "fs:read:./data",
            "--allow",
            "fs:write:./out",
            "--",
            "sh",
            "-c",
            "cat data/x.txt > out/copy.txt; cat out/copy.txt",
        ])
        .bin(bin)
        .user(NOBODY)
        .go();
    out.expect_ok("grants as an ordinary user");
    out.expect_stdout_has("unpriv-data", "read grant as an ordinary user");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("copy.txt"))
            .ok()
            .as_deref(),
        Some("unpriv-data\n"),
        "write grant as an ordinary user did not reach the host\n{}",
        out.ctx()
    );
}

/// The RLIMIT_NPROC fallback counts the program's processes only, like the
/// cgroup: the jail's init runs as the same user and is not one of them.
#[test]
fn pids_fallback_is_exact_for_the_program() {
    let (t, bin) = unprivileged("u-pids");
    let out = t
        .run([
            "--pids",
            "3",
            "--",
            "python3",
            "-c",
            crate::limits::FORK_UNTIL_REFUSED,
        ])
        .bin(bin)
        .user(NOBODY)
        .go();
    out.expect_ok("--pids 3 as an ordinary user");
    assert_eq!(out.stdout.trim(), "forked 2", "{}", out.ctx());
}

/// Without a cgroup the report still accounts for every process of the run:
/// what was killed with the jail at a deadline is sampled from /proc (it
/// reported cpu_ms 0 and the shell's peak while a child held 100 MiB), and
/// a kill by the RLIMIT_CPU fallback is `cpu_limit`, not `signaled`.
#[test]
fn usage_without_a_cgroup_counts_every_process() {
    let (t, bin) = unprivileged("u-usage");
    let out = t
        .run([
            "--wall-time",
            "1500ms",
            "--",
            "/bin/bash",
            "-c",
            "python3 -c 'a = bytearray(100 << 20); import time; time.sleep(10)' & while :; do :; done",
        ])
        .bin(bin.clone())
        .user(NOBODY)
        .go();
    out.expect_status("timeout", "a spinner at its wall clock");
    let cpu = out.num("cpu_ms");
    assert!(
        cpu >= 200,
        "cpu_ms {cpu} for a spinning shell\n{}",
        out.ctx()
    );
    let peak = out.num("peak_memory_bytes");
    assert!(
        peak >= 100 * MIB,
        "peak {peak} while a child held 100 MiB\n{}",
        out.ctx()
    );
    let out = t
        .run([
            "--cpu-time",
            "1s",
            "--",
            "/bin/bash",
            "-c",
            "while :; do :; done",
        ])
        .bin(bin)
        .user(NOBODY)
        .go();
    out.expect_status("cpu_limit", "RLIMIT_CPU kill");
    assert!(out.num("cpu_ms") >= 950, "{}", out.ctx());
}
