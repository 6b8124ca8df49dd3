//! The reusable wasmtime [`Engine`]s and the epoch ticker.
//!
//! Up to four engines, made on first use: with or without fuel metering
//! (an unmetered run must not pay for fuel), and with the pooling allocator
//! or on demand (the pool's slots have a fixed maximum memory size; a
//! memory limit beyond it gets the on-demand engine). Runs execute on
//! fibers (wasmtime's async support), so that a run blocked in a host call
//! can be abandoned at its deadline.
//!
//! Each engine pays for one interruption mechanism only (measured in
//! BENCHMARKS.md: epoch checks and fuel counting each cost up to ~50% on
//! call-heavy code, and together twice as much):
//! * **unmetered** engines have epoch interruption: one ticker thread
//!   increments their epoch every tick while runs are in progress (and for
//!   a short while after, so that back-to-back runs do not have to wake
//!   it), and each run's epoch callback checks its deadlines;
//! * **metered** engines (a fuel budget was asked for) have no epoch
//!   checks: the fuel counter they maintain anyway makes the guest yield to
//!   Warden every [`FUEL_YIELD_INTERVAL`] units of fuel, and the run checks
//!   its deadlines there (`run.rs`). wasmtime charges bulk memory and table
//!   operations per byte or element, so the time between two yields stays
//!   bounded (like the time between two epoch checks, it depends on the
//!   code: see the constant).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, WasmBacktraceDetails};

use crate::run::RunState;
use crate::{WasmConfig, WasmError};

/// Units of fuel a metered run executes between two returns to Warden
/// (deadline checks). Typical code runs 10–20 units per nanosecond here
/// (fib, SHA-256: BENCHMARKS.md), so this is 50–100 µs of guest work, and a
/// yield (~0.2 µs) costs under 0.5%; 100,000 cost 2–5% on a tight loop.
/// Code that misses the cache on every load runs far fewer units per
/// nanosecond: its deadline can land tens of milliseconds late.
pub(crate) const FUEL_YIELD_INTERVAL: u64 = 1_000_000;

/// How long the ticker keeps ticking after the last run ended before it
/// sleeps: a run that starts within it does not have to wake the ticker
/// (a futex wake-up and a context switch per run otherwise).
const TICKER_LINGER: Duration = Duration::from_millis(200);

/// Which engine a module is compiled for and run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineKind {
    /// Fuel metering compiled in (`Config::consume_fuel`).
    pub metered: bool,
    /// Instances come from the pooling allocator.
    pub pooled: bool,
}

impl EngineKind {
    fn index(self) -> usize {
        usize::from(self.metered) * 2 + usize::from(self.pooled)
    }
}

/// An engine and the WASI linkers built once for it: preview 1 for core
/// modules, preview 2 for components.
pub(crate) struct EngineSlot {
    pub engine: Engine,
    pub linker: Linker<RunState>,
    /// Synchronous WASI preview 1, for runs that cannot block (see
    /// [`crate::module::SYNC_IMPORTS`]); unmetered engines only (fuel
    /// yields need a fiber).
    pub sync_linker: Option<Linker<RunState>>,
    pub component_linker: wasmtime::component::Linker<RunState>,
}

pub(crate) struct Engines {
    config: WasmConfig,
    slots: [OnceLock<Arc<EngineSlot>>; 4],
    /// Serialises engine creation (at most once per kind).
    creating: Mutex<()>,
    pub ticker: Ticker,
}

impl Engines {
    pub fn new(config: WasmConfig) -> Result<Self, WasmError> {
        let ticker = Ticker::start(config.epoch_tick)?;
        Ok(Engines {
            config,
            slots: Default::default(),
            creating: Mutex::new(()),
            ticker,
        })
    }

    pub fn config(&self) -> &WasmConfig {
        &self.config
    }

    /// The engine kind for a run with this memory limit and fuel setting.
    pub fn kind_for(&self, memory_bytes: u64, metered: bool) -> EngineKind {
        EngineKind {
            metered,
            pooled: self.config.pool_instances > 0
                && memory_bytes <= self.config.pool_max_memory_bytes,
        }
    }

