//! Bad input: exit 125 with a one-line message; 126/127 for programs that cannot run.

use std::os::unix::fs::PermissionsExt;

use crate::common::{Outcome, TempDir};

fn refused(tag: &str, args: &[&str]) -> Outcome {
    let t = TempDir::new(tag);
    let mut argv: Vec<&str> = args.to_vec();
    argv.extend(["--", "sh", "-c", "echo PROGRAM-RAN"]);
    let out = t.run(argv).go();
    out.expect_warden_error(tag);
    out.expect_stdout_lacks(
        "PROGRAM-RAN",
        &format!("{tag}: the program ran despite the error"),
    );
    // Refused flags too leave the report that --report asked for.
    assert_eq!(out.status(), "error", "{tag}: report status\n{}", out.ctx());
    out
}

/// The one line names what was wrong.
fn names(out: &Outcome, needle: &str) {
    assert!(
        out.stderr.contains(needle),
        "the message does not name {needle:?}\n{}",
        out.ctx()
    );
}

#[test]
fn malformed_capability() {
    refused("malformed-cap", &["--allow", "fs:bogus:x"]);
}

#[test]
fn malformed_capability_empty_path() {
    refused("malformed-cap-empty", &["--allow", "fs:read:"]);
}

#[test]
fn unknown_capability_kind() {
    refused("unknown-cap", &["--allow", "root:everything"]);
}

#[test]
fn unknown_option() {
    let out = refused("unknown-opt", &["--no-such-option"]);
    names(&out, "--no-such-option");
}

#[test]
fn missing_policy_file() {
    refused(
        "missing-policy",
        &["--policy", "/nonexistent/warden-policy.yaml"],
    );
}

#[test]
fn invalid_yaml_policy() {
    let t = TempDir::new("bad-yaml");
    let policy = t.write_root("bad.yaml", "grants: [\n  - env:A\n");
    let out = t
        .run([
            "--policy",
            policy.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo PROGRAM-RAN",
        ])
        .go();
    out.expect_warden_error("invalid YAML policy");
    out.expect_stdout_lacks("PROGRAM-RAN", "invalid YAML: the program ran");
    assert!(
        out.stderr.contains("bad.yaml"),
        "message does not name the policy file\n{}",
        out.ctx()
    );
}

#[test]
fn memory_minus_one() {
    let out = refused("mem-neg", &["--memory", "-1"]);
    names(&out, "--memory");
}

#[test]
fn memory_zero() {
    refused("mem-zero", &["--memory", "0"]);
}

#[test]
fn memory_garbage_unit() {
    refused("mem-unit", &["--memory", "12parsecs"]);
}

#[test]
fn zero_wall_time() {
    refused("wall-zero", &["--wall-time", "0s"]);
}

#[test]
fn sub_millisecond_limits() {
    let out = refused("wall-us", &["--wall-time", "500us"]);
    names(&out, "wall-time");
    let out = refused("cpu-us", &["--cpu-time", "999us"]);
    names(&out, "cpu-time");
}

#[test]
fn zero_pids() {
    refused("pids-zero", &["--pids", "0"]);
}

#[test]
fn wasm_only_flags_with_the_jail() {
    for flags in [
        ["--tenant", "acme"],
        ["--kv-dir", "/tmp"],
        ["--fuel", "1000"],
        ["--module", "m=x.wasm"],
    ] {
        let out = refused("wasm-only", &flags);
        names(&out, flags[0]);
    }
}

#[test]
fn unknown_backend() {
    refused("backend", &["--backend", "no-such-backend"]);
}

#[test]
fn invalid_env_name() {
    refused("env-name", &["--env", "1BAD=x"]);
}

#[test]
fn empty_command() {
    let t = TempDir::new("empty-cmd");
    let out = t.run(["--"]).go();
    out.expect_warden_error("empty command");
    let out = t.run(Vec::<String>::new()).go();
    out.expect_warden_error("no command at all");
    names(&out, "<PROGRAM>");
}

#[test]
fn setup_error_still_writes_a_report() {
    let t = TempDir::new("err-report");
    let out = t.run(["--allow", "fs:read:./missing", "--", "true"]).go();
    out.expect_warden_error("missing grant");
    assert_eq!(out.status(), "error", "report status\n{}", out.ctx());
    assert!(
        out.report()["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing")),
        "report error does not name the cause\n{}",
        out.ctx()
    );
}

#[test]
fn program_not_found_is_127() {
    let t = TempDir::new("nf");
    let out = t.run(["--", "warden-no-such-program-xyz"]).go();
    out.expect_code(127, "program not found");
    let out = t.run(["--", "/usr/bin/warden-no-such-program-xyz"]).go();
    out.expect_code(127, "absolute program path not found");
}

#[test]
fn non_executable_file_is_126() {
    let t = TempDir::new("noexec");
    let f = t.write("script.sh", "#!/bin/sh\necho SHOULD-NOT-RUN\n");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = t.run(["--", "./script.sh"]).go();
    out.expect_code(126, "non-executable entry file");
    out.expect_stdout_lacks("SHOULD-NOT-RUN", "non-executable file ran");
}

