//! Malformed and hostile modules: each gives a clear status, never a
//! crash of the host.
use crate::common::*;
use warden_core::Status;

fn assert_trap(name: &str, detail: &str) {
    let r = run(&inv(&wat(name), &[]));
    assert_eq!(
        r.outcome.status,
        Status::Violation,
        "{name}: {:?}",
        r.outcome
    );
    assert_eq!(r.outcome.violations.len(), 1);
    assert_eq!(r.outcome.violations[0].kind, "trap");
    assert!(
        r.outcome.violations[0].detail.contains(detail),
        "{name}: {:?}",
        r.outcome.violations
    );
    assert_eq!(r.outcome.exit_code, None);
    assert_eq!(r.outcome.exit_status(), 134, "a trap exits like a crash");
}

#[test]
fn deep_recursion_is_a_stack_overflow_violation() {
    assert_trap("recursion.wat", "call stack exhausted");
}

#[test]
fn unreachable_is_a_violation() {
    assert_trap("unreachable.wat", "unreachable");
}

#[test]
fn an_out_of_bounds_access_is_a_violation() {
    assert_trap("out_of_bounds.wat", "out of bounds memory access");
}

fn assert_cannot_execute(path: &std::path::Path, needle: &str) {
    let r = run(&inv(path, &[]));
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    assert_eq!(r.outcome.exit_status(), 126);
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains(needle), "{error}");
}

#[test]
fn garbage_bytes_cannot_execute() {
    assert_cannot_execute(&wat("garbage.wasm"), "invalid module");
    assert_cannot_execute(&wat("garbage_header.wasm"), "invalid module");
    let dir = TempDir::new("garbage");
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"").unwrap();
    assert_cannot_execute(&empty, "invalid module");
    // Pseudo-random bytes after a valid header, many times.
    let mut state = 0x1234_5678_9abc_def0u64;
    for n in 0..50 {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        for _ in 0..(n * 7 + 3) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state as u8);
        }
        let path = dir.path().join(format!("g{n}.wasm"));
        std::fs::write(&path, &bytes).unwrap();
        let r = run(&inv(&path, &[]));
        assert_eq!(r.outcome.status, Status::Error, "{n}: {:?}", r.outcome);
    }
}

#[test]
fn a_module_without_start_cannot_execute() {
    assert_cannot_execute(&wat("no_start.wat"), "_start");
}

#[test]
fn an_unknown_import_is_not_linked() {
    assert_cannot_execute(&wat("unknown_import.wat"), "secret_get");
}

#[test]
fn a_missing_module_is_not_found() {
    let r = run(&inv(std::path::Path::new("/nonexistent/m.wasm"), &[]));
    assert_eq!(r.outcome.status, Status::Error);
    assert_eq!(r.outcome.exit_code, Some(127));
}

#[test]
fn a_directory_is_not_a_module() {
    let dir = TempDir::new("dirmod");
    let d = dir.path().join("d.wasm");
    std::fs::create_dir(&d).unwrap();
    let r = run(&inv(&d, &[]));
    assert_eq!(r.outcome.status, Status::Error);
    assert_eq!(r.outcome.exit_code, Some(126));
}

#[test]
fn a_component_without_run_cannot_execute() {
    let dir = TempDir::new("component");
    let c = dir.path().join("c.wasm");
    std::fs::write(&c, b"\0asm\x0d\0\x01\0").unwrap();
    assert_cannot_execute(&c, "not a WASI command component");
}

/// A host call that aborts the guest with an error (not an errno) because
/// of the guest's arguments is the guest's violation, not Warden's error:
/// exit 134, the cause named, never status `error` / exit 125.
#[test]
fn a_host_call_aborted_by_bad_arguments_is_a_violation() {
    let dir = std::env::temp_dir().canonicalize().unwrap();
    let mut i = inv(&wat("bad_rights.wat"), &[]);
    i.capabilities = caps(&[&format!("fs:read:{}", dir.display())]);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_status(), 134, "{:?}", r.outcome);
    assert_eq!(r.outcome.violations[0].kind, "trap");
    assert!(
        r.outcome.violations[0]
            .detail
            .starts_with("host call failed: "),
        "{:?}",
        r.outcome.violations
    );
}
