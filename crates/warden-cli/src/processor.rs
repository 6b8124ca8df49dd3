//! `warden processor check|add|list|show|rm` and `warden invoke`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden_core::Report;
use warden_engine::audit::{Audit, RunFacts};
use warden_engine::invoke::{self, InvokeError, InvokeRequest};
use warden_engine::Engine;
use warden_processor::{read_processor, render_all};

use crate::app::{
    conclude, hand_over_to_full_binary, invocation_id, say, state_dir, ReportTarget, EXIT_FAILED,
    EXIT_REFUSED, EXIT_WARDEN_ERROR,
};
use crate::cli::{InvokeArgs, ProcessorCommand};
use crate::evidence::now_secs;

/// Largest `--input` file: it is read whole (the bytes hashed are the
/// bytes the processor reads).
const MAX_INPUT_BYTES: u64 = 256 << 20;

/// `DIR.sig` beside DIR (what `warden sign --type processor DIR` writes).
pub(crate) fn dir_signature_path(dir: &Path) -> PathBuf {
    let text = dir.as_os_str().to_string_lossy();
    let trimmed = text.trim_end_matches('/');
    let base = if trimmed.is_empty() { "/" } else { trimmed };
    PathBuf::from(format!("{base}.sig"))
}

fn read_signature(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("malformed envelope: {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(warden_trust::dsse::MAX_ENVELOPE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A manifest's problems, one `FILE:LINE:COLUMN: error: …` line each.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Diagnostics(String);

fn read_checked(
    dir: &Path,
) -> anyhow::Result<(warden_processor::Tree, warden_processor::Manifest)> {
    read_processor(dir).map_err(|d| Diagnostics(render_all(&d)).into())
}

/// `warden processor …`: exit 0, 1 naming the cause, or 126 for a refusal.
/// A manifest's diagnostics go to stdout one per line, as `policy check`'s.
pub(crate) fn processor(command: ProcessorCommand) -> ExitCode {
    match processor_command(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Diagnostics>().is_some() => {
            let mut out = std::io::stdout().lock();
            for line in e.to_string().lines() {
                let _ = writeln!(out, "{}", crate::app::printable(line));
            }
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            let refused = matches!(
                e.downcast_ref::<InvokeError>(),
                Some(InvokeError::Refused(_))
            ) || e.downcast_ref::<warden_engine::authz::Denied>().is_some();
            say(format!("{e:#}"));
            ExitCode::from(if refused { EXIT_REFUSED } else { EXIT_FAILED })
        }
    }
}

fn processor_command(command: ProcessorCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let actor = || crate::app::acting().map_err(|e| anyhow::anyhow!(e));
    match command {
        ProcessorCommand::Check { dir } => {
            let (tree, manifest) = read_checked(&dir)?;
            writeln!(
                out,
                "ok: {} ({}), {} files, {}",
                manifest.id(),
                manifest.kind.as_str(),
                tree.files().len(),
                tree.digest()
            )?;
        }
        ProcessorCommand::Add { dir, sig, policy } => {
            let state = state_dir()?;
            let (tree, manifest) = read_checked(&dir)?;
            let id = manifest.id();
            let policy = invoke::policy_in_force(policy.as_deref(), &state);
            let policy = invoke::load_policy_in_force(policy.as_deref())?;
            let required = invoke::signatures_required(policy.as_ref(), &state);
            let sig_path = sig.unwrap_or_else(|| dir_signature_path(&dir));
            let envelope = if sig_path.exists() {
                Some(read_signature(&sig_path)?)
            } else {
                None
            };
            let mut audit = Audit::open(&state)?;
            let who = actor()?;
            crate::app::authorize(
                &who,
                &who.tenant,
                warden_authz::Action::ProcessorAdd,
                &manifest.name,
                Some(&mut audit),
            )?;
            let signer = match invoke::check_signature(
                &state,
                &id,
                tree.digest_hex(),
                envelope.as_deref(),
                required,
                now_secs(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    // The refusal is recorded, as a refused run is.
                    let _ = audit.record(
                        "processor",
                        serde_json::json!({
                                "action": "add",
                                "principal": actor()?.principal,
                        "tenant": actor()?.tenant,
                                "processor": id,
                                "digest": tree.digest(),
                                "refusal": e.to_string(),
                            }),
                    );
                    return Err(e.into());
                }
            };
            let registry = invoke::registry_for(&state, &actor()?.tenant)?;
            let record = registry.add(&tree, &manifest, signer.as_deref(), envelope.as_deref())?;
            let entry = audit.record(
                "processor",
                serde_json::json!({
                    "action": "add",
                    "principal": actor()?.principal,
                    "tenant": actor()?.tenant,
                    "processor": record.id(),
                    "digest": record.digest,
                    "signer": record.signer,
                    "kind": record.summary.kind.as_str(),
                    "capabilities": record.summary.capabilities,
                    "sbom": record.summary.sbom.as_ref().and_then(|s| s.sha256.clone()),
                }),
            )?;
            writeln!(
                out,
                "added {} {} ({}) (audit entry {})",
                record.id(),
                record.digest,
                match &record.signer {
                    Some(k) => format!("signed by {k}"),
                    None => "unsigned".into(),
                },
                entry.index
            )?;
        }
        ProcessorCommand::List => {
            let registry = invoke::registry_for(&state_dir()?, &actor()?.tenant)?;
            for r in registry.list()? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    r.id(),
                    r.digest,
                    r.summary.kind.as_str(),
                    r.signer.as_deref().unwrap_or("unsigned")
                )?;
            }
        }
        ProcessorCommand::Show { spec } => {
            let registry = invoke::registry_for(&state_dir()?, &actor()?.tenant)?;
            let record = registry.resolve(&spec)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&record)?)?;
        }
        ProcessorCommand::Rm { spec } => {
            let state = state_dir()?;
            let (name, version) = spec.split_once('@').ok_or_else(|| {
                anyhow::anyhow!("{spec:?}: give NAME@VERSION (rm takes one version at a time)")
            })?;
            let mut audit = Audit::open(&state)?;
            let who = actor()?;
            crate::app::authorize(
                &who,
                &who.tenant,
                warden_authz::Action::ProcessorRm,
                name,
                Some(&mut audit),
            )?;
            let registry = invoke::registry_for(&state, &who.tenant)?;
            let record = registry.remove(name, version)?;
            let entry = audit.record(
                "processor",
                serde_json::json!({
                    "action": "rm",
                    "principal": actor()?.principal,
                    "tenant": actor()?.tenant,
                    "processor": record.id(),
                    "digest": record.digest,
                }),
            )?;
            writeln!(
                out,
                "removed {} {} (audit entry {})",
                record.id(),
                record.digest,
                entry.index
            )?;
        }
    }
    Ok(())
}

