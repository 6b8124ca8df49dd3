//! One run: WASI context from the grants, a store under the limits,
//! instantiate, call `_start`, classify how it ended.

use std::borrow::Cow;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use warden_core::{
    human_bytes, EnforcementMap, Invocation, LimitReached, Outcome, Status, Violation,
};
use warden_policy::Capability;
use warden_secrets::Redactor;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::deterministic;
use crate::engines::TickGuard;
use crate::engines::FUEL_YIELD_INTERVAL;
use crate::fslimits::FsLimits;
use crate::host::{self, call::CallContext, HostState, Interface};
use crate::limiter::MemLimiter;
use crate::module::{Code, PreparedModule, SyncPre};
use crate::output::{Input, RunIo, RunOutput, DRAIN_GRACE};
use crate::{WasmBackend, WasmError};

/// Longest trap or error text kept in a report.
const MAX_MESSAGE: usize = 2048;

/// The data of a run's store.
pub(crate) struct RunState {
    pub wasi: WasiP1Ctx,
    /// The host capabilities' side of the run.
    pub host: HostState,
    /// Open descriptors and file sizes (preview-1 modules).
    pub fs: FsLimits,
    limiter: MemLimiter,
    /// Set by the epoch callback when it stops the run.
    stop: Option<Stop>,
    /// Set when the guest's entry point is called: a failure after that
    /// (a host call aborting the guest) is the guest's doing, not Warden's.
    entered: bool,
    /// The thread's CPU clock, read at the first epoch tick (see
    /// [`CpuBase`]).
    cpu_base: Option<CpuBase>,
    /// What the epoch callback checks.
    deadline: Deadline,
}

impl RunState {
    /// Bytes of linear memory the run holds now.
    pub fn limiter_current(&self) -> u64 {
        self.limiter.current()
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Timeout,
    CpuTime,
    /// The process received this termination signal (see `signals.rs`).
    Interrupted(i32),
}

/// A directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Preopen {
    pub path: PathBuf,
    /// The name the guest sees it under: its canonical path, or for a
    /// grant inside the run's working directory also (a second preopen of
    /// the same directory) its path relative to it.
    pub guest: String,
    pub writable: bool,
}

/// Turns the effective grants into preopened directories. `module` (the
/// module file itself, which the engine may list as a read grant) is
/// skipped: the host reads it, the guest does not see it.
///
/// Each grant is preopened under its canonical path. A grant that lies
/// inside `workdir` (the run's working directory) is preopened a second
/// time under its path relative to it (`data`, or `.` for the working
/// directory itself when that is granted), so that a guest reaches it by
/// the relative path it was granted with: wasi-libc (what Rust, C and most
/// toolchains use) starts with a working directory of `/`, resolves
/// `data/in.json` as `/data/in.json`, strips leading `/` and `./` from
/// paths and preopen names alike, and picks the preopen whose name is the
/// longest whole-component prefix. Nothing more is reachable than the
/// grant: the second preopen is the same directory with the same rights,
/// and the working directory itself is never preopened unless granted.
pub(crate) fn preopens(
    caps: &[Capability],
    module: &Path,
    workdir: &Path,
) -> Result<Vec<Preopen>, WasmError> {
    let mut out: Vec<Preopen> = Vec::new();
    for cap in caps {
        let (path, writable) = match cap {
            Capability::FsRead(p) => (p, false),
            Capability::FsWrite(p) => (p, true),
            // Resolved by the engine into the invocation's env.
            Capability::Env(_) => continue,
            // Host capabilities, checked by the host functions.
            Capability::ClockRead
            | Capability::RandomRead
            | Capability::LogWrite
            | Capability::KvRead(_)
            | Capability::KvWrite(_)
            | Capability::NetHttp(_)
            | Capability::NetHttps(_)
            | Capability::ModuleCall(_) => continue,
            // Leased by the engine, read through the `secret` host
            // function (the lease is checked by `check_leases`).
            Capability::Secret(_) | Capability::SecretEnv(_) => continue,
            // Limits arrive in `EffectiveLimits`.
            c if c.is_limit() => continue,
            other => return Err(WasmError::Unsupported(other.to_string())),
        };
        if path == module {
            continue;
        }
        let canonical = std::fs::canonicalize(path).map_err(|e| WasmError::Grant {
            grant: cap.to_string(),
            message: e.to_string(),
        })?;
        // A grant names exactly what is opened: a path that resolves
        // through a symlink elsewhere is refused, as in the jail.
        if canonical != *path {
            return Err(WasmError::Grant {
                grant: cap.to_string(),
                message: format!(
                    "{} resolves through a symlink to {}; grant the real path instead",
                    path.display(),
                    canonical.display()
                ),
            });
        }
        if !canonical.is_dir() && std::fs::canonicalize(module).is_ok_and(|m| m == canonical) {
            continue;
        }
        if !canonical.is_dir() {
            return Err(WasmError::Grant {
                grant: cap.to_string(),
                message: "the wasm backend grants directories only (WASI preopens)".into(),
            });
        }
        if canonical.to_str().is_none() {
            return Err(WasmError::Grant {
                grant: cap.to_string(),
                message: "path is not UTF-8 (WASI paths are strings)".into(),
            });
        }
        match out.iter_mut().find(|p| p.path == canonical) {
            Some(p) => p.writable |= writable,
            None => out.push(Preopen {
                guest: canonical.to_str().unwrap_or_default().to_string(),
                path: canonical,
                writable,
            }),
        }
    }
    if out.is_empty() {
        return Ok(out);
    }
    // Relative names for grants inside the working directory. With a
    // working directory of `/` the canonical names already are what
    // wasi-libc matches relative paths against.
    let Ok(workdir) = std::fs::canonicalize(workdir) else {
        return Ok(out);
    };
    if workdir == Path::new("/") {
        return Ok(out);
    }
    let aliases: Vec<Preopen> = out
        .iter()
        .filter_map(|p| {
            let rel = p.path.strip_prefix(&workdir).ok()?.to_str()?;
            Some(Preopen {
                path: p.path.clone(),
                guest: if rel.is_empty() { "." } else { rel }.to_string(),
                writable: p.writable,
            })
        })
        .collect();
    out.extend(aliases);
    Ok(out)
}

