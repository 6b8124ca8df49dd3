//! Routing between backends, and `warden run --explain`: the decision and
//! the rule that made it, printed without running anything, and recorded
//! in the report and the ledger entry of a run.

mod common;

use std::process::Command;

use common::{warden_bin, TempDir};

fn warden(dir: &TempDir, args: &[&str]) -> std::process::Output {
    Command::new(warden_bin())
        .arg("--state")
        .arg(dir.root.join("state"))
        .args(args)
        .current_dir(dir.work())
        .output()
        .expect("run warden")
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} line in {out}"))
}

#[test]
fn explain_prints_the_route_grants_limits_and_egress_and_runs_nothing() {
    let dir = TempDir::new("explain");
    let marker = dir.path("ran");
    let hosts = dir.root.join("hosts");
    std::fs::write(&hosts, "11.22.33.44 api.example\n").unwrap();
    let script = format!("touch {}", marker.display());
    let out = Command::new(warden_bin())
        .env("WARDEN_EGRESS_HOSTS", &hosts)
        .arg("--state")
        .arg(dir.root.join("state"))
        .args([
            "run",
            "--explain",
            "--allow",
            "net:connect:api.example:443",
            "--allow",
            "net:limit:bytes:1MiB",
            "--memory",
            "64MiB",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(field(&stdout, "backend"), "jail");
    assert!(
        field(&stdout, "because").contains("native code or a script"),
        "{stdout}"
    );
    assert_eq!(field(&stdout, "grants"), "net:connect:api.example:443");
    let limits = field(&stdout, "limits");
    assert!(
        limits.contains("memory 64 MiB") && limits.contains("net bytes 1 MiB"),
        "{limits}"
    );
    assert_eq!(field(&stdout, "egress"), "api.example -> 11.22.33.44");
    assert!(!marker.exists(), "--explain ran the program");
    // Nothing ran, so nothing was recorded.
    let log = warden(&dir, &["audit", "log"]);
    assert!(
        !String::from_utf8_lossy(&log.stdout).contains("\"kind\":\"run\""),
        "{log:?}"
    );

    let wasm = warden(&dir, &["run", "--explain", "--", "module.wasm"]);
    let stdout = String::from_utf8_lossy(&wasm.stdout);
    assert!(wasm.status.success(), "{wasm:?}");
    assert_eq!(field(&stdout, "backend"), "wasm");
    assert!(field(&stdout, "because").contains(".wasm"), "{stdout}");

    let forced = warden(
        &dir,
        &["run", "--explain", "--backend", "jail", "--", "true"],
    );
    assert_eq!(
        field(&String::from_utf8_lossy(&forced.stdout), "because"),
        "--backend jail"
    );
}

#[test]
fn a_request_the_backend_cannot_honour_is_refused_naming_the_conflict() {
    let dir = TempDir::new("route-conflict");
    let out = warden(&dir, &["run", "--explain", "--fuel", "1000", "--", "true"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--fuel") && stderr.contains("wasm"),
        "{stderr}"
    );
    let out = warden(
        &dir,
        &["run", "--explain", "--backend", "firecracker", "--", "true"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("firecracker"),
        "{out:?}"
    );
    // gVisor takes native code, never a fuel budget.
    let out = warden(
        &dir,
        &["run", "--explain", "--backend", "gvisor", "--", "true"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        field(&String::from_utf8_lossy(&out.stdout), "backend"),
        "gvisor"
    );
    let out = warden(
        &dir,
        &[
            "run",
            "--explain",
            "--backend",
            "gvisor",
            "--fuel",
            "10",
            "--",
            "true",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--fuel"),
        "{out:?}"
    );
}

#[test]
fn the_report_and_the_ledger_entry_name_the_rule_that_chose_the_backend() {
    let dir = TempDir::new("route-report");
    let report = dir.root.join("r.json");
    let out = Command::new(warden_bin())
        .arg("--state")
        .arg(dir.root.join("state"))
        .args(["run", "--report"])
        .arg(&report)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["backend"], "jail");
    let rule = r["routing"].as_str().expect("routing");
    assert!(rule.contains("the jail"), "{rule}");
    let log = warden(&dir, &["audit", "log"]);
    assert!(
        String::from_utf8_lossy(&log.stdout).contains(rule),
        "{log:?}"
    );
}
