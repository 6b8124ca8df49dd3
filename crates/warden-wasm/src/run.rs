//! One run: WASI context from the grants, a store under the limits,
//! instantiate, call `_start`, classify how it ended.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use warden_core::{Enforcement, Invocation, Outcome, Status, Violation};
use warden_policy::Capability;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::deterministic;
use crate::host::{self, call::CallContext, HostState};
use crate::limiter::MemLimiter;
use crate::module::{Code, PreparedModule};
use crate::output::{CappedStream, Input, OutputCap, RunIo};
use crate::{WasmBackend, WasmError};

/// Longest trap or error text kept in a report.
const MAX_MESSAGE: usize = 2048;

/// The data of a run's store.
pub(crate) struct RunState {
    pub wasi: WasiP1Ctx,
    /// The host capabilities' side of the run.
    pub host: HostState,
    limiter: MemLimiter,
    /// Set by the epoch callback when it stops the run.
    stop: Option<Stop>,
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
}

/// A directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Preopen {
    pub path: PathBuf,
    pub writable: bool,
}

/// Turns the effective grants into preopened directories. `module` (the
/// module file itself, which the engine may list as a read grant) is
/// skipped: the host reads it, the guest does not see it.
pub(crate) fn preopens(caps: &[Capability], module: &Path) -> Result<Vec<Preopen>, WasmError> {
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
            | Capability::ModuleCall(_) => continue,
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
                path: canonical,
                writable,
            }),
        }
    }
    Ok(out)
}

/// How each limit is enforced on a run, and what is not.
pub(crate) fn enforcement(inv: &Invocation, preopens: &[Preopen]) -> (Enforcement, Vec<String>) {
    let mut e = Enforcement::new();
    let mut warnings = Vec::new();
    e.insert("memory".into(), "wasm_limiter".into());
    e.insert("wall_time".into(), "epoch".into());
    e.insert("output".into(), "wasm_stdio_cap".into());
    e.insert("pids".into(), "no_processes".into());
    if inv.limits.cpu_time.is_some() {
        e.insert("cpu_time".into(), "epoch_thread_cputime".into());
    }
    if inv.limits.cpu_percent.is_some() {
        e.insert("cpu_share".into(), "epoch_throttle".into());
    }
    if inv.fuel.is_some() {
        e.insert("fuel".into(), "wasm_fuel".into());
    }
    if preopens.iter().any(|p| p.writable) {
        e.insert("file_size".into(), "not_enforced".into());
        warnings.push(
            "file_size: not enforced by the wasm backend yet (writes through fs:write grants are not capped)"
                .into(),
        );
    }
    (e, warnings)
}

static RANDOM: OnceLock<Vec<u8>> = OnceLock::new();

