//! Red team, host memory: whatever lengths a guest passes, the host never
//! allocates more than a call's cap (1 MiB and a little) on its behalf —
//! not for a preview-1 module's pointer and length, not for a component's
//! strings and lists (which a host must not copy whole before checking
//! their size: a list of N header pairs costs the host several times what
//! it costs the guest). A test binary of its own: a counting allocator
//! watches every allocation of the process.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use warden_wasm::{Input, RunIo, WasmBackend, WasmConfig};

/// The system allocator, recording the largest allocation it was asked for.
struct Watching;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Watching = Watching;

/// Well above every cap of the host functions (1 MiB values, bodies,
/// inputs and replies, 4 KiB + secrets of a log record), well below what
/// the guests pass.
const MOST: usize = 8 << 20;

#[test]
fn guest_lengths_never_size_a_host_allocation() {
    // Build and compile first: the compiler may allocate a lot.
    let wit = component("redteam_wit");
    let echo = rust("cat");
    let tmp = TempDir::new("redteam-alloc");
    let backend = WasmBackend::with_config(WasmConfig {
        kv_dir: Some(tmp.path().join("kv")),
        ..WasmConfig::default()
    })
    .expect("backend");
    // Two lists of n bytes in one call stay under wasmtime's own per-call
    // transfer budget (128 MiB), past which the call would trap.
    let n: usize = 48 << 20;
    let mut i = inv(&wit, &[]);
    i.argv.extend([
        format!("log {n}"),
        format!("body {n} http://127.0.0.1:9/"),
        "headers 1000000 http://127.0.0.1:9/".to_string(),
        format!("header X|{}|http://127.0.0.1:9/", "v".repeat(100_000)),
        format!("kvbig {n}"),
        format!("callbig {n} echo"),
    ]);
    i.capabilities = caps(&[
        "log:write",
        "net:http:127.0.0.1",
        "kv:write:*",
        "module:call:echo",
    ]);
    i.modules = vec![warden_core::ModuleRef {
        name: "echo".into(),
        path: echo.clone(),
        grants: None,
    }];
    i.limits.memory_bytes = 1 << 30;
    let kind = backend.engine_kind(&i);
    backend.prepare(&wit, kind).expect("prepare");
    backend.prepare(&echo, kind).expect("prepare");

    LARGEST.store(0, Ordering::Relaxed);
    let (io, out, err) = RunIo::captured(Input::Empty);
    let outcome = backend.run_with_io(&i, &io).expect("runs");
    let largest = LARGEST.load(Ordering::Relaxed);
    assert_eq!(
        out.text(),
        "Ok\nErr(too-large)\nErr(too-large)\nErr(too-large)\n\
         Err(too-large) Err(too-large) Err(too-large) Err(too-large) Err(too-large)\n\
         Err(too-large) Err(too-large)\n",
        "{outcome:?} {}",
        err.text()
    );
    assert!(
        largest <= MOST,
        "the host allocated {largest} bytes at once for a guest"
    );

    // A preview-1 module passing 64 MiB (all in bounds) to each function:
    // its exit status is the sum of the codes (log OK 0, then TOO_LARGE 4
    // from kv_set, http_request and call).
    let p1 = tmp.path().join("p1.wat");
    std::fs::write(
        &p1,
        r#"(module
  (import "warden" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "warden" "kv_set" (func $kv_set (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "warden" "http_request" (func $http (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "warden" "call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1100)
  (data (i32.const 0) "nskGEThttp://127.0.0.1:9/echo")
  (func (export "_start")
    (call $proc_exit
      (i32.add
        (i32.add
          (call $log (i32.const 2) (i32.const 4096) (i32.const 67108864))
          (call $kv_set (i32.const 0) (i32.const 2) (i32.const 2) (i32.const 1)
                        (i32.const 4096) (i32.const 67108864)))
        (i32.add
          (call $http (i32.const 3) (i32.const 3) (i32.const 6) (i32.const 23)
                      (i32.const 0) (i32.const 0) (i32.const 4096) (i32.const 67108864)
                      (i32.const 1024) (i32.const 16) (i32.const 1040) (i32.const 1044))
          (call $call (i32.const 29) (i32.const 4) (i32.const 4096) (i32.const 67108864)
                      (i32.const 1024) (i32.const 16) (i32.const 1040) (i32.const 1044)))))))"#,
    )
    .unwrap();
    let mut i = inv(&p1, &[]);
    i.capabilities = caps(&[
        "log:write",
        "net:http:127.0.0.1",
        "kv:write:*",
        "module:call:echo",
    ]);
    i.limits.memory_bytes = 1 << 30;
    backend
        .prepare(&p1, backend.engine_kind(&i))
        .expect("prepare");
    LARGEST.store(0, Ordering::Relaxed);
    let (io, _, _) = RunIo::captured(Input::Empty);
    let outcome = backend.run_with_io(&i, &io).expect("runs");
    let largest = LARGEST.load(Ordering::Relaxed);
    assert_eq!(outcome.exit_code, Some(12), "{outcome:?}");
    assert!(
        largest <= MOST,
        "the host allocated {largest} bytes at once for a guest"
    );
}
