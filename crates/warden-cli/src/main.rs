//! `warden`: the command line. Thin: flags are parsed here, everything
//! else is the engine's.
#![forbid(unsafe_code)]

mod cli;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use warden_core::Report;
use warden_engine::{Engine, RunRequest};

use cli::{Cli, Command, PolicyCommand, RunArgs};

/// Exit status for Warden's own errors (bad flag, bad policy, setup failure).
const EXIT_WARDEN_ERROR: u8 = 125;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => EXIT_WARDEN_ERROR,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => policy_check(&file),
        Command::Compile {
            module,
            output,
            metered,
        } => compile(&module, &output, metered),
    }
}

fn invocation_id() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the report goes, fixed before the program runs: the parent
/// directory is opened first, so that a program with write access near the
/// report path cannot redirect the report by planting symlinks.
enum ReportTarget {
    None,
    Stderr,
    File {
        dir: std::os::fd::OwnedFd,
        name: std::ffi::OsString,
        shown: std::path::PathBuf,
    },
}

impl ReportTarget {
    fn open(path: Option<&Path>) -> anyhow::Result<ReportTarget> {
        let Some(path) = path else {
            return Ok(ReportTarget::None);
        };
        if path == Path::new("-") {
            return Ok(ReportTarget::Stderr);
        }
        let name = path
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("--report {}: not a file name", path.display()))?
            .to_os_string();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = rustix::fs::open(
            parent,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| anyhow::anyhow!("--report {}: {}: {e}", path.display(), parent.display()))?;
        Ok(ReportTarget::File {
            dir,
            name,
            shown: path.to_path_buf(),
        })
    }

    /// Writes a temporary file beside the target and renames it over the
    /// target: the rename replaces whatever entry is there (a planted
    /// symlink included) instead of following it.
    fn write(&self, report: &Report) -> anyhow::Result<()> {
        use rustix::fs::{Mode, OFlags};
        let json = format!("{}\n", report.to_json());
        match self {
            ReportTarget::None => Ok(()),
            ReportTarget::Stderr => {
                std::io::stderr().lock().write_all(json.as_bytes())?;
                Ok(())
            }
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

fn run(args: RunArgs) -> ExitCode {
    let id = invocation_id();
    let backend = warden_engine::route(args.backend.as_deref(), &args.command)
        .unwrap_or_else(|_| args.backend.clone().unwrap_or_default());
    let report_target = match ReportTarget::open(args.report.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warden: {e}");
            return ExitCode::from(EXIT_WARDEN_ERROR);
        }
    };
    let fail = |message: String| {
        eprintln!("warden: {message}");
        let report = Report::setup_error(message, id.clone(), &backend);
        if let Err(e) = report_target.write(&report) {
            eprintln!("warden: {e}");
        }
        ExitCode::from(EXIT_WARDEN_ERROR)
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot determine the working directory: {e}")),
    };
    let request = RunRequest {
        argv: args.command,
        policy: args.policy,
        allow: args.allow,
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
        },
        workdir: args.workdir,
        backend: args.backend,
        fuel: args.fuel,
        deterministic: args.deterministic,
        caller_env: std::env::vars().collect(),
        cwd,
    };
    let prepared = match warden_engine::prepare(&request, id.clone()) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let mut engine = Engine::new();
    let report = match engine.run(&prepared) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    if let Some(error) = &report.error {
        // One line here; the report keeps the whole message (e.g. a trap's backtrace).
        let first = error.lines().next().unwrap_or_default();
        eprintln!("warden: {}: {first}", report.status.as_str());
    }
    let status = exit_status(&report);
    if let Err(e) = report_target.write(&report) {
        eprintln!("warden: {e}");
        return ExitCode::from(EXIT_WARDEN_ERROR);
    }
    ExitCode::from(status)
}

fn exit_status(report: &Report) -> u8 {
    u8::try_from(report.exit_status()).unwrap_or(EXIT_WARDEN_ERROR)
}

fn compile(module: &Path, output: &Path, metered: bool) -> ExitCode {
    let result = std::fs::read(module)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", module.display()))
        .and_then(|bytes| Ok(Engine::new().compile(&bytes, metered)?))
        .and_then(|compiled| {
            std::fs::write(output, compiled)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden: {e}");
            ExitCode::from(EXIT_WARDEN_ERROR)
        }
    }
}

fn policy_check(file: &Path) -> ExitCode {
    match warden_engine::check_policy_file(file) {
        Ok((lines, failed)) => {
            for line in &lines {
                println!("{line}");
            }
            if failed {
                ExitCode::from(1)
            } else {
                if lines.is_empty() {
                    println!("{}: ok", file.display());
                }
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("warden: {e}");
            ExitCode::from(EXIT_WARDEN_ERROR)
        }
    }
}