/// How each limit is enforced on a run, and what is not, with the warning
/// that goes with it. `metered`: the run's engine counts fuel (and checks
/// deadlines when the guest yields) instead of epochs. The map is one of a
/// few fixed ones, made once each: a run does not build its own.
pub(crate) fn enforcement(
    inv: &Invocation,
    preopens: &[Preopen],
    component: bool,
    metered: bool,
) -> (&'static EnforcementMap, Option<&'static str>) {
    let writable = preopens.iter().any(|p| p.writable);
    let files = match (preopens.is_empty(), component) {
        (true, _) => Files::None,
        (false, false) => Files::Preview1 { writable },
        (false, true) => Files::Component { writable },
    };
    let e = Enforced {
        metered,
        cpu_time: inv.limits.cpu_time.is_some(),
        cpu_share: inv.limits.cpu_percent.is_some(),
        fuel: inv.fuel.is_some(),
        files,
    };
    static MAPS: [OnceLock<EnforcementMap>; Enforced::COUNT] =
        [const { OnceLock::new() }; Enforced::COUNT];
    let warning = matches!(files, Files::Component { writable: true }).then_some(
        "file_size: not enforced for WASI 0.2 components (writes through fs:write grants are not capped)",
    );
    (MAPS[e.index()].get_or_init(|| e.map()), warning)
}

/// What decides a run's enforcement map.
#[derive(Clone, Copy)]
struct Enforced {
    metered: bool,
    cpu_time: bool,
    cpu_share: bool,
    fuel: bool,
    files: Files,
}

/// The preopened directories of a run, as far as their limits go.
#[derive(Clone, Copy)]
enum Files {
    None,
    Preview1 { writable: bool },
    Component { writable: bool },
}

impl Enforced {
    /// Distinct values: four flags, five kinds of files.
    const COUNT: usize = 16 * 5;

    fn index(self) -> usize {
        let files = match self.files {
            Files::None => 0,
            Files::Preview1 { writable } => 1 + usize::from(writable),
            Files::Component { writable } => 3 + usize::from(writable),
        };
        usize::from(self.metered)
            | usize::from(self.cpu_time) << 1
            | usize::from(self.cpu_share) << 2
            | usize::from(self.fuel) << 3
            | files << 4
    }

    fn map(self) -> EnforcementMap {
        let (clock, cpu, share) = if self.metered {
            (
                "fuel_yield",
                "fuel_yield_thread_cputime",
                "fuel_yield_throttle",
            )
        } else {
            ("epoch", "epoch_thread_cputime", "epoch_throttle")
        };
        let mut e: Vec<(&'static str, &'static str)> = vec![
            ("memory", "wasm_limiter"),
            ("wall_time", clock),
            ("output", "wasm_stdio_cap"),
            ("pids", "no_processes"),
        ];
        if self.cpu_time {
            e.push(("cpu_time", cpu));
        }
        if self.cpu_share {
            e.push(("cpu_share", share));
        }
        if self.fuel {
            e.push(("fuel", "wasm_fuel"));
        }
        match self.files {
            Files::None => {}
            // WASI 0.2's filesystem interface is not wrapped (fslimits.rs
            // covers preview 1).
            Files::Component { writable } => {
                e.push(("open_files", "not_enforced"));
                if writable {
                    e.push(("file_size", "not_enforced"));
                }
            }
            Files::Preview1 { writable } => {
                e.push(("open_files", "wasm_fd_count"));
                if writable {
                    e.push(("file_size", "wasm_write_check"));
                }
            }
        }
        e.into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
            .collect()
    }
}

static RANDOM: OnceLock<Vec<u8>> = OnceLock::new();

/// The environment variables of `secret:NAME:env` grants, as the jail
/// sets them (`SECRET_NAME`); a value that is not text without NUL bytes
/// cannot be one (the `secret` host function still reads it).
fn secret_env(inv: &Invocation) -> Result<Vec<(String, String)>, WasmError> {
    inv.secrets
        .iter()
        .filter(|s| s.env)
        .map(|s| {
            let value = std::str::from_utf8(s.value.expose())
                .ok()
                .filter(|v| !v.contains('\0'))
                .ok_or_else(|| WasmError::Grant {
                    grant: format!("secret:{}:env", s.name),
                    message: "its value is not text without NUL bytes, so it cannot be an environment variable (read it with the `secret` host function)".into(),
                })?;
            Ok((warden_core::secret_env_name(&s.name), value.to_string()))
        })
        .collect()
}

/// The redactor of the run's leased secrets, if it holds any.
fn secrets_redactor(inv: &Invocation) -> Option<Arc<Redactor>> {
    (!inv.secrets.is_empty()).then(|| {
        let pairs: Vec<(&str, &[u8])> = inv
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.value.expose()))
            .collect();
        Arc::new(Redactor::new(&pairs))
    })
}

