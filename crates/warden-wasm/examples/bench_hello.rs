//! Per-invocation cost of a WASI hello through Warden's library API, beside
//! raw wasmtime in the same run.
//!
//! Measured per variant: one run's latency (median, p99) on one thread,
//! then runs per second on 1 and 2 threads. Variants:
//! * `warden run_with_io`: `WasmBackend::run_with_io` from the module's
//!   path (module-cache lookup, grants, WASI context, store, limiter,
//!   epoch deadline, instantiate, `_start`, drop, outcome);
//! * `warden run_prepared`: the same from an already prepared module;
//! * `raw wasmtime (default pooling)`: instantiate + `_start` + drop with
//!   wasmtime's default pooling allocator and an empty WASI context;
//! * `raw wasmtime (Warden's pool settings)`: the same with exactly the
//!   pool settings Warden uses (slot count and sizes, pages reset in place,
//!   `PAGEMAP_SCAN`): the reference of the 1.2× bar;
//! * `raw wasmtime, async + epoch`: the same engine with what Warden's
//!   engine adds for its limits (epoch interruption, guest on a fiber so a
//!   blocked host call can be abandoned), an epoch deadline set, called
//!   through wasmtime-wasi's async preview-1 functions on its tokio runtime:
//!   what of Warden's cost is wasmtime's.
//!
//! Usage: cargo run --release -p warden-wasm --example bench_hello [-- MODULE.wasm [RUNS]]
//! (default: the Rust hello built by tests-guests/build.sh, 20000 runs).
//! WARDEN_BENCH_KEEP_RESIDENT, WARDEN_BENCH_DECOMMIT_BATCH and
//! WARDEN_BENCH_POOL vary Warden's pool settings; WARDEN_BENCH_ONLY=TEXT
//! measures only the variants whose name contains TEXT.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use warden_core::{EffectiveLimits, Invocation, Status};
use warden_wasm::{Input, Output, RunIo, WasmBackend, WasmConfig};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

fn main() {
    let mut args = std::env::args().skip(1);
    let module = args
        .next()
        .filter(|a| !a.is_empty())
        .map(|m| std::fs::canonicalize(&m).unwrap_or_else(|e| panic!("{m}: {e}")))
        .unwrap_or_else(default_module);
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);

    let mut config = WasmConfig::default();
    let env = |name: &str| -> Option<usize> { std::env::var(name).ok()?.parse().ok() };
    if let Some(v) = env("WARDEN_BENCH_KEEP_RESIDENT") {
        config.pool_keep_resident_bytes = v;
    }
    if let Some(v) = env("WARDEN_BENCH_DECOMMIT_BATCH") {
        config.pool_decommit_batch = v;
    }
    if let Some(v) = env("WARDEN_BENCH_POOL") {
        config.pool_instances = v as u32;
    }
    // What a one-run process pays before its first run: a backend with a
    // pool of a CLI's size (32 slots) and one without a pool, each made and
    // dropped in this process (so warm caches; the first of each is left
    // out).
    for (label, pool) in [("32-slot pool", 32u32), ("no pool (on demand)", 0)] {
        let mut times: Vec<Duration> = (0..6)
            .map(|_| {
                let t = Instant::now();
                let b = WasmBackend::with_config(WasmConfig {
                    pool_instances: pool,
                    ..config.clone()
                })
                .expect("wasm backend");
                drop(b);
                t.elapsed()
            })
            .skip(1)
            .collect();
        times.sort();
        println!(
            "backend made and dropped, {label}: median {:.0} µs",
            us(times[times.len() / 2])
        );
    }
    let backend = WasmBackend::with_config(config.clone()).expect("wasm backend");
    let inv = Invocation {
        invocation_id: "0".repeat(32),
        argv: vec![module.display().to_string()],
        env: Vec::new(),
        workdir: PathBuf::from("/"),
        capabilities: Vec::new(),
        limits: EffectiveLimits::default(),
        fuel: None,
        deterministic: false,
        ..Invocation::default()
    };
    let io = RunIo {
        stdin: Input::Empty,
        stdout: Output::Discard,
        stderr: Output::Discard,
    };
    let check = backend.run_with_io(&inv, &io).expect("run");
    assert_eq!(check.status, Status::Exited, "{check:?}");
    assert!(check.stdout_bytes > 0);
    let prepared = backend
        .prepare(&module, backend.engine_kind(&inv))
        .expect("prepare");

    let raw_default = raw_pre(&module, PoolingAllocationConfig::new(), None);
    let raw_tuned = raw_pre(&module, config.pooling_config(), None);
    let raw_async = raw_pre(&module, config.pooling_config(), Some(&config));

    println!("module: {}, {runs} runs per measurement", module.display());
    println!("{config:?}");
    println!(
        "{:<40} {:>10} {:>10} {:>12} {:>12}",
        "variant", "median µs", "p99 µs", "1 thr run/s", "2 thr run/s"
    );
    let warden_path = || {
        let o = backend.run_with_io(&inv, &io).expect("run");
        debug_assert_eq!(o.status, Status::Exited);
    };
    let warden_prepared = || {
        let o = backend.run_prepared(&prepared, &inv, &io).expect("run");
        debug_assert_eq!(o.status, Status::Exited);
    };
    let raw1 = || raw_run(&raw_default);
    let raw2 = || raw_run(&raw_tuned);
    let raw3 = || raw_run_async(&raw_async);
    let prepared_us = measure("warden run_prepared", runs, &warden_prepared);
    measure("warden run_with_io", runs, &warden_path);
    let raw_us = measure("raw wasmtime (Warden's pool settings)", runs, &raw2);
    measure("raw wasmtime, async + epoch", runs, &raw3);
    measure("raw wasmtime (default pooling)", runs, &raw1);
    if let (Some(w), Some(r)) = (prepared_us, raw_us) {
        println!(
            "warden run_prepared / raw wasmtime (Warden's pool settings), medians: {:.2}x (bar: 1.2x)",
            w / r
        );
    }
}

