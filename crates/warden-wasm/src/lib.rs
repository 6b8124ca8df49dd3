//! Warden's WebAssembly backend: WASI preview-1 modules and WASI 0.2
//! (preview-2) command components (`.wasm`, `.wat`, precompiled `.cwasm`)
//! run in-process on wasmtime with no ambient authority.
//!
//! * **Deny by default.** No preopened directory, no environment variable
//!   and no argument beyond the invocation's; `fs:read`/`fs:write` grants
//!   become preopened directories at the same guest path (read-only where
//!   only read is granted; wasmtime-wasi's cap-std keeps every path, `..`
//!   and symlink inside them; a grant that is itself reached through a
//!   symlink is refused, as in the jail); a grant inside the run's
//!   working directory is also preopened under its path relative to it
//!   (`data`), so that `data/in.json` works as in the jail (wasi-libc
//!   resolves relative paths against `/` and matches preopen names with
//!   leading `/` and `./` stripped). Other capabilities are refused
//!   by name until the backend supports them. Stdin is the caller's;
//!   stdout and stderr go to the caller's through one shared byte cap.
//! * **Limits.** `memory` → a resource limiter over linear memories and
//!   tables; `wall_time` → an epoch deadline (a ticker thread advances the
//!   epoch every millisecond while runs are active) for a guest running
//!   wasm code, and a timer for one blocked in a host call (runs execute
//!   on wasmtime fibers, so a blocked call is abandoned); `cpu_time` → the
//!   thread's CPU clock checked at each epoch tick; `cpu_percent` → the
//!   same tick sleeps off CPU used beyond the share; `fuel` → wasmtime
//!   fuel, in a separate engine so unmetered runs do not pay for it (and
//!   without epoch checks: a metered guest yields to Warden every 10⁶
//!   units of fuel, where the same deadlines are checked);
//!   `output_bytes` → the stdio cap (output for the caller's own stdout or
//!   stderr goes through a writer thread, so a reader that stops reading
//!   cannot hold a run past its deadline); `file_size` and `open_files` →
//!   checks in front of wasmtime-wasi's preview-1 file functions (not for
//!   components: reported `not_enforced`). A trap is a `violation`, never a
//!   crash; `proc_exit(n)` is `exited` with code `n`.
//! * **Prepared once.** Engines (pooling allocator when the memory limit
//!   fits a pool slot) and the WASI linkers are made once per backend;
//!   modules are compiled once per content digest and engine: kept in
//!   memory per file version, and on disk across processes.
//! * **Compile cache and `.cwasm` authentication.** A compiled `.wasm` or
//!   `.wat` is stored in [`WasmConfig::cache_dir`] (by default
//!   `$WARDEN_CACHE_DIR`, else `/var/cache/warden/wasm` for root, else
//!   `$XDG_CACHE_HOME/warden/wasm` or `~/.cache/warden/wasm`), named by the
//!   SHA-256 of its content and a fingerprint of the engine (wasmtime
//!   version, fuel, pooling, compiler settings), and tagged with
//!   HMAC-SHA256 under a per-host key kept in the same directory (`key`,
//!   32 random bytes, mode 0600). A load checks the tag, the digest and the
//!   fingerprint before wasmtime's deserializer sees a byte; a bad entry is
//!   deleted and the module recompiled. Entries are written atomically and
//!   evicted least recently used beyond 1,024 entries or
//!   [`WasmConfig::cache_max_bytes`]. A directory that is a symlink, is not
//!   the user's own or is group/other-writable is not used at all.
//!   `warden compile` ([`WasmBackend::precompile`]) seals a `.cwasm` with a
//!   trailer tag under the same key, and only a `.cwasm` whose tag checks out
//!   is loaded: anything else is an invalid module (exit 126), so a `.cwasm`
//!   from elsewhere cannot smuggle in native code.
//! * **Compiles are bounded.** A module is compiled on a worker thread that
//!   the run waits for only until its wall-clock deadline (then the outcome
//!   is `timeout`, exit 124), one compile per module digest at a time and at
//!   most one per core; sources are limited to [`MAX_MODULE_BYTES`].
//! * **Host capabilities.** `log`, `kv`, `http`, `call` and `secret`,
//!   exported as the preview-1 import module `warden` and the WIT package
//!   `warden:host@0.1.0` (wit/host.wit; docs/host.md), each checked against
//!   a capability (`log:write`, `kv:read:NS`/`kv:write:NS`, `net:http:HOST`,
//!   `module:call:NAME`, `secret:NAME`); WASI clocks and randomness need
//!   `clock:read` and `random:read`. A module importing an interface it has
//!   no grant for is refused before it starts (exit status 126); a refused
//!   call is a status code for the guest and a `capability` violation in
//!   the report. `http` requests go where a jailed run's connections may
//!   (`warden_egress`: names resolved once per run, never loopback,
//!   link-local or metadata addresses, private ones only by address), a
//!   refused address is a `net` violation, and every attempt is in the
//!   outcome's `connections`.
//! * **Leased secrets.** A run granted `secret:NAME` must hold its lease
//!   ([`Invocation::secrets`], made by the engine); the guest reads the
//!   value with `secret`, each read checking that the lease is still valid
//!   in the lease store ([`WasmConfig::lease_state_dir`]); with
//!   `secret:NAME:env` it is also the environment variable `SECRET_NAME`.
//!   Stdout and stderr pass through a streaming redactor of every form of
//!   every leased value (`[REDACTED:NAME]`, also across writes) before they
//!   are handed on and hashed; log records, violations, warnings and the
//!   error message are redacted the same way.
//! * **Termination signals.** With [`WasmConfig::interrupt_on_signals`]
//!   (what `warden run` sets), SIGINT, SIGTERM, SIGHUP and SIGQUIT stop the
//!   process's runs (status `error`, `signal`, exit status 128+N), so that
//!   a report is still written; handlers and one watcher thread per
//!   process, nothing per run.
//! * **Threads.** [`WasmBackend`] is `Send + Sync` and cheap to clone; runs
//!   on several threads at once are fine. A run blocks its thread; from
//!   async code call it on a blocking thread (`spawn_blocking`).
#![deny(unsafe_code)]