/// Refuses a run granted a secret it holds no lease for (the engine
/// leases every granted one), as the jail does.
fn check_leases(inv: &Invocation) -> Result<(), WasmError> {
    for cap in &inv.capabilities {
        if let Capability::Secret(name) | Capability::SecretEnv(name) = cap {
            if !inv.secrets.iter().any(|s| &s.name == name) {
                return Err(WasmError::Grant {
                    grant: cap.to_string(),
                    message: "granted, but no lease was made for it".into(),
                });
            }
        }
    }
    Ok(())
}

fn wasi_ctx(
    inv: &Invocation,
    preopens: &[Preopen],
    io: &RunIo,
    output: &Arc<RunOutput>,
) -> Result<WasiP1Ctx, WasmError> {
    let mut b = WasiCtxBuilder::new();
    // Never block the run's thread in a host call (a sleep, a file
    // operation): blocking operations go to tokio's blocking pool and are
    // awaited, so the deadline timer can abandon them.
    b.allow_blocking_current_thread(false)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .args(&inv.argv)
        .envs(&inv.env)
        .envs(&secret_env(inv)?)
        .stdout(output.stdout())
        .stderr(output.stderr());
    match &io.stdin {
        Input::Inherit => {
            b.inherit_stdin();
        }
        Input::Bytes(bytes) => {
            b.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes.clone()));
        }
        Input::Empty => {}
    }
    for p in preopens {
        let perms = if p.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        b.preopened_dir(&p.path, &p.guest, perms)
            .map_err(|e| WasmError::Grant {
                grant: p.path.display().to_string(),
                message: format!("{e:#}"),
            })?;
    }
    if inv.deterministic {
        // Clocks and randomness still need their grants (`clock:read`,
        // `random:read`); granted, they are the fixed clock and the seeded
        // stream.
        let seed = inv.deterministic_seed.unwrap_or(deterministic::SEED);
        let bytes = if seed == deterministic::SEED {
            RANDOM
                .get_or_init(|| deterministic::random_bytes(deterministic::SEED))
                .clone()
        } else {
            deterministic::random_bytes(seed)
        };
        b.wall_clock(deterministic::FixedWallClock)
            .monotonic_clock(deterministic::SteppingClock::default())
            .secure_random(wasmtime_wasi::Deterministic::new(bytes.clone()))
            .insecure_random(wasmtime_wasi::Deterministic::new(bytes))
            .insecure_random_seed(u128::from(seed));
    }
    Ok(b.build_p1())
}

pub(crate) fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A reading of the run thread's CPU clock (a system call that takes the
/// scheduler's run-queue lock: ~0.5 µs, as much as a tenth of a short run).
///
/// A run without a CPU limit does not read it at the start. It takes its
/// first reading the first time it waits or is interrupted: an epoch tick,
/// a fuel yield, a host call that blocks. Until then the thread never
/// waited, so the CPU time it used is the wall time since the start (less
/// any preemption by other threads: an upper bound). A run that ends within
/// a millisecond reads nothing (its `cpu_ms` is 0 either way), and one that
/// never waited reports its wall time. A CPU limit reads the clock at the
/// start and checks it exactly.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuBase {
    at: Instant,
    cpu: Duration,
}

impl CpuBase {
    fn now() -> Self {
        let cpu = thread_cpu();
        CpuBase {
            at: Instant::now(),
            cpu,
        }
    }

    /// CPU time used since `start`, given the earliest reading taken after
    /// it (`None`: none was).
    fn used_since(start: Instant, base: Option<CpuBase>) -> Duration {
        match base {
            Some(b) => thread_cpu().saturating_sub(b.cpu) + b.at.saturating_duration_since(start),
            None => start.elapsed(),
        }
    }

