//! `clock:read` and `random:read`: WASI clocks and randomness only when
//! granted (preview 1: `NOTCAPABLE` and a recorded violation; components:
//! refused before they start if they import clock or random functions);
//! deterministic mode still needs the grants and is reproducible.
use std::time::{Duration, Instant};

use crate::common::*;
use warden_core::Status;

const NOTCAPABLE: i32 = 76;

#[test]
fn the_clock_needs_clock_read() {
    let r = run(&inv(&wat("clock.wat"), &[]));
    assert_eq!(r.outcome.exit_code, Some(NOTCAPABLE), "{:?}", r.outcome);
    assert_eq!(r.outcome.status, Status::Violation);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["wasi_snapshot_preview1.clock_time_get: clock:read not granted"]
    );

    let mut i = inv(&wat("clock.wat"), &[]);
    i.capabilities = caps(&["clock:read"]);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(0));
    assert!(r.outcome.violations.is_empty());
}

#[test]
fn randomness_needs_random_read() {
    let mut i = inv(&wat("random.wat"), &[]);
    i.capabilities = caps(&["clock:read"]);
    let r = run(&i);
    assert_eq!(r.outcome.exit_code, Some(NOTCAPABLE), "{:?}", r.outcome);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["wasi_snapshot_preview1.random_get: random:read not granted"]
    );
    i.capabilities = caps(&["random:read"]);
    let r = run(&i);
    assert_eq!(r.outcome.exit_code, Some(0), "{:?}", r.outcome);
    assert_eq!(r.outcome.status, Status::Exited);
}

#[test]
fn sleeping_waits_on_a_clock_and_needs_clock_read() {
    let t = Instant::now();
    let r = run(&inv(&wat("sleep.wat"), &[]));
    assert!(t.elapsed() < Duration::from_secs(5), "it slept");
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["wasi_snapshot_preview1.poll_oneoff: clock:read not granted"]
    );
}

#[test]
fn a_rust_guest_without_the_grants_fails_and_says_why() {
    let r = run(&inv(&rust("clockrand"), &[]));
    assert_ne!(r.outcome.exit_code, Some(0), "{:?}", r.outcome);
    let denied = violations_of(&r.outcome, "capability");
    assert!(
        denied.iter().any(|d| d.contains("clock:read not granted")),
        "{:?}",
        r.outcome
    );
}

#[test]
fn deterministic_mode_needs_the_grants_and_follows_the_seed() {
    let mut i = inv(&rust("clockrand"), &[]);
    i.deterministic = true;
    assert_ne!(
        run(&i).outcome.exit_code,
        Some(0),
        "ungranted clocks in deterministic mode"
    );

    i.capabilities = caps(&["clock:read", "random:read"]);
    let a = run(&i);
    let b = run(&i);
    assert_eq!(a.outcome.status, Status::Exited, "{:?}", a.outcome);
    assert_eq!(a.stdout, b.stdout);
    assert!(a.stdout.contains(&format!(
        "wall_ns={}",
        warden_wasm::FIXED_WALL_CLOCK.as_nanos()
    )));
    // Another seed, another (but again reproducible) random stream.
    let mut j = i.clone();
    j.deterministic_seed = Some(42);
    let c = run(&j);
    let d = run(&j);
    assert_eq!(c.stdout, d.stdout);
    let hash = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("hash="))
            .unwrap()
            .to_string()
    };
    assert_ne!(hash(&a.stdout), hash(&c.stdout));
}

#[test]
fn a_component_importing_clock_functions_needs_clock_read() {
    let r = run(&inv(&component("clockrand"), &[]));
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains("wasi:clocks/"), "{error}");
    assert!(error.contains("clock:read"), "{error}");

    let mut i = inv(&component("clockrand"), &[]);
    i.capabilities = caps(&["clock:read"]);
    let r = run(&i);
    assert_eq!(r.outcome.exit_code, Some(126), "random is still missing");
    assert!(r.outcome.error.unwrap_or_default().contains("random:read"));

    i.capabilities = caps(&["clock:read", "random:read"]);
    i.deterministic = true;
    let a = run(&i);
    assert_eq!(a.outcome.status, Status::Exited, "{:?}", a.outcome);
    assert_eq!(a.stdout, run(&i).stdout);
}

#[test]
fn components_that_only_name_clock_types_need_no_grant() {
    // readfile imports wasi:clocks/wall-clock for the `datetime` type of
    // the filesystem interface, and no clock function.
    let dir = TempDir::new("clocktype");
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let mut i = inv(
        &component("readfile"),
        &[&dir.path().join("f").display().to_string()],
    );
    i.capabilities = vec![read(dir.path())];
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.stdout, "x");
}