mod cache;
mod compile;
mod deterministic;
mod engines;
mod fslimits;
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod limiter;
mod module;
mod output;
mod run;
mod signals;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use warden_core::{Backend, BackendError, Invocation, Outcome, Status};

pub use cache::{
    default_dir as default_cache_dir, CacheError, DEFAULT_CACHE_MAX_BYTES, MAX_ARTIFACT_BYTES,
};
pub use deterministic::{FIXED_WALL_CLOCK, MONOTONIC_STEP_NS, SEED as DETERMINISTIC_SEED};
pub use engines::EngineKind;
pub use host::http::HttpConfig;
pub use host::kv::default_kv_dir;
pub use host::{HostCode, P1_MODULE, WIT_PACKAGE};
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
    /// Directory of the on-disk compile cache and of the host key that
    /// authenticates its entries and `.cwasm` files; `None`: no disk cache,
    /// and `.cwasm` files can be neither made nor run. Default:
    /// [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Byte budget of the on-disk compile cache.
    pub cache_max_bytes: u64,
    /// Directory of the key-value stores (`kv` capability), one database
    /// file per tenant, made with mode 0700 on first use. `None`: the `kv`
    /// functions answer `unavailable`.
    pub kv_dir: Option<PathBuf>,
    /// Size of one tenant's database file beyond which `set` is refused
    /// (`limit`): what a tenant's runs can fill on Warden's disk together.
    pub kv_max_tenant_bytes: u64,
    /// Deadline and size caps of the `http` capability.
    pub http: HttpConfig,
    /// The state directory whose lease store (`leases/`, see
    /// [`warden_secrets::LeaseStore`]) holds the leases of
    /// [`Invocation::secrets`]: every `secret` read checks its lease there.
    /// It must be the directory the engine leased in. Default:
    /// [`warden_core::state::default_state_dir`] (what `warden run` uses);
    /// `None`: secret reads answer `unavailable`.
    pub lease_state_dir: Option<PathBuf>,
    /// Stop runs when the process receives SIGINT, SIGTERM, SIGHUP or
    /// SIGQUIT (what `warden run` wants): the run ends within about an
    /// epoch tick with status `error`, `signal` set to the signal and the
    /// error "interrupted by signal N" (exit status 128+N), also when it is
    /// blocked in a host call or waiting for its module to compile. This is
    /// process-wide: the backend installs handlers for these signals once
    /// per process (a watcher thread, no per-run work), and from then on
    /// the first such signal stops every run of the process, current and
    /// later. Off by default: a long-lived service handles its own signals.
    pub interrupt_on_signals: bool,
}