    fn earliest(a: Option<CpuBase>, b: Option<CpuBase>) -> Option<CpuBase> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if a.at <= b.at { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// What a run checks at every epoch tick (unmetered engines) or fuel yield
/// (metered engines).
#[derive(Clone, Copy)]
struct Deadline {
    started: Instant,
    wall: Instant,
    cpu_start: Duration,
    cpu_limit: Option<Duration>,
    cpu_percent: Option<u32>,
}

impl Deadline {
    /// True if CPU time has to be looked at (a limit or a share).
    fn watches_cpu(&self) -> bool {
        self.cpu_limit.is_some() || self.cpu_percent.is_some()
    }

    fn check(&self) -> Option<Stop> {
        if let Some(sig) = crate::signals::received() {
            return Some(Stop::Interrupted(sig));
        }
        let now = Instant::now();
        if now >= self.wall {
            return Some(Stop::Timeout);
        }
        if self.cpu_limit.is_none() && self.cpu_percent.is_none() {
            return None;
        }
        let cpu = thread_cpu().saturating_sub(self.cpu_start);
        if self.cpu_limit.is_some_and(|l| cpu >= l) {
            return Some(Stop::CpuTime);
        }
        if let Some(pct) = self.cpu_percent {
            // Sleep off CPU used beyond the share of the time elapsed
            // (never past the wall deadline).
            let elapsed = now - self.started;
            let earned = elapsed.mul_f64(f64::from(pct) / 100.0);
            if cpu > earned {
                let owed = (cpu - earned).mul_f64(100.0 / f64::from(pct));
                std::thread::sleep(owed.min(self.wall - now));
                if Instant::now() >= self.wall {
                    return Some(Stop::Timeout);
                }
            }
        }
        None
    }
}

/// Runs a prepared module (prepared by `backend`), blocking the thread.
/// A run that cannot block (see [`sync_pre`]) runs on this thread's
/// stack; any other on a fiber, driven by wasmtime-wasi's tokio runtime.
pub(crate) fn run(
    backend: &WasmBackend,
    module: &PreparedModule,
    inv: &Invocation,
    io: &RunIo,
    started: Option<Instant>,
) -> Result<Outcome, WasmError> {
    let preopens = admit(module, inv)?;
    if let Some(sync) = sync_pre(module, &preopens, io) {
        let run = Run::new(backend, module, inv, io, started, 0, preopens)?;
        return Ok(run.run_sync(sync, inv));
    }
    // Boxed: the future is large and would otherwise be copied on its way
    // into the runtime.
    wasmtime_wasi::runtime::in_tokio(Box::pin(async {
        Ok(Run::new(backend, module, inv, io, started, 0, preopens)?
            .run_async(module, inv)
            .await)
    }))
}

/// The synchronous instantiation of `module` if a top-level run of it with
/// these preopened directories and streams cannot block: every import is in
/// [`crate::module::SYNC_IMPORTS`] (so the engine is unmetered), no
/// directory is preopened, stdin is not the caller's if the module reads
/// one, and output never queues. Epochs alone then stop it at its
/// deadline, without a fiber.
pub(crate) fn sync_pre<'m>(
    module: &'m PreparedModule,
    preopens: &[Preopen],
    io: &RunIo,
) -> Option<&'m SyncPre> {
    let Code::Module(_, Some(sync)) = &module.code else {
        return None;
    };
    let can = !module.kind.metered
        && preopens.is_empty()
        && !(sync.reads_stdin && matches!(io.stdin, Input::Inherit))
        && io.stdout.never_waits(false)
        && io.stderr.never_waits(true);
    can.then_some(sync)
}

/// Runs a prepared module inside wasmtime-wasi's tokio runtime: a
/// top-level run (`depth` 0) or a module called by another (its caller's
/// depth + 1). A module that imports a host interface the invocation does
/// not grant is refused here, before it is instantiated. `started`: when
/// Warden's work on the run began (`wall_ms` and the wall-clock limit count
/// from there), if before the guest's set-up (a compile on a cache miss).
pub(crate) async fn run_async(
    backend: &WasmBackend,
    module: &PreparedModule,
    inv: &Invocation,
    io: &RunIo,
    started: Option<Instant>,
    depth: u32,
) -> Result<Outcome, WasmError> {
    let preopens = admit(module, inv)?;
    Ok(
        Run::new(backend, module, inv, io, started, depth, preopens)?
            .run_async(module, inv)
            .await,
    )
}

/// Refuses what cannot run (an import of an ungranted host interface, a
/// bad tenant, a secret granted without its lease, a grant this backend
/// cannot honour), in that order; returns
/// the directories to preopen.
fn admit(module: &PreparedModule, inv: &Invocation) -> Result<Vec<Preopen>, WasmError> {
    host::check_imports(module, &inv.capabilities)?;
    if !warden_core::valid_tenant(&inv.tenant) {
        return Err(WasmError::Tenant(inv.tenant.clone()));
    }
    check_leases(inv)?;
    preopens_for(inv, &module.path)
}

/// The run's preopens ([`preopens`]), with each grant that has a view
/// (`--at PATH`) named by that path alone: any guest path, `/` included,
/// as wasmtime's `--dir HOST::GUEST` does.
pub(crate) fn preopens_for(inv: &Invocation, module: &Path) -> Result<Vec<Preopen>, WasmError> {
    let mut out = preopens(&inv.capabilities, module, &inv.workdir)?;
    if inv.views.is_empty() {
        return Ok(out);
    }
    let mut named: Vec<PathBuf> = Vec::new();
    out.retain_mut(|p| match inv.views.iter().find(|v| v.grant == p.path) {
        None => true,
        // The first preopen of the path takes the view's name; its
        // relative alias goes.
        Some(v) if !named.contains(&p.path) => {
            named.push(p.path.clone());
            p.guest = v.at.to_str().unwrap_or("/").to_string();
            true
        }
        Some(_) => false,
    });
    Ok(out)
}

/// A run between its set-up and its outcome: the store with its limits,
/// the deadlines, the output streams.
struct Run<'a> {
    /// Its state holds the run's [`Deadline`].
    store: Store<RunState>,
    started: Instant,
    guest_start: Instant,
    metered: bool,
    epoch_tick: Duration,
    /// Keeps the epoch ticker going (unmetered engines only).
    ticking: Option<TickGuard<'a>>,
    output: Arc<RunOutput>,
    /// SHA-256 of the stdin given as bytes; `None` for the caller's own
    /// stdin, which the guest reads directly.
    stdin_sha256: Option<String>,
    /// The module's digest, for the report.
    module_digest: String,
    enforcement: &'static EnforcementMap,
    warnings: Vec<String>,
    /// The run's leased secrets, redacted from everything it hands on.
    redactor: Option<Arc<Redactor>>,
}

