//! The interpreters users run must work unmodified; stdin and exit codes pass through.

use crate::common::TempDir;

#[test]
fn python3_prints_and_exits_zero() {
    let t = TempDir::new("py");
    let out = t.run(["--", "python3", "-c", "print(6*7)"]).go();
    out.expect_ok("python3 -c");
    assert_eq!(out.stdout, "42\n", "python3 output\n{}", out.ctx());
    assert_eq!(
        out.report()["exit_code"],
        0,
        "report exit_code\n{}",
        out.ctx()
    );
    assert_eq!(out.num("stdout_bytes"), 3, "stdout_bytes\n{}", out.ctx());
}

#[test]
fn node_prints_and_exits_zero() {
    let t = TempDir::new("node");
    let out = t.run(["--", "node", "-e", "console.log(6*7)"]).go();
    out.expect_ok("node -e");
    assert_eq!(out.stdout, "42\n", "node output\n{}", out.ctx());
}

#[test]
fn php_prints_and_exits_zero() {
    let t = TempDir::new("php");
    let out = t.run(["--", "php", "-r", "echo 6*7, \"\\n\";"]).go();
    out.expect_ok("php -r");
    assert_eq!(out.stdout, "42\n", "php output\n{}", out.ctx());
}

#[test]
fn sh_prints_and_exits_zero() {
    let t = TempDir::new("sh");
    let out = t.run(["--", "sh", "-c", "echo 42"]).go();
    out.expect_ok("sh -c");
    assert_eq!(out.stdout, "42\n", "sh output\n{}", out.ctx());
}

/// `warden run -- python3 job.py`: the script in the working directory is
/// mounted read-only without a grant and listed among the capabilities.
#[test]
fn python3_script_in_cwd_runs_as_entry() {
    let t = TempDir::new("entry");
    let script = t.write("job.py", "import sys\nprint('job ran', sys.argv[1])\n");
    let out = t.run(["--", "python3", "job.py", "arg1"]).go();
    out.expect_ok("python3 job.py");
    out.expect_stdout_has("job ran arg1", "python3 job.py");
    let wanted = format!("fs:read:{}", script.display());
    assert!(
        out.capabilities().contains(&wanted),
        "the entry file is not listed as {wanted}\n{}",
        out.ctx()
    );
}

/// `warden run -- ./run.sh`: a relative program path is the entry.
#[test]
fn relative_executable_in_cwd_runs() {
    let t = TempDir::new("entry-sh");
    let script = t.write("run.sh", "#!/bin/sh\necho shell entry ran\n");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = t.run(["--", "./run.sh"]).go();
    out.expect_ok("./run.sh");
    out.expect_stdout_has("shell entry ran", "./run.sh");
}

#[test]
fn stdin_passes_through() {
    let t = TempDir::new("stdin");
    let out = t
        .run([
            "--",
            "python3",
            "-c",
            "import sys; data = sys.stdin.read(); print(data.upper(), len(data))",
        ])
        .stdin("hello warden")
        .go();
    out.expect_ok("stdin");
    assert_eq!(
        out.stdout,
        "HELLO WARDEN 12\n",
        "stdin did not reach the program\n{}",
        out.ctx()
    );
}

#[test]
fn stdin_passes_through_to_sh_pipeline() {
    let t = TempDir::new("stdin-sh");
    let out = t.run(["--", "sh", "-c", "wc -l"]).stdin("a\nb\nc\n").go();
    out.expect_ok("stdin to sh");
    assert_eq!(out.stdout.trim(), "3", "line count of stdin\n{}", out.ctx());
}

#[test]
fn exit_codes_propagate() {
    let t = TempDir::new("exit");
    for (cmd, code) in [
        (vec!["sh", "-c", "exit 3"], 3),
        (vec!["python3", "-c", "import sys; sys.exit(42)"], 42),
        (vec!["node", "-e", "process.exit(7)"], 7),
        (vec!["php", "-r", "exit(9);"], 9),
        (vec!["false"], 1),
    ] {
        let mut args = vec!["--"];
        args.extend(cmd.iter().copied());
        let out = t.run(args).go();
        out.expect_code(code, &format!("{cmd:?}"));
        out.expect_status("exited", &format!("{cmd:?}"));
        assert_eq!(
            out.report()["exit_code"],
            code,
            "report exit_code of {cmd:?}\n{}",
            out.ctx()
        );
    }
}

/// A program killed by a signal: 128+N and status signaled.
#[test]
fn signal_death_is_128_plus_n() {
    let t = TempDir::new("sig");
    let out = t.run(["--", "sh", "-c", "kill -TERM $$"]).go();
    out.expect_code(143, "sh killed by SIGTERM");
    out.expect_status("signaled", "sh killed by SIGTERM");
    assert_eq!(out.report()["signal"], 15, "report signal\n{}", out.ctx());
}

/// The report carries the fields of the contract.
#[test]
fn report_has_contract_fields() {
    let t = TempDir::new("fields");
    let out = t.run(["--", "true"]).go();
    out.expect_ok("true");
    let r = out.report();
    for field in [
        "status",
        "exit_code",
        "signal",
        "wall_ms",
        "cpu_ms",
        "peak_memory_bytes",
        "stdout_bytes",
        "stderr_bytes",
        "truncated",
        "violations",
        "capabilities",
        "policy_digest",
        "invocation_id",
        "backend",
        "limits",
        "enforcement",
        "warnings",
        "error",
    ] {
        assert!(
            r.get(field).is_some(),
            "report lacks {field}\n{}",
            out.ctx()
        );
    }
    assert!(
        r["policy_digest"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:"),
        "policy_digest format\n{}",
        out.ctx()
    );
    assert_eq!(r["backend"], "jail", "backend\n{}", out.ctx());
    assert_eq!(
        r["enforcement"]["memory"],
        "cgroup_v1",
        "memory enforcement as root\n{}",
        out.ctx()
    );
}
