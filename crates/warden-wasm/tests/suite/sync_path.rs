//! Runs that cannot block run on the caller's stack, without a fiber
//! (run.rs, `sync_pre`): which runs qualify, and that every limit and gate
//! holds on that path as on the other.
use std::time::{Duration, Instant};

use crate::common::*;
use warden_core::{Invocation, Status};
use warden_policy::Capability;
use warden_wasm::{Input, RunIo};

fn on_caller_stack(inv: &Invocation, io: &RunIo) -> bool {
    let b = backend();
    let module = b
        .prepare(std::path::Path::new(&inv.argv[0]), b.engine_kind(inv))
        .expect("prepare");
    b.runs_on_caller_stack(&module, inv, io).expect("decide")
}

fn captured(stdin: Input) -> RunIo {
    RunIo::captured(stdin).0
}

/// A module that reads stdin once and exits with the errno of the read.
fn reader(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("read.wat");
    std::fs::write(
        &path,
        r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 16))
    (call $proc_exit (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .expect("write module");
    path
}

#[test]
fn modules_that_only_compute_print_and_exit_run_on_the_caller_stack() {
    for name in [
        "hello.wat",
        "spin.wat",
        "clock.wat",
        "random.wat",
        "recursion.wat",
    ] {
        let i = inv(&wat(name), &[]);
        assert!(on_caller_stack(&i, &captured(Input::Empty)), "{name}");
    }
}

#[test]
fn what_can_wait_runs_on_a_fiber() {
    // poll_oneoff can sleep.
    let i = inv(&wat("sleep.wat"), &[]);
    assert!(!on_caller_stack(&i, &captured(Input::Empty)));
    // A preopened directory can hold a FIFO.
    let dir = TempDir::new("sync-preopen");
    let mut i = inv(&wat("hello.wat"), &[]);
    i.capabilities = vec![read(dir.path())];
    assert!(!on_caller_stack(&i, &captured(Input::Empty)));
    // Fuel yields need a fiber.
    let mut i = inv(&wat("hello.wat"), &[]);
    i.fuel = Some(1 << 30);
    assert!(!on_caller_stack(&i, &captured(Input::Empty)));
    // Warden's other host functions (here `call`) can wait.
    let dir = TempDir::new("sync-host");
    let path = dir.path().join("caller.wat");
    std::fs::write(
        &path,
        r#"(module
  (import "warden" "call" (func (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"#,
    )
    .expect("write module");
    let mut i = inv(&path, &[]);
    i.capabilities = vec![Capability::ModuleCall("x".into())];
    assert!(!on_caller_stack(&i, &captured(Input::Empty)));
}

#[test]
fn reading_the_callers_stdin_runs_on_a_fiber_reading_given_bytes_does_not() {
    let dir = TempDir::new("sync-stdin");
    let i = inv(&reader(&dir), &[]);
    assert!(!on_caller_stack(&i, &captured(Input::Inherit)));
    assert!(on_caller_stack(&i, &captured(Input::Bytes(b"x".to_vec()))));
    let r = run_with(&i, Input::Bytes(b"abc".to_vec()));
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(0));
}

#[test]
fn limits_and_gates_hold_on_the_caller_stack() {
    // Wall clock: epochs alone stop a spinning guest.
    let mut i = inv(&wat("spin.wat"), &[]);
    i.limits.wall_time = Duration::from_millis(100);
    assert!(on_caller_stack(&i, &captured(Input::Empty)));
    let t = Instant::now();
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    // CPU time.
    let mut i = inv(&wat("spin.wat"), &[]);
    i.limits.cpu_time = Some(Duration::from_millis(100));
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::CpuLimit, "{:?}", r.outcome);
    // Memory.
    let mut i = inv(&wat("grow_bomb.wat"), &[]);
    i.limits.memory_bytes = 4 << 20;
    assert!(on_caller_stack(&i, &captured(Input::Empty)));
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::MemoryLimit, "{:?}", r.outcome);
    // The clock gate: NOTCAPABLE without clock:read, and a violation.
    let r = run(&inv(&wat("clock.wat"), &[]));
    assert_eq!(r.outcome.exit_code, Some(76), "{:?}", r.outcome);
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    let mut i = inv(&wat("clock.wat"), &[]);
    i.capabilities = vec![Capability::ClockRead];
    assert_eq!(run(&i).outcome.exit_code, Some(0));
    // Deep recursion on a test thread's stack is a trap, not a crash.
    let r = run(&inv(&wat("recursion.wat"), &[]));
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    // Output cap.
    let mut i = inv(&wat("flood.wat"), &[]);
    i.limits.output_bytes = 1000;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::OutputLimit, "{:?}", r.outcome);
    assert!(r.outcome.truncated);
    assert_eq!(r.stdout.len() + r.stderr.len(), 1000);
}