impl WasmConfig {
    /// The pooling allocator of Warden's pooled engines, from these
    /// settings (public so that benchmarks can give raw wasmtime the very
    /// same pool).
    pub fn pooling_config(&self) -> wasmtime::PoolingAllocationConfig {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        let n = self.pool_instances;
        pool.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .total_component_instances(n)
            .total_stacks(n)
            .table_elements(self.pool_table_elements as usize)
            .linear_memory_keep_resident(self.pool_keep_resident_bytes)
            .table_keep_resident(self.pool_keep_resident_bytes)
            .decommit_batch_size(self.pool_decommit_batch.max(1))
            .pagemap_scan(wasmtime::Enabled::Auto)
            .max_memory_size(self.pool_max_memory_bytes as usize);
        pool
    }
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
            cache_dir: cache::default_dir(),
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            kv_dir: None,
            kv_max_tenant_bytes: host::kv::DEFAULT_MAX_TENANT_BYTES,
            http: HttpConfig::default(),
            lease_state_dir: warden_core::state::default_state_dir(),
            interrupt_on_signals: false,
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
    #[error("{}: cannot read the module: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid module: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}: compiling the module did not finish before the wall-clock deadline", path.display())]
    CompileTimeout { path: PathBuf },
    #[error("cannot authenticate precompiled modules: {0}")]
    HostKey(String),
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
    #[error("{}: imports {import}, which needs capability {capability} (not granted)", path.display())]
    UngrantedImport {
        path: PathBuf,
        import: String,
        capability: &'static str,
    },
    #[error("invalid tenant name {0:?} (1-64 ASCII letters, digits, '_', '-', '.', not starting with '-' or '.')")]
    Tenant(String),
    #[error("invalid module name {0:?} (ASCII letters, digits, '_', '-', '.', not starting with '-' or '.')")]
    ModuleName(String),
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
    host: host::HostShared,
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
        if config.interrupt_on_signals {
            signals::watch().map_err(|e| BackendError::setup("watch termination signals", e))?;
        }
        let host = host::HostShared::new(
            config.kv_dir.clone(),
            config.kv_max_tenant_bytes,
            config.http.clone(),
        );
        let engines = engines::Engines::new(config)?;
        // Make the common engine now: a broken host shows at start-up,
        // and the first run does not pay for it.
        let kind = engines.kind_for(warden_core::EffectiveLimits::default().memory_bytes, false);
        engines.get(kind)?;
        Ok(WasmBackend {
            inner: Arc::new(Inner {
                cache: module::ModuleCache::new(engines.config()),
                engines,
                host,
            }),
        })
    }

    pub fn config(&self) -> &WasmConfig {
        self.inner.engines.config()
    }

    pub(crate) fn engines(&self) -> &engines::Engines {
        &self.inner.engines
    }

    pub(crate) fn host_shared(&self) -> &host::HostShared {
        &self.inner.host
    }

    /// Registers a module other modules may call by `name`
    /// (`module:call:NAME`). `grants`: what it asks for (a callee gets
    /// them narrowed to its caller's); `None`: whatever its caller has.
    /// Replaces an earlier registration of the same name. An invocation's
    /// own [`Invocation::modules`] take precedence.
    pub fn register_module(
        &self,
        name: &str,
        path: &Path,
        grants: Option<Vec<warden_policy::Capability>>,
    ) -> Result<(), WasmError> {
        host::call::check_name(name).map_err(|_| WasmError::ModuleName(name.to_string()))?;
        let path = std::fs::canonicalize(path).map_err(|source| WasmError::NotFound {
            path: path.to_path_buf(),
            source,
        })?;
        self.inner
            .host
            .modules
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name.to_string(),
                warden_core::ModuleRef {
                    name: name.to_string(),
                    path,
                    grants,
                },
            );
        Ok(())
    }

    /// The module registered as `name`.
    pub fn registered_module(&self, name: &str) -> Option<warden_core::ModuleRef> {
        self.inner
            .host
            .modules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
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
        self.prepare_until(path, kind, None)
    }

    /// Compiles `bytes` (a module, binary or text, or a component) to a
    /// `.cwasm` for engines that meter fuel (`metered`) or not, sealed with
    /// the host key of [`WasmConfig::cache_dir`]. The result is loadable on
    /// this host (same key), by the same wasmtime version with the same
    /// settings only.
    pub fn precompile(&self, bytes: &[u8], metered: bool) -> Result<Vec<u8>, WasmError> {
        let kind = self.inner.engines.kind_for(
            warden_core::EffectiveLimits::default().memory_bytes,
            metered,
        );
        let slot = self.inner.engines.get(kind)?;
        self.inner
            .cache
            .precompile(&slot, bytes, Path::new("<bytes>"))
    }

    /// [`Self::precompile`] of the module file at `path` (read with the
    /// bound of [`MAX_MODULE_BYTES`]); every error names the file.
    pub fn precompile_file(&self, path: &Path, metered: bool) -> Result<Vec<u8>, WasmError> {
        let bytes = module::read_source(path)?;
        let kind = self.inner.engines.kind_for(
            warden_core::EffectiveLimits::default().memory_bytes,
            metered,
        );
        let slot = self.inner.engines.get(kind)?;
        self.inner.cache.precompile(&slot, &bytes, path)
    }

    /// Runs an invocation with the given standard streams. Module problems
    /// (missing file, invalid or unlinkable module) are an outcome with
    /// status `error` and exit code 127 or 126, like a failed exec.
    pub fn run_with_io(&self, inv: &Invocation, io: &RunIo) -> Result<Outcome, BackendError> {
        let started = Instant::now();
        if let Some(sig) = signals::received() {
            return Ok(interrupted(sig, started));
        }
        let path = Self::module_path(inv)?;
        let kind = self.engine_kind(inv);
        let deadline = started.checked_add(inv.limits.wall_time);
        let module = match self.prepare_until(&path, kind, deadline) {
            Ok(m) => m,
            Err(e) => return module_failure(e, started),
        };
        match run::run(self, &module, inv, io, Some(started)) {
            Ok(o) => Ok(o),
            Err(e) => module_failure(e, started),
        }
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
        if module.kind != self.engine_kind(inv) {
            return Err(WasmError::WrongEngine {
                module: module.path.display().to_string(),
                metered: module.kind.metered,
            }
            .into());
        }
        // The run's clock starts in `run`: nothing before it is the run's.
        match run::run(self, module, inv, io, None) {
            Ok(o) => Ok(o),
            Err(e) => module_failure(e, Instant::now()),
        }
    }

    /// True if a top-level run of `module` with these grants and streams
    /// would run on the calling thread's stack, without a fiber (it cannot
    /// block: see `run::sync_pre`). Such a run needs the calling thread to
    /// have room for `max_wasm_stack` plus the host's frames (Rust's
    /// default 2 MiB for spawned threads is plenty).
    pub fn runs_on_caller_stack(
        &self,
        module: &PreparedModule,
        inv: &Invocation,
        io: &RunIo,
    ) -> Result<bool, BackendError> {
        let preopens = run::preopens_for(inv, &module.path)?;
        Ok(run::sync_pre(module, &preopens, io).is_some())
    }
}

