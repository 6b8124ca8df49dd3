//! Every limit is hit, stops the program and is reported with its cause.

use std::time::Duration;

use crate::common::{TempDir, MIB};

/// Allocates 1MiB of touched memory at a time, forever.
const MEMORY_BOMB: &str = r#"
a = []
while True:
    a.append(b'\x01' * (1 << 20))
    if len(a) % 16 == 0:
        print(len(a), flush=True)
"#;

/// Six children of 40MiB each: 240MiB in total, none alone over 64MiB.
const FORKED_MEMORY_BOMB: &str = r#"
import os, time
kids = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        a = []
        for j in range(40):
            a.append(b'\x01' * (1 << 20))
        time.sleep(5)
        os._exit(0)
    kids.append(pid)
held = 0
for k in kids:
    _, status = os.waitpid(k, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        held += 1
print("children that held 40MiB:", held, flush=True)
"#;

fn assert_peak_within(out: &crate::common::Outcome, limit: u64) {
    let peak = out.num("peak_memory_bytes");
    let bound = limit + limit / 20;
    assert!(
        peak <= bound,
        "peak memory {peak} exceeds the limit {limit} by more than 5% ({bound})\n{}",
        out.ctx()
    );
    let hard = limit / MIB * MIB + 3 * MIB;
    assert!(
        peak <= hard,
        "peak memory {peak} above {hard} for a {limit}-byte limit\n{}",
        out.ctx()
    );
    assert!(peak > 0, "peak memory not measured\n{}", out.ctx());
}

/// A report never says both "exited with a code" and "killed by a signal".
fn assert_consistent(out: &crate::common::Outcome) {
    let r = out.report();
    assert!(
        r["exit_code"].is_null() || r["signal"].is_null(),
        "report has both exit_code {} and signal {}: which one happened?\n{}",
        r["exit_code"],
        r["signal"],
        out.ctx()
    );
}

#[test]
fn memory_bomb_in_one_process_is_stopped() {
    let t = TempDir::new("membomb");
    let out = t
        .run([
            "--memory",
            "64MiB",
            "--wall-time",
            "30s",
            "--",
            "python3",
            "-c",
            MEMORY_BOMB,
        ])
        .go();
    out.expect_status("memory_limit", "memory bomb");
    out.expect_code(137, "memory bomb (SIGKILL)");
    assert_peak_within(&out, 64 * MIB);
    assert_eq!(
        out.report()["limits"]["memory_bytes"],
        64 * MIB,
        "limits.memory_bytes\n{}",
        out.ctx()
    );
    assert_consistent(&out);
}

#[test]
fn memory_bomb_spread_over_processes_is_capped() {
    let t = TempDir::new("membomb-fork");
    let out = t
        .run([
            "--memory",
            "64MiB",
            "--pids",
            "16",
            "--wall-time",
            "30s",
            "--",
            "python3",
            "-c",
            FORKED_MEMORY_BOMB,
        ])
        .go();
    out.expect_status("memory_limit", "forked memory bomb");
    for n in 2..=6 {
        out.expect_stdout_lacks(
            &format!("children that held 40MiB: {n}"),
            "forked memory bomb: several children held 40MiB each",
        );
    }
    assert_peak_within(&out, 64 * MIB);
    assert_consistent(&out);
}

/// Unread loopback TCP send queues are kernel memory the program holds:
/// they must fit in the memory limit (v1 counts them apart, and only once
/// they have a limit; before, 100 connections queued over a gigabyte under
/// 32 MiB), while ordinary loopback traffic still flows.
#[test]
fn socket_buffers_count_against_the_memory_limit() {
    let t = TempDir::new("mem-tcp");
    let hoard = r#"
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(200)
total = 0; keep = []
for i in range(100):
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    c.connect(l.getsockname()); s, _ = l.accept()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    c.setblocking(False)
    while True:
        try:
            total += c.send(b"x" * 65536)
        except OSError:
            break
    keep += [c, s]
print("queued", total)
"#;
    let out = t
        .run([
            "--memory",
            "32MiB",
            "--wall-time",
            "30s",
            "--",
            "python3",
            "-c",
            hoard,
        ])
        .go();
    assert_ne!(out.code, 125, "warden failed\n{}", out.ctx());
    let queued: u64 = out
        .stdout
        .trim()
        .strip_prefix("queued ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        queued < 8 * MIB,
        "{queued} bytes queued in socket buffers under a 32MiB limit\n{}",
        out.ctx()
    );
    let transfer = r#"
import socket, threading
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
N = 20 << 20
def serve():
    s, _ = l.accept(); sent = 0
    while sent < N:
        sent += s.send(b"y" * min(65536, N - sent))
    s.close()
threading.Thread(target=serve).start()
c = socket.create_connection(l.getsockname()); got = 0
while True:
    d = c.recv(1 << 16)
    if not d: break
    got += len(d)
print(got)
"#;
    let out = t
        .run(["--memory", "32MiB", "--", "python3", "-c", transfer])
        .go();
    out.expect_ok("20 MiB over loopback TCP under a 32MiB limit");
    assert_eq!(out.stdout.trim(), "20971520", "{}", out.ctx());
}

/// A program that stays under the limit is not disturbed and its peak is measured.
#[test]
fn memory_under_limit_runs_and_peak_is_reported() {
    let t = TempDir::new("mem-ok");
    let out = t
        .run([
            "--memory",
            "128MiB",
            "--",
            "python3",
            "-c",
            "a = b'\\x01' * (32 << 20); print(len(a))",
        ])
        .go();
    out.expect_ok("32MiB under a 128MiB limit");
    let peak = out.num("peak_memory_bytes");
    assert!(
        (32 * MIB..=128 * MIB).contains(&peak),
        "peak {peak} does not reflect the 32MiB held\n{}",
        out.ctx()
    );
}

#[test]
fn cpu_time_limit_stops_busy_loop_within_5_percent() {
    let t = TempDir::new("cpu");
    let out = t
        .run([
            "--cpu-time",
            "1s",
            "--wall-time",
            "20s",
            "--",
            "python3",
            "-c",
            "while True: pass",
        ])
        .go();
    out.expect_status("cpu_limit", "busy loop");
    out.expect_code(137, "busy loop (SIGKILL)");
    let cpu = out.num("cpu_ms");
    assert!(
        cpu < 1050,
        "busy loop got {cpu}ms of CPU under a 1s limit (≥ 1.05s)\n{}",
        out.ctx()
    );
    assert!(
        cpu >= 950,
        "busy loop stopped after only {cpu}ms of CPU under a 1s limit\n{}",
        out.ctx()
    );
    assert_consistent(&out);
    assert!(
        out.report()["enforcement"].get("cpu_time").is_some(),
        "enforcement does not say how cpu_time is enforced\n{}",
        out.ctx()
    );
}

#[test]
fn cpu_time_is_summed_over_processes() {
    let t = TempDir::new("cpu-procs");
    let out = t
        .run([
            "--cpu-time",
            "1s",
            "--wall-time",
            "20s",
            "--",
            "sh",
            "-c",
            "for i in 1 2 3 4; do (while :; do :; done) & done; wait",
        ])
        .go();
    out.expect_status("cpu_limit", "4 busy processes");
    let cpu = out.num("cpu_ms");
    assert!(
        cpu < 1050,
        "4 busy processes got {cpu}ms of CPU in total under a 1s limit\n{}",
        out.ctx()
    );
    assert!(
        out.num("wall_ms") < 5000,
        "4 busy processes ran {}ms of wall time under a 1s CPU limit\n{}",
        out.num("wall_ms"),
        out.ctx()
    );
}

#[test]
fn cpu_time_is_summed_over_threads() {
    let t = TempDir::new("cpu-threads");
    let js = "const { Worker } = require('worker_threads');\
              for (let i = 0; i < 3; i++) new Worker('for(;;){}', { eval: true });\
              for(;;){}";
    let out = t
        .run([
            "--cpu-time",
            "1s",
            "--wall-time",
            "20s",
            "--",
            "node",
            "-e",
            js,
        ])
        .go();
    out.expect_status("cpu_limit", "4 busy threads");
    let cpu = out.num("cpu_ms");
    assert!(
        cpu < 1050,
        "4 busy threads got {cpu}ms of CPU in total under a 1s limit\n{}",
        out.ctx()
    );
}

#[test]
fn wall_time_limit_gives_124_and_timeout() {
    let t = TempDir::new("wall");
    let out = t.run(["--wall-time", "500ms", "--", "sleep", "10"]).go();
    out.expect_code(124, "sleep 10 under a 500ms wall limit");
    out.expect_status("timeout", "sleep 10 under a 500ms wall limit");
    let wall = out.num("wall_ms");
    assert!(
        (450..3000).contains(&wall),
        "wall_ms {wall} for a 500ms limit\n{}",
        out.ctx()
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "warden took {:?}\n{}",
        out.elapsed,
        out.ctx()
    );
}

#[test]
fn pids_limit_caps_forks() {
    let t = TempDir::new("pids");
    let py = r#"
import os, time
n = 0
for i in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed", e.errno, flush=True)
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    n += 1
print("forked", n, flush=True)
"#;
    let out = t
        .run([
            "--pids",
            "16",
            "--wall-time",
            "20s",
            "--",
            "python3",
            "-c",
            py,
        ])
        .go();
    out.expect_stdout_has("fork failed", "200 forks under --pids 16");
    let forked: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("forked "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fork count printed\n{}", out.ctx()));
    assert!(
        forked < 16,
        "{forked} children forked under --pids 16\n{}",
        out.ctx()
    );
    assert!(
        out.elapsed < Duration::from_secs(10),
        "run took {:?}\n{}",
        out.elapsed,
        out.ctx()
    );
}

/// Python forking children that stay alive until a fork fails.
pub const FORK_UNTIL_REFUSED: &str = r#"
import os, time
n = 0
while n < 50:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    n += 1
print("forked", n, flush=True)
"#;

/// `--pids N` is the program's N processes and threads: the jail's own
/// init does not take one of them (`--pids 1` could not even start `true`).
#[test]
fn pids_limit_is_exact_for_the_program() {
    let t = TempDir::new("pids-exact");
    let out = t.run(["--pids", "1", "--", "true"]).go();
    out.expect_ok("--pids 1 -- true");
    let out = t
        .run(["--pids", "3", "--", "python3", "-c", FORK_UNTIL_REFUSED])
        .go();
    out.expect_ok("--pids 3");
    assert_eq!(out.stdout.trim(), "forked 2", "{}", out.ctx());
}

#[test]
fn fork_bomb_is_contained_and_run_finishes() {
    let t = TempDir::new("forkbomb");
    let out = t
        .run([
            "--pids",
            "32",
            "--wall-time",
            "3s",
            "--",
            "sh",
            "-c",
            "f() { f | f & }; f; sleep 1; echo bomb-done",
        ])
        .deadline(Duration::from_secs(30))
        .go();
    assert_ne!(out.code, 125, "fork bomb: warden failed\n{}", out.ctx());
    let status = out.status();
    assert!(
        ["exited", "timeout", "signaled"].contains(&status.as_str()),
        "fork bomb: unexpected status {status}\n{}",
        out.ctx()
    );
    assert!(
        out.elapsed < Duration::from_secs(15),
        "fork bomb run took {:?}\n{}",
        out.elapsed,
        out.ctx()
    );
}

#[test]
fn output_limit_truncates_and_stops() {
    let t = TempDir::new("output");
    let py = "import sys\nwhile True: sys.stdout.write('x' * 4096)";
    let out = t
        .run([
            "--output-limit",
            "10000",
            "--wall-time",
            "20s",
            "--",
            "python3",
            "-c",
            py,
        ])
        .go();
    out.expect_status("output_limit", "endless output");
    assert_eq!(
        out.report()["truncated"],
        true,
        "truncated flag\n{}",
        out.ctx()
    );
    assert_consistent(&out);
    assert_eq!(
        out.num("stdout_bytes"),
        10000,
        "stdout_bytes must equal the limit\n{}",
        out.ctx()
    );
    assert_eq!(
        out.stdout_raw.len(),
        10000,
        "warden passed {} bytes of stdout through a 10000-byte limit",
        out.stdout_raw.len()
    );
}

/// A caller that stops reading (`| head -1`) closes the program's pipe
/// too: `yes` dies of SIGPIPE at once, as it would outside, instead of
/// writing into the void until the output limit.
#[test]
fn a_closed_caller_pipe_reaches_the_program() {
    let t = TempDir::new("output-epipe");
    let started = std::time::Instant::now();
    let out = t.shell("\"$WARDEN\" run --report \"$REPORT\" -- yes | head -1", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "y\n");
    let report = t.report_json();
    assert_eq!(report["status"], "signaled", "{report}");
    assert_eq!(report["signal"], 13, "{report}");
    // What the supervisor had accepted before it saw the pipe close (its
    // queue holds up to 1 MiB), far from the 64 MiB output limit.
    assert!(
        report["stdout_bytes"].as_u64().unwrap() < 8 * MIB,
        "{report}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn output_limit_counts_stderr_too() {
    let t = TempDir::new("output-err");
    let py = "import sys\nwhile True: sys.stderr.write('e' * 4096)";
    let out = t
        .run([
            "--output-limit",
            "8KiB",
            "--wall-time",
            "20s",
            "--",
            "python3",
            "-c",
            py,
        ])
        .go();
    out.expect_status("output_limit", "endless stderr");
    let total = out.num("stdout_bytes") + out.num("stderr_bytes");
    assert!(
        total <= 8192,
        "{total} bytes of output passed an 8KiB limit\n{}",
        out.ctx()
    );
}

/// The program itself writes past RLIMIT_FSIZE: SIGXFSZ (153), or a write error.
#[test]
fn file_size_limit_stops_a_large_write() {
    let t = TempDir::new("fsize");
    let out = t
        .run([
            "--file-size",
            "1MiB",
            "--tmpfs",
            "16MiB",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/tmp/big",
            "bs=1M",
            "count=4",
        ])
        .go();
    let r = out.report();
    let by_signal = out.code == 153 && r["status"] == "signaled" && r["signal"] == 25;
    let by_error = out.code != 0 && r["status"] == "exited";
    assert!(
        by_signal || by_error,
        "a 4MiB write under --file-size 1MiB succeeded or was misreported\n{}",
        out.ctx()
    );
}

/// With SIGXFSZ ignored (Python does that), the write fails with EFBIG and
/// the file stops at the limit.
#[test]
fn file_size_limit_caps_the_file() {
    let t = TempDir::new("fsize-py");
    let py = r#"
import os
f = open('/tmp/big', 'wb', buffering=0)
try:
    for i in range(4):
        f.write(b'x' * (1 << 20))
    print("wrote 4MiB")
except OSError as e:
    print("errno", e.errno)
print("size", os.path.getsize('/tmp/big'))
"#;
    let out = t
        .run(["--file-size", "1MiB", "--", "python3", "-c", py])
        .go();
    out.expect_ok("file-size");
    out.expect_stdout_lacks("wrote 4MiB", "file-size limit");
    out.expect_stdout_has("errno 27", "file-size limit (EFBIG)");
    out.expect_stdout_has(&format!("size {}", MIB), "file-size limit: file size");
}

/// fallocate with KEEP_SIZE allocates disk without growing the file, so
/// RLIMIT_FSIZE never sees it: in a write grant, a program under a 1 MiB
/// file-size limit allocated gigabytes of host disk. Such modes are refused
/// and recorded; allocation that grows the file meets the limit as a write.
#[test]
fn fallocate_cannot_allocate_past_the_file_size_limit() {
    let t = TempDir::new("fsize-falloc");
    let out_dir = t.mkdir("out");
    let py = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
for mode in (0x01, 0x20, 0x40):
    r = libc.fallocate(fd, mode, 0, 1 << 30)
    print("mode", mode, "result", r, "errno", ctypes.get_errno())
print("blocks", os.fstat(fd).st_blocks * 512)
"#;
    let file = out_dir.join("f");
    let out = t
        .run([
            "--file-size",
            "1MiB",
            "--allow",
            &format!("fs:write:{}", out_dir.display()),
            "--",
            "python3",
            "-c",
            py,
            file.to_str().unwrap(),
        ])
        .go();
    out.expect_code(0, "fallocate under --file-size");
    out.expect_status("violation", "refused fallocate");
    for mode in [1, 32, 64] {
        out.expect_stdout_has(
            &format!("mode {mode} result -1 errno 1"),
            "fallocate KEEP_SIZE/INSERT/UNSHARE refused",
        );
    }
    out.expect_stdout_has("blocks 0", "no disk allocated");
    out.expect_violation("fallocate", "refused fallocate recorded");
}

#[test]
fn tmpfs_size_is_capped() {
    let t = TempDir::new("tmpfs");
    let py = r#"
import os
st = os.statvfs('/tmp')
print("total", st.f_blocks * st.f_frsize)
shm = os.statvfs('/dev/shm') if os.path.exists('/dev/shm') else st
print("shm", shm.f_blocks * shm.f_frsize)
f = open('/tmp/fill', 'wb', buffering=0)
try:
    for i in range(16):
        f.write(b'x' * (1 << 20))
    print("wrote 16MiB")
except OSError as e:
    print("errno", e.errno)
print("size", os.path.getsize('/tmp/fill'))
"#;
    let out = t.run(["--tmpfs", "4MiB", "--", "python3", "-c", py]).go();
    out.expect_ok("tmpfs");
    out.expect_stdout_lacks("wrote 16MiB", "tmpfs cap");
    out.expect_stdout_has("errno 28", "tmpfs cap (ENOSPC)");
    let size: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("size "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size printed\n{}", out.ctx()));
    assert!(
        size <= 4 * MIB,
        "{size} bytes written into a 4MiB /tmp\n{}",
        out.ctx()
    );
    let total: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("total "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        total <= 4 * MIB,
        "/tmp has {total} bytes under --tmpfs 4MiB\n{}",
        out.ctx()
    );
    let shm: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("shm "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        shm <= 4 * MIB,
        "/dev/shm has {shm} bytes under --tmpfs 4MiB (an uncapped second tmpfs)\n{}",
        out.ctx()
    );
}

#[test]
fn open_files_limit_applies() {
    let t = TempDir::new("nofile");
    let py = r#"
fs = []
try:
    for i in range(200):
        fs.append(open('/dev/null'))
except OSError as e:
    print("errno", e.errno)
print("opened", len(fs))
"#;
    let out = t
        .run(["--open-files", "16", "--", "python3", "-c", py])
        .go();
    out.expect_ok("open-files");
    out.expect_stdout_has("errno 24", "open-files limit (EMFILE)");
    let opened: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("opened "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(999);
    assert!(
        opened < 16,
        "{opened} files opened under --open-files 16\n{}",
        out.ctx()
    );
}

/// Every limit the report lists as set has an enforcement mechanism: none dropped silently.
#[test]
fn every_set_limit_is_enforced() {
    let t = TempDir::new("enforce");
    let out = t
        .run([
            "--memory",
            "256MiB",
            "--cpu-time",
            "5s",
            "--allow",
            "cpu:limit:50%",
            "--pids",
            "32",
            "--",
            "true",
        ])
        .go();
    out.expect_ok("true with every limit");
    let r = out.report();
    let pairs = [
        ("memory_bytes", "memory"),
        ("cpu_time_ms", "cpu_time"),
        ("wall_time_ms", "wall_time"),
        ("pids", "pids"),
        ("cpu_percent", "cpu_share"),
        ("output_bytes", "output"),
        ("file_size_bytes", "file_size"),
        ("open_files", "open_files"),
        ("tmpfs_bytes", "tmpfs"),
    ];
    for (limit, key) in pairs {
        assert!(
            !r["limits"][limit].is_null(),
            "limits.{limit} missing though set\n{}",
            out.ctx()
        );
        assert!(
            r["enforcement"].get(key).and_then(|v| v.as_str()).is_some()
                || (key == "cpu_share" && r["enforcement"].get("cpu").is_some()),
            "limit {limit} is set but enforcement has no {key} entry (silently dropped)\n{}",
            out.ctx()
        );
    }
    assert_eq!(
        r["enforcement"]["memory"],
        "cgroup_v1",
        "memory mechanism as root\n{}",
        out.ctx()
    );
    assert_eq!(
        r["enforcement"]["pids"],
        "cgroup_v1",
        "pids mechanism as root\n{}",
        out.ctx()
    );
}

#[test]
fn default_limits_are_the_documented_ones() {
    let t = TempDir::new("defaults");
    let out = t.run(["--", "true"]).go();
    out.expect_ok("true");
    let l = out.report()["limits"].clone();
    assert_eq!(
        l["memory_bytes"],
        512 * MIB,
        "default memory\n{}",
        out.ctx()
    );
    assert_eq!(
        l["wall_time_ms"],
        60_000,
        "default wall time\n{}",
        out.ctx()
    );
    assert_eq!(l["pids"], 64, "default pids\n{}", out.ctx());
    assert_eq!(l["output_bytes"], 64 * MIB, "default output\n{}", out.ctx());
    assert_eq!(
        l["file_size_bytes"],
        64 * MIB,
        "default file size\n{}",
        out.ctx()
    );
    assert_eq!(l["open_files"], 256, "default open files\n{}", out.ctx());
    assert_eq!(l["tmpfs_bytes"], 64 * MIB, "default tmpfs\n{}", out.ctx());
}

/// The smallest accepted --open-files (4) must still let a program start:
/// warden's own descriptors are not the program's to pay for.
#[test]
fn smallest_open_files_limit_still_runs() {
    let t = TempDir::new("nofile-min");
    for n in ["4", "8"] {
        let out = t.run(["--open-files", n, "--", "true"]).go();
        out.expect_ok(&format!("true under --open-files {n}"));
    }
}

/// `cpu:limit:50` (half of one core) holds two busy processes to about
/// 500ms of CPU per wall-clock second, within 5% plus one CFS period.
#[test]
fn cpu_share_limit_holds_busy_processes_to_their_share() {
    let t = TempDir::new("cpushare");
    let out = t
        .run([
            "--allow",
            "cpu:limit:50",
            "--wall-time",
            "2s",
            "--",
            "python3",
            "-c",
            "import os\nos.fork()\nwhile True: pass",
        ])
        .go();
    out.expect_status("timeout", "busy processes under a CPU share");
    let cpu = out.num("cpu_ms");
    // 2s of wall clock at 50% of one core is 1000ms of CPU. The cap is
    // what is enforced (at most 5% over, plus one CFS period); less only
    // means the host was busy (other tests run in parallel on 2 cores), so
    // the lower bound only checks that the share is not far too strict.
    assert!(
        (600..=1100).contains(&cpu),
        "two busy processes under cpu:limit:50 for 2s got {cpu}ms of CPU (want ~1000ms)\n{}",
        out.ctx()
    );
    assert_eq!(
        out.report()["enforcement"]["cpu_share"],
        "cgroup_v1",
        "enforcement does not name the cgroup for the CPU share\n{}",
        out.ctx()
    );
}

/// A program that ends while its output waits in the pipe for a caller
/// that is not reading: what is left there still counts against the output
/// limit (it was not read, so the breach went unseen: `exited`,
/// `truncated: false`).
#[test]
fn output_left_in_the_pipe_counts_against_the_limit() {
    let t = TempDir::new("output-left");
    let py = "import os, threading, time\ndef w():\n    while True: os.write(1, b'x' * 65536)\nthreading.Thread(target=w, daemon=True).start()\ntime.sleep(0.5)\nos._exit(0)\n";
    t.shell(
        "\"$WARDEN\" run --output-limit 1250000B --report \"$REPORT\" -- python3 -c \"$PY\" | (sleep 3; cat >/dev/null)",
        &[("PY", py)],
    );
    let report = t.report_json();
    assert_eq!(report["status"], "output_limit", "{report}");
    assert_eq!(report["truncated"], true, "{report}");
    assert_eq!(report["stdout_bytes"], 1_250_000, "{report}");
    assert_eq!(report["exit_code"], 0, "the program ended itself: {report}");
}
