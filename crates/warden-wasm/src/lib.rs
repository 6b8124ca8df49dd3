//! Warden's WebAssembly backend: WASI preview-1 modules and WASI 0.2
//! (preview-2) command components (`.wasm`, `.wat`, precompiled `.cwasm`)
//! run in-process on wasmtime with no ambient authority.
//!
//! * **Deny by default.** No preopened directory, no environment variable
//!   and no argument beyond the invocation's; `fs:read`/`fs:write` grants
//!   become preopened directories at the same guest path (read-only where
//!   only read is granted; wasmtime-wasi's cap-std keeps every path, `..`
//!   and symlink inside them; a grant that is itself reached through a
//!   symlink is refused, as in the jail). Other capabilities are refused
//!   by name until the backend supports them. Stdin is the caller's;
//!   stdout and stderr go to the caller's through one shared byte cap.
//! * **Limits.** `memory` → a resource limiter over linear memories and
//!   tables; `wall_time` → an epoch deadline (a ticker thread advances the
//!   epoch every millisecond while runs are active) for a guest running
//!   wasm code, and a timer for one blocked in a host call (runs execute
//!   on wasmtime fibers, so a blocked call is abandoned); `cpu_time` → the
//!   thread's CPU clock checked at each epoch tick; `cpu_percent` → the
//!   same tick sleeps off CPU used beyond the share; `fuel` → wasmtime
//!   fuel, in a separate engine so unmetered runs do not pay for it;
//!   `output_bytes` → the stdio cap. A trap is a `violation`, never a
//!   crash; `proc_exit(n)` is `exited` with code `n`.
//! * **Prepared once.** Engines (pooling allocator when the memory limit
//!   fits a pool slot) and the WASI linkers are made once per backend;
//!   modules are compiled once per file version and engine.
//! * **Threads.** [`WasmBackend`] is `Send + Sync` and cheap to clone; runs
//!   on several threads at once are fine. A run blocks its thread; from
//!   async code call it on a blocking thread (`spawn_blocking`).
#![deny(unsafe_code)]

mod deterministic;
mod engines;
mod limiter;
mod module;
mod output;
mod run;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use warden_core::{Backend, BackendError, Invocation, Outcome, Status};

pub use deterministic::{FIXED_WALL_CLOCK, MONOTONIC_STEP_NS, SEED as DETERMINISTIC_SEED};
pub use engines::EngineKind;
pub use module::{ModuleFormat, PreparedModule, MAX_MODULE_BYTES};
pub use output::{Input, Output, RunIo, SharedBuffer};

/// Settings of a [`WasmBackend`], fixed when it is made.
#[derive(Clone, Debug)]
pub struct WasmConfig {
    /// Instances (and memories, tables) each pooling engine holds; `0`
    /// turns the pooling allocator off.
    pub pool_instances: u32,
    /// Largest linear memory of a pool slot. Runs whose memory limit is
    /// larger use an on-demand engine.
    pub pool_max_memory_bytes: u64,
    /// Elements of a pool slot's table (a run's tables cannot grow past
    /// it in a pooling engine; on demand, tables are capped at a memory
    /// limit's worth of 8-byte elements).
    pub pool_table_elements: u32,
    /// Bytes of each pooled linear memory (and table) reset in place on
    /// reuse (only the pages a run dirtied, found with the `PAGEMAP_SCAN`
    /// ioctl where the kernel has it, Linux 6.7+) instead of returned to
    /// the kernel with `madvise`: fewer system calls and TLB shootdowns,
    /// which is what limits throughput on several threads.
    pub pool_keep_resident_bytes: usize,
    /// Decommits the pooling allocator batches before making them.
    pub pool_decommit_batch: usize,
    /// Epoch tick: the granularity of wall-clock and CPU-time deadlines.
    pub epoch_tick: Duration,
    /// Maximum wasm stack of a run (wasmtime's `max_wasm_stack`).
    pub max_wasm_stack: usize,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            pool_instances: 256,
            // All a 32-bit memory can address: every wasm32 run fits.
            pool_max_memory_bytes: 4 << 30,
            pool_table_elements: 20_000,
            pool_keep_resident_bytes: 1 << 20,
            pool_decommit_batch: 1,
            epoch_tick: Duration::from_millis(1),
            max_wasm_stack: 512 << 10,
        }
    }
}