/// Prints one row; returns the median in µs.
fn measure(label: &str, runs: usize, f: &(dyn Fn() + Sync)) -> Option<f64> {
    // WARDEN_BENCH_ONLY=text: only the variants whose label contains it.
    if let Ok(only) = std::env::var("WARDEN_BENCH_ONLY") {
        if !label.contains(&only) {
            return None;
        }
    }
    for _ in 0..1000 {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let throughput = |threads: usize| {
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..runs {
                        f();
                    }
                });
            }
        });
        (threads * runs) as f64 / t.elapsed().as_secs_f64()
    };
    let one = throughput(1);
    let two = throughput(2);
    println!(
        "{label:<40} {:>10.1} {:>10.1} {:>12.0} {:>12.0}",
        us(pct(0.5)),
        us(pct(0.99)),
        one,
        two
    );
    Some(us(pct(0.5)))
}

/// `warden`: Warden's engine settings (epoch interruption, stack sizes) and
/// wasmtime-wasi's async functions; else wasmtime's defaults and its
/// synchronous ones.
fn raw_pre(
    module: &Path,
    pool: PoolingAllocationConfig,
    warden: Option<&WasmConfig>,
) -> InstancePre<WasiP1Ctx> {
    let mut c = Config::new();
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(config) = warden {
        c.epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .async_stack_size(config.max_wasm_stack + (512 << 10))
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    }
    let engine = Engine::new(&c).expect("engine");
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    if warden.is_some() {
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |t| t).expect("link WASI");
    } else {
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |t| t).expect("link WASI");
    }
    let m = Module::from_file(&engine, module).expect("compile");
    linker.instantiate_pre(&m).expect("instantiate_pre")
}

fn raw_run(pre: &InstancePre<WasiP1Ctx>) {
    let ctx = WasiCtxBuilder::new().build_p1();
    let mut store = Store::new(pre.module().engine(), ctx);
    let instance = pre.instantiate(&mut store).expect("instantiate");
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .expect("_start");
    if let Err(e) = start.call(&mut store, ()) {
        let exit = e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0);
        assert_eq!(exit, Some(0), "{e:#}");
    }
}

fn raw_run_async(pre: &InstancePre<WasiP1Ctx>) {
    let ctx = WasiCtxBuilder::new().build_p1();
    let mut store = Store::new(pre.module().engine(), ctx);
    store.set_epoch_deadline(1 << 40);
    let result = wasmtime_wasi::runtime::in_tokio(async {
        let instance = pre.instantiate_async(&mut store).await?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call_async(&mut store, ()).await
    });
    if let Err(e) = result {
        let exit = e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0);
        assert_eq!(exit, Some(0), "{e:#}");
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn default_module() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("sh")
        .arg(root.join("tests-guests/build.sh"))
        .output()
        .expect("run tests-guests/build.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        .join("wasm32-wasip1/release/hello.wasm")
}
