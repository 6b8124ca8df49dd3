//! `warden authz check|explain|test|export-cedar`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden_authz::{Action, Authz, Request, Resource};

use crate::app::{printable, say, state_dir};
use crate::cli::AuthzCommand;

fn read(path: &Path) -> anyhow::Result<String> {
    let bytes = warden_engine::config::read_trusted(path, warden_trust::ArtifactType::Config)?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not valid UTF-8", path.display()))
}

fn load(path: &Path) -> anyhow::Result<Authz> {
    let origin = path.display().to_string();
    Authz::load(&read(path)?, &origin).map_err(|d| {
        anyhow::anyhow!(d
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    })
}

fn rbac_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => Ok(warden_engine::config::current(&state_dir()?).rbac),
    }
}

pub(crate) fn authz(rbac: Option<PathBuf>, command: AuthzCommand) -> ExitCode {
    let result = (|| -> anyhow::Result<bool> {
        let mut out = std::io::stdout().lock();
        match command {
            AuthzCommand::Check { file } => {
                let diagnostics = warden_authz::check(&read(&file)?, &file.display().to_string());
                for d in &diagnostics {
                    writeln!(out, "{}", printable(&d.to_string()))?;
                }
                let failed = diagnostics
                    .iter()
                    .any(|d| d.severity == warden_policy::Severity::Error);
                if diagnostics.is_empty() {
                    writeln!(out, "{}: ok", file.display())?;
                }
                Ok(!failed)
            }
            AuthzCommand::Explain {
                principal,
                action,
                resource,
                tenant,
                capabilities,
                tags,
                input_bytes,
            } => {
                let authz = load(&rbac_path(rbac)?)?;
                let action: Action = action
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--action: {e}"))?;
                let tenant = tenant.unwrap_or_else(|| warden_core::DEFAULT_TENANT.to_string());
                let mut res = Resource::new(action.resource_kind(), resource, &tenant);
                res.tags = tags;
                let request = Request {
                    principal,
                    tenant,
                    action,
                    resource: res,
                    capabilities,
                    input_bytes,
                    now: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                };
                let text = authz.explain(&request);
                for line in text.lines() {
                    writeln!(out, "{}", printable(line))?;
                }
                Ok(authz.decide(&request).allowed)
            }
            AuthzCommand::Test { file, cases } => {
                let authz = load(&file)?;
                let origin = cases.display().to_string();
                let source = std::fs::read_to_string(&cases)
                    .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
                let results = authz.run_cases(&source, &origin).map_err(|d| {
                    anyhow::anyhow!(d
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "))
                })?;
                let mut failed = 0;
                for r in &results {
                    if !r.passed() {
                        failed += 1;
                        writeln!(
                            out,
                            "{origin}:{}:{}: case {} expected {} but got {}: {}",
                            r.line,
                            r.column,
                            r.index,
                            if r.expect_allowed { "allow" } else { "deny" },
                            if r.decision.allowed { "allow" } else { "deny" },
                            printable(&r.decision.reason)
                        )?;
                    }
                }
                writeln!(
                    out,
                    "{} cases, {} passed, {failed} failed",
                    results.len(),
                    results.len() - failed
                )?;
                Ok(failed == 0)
            }
            AuthzCommand::ExportCedar => {
                let authz = load(&rbac_path(rbac)?)?;
                let e = authz.export_cedar();
                writeln!(
                    out,
                    "// policies\n{}\n// schema\n{}\n// entities\n{}",
                    e.policies, e.schema, e.entities
                )?;
                Ok(true)
            }
        }
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            say(format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}
