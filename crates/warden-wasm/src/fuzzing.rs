//! The body and the oracle of the cargo-fuzz targets `wasm_bytes` and
//! `wasm_smith` (fuzz/fuzz_targets/), here so that a test runs it on stable
//! too. Not part of the stable API.
//!
//! Each input is written to a file of its own and run through
//! [`WasmBackend::run_with_io`] exactly as `warden run` would, under small
//! limits (memory, fuel, wall clock, output), with an on-disk compile cache
//! in a temporary directory. Whatever the input, the backend must not panic
//! or hang, must not fail as a backend (only as an outcome), and the
//! outcome must respect every limit: [`Fuzzer::run`] panics if not.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use warden_core::{EffectiveLimits, Invocation, Outcome, Status};

use crate::{Input, RunIo, WasmBackend, WasmConfig};

/// Linear memory (and table) budget of a fuzzed run.
pub const MEMORY: u64 = 16 << 20;
/// Fuel of a fuzzed run.
pub const FUEL: u64 = 2_000_000;
/// Wall-clock limit of a fuzzed run (compile and run each).
pub const WALL: Duration = Duration::from_millis(300);
/// Output cap of a fuzzed run.
pub const OUTPUT: u64 = 4096;
/// An input starting with this prefix is run as a `.cwasm` (the rest of
/// it), to exercise the authentication of precompiled modules.
pub const CWASM_PREFIX: &[u8] = b"CWASM";

/// A backend and a scratch directory for fuzzed modules.
pub struct Fuzzer {
    backend: WasmBackend,
    dir: PathBuf,
    count: AtomicU64,
}

impl Fuzzer {
    /// Makes the scratch directory (under the system's temporary directory)
    /// and a backend with a small pool and a disk cache inside it.
    pub fn new() -> Fuzzer {
        let dir = std::env::temp_dir().join(format!("warden-wasm-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz scratch directory");
        let backend = WasmBackend::with_config(WasmConfig {
            pool_instances: 8,
            pool_max_memory_bytes: 64 << 20,
            cache_dir: Some(dir.join("cache")),
            cache_max_bytes: 64 << 20,
            ..WasmConfig::default()
        })
        .expect("wasm backend");
        Fuzzer {
            backend,
            dir,
            count: AtomicU64::new(0),
        }
    }

    /// Runs `bytes` as a module (`.wasm`, which also takes the text format;
    /// or `.cwasm` after [`CWASM_PREFIX`]) and checks the outcome.
    pub fn run(&self, bytes: &[u8]) -> Outcome {
        let (bytes, ext) = match bytes.strip_prefix(CWASM_PREFIX) {
            Some(rest) => (rest, "cwasm"),
            None => (bytes, "wasm"),
        };
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("m{n}.{ext}"));
        std::fs::write(&path, bytes).expect("write fuzz input");
        let inv = Invocation {
            invocation_id: format!("{n:032x}"),
            argv: vec![path.display().to_string()],
            env: Vec::new(),
            workdir: self.dir.clone(),
            capabilities: Vec::new(),
            limits: EffectiveLimits {
                memory_bytes: MEMORY,
                wall_time: WALL,
                output_bytes: OUTPUT,
                ..EffectiveLimits::default()
            },
            fuel: Some(FUEL),
            deterministic: true,
            ..Invocation::default()
        };
        let (io, out, err) = RunIo::captured(Input::Empty);
        let result = self.backend.run_with_io(&inv, &io);
        let _ = std::fs::remove_file(&path);
        let outcome = match result {
            Ok(o) => o,
            Err(e) => panic!("the backend failed instead of reporting an outcome: {e}"),
        };
        check(&outcome, out.text().len() + err.text().len());
        outcome
    }
}

impl Default for Fuzzer {
    fn default() -> Self {
        Fuzzer::new()
    }
}

impl Drop for Fuzzer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The oracle: every limit held and the outcome is consistent.
fn check(o: &Outcome, output: usize) {
    assert!(
        o.peak_memory_bytes <= MEMORY,
        "memory limit exceeded: {o:?}"
    );
    if let Some(fuel) = o.fuel_consumed {
        assert!(fuel <= FUEL, "fuel limit exceeded: {o:?}");
    }
    assert!(
        output as u64 <= OUTPUT,
        "output cap exceeded: {output} bytes"
    );
    assert!(
        o.stdout_bytes + o.stderr_bytes <= OUTPUT,
        "output cap exceeded: {o:?}"
    );
    // At most the compile's deadline plus the run's, with room for a slow
    // (sanitized, loaded) machine; a real hang is libFuzzer's -timeout.
    let bound = 2 * WALL.as_millis() as u64 + 5_000;
    assert!(o.wall_ms <= bound, "wall-clock limit exceeded: {o:?}");
    match o.status {
        Status::Exited => assert!(o.exit_code.is_some(), "{o:?}"),
        Status::Error => assert!(o.error.is_some(), "an error without a message: {o:?}"),
        Status::Violation => assert!(!o.violations.is_empty(), "{o:?}"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_body_survives_garbage_and_real_modules() {
        let f = Fuzzer::new();
        let hello = br#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hi\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
        let spin = br#"(module (memory (export "memory") 1)
  (func (export "_start") (loop (br 0))))"#;
        let grow = br#"(module (memory (export "memory") 1)
  (func (export "_start") (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))"#;
        assert_eq!(f.run(hello).status, Status::Exited);
        assert_eq!(f.run(spin).status, Status::CpuLimit);
        assert_eq!(f.run(grow).status, Status::MemoryLimit);
        let mut cwasm = CWASM_PREFIX.to_vec();
        cwasm.extend_from_slice(hello);
        assert_eq!(f.run(&cwasm).exit_code, Some(126));
        // Mutations of a valid module, and random bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..40 {
            let mut m = hello.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % m.len();
                m[at] = next() as u8;
            }
            f.run(&m);
            let len = (next() % 64) as usize;
            let mut bytes = b"\0asm\x01\0\0\0".to_vec();
            bytes.extend((0..len).map(|_| next() as u8));
            f.run(&bytes);
        }
    }
}