fn wasi_ctx(
    inv: &Invocation,
    preopens: &[Preopen],
    io: &RunIo,
    stdout: &CappedStream,
    stderr: &CappedStream,
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
        .stdout(stdout.clone())
        .stderr(stderr.clone());
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
        let guest = p.path.to_str().unwrap_or_default();
        b.preopened_dir(&p.path, guest, perms)
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

/// What the epoch callback checks at every tick.
struct Deadline {
    started: Instant,
    wall: Instant,
    cpu_start: Duration,
    cpu_limit: Option<Duration>,
    cpu_percent: Option<u32>,
}

impl Deadline {
    fn check(&self) -> Option<Stop> {
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
pub(crate) fn run(
    backend: &WasmBackend,
    module: &PreparedModule,
    inv: &Invocation,
    io: &RunIo,
    started: Instant,
) -> Result<Outcome, WasmError> {
    wasmtime_wasi::runtime::in_tokio(run_async(backend, module, inv, io, started, 0))
}

/// Runs a prepared module inside wasmtime-wasi's tokio runtime: a
/// top-level run (`depth` 0) or a module called by another (its caller's
/// depth + 1). A module that imports a host interface the invocation does
/// not grant is refused here, before it is instantiated.
pub(crate) async fn run_async(
    backend: &WasmBackend,
    module: &PreparedModule,
    inv: &Invocation,
    io: &RunIo,
    started: Instant,
    depth: u32,
) -> Result<Outcome, WasmError> {
    host::check_imports(module, &inv.capabilities)?;
    if !warden_core::valid_tenant(&inv.tenant) {
        return Err(WasmError::Tenant(inv.tenant.clone()));
    }
    let engines = backend.engines();
    let preopens = preopens(&inv.capabilities, &module.path)?;
    let (enforcement, warnings) = enforcement(inv, &preopens);
    let cap = OutputCap::new(inv.limits.output_bytes);
    let stdout = CappedStream::stdout(cap.clone(), io.stdout.clone());
    let stderr = CappedStream::stderr(cap.clone(), io.stderr.clone());
    let wasi = wasi_ctx(inv, &preopens, io, &stdout, &stderr)?;

    // The guest's clock starts now: compiling a module on a cache miss is
    // Warden's work, not the guest's (it is in `wall_ms` all the same).
    let cpu_start = thread_cpu();
    let guest_start = Instant::now();
    let deadline_at = guest_start
        .checked_add(inv.limits.wall_time)
        .unwrap_or_else(|| guest_start + Duration::from_secs(100 * 365 * 86_400));
    let calls = CallContext::new(
        backend,
        inv,
        depth,
        inv.limits.cpu_time.map(|l| cpu_start + l),
        stderr.clone(),
    );
    let mut store = Store::new(
        &module.engine,
        RunState {
            wasi,
            host: HostState::new(backend, inv, deadline_at, calls),
            limiter: MemLimiter::new(
                inv.limits.memory_bytes,
                module
                    .kind
                    .pooled
                    .then_some(u64::from(engines.config().pool_table_elements)),
            ),
            stop: None,
        },
    );
    store.limiter(|s| &mut s.limiter);
    if let Some(fuel) = inv.fuel {
        store
            .set_fuel(fuel)
            .map_err(|e| WasmError::Store(format!("set fuel: {e:#}")))?;
    }
    let deadline = Deadline {
        started: guest_start,
        wall: deadline_at,
        cpu_start,
        cpu_limit: inv.limits.cpu_time,
        cpu_percent: inv.limits.cpu_percent.filter(|p| *p < 100),
    };
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| match deadline.check() {
        Some(stop) => {
            ctx.data_mut().stop = Some(stop);
            Ok(UpdateDeadline::Interrupt)
        }
        None => Ok(UpdateDeadline::Continue(1)),
    });

    let ticking = engines.ticker.active();
    let t0 = Instant::now();
    let mut instantiate_us = 0;
    // The epoch callback stops a guest running wasm code; the timer
    // abandons one blocked in a host call (dropping the call's future
    // unwinds its fiber).
    let run = async {
        match &module.code {
            Code::Module(pre) => {
                let instantiated = pre.instantiate_async(&mut store).await;
                instantiate_us = t0.elapsed().as_micros() as u64;
                let instance = instantiated?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await
            }
            Code::Component(pre) => {
                let instantiated = pre.instantiate_async(&mut store).await;
                instantiate_us = t0.elapsed().as_micros() as u64;
                let command = instantiated?;
                match command.wasi_cli_run().call_run(&mut store).await? {
                    Ok(()) => Ok(()),
                    // `run` returned an error: exit status 1, as wasmtime's CLI.
                    Err(()) => Err(I32Exit(1).into()),
                }
            }
        }
    };
    let budget = deadline_at.saturating_duration_since(Instant::now());
    let result = match tokio::time::timeout(budget, run).await {
        Ok(r) => r,
        Err(_) => {
            store.data_mut().stop = Some(Stop::Timeout);
            Err(wasmtime::Error::msg("deadline reached in a host call"))
        }
    };
    drop(ticking);

    let fuel_consumed = inv
        .fuel
        .map(|f| f.saturating_sub(store.get_fuel().unwrap_or(0)));
    let state = store.data_mut();
    let mut outcome = Outcome {
        status: Status::Exited,
        exit_code: None,
        signal: None,
        wall_ms: 0,
        cpu_ms: thread_cpu().saturating_sub(cpu_start).as_millis() as u64,
        peak_memory_bytes: state.limiter.peak,
        stdout_bytes: stdout.counter().load(Ordering::Relaxed),
        stderr_bytes: stderr.counter().load(Ordering::Relaxed),
        truncated: cap.exceeded.load(Ordering::Relaxed),
        violations: Vec::new(),
        enforcement,
        warnings,
        error: None,
        fuel_consumed,
        instantiate_us: Some(instantiate_us),
        logs: std::mem::take(&mut state.host.log.records),
        logs_truncated: state.host.log.truncated,
    };
    classify(
        &mut outcome,
        result,
        state.stop,
        state.limiter.refused.clone(),
        inv,
    );
    // Denied host calls, like the jail's denied system calls: recorded,
    // and the run is a `violation` if it otherwise ended by itself.
    let host_violations = state.host.violations();
    if state.host.any_denied() && outcome.status == Status::Exited {
        outcome.status = Status::Violation;
    }
    outcome.violations.extend(host_violations);
    drop(store);
    io.flush();
    outcome.wall_ms = started.elapsed().as_millis() as u64;
    Ok(outcome)
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
            o.error = Some(shorten(format!("{err:?}")));
        }
        None => {
            // A host function failed in a way that is not the guest's
            // doing (or an instantiation error): Warden's error.
            o.status = Status::Error;
            o.error = Some(shorten(format!("{err:#}")));
        }
    }
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
        let p = preopens(&caps, Path::new("/nonexistent.wasm")).unwrap();
        assert_eq!(
            p,
            vec![Preopen {
                path: dir,
                writable: true
            }]
        );
    }

    #[test]
    fn unsupported_capabilities_are_named() {
        let caps = vec![Capability::Secret("db".into())];
        let err = preopens(&caps, Path::new("/m.wasm")).unwrap_err();
        assert!(err.to_string().contains("secret:db"), "{err}");
    }

    #[test]
    fn the_module_file_is_not_preopened() {
        let module = PathBuf::from("/some/where/m.wasm");
        let caps = vec![Capability::FsRead(module.clone())];
        assert!(preopens(&caps, &module).unwrap().is_empty());
    }
}