impl<'a> Run<'a> {
    fn new(
        backend: &'a WasmBackend,
        module: &PreparedModule,
        inv: &Invocation,
        io: &RunIo,
        started: Option<Instant>,
        depth: u32,
        preopens: Vec<Preopen>,
    ) -> Result<Self, WasmError> {
        let engines = backend.engines();
        let metered = module.kind.metered;
        let (enforcement, warning) = enforcement(inv, &preopens, module.is_component(), metered);
        let warnings = warning.map(String::from).into_iter().collect();
        let redactor = secrets_redactor(inv);
        let output = RunOutput::new(
            inv.limits.output_bytes,
            io.stdout.clone(),
            io.stderr.clone(),
            redactor.clone(),
        );
        let wasi = wasi_ctx(inv, &preopens, io, &output)?;

        // The guest's CPU clock starts now (read now only for a CPU limit,
        // see CpuBase). The wall-clock limit counts from when Warden began
        // the run, as the jail's does: a compile on a cache miss spends the
        // same budget (and is stopped by it).
        let watches_cpu = inv.limits.cpu_time.is_some() || inv.limits.cpu_percent.is_some();
        let precise = watches_cpu.then(CpuBase::now);
        let cpu_start = precise.map_or(Duration::ZERO, |b| b.cpu);
        let guest_start = precise.map_or_else(Instant::now, |b| b.at);
        let started = started.unwrap_or(guest_start);
        let deadline_at = started
            .checked_add(inv.limits.wall_time)
            .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400));
        // What only `call`, `http` and the key-value store need is made
        // only for modules that import them (the session carries the
        // per-run quotas those share with callees).
        let imports = |i| module.host_imports.iter().any(|(_, x)| *x == i);
        let calls = imports(Interface::Call).then(|| {
            CallContext::new(
                backend,
                inv,
                depth,
                inv.limits.cpu_time.map(|l| cpu_start + l),
                output.stderr(),
            )
        });
        let kv = imports(Interface::Kv) || imports(Interface::Call) || imports(Interface::Http);
        let deadline = Deadline {
            started: guest_start,
            wall: deadline_at,
            cpu_start,
            cpu_limit: inv.limits.cpu_time,
            cpu_percent: inv.limits.cpu_percent.filter(|p| *p < 100),
        };
        let mut store = Store::new(
            &module.engine,
            RunState {
                wasi,
                host: HostState::new(backend, inv, deadline_at, calls, kv, redactor.clone()),
                fs: FsLimits::new(
                    inv.limits.file_size_bytes,
                    inv.limits.open_files,
                    preopens.len(),
                ),
                limiter: MemLimiter::new(
                    inv.limits.memory_bytes,
                    module
                        .kind
                        .pooled
                        .then_some(u64::from(engines.config().pool_table_elements)),
                ),
                stop: None,
                entered: false,
                cpu_base: precise,
                deadline,
            },
        );
        store.limiter(|s| &mut s.limiter);
        let mut ticking = None;
        if metered {
            // No epochs in this engine: the guest comes back to Warden
            // every FUEL_YIELD_INTERVAL units of fuel, where `supervise`
            // checks the deadlines.
            store
                .set_fuel(inv.fuel.unwrap_or(u64::MAX))
                .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL)))
                .map_err(|e| WasmError::Store(format!("set fuel: {e:#}")))?;
        } else {
            store.set_epoch_deadline(1);
            // Captures nothing (the deadline is in the store): boxing it
            // allocates nothing.
            store.epoch_deadline_callback(|mut ctx| {
                let state = ctx.data_mut();
                if state.cpu_base.is_none() {
                    state.cpu_base = Some(CpuBase::now());
                }
                match state.deadline.check() {
                    Some(stop) => {
                        state.stop = Some(stop);
                        Ok(UpdateDeadline::Interrupt)
                    }
                    None => Ok(UpdateDeadline::Continue(1)),
                }
            });
            ticking = Some(engines.ticker.active());
        }
        Ok(Run {
            store,
            started,
            guest_start,
            metered,
            epoch_tick: engines.config().epoch_tick,
            ticking,
            module_digest: {
                let hex = hex::encode(module.digest());
                match module.format {
                    crate::module::ModuleFormat::Cwasm => format!("cwasm-tag:{hex}"),
                    _ => format!("sha256:{hex}"),
                }
            },
            stdin_sha256: match &io.stdin {
                Input::Inherit => None,
                Input::Bytes(b) => Some(crate::output::sha256_hex(b)),
                Input::Empty => Some(crate::output::sha256_hex(b"")),
            },
            output,
            enforcement,
            warnings,
            redactor,
        })
    }

    /// Runs on this thread; only epoch ticks stop the guest.
    fn run_sync(mut self, sync: &SyncPre, inv: &Invocation) -> Outcome {
        let t0 = self.guest_start;
        let mut instantiate_us = 0;
        let result = (|| {
            let instance = sync.pre.instantiate(&mut self.store);
            instantiate_us = t0.elapsed().as_micros() as u64;
            let start = instance?.get_typed_func::<(), ()>(&mut self.store, "_start")?;
            self.store.data_mut().entered = true;
            start.call(&mut self.store, ())
        })();
        self.finish(Ok(result), None, instantiate_us, inv)
    }

    /// Runs on a fiber, abandoned at the deadline if it waits.
    async fn run_async(mut self, module: &PreparedModule, inv: &Invocation) -> Outcome {
        // `instantiate_us` counts from the guest clock's start: the store's
        // set-up is part of making the instance (one clock read less).
        let t0 = self.guest_start;
        let mut instantiate_us = 0;
        let deadline = self.store.data().deadline;
        let store = &mut self.store;
        let (result, waited) = {
            let run = std::pin::pin!(async {
                match &module.code {
                    Code::Module(pre, _) => {
                        let instantiated = pre.instantiate_async(&mut *store).await;
                        instantiate_us = t0.elapsed().as_micros() as u64;
                        let instance = instantiated?;
                        let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
                        store.data_mut().entered = true;
                        start.call_async(&mut *store, ()).await
                    }
                    Code::Component(pre) => {
                        let instantiated = pre.instantiate_async(&mut *store).await;
                        instantiate_us = t0.elapsed().as_micros() as u64;
                        let command = instantiated?;
                        store.data_mut().entered = true;
                        match command.wasi_cli_run().call_run(&mut *store).await? {
                            Ok(()) => Ok(()),
                            // `run` returned an error: exit status 1, as
                            // wasmtime's CLI.
                            Err(()) => Err(I32Exit(1).into()),
                        }
                    }
                }
            });
            supervise(
                run,
                deadline,
                self.guest_start,
                self.metered.then_some(self.epoch_tick),
            )
            .await
            // Dropping `run` here abandons a guest stopped at a deadline
            // (its fiber is unwound).
        };
        self.finish(result, waited, instantiate_us, inv)
    }

    /// The outcome of a run that ended (`Err`: stopped by `supervise`).
    fn finish(
        mut self,
        result: Result<wasmtime::Result<()>, Stop>,
        waited: Option<CpuBase>,
        instantiate_us: u64,
        inv: &Invocation,
    ) -> Outcome {
        drop(self.ticking.take());
        let result = match result {
            Ok(r) => r,
            Err(stop) => {
                self.store.data_mut().stop = Some(stop);
                Err(wasmtime::Error::msg("deadline reached"))
            }
        };
        // Fuel is written back to the store at every yield, so this is
        // exact to within FUEL_YIELD_INTERVAL even for a run stopped in a
        // call-free loop.
        let fuel_consumed = inv
            .fuel
            .map(|f| f.saturating_sub(self.store.get_fuel().unwrap_or(0)));
        let state = self.store.data_mut();
        let ended = Instant::now();
        // A run shorter than a millisecond used less than a millisecond of
        // CPU: no clock read for it.
        let cpu_ms =
            if ended.saturating_duration_since(self.guest_start) >= Duration::from_millis(1) {
                let base = CpuBase::earliest(state.cpu_base, waited);
                CpuBase::used_since(self.guest_start, base).as_millis() as u64
            } else {
                0
            };
        // What the redactors still hold back goes out now, before the
        // digests are taken and the output drained.
        self.output.finish_redaction();
        let (stdout_bytes, stderr_bytes) = self.output.written();
        let mut outcome = Outcome {
            status: Status::Exited,
            exit_code: None,
            signal: None,
            wall_ms: 0,
            cpu_ms,
            peak_memory_bytes: state.limiter.peak,
            stdout_bytes,
            stderr_bytes,
            truncated: self.output.exceeded(),
            violations: Vec::new(),
            enforcement: Cow::Borrowed(self.enforcement),
            warnings: std::mem::take(&mut self.warnings),
            error: None,
            fuel_consumed,
            instantiate_us: Some(instantiate_us),
            logs: std::mem::take(&mut state.host.log.records),
            logs_truncated: state.host.log.truncated,
            limits_reached: Vec::new(),
            connections: Vec::new(),
            discarded: None,
            module_digest: Some(std::mem::take(&mut self.module_digest)),
            streams: Some({
                let (stdout, stderr) = self.output.digests();
                warden_core::StreamDigests {
                    stdin: self.stdin_sha256.take(),
                    stdout,
                    stderr,
                }
            }),
        };
        classify(
            &mut outcome,
            result,
            state.stop,
            state.limiter.refused.clone(),
            state.entered,
            inv,
        );
        // Denied host calls and refused file-size/descriptor limits, like
        // the jail's denied system calls: recorded, and the run is a
        // `violation` if it otherwise ended by itself.
        let host_violations = state.host.violations();
        if (state.host.any_denied() || state.fs.any_refused()) && outcome.status == Status::Exited {
            outcome.status = Status::Violation;
        }
        outcome.violations.extend(state.fs.violations());
        reached_limits(&mut outcome, state, inv);
        outcome.violations.extend(host_violations);
        let (connections, net_warnings) = state.host.take_connections();
        outcome.connections = connections;
        outcome.warnings.extend(net_warnings);
        if let Some(why) = state.host.kv_unavailable() {
            outcome
                .warnings
                .push(format!("the key-value store was unavailable: {why}"));
        }
        if let Some(r) = &self.redactor {
            redact_outcome(&mut outcome, r);
        }
        let wall = state.deadline.wall;
        let Run {
            store,
            started,
            output,
            ..
        } = self;
        drop(store);
        // Output still queued for the caller's stdout/stderr gets until the
        // deadline (and DRAIN_GRACE) to be written; a reader that does not
        // read does not hold the report back.
        let until = if outcome.signal.is_some() && outcome.status == Status::Error {
            // Interrupted: the caller is waiting for Warden to end.
            ended
        } else {
            wall.min(ended + DRAIN_GRACE)
        };
        let undelivered = output.wait_delivered(until);
        if undelivered > 0 {
            outcome.warnings.push(format!(
                "output: {undelivered} bytes were still waiting for the caller to read them when the run ended"
            ));
            outcome.wall_ms = started.elapsed().as_millis() as u64;
        } else {
            outcome.wall_ms = ended.saturating_duration_since(started).as_millis() as u64;
        }
        outcome
    }
}

