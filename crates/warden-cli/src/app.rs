//! The command line of `warden` and `warden-wasm`. Thin: flags are parsed
//! here, everything else is the engine's.
//!
//! Two binaries share it. `warden` is built without the WASM backend, so
//! that it does not carry (and relocate at every start) wasmtime: a jail
//! run starts ≈ 0.3 ms sooner. When a run routes to the WASM backend, or
//! for `warden compile`, it executes `warden-wasm` from its own directory
//! with the same arguments; `warden-wasm` has every backend.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use warden_core::Report;
use warden_engine::{Engine, RunRequest};

use crate::cli::{Cli, Command, PolicyCommand, RunArgs};
use crate::evidence::{audit, finish, key, sign, trust, verify};

/// Exit status for Warden's own errors (bad flag, bad policy, setup failure).
pub(crate) const EXIT_WARDEN_ERROR: u8 = 125;

/// Which backends a binary carries. Chosen by each binary's `main` with a
/// constant, so that the linker sees only the engine constructor that
/// binary uses (and drops wasmtime from `warden`).
#[derive(Clone, Copy, Debug)]
pub struct Backends {
    /// Makes the engine: [`Engine::new`] or [`Engine::jail_only`].
    pub engine: fn() -> Engine,
    /// Whether WASM runs and `compile` happen in this process; if not,
    /// they are handed to the `warden-wasm` binary beside this one.
    pub wasm_here: bool,
}

impl Backends {
    /// `warden-wasm`: every backend in this process.
    pub const ALL: Backends = Backends {
        engine: Engine::new,
        wasm_here: true,
    };
    /// `warden`: the jail here, WebAssembly in `warden-wasm`.
    pub const JAIL_HERE: Backends = Backends {
        engine: Engine::jail_only,
        wasm_here: false,
    };
}

/// The name of the binary with every backend, looked up beside `warden`.
pub const FULL_BINARY: &str = "warden-wasm";

/// The name of the HTTP service's binary (`warden serve`), looked up beside `warden`.
pub const SERVE_BINARY: &str = "warden-serve";

