//! The one API Warden's front ends call: load and check policies (with
//! their `extends` chain), turn a run request into an [`Invocation`] whose
//! grants are the request ∩ the policy, pick a backend and run it.
#![forbid(unsafe_code)]

pub mod audit;
pub mod authz;
pub mod config;
pub mod identity;
pub mod invoke;
mod request;
pub mod seal;
pub mod secrets;

pub use request::{prepare, Prepared, RunRequest};
/// Where the WASM backend's key-value stores live by default.
pub use warden_wasm::default_kv_dir;

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;
use warden_core::{Backend, BackendError, Report};
use warden_policy::{check, Policy, PolicyError, Severity};

/// How deep an `extends` chain may go.
pub use warden_jail::hold_termination_signals;
pub use warden_jail::{run_gvisor_init_if_asked, GVISOR_INIT_FLAG};

pub const MAX_EXTENDS_DEPTH: usize = 16;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("cannot read policy {path}: {source}")]
    ReadPolicy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `at`: the `extends` that closes the cycle (`file:line:col`).
    #[error("{at}: extends {target}, which is already in the chain: extends chain is circular")]
    ExtendsCycle { at: String, target: PathBuf },
    #[error("{at}: extends chain is deeper than {MAX_EXTENDS_DEPTH}")]
    ExtendsTooDeep { at: String },
    /// A parent policy could not be read or parsed; `at` is the `extends`
    /// that names it.
    #[error("{at}: extends {target}: {source}")]
    Parent {
        at: String,
        target: PathBuf,
        source: Box<EngineError>,
    },
    #[error("{0}")]
    Request(String),
    #[error("unknown backend {0:?} (available: jail, wasm)")]
    UnknownBackend(String),
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
}

/// Policies larger than this are refused before parsing.
const MAX_POLICY_FILE: u64 = 1 << 20;

