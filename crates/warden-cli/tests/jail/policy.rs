//! Policy files: their grants apply, requests outside them are refused
//! before anything starts, `extends` only narrows, `policy check` locates problems.

use crate::common::{TempDir, MIB};

/// `root/base.yaml` grants work/data and work/secret, memory ≤ 128MiB, pids ≤ 32.
fn with_base(tag: &str) -> TempDir {
    let t = TempDir::new(tag);
    t.write("data/x.txt", "policy-data\n");
    t.write("secret/s.txt", "policy-secret\n");
    t.write_root(
        "base.yaml",
        "grants:\n  - fs:read:./work/data\n  - fs:read:./work/secret\n  - env:WARDEN_IT_POLICY\nlimits:\n  memory: 128MiB\n  pids: 32\n",
    );
    t
}

fn policy_arg(t: &TempDir, name: &str) -> String {
    t.root.join(name).display().to_string()
}

#[test]
fn policy_grants_and_limits_apply() {
    let t = with_base("p-apply");
    let out = t
        .run([
            "--policy",
            &policy_arg(&t, "base.yaml"),
            "--",
            "sh",
            "-c",
            "cat data/x.txt; echo \"env=$WARDEN_IT_POLICY\"",
        ])
        .env("WARDEN_IT_POLICY", "from-caller")
        .go();
    out.expect_ok("run under a policy");
    out.expect_stdout_has("policy-data", "a grant of the policy");
    out.expect_stdout_has("env=from-caller", "an env grant of the policy");
    let r = out.report();
    assert_eq!(
        r["limits"]["memory_bytes"],
        128 * MIB,
        "the policy's memory limit\n{}",
        out.ctx()
    );
    assert_eq!(
        r["limits"]["pids"],
        32,
        "the policy's pids limit\n{}",
        out.ctx()
    );
    let data = format!("fs:read:{}", t.path("data").display());
    assert!(
        out.capabilities().contains(&data),
        "capabilities lack {data}\n{}",
        out.ctx()
    );
    assert!(
        r["policy_digest"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:"),
        "policy digest\n{}",
        out.ctx()
    );
}

#[test]
fn request_within_policy_narrows_it() {
    let t = with_base("p-narrow-req");
    let out = t
        .run([
            "--policy",
            &policy_arg(&t, "base.yaml"),
            "--allow",
            "fs:read:./data",
            "--memory",
            "64MiB",
            "--",
            "sh",
            "-c",
            "cat data/x.txt; cat secret/s.txt",
        ])
        .go();
    assert_ne!(
        out.code,
        125,
        "a request within the policy was refused\n{}",
        out.ctx()
    );
    out.expect_stdout_has("policy-data", "the requested grant");
    out.expect_stdout_lacks("policy-secret", "a policy grant that was not requested");
    assert_eq!(
        out.report()["limits"]["memory_bytes"],
        64 * MIB,
        "requested memory\n{}",
        out.ctx()
    );
}

#[test]
fn allow_outside_policy_is_refused_before_start() {
    let t = with_base("p-outside");
    t.mkdir("other");
    let out = t
        .run([
            "--policy",
            &policy_arg(&t, "base.yaml"),
            "--allow",
            "fs:read:./other",
            "--",
            "sh",
            "-c",
            "echo PROGRAM-RAN",
        ])
        .go();
    out.expect_warden_error("grant outside the policy");
    out.expect_stdout_lacks("PROGRAM-RAN", "a refused request started the program");
    assert!(
        out.stderr.contains("not granted"),
        "message does not say why\n{}",
        out.ctx()
    );
    for wider in ["fs:write:./data", "env:HOME"] {
        let out = t
            .run([
                "--policy",
                &policy_arg(&t, "base.yaml"),
                "--allow",
                wider,
                "--",
                "sh",
                "-c",
                "echo PROGRAM-RAN",
            ])
            .go();
        out.expect_warden_error(&format!("{wider} outside the policy"));
        out.expect_stdout_lacks("PROGRAM-RAN", "a refused request started the program");
    }
}

#[test]
fn limits_above_policy_are_refused() {
    let t = with_base("p-limits");
    for args in [
        vec!["--memory", "256MiB"],
        vec!["--pids", "64"],
        vec!["--allow", "mem:limit:1GiB"],
    ] {
        let mut argv = vec!["--policy".to_string(), policy_arg(&t, "base.yaml")];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.extend(["--", "sh", "-c", "echo PROGRAM-RAN"].map(String::from));
        let out = t.run(argv).go();
        out.expect_warden_error(&format!("{args:?} above the policy"));
        out.expect_stdout_lacks("PROGRAM-RAN", "a refused request started the program");
    }
}

#[test]
fn policy_check_reports_unknown_key_with_line_and_column() {
    let t = TempDir::new("p-check");
    t.write_root(
        "p.yaml",
        "grants:\n  - env:A\nbogus: 1\nlimits:\n  memroy: 64MiB\n",
    );
    let out = t.raw(["policy", "check", "p.yaml"]).cwd(&t.root).go();
    out.expect_code(1, "policy check with errors");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.lines()
            .any(|l| l.starts_with("p.yaml:3:1: error:") && l.contains("bogus")),
        "no `p.yaml:3:1: error: ... bogus` line\n{}",
        out.ctx()
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("p.yaml:5:3: error:") && l.contains("memroy")),
        "no `p.yaml:5:3: error: ... memroy` line\n{}",
        out.ctx()
    );
}