pub fn main(backends: Backends) -> ExitCode {
    // Inside a gVisor sandbox, this binary is its init (never returns then).
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(warden_engine::GVISOR_INIT_FLAG))
    {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        warden_engine::run_gvisor_init_if_asked(&args);
    }
    // From the first instruction on: a SIGINT/SIGTERM/SIGHUP/SIGQUIT that
    // comes before a backend watches for them stays pending, so that the
    // run still ends with its report (they were lost in the first ~2 ms).
    let _ = warden_engine::hold_termination_signals(true);
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((mut cli, matches)) => {
            if let Command::Run(args) = &mut cli.command {
                if let Some(run) = matches.subcommand_matches("run") {
                    args.at_index = at_indices(run);
                }
            }
            cli
        }
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => EXIT_WARDEN_ERROR,
            };
            if code == 0 {
                let _ = e.print();
            } else if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                say("missing subcommand (see --help)");
            } else {
                let message = one_line(&e.render().to_string());
                say(&message);
                // A run whose flags were refused still leaves the report it
                // asked for, when its --report can be made out.
                if let Some(path) = report_flag(std::env::args_os().skip(1)) {
                    let report = Report::setup_error(message, invocation_id(), "");
                    // The bad command line is said; a report target that
                    // cannot take the report is not a second message.
                    let _ = ReportTarget::open(Some(&path)).and_then(|t| t.write(&report));
                }
            }
            return ExitCode::from(code);
        }
    };
    let needs_wasm = match &cli.command {
        Command::Run(args) => {
            warden_engine::route(args.backend.as_deref(), &args.command).is_ok_and(|b| b == "wasm")
        }
        Command::Compile { .. } => true,
        Command::Policy { .. }
        | Command::Key { .. }
        | Command::Sign { .. }
        | Command::Verify { .. }
        | Command::Trust { .. }
        | Command::Processor { .. }
        | Command::Tenant { .. }
        | Command::Principal { .. }
        | Command::Secret { .. }
        | Command::Lease { .. }
        | Command::Authz { .. }
        | Command::Serve { .. }
        | Command::Audit { .. } => false,
        // Known once the processor is resolved: `invoke` hands over then.
        Command::Invoke(_) => false,
    };
    if needs_wasm && !backends.wasm_here {
        return hand_over_to_full_binary();
    }
    // The HTTP service is its own binary (tokio and axum stay out of this one).
    if matches!(cli.command, Command::Serve { .. }) {
        return hand_over_to(SERVE_BINARY, "the HTTP service", "-p warden-server");
    }
    // --state DIR: for this process and whatever it starts (warden-wasm),
    // and for the jail's masks of Warden's own state.
    if let Some(state) = &cli.state {
        let absolute = std::env::current_dir()
            .map(|cwd| cwd.join(state))
            .unwrap_or_else(|_| state.clone());
        std::env::set_var("WARDEN_STATE", absolute);
    }
    // The trusted configuration, before anything else reads a setting (it
    // may remove settings variables it does not allow from the environment).
    if let Some(state) = warden_core::state::default_state_dir() {
        match warden_engine::config::load(&state, cli.config.as_deref()) {
            Ok((config, warnings)) => {
                for w in warnings {
                    say(w);
                }
                warden_engine::config::install(config);
            }
            Err(e) => {
                say(format!("configuration refused: {e}"));
                return ExitCode::from(EXIT_WARDEN_ERROR);
            }
        }
    } else if let Some(path) = &cli.config {
        say(format!(
            "--config {}: no state directory to apply it to (give --state DIR)",
            path.display()
        ));
        return ExitCode::from(EXIT_WARDEN_ERROR);
    }
    let engine = (backends.engine)();
    // Commands without a report end on these signals as any program does.
    if !matches!(cli.command, Command::Run(_) | Command::Invoke(_)) {
        let _ = warden_engine::hold_termination_signals(false);
    }
    match cli.command {
        Command::Run(args) => run(*args, engine),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => policy_check(&file),
        Command::Key { command } => key(command),
        Command::Sign {
            key,
            artifact_type,
            name,
            version,
            expires,
            file,
        } => finish(sign(&key, &artifact_type, name, version, expires, &file)),
        Command::Verify {
            artifact_type,
            sig,
            file,
        } => finish(verify(artifact_type.as_deref(), sig.as_deref(), &file)),
        Command::Trust { command } => finish(trust(command)),
        Command::Audit { command } => finish(audit(command)),
        Command::Processor { command } => crate::processor::processor(command),
        Command::Tenant { command } => finish(crate::identity::tenant(command)),
        Command::Principal { command } => finish(crate::identity::principal(command)),
        Command::Secret { command } => finish(crate::secrets::secret(command)),
        Command::Lease { command } => finish(crate::secrets::lease(command)),
        Command::Authz { rbac, command } => crate::authz::authz(rbac, command),
        Command::Serve { .. } => hand_over_to(SERVE_BINARY, "the HTTP service", "-p warden-server"),
        Command::Invoke(args) => crate::processor::invoke(args, engine, backends.wasm_here),
        Command::Compile {
            module,
            output,
            metered,
            wall_time,
        } => compile(&module, &output, metered, wall_time, engine),
    }
}

/// For each `--at`, the index (among the `--allow` flags) of the `--allow`
/// given last before it; `None` for an `--at` before any `--allow`.
fn at_indices(run: &clap::ArgMatches) -> Vec<Option<usize>> {
    let allows: Vec<usize> = run.indices_of("allow").map_or(Vec::new(), |i| i.collect());
    run.indices_of("at").map_or(Vec::new(), |ats| {
        ats.map(|at| allows.iter().rposition(|a| *a < at)).collect()
    })
}

/// The flags of `warden run` that take a value (in `cli.rs`).
const RUN_FLAGS_WITH_VALUES: &[&str] = &[
    "--policy",
    "--allow",
    "--at",
    "--memory",
    "--cpu-time",
    "--wall-time",
    "--pids",
    "--output-limit",
    "--file-size",
    "--open-files",
    "--tmpfs",
    "--env",
    "--workdir",
    "--fuel",
    "--module",
    "--tenant",
    "--kv-dir",
    "--backend",
];

/// The `--report` value of a `warden run` command line that clap refused:
/// looked for between `run` and the program (`--`, or a word that is
/// neither a flag nor a flag's value, ends the search).
fn report_flag(args: impl Iterator<Item = std::ffi::OsString>) -> Option<std::path::PathBuf> {
    let mut args = args.skip_while(|a| a != "run").skip(1);
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            return None;
        }
        if text == "--report" {
            return args.next().map(Into::into);
        }
        if let Some(value) = text.strip_prefix("--report=") {
            return Some(value.into());
        }
        if !text.starts_with('-') {
            return None;
        }
        if RUN_FLAGS_WITH_VALUES.contains(&text) {
            args.next();
        }
    }
    None
}