/// Reads `--input` whole into a sealed memfd and makes it Warden's stdin,
/// which the run hands to the processor: what it reads is exactly the
/// bytes hashed. Returns their hex SHA-256, and the bytes.
fn input_as_stdin(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    use rustix::fs::{MemfdFlags, SealFlags};
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("--input {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("--input {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        anyhow::bail!(
            "--input {}: larger than {MAX_INPUT_BYTES} bytes; give it on stdin instead",
            path.display()
        );
    }
    let memfd = rustix::fs::memfd_create(
        "warden-input",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut written = 0;
    while written < bytes.len() {
        written += rustix::io::write(&memfd, &bytes[written..])?;
    }
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    rustix::fs::seek(&memfd, rustix::fs::SeekFrom::Start(0))?;
    rustix::stdio::dup2_stdin(&memfd)?;
    use sha2::Digest as _;
    Ok((hex::encode(sha2::Sha256::digest(&bytes)), bytes))
}

/// Seals the values the manifest marks confidential: the argv, and each
/// `/input/...` pointer into the input read as JSON (a pointer the input
/// does not have is left out), and then also the input's digest, which
/// the entry would otherwise show in the clear
/// ([`warden_engine::audit::SEALED_STDIN`]). `None` when nothing is
/// confidential. `input`: its hex SHA-256 and its bytes.
fn seal_confidential(
    state: &Path,
    confidential: &[String],
    argv: &[String],
    input: Option<(&str, &[u8])>,
) -> anyhow::Result<Option<(String, std::collections::BTreeMap<String, String>)>> {
    if confidential.is_empty() {
        return Ok(None);
    }
    let doc: Option<serde_json::Value> = input.and_then(|(_, b)| serde_json::from_slice(b).ok());
    let mut fields = std::collections::BTreeMap::new();
    if let Some((digest, _)) = input {
        if confidential.iter().any(|f| f.starts_with("/input")) {
            fields.insert(
                warden_engine::audit::SEALED_STDIN.to_string(),
                serde_json::json!(digest),
            );
        }
    }
    for field in confidential {
        if field == "argv" {
            fields.insert(field.clone(), serde_json::json!(argv));
        } else if let (Some(pointer), Some(doc)) = (field.strip_prefix("/input"), &doc) {
            if let Some(v) = warden_engine::seal::pointer(doc, pointer) {
                fields.insert(field.clone(), v.clone());
            }
        }
    }
    Ok(Some(warden_engine::seal::seal(state, &fields)?))
}

/// Keeps a bounded copy of what goes to this process's stdout: fd 1 is a
/// pipe that a thread drains into the real stdout while it keeps the
/// first [`KEPT_OUTPUT`] bytes.
struct StdoutTee {
    real: std::os::fd::OwnedFd,
    reader: Option<std::io::PipeReader>,
    thread: Option<std::thread::JoinHandle<Vec<u8>>>,
}

/// The most output kept to find confidential fields in.
const KEPT_OUTPUT: usize = 1 << 20;

impl StdoutTee {
    /// Makes fd 1 the pipe (no thread yet).
    fn install() -> std::io::Result<StdoutTee> {
        use std::os::fd::AsFd;
        let real = std::io::stdout().as_fd().try_clone_to_owned()?;
        let (reader, writer) = std::io::pipe()?;
        rustix::stdio::dup2_stdout(&writer)?;
        Ok(StdoutTee {
            real,
            reader: Some(reader),
            thread: None,
        })
    }

    /// Starts draining the pipe.
    fn start(&mut self) -> std::io::Result<()> {
        let Some(mut reader) = self.reader.take() else {
            return Ok(());
        };
        let mut real = std::fs::File::from(self.real.try_clone()?);
        self.thread = Some(std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut kept = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = real.write_all(&buf[..n]);
                        let room = KEPT_OUTPUT.saturating_sub(kept.len()).min(n);
                        kept.extend_from_slice(&buf[..room]);
                    }
                }
            }
            kept
        }));
        Ok(())
    }

    /// Puts the real stdout back and returns what was kept (nothing if the
    /// copy never started, or the output was cut at the bound: a cut JSON
    /// document has no fields to find).
    fn finish(mut self) -> Vec<u8> {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // Closes the pipe's last write end: the thread sees its end.
        let _ = rustix::stdio::dup2_stdout(&self.real);
        self.reader = None;
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .filter(|kept| kept.len() < KEPT_OUTPUT)
            .unwrap_or_default()
    }
}

