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
//!   wasmtime's default pooling allocator and a WASI context with nothing
//!   but the program's argv (the module's path, as Warden's and as
//!   `wasmtime run` give it: the guest's start-up reads it either way);
//! * `raw wasmtime (Warden's pool settings)`: the same with exactly the
//!   pool settings Warden uses (slot count and sizes, pages reset in place,
//!   `PAGEMAP_SCAN`): the reference of the 1.2× bar;
//! * `raw wasmtime, sync + epoch`: the pool settings and engine settings of
//!   Warden (epoch interruption compiled in, stack sizes) with an epoch
//!   deadline set, synchronous calls: what Warden's own run of a module
//!   that cannot block (no fiber) asks of wasmtime;
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

    let raw_default = raw_pre(&module, PoolingAllocationConfig::new(), None, false);
    let raw_tuned = raw_pre(&module, config.pooling_config(), None, false);
    let raw_epoch = raw_pre(&module, config.pooling_config(), Some(&config), false);
    let raw_async = raw_pre(&module, config.pooling_config(), Some(&config), true);

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
    let argv = &inv.argv;
    let raw1 = || raw_run(&raw_default, argv, false);
    let raw2 = || raw_run(&raw_tuned, argv, false);
    let raw3 = || raw_run_async(&raw_async, argv);
    let raw4 = || raw_run(&raw_epoch, argv, true);
    let variants: [(&str, &(dyn Fn() + Sync)); 6] = [
        ("warden run_prepared", &warden_prepared),
        ("warden run_with_io", &warden_path),
        (REFERENCE, &raw2),
        ("raw wasmtime, sync + epoch", &raw4),
        ("raw wasmtime, async + epoch", &raw3),
        ("raw wasmtime (default pooling)", &raw1),
    ];
    // WARDEN_BENCH_ONLY=text: only the variants whose label contains it.
    let only = std::env::var("WARDEN_BENCH_ONLY").ok();
    let chosen: Vec<(&str, &(dyn Fn() + Sync))> = variants
        .into_iter()
        .filter(|(label, _)| only.as_ref().is_none_or(|o| label.contains(o.as_str())))
        .collect();
    let latencies = interleaved_latencies(&chosen, runs);
    let mut medians = Vec::new();
    for ((label, f), mut times) in chosen.iter().zip(latencies) {
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "{label:<40} {:>10.2} {:>10.2} {:>12.0} {:>12.0}",
            us(pct(0.5)),
            us(pct(0.99)),
            throughput(*f, runs, 1),
            throughput(*f, runs, 2)
        );
        medians.push((*label, us(pct(0.5))));
    }
    let median_of = |l: &str| medians.iter().find(|(x, _)| *x == l).map(|(_, m)| *m);
    if let (Some(w), Some(r)) = (median_of("warden run_prepared"), median_of(REFERENCE)) {
        println!(
            "warden run_prepared / {REFERENCE}, medians: {:.2}x (bar: 1.2x)",
            w / r
        );
    }
}

/// The reference of the 1.2x bar.
const REFERENCE: &str = "raw wasmtime (Warden's pool settings)";

/// One run's latency, `runs` times for each variant, taken in rounds that
/// visit every variant in turn (after a warm-up of each), so that a
/// machine that is slower for a while (other tenants of the host) weighs
/// on all variants alike rather than on whichever was measured then.
fn interleaved_latencies(
    variants: &[(&str, &(dyn Fn() + Sync))],
    runs: usize,
) -> Vec<Vec<Duration>> {
    const ROUNDS: usize = 20;
    for (_, f) in variants {
        for _ in 0..1000 {
            f();
        }
    }
    let mut times: Vec<Vec<Duration>> = variants.iter().map(|_| Vec::with_capacity(runs)).collect();
    for round in 0..ROUNDS {
        let n = runs / ROUNDS + usize::from(round < runs % ROUNDS);
        for ((_, f), t) in variants.iter().zip(times.iter_mut()) {
            for _ in 0..n {
                let start = Instant::now();
                f();
                t.push(start.elapsed());
            }
        }
    }
    times
}

/// Runs per second of `f` on `threads` threads, `runs` each.
fn throughput(f: &(dyn Fn() + Sync), runs: usize, threads: usize) -> f64 {
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
}

/// `warden`: Warden's engine settings (epoch interruption, stack sizes),
/// else wasmtime's defaults; `async_wasi`: wasmtime-wasi's async functions,
/// else its synchronous ones.
fn raw_pre(
    module: &Path,
    pool: PoolingAllocationConfig,
    warden: Option<&WasmConfig>,
    async_wasi: bool,
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
    if async_wasi {
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |t| t).expect("link WASI");
    } else {
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |t| t).expect("link WASI");
    }
    let m = Module::from_file(&engine, module).expect("compile");
    linker.instantiate_pre(&m).expect("instantiate_pre")
}

/// Instantiate + `_start` + drop; `epoch`: with an epoch deadline set (on
/// an engine with epochs).
fn raw_run(pre: &InstancePre<WasiP1Ctx>, argv: &[String], epoch: bool) {
    let ctx = WasiCtxBuilder::new().args(argv).build_p1();
    let mut store = Store::new(pre.module().engine(), ctx);
    if epoch {
        store.set_epoch_deadline(1 << 40);
    }
    let instance = pre.instantiate(&mut store).expect("instantiate");
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .expect("_start");
    if let Err(e) = start.call(&mut store, ()) {
        let exit = e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0);
        assert_eq!(exit, Some(0), "{e:#}");
    }
}

fn raw_run_async(pre: &InstancePre<WasiP1Ctx>, argv: &[String]) {
    let ctx = WasiCtxBuilder::new().args(argv).build_p1();
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