/// Why the backend could not run a module (as opposed to a module that
/// ran and failed, which is an [`Outcome`]).
#[derive(Debug, Error)]
pub enum WasmError {
    #[error("creating the wasmtime engine ({kind:?}): {message}")]
    Engine { kind: EngineKind, message: String },
    #[error("starting the epoch ticker thread: {0}")]
    Ticker(#[source] std::io::Error),
    #[error("{}: {source}", path.display())]
    NotFound {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid module: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}: cannot link: {message}", path.display())]
    Link { path: PathBuf, message: String },
    #[error("capability {0} is not supported by the wasm backend yet")]
    Unsupported(String),
    #[error("grant {grant}: {message}")]
    Grant { grant: String, message: String },
    #[error("no module given (argv is empty)")]
    NoModule,
    #[error("setting up the store: {0}")]
    Store(String),
    #[error("module {module} was prepared for another engine (metered: {metered}); prepare it for this invocation")]
    WrongEngine { module: String, metered: bool },
}

impl From<WasmError> for BackendError {
    fn from(e: WasmError) -> Self {
        match e {
            WasmError::Ticker(source) => BackendError::setup("wasm epoch ticker", source),
            WasmError::Engine { .. } => BackendError::Unavailable("wasm".into(), e.to_string()),
            other => BackendError::Invalid(other.to_string()),
        }
    }
}

struct Inner {
    engines: engines::Engines,
    cache: module::ModuleCache,
}

/// The wasm backend. Cheap to clone; clones share engines, the module
/// cache and the epoch ticker. Safe to use from many threads at once.
#[derive(Clone)]
pub struct WasmBackend {
    inner: Arc<Inner>,
}

impl WasmBackend {
    /// A backend with the default settings; makes the unmetered pooling
    /// engine and starts the (idle) epoch ticker.
    pub fn new() -> Result<Self, BackendError> {
        Self::with_config(WasmConfig::default())
    }

    pub fn with_config(config: WasmConfig) -> Result<Self, BackendError> {
        let engines = engines::Engines::new(config)?;
        // Make the common engine now: a broken host shows at start-up,
        // and the first run does not pay for it.
        let kind = engines.kind_for(warden_core::EffectiveLimits::default().memory_bytes, false);
        engines.get(kind)?;
        Ok(WasmBackend {
            inner: Arc::new(Inner {
                engines,
                cache: module::ModuleCache::default(),
            }),
        })
    }

    pub fn config(&self) -> &WasmConfig {
        self.inner.engines.config()
    }

    /// The engine an invocation runs in.
    pub fn engine_kind(&self, inv: &Invocation) -> EngineKind {
        self.inner
            .engines
            .kind_for(inv.limits.memory_bytes, inv.fuel.is_some())
    }

    /// The module file of an invocation: `argv[0]`, relative to its
    /// working directory.
    pub fn module_path(inv: &Invocation) -> Result<PathBuf, WasmError> {
        let first = inv.argv.first().ok_or(WasmError::NoModule)?;
        Ok(inv.workdir.join(first))
    }

    /// Compiles (or fetches from the cache) the module at `path` for an
    /// engine of `kind`.
    pub fn prepare(&self, path: &Path, kind: EngineKind) -> Result<PreparedModule, WasmError> {
        let slot = self.inner.engines.get(kind)?;
        self.inner.cache.get_or_load(&slot, kind, path)
    }

    /// Compiles `bytes` (a module, binary or text, or a component) to a
    /// `.cwasm` for engines that meter fuel (`metered`) or not. The result
    /// is loadable by the same wasmtime version with the same settings only.
    pub fn precompile(&self, bytes: &[u8], metered: bool) -> Result<Vec<u8>, WasmError> {
        let kind = self.inner.engines.kind_for(
            warden_core::EffectiveLimits::default().memory_bytes,
            metered,
        );
        let slot = self.inner.engines.get(kind)?;
        let compiled = if module::is_component(bytes) {
            slot.engine.precompile_component(bytes)
        } else {
            slot.engine.precompile_module(bytes)
        };
        compiled.map_err(|e| WasmError::Invalid {
            path: PathBuf::from("<bytes>"),
            message: format!("{e:#}"),
        })
    }

    /// Runs an invocation with the given standard streams. Module problems
    /// (missing file, invalid or unlinkable module) are an outcome with
    /// status `error` and exit code 127 or 126, like a failed exec.
    pub fn run_with_io(&self, inv: &Invocation, io: &RunIo) -> Result<Outcome, BackendError> {
        let started = Instant::now();
        let path = Self::module_path(inv)?;
        let kind = self.engine_kind(inv);
        let module = match self.prepare(&path, kind) {
            Ok(m) => m,
            Err(e) => return module_failure(e, started),
        };
        Ok(run::run(&self.inner.engines, &module, inv, io, started)?)
    }

    /// Runs an already prepared module (what a long-lived service does);
    /// `inv.argv[0]` is passed to the guest as given. The module must have
    /// been prepared for [`Self::engine_kind`] of `inv`.
    pub fn run_prepared(
        &self,
        module: &PreparedModule,
        inv: &Invocation,
        io: &RunIo,
    ) -> Result<Outcome, BackendError> {
        let started = Instant::now();
        if module.kind != self.engine_kind(inv) {
            return Err(WasmError::WrongEngine {
                module: module.path.display().to_string(),
                metered: module.kind.metered,
            }
            .into());
        }
        Ok(run::run(&self.inner.engines, module, inv, io, started)?)
    }
}

/// A module that cannot be run: an outcome like the jail's failed exec.
fn module_failure(e: WasmError, started: Instant) -> Result<Outcome, BackendError> {
    let code = match &e {
        WasmError::NotFound { .. } => 127,
        WasmError::Invalid { .. } | WasmError::Link { .. } => 126,
        _ => return Err(e.into()),
    };
    Ok(Outcome {
        exit_code: Some(code),
        wall_ms: started.elapsed().as_millis() as u64,
        error: Some(e.to_string()),
        ..Outcome::with_status(Status::Error)
    })
}

impl Backend for WasmBackend {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        self.run_with_io(inv, &RunIo::default())
    }
}