    /// The engine of this kind, made on first use.
    pub fn get(&self, kind: EngineKind) -> Result<Arc<EngineSlot>, WasmError> {
        let cell = &self.slots[kind.index()];
        if let Some(slot) = cell.get() {
            return Ok(slot.clone());
        }
        let _creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = cell.get() {
            return Ok(slot.clone());
        }
        let slot = Arc::new(make_slot(&self.config, kind)?);
        if !kind.metered {
            self.ticker.add_engine(slot.engine.clone());
        }
        let _ = cell.set(slot.clone());
        Ok(slot)
    }
}

fn engine_config(config: &WasmConfig, kind: EngineKind) -> Config {
    let mut c = Config::new();
    // One mechanism per engine: fuel (which also brings the guest back to
    // Warden at regular intervals) or epochs.
    c.epoch_interruption(!kind.metered);
    c.consume_fuel(kind.metered);
    // Backtraces are kept (a trap's report names where it happened) but
    // never depend on the environment.
    c.wasm_backtrace_details(WasmBacktraceDetails::Disable);
    c.max_wasm_stack(config.max_wasm_stack);
    // Runs execute on a fiber (wasmtime's async support) so that a guest
    // blocked in a host call (a sleep, a read of stdin) can be abandoned
    // at its deadline; the fiber's stack holds the wasm stack plus host
    // frames.
    c.async_stack_size(config.max_wasm_stack + (512 << 10));
    if kind.pooled {
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(config.pooling_config()));
    }
    c
}

fn make_slot(config: &WasmConfig, kind: EngineKind) -> Result<EngineSlot, WasmError> {
    let engine = Engine::new(&engine_config(config, kind)).map_err(|e| WasmError::Engine {
        kind,
        message: format!("{e:#}"),
    })?;
    let mut linker: Linker<RunState> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut RunState| &mut s.wasi).map_err(
        |e| WasmError::Engine {
            kind,
            message: format!("linking WASI preview 1: {e:#}"),
        },
    )?;
    plain_proc_exit(&mut linker, kind)?;
    // Warden's host capabilities (`warden` module) and the gated clocks
    // and randomness.
    crate::host::p1::add_to_linker(&mut linker).map_err(|e| WasmError::Engine {
        kind,
        message: format!("linking Warden's host functions: {e:#}"),
    })?;
    // `file_size` and `open_files` on the guest's own files.
    crate::fslimits::add_to_linker(&mut linker).map_err(|e| WasmError::Engine {
        kind,
        message: format!("linking the file limits: {e:#}"),
    })?;

    let mut component_linker = wasmtime::component::Linker::<RunState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(|e| {
        WasmError::Engine {
            kind,
            message: format!("linking WASI preview 2: {e:#}"),
        }
    })?;
    crate::host::component::add_to_linker(&mut component_linker).map_err(|e| {
        WasmError::Engine {
            kind,
            message: format!("linking warden:host: {e:#}"),
        }
    })?;
    let sync_linker = if kind.metered {
        None
    } else {
        let mut sync: Linker<RunState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut sync, |s: &mut RunState| &mut s.wasi).map_err(
            |e| WasmError::Engine {
                kind,
                message: format!("linking synchronous WASI preview 1: {e:#}"),
            },
        )?;
        plain_proc_exit(&mut sync, kind)?;
        crate::host::p1::add_to_sync_linker(&mut sync).map_err(|e| WasmError::Engine {
            kind,
            message: format!("linking Warden's synchronous host functions: {e:#}"),
        })?;
        Some(sync)
    };
    Ok(EngineSlot {
        engine,
        linker,
        sync_linker,
        component_linker,
    })
}

/// wasmtime-wasi turns `proc_exit(n)` with n >= 126 into an error; Warden
/// reports every exit status as given, as the jail does.
fn plain_proc_exit(linker: &mut Linker<RunState>, kind: EngineKind) -> Result<(), WasmError> {
    linker.allow_shadowing(true);
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "proc_exit",
            |status: i32| -> wasmtime::Result<()> { Err(wasmtime_wasi::I32Exit(status).into()) },
        )
        .map_err(|e| WasmError::Engine {
            kind,
            message: format!("linking proc_exit: {e:#}"),
        })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The ticker thread: increments the epoch of every unmetered engine once
