//! Honest reports: every limit reached is in `limits_reached` and said on
//! stderr after the program's output (not with `--quiet`); files a scratch
//! working directory discards are counted; another program than the
//! caller's PATH names is said; interpreters are recognised by path and
//! versioned name; a grant can be shown at a chosen path (`--at`);
//! violations come in the order they happened.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::common::{Outcome, TempDir};

/// The `limits_reached` entry for `limit`; panics with context if none.
fn reached(out: &Outcome, limit: &str) -> Value {
    let report = out.report();
    report["limits_reached"]
        .as_array()
        .unwrap_or_else(|| panic!("no limits_reached array\n{}", out.ctx()))
        .iter()
        .find(|r| r["limit"] == limit)
        .cloned()
        .unwrap_or_else(|| panic!("{limit} is not in limits_reached\n{}", out.ctx()))
}

fn count(entry: &Value) -> u64 {
    entry["count"].as_u64().expect("count is a number")
}

fn detail(entry: &Value) -> String {
    entry["detail"].as_str().expect("detail").to_string()
}

/// Warden's own lines on stderr.
fn warden_lines(out: &Outcome) -> Vec<String> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("warden: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_fork_bomb_under_pids_is_counted_from_pids_events() {
    let t = TempDir::new("honest-pids");
    let out = t
        .run([
            "--pids",
            "16",
            "--",
            "sh",
            "-c",
            "for i in $(seq 60); do sleep 2 & done 2>/dev/null; wait; exit 0",
        ])
        .go();
    let pids = reached(&out, "pids");
    assert!(count(&pids) >= 1, "{}", out.ctx());
    assert!(detail(&pids).starts_with("16 processes: "), "{}", out.ctx());
    assert!(detail(&pids).contains("forks refused") || detail(&pids).contains("fork refused"));
    assert!(
        warden_lines(&out).iter().any(|l| l
            .starts_with("warden: pids limit 16 processes reached: ")
            && l.ends_with("raise it with --pids")),
        "{}",
        out.ctx()
    );
}

#[test]
fn writes_past_the_file_size_cap_are_reached_limits() {
    let t = TempDir::new("honest-fsize");
    // CPython ignores SIGXFSZ: the write fails with EFBIG, the file is left
    // at the cap, and the program goes on.
    let out = t
        .run([
            "--file-size",
            "1MiB",
            "--",
            "python3",
            "-c",
            "import sys\ntry:\n open('/tmp/big','wb').write(b'x'*(3<<20))\nexcept OSError as e:\n print('refused', e.errno)\n",
        ])
        .go();
    out.expect_ok("python under --file-size");
    out.expect_stdout_has("refused 27", "EFBIG");
    let fsize = reached(&out, "file_size");
    assert!(count(&fsize) >= 1, "{}", out.ctx());
    assert!(detail(&fsize).starts_with("1 MiB: "), "{}", out.ctx());
    // dd does not ignore it: the kernel's SIGXFSZ kills it, which the
    // jail's init sees.
    let out = t
        .run([
            "--file-size",
            "1MiB",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/tmp/big",
            "bs=64k",
            "count=64",
        ])
        .go();
    assert_eq!(out.report()["signal"], libc_sigxfsz(), "{}", out.ctx());
    let fsize = reached(&out, "file_size");
    assert!(
        detail(&fsize).contains("killed by SIGXFSZ"),
        "{}",
        out.ctx()
    );
    assert!(
        count(&fsize) >= 2,
        "a kill and a file at the cap\n{}",
        out.ctx()
    );
}

fn libc_sigxfsz() -> u64 {
    25
}