/// Redacts every string of `outcome` a guest could have put a secret
/// into: the error (a trap's message), violations (a name it asked for),
/// warnings. Log records are redacted as they are kept.
fn redact_outcome(outcome: &mut Outcome, redactor: &Redactor) {
    for s in outcome
        .error
        .iter_mut()
        .chain(outcome.warnings.iter_mut())
        .chain(outcome.violations.iter_mut().map(|v| &mut v.detail))
        // A guest chooses the hosts it asks for.
        .chain(outcome.connections.iter_mut().flat_map(|c| {
            std::iter::once(&mut c.dest)
                .chain(c.name.iter_mut())
                .chain(c.reason.iter_mut())
        }))
    {
        *s = redactor.redact_str(s);
    }
}

/// The limits the guest reached, as `limits_reached` (the engine adds the
/// one behind a limit status the backend does not describe itself).
fn reached_limits(outcome: &mut Outcome, state: &RunState, inv: &Invocation) {
    let stopped = outcome.exit_code.is_none();
    if state.limiter.refused.is_some() {
        let effect = if stopped {
            "memory growth refused, program stopped"
        } else {
            "memory growth refused; the guest went on and exited"
        };
        outcome.reached(LimitReached::new(
            "memory",
            human_bytes(inv.limits.memory_bytes),
            effect.to_string(),
            1,
            stopped,
        ));
    }
    let out_of_fuel = outcome
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("fuel budget"));
    if let (Status::CpuLimit, Some(fuel), true) = (outcome.status, inv.fuel, out_of_fuel) {
        outcome.reached(LimitReached::new(
            "fuel",
            format!("{fuel} units"),
            "fuel exhausted, program stopped".to_string(),
            1,
            true,
        ));
    }
    if outcome.truncated {
        let kept = outcome.stdout_bytes + outcome.stderr_bytes;
        let effect = if stopped {
            format!("output truncated after {kept} bytes, program stopped")
        } else {
            format!("output truncated after {kept} bytes")
        };
        outcome.reached(LimitReached::new(
            "output",
            human_bytes(inv.limits.output_bytes),
            effect,
            1,
            stopped,
        ));
    }
    for reached in state.fs.limits_reached() {
        outcome.reached(reached);
    }
}

