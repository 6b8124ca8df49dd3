//! Every run leaves an entry in the audit ledger (`STATE/ledger/`): what
//! ran, for whom, under which grants and policy, and how it ended — also
//! a run refused or failed before it started. The ledger is opened, and
//! its write lock taken once, before the run, so that a read-only or full
//! state directory refuses the run instead of leaving it unrecorded; the
//! entry is durable before the report says the run is done.

use std::path::{Path, PathBuf};

use serde::Serialize;
use warden_core::{AuditRef, Report};
use warden_ledger::store::Ledger;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Store(#[from] warden_ledger::store::StoreError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the state directory's filesystem ({0}) has less than 1 MiB free")]
    Full(PathBuf),
}

/// The ledger, open for appending runs.
pub struct Audit {
    ledger: Ledger,
    origin: String,
}

/// Who asked for a run, and what it was.
pub struct RunFacts<'a> {
    pub principal: &'a str,
    pub tenant: &'a str,
    pub argv: &'a [String],
}

#[derive(Serialize)]
struct RunEvent<'a> {
    principal: &'a str,
    tenant: &'a str,
    argv: &'a [String],
    invocation_id: &'a str,
    backend: &'a str,
    policy_digest: &'a str,
    capabilities: &'a [String],
    status: &'a str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    wall_ms: u64,
    cpu_ms: u64,
    peak_memory_bytes: u64,
    stdout_bytes: u64,
    stderr_bytes: u64,
    violations: Vec<String>,
    limits_reached: Vec<&'a str>,
    error: Option<&'a str>,
}

fn seconds_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Audit {
    /// Opens the ledger of the state directory `state` and checks that it
    /// can take an entry.
    pub fn open(state: &Path) -> Result<Audit, AuditError> {
        let dir = state.join("ledger");
        for d in [state, dir.as_path()] {
            std::fs::create_dir_all(d).map_err(|e| AuditError::Io(d.to_path_buf(), e))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| AuditError::Io(d.to_path_buf(), e))?;
        }
        let free = rustix::fs::statvfs(&dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map_err(|e| AuditError::Io(dir.clone(), e.into()))?;
        if free < 1 << 20 {
            return Err(AuditError::Full(dir));
        }
        // Writable without a transaction: the directory (the journal and
        // WAL files are made there) and the database file, if there is one.
        let db = dir.join("ledger.db");
        for p in [dir.as_path(), db.as_path()] {
            match rustix::fs::access(p, rustix::fs::Access::WRITE_OK) {
                Ok(()) => {}
                Err(rustix::io::Errno::NOENT) if p == db => {}
                Err(e) => return Err(AuditError::Io(p.to_path_buf(), e.into())),
            }
        }
        let ledger = Ledger::open(&dir)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let origin = ledger.origin(&format!("warden.local/{host}"))?;
        Ok(Audit { ledger, origin })
    }

    /// Appends the entry of the run `report` describes, durably, and
    /// records where in the report.
    pub fn record_run(
        &mut self,
        facts: &RunFacts<'_>,
        report: &mut Report,
    ) -> Result<(), AuditError> {
        let event = RunEvent {
            principal: facts.principal,
            tenant: facts.tenant,
            argv: facts.argv,
            invocation_id: &report.invocation_id,
            backend: &report.backend,
            policy_digest: &report.policy_digest,
            capabilities: &report.capabilities,
            status: report.status.as_str(),
            exit_code: report.exit_code,
            signal: report.signal,
            wall_ms: report.wall_ms,
            cpu_ms: report.cpu_ms,
            peak_memory_bytes: report.peak_memory_bytes,
            stdout_bytes: report.stdout_bytes,
            stderr_bytes: report.stderr_bytes,
            violations: report
                .violations
                .iter()
                .map(|v| format!("{}: {}", v.kind, v.detail))
                .collect(),
            limits_reached: report.limits_reached.iter().map(|l| &*l.limit).collect(),
            error: report.error.as_deref(),
        };
        let value = serde_json::to_value(&event)
            .map_err(|e| warden_ledger::store::StoreError::Encode(e.to_string()))?;
        let acks = self.ledger.append(seconds_now(), &[("run", value)])?;
        if let Some((index, leaf)) = acks.first() {
            report.audit = Some(AuditRef {
                origin: self.origin.clone(),
                index: *index,
                leaf_hash: hex::encode(leaf),
            });
        }
        Ok(())
    }
}

/// The OS user running Warden, as the CLI's principal: `os:NAME` from
/// /etc/passwd, or `os:uid:N`.
pub fn os_principal() -> String {
    let uid = rustix::process::getuid().as_raw();
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?;
            (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
    });
    match name {
        Some(n) => format!("os:{n}"),
        None => format!("os:uid:{uid}"),
    }
}