#[test]
fn a_full_tmp_is_a_reached_limit() {
    let t = TempDir::new("honest-tmpfs");
    let out = t
        .run([
            "--tmpfs",
            "2MiB",
            "--",
            "sh",
            "-c",
            "head -c 5000000 /dev/zero > /tmp/fill 2>/dev/null; exit 0",
        ])
        .go();
    out.expect_ok("filling /tmp");
    let tmpfs = reached(&out, "tmpfs");
    assert!(
        detail(&tmpfs).starts_with("2 MiB: /tmp full"),
        "{}",
        out.ctx()
    );
    assert!(
        warden_lines(&out)
            .iter()
            .any(|l| l.contains("/tmp size limit 2 MiB reached") && l.contains("--tmpfs")),
        "{}",
        out.ctx()
    );
}

#[test]
fn a_child_killed_for_memory_is_reported_while_the_parent_exits_zero() {
    let t = TempDir::new("honest-oom-child");
    let out = t
        .run([
            "--memory",
            "64MiB",
            "--",
            "python3",
            "-c",
            "import subprocess,sys\nr=subprocess.run([sys.executable,'-c','x=bytearray(300<<20)'])\nprint('child', r.returncode)\n",
        ])
        .go();
    out.expect_code(0, "the parent exits 0");
    out.expect_stdout_has("child -9", "the child was killed");
    out.expect_status("memory_limit", "the OOM kill is said");
    let memory = reached(&out, "memory");
    assert!(count(&memory) >= 1, "{}", out.ctx());
    assert!(
        detail(&memory).contains("the program went on"),
        "{}",
        out.ctx()
    );
}

#[test]
fn an_output_cut_is_said_on_stderr_unless_quiet() {
    let t = TempDir::new("honest-output");
    let args = |quiet: bool| {
        let mut a: Vec<&str> = vec!["--output-limit", "1MiB"];
        if quiet {
            a.push("--quiet");
        }
        a.extend(["--", "head", "-c", "5000000", "/dev/zero"]);
        a
    };
    let out = t.run(args(false)).go();
    out.expect_code(137, "stopped at the output limit");
    let output = reached(&out, "output");
    assert!(
        detail(&output).starts_with("1 MiB: output truncated"),
        "{}",
        out.ctx()
    );
    let line = warden_lines(&out)
        .into_iter()
        .find(|l| l.starts_with("warden: output limit 1 MiB reached: output truncated"))
        .unwrap_or_else(|| panic!("no output-limit line\n{}", out.ctx()));
    assert!(line.contains("program stopped (exit 137)"), "{line}");
    assert!(line.ends_with("raise it with --output-limit"), "{line}");
    // The line comes after the program's own output.
    let out = t.run(args(true)).go();
    out.expect_code(137, "quiet changes nothing but the lines");
    reached(&out, "output");
    assert!(warden_lines(&out).is_empty(), "{}", out.ctx());
}

#[test]
fn wall_clock_and_cpu_stops_are_reached_limits() {
    let t = TempDir::new("honest-time");
    let out = t.run(["--wall-time", "300ms", "--", "sleep", "5"]).go();
    out.expect_code(124, "timeout");
    assert!(detail(&reached(&out, "wall_time")).starts_with("300 ms: program stopped"));
    let out = t
        .run([
            "--cpu-time",
            "200ms",
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ])
        .go();
    out.expect_status("cpu_limit", "cpu");
    assert!(detail(&reached(&out, "cpu_time")).starts_with("200 ms: "));
    // A run that reaches nothing says nothing.
    let out = t.run(["--", "true"]).go();
    out.expect_ok("true");
    assert_eq!(out.report()["limits_reached"], serde_json::json!([]));
    assert!(warden_lines(&out).is_empty(), "{}", out.ctx());
}