/// Drives a run to its end or its deadline. Checked at every return to
/// Warden: the wall-clock deadline always, and CPU time (at most every
/// `cpu_every`) for metered runs, whose engine has no epoch callback to do
/// it. A run that waits (a host call that blocks, a full output queue) is
/// woken at its wall-clock deadline by a timer, made the first time it
/// waits. Returns why it was stopped, if it was, and the CPU clock read the
/// first time it waited or yielded (see [`CpuBase`]).
async fn supervise<F: Future>(
    mut run: Pin<&mut F>,
    deadline: Deadline,
    first_poll_at: Instant,
    cpu_every: Option<Duration>,
) -> (Result<F::Output, Stop>, Option<CpuBase>) {
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // Registered the first time the run waits, if termination signals are
    // watched: a signal then wakes it.
    let mut signal_waker: Option<crate::signals::Waiting> = None;
    let mut next_cpu_check = deadline.started;
    let mut waited: Option<CpuBase> = None;
    // The first poll follows the clock read that set the deadline.
    let mut first_poll = Some(first_poll_at);
    let result = std::future::poll_fn(|cx| {
        let now = first_poll.take().unwrap_or_else(Instant::now);
        if let Some(sig) = crate::signals::received() {
            return Poll::Ready(Err(Stop::Interrupted(sig)));
        }
        if now >= deadline.wall {
            return Poll::Ready(Err(Stop::Timeout));
        }
        if let Some(every) = cpu_every {
            if deadline.watches_cpu() && now >= next_cpu_check {
                next_cpu_check = now + every;
                if let Some(stop) = deadline.check() {
                    return Poll::Ready(Err(stop));
                }
            }
        }
        if let Poll::Ready(r) = run.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        if waited.is_none() {
            waited = Some(CpuBase::now());
            signal_waker = crate::signals::Waiting::register(cx.waker());
        } else if let Some(w) = &mut signal_waker {
            w.update(cx.waker());
        }
        if signal_waker.is_some() {
            // A signal that came before the waker was registered.
            if let Some(sig) = crate::signals::received() {
                return Poll::Ready(Err(Stop::Interrupted(sig)));
            }
        }
        let timer =
            timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.wall.into())));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Stop::Timeout));
        }
        Poll::Pending
    })
    .await;
    (result, waited)
}

