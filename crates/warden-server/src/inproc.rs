//! WebAssembly runs inside the service: one WASM backend for the whole
//! service (its engines with a pooling allocator made once, at start),
//! modules kept compiled by the digest of their bytes, and the ledger
//! shared by every run with group commit. A jail forks, so jailed runs
//! stay in a `warden` child; a WASM run needs no process of its own, and
//! an exec per request would cost more than the module's run.
//!
//! Each run takes the steps `warden run` takes for the same request, in
//! the same order and with the same report and ledger entry: the request
//! resolved into an invocation, `secret.read` authorized for each granted
//! secret, the secrets leased, the module run, the leases ended, the
//! report redacted, the entry appended before the answer.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sha2::Digest as _;
use warden_core::Report;
use warden_engine::audit::{Audit, RunFacts, SharedAudit};
use warden_engine::identity::Actor;
use warden_wasm::{EngineKind, PreparedModule, WasmBackend, WasmConfig};

use crate::api::{Plan, Program};
use crate::gates::Gates;
use crate::runner::{Finished, RunError, Runner};

/// Compiled modules kept in memory.
const MODULES_KEPT: usize = 256;

/// The in-process WASM runner of a service.
pub struct InProcess {
    wasm: WasmBackend,
    /// The service's shared ledger.
    audit: SharedAudit,
    modules: Mutex<Modules>,
    state: PathBuf,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ModuleKey {
    sha256: [u8; 32],
    /// The entry's extension: what the bytes are read as (`.wat` text,
    /// `.wasm` binary, `.cwasm` sealed machine code).
    extension: String,
    kind: EngineKind,
}

/// Prepared modules by key, the oldest dropped first past
/// [`MODULES_KEPT`].
#[derive(Default)]
struct Modules {
    map: HashMap<ModuleKey, PreparedModule>,
    order: VecDeque<ModuleKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum InProcessError {
    #[error("cannot make the WASM backend: {0}")]
    Backend(#[from] warden_core::BackendError),
    #[error("cannot open the audit ledger: {0}")]
    Audit(#[from] warden_engine::audit::AuditError),
}

impl InProcess {
    /// The backend (a pool of `instances` instance slots) and a handle on
    /// the service's ledger.
    pub fn new(
        state: &Path,
        audit: SharedAudit,
        instances: u32,
    ) -> Result<InProcess, InProcessError> {
        let wasm = WasmBackend::with_config(WasmConfig {
            kv_dir: warden_engine::default_kv_dir(),
            // The service handles its own signals.
            interrupt_on_signals: false,
            pool_instances: instances,
            ..WasmConfig::default()
        })?;
        Ok(InProcess {
            wasm,
            audit,
            modules: Mutex::new(Modules::default()),
            state: state.to_path_buf(),
        })
    }

    /// Runs a `wasm` plan for `actor`, blocking (call it off the async
    /// runtime's threads). `Err` only when nothing could be run or
    /// recorded; a run refused or failed is a report.
    pub fn run(
        &self,
        runner: &Runner,
        gates: &Gates,
        plan: &Plan,
        actor: &Actor,
    ) -> Result<Finished, RunError> {
        let (_dir, files) = runner.prepare_files(plan)?;
        self.run_in(&files, gates, plan, &plan.stdin, actor)
    }

    /// [`InProcess::run`] of a plan whose files are written already (to
    /// `files`, by [`Runner::prepare_files`]), with `stdin` (a test
    /// case's): a fresh instance of the module, compiled once.
    pub fn run_in(
        &self,
        files: &Path,
        gates: &Gates,
        plan: &Plan,
        stdin: &[u8],
        actor: &Actor,
    ) -> Result<Finished, RunError> {
        let Program::Files {
            entry,
            files: contents,
            ..
        } = &plan.program
        else {
            return Err(RunError::Unrecorded(
                "only a WebAssembly module of the request's files runs in the service".into(),
            ));
        };
        let id = invocation_id();
        let tenant = actor.tenant.clone();
        let entry_path = entry;
        let entry = format!("./{}", entry_path.display());
        let mut argv = vec![entry.clone()];
        argv.extend(plan.args.iter().cloned());
        let request = run_request(plan, files, argv.clone());
        let backend = request.backend.clone().unwrap_or_else(|| "wasm".into());
        let mut audit = self.audit.handle();
        let mut stderr: Vec<u8> = Vec::new();
        let say = |stderr: &mut Vec<u8>, line: &str| {
            stderr.extend_from_slice(
                format!("warden: {}\n", warden_core::printable(line)).as_bytes(),
            );
        };
        let record =
            |audit: &mut Audit, report: &mut Report, argv: &[String]| -> Result<(), RunError> {
                let facts = RunFacts {
                    principal: &actor.principal,
                    tenant: &tenant,
                    argv,
                    sealed: None,
                };
                audit.record_run(&facts, report).map_err(|e| {
                    RunError::Unrecorded(format!(
                        "the run ended but its audit entry could not be written: {e}"
                    ))
                })
            };
        let ended = |mut report: Report,
                     audit: &mut Audit,
                     stdout: Vec<u8>,
                     mut stderr: Vec<u8>,
                     argv: &[String]|
         -> Result<Finished, RunError> {
            record(audit, &mut report, argv)?;
            closing_lines(&report, &mut stderr);
            Ok(Finished {
                stdout,
                stderr,
                report: serde_json::to_value(&report)
                    .map_err(|e| RunError::Unrecorded(format!("the report is not JSON: {e}")))?,
            })
        };

        let mut prepared = match warden_engine::prepare(&request, id.clone()) {
            Ok(p) => p,
            Err(e) => {
                say(&mut stderr, &e.to_string());
                let report = Report::setup_error(e.to_string(), id, &backend);
                return ended(report, &mut audit, Vec::new(), stderr, &argv);
            }
        };
        prepared.invocation.tenant = tenant.clone();
        // RBAC: may this principal read each secret the run is granted?
        let granted = warden_engine::secrets::granted_secrets(&prepared.invocation.capabilities);
        if !granted.is_empty() {
            let gate = match gates.current() {
                Ok(g) => g,
                Err(e) => {
                    let message = format!("{e:#}");
                    say(&mut stderr, &message);
                    let report = Report::setup_error(message, id, &backend);
                    return ended(report, &mut audit, Vec::new(), stderr, &argv);
                }
            };
            for (name, _) in &granted {
                let action = warden_authz::Action::SecretRead;
                let resource = warden_authz::Resource::new(action.resource_kind(), name, &tenant);
                if let Err(denied) =
                    gate.check(actor, &tenant, action, resource, &[], 0, Some(&mut audit))
                {
                    say(&mut stderr, &denied.0);
                    let mut report = Report::refused(denied.0, id, &backend);
                    report.capabilities = prepared.capabilities.clone();
                    return ended(report, &mut audit, Vec::new(), stderr, &argv);
                }
            }
        }
        let leases = if granted.is_empty() {
            None
        } else {
            match warden_engine::secrets::lease_for(&mut prepared, &self.state, &tenant) {
                Ok(l) => l,
                Err(e) => {
                    let message = format!("cannot lease the granted secrets: {e}");
                    say(&mut stderr, &message);
                    let report = Report::setup_error(message, id, &backend);
                    return ended(report, &mut audit, Vec::new(), stderr, &argv);
                }
            }
        };
        let entry_bytes = contents
            .iter()
            .find(|(name, _)| name == entry_path)
            .map(|(_, bytes)| bytes.as_slice());
        let result = self.run_module(&prepared, &files.join(entry_path), entry_bytes, stdin);
        if let Some(l) = &leases {
            l.release();
        }
        let argv: Vec<String> = match &leases {
            Some(l) => argv.iter().map(|a| l.redact(a)).collect(),
            None => argv,
        };
        let (mut report, stdout, mut run_stderr) = match result {
            Ok(done) => done,
            Err(e) => {
                let message = match &leases {
                    Some(l) => l.redact(&e.to_string()),
                    None => e.to_string(),
                };
                say(&mut stderr, &message);
                let report = Report::setup_error(message, id, &backend);
                return ended(report, &mut audit, Vec::new(), stderr, &argv);
            }
        };
        if let Some(l) = &leases {
            l.redact_report(&mut report);
        }
        run_stderr.extend_from_slice(&stderr);
        ended(report, &mut audit, stdout, run_stderr, &argv)
    }

    /// Runs the module of `prepared` (at `path`; its bytes, when known,
    /// find it compiled already) with `stdin`, capturing its
    /// output: the report, stdout and stderr.
    fn run_module(
        &self,
        prepared: &warden_engine::Prepared,
        path: &Path,
        bytes: Option<&[u8]>,
        stdin: &[u8],
    ) -> Result<(Report, Vec<u8>, Vec<u8>), warden_core::BackendError> {
        let inv = &prepared.invocation;
        let kind = self.wasm.engine_kind(inv);
        let key = bytes.map(|b| ModuleKey {
            sha256: sha2::Sha256::digest(b).into(),
            extension: path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default()
                .to_string(),
            kind,
        });
        let (io, out, err) =
            warden_wasm::RunIo::captured(warden_wasm::Input::Bytes(stdin.to_vec()));
        let cached = key.as_ref().and_then(|k| {
            let modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
            modules.map.get(k).cloned()
        });
        let outcome = match cached {
            Some(module) => self.wasm.run_prepared(&module, inv, &io)?,
            None => {
                // Compiled (or loaded from the disk cache) within the
                // run's deadline, as `warden run` does; kept once it
                // compiled.
                let outcome = self.wasm.run_with_io(inv, &io)?;
                if let (Some(key), Ok(module)) = (key, self.wasm.prepare(path, kind)) {
                    self.keep(key, module);
                }
                outcome
            }
        };
        let report = warden_engine::report_of(prepared, outcome);
        Ok((report, out.contents(), err.contents()))
    }

    fn keep(&self, key: ModuleKey, module: PreparedModule) {
        let mut modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        if modules.map.insert(key.clone(), module).is_none() {
            modules.order.push_back(key);
        }
        while modules.order.len() > MODULES_KEPT {
            if let Some(old) = modules.order.pop_front() {
                modules.map.remove(&old);
            }
        }
    }
}

/// The request `warden run` gets for this plan from the service's child
/// command line (see [`crate::runner::command_line`]).
fn run_request(plan: &Plan, files: &Path, argv: Vec<String>) -> warden_engine::RunRequest {
    let mut allow = vec![format!("fs:read:{}", files.display())];
    allow.extend(plan.capabilities.iter().cloned());
    let by_name = argv
        .first()
        .is_some_and(|e| e.ends_with(".wasm") || e.ends_with(".wat"));
    warden_engine::RunRequest {
        argv,
        allow,
        limits: warden_policy::Limits {
            wall_time: Some(plan.wall_time),
            cpu_time: plan.cpu_time,
            memory: plan.memory_bytes,
            pids: plan.pids.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            output: Some(plan.output_bytes),
            ..warden_policy::Limits::default()
        },
        backend: (!by_name).then(|| "wasm".to_string()),
        cwd: files.to_path_buf(),
        ..warden_engine::RunRequest::default()
    }
}

/// What `warden run` writes on its stderr after the program's own
/// output, with `--quiet`: what the guest logged through the host, and
/// the error line.
fn closing_lines(report: &Report, stderr: &mut Vec<u8>) {
    let mut line = |text: String| {
        stderr.extend_from_slice(text.as_bytes());
        stderr.push(b'\n');
    };
    for record in &report.logs {
        line(format!(
            "warden: log: {}: {}",
            record.level.as_str(),
            warden_core::printable(&record.message)
        ));
    }
    if report.logs_truncated {
        line("warden: log: (records dropped or cut at the log cap)".into());
    }
    if let Some(error) = &report.error {
        let first = error.lines().next().unwrap_or_default();
        line(format!(
            "warden: {}",
            warden_core::printable(&format!("{}: {first}", report.status.as_str()))
        ));
    }
}

/// 128 random bits as hex, as `warden run` names an invocation.
fn invocation_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    hex::encode(bytes)
}