/// The caller's bounds of an invocation: `--ceiling` parsed (relative
/// paths against `cwd`; `None` without any) and the limit flags, lowered
/// by the ceiling's limit capabilities.
fn caller_bounds(
    args: &InvokeArgs,
    cwd: &Path,
) -> Result<
    (
        Option<Vec<warden_policy::Capability>>,
        warden_policy::Limits,
    ),
    String,
> {
    use warden_policy::Capability;
    let mut limits = warden_policy::Limits {
        memory: args.memory,
        cpu_time: args.cpu_time,
        wall_time: args.wall_time,
        pids: args.pids,
        output: args.output_limit,
        ..warden_policy::Limits::default()
    };
    if args.ceiling.is_empty() {
        return Ok((None, limits));
    }
    let mut ceiling = Vec::with_capacity(args.ceiling.len());
    for text in &args.ceiling {
        let cap: Capability = text.parse().map_err(|e| format!("--ceiling {text}: {e}"))?;
        match &cap {
            Capability::MemLimit(b) => {
                limits.memory = Some(limits.memory.map_or(*b, |m| m.min(*b)))
            }
            Capability::CpuLimit(p) => {
                limits.cpu_percent = Some(limits.cpu_percent.map_or(*p, |m| m.min(*p)))
            }
            Capability::TimeLimit(d) => {
                limits.wall_time = Some(limits.wall_time.map_or(*d, |m| m.min(*d)))
            }
            Capability::ProcLimit(n) => limits.pids = Some(limits.pids.map_or(*n, |m| m.min(*n))),
            _ => {}
        }
        ceiling.push(cap.with_base(cwd));
    }
    Ok((Some(ceiling), limits))
}