/// The outcome of a run stopped (or never started) because the process
/// received termination signal `sig` (see [`WasmConfig::interrupt_on_signals`]).
pub(crate) fn interrupted(sig: i32, started: Instant) -> Outcome {
    Outcome {
        signal: Some(sig),
        wall_ms: started.elapsed().as_millis() as u64,
        error: Some(format!("interrupted by signal {sig}")),
        ..Outcome::with_status(Status::Error)
    }
}

/// A module that cannot be run: an outcome like the jail's failed exec
/// (127 when the file does not exist, 126 when it cannot be read or run).
fn module_failure(e: WasmError, started: Instant) -> Result<Outcome, BackendError> {
    if let Some(sig) = signals::received() {
        // A compile given up because Warden was interrupted.
        return Ok(interrupted(sig, started));
    }
    let code = match &e {
        WasmError::NotFound { .. } => 127,
        WasmError::Unreadable { .. }
        | WasmError::Invalid { .. }
        | WasmError::Link { .. }
        | WasmError::UngrantedImport { .. } => 126,
        WasmError::CompileTimeout { .. } => {
            return Ok(Outcome {
                wall_ms: started.elapsed().as_millis() as u64,
                error: Some(e.to_string()),
                ..Outcome::with_status(Status::Timeout)
            })
        }
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