/// clap's message for a bad command line, as one line: the lines of its
/// first paragraph (which name the cause, and for a missing argument which
/// one) without the `error:` prefix; the tip and usage that follow are left
/// to `--help`.
fn one_line(rendered: &str) -> String {
    let cause: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let cause = cause.join(" ");
    let cause = cause.strip_prefix("error: ").unwrap_or(&cause);
    if cause.is_empty() {
        "invalid command line (see --help)".to_owned()
    } else {
        format!("{cause} (see --help)")
    }
}

/// Replaces this process with `warden-wasm` (from the directory of the
/// running binary) and the same arguments. Nothing has been opened or
/// written yet, so the other binary starts from the same state.
pub(crate) fn hand_over_to_full_binary() -> ExitCode {
    hand_over_to(FULL_BINARY, "the WebAssembly backend", "-p warden-cli")
}

/// Replaces this process with the binary `name` beside it (`what` it is,
/// and the `cargo build` flags that build it, for the message when it is
/// missing) and the same arguments.
pub(crate) fn hand_over_to(name: &str, what: &str, package: &str) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let path = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(name),
        Err(e) => {
            say(format!("cannot locate the {name} binary ({what}): {e}"));
            return ExitCode::from(EXIT_WARDEN_ERROR);
        }
    };
    let mut command = std::process::Command::new(&path);
    command.args(std::env::args_os().skip(1));
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    let e = command.exec();
    say(format!(
        "cannot run {} ({what}, installed beside warden; `cargo build {package}` builds it): {e}",
        path.display()
    ));
    ExitCode::from(EXIT_WARDEN_ERROR)
}

pub(crate) fn invocation_id() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the report goes, fixed before the program runs: the parent
/// directory is opened first, so that a program with write access near the
/// report path cannot redirect the report by planting symlinks, and
/// whatever cannot take the report is refused before the program starts.
pub(crate) enum ReportTarget {
    None,
    Stderr,
    /// A regular file, or none yet: written beside it and renamed over it.
    File {
        dir: std::os::fd::OwnedFd,
        name: std::ffi::OsString,
        shown: std::path::PathBuf,
    },
    /// A pipe or character device the caller named (`/dev/stdout`,
    /// `/dev/fd/3`, a FIFO): opened before the run and written in place,
    /// never replaced.
    Stream {
        file: std::fs::File,
        shown: std::path::PathBuf,
    },
}