#[test]
fn policy_check_malformed_capability_and_warning() {
    let t = TempDir::new("p-check2");
    t.write_root("p.yaml", "grants:\n  - fs:write:/\n  - fs:reed:/tmp\n");
    let out = t.raw(["policy", "check", "p.yaml"]).cwd(&t.root).go();
    out.expect_code(1, "policy check with a malformed capability");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.lines().any(|l| l.starts_with("p.yaml:2:5: warning:")),
        "no over-broad warning at 2:5\n{}",
        out.ctx()
    );
    assert!(
        text.lines().any(|l| l.starts_with("p.yaml:3:5: error:")),
        "no error at 3:5\n{}",
        out.ctx()
    );
}

#[test]
fn policy_check_ok() {
    let t = with_base("p-check-ok");
    let out = t.raw(["policy", "check", "base.yaml"]).cwd(&t.root).go();
    out.expect_code(0, "policy check of a valid policy");
    let out = t.raw(["policy", "check", "/nonexistent/p.yaml"]).go();
    assert_ne!(
        out.code,
        0,
        "policy check of a missing file succeeded\n{}",
        out.ctx()
    );
}

#[test]
fn extends_chain_narrowing_works() {
    let t = with_base("p-extends");
    t.write_root(
        "child.yaml",
        "extends: base.yaml\ngrants:\n  - fs:read:./work/data\nlimits:\n  memory: 64MiB\n",
    );
    t.write_root(
        "grandchild.yaml",
        "extends: child.yaml\nlimits:\n  pids: 8\n",
    );
    let out = t
        .raw(["policy", "check", "grandchild.yaml"])
        .cwd(&t.root)
        .go();
    out.expect_code(0, "policy check of a narrowing chain");
    let out = t
        .run([
            "--policy",
            &policy_arg(&t, "grandchild.yaml"),
            "--",
            "sh",
            "-c",
            "cat data/x.txt; cat secret/s.txt",
        ])
        .go();
    assert_ne!(
        out.code,
        125,
        "a narrowing chain was refused\n{}",
        out.ctx()
    );
    out.expect_stdout_has("policy-data", "the grant the child keeps");
    out.expect_stdout_lacks("policy-secret", "a grant the child dropped");
    let r = out.report();
    assert_eq!(
        r["limits"]["memory_bytes"],
        64 * MIB,
        "the child's memory limit\n{}",
        out.ctx()
    );
    assert_eq!(
        r["limits"]["pids"],
        8,
        "the grandchild's pids limit\n{}",
        out.ctx()
    );
    // The dropped grant cannot be requested back.
    let out = t
        .run([
            "--policy",
            &policy_arg(&t, "grandchild.yaml"),
            "--allow",
            "fs:read:./secret",
            "--",
            "true",
        ])
        .go();
    out.expect_warden_error("a grant the chain dropped");
}