/// `warden invoke`.
pub(crate) fn invoke(args: InvokeArgs, engine: Engine, wasm_here: bool) -> ExitCode {
    let id = invocation_id();
    let report_target = match ReportTarget::open(args.report.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            say(e);
            return ExitCode::from(EXIT_WARDEN_ERROR);
        }
    };
    let (actor, auth_error) = match crate::app::acting() {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(e)),
    };
    let principal = actor
        .as_ref()
        .map_or_else(|| "unauthenticated".to_string(), |a| a.principal.clone());
    let tenant = actor.as_ref().map_or_else(
        || warden_core::DEFAULT_TENANT.to_string(),
        |a| a.tenant.clone(),
    );
    let argv: Vec<String> = ["invoke".to_string(), args.spec.clone()]
        .into_iter()
        .chain(args.args.iter().cloned())
        .collect();
    let facts = RunFacts {
        principal: &principal,
        tenant: &tenant,
        argv: &argv,
        sealed: None,
    };
    // Ends a run that did not start: the report (refused or error) is
    // recorded if the ledger can take it, then written.
    let stop = |mut report: Report, audit: Option<&mut Audit>, facts: &RunFacts<'_>| -> ExitCode {
        if let Some(message) = &report.error {
            say(message);
        }
        let recorded = match audit {
            Some(a) => a.record_run(facts, &mut report).map_err(|e| e.to_string()),
            None => state_dir()
                .and_then(|s| Ok(Audit::open(&s)?))
                .map_err(|e| e.to_string())
                .and_then(|mut a| a.record_run(facts, &mut report).map_err(|e| e.to_string())),
        };
        if let Err(e) = recorded {
            say(format!("it could not be recorded in the audit ledger: {e}"));
        }
        if let Err(e) = report_target.write(&report) {
            say(e);
        }
        ExitCode::from(if report.refusal.is_some() {
            EXIT_REFUSED
        } else {
            EXIT_WARDEN_ERROR
        })
    };
    if let Some(why) = auth_error {
        return stop(Report::refused(why, id, ""), None, &facts);
    }
    let state = match state_dir() {
        Ok(s) => s,
        Err(e) => return stop(Report::setup_error(e.to_string(), id, ""), None, &facts),
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            let message = format!("cannot determine the working directory: {e}");
            return stop(Report::setup_error(message, id, ""), None, &facts);
        }
    };
    let policy = invoke::policy_in_force(args.policy.as_deref(), &state);
    let (ceiling, limits) = match caller_bounds(&args, &cwd) {
        Ok(b) => b,
        Err(why) => return stop(Report::setup_error(why, id, ""), None, &facts),
    };
    let request = InvokeRequest {
        spec: &args.spec,
        tenant: &tenant,
        policy: policy.as_deref(),
        args: args.args.clone(),
        state: &state,
        cwd,
        caller_env: std::env::vars().collect(),
        now: now_secs(),
        ceiling,
        limits,
    };
    let plan = match invoke::plan(&request) {
        Ok(p) => p,
        Err(InvokeError::Refused(why)) => return stop(Report::refused(why, id, ""), None, &facts),
        Err(InvokeError::Failed(why)) => {
            return stop(Report::setup_error(why, id, ""), None, &facts)
        }
    };
    let backend = plan.request.backend.clone().unwrap_or_default();
    if backend == "wasm" && !wasm_here {
        return hand_over_to_full_binary();
    }
    // The ledger, open before anything runs.
    let mut audit = match Audit::open(&state) {
        Ok(a) => a,
        Err(e) => {
            let message = format!(
                "cannot record the invocation in the audit ledger, so it is not started: {e}"
            );
            say(&message);
            let report = Report::setup_error(message, id, &backend);
            if let Err(e) = report_target.write(&report) {
                say(e);
            }
            return ExitCode::from(EXIT_WARDEN_ERROR);
        }
    };
    let with_processor = |mut r: Report| {
        r.processor = Some(plan.processor.clone());
        r
    };
    // RBAC: may this principal invoke this processor, with these grants,
    // on this much input; and read each secret it is granted?
    if let Some(actor) = &actor {
        let input_bytes = args
            .input
            .as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let mut resource = warden_authz::Resource::new(
            warden_authz::ResourceKind::Processor,
            &plan.processor.name,
            &tenant,
        );
        resource.tags = plan.loaded.manifest.tags.clone();
        let decided = crate::app::gate()
            .map_err(|e| e.to_string())
            .and_then(|gate| {
                gate.check(
                    actor,
                    &tenant,
                    warden_authz::Action::Invoke,
                    resource,
                    &plan.request.allow,
                    input_bytes,
                    Some(&mut audit),
                )
                .map_err(|d| d.0)?;
                for (name, _) in
                    warden_engine::secrets::granted_secrets(&plan.loaded.manifest.capabilities)
                {
                    crate::app::authorize(
                        actor,
                        &tenant,
                        warden_authz::Action::SecretRead,
                        &name,
                        Some(&mut audit),
                    )
                    .map_err(|e| format!("{e:#}"))?;
                }
                Ok(())
            });
        if let Err(why) = decided {
            let report = with_processor(Report::refused(why, id, &backend));
            return stop(report, Some(&mut audit), &facts);
        }
    }
    let input = match args.input.as_deref().map(input_as_stdin).transpose() {
        Ok(h) => h,
        Err(e) => {
            let report = with_processor(Report::setup_error(format!("{e:#}"), id, &backend));
            return stop(report, Some(&mut audit), &facts);
        }
    };
    // Confidential fields: sealed before the run, committed in its entry.
    let sealed = match seal_confidential(
        &state,
        &plan.loaded.manifest.confidential,
        &argv,
        input.as_ref().map(|(h, b)| (h.as_str(), b.as_slice())),
    ) {
        Ok(s) => s,
        Err(e) => {
            let report = with_processor(Report::setup_error(format!("{e:#}"), id, &backend));
            return stop(report, Some(&mut audit), &facts);
        }
    };
    let facts = RunFacts {
        sealed: sealed.as_ref(),
        ..facts
    };
    let input_sha256 = input.map(|(h, _)| h);
    let mut prepared = match warden_engine::prepare(&plan.request, id.clone()) {
        Ok(p) => p,
        Err(e) => {
            let report = with_processor(Report::setup_error(e.to_string(), id, &backend));
            return stop(report, Some(&mut audit), &facts);
        }
    };
    prepared.invocation.code = plan.code.clone();
    prepared.routing = plan.routing.clone();
    if args.explain {
        print!("{}", warden_engine::explain(&prepared));
        return ExitCode::SUCCESS;
    }
    // The tenant the invocation was authorized in owns its kv store.
    prepared.invocation.tenant = tenant.clone();
    // A script processor runs under the jail's interpreter by design: that
    // the caller's PATH would find another is no news here.
    prepared.notices.clear();
    let mut engine = engine
        .with_kv_dir(warden_engine::default_kv_dir())
        .with_interrupt_on_signals(true);
    let leases = match warden_engine::secrets::lease_for(&mut prepared, &state, &tenant) {
        Ok(l) => l,
        Err(e) => {
            let message = format!("cannot lease the granted secrets: {e}");
            let report = with_processor(Report::setup_error(message, id, &backend));
            return stop(report, Some(&mut audit), &facts);
        }
    };
    // Confidential output fields: what the program prints is also kept
    // (bounded) to find them in; the copy starts in the gate, once the
    // jail's init exists (no thread may exist when the jail forks).
    let wants_output = plan
        .loaded
        .manifest
        .confidential
        .iter()
        .any(|f| f.starts_with("/output"));
    let mut tee = match wants_output.then(StdoutTee::install).transpose() {
        Ok(t) => t,
        Err(e) => {
            let report = with_processor(Report::setup_error(
                format!("cannot keep the output for its confidential fields: {e}"),
                id,
                &backend,
            ));
            return stop(report, Some(&mut audit), &facts);
        }
    };
    let result = engine.run_gated(&prepared, &mut || {
        if let Some(t) = tee.as_mut() {
            t.start()
                .map_err(|e| format!("cannot copy the output: {e}"))?;
        }
        Ok(())
    });
    let kept = tee.map(StdoutTee::finish);
    // The run is over: its leases end, whatever happened.
    if let Some(l) = &leases {
        l.release();
    }
    let redact = |text: String| match &leases {
        Some(l) => l.redact(&text),
        None => text,
    };
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            let report = with_processor(Report::setup_error(redact(e.to_string()), id, &backend));
            return stop(report, Some(&mut audit), &facts);
        }
    };
    if let Some(l) = &leases {
        l.redact_report(&mut report);
    }
    report.processor = Some(plan.processor.clone());
    if let (Some(streams), Some(input)) = (report.streams.as_mut(), input_sha256) {
        streams.stdin.get_or_insert(input);
    }
    // Output fields, sealed now that they exist (with the output's digest,
    // which would otherwise show them to a guesser).
    let mut sealed = sealed.clone();
    if let (Some(kept), Some((seal_id, commitments))) = (kept, sealed.as_mut()) {
        let mut fields = std::collections::BTreeMap::new();
        if let Some(digest) = report.streams.as_ref().map(|s| s.stdout.clone()) {
            fields.insert(
                warden_engine::audit::SEALED_STDOUT.to_string(),
                serde_json::json!(digest),
            );
        }
        let doc: Option<serde_json::Value> = serde_json::from_slice(&kept).ok();
        for field in &plan.loaded.manifest.confidential {
            if let (Some(pointer), Some(doc)) = (field.strip_prefix("/output"), &doc) {
                if let Some(v) = warden_engine::seal::pointer(doc, pointer) {
                    fields.insert(field.clone(), v.clone());
                }
            }
        }
        match warden_engine::seal::seal_more(&state, seal_id, &fields) {
            Ok(more) => commitments.extend(more),
            Err(e) => {
                // Unsealed, the values must not enter the entry at all.
                let message = format!("cannot seal the confidential output fields: {e}");
                say(&message);
                report.error.get_or_insert(message);
                report.streams = None;
            }
        }
    }
    let facts = RunFacts {
        sealed: sealed.as_ref(),
        ..facts
    };
    let unrecorded = audit
        .record_run(&facts, &mut report)
        .err()
        .map(|e| format!("the run ended but its audit entry could not be written: {e}"));
    conclude(report, unrecorded, args.quiet, &report_target)
}
