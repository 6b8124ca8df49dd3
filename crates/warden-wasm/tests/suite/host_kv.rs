//! The `kv` host capability: `kv:read:NS` / `kv:write:NS` (NS or `*`), a
//! store per tenant that outlives runs, bounds as status codes, and no
//! link at all without a kv grant.
use std::sync::OnceLock;

use crate::common::*;
use warden_core::Status;
use warden_wasm::{WasmBackend, WasmConfig};

/// A backend whose key-value stores live in a fresh directory.
fn kv_backend() -> &'static (WasmBackend, TempDir) {
    static B: OnceLock<(WasmBackend, TempDir)> = OnceLock::new();
    B.get_or_init(|| {
        let dir = TempDir::new("kv");
        let config = WasmConfig {
            kv_dir: Some(dir.path().join("stores")),
            ..WasmConfig::default()
        };
        (WasmBackend::with_config(config).expect("backend"), dir)
    })
}

fn kv(tenant: &str, grants: &[&str], commands: &[&str]) -> Ran {
    let mut i = inv(&rust("hostkv"), commands);
    i.capabilities = caps(grants);
    i.tenant = tenant.to_string();
    let (io, out, err) = warden_wasm::RunIo::captured(warden_wasm::Input::Empty);
    let outcome = kv_backend().0.run_with_io(&i, &io).expect("runs");
    Ran {
        outcome,
        stdout: out.text(),
        stderr: err.text(),
    }
}

#[test]
fn values_are_stored_and_outlive_the_run() {
    let r = kv(
        "t-basic",
        &["kv:write:orders"],
        &[
            "set orders a1 one",
            "set orders a2 two",
            "set orders b1 three",
            "get orders a1",
        ],
    );
    r.expect_exited();
    assert_eq!(
        r.stdout,
        "set orders a1 one: rc=0\nset orders a2 two: rc=0\nset orders b1 three: rc=0\nget orders a1: rc=0 value=one\n"
    );
    // A later run (read-only) sees them; a missing key is NOT_FOUND (2).
    let r = kv(
        "t-basic",
        &["kv:read:orders"],
        &[
            "get orders a2",
            "get orders zz",
            "list orders a",
            "list orders a a1",
            "list orders ",
        ],
    );
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(
        r.stdout,
        "get orders a2: rc=0 value=two\nget orders zz: rc=2\nlist orders a: rc=0 keys=a1,a2 more=0\nlist orders a a1: rc=0 keys=a2 more=0\nlist orders : rc=0 keys=a1,a2,b1 more=0\n"
    );
    // Delete: OK once, NOT_FOUND after.
    let r = kv(
        "t-basic",
        &["kv:write:orders"],
        &["del orders a1", "del orders a1", "get orders a1"],
    );
    assert_eq!(
        r.stdout,
        "del orders a1: rc=0\ndel orders a1: rc=2\nget orders a1: rc=2\n"
    );
    // Large values come back whole (the guest retries with a bigger buffer).
    let r = kv(
        "t-basic",
        &["kv:write:orders"],
        &["setbig orders big 100000", "get orders big"],
    );
    assert!(r
        .stdout
        .starts_with("setbig orders big 100000: rc=0\nget orders big: rc=0 value=vvvv"));
    let value = r
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split("value=")
        .nth(1)
        .unwrap();
    assert_eq!(value, "v".repeat(100000));
}

#[test]
fn read_grants_cannot_write_and_namespaces_are_separate() {
    let r = kv(
        "t-ro",
        &["kv:read:orders"],
        &["set orders k v", "get orders k", "get users k"],
    );
    // DENIED (1) for the write and for the other namespace; the missing
    // key in the granted one is NOT_FOUND.
    assert_eq!(
        r.stdout,
        "set orders k v: rc=1\nget orders k: rc=2\nget users k: rc=1\n"
    );
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(0));
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        [
            "warden.kv_get: kv:read:users not granted",
            "warden.kv_set: kv:write:orders not granted"
        ]
    );
    // kv:write:* reaches every namespace.
    let r = kv("t-ro", &["kv:write:*"], &["set users k v", "get users k"]);
    assert_eq!(r.stdout, "set users k v: rc=0\nget users k: rc=0 value=v\n");
    assert!(r.outcome.violations.is_empty());
}

#[test]
fn without_a_kv_grant_the_kv_functions_are_not_even_linked() {
    let r = kv("t-none", &["log:write"], &["get orders k"]);
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains("warden.kv_"), "{error}");
    assert!(error.contains("kv:read:NS or kv:write:NS"), "{error}");
}

