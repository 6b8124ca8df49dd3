//! The reusable wasmtime [`Engine`]s and the epoch ticker.
//!
//! Up to four engines, made on first use: with or without fuel metering
//! (an unmetered run must not pay for fuel), and with the pooling allocator
//! or on demand (the pool's slots have a fixed maximum memory size; a
//! memory limit beyond it gets the on-demand engine). Every engine has
//! epoch interruption on: it is how wall-clock and CPU-time limits stop a
//! run (and runs execute on fibers, so that a run blocked in a host call
//! can be abandoned at its deadline). One ticker thread increments every engine's epoch each tick while
//! at least one run is in progress, and sleeps otherwise.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig,
    WasmBacktraceDetails,
};

use crate::run::RunState;
use crate::{WasmConfig, WasmError};

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
        self.ticker.add_engine(slot.engine.clone());
        let _ = cell.set(slot.clone());
        Ok(slot)
    }
}

fn engine_config(config: &WasmConfig, kind: EngineKind) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
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
        let mut pool = PoolingAllocationConfig::new();
        let n = config.pool_instances;
        pool.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .total_component_instances(n)
            .total_stacks(n)
            .table_elements(config.pool_table_elements as usize)
            .linear_memory_keep_resident(config.pool_keep_resident_bytes)
            .table_keep_resident(config.pool_keep_resident_bytes)
            .decommit_batch_size(config.pool_decommit_batch.max(1))
            .pagemap_scan(wasmtime::Enabled::Auto)
            .max_memory_size(config.pool_max_memory_bytes as usize);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
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
    // wasmtime-wasi turns `proc_exit(n)` with n >= 126 into an error;
    // Warden reports every exit status as given, as the jail does.
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
    // Warden's host capabilities (`warden` module) and the gated clocks
    // and randomness.
    crate::host::p1::add_to_linker(&mut linker).map_err(|e| WasmError::Engine {
        kind,
        message: format!("linking Warden's host functions: {e:#}"),
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
    Ok(EngineSlot {
        engine,
        linker,
        component_linker,
    })
}

/// The ticker thread: increments every engine's epoch once per tick while
/// a run is active.
pub(crate) struct Ticker {
    shared: Arc<TickShared>,
    thread: Option<JoinHandle<()>>,
}

struct TickShared {
    state: Mutex<TickState>,
    wake: Condvar,
    engines: Mutex<Vec<Engine>>,
    interval: Duration,
}

struct TickState {
    active: usize,
    /// The ticker waits on `wake` (so a run starting must notify it).
    waiting: bool,
    stop: bool,
}

/// Keeps the ticker running while it lives (one per run).
pub(crate) struct TickGuard<'a> {
    shared: &'a TickShared,
}

impl Ticker {
    fn start(interval: Duration) -> Result<Self, WasmError> {
        let shared = Arc::new(TickShared {
            state: Mutex::new(TickState {
                active: 0,
                waiting: false,
                stop: false,
            }),
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
        let mut st = self.shared.lock_state();
        st.active += 1;
        if st.waiting {
            st.waiting = false;
            self.shared.wake.notify_all();
        }
        TickGuard {
            shared: &self.shared,
        }
    }
}

impl TickShared {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, TickState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TickGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock_state();
        st.active = st.active.saturating_sub(1);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.lock_state().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tick_loop(shared: &TickShared) {
    loop {
        {
            let mut st = shared.lock_state();
            while st.active == 0 && !st.stop {
                st.waiting = true;
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.waiting = false;
            if st.stop {
                return;
            }
        }
        std::thread::sleep(shared.interval);
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