#[test]
fn non_executable_file_in_grant_is_126() {
    let t = TempDir::new("noexec-grant");
    let f = t.write("d/script.sh", "#!/bin/sh\necho SHOULD-NOT-RUN\n");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = t
        .run(["--allow", "fs:read:./d", "--", f.to_str().unwrap()])
        .go();
    out.expect_code(126, "non-executable file in a grant");
}

#[test]
fn directory_as_program_is_126() {
    let t = TempDir::new("dir-prog");
    let out = t.run(["--", "/usr"]).go();
    out.expect_code(126, "a directory as the program");
}

#[test]
fn help_and_version_exit_zero() {
    let t = TempDir::new("help");
    let out = t.raw(["run", "--help"]).go();
    out.expect_code(0, "warden run --help");
    for flag in [
        "--policy",
        "--allow",
        "--memory",
        "--cpu-time",
        "--wall-time",
        "--pids",
        "--output-limit",
        "--file-size",
        "--env",
        "--workdir",
        "--report",
        "--backend",
    ] {
        assert!(
            out.stdout.contains(flag),
            "--help lacks {flag}\n{}",
            out.ctx()
        );
    }
    t.raw(["--version"]).go().expect_code(0, "warden --version");
}

/// Whatever cannot take the report is refused before the program runs,
/// and a device is written, never replaced (`--report /dev/full` as root
/// used to rename a file over the device node).
#[test]
fn report_targets_are_checked_before_the_run() {
    let t = TempDir::new("report-target");
    let dir = t.mkdir("a-dir");
    for target in [dir.to_str().unwrap(), "/nonexistent/dir/r.json"] {
        let out = t
            .raw([
                "run",
                "--report",
                target,
                "--",
                "sh",
                "-c",
                "echo PROGRAM-RAN",
            ])
            .go();
        out.expect_code(125, target);
        out.expect_stdout_lacks("PROGRAM-RAN", &format!("{target}: the program ran"));
    }
    let out = t.raw(["run", "--report", "/dev/full", "--", "true"]).go();
    out.expect_code(125, "a report that cannot be written");
    assert!(
        out.stderr.contains("/dev/full"),
        "message names the target\n{}",
        out.ctx()
    );
    let out = t.raw(["run", "--report", "/dev/null", "--", "true"]).go();
    out.expect_code(0, "--report /dev/null");
    use std::os::unix::fs::FileTypeExt;
    for dev in ["/dev/full", "/dev/null"] {
        let ft = std::fs::symlink_metadata(dev).unwrap().file_type();
        assert!(ft.is_char_device(), "{dev} was replaced");
    }
}

/// `--report /dev/stdout` (a link to the caller's descriptor) is written
/// through, after the program's own output.
#[test]
fn report_to_the_callers_stdout() {
    let t = TempDir::new("report-stdout");
    let out = t
        .raw(["run", "--report", "/dev/stdout", "--", "echo", "hi"])
        .go();
    out.expect_code(0, "--report /dev/stdout");
    let (first, rest) = out.stdout.split_once('\n').unwrap_or_default();
    assert_eq!(first, "hi", "{}", out.ctx());
    let report: serde_json::Value = serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("report on stdout is not JSON: {e}\n{}", out.ctx()));
    assert_eq!(report["status"], "exited");
}

/// Hostile bytes in the caller's input (a newline or an escape sequence in
/// a flag's value or the program's name) cannot turn Warden's message into
/// several lines or terminal commands, and a huge value is cut.
#[test]
fn messages_escape_and_cut_what_the_input_carries() {
    let out = refused("nl-cap", &["--allow", "env:A\nB"]);
    assert!(!out.stderr.contains('\u{1b}'));
    let out = refused("esc-env", &["--env", "A\u{1b}[2J=1"]);
    assert!(!out.stderr.contains('\u{1b}'), "{}", out.ctx());
    let long = format!("fs:read:/{}", "a".repeat(5000));
    let out = refused("long-cap", &["--allow", &long]);
    assert!(
        out.stderr.len() < 1200,
        "{} bytes on stderr",
        out.stderr.len()
    );
    let t = TempDir::new("nl-program");
    let out = t.run(["--", "foo\nbar\u{1b}[2J"]).go();
    out.expect_code(127, "a program name with a newline");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.ctx());
    assert!(
        lines[0].contains("command not found") && !lines[0].contains('\u{1b}'),
        "{}",
        out.ctx()
    );
}

/// Limits the kernel or this process cannot give are refused up front with
/// the limit named, not as a late "confine program: Operation not
/// permitted" or a cgroup write error.
#[test]
fn limits_beyond_what_the_host_can_give() {
    let out = refused("pids-huge", &["--pids", "4194304"]);
    names(&out, "pids");
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .unwrap();
    if hard != "unlimited" && hard.parse::<u64>().unwrap() < 1 << 20 {
        // Beyond our hard limit: raised if this root may, else refused.
        let t = TempDir::new("nofile-huge");
        let out = t.run(["--open-files", "1048576", "--", "true"]).go();
        if out.code != 0 {
            out.expect_warden_error("--open-files above the hard limit");
            names(&out, "open-files");
        }
    }
}