#[test]
fn tenants_do_not_see_each_other() {
    let r = kv("alice", &["kv:write:*"], &["set notes k alice's"]);
    assert_eq!(r.stdout, "set notes k alice's: rc=0\n");
    let r = kv("bob", &["kv:write:*"], &["get notes k"]);
    assert_eq!(r.stdout, "get notes k: rc=2\n");
    let dir = kv_backend().1.path().join("stores");
    assert!(dir.join("alice.redb").is_file());
    assert!(dir.join("bob.redb").is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // A tenant name that is not a file name is refused before the run.
    let mut i = inv(&rust("hostkv"), &[]);
    i.capabilities = caps(&["kv:write:*"]);
    i.tenant = "../x".into();
    assert!(kv_backend()
        .0
        .run_with_io(&i, &warden_wasm::RunIo::default())
        .is_err());
}

#[test]
fn bounds_are_status_codes() {
    let long_key = "k".repeat(1025);
    let r = kv(
        "t-bounds",
        &["kv:write:*"],
        &[
            &format!("set ns {long_key} v"),
            "setbig ns big 1048577",
            "set ../x k v",
            "get * k",
        ],
    );
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    let rcs: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    // TOO_LARGE (4) key and value, INVALID (3) namespaces.
    assert_eq!(rcs, ["rc=4", "rc=4", "rc=3", "rc=3"]);
}

#[test]
fn without_a_store_directory_kv_is_unavailable() {
    let mut i = inv(&rust("hostkv"), &["get ns k"]);
    i.capabilities = caps(&["kv:read:ns"]);
    let r = run(&i);
    // UNAVAILABLE (6): the default test backend has no kv_dir.
    assert_eq!(r.stdout, "get ns k: rc=6\n");
}

#[test]
fn a_tenants_store_stops_growing_at_its_cap() {
    let dir = TempDir::new("kv-cap");
    let backend = WasmBackend::with_config(WasmConfig {
        kv_dir: Some(dir.path().join("stores")),
        kv_max_tenant_bytes: 4 << 20,
        ..WasmConfig::default()
    })
    .expect("backend");
    let run = |commands: &[&str]| {
        let mut i = inv(&rust("hostkv"), commands);
        i.capabilities = caps(&["kv:write:ns"]);
        i.tenant = "t-cap".to_string();
        let (io, out, _) = warden_wasm::RunIo::captured(warden_wasm::Input::Empty);
        let outcome = backend.run_with_io(&i, &io).expect("runs");
        (outcome, out.text())
    };
    let sets: Vec<String> = (0..8).map(|n| format!("setbig ns k{n} 1048576")).collect();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let (outcome, stdout) = run(&sets);
    assert_eq!(outcome.status, Status::Exited, "{outcome:?}");
    let rcs: Vec<&str> = stdout
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    // The first megabytes fit; then LIMIT (5), never more than the cap.
    assert_eq!(rcs[0], "rc=0", "{stdout}");
    assert!(rcs.contains(&"rc=5"), "{stdout}");
    let file = dir.path().join("stores/t-cap.redb");
    let size = std::fs::metadata(&file).expect("store file").len();
    assert!(size <= (4 << 20) + (2 << 20), "store grew to {size} bytes");
    // A later run is refused too, and reads still work.
    let (_, stdout) = run(&["setbig ns more 1048576", "get ns k9"]);
    assert!(
        stdout.starts_with("setbig ns more 1048576: rc=5"),
        "{stdout}"
    );
}

/// A store that cannot be opened (here the kv directory is a regular file)
/// answers UNAVAILABLE (6) to the guest and says why in the report's
/// warnings, for the operator.
#[test]
fn an_unavailable_store_is_named_in_the_warnings() {
    let dir = TempDir::new("kv-file");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let backend = WasmBackend::with_config(WasmConfig {
        kv_dir: Some(file.clone()),
        ..WasmConfig::default()
    })
    .expect("backend");
    let mut i = inv(&rust("hostkv"), &["get orders a1"]);
    i.capabilities = caps(&["kv:read:orders"]);
    i.tenant = "t-unavailable".to_string();
    let (io, out, _err) = warden_wasm::RunIo::captured(warden_wasm::Input::Empty);
    let outcome = backend.run_with_io(&i, &io).expect("runs");
    assert_eq!(out.text(), "get orders a1: rc=6\n");
    assert!(
        outcome
            .warnings
            .iter()
            .any(|w| w.contains("key-value store was unavailable") && w.contains("not-a-dir")),
        "{:?}",
        outcome.warnings
    );
}