impl ReportTarget {
    pub(crate) fn open(path: Option<&Path>) -> anyhow::Result<ReportTarget> {
        use rustix::fs::{AtFlags, FileType, Mode, OFlags};
        let Some(path) = path else {
            return Ok(ReportTarget::None);
        };
        if path == Path::new("-") {
            return Ok(ReportTarget::Stderr);
        }
        let shown = path.to_path_buf();
        let bad = |why: String| anyhow::anyhow!("--report {}: {why}", path.display());
        let name = path
            .file_name()
            .ok_or_else(|| bad("not a file name".into()))?
            .to_os_string();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = rustix::fs::open(
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| bad(format!("{}: {e}", parent.display())))?;
        // Opened now, written in place after the run. `extra`: NOFOLLOW for
        // a device or FIFO named directly; APPEND for `/dev/fd/N` of a file
        // the caller opened (`3>r.json`), so that whatever else that
        // descriptor carries stays intact.
        let stream = |extra: OFlags| -> anyhow::Result<ReportTarget> {
            // Non-blocking so that a FIFO without a reader is an error now
            // (ENXIO) rather than a hang; cleared before the report is written.
            let flags =
                OFlags::WRONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC | extra;
            let fd = rustix::fs::openat(&dir, name.as_os_str(), flags, Mode::empty())
                .map_err(|e| bad(e.to_string()))?;
            rustix::fs::fcntl_setfl(&fd, OFlags::WRONLY | (extra & OFlags::APPEND))
                .map_err(|e| bad(e.to_string()))?;
            Ok(ReportTarget::Stream {
                file: std::fs::File::from(fd),
                shown: shown.clone(),
            })
        };
        let is_stream = |t: FileType| matches!(t, FileType::CharacterDevice | FileType::Fifo);
        match rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(bad(e.to_string())),
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => {}
                t if is_stream(t) => return stream(OFlags::NOFOLLOW),
                // `/dev/stdout`, `/dev/fd/N`, `/proc/self/fd/N`: the caller's
                // own descriptors, followed. A symlink anywhere else may have
                // been planted by an earlier run: it is replaced, not followed.
                FileType::Symlink => {
                    let under_dev_or_proc = std::fs::canonicalize(parent)
                        .is_ok_and(|p| p.starts_with("/dev") || p.starts_with("/proc"));
                    let target = rustix::fs::statat(&dir, name.as_os_str(), AtFlags::empty())
                        .map(|t| FileType::from_raw_mode(t.st_mode));
                    match target {
                        Ok(t) if under_dev_or_proc && is_stream(t) => {
                            return stream(OFlags::empty())
                        }
                        Ok(FileType::RegularFile) if under_dev_or_proc => {
                            return stream(OFlags::APPEND)
                        }
                        _ => {}
                    }
                }
                FileType::Directory => return Err(bad("is a directory".into())),
                _ => return Err(bad("not a regular file, pipe or character device".into())),
            },
        }
        // The report is written after the run: make sure now that it can be.
        rustix::fs::accessat(
            &dir,
            ".",
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            AtFlags::EACCESS,
        )
        .map_err(|e| bad(format!("{}: {e}", parent.display())))?;
        Ok(ReportTarget::File { dir, name, shown })
    }

    /// Writes the report. A file target gets a temporary file beside it,
    /// renamed over it: the rename replaces whatever entry is there (a
    /// planted symlink included) instead of following it.
    pub(crate) fn write(&self, report: &Report) -> anyhow::Result<()> {
        use rustix::fs::{Mode, OFlags};
        let json = format!("{}\n", report.to_json());
        match self {
            ReportTarget::None => Ok(()),
            ReportTarget::Stderr => {
                std::io::stderr().lock().write_all(json.as_bytes())?;
                Ok(())
            }
            ReportTarget::Stream { file, shown } => (&*file)
                .write_all(json.as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write report {}: {e}", shown.display())),
            ReportTarget::File { dir, name, shown } => {
                let fail = |e: std::io::Error| {
                    anyhow::anyhow!("cannot write report {}: {e}", shown.display())
                };
                let mut tmp = name.clone();
                tmp.push(format!(".{}.tmp", invocation_id()));
                let fd = rustix::fs::openat(
                    dir,
                    tmp.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map_err(|e| fail(e.into()))?;
                let mut file = std::fs::File::from(fd);
                let written = file.write_all(json.as_bytes());
                drop(file);
                if let Err(e) = written.and_then(|()| {
                    rustix::fs::renameat(dir, tmp.as_os_str(), dir, name.as_os_str())
                        .map_err(Into::into)
                }) {
                    let _ =
                        rustix::fs::unlinkat(dir, tmp.as_os_str(), rustix::fs::AtFlags::empty());
                    return Err(fail(e));
                }
                Ok(())
            }
        }
    }
}

fn run(args: RunArgs, engine: Engine) -> ExitCode {
    let id = invocation_id();
    let quiet = args.quiet;
    let explain = args.explain;
    let backend = warden_engine::route(args.backend.as_deref(), &args.command)
        .unwrap_or_else(|_| args.backend.clone().unwrap_or_default());
    let report_target = match ReportTarget::open(args.report.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            say(e);
            return ExitCode::from(EXIT_WARDEN_ERROR);
        }
    };
    // The audit ledger: a run that could not be recorded is not started.
    // Checked now (cheap); opened on first use: for the run itself, while
    // its sandbox is being built (the engine's gate), off the start path.
    let unrecordable = |e: &dyn std::fmt::Display| {
        format!(
            "cannot record the run in the audit ledger, so it is not started: {e:#} (--no-audit runs it unrecorded)"
        )
    };
    let ledger_state = if args.no_audit {
        None
    } else {
        match state_dir().and_then(|s| {
            warden_engine::audit::Audit::check(&s)?;
            Ok(s)
        }) {
            Ok(s) => Some(s),
            Err(e) => {
                let message = unrecordable(&format!("{e:#}"));
                say(&message);
                let report = Report::setup_error(message, id.clone(), &backend);
                if let Err(e) = report_target.write(&report) {
                    say(e);
                }
                return ExitCode::from(EXIT_WARDEN_ERROR);
            }
        }
    };
    let audit: std::cell::RefCell<Option<warden_engine::audit::Audit>> = Default::default();
    // Opens the ledger if it is wanted and not open yet.
    let open_audit = || -> Result<(), String> {
        let Some(state) = &ledger_state else {
            return Ok(());
        };
        if audit.borrow().is_some() {
            return Ok(());
        }
        let opened =
            warden_engine::audit::Audit::open_checked(state).map_err(|e| unrecordable(&e))?;
        *audit.borrow_mut() = Some(opened);
        Ok(())
    };
    let (actor, auth_error) = match acting() {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(e)),
    };
    let principal = actor
        .as_ref()
        .map_or_else(|| "unauthenticated".to_string(), |a| a.principal.clone());
    let tenant = args
        .tenant
        .clone()
        .or_else(|| actor.as_ref().map(|a| a.tenant.clone()))
        .unwrap_or_else(|| warden_core::DEFAULT_TENANT.to_string());
    let argv = args.command.clone();
    // The run's leased secrets, once there are any: redacted from its
    // argv in the ledger too.
    let leases: std::cell::RefCell<Option<warden_engine::secrets::Leases>> = Default::default();
    // Appends the run's entry, durable before the report is written.
    let record = |report: &mut Report| -> Result<(), String> {
        open_audit()?;
        let mut audit = audit.borrow_mut();
        let Some(a) = audit.as_mut() else {
            return Ok(());
        };
        let redacted: Vec<String>;
        let argv: &[String] = match leases.borrow().as_ref() {
            Some(l) => {
                redacted = argv.iter().map(|a| l.redact(a)).collect();
                &redacted
            }
            None => &argv,
        };
        let facts = warden_engine::audit::RunFacts {
            principal: &principal,
            tenant: &tenant,
            argv,
            sealed: None,
        };
        a.record_run(&facts, report)
            .map_err(|e| format!("the run ended but its audit entry could not be written: {e}"))
    };
    let fail = |message: String| {
        say(&message);
        let mut report = Report::setup_error(message, id.clone(), &backend);
        if let Err(e) = record(&mut report) {
            say(e);
        }
        if let Err(e) = report_target.write(&report) {
            say(e);
        }
        ExitCode::from(EXIT_WARDEN_ERROR)
    };
    // Who is acting, before anything else: a bad key, or a principal
    // asking for another tenant, is refused (and recorded).
    let refusal = auth_error.or_else(|| {
        let a = actor.as_ref()?;
        (!a.os_user && tenant != a.tenant).then(|| {
            format!(
                "principal {} belongs to tenant {}, not {tenant}",
                a.principal, a.tenant
            )
        })
    });
    if let Some(why) = refusal {
        say(&why);
        let mut report = Report::refused(why, id.clone(), &backend);
        if let Err(e) = record(&mut report) {
            say(e);
        }
        if let Err(e) = report_target.write(&report) {
            say(e);
        }
        return ExitCode::from(EXIT_REFUSED);
    }
    if backend != "wasm" && args.kv_dir.is_some() {
        return fail(
            "--kv-dir applies to WebAssembly modules only (backend wasm): the key-value store is a WASM host capability".into(),
        );
    }
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot determine the working directory: {e}")),
    };
    let mut at = Vec::new();
    for (path, of) in args.at.iter().zip(&args.at_index) {
        match of {
            Some(i) => at.push((*i, path.clone())),
            None => {
                return fail(format!(
                    "--at {}: give it after the --allow fs:... grant it shows (e.g. --allow fs:read:./fixtures --at /data)",
                    path.display()
                ))
            }
        }
    }
    let request = RunRequest {
        argv: args.command,
        policy: args.policy,
        allow: args.allow,
        at,
        env: args.env,
        limits: warden_policy::Limits {
            memory: args.memory,
            cpu_time: args.cpu_time,
            wall_time: args.wall_time,
            pids: args.pids,
            cpu_percent: None,
            output: args.output_limit,
            file_size: args.file_size,
            open_files: args.open_files,
            tmpfs: args.tmpfs,
            // Set by net:limit capabilities.
            ..Default::default()
        },
        workdir: args.workdir,
        backend: args.backend,
        fuel: args.fuel,
        deterministic: args.deterministic,
        tenant: args.tenant,
        modules: args.modules,
        // Filled by leased secrets later.
        redact: Vec::new(),
        caller_env: std::env::vars().collect(),
        cwd: cwd.clone(),
        exact_grants: false,
    };
    let mut prepared = match warden_engine::prepare(&request, id.clone()) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    if explain {
        print!("{}", warden_engine::explain(&prepared));
        return ExitCode::SUCCESS;
    }
    // The run acts in the tenant it was authorized for (the acting
    // principal's, or --tenant for the OS user): whose key-value store a
    // guest reaches is that tenant's, never the default's.
    prepared.invocation.tenant = tenant.clone();
    if prepared.audit_required && ledger_state.is_none() {
        return refuse_unaudited(&prepared, &report_target, &principal, &tenant, &argv);
    }
    let kv_dir = args
        .kv_dir
        .map(|d| cwd.join(d))
        .or_else(warden_engine::default_kv_dir);
    // A SIGINT/SIGTERM/SIGHUP/SIGQUIT stops a WebAssembly run with a report,
    // as it does a jail.
    let mut engine = engine.with_kv_dir(kv_dir).with_interrupt_on_signals(true);
    // RBAC: may this principal read each secret the run is granted?
    if let Some(actor) = &actor {
        for (name, _) in warden_engine::secrets::granted_secrets(&prepared.invocation.capabilities)
        {
            if let Err(e) = open_audit() {
                return fail(e);
            }
            let mut audit = audit.borrow_mut();
            if let Err(e) = authorize(
                actor,
                &tenant,
                warden_authz::Action::SecretRead,
                &name,
                audit.as_mut(),
            ) {
                drop(audit);
                let why = format!("{e:#}");
                say(&why);
                let mut report = Report::refused(why, id.clone(), &backend);
                report.capabilities = prepared.capabilities.clone();
                if let Err(e) = record(&mut report) {
                    say(e);
                }
                if let Err(e) = report_target.write(&report) {
                    say(e);
                }
                return ExitCode::from(EXIT_REFUSED);
            }
        }
    }
    match state_dir().map_err(|e| e.to_string()).and_then(|state| {
        warden_engine::secrets::lease_for(&mut prepared, &state, &tenant)
            .map_err(|e| format!("cannot lease the granted secrets: {e}"))
    }) {
        Ok(l) => *leases.borrow_mut() = l,
        Err(e)
            if warden_engine::secrets::granted_secrets(&prepared.invocation.capabilities)
                .is_empty() =>
        {
            // No secret granted: a missing state directory is no matter.
            let _ = e;
        }
        Err(e) => return fail(e),
    }
    let result = engine.run_gated(&prepared, &mut || open_audit());
    // The run is over: its leases end, whatever happened.
    let done = leases.borrow();
    if let Some(l) = done.as_ref() {
        l.release();
    }
    let mut report = match result {
        Ok(r) => r,
        // The ledger could not be opened: nothing ran, and nothing can be
        // recorded.
        Err(warden_engine::EngineError::Backend(warden_core::BackendError::Gate(why))) => {
            drop(done);
            say(&why);
            let report = Report::setup_error(why, id.clone(), &backend);
            if let Err(e) = report_target.write(&report) {
                say(e);
            }
            return ExitCode::from(EXIT_WARDEN_ERROR);
        }
        Err(e) => {
            let message = match done.as_ref() {
                Some(l) => l.redact(&e.to_string()),
                None => e.to_string(),
            };
            drop(done);
            return fail(message);
        }
    };
    if let Some(l) = done.as_ref() {
        l.redact_report(&mut report);
    }
    drop(done);
    let unrecorded = record(&mut report).err();
    conclude(report, unrecorded, quiet, &report_target)
}