/// per tick while a run is active, and for [`TICKER_LINGER`] after.
pub(crate) struct Ticker {
    shared: Arc<TickShared>,
    thread: Option<JoinHandle<()>>,
}

/// Runs in progress, counted in shards (by thread) so that runs on
/// different threads do not contend for one cache line.
struct ActiveRuns {
    shards: [Shard; 16],
}

#[repr(align(128))]
#[derive(Default)]
struct Shard(AtomicUsize);

impl ActiveRuns {
    fn shard(&self) -> &AtomicUsize {
        thread_local! {
            static SHARD: usize = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::thread::current().id().hash(&mut h);
                h.finish() as usize
            };
        }
        &self.shards[SHARD.with(|s| *s) % self.shards.len()].0
    }

    fn any(&self) -> bool {
        self.shards.iter().any(|s| s.0.load(Ordering::SeqCst) > 0)
    }
}

struct TickShared {
    /// Runs in progress. Counted without a lock: starting a run takes the
    /// lock only when the ticker is asleep.
    active: ActiveRuns,
    /// The ticker is asleep (or about to be) on `wake`.
    waiting: AtomicBool,
    stop: AtomicBool,
    /// Held by the ticker from deciding to sleep until it sleeps, and by a
    /// run that wakes it.
    lock: Mutex<()>,
    wake: Condvar,
    engines: Mutex<Vec<Engine>>,
    interval: Duration,
}

/// Keeps the ticker running while it lives (one per run).
pub(crate) struct TickGuard<'a> {
    shard: &'a AtomicUsize,
}

impl Ticker {
    fn start(interval: Duration) -> Result<Self, WasmError> {
        let shared = Arc::new(TickShared {
            active: ActiveRuns {
                shards: Default::default(),
            },
            waiting: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            engines: Mutex::new(Vec::new()),
            interval,
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("warden-wasm-epoch".into())
            .spawn(move || tick_loop(&for_thread))
            .map_err(WasmError::Ticker)?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    fn add_engine(&self, engine: Engine) {
        self.shared
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(engine);
    }

    /// Marks a run as active until the guard is dropped.
    pub fn active(&self) -> TickGuard<'_> {
        let shared = &*self.shared;
        let shard = shared.active.shard();
        shard.fetch_add(1, Ordering::SeqCst);
        // The ticker sets `waiting` and then re-reads `active` before it
        // sleeps (both SeqCst), so either it sees this run or this run sees
        // it waiting and wakes it.
        if shared.waiting.load(Ordering::SeqCst) {
            let _held = shared.lock_state();
            shared.waiting.store(false, Ordering::SeqCst);
            shared.wake.notify_all();
        }
        TickGuard { shard }
    }
}

impl TickShared {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TickGuard<'_> {
    fn drop(&mut self) {
        self.shard.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        {
            let _held = self.shared.lock_state();
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tick_loop(shared: &TickShared) {
    let mut idle_since: Option<Instant> = None;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.active.any() {
            idle_since = None;
        } else {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= TICKER_LINGER {
                let mut held = shared.lock_state();
                shared.waiting.store(true, Ordering::SeqCst);
                while !shared.active.any()
                    && !shared.stop.load(Ordering::SeqCst)
                    && shared.waiting.load(Ordering::SeqCst)
                {
                    held = shared.wake.wait(held).unwrap_or_else(|e| e.into_inner());
                }
                shared.waiting.store(false, Ordering::SeqCst);
                drop(held);
                idle_since = None;
                continue;
            }
        }
        // Sleep on the condition variable rather than `thread::sleep`, so
        // that dropping the backend (at the end of a CLI run) need not wait
        // for the tick to end.
        {
            let held = shared.lock_state();
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            drop(
                shared
                    .wake
                    .wait_timeout(held, shared.interval)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
        for engine in shared
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            engine.increment_epoch();
        }
    }
}