fn read_policy_source(path: &Path) -> Result<String, EngineError> {
    let too_large = || std::io::Error::other(format!("larger than {MAX_POLICY_FILE} bytes"));
    let bytes = match config::read_trusted(path, warden_trust::ArtifactType::Policy) {
        Ok(b) => b,
        Err(config::ConfigError::Io(_, source)) => {
            return Err(EngineError::ReadPolicy {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(e @ (config::ConfigError::Unsigned { .. } | config::ConfigError::At { .. })) => {
            return Err(EngineError::Config(e))
        }
        Err(config::ConfigError::Invalid(_, why)) => {
            return Err(EngineError::ReadPolicy {
                path: path.to_path_buf(),
                source: std::io::Error::other(why),
            })
        }
    };
    if bytes.len() as u64 > MAX_POLICY_FILE {
        return Err(EngineError::ReadPolicy {
            path: path.to_path_buf(),
            source: too_large(),
        });
    }
    String::from_utf8(bytes).map_err(|_| EngineError::ReadPolicy {
        path: path.to_path_buf(),
        source: std::io::Error::other("not valid UTF-8"),
    })
}

/// Loads a policy file and its `extends` chain, resolving relative paths
/// in each file against that file's directory, and attenuates from the
/// root down: the result is what the chain allows.
pub fn load_policy(path: &Path) -> Result<Policy, EngineError> {
    let mut chain: Vec<Policy> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut next = Some(path.to_path_buf());
    // Where the file being loaded was named: the child's `extends`.
    let mut named_at: Option<String> = None;
    while let Some(file) = next.take() {
        let in_parent = |e: EngineError| match &named_at {
            Some(at) => EngineError::Parent {
                at: at.clone(),
                target: file.clone(),
                source: Box::new(e),
            },
            None => e,
        };
        let canonical = fs::canonicalize(&file)
            .map_err(|source| EngineError::ReadPolicy {
                path: file.clone(),
                source,
            })
            .map_err(in_parent)?;
        if let Some(at) = &named_at {
            if seen.contains(&canonical) {
                return Err(EngineError::ExtendsCycle {
                    at: at.clone(),
                    target: file,
                });
            }
            if seen.len() >= MAX_EXTENDS_DEPTH {
                return Err(EngineError::ExtendsTooDeep { at: at.clone() });
            }
        }
        seen.push(canonical.clone());
        let source = read_policy_source(&file).map_err(in_parent)?;
        let base = canonical.parent().unwrap_or(Path::new("/")).to_path_buf();
        let origin = file.display().to_string();
        let policy = warden_policy::parse_policy(&source, &origin)
            .map_err(|e| in_parent(e.into()))?
            .with_base(&base);
        if let Some(parent) = &policy.extends {
            next = Some(base.join(parent));
            named_at = Some(match policy.extends_location {
                Some(at) => format!("{origin}:{at}"),
                None => origin,
            });
        }
        chain.push(policy);
    }
    let mut effective = chain
        .pop()
        .ok_or_else(|| EngineError::Request("empty policy chain".into()))?;
    while let Some(child) = chain.pop() {
        effective = Policy::attenuate(&effective, &child)?;
    }
    Ok(effective)
}

/// `warden policy check`: every diagnostic of the file, rendered with
/// file:line:column, then any error from its `extends` chain. Returns the
/// lines and whether any is an error.
pub fn check_policy_file(path: &Path) -> Result<(Vec<String>, bool), EngineError> {
    let source = read_policy_source(path)?;
    let origin = path.display().to_string();
    let diagnostics = check(&source, &origin);
    let mut failed = diagnostics.iter().any(|d| d.severity == Severity::Error);
    let mut lines: Vec<String> = diagnostics.iter().map(|d| d.render(&origin)).collect();
    if !failed {
        if let Err(e) = load_policy(path) {
            failed = true;
            // Errors of the chain name their place first (`file:line:col: …`,
            // or `file: …`): as `file:line:col: error: …`, like the others.
            let text = e.to_string();
            lines.push(match text.split_once(": ") {
                Some((at, message)) => format!("{at}: error: {message}"),
                None => format!("{origin}: error: {text}"),
            });
        }
    }
    Ok((lines, failed))
}

/// Backends by name, created on first use (preparing one costs work that
/// a run of another backend should not pay).
pub struct Engine {
    jail: Option<warden_jail::JailBackend>,
    gvisor: Option<warden_jail::GvisorBackend>,
    wasm: Option<Box<dyn WasmRuntime>>,
    /// Makes the WASM backend; `None` in an engine built without it. A
    /// function pointer and a trait object, so that nothing of wasmtime is
    /// reachable from an engine made by [`Engine::jail_only`].
    wasm_factory: Option<WasmFactory>,
    /// Where the WASM backend keeps the tenants' key-value stores.
    kv_dir: Option<PathBuf>,
    /// Termination signals stop WASM runs (see
    /// [`Engine::with_interrupt_on_signals`]).
    interrupt_on_signals: bool,
}

/// Makes the WASM backend (see [`Engine::new`]).
pub type WasmFactory = fn(WasmSettings) -> Result<Box<dyn WasmRuntime>, BackendError>;

/// What the engine hands the WASM backend when it makes it.
pub struct WasmSettings {
    pub kv_dir: Option<PathBuf>,
    /// See [`warden_wasm::WasmConfig::interrupt_on_signals`].
    pub interrupt_on_signals: bool,
}

/// The WASM backend as the engine uses it.
pub trait WasmRuntime: Backend {
    /// `warden compile` of the module file at `path` (named in errors): a
    /// `.cwasm` for this host.
    fn precompile_file(&self, path: &Path, metered: bool) -> Result<Vec<u8>, BackendError>;
}

impl WasmRuntime for warden_wasm::WasmBackend {
    fn precompile_file(&self, path: &Path, metered: bool) -> Result<Vec<u8>, BackendError> {
        warden_wasm::WasmBackend::precompile_file(self, path, metered).map_err(Into::into)
    }
}

/// Instances the pool of an engine made by [`Engine::new`] holds: none.
/// Such an engine serves one run per process (and the modules it calls),
/// and a pool is set-up that a short-lived process does not win back: a
/// 32-slot pool made `warden-wasm run hello.cwasm` 3.8 ms against 3.4 ms
/// on demand (`hyperfine -N`, 2026-12-04, Intel KVM guest). Instances are
/// then allocated on demand, under the same resource limiter. A service
/// sizes its own pool (`WasmConfig::pool_instances`).
const ONE_RUN_POOL_INSTANCES: u32 = 0;

fn make_wasm_backend(settings: WasmSettings) -> Result<Box<dyn WasmRuntime>, BackendError> {
    Ok(Box::new(warden_wasm::WasmBackend::with_config(
        warden_wasm::WasmConfig {
            kv_dir: settings.kv_dir,
            interrupt_on_signals: settings.interrupt_on_signals,
            pool_instances: ONE_RUN_POOL_INSTANCES,
            ..warden_wasm::WasmConfig::default()
        },
    )?))
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    /// An engine with every backend.
    pub fn new() -> Self {
        Engine {
            wasm_factory: Some(make_wasm_backend),
            ..Engine::jail_only()
        }
    }

    /// An engine without the WASM backend: a program that uses only this
    /// constructor does not link wasmtime at all (a 3.2 MB instead of a
    /// 23 MB static binary, which starts ≈ 0.3 ms sooner: every jail run
    /// pays for relocating the binary it lives in).
    pub fn jail_only() -> Self {
        Engine {
            jail: None,
            gvisor: None,
            wasm: None,
            wasm_factory: None,
            kv_dir: None,
            interrupt_on_signals: false,
        }
    }

    /// Sets the directory of the key-value stores of the `kv` host
    /// capability (see [`warden_wasm::default_kv_dir`]); without one, the
    /// WASM backend's `kv` functions answer `unavailable`. Takes effect for
    /// a backend not made yet.
    pub fn with_kv_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.kv_dir = dir;
        self
    }

    /// Makes SIGINT, SIGTERM, SIGHUP and SIGQUIT stop a WASM run (status
    /// `error`, the signal, exit status 128+N, and a report), as the jail
    /// backend always does: what `warden run` wants, not a service, which
    /// handles its own signals. Process-wide once the WASM backend is made
    /// (see [`warden_wasm::WasmConfig::interrupt_on_signals`]); takes
    /// effect for a backend not made yet.
    pub fn with_interrupt_on_signals(mut self, on: bool) -> Self {
        self.interrupt_on_signals = on;
        self
    }

    fn wasm_backend(&self) -> Result<Box<dyn WasmRuntime>, EngineError> {
        let make = self.wasm_factory.ok_or_else(|| {
            EngineError::Request("the wasm backend is not built into this program".into())
        })?;
        Ok(make(WasmSettings {
            kv_dir: self.kv_dir.clone(),
            interrupt_on_signals: self.interrupt_on_signals,
        })?)
    }

    /// The backend named `name`. A process should use one backend: the
    /// jail forks without exec and must not share the process with the
    /// WASM backend's threads.
    fn backend(&mut self, name: &str) -> Result<&dyn Backend, EngineError> {
        match name {
            "jail" => {
                if self.jail.is_none() {
                    self.jail = Some(warden_jail::JailBackend::new()?);
                }
                self.jail
                    .as_ref()
                    .map(|b| b as &dyn Backend)
                    .ok_or_else(|| EngineError::Request("jail backend unavailable".into()))
            }
            "gvisor" => {
                if self.gvisor.is_none() {
                    self.gvisor = Some(warden_jail::GvisorBackend::new()?);
                }
                self.gvisor
                    .as_ref()
                    .map(|b| b as &dyn Backend)
                    .ok_or_else(|| EngineError::Request("gvisor backend unavailable".into()))
            }
            "wasm" => {
                if self.wasm.is_none() {
                    self.wasm = Some(self.wasm_backend()?);
                }
                self.wasm
                    .as_deref()
                    .map(|b| b as &dyn Backend)
                    .ok_or_else(|| EngineError::Request("wasm backend unavailable".into()))
            }
            other => Err(EngineError::UnknownBackend(other.to_string())),
        }
    }

    /// `warden compile` of the module file at `path` (`metered`: for runs
    /// with a fuel budget): the file is read with the backend's size bound
    /// and every error names it.
    pub fn compile_file(&mut self, path: &Path, metered: bool) -> Result<Vec<u8>, EngineError> {
        if self.wasm.is_none() {
            self.wasm = Some(self.wasm_backend()?);
        }
        let wasm = self
            .wasm
            .as_ref()
            .ok_or_else(|| EngineError::Request("wasm backend unavailable".into()))?;
        wasm.precompile_file(path, metered)
            .map_err(EngineError::Backend)
    }

    /// Runs a prepared invocation and builds its report.
    pub fn run(&mut self, prepared: &Prepared) -> Result<Report, EngineError> {
        self.run_gated(prepared, &mut || Ok(()))
    }

    /// [`Engine::run`], with `gate` called before the program starts (see
    /// [`Backend::run_gated`]): its error stops the run, as
    /// `EngineError::Backend(BackendError::Gate(..))`.
    pub fn run_gated(
        &mut self,
        prepared: &Prepared,
        gate: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Report, EngineError> {
        let backend = self.backend(&prepared.backend)?;
        let outcome = backend.run_gated(&prepared.invocation, gate)?;
        Ok(report_of(prepared, outcome))
    }
}

/// The report of `prepared`'s run that ended with `outcome` (what
/// [`Engine::run`] returns; a service that runs a backend itself, with its
/// own streams, builds the same report with this).
pub fn report_of(prepared: &Prepared, mut outcome: warden_core::Outcome) -> Report {
    outcome.note_stop_limit(&prepared.invocation.limits);
    // What the request resolved to differently from what was asked.
    outcome
        .warnings
        .splice(0..0, prepared.notices.iter().cloned());
    let mut report = Report::from_outcome(
        outcome,
        prepared.capabilities.clone(),
        prepared.policy_digest.clone(),
        prepared.invocation.invocation_id.clone(),
        &prepared.backend,
        Some(prepared.invocation.limits.clone()),
    );
    report.notices = prepared.notices.clone();
    report.views = prepared.invocation.views.clone();
    report.routing = Some(prepared.routing.clone());
    report
}

/// What `--explain` prints: the backend and the rule that chose it, what
/// would run, the effective grants and limits, and where the run's
/// `net:connect` names resolve now (the run resolves them again, once,
/// when it starts). One `key: value` line each.
pub fn explain(prepared: &Prepared) -> String {
    let inv = &prepared.invocation;
    let l = &inv.limits;
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key}: {value}\n"));
    line("backend", prepared.backend.clone());
    line("because", prepared.routing.clone());
    line("program", warden_core::printable(&inv.argv.join(" ")));
    line(
        "grants",
        if prepared.capabilities.is_empty() {
            "none".into()
        } else {
            prepared.capabilities.join(", ")
        },
    );
    let mut limits = vec![
        format!("memory {}", warden_core::human_bytes(l.memory_bytes)),
        format!("wall time {}", warden_core::human_duration(l.wall_time)),
        format!("pids {}", l.pids),
        format!("output {}", warden_core::human_bytes(l.output_bytes)),
    ];
    if let Some(cpu) = l.cpu_time {
        limits.push(format!("cpu time {}", warden_core::human_duration(cpu)));
    }
    if let Some(b) = l.net_bytes {
        limits.push(format!("net bytes {}", warden_core::human_bytes(b)));
    }
    line("limits", limits.join(", "));
    line("policy", prepared.policy_digest.clone());
    match warden_egress::EgressPlan::for_run(&inv.capabilities) {
        Err(e) => line("egress", format!("cannot resolve: {e}")),
        Ok(None) => {}
        Ok(Some(plan)) => {
            for p in plan.pinned() {
                let addrs: Vec<String> = p.addrs.iter().map(ToString::to_string).collect();
                line(
                    "egress",
                    format!(
                        "{} -> {}",
                        p.name,
                        if addrs.is_empty() {
                            "nothing".to_string()
                        } else {
                            addrs.join(", ")
                        }
                    ),
                );
            }
            for w in &plan.warnings {
                line("warning", w.clone());
            }
        }
    }
    out
}

/// File extensions that mean a WebAssembly module.
const WASM_EXTENSIONS: &[&str] = &["wasm", "wat", "cwasm"];

/// Routes a request to a backend: an explicit `--backend` wins; otherwise
/// a `.wasm`, `.wat` or `.cwasm` program goes to the WASM backend and
/// everything else to the jail (the hybrid router grows here).
pub fn route(requested: Option<&str>, argv: &[String]) -> Result<String, EngineError> {
    route_with_rule(requested, argv, None).map(|(backend, _)| backend)
}

/// A policy's `isolation` and the policy's name, for [`route_with_rule`].
pub type IsolationRule<'a> = (warden_policy::Isolation, &'a str);

/// [`route`], with the policy's `isolation` (if it sets one), and the rule
/// that decided, as the report's `routing` and `--explain` say it. A
/// backend the policy's isolation excludes is refused, naming both.
pub fn route_with_rule(
    requested: Option<&str>,
    argv: &[String],
    isolation: Option<IsolationRule<'_>>,
) -> Result<(String, String), EngineError> {
    use warden_policy::Isolation;
    let module = argv
        .first()
        .and_then(|p| Path::new(p).extension())
        .and_then(|e| e.to_str())
        .filter(|e| WASM_EXTENSIONS.contains(e));
    let conflict = |what: String| EngineError::Request(what);
    match (requested, isolation) {
        (Some(name @ ("jail" | "gvisor" | "wasm")), None) => {
            Ok((name.to_string(), format!("--backend {name}")))
        }
        (Some(name @ ("jail" | "gvisor" | "wasm")), Some((iso, policy))) => {
            let allowed = match iso {
                Isolation::Jail => true,
                Isolation::Strong => name == "gvisor",
                Isolation::Wasm => name == "wasm",
            };
            if !allowed {
                return Err(conflict(format!(
                    "--backend {name} conflicts with policy {policy}: isolation: {iso} requires the {} backend",
                    if iso == Isolation::Strong { "gvisor" } else { "wasm" }
                )));
            }
            Ok((
                name.to_string(),
                format!("--backend {name} (policy {policy} asks isolation: {iso})"),
            ))
        }
        (Some(other), _) => Err(EngineError::UnknownBackend(other.to_string())),
        (None, Some((Isolation::Strong, policy))) => match module {
            Some(e) => Err(conflict(format!(
                "policy {policy} asks isolation: strong (the gvisor backend), which runs native code and scripts; a WebAssembly module (.{e}) runs on the wasm backend"
            ))),
            None => Ok((
                "gvisor".to_string(),
                format!("policy {policy} asks isolation: strong: the gvisor backend"),
            )),
        },
        (None, Some((Isolation::Wasm, policy))) if module.is_none() => Err(conflict(format!(
            "policy {policy} asks isolation: wasm, and the program is not a WebAssembly module (.wasm, .wat or .cwasm)"
        ))),
        (None, _) => Ok(match module {
            Some(e) => (
                "wasm".to_string(),
                format!("the program is a WebAssembly module (.{e}): the wasm backend"),
            ),
            None => (
                "jail".to_string(),
                "the program is native code or a script (not .wasm, .wat or .cwasm): the jail"
                    .to_string(),
            ),
        }),
    }
}