/// The end of a run, once its report is complete: what the guest logged,
/// the error line, the limits reached (unless `quiet`), a failed audit
/// entry; then the report, and the exit status.
pub(crate) fn conclude(
    mut report: Report,
    unrecorded: Option<String>,
    quiet: bool,
    report_target: &ReportTarget,
) -> ExitCode {
    // What the guest logged through the host, one line per record.
    {
        let mut err = std::io::stderr().lock();
        for record in &report.logs {
            let _ = writeln!(
                err,
                "warden: log: {}: {}",
                record.level.as_str(),
                printable(&record.message)
            );
        }
        if report.logs_truncated {
            let _ = writeln!(err, "warden: log: (records dropped or cut at the log cap)");
        }
    }
    if let Some(error) = &report.error {
        // One line here; the report keeps the whole message (e.g. a trap's backtrace).
        let first = error.lines().next().unwrap_or_default();
        say(format!("{}: {first}", report.status.as_str()));
    }
    // Limits reached, files discarded, a substituted program: after the
    // program's own output, where the user looks.
    if !quiet {
        for line in report.terminal_lines() {
            say(line);
        }
    }
    if let Some(e) = unrecorded {
        say(&e);
        report.error.get_or_insert(e);
        let _ = report_target.write(&report);
        return ExitCode::from(EXIT_WARDEN_ERROR);
    }
    let status = exit_status(&report);
    if let Err(e) = report_target.write(&report) {
        say(e);
        return ExitCode::from(EXIT_WARDEN_ERROR);
    }
    ExitCode::from(status)
}