#[test]
fn files_left_in_the_scratch_working_directory_are_counted() {
    let t = TempDir::new("honest-scratch");
    let script = "import sqlite3\nc=sqlite3.connect('x.db')\nc.execute('create table t(a)')\nc.commit()\nprint('ok')\n";
    let out = t.run(["--", "python3", "-c", script]).go();
    out.expect_ok("sqlite in the scratch directory");
    let discarded = &out.report()["discarded"];
    assert_eq!(discarded["files"], 1, "{}", out.ctx());
    assert!(discarded["bytes"].as_u64().unwrap() > 0, "{}", out.ctx());
    let work = t.work().display().to_string();
    assert!(
        warden_lines(&out)
            .iter()
            .any(|l| l.contains("discarded") && l.contains(&format!("fs:write:{work}"))),
        "{}",
        out.ctx()
    );
    assert!(!t.path("x.db").exists(), "the scratch file stays inside");
    // Granted: kept, and nothing is discarded.
    let out = t
        .run(["--allow", "fs:write:./", "--", "python3", "-c", script])
        .go();
    out.expect_ok("granted");
    assert_eq!(out.report()["discarded"], Value::Null, "{}", out.ctx());
    assert!(t.path("x.db").exists());
    // Nothing left: zero files, and no line.
    let out = t.run(["--", "true"]).go();
    assert_eq!(out.report()["discarded"]["files"], 0, "{}", out.ctx());
}

#[test]
fn interpreters_named_by_path_or_version_get_their_script() {
    let t = TempDir::new("honest-interp");
    t.write("job.py", "print('job ran')\n");
    let job = t.path("job.py").display().to_string();
    for python in [
        "python3",
        "/usr/bin/python3",
        "python3.11",
        "/usr/bin/python3.11",
    ] {
        let out = t.run(["--", python, "job.py"]).go();
        out.expect_ok(python);
        out.expect_stdout_has("job ran", python);
        assert!(
            out.capabilities().contains(&format!("fs:read:{job}")),
            "{python}: the script is granted\n{}",
            out.ctx()
        );
    }
    t.write("job.sh", "echo shell ran\n");
    let out = t.run(["--", "/bin/sh", "job.sh"]).go();
    out.expect_ok("/bin/sh job.sh");
    out.expect_stdout_has("shell ran", "/bin/sh job.sh");
    // An inline program is no script: a file of that name is not mounted.
    t.write("print(1)", "");
    let out = t.run(["--", "python3", "-c", "print(1)"]).go();
    out.expect_ok("-c");
    assert!(out.capabilities().is_empty(), "{}", out.ctx());
}

#[test]
fn a_missing_program_named_by_path_does_not_blame_path() {
    let t = TempDir::new("honest-abs");
    let out = t.run(["--", "/nonexistent/tool"]).go();
    out.expect_code(127, "not found");
    let error = out.report()["error"].as_str().unwrap().to_string();
    assert!(!error.contains("PATH"), "{error}");
    assert!(error.contains("no such file in the jail"), "{error}");
    let out = t.run(["--", "no-such-tool-anywhere"]).go();
    out.expect_code(127, "not found on PATH");
    assert!(out.report()["error"].as_str().unwrap().contains("PATH="));
}