fn shorten(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Final status: limits Warden enforced first (wall time, CPU time,
/// output, fuel, memory), then how the guest ended (exit, trap, error).
fn classify(
    o: &mut Outcome,
    result: wasmtime::Result<()>,
    stop: Option<Stop>,
    memory_refused: Option<String>,
    entered: bool,
    inv: &Invocation,
) {
    let err = match result {
        Ok(()) => {
            o.exit_code = Some(0);
            if let Some(why) = memory_refused {
                o.status = Status::MemoryLimit;
                o.error = Some(why);
            }
            return;
        }
        Err(e) => e,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        o.exit_code = Some(exit.0);
        if let Some(why) = memory_refused {
            o.status = Status::MemoryLimit;
            o.error = Some(why);
        }
        return;
    }
    let trap = err.downcast_ref::<Trap>().copied();
    match stop {
        Some(Stop::Interrupted(sig)) => {
            // As the jail reports an interrupted Warden.
            o.status = Status::Error;
            o.signal = Some(sig);
            o.error = Some(format!("interrupted by signal {sig}"));
            return;
        }
        Some(Stop::Timeout) => {
            o.status = Status::Timeout;
            o.error = Some(format!(
                "wall-clock limit of {} ms reached",
                inv.limits.wall_time.as_millis()
            ));
            return;
        }
        Some(Stop::CpuTime) => {
            o.status = Status::CpuLimit;
            o.error = Some(format!(
                "CPU-time limit of {} ms reached",
                inv.limits.cpu_time.unwrap_or_default().as_millis()
            ));
            return;
        }
        None => {}
    }
    if o.truncated {
        o.status = Status::OutputLimit;
        o.error = Some(format!(
            "output limit of {} bytes reached",
            inv.limits.output_bytes
        ));
        return;
    }
    if trap == Some(Trap::OutOfFuel) {
        o.status = Status::CpuLimit;
        o.error = Some(format!(
            "fuel budget of {} exhausted",
            inv.fuel.unwrap_or_default()
        ));
        return;
    }
    if let Some(why) = memory_refused {
        o.status = Status::MemoryLimit;
        o.error = Some(match trap {
            Some(t) => format!("{why}; then the guest trapped: {t}"),
            None => format!("{why}; then: {}", shorten(format!("{err:#}"))),
        });
        return;
    }
    match trap {
        Some(t) => {
            o.status = Status::Violation;
            o.violations.push(Violation {
                kind: "trap".into(),
                detail: t.to_string(),
            });
            // The trap first: its first line is what a terminal shows.
            o.error = Some(shorten(format!("{t}\n{err:?}")));
        }
        // A host call aborted the guest with an error rather than an errno
        // (wasmtime-wasi does for arguments it cannot convert, e.g. rights
        // of -1): brought about by the guest, so a violation, as a trap.
        None if entered => {
            let detail = shorten(format!("host call failed: {}", root_cause_line(&err)));
            o.status = Status::Violation;
            o.violations.push(Violation {
                kind: "trap".into(),
                detail: detail.clone(),
            });
            o.error = Some(shorten(format!("{detail}\n{err:?}")));
        }
        None => {
            // Before the guest ran (instantiation): Warden's error.
            o.status = Status::Error;
            o.error = Some(shorten(format!("{err:#}")));
        }
    }
}

/// The innermost cause of `err`, on one line: what failed, without the
/// backtrace wasmtime puts in front of it.
fn root_cause_line(err: &wasmtime::Error) -> String {
    let cause = err.root_cause().to_string();
    cause.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_become_preopens_merged_by_path() {
        let dir = std::env::temp_dir();
        let dir = std::fs::canonicalize(dir).unwrap();
        let caps = vec![
            Capability::FsRead(dir.clone()),
            Capability::FsWrite(dir.clone()),
            Capability::Env("HOME".into()),
        ];
        let p = preopens(&caps, Path::new("/nonexistent.wasm"), Path::new("/")).unwrap();
        assert_eq!(
            p,
            vec![Preopen {
                guest: dir.to_str().unwrap().to_string(),
                path: dir,
                writable: true
            }]
        );
    }

    #[test]
    fn unsupported_capabilities_are_named() {
        let caps = vec!["net:connect:db.internal:5432".parse().unwrap()];
        let err = preopens(&caps, Path::new("/m.wasm"), Path::new("/")).unwrap_err();
        assert!(
            err.to_string().contains("net:connect:db.internal:5432"),
            "{err}"
        );
    }

    #[test]
    fn secrets_need_their_lease() {
        let caps = vec![Capability::Secret("db".into())];
        assert!(preopens(&caps, Path::new("/m.wasm"), Path::new("/"))
            .unwrap()
            .is_empty());
        let inv = Invocation {
            capabilities: caps,
            ..Invocation::default()
        };
        let err = check_leases(&inv).unwrap_err().to_string();
        assert!(
            err.contains("secret:db") && err.contains("no lease"),
            "{err}"
        );
    }

    #[test]
    fn the_module_file_is_not_preopened() {
        let module = PathBuf::from("/some/where/m.wasm");
        let caps = vec![Capability::FsRead(module.clone())];
        assert!(preopens(&caps, &module, Path::new("/some/where"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn grants_inside_the_working_directory_get_their_relative_name_too() {
        let base = std::fs::canonicalize(std::env::temp_dir())
            .unwrap()
            .join(format!("warden-wasm-preopen-{}", std::process::id()));
        let elsewhere = base.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let work = base.join("work");
        std::fs::create_dir_all(work.join("sub")).unwrap();
        let caps = vec![
            Capability::FsRead(work.join("sub")),
            Capability::FsWrite(work.clone()),
            Capability::FsRead(elsewhere.clone()),
        ];
        let p = preopens(&caps, Path::new("/m.wasm"), &work).unwrap();
        let names: Vec<(&str, bool)> = p.iter().map(|p| (p.guest.as_str(), p.writable)).collect();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        assert_eq!(
            names,
            vec![
                (s(&work.join("sub")).as_str(), false),
                (s(&work).as_str(), true),
                (s(&elsewhere).as_str(), false),
                ("sub", false),
                (".", true),
            ]
        );
        // Not granted: the working directory gets no name of its own.
        let p = preopens(
            &[Capability::FsRead(work.join("sub"))],
            Path::new("/m.wasm"),
            &work,
        )
        .unwrap();
        assert!(p.iter().all(|p| p.path == work.join("sub")), "{p:?}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
