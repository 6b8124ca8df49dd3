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
    }
}

fn invocation_id() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_report(target: Option<&Path>, report: &Report) -> anyhow::Result<()> {
    let Some(target) = target else {
        return Ok(());
    };
    let json = report.to_json();
    if target == Path::new("-") {
        let mut err = std::io::stderr().lock();
        writeln!(err, "{json}")?;
        return Ok(());
    }
    std::fs::write(target, format!("{json}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write report {}: {e}", target.display()))
}

fn run(args: RunArgs) -> ExitCode {
    let id = invocation_id();
    let report_path = args.report.clone();
    let backend = args.backend.clone().unwrap_or_else(|| "jail".into());
    let fail = |message: String| {
        eprintln!("warden: {message}");
        let report = Report::setup_error(message, id.clone(), &backend);
        if let Err(e) = write_report(report_path.as_deref(), &report) {
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
        eprintln!("warden: {}: {error}", report.status.as_str());
    }
    let status = exit_status(&report);
    if let Err(e) = write_report(report_path.as_deref(), &report) {
        eprintln!("warden: {e}");
        return ExitCode::from(EXIT_WARDEN_ERROR);
    }
    ExitCode::from(status)
}

fn exit_status(report: &Report) -> u8 {
    u8::try_from(report.exit_status()).unwrap_or(EXIT_WARDEN_ERROR)
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