#[test]
fn extends_widening_is_refused() {
    let t = with_base("p-widen");
    t.write_root(
        "wide.yaml",
        "extends: base.yaml\ngrants:\n  - fs:write:./work/data\n",
    );
    t.write_root(
        "wide-limit.yaml",
        "extends: base.yaml\nlimits:\n  memory: 1GiB\n",
    );
    for name in ["wide.yaml", "wide-limit.yaml"] {
        let out = t
            .run([
                "--policy",
                &policy_arg(&t, name),
                "--",
                "sh",
                "-c",
                "echo PROGRAM-RAN",
            ])
            .go();
        out.expect_warden_error(&format!("{name} widens its parent"));
        out.expect_stdout_lacks("PROGRAM-RAN", "a widening policy started the program");
        assert!(
            out.stderr.contains("widens"),
            "message does not say it widens\n{}",
            out.ctx()
        );
        let out = t.raw(["policy", "check", name]).cwd(&t.root).go();
        out.expect_code(1, &format!("policy check {name}"));
        // file:line:column of the widening entry, then the severity.
        let at = if name == "wide.yaml" { "3:5" } else { "3:11" };
        assert!(
            out.stdout.starts_with(&format!("{name}:{at}: error: ")),
            "policy check {name}: location\n{}",
            out.ctx()
        );
    }
}

#[test]
fn circular_extends_is_refused() {
    let t = TempDir::new("p-cycle");
    t.write_root("a.yaml", "extends: b.yaml\nlimits:\n  pids: 4\n");
    t.write_root("b.yaml", "extends: a.yaml\nlimits:\n  pids: 4\n");
    let out = t
        .run(["--policy", &policy_arg(&t, "a.yaml"), "--", "true"])
        .go();
    out.expect_warden_error("circular extends");
    // policy check names the `extends` that closes the cycle.
    let out = t.raw(["policy", "check", "a.yaml"]).cwd(&t.root).go();
    out.expect_code(1, "policy check of a cycle");
    assert!(
        out.stdout.contains("b.yaml:1:10: error: extends") && out.stdout.contains("circular"),
        "policy check of a cycle: location\n{}",
        out.ctx()
    );
}

#[test]
fn a_missing_or_broken_parent_is_named_at_its_extends() {
    let t = TempDir::new("p-parent");
    t.write_root(
        "orphan.yaml",
        "grants: []
extends: nothere.yaml
",
    );
    t.write_root(
        "broken.yaml",
        "grants: [fs:bogus:x]
",
    );
    t.write_root(
        "child.yaml",
        "extends: broken.yaml
",
    );
    for (name, at) in [
        ("orphan.yaml", "orphan.yaml:2:10"),
        ("child.yaml", "child.yaml:1:10"),
    ] {
        let out = t.raw(["policy", "check", name]).cwd(&t.root).go();
        out.expect_code(1, name);
        assert!(
            out.stdout.starts_with(&format!("{at}: error: extends ")),
            "{name}: location\n{}",
            out.ctx()
        );
    }
}

/// A file's stated size is no bound: /proc files say 0, and
/// /proc/self/pagemap reads out hundreds of gigabytes (a policy naming it
/// in `extends` grew Warden by gigabytes). Reads stop at the 1 MiB cap.
#[test]
fn policy_files_are_read_only_up_to_the_cap() {
    let t = TempDir::new("p-procfile");
    t.write_root("big.yaml", "extends: /proc/kallsyms\n");
    t.write_root("pagemap.yaml", "extends: /proc/self/pagemap\n");
    let started = std::time::Instant::now();
    let out = t.raw(["policy", "check", "big.yaml"]).cwd(&t.root).go();
    out.expect_code(1, "extends /proc/kallsyms");
    assert!(
        out.stdout.contains("larger than 1048576 bytes"),
        "{}",
        out.ctx()
    );
    let out = t.raw(["policy", "check", "pagemap.yaml"]).cwd(&t.root).go();
    out.expect_code(1, "extends /proc/self/pagemap");
    let out = t.run(["--policy", "/proc/self/pagemap", "--", "true"]).go();
    out.expect_warden_error("--policy /proc/self/pagemap");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "reading took {:?}",
        started.elapsed()
    );
}

/// Diagnostics to a closed or full stdout: no panic, a defined status.
#[test]
fn policy_check_output_to_a_closed_or_full_stdout() {
    let t = TempDir::new("p-closed-out");
    let grants: String = (0..3000).map(|i| format!("  - fs:bogus:{i}\n")).collect();
    t.write_root("many.yaml", &format!("grants:\n{grants}"));
    let warden = crate::common::warden_bin();
    let out = t.shell(
        "\"$WARDEN\" policy check ../many.yaml | head -1 >/dev/null; echo \"status ${PIPESTATUS[0]}\"",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "status 1\n",
        "{stderr}"
    );
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(&warden)
        .args(["policy", "check", "many.yaml"])
        .current_dir(&t.root)
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("warden: "), "{stderr}");
}