#[test]
fn a_program_the_callers_path_finds_elsewhere_is_named() {
    let t = TempDir::new("honest-path");
    let bin = t.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("python3");
    std::fs::write(&fake, "#!/bin/sh\necho fake python\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let out = t
        .run(["--", "python3", "-c", "print('real python')"])
        .env("PATH", &path)
        .go();
    out.expect_ok("the jail's python runs");
    out.expect_stdout_has("real python", "the jail's python");
    let warnings = out.report()["warnings"].to_string();
    assert!(
        warnings.contains(&fake.display().to_string()),
        "{}",
        out.ctx()
    );
    assert!(warnings.contains("/usr/bin/python3"), "{}", out.ctx());
    assert!(
        warnings.contains(&format!("fs:read:{}", bin.display())),
        "{}",
        out.ctx()
    );
    assert!(
        warden_lines(&out)
            .iter()
            .any(|l| l.contains("your PATH finds") && l.contains(&fake.display().to_string())),
        "{}",
        out.ctx()
    );
    // --quiet: the report still says it, stderr does not.
    let out = t
        .run(["--quiet", "--", "python3", "-c", "print(1)"])
        .env("PATH", &path)
        .go();
    assert!(out.report()["warnings"]
        .to_string()
        .contains("your PATH finds"));
    assert!(warden_lines(&out).is_empty(), "{}", out.ctx());
    // The same file on both PATHs: nothing to say.
    let out = t
        .run(["--", "python3", "-c", "print(1)"])
        .env("PATH", "/usr/bin:/bin")
        .go();
    out.expect_ok("same python");
    assert_eq!(
        out.report()["warnings"],
        serde_json::json!([]),
        "{}",
        out.ctx()
    );
}

#[test]
fn a_grant_can_be_shown_at_a_chosen_path() {
    let t = TempDir::new("honest-at");
    t.write("fixtures/in.txt", "fixture\n");
    let out = t
        .run([
            "--allow",
            "fs:read:./fixtures",
            "--at",
            "/data",
            "--",
            "sh",
            "-c",
            "cat /data/in.txt; ls fixtures 2>&1 || true",
        ])
        .go();
    out.expect_ok("--at /data");
    out.expect_stdout_has("fixture", "read at /data");
    let fixtures = t.path("fixtures").display().to_string();
    assert_eq!(
        out.report()["views"],
        serde_json::json!([{"grant": fixtures, "at": "/data"}]),
        "{}",
        out.ctx()
    );
    // Only there: not also at its own path.
    out.expect_stdout_lacks("in.txt", "its own path is empty");
    // A working directory inside the view: it exists only in the jail.
    let out = t
        .run([
            "--allow",
            "fs:read:./fixtures",
            "--at",
            "/nowhere-on-the-host",
            "--workdir",
            "/nowhere-on-the-host",
            "--",
            "sh",
            "-c",
            "pwd; cat in.txt",
        ])
        .go();
    out.expect_ok("--workdir in a view");
    assert_eq!(
        out.stdout,
        "/nowhere-on-the-host\nfixture\n",
        "{}",
        out.ctx()
    );
    // Writable at a chosen path.
    t.mkdir("out");
    let out = t
        .run([
            "--allow",
            "fs:write:./out",
            "--at",
            "/results",
            "--",
            "sh",
            "-c",
            "echo made > /results/r.txt",
        ])
        .go();
    out.expect_ok("--at /results writable");
    assert_eq!(
        std::fs::read_to_string(t.path("out/r.txt")).unwrap(),
        "made\n"
    );
    // The jail's own directories cannot be shadowed, nor its root.
    for at in ["/usr/lib/x", "/proc", "/dev/x", "/etc", "/"] {
        let out = t
            .run(["--allow", "fs:read:./fixtures", "--at", at, "--", "true"])
            .go();
        out.expect_warden_error(at);
    }
    // --at belongs to the --allow before it, an fs: one.
    for args in [
        &[
            "--at",
            "/data",
            "--allow",
            "fs:read:./fixtures",
            "--",
            "true",
        ][..],
        &["--allow", "env:HOME", "--at", "/data", "--", "true"],
        &[
            "--allow",
            "fs:read:./fixtures",
            "--at",
            "data",
            "--",
            "true",
        ],
        &[
            "--allow",
            "fs:read:./fixtures",
            "--at",
            "/a/../b",
            "--",
            "true",
        ],
    ] {
        t.run(args.iter().copied())
            .go()
            .expect_warden_error(&args.join(" "));
    }
}

#[test]
fn violations_come_in_the_order_they_happened() {
    let t = TempDir::new("honest-order");
    // ptrace (101) first, then mount (165): sorted by name, mount would lead.
    let script = "import ctypes\nlibc=ctypes.CDLL(None)\nlibc.syscall(101,0,0,0,0)\nlibc.syscall(165,0,0,0,0,0)\nlibc.syscall(101,0,0,0,0)\n";
    let out = t.run(["--", "python3", "-c", script]).go();
    out.expect_status("violation", "denied calls");
    let names: Vec<String> = out
        .violations()
        .into_iter()
        .map(|(_, d)| d.split(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["ptrace", "mount"], "{}", out.ctx());
}