/// `--no-audit` under a policy that says `audit: required`: nothing runs
/// (exit 126), and the refusal itself is recorded, if the ledger can take
/// it.
fn refuse_unaudited(
    prepared: &warden_engine::Prepared,
    report_target: &ReportTarget,
    principal: &str,
    tenant: &str,
    argv: &[String],
) -> ExitCode {
    let message = "--no-audit: the policy says audit: required, so every run is recorded; run it without --no-audit".to_string();
    say(&message);
    let mut report = Report::refused(
        message,
        prepared.invocation.invocation_id.clone(),
        &prepared.backend,
    );
    report.capabilities = prepared.capabilities.clone();
    report.policy_digest = prepared.policy_digest.clone();
    let recorded = state_dir()
        .and_then(|s| Ok(warden_engine::audit::Audit::open(&s)?))
        .and_then(|mut a| {
            let facts = warden_engine::audit::RunFacts {
                principal,
                tenant,
                argv,
                sealed: None,
            };
            Ok(a.record_run(&facts, &mut report)?)
        });
    if let Err(e) = recorded {
        say(format!(
            "the refusal could not be recorded in the audit ledger: {e:#}"
        ));
    }
    if let Err(e) = report_target.write(&report) {
        say(e);
    }
    ExitCode::from(EXIT_REFUSED)
}

/// The acting principal: the one `WARDEN_API_KEY` names, else the OS
/// user. A key that names nobody (or a revoked principal) is an error.
pub(crate) fn trust_store() -> anyhow::Result<warden_trust::truststore::TrustStore> {
    let config = warden_engine::config::current(&state_dir()?);
    Ok(warden_trust::truststore::TrustStore::open_file(
        &config.trust_store,
    )?)
}

/// The RBAC gate of this process, loaded once.
pub(crate) fn gate() -> anyhow::Result<&'static warden_engine::authz::Gate> {
    static GATE: std::sync::OnceLock<warden_engine::authz::Gate> = std::sync::OnceLock::new();
    if let Some(g) = GATE.get() {
        return Ok(g);
    }
    let g = warden_engine::authz::Gate::load(&state_dir()?)?;
    Ok(GATE.get_or_init(|| g))
}

/// Asks the gate whether the acting principal may do `action` to a
/// resource of `tenant`; a denial is recorded in `audit`.
pub(crate) fn authorize(
    actor: &warden_engine::identity::Actor,
    tenant: &str,
    action: warden_authz::Action,
    name: &str,
    audit: Option<&mut warden_engine::audit::Audit>,
) -> anyhow::Result<()> {
    let resource = warden_authz::Resource::new(action.resource_kind(), name, tenant);
    gate()?
        .check(actor, tenant, action, resource, &[], 0, audit)
        .map_err(anyhow::Error::from)
}

pub(crate) fn acting() -> Result<warden_engine::identity::Actor, String> {
    let key = std::env::var("WARDEN_API_KEY").ok();
    let state = state_dir().map_err(|e| e.to_string())?;
    warden_engine::identity::actor(&state, key.as_deref()).map_err(|e| e.to_string())
}

/// Exit status of a run Warden refused before anything ran.
pub(crate) const EXIT_REFUSED: u8 = 126;

/// Exit status of a command that failed on what it was given (a key that
/// exists, a signature that does not verify).
pub(crate) const EXIT_FAILED: u8 = 1;

/// The state directory, or a message saying how to name one.
pub(crate) fn state_dir() -> anyhow::Result<std::path::PathBuf> {
    warden_core::state::default_state_dir().ok_or_else(|| {
        anyhow::anyhow!(
            "no state directory: give --state DIR or set WARDEN_STATE (HOME is not set)"
        )
    })
}

/// Longest message of Warden's own on stderr; the report keeps all of it.
const MAX_SAID: usize = 1024;

/// One line of Warden's own on stderr, `warden: MESSAGE`: whatever the
/// message carries from hostile input (a newline or an escape sequence in a
/// program name, a policy path, a flag's value) is escaped, and it is cut
/// at [`MAX_SAID`] characters.
pub(crate) fn say(message: impl std::fmt::Display) {
    let text = printable(&message.to_string());
    let shown: String = text.chars().take(MAX_SAID).collect();
    let cut = if shown.len() < text.len() { "…" } else { "" };
    eprintln!("warden: {shown}{cut}");
}

pub(crate) use warden_core::printable;

fn exit_status(report: &Report) -> u8 {
    u8::try_from(report.exit_status()).unwrap_or(EXIT_WARDEN_ERROR)
}

/// `warden compile`: precompiles a module for this host. The `.cwasm`
/// carries a tag under the host key of the wasm backend's cache directory
/// (`$WARDEN_CACHE_DIR`, …), so only this host's `warden run`, with the same
/// key, accepts it. Written beside `output` and renamed into place: a
/// reader never sees half a file.
fn compile(
    module: &Path,
    output: &Path,
    metered: bool,
    wall_time: std::time::Duration,
    mut engine: Engine,
) -> ExitCode {
    // Compile time grows with the square of a module's nesting depth: a
    // hostile module must not hold the caller for minutes. A watchdog ends
    // the process at the deadline unless the compile has finished (the
    // lock keeps it from cutting the output's write short).
    let finished = std::sync::Arc::new(std::sync::Mutex::new(false));
    let (done, wait) = std::sync::mpsc::channel::<()>();
    {
        let finished = finished.clone();
        let shown = module.display().to_string();
        let spawned = std::thread::Builder::new()
            .name("warden-compile-deadline".into())
            .spawn(move || {
                if wait.recv_timeout(wall_time).is_err() {
                    let finished = finished.lock().unwrap_or_else(|e| e.into_inner());
                    if !*finished {
                        say(format!(
                            "timeout: compiling {shown} did not finish within {} ms (--wall-time)",
                            wall_time.as_millis()
                        ));
                        std::process::exit(124);
                    }
                }
            });
        if let Err(e) = spawned {
            say(format!("cannot start the compile deadline: {e}"));
            return ExitCode::from(EXIT_WARDEN_ERROR);
        }
    }
    let compiled = engine.compile_file(module, metered);
    *finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
    let _ = done.send(());
    let result = compiled
        .map_err(anyhow::Error::from)
        .and_then(|compiled| write_atomically(output, &compiled));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(e);
            ExitCode::from(EXIT_WARDEN_ERROR)
        }
    }
}

/// Writes `bytes` to a new temporary file next to `path` (mode 0644) and
/// renames it over `path` (replacing a symlink there instead of following
/// it).
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("cannot write {}: not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", invocation_id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

fn policy_check(file: &Path) -> ExitCode {
    match warden_engine::check_policy_file(file) {
        Ok((lines, failed)) => {
            // Written, not println!: a closed or full stdout (`| head -1`,
            // /dev/full) is an error to report, not a panic.
            let mut out = std::io::stdout().lock();
            let written = lines
                .iter()
                .try_for_each(|line| writeln!(out, "{}", printable(line)))
                .and_then(|()| match lines.is_empty() {
                    true => writeln!(out, "{}: ok", file.display()),
                    false => Ok(()),
                })
                .and_then(|()| out.flush());
            match written {
                // The reader has what it wanted (`| head -1`).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    ExitCode::from(u8::from(failed))
                }
                Err(e) => {
                    say(format!("cannot write the diagnostics: {e}"));
                    ExitCode::from(EXIT_WARDEN_ERROR)
                }
                Ok(()) if failed => ExitCode::from(1),
                Ok(()) => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            say(e);
            ExitCode::from(EXIT_WARDEN_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{printable, report_flag, RUN_FLAGS_WITH_VALUES};

    /// clap checks its definitions only when a subcommand is built: a
    /// mistake there is a panic at run time, so check them all here.
    #[test]
    fn every_command_definition_is_valid() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn the_value_flag_list_matches_the_run_command() {
        use clap::CommandFactory;
        let cli = crate::cli::Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        let mut want: Vec<String> = run
            .get_arguments()
            .filter(|a| a.get_action().takes_values() && a.get_long() != Some("report"))
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        want.sort();
        let mut have: Vec<String> = RUN_FLAGS_WITH_VALUES
            .iter()
            .map(|s| s.to_string())
            .collect();
        have.sort();
        assert_eq!(have, want);
    }

    #[test]
    fn report_flag_is_found_before_the_program_only() {
        let find = |line: &str| report_flag(line.split(' ').map(Into::into));
        assert_eq!(
            find("run --memory abc --report r.json -- true"),
            Some("r.json".into())
        );
        assert_eq!(
            find("run --bogus --report=r.json true"),
            Some("r.json".into())
        );
        assert_eq!(
            find("run --env A=1 --report r.json true"),
            Some("r.json".into())
        );
        assert_eq!(
            find("run --deterministic --report r.json x.wasm"),
            Some("r.json".into())
        );
        assert_eq!(find("run --memory abc -- prog --report r.json"), None);
        assert_eq!(find("run --memory abc prog --report r.json"), None);
        assert_eq!(find("policy check --report r.json"), None);
    }

    #[test]
    fn log_lines_cannot_carry_terminal_controls_or_bidi_tricks() {
        assert_eq!(printable("ok line"), "ok line");
        assert_eq!(printable("a\nb\x1b[2J"), "a\\u{a}b\\u{1b}[2J");
        assert_eq!(printable("x\u{202E}gnp.exe"), "x\\u{202e}gnp.exe");
        assert_eq!(printable("\u{2066}\u{200B}é"), "\\u{2066}\\u{200b}é");
    }
}
