use serde::Serialize;

use crate::{EffectiveLimits, Enforcement, Outcome, Status, Violation};

/// The JSON report of one run (`--report`). Field names are Warden's
/// contract; docs/report.schema.json describes them.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
    pub violations: Vec<Violation>,
    pub capabilities: Vec<String>,
    pub policy_digest: String,
    pub invocation_id: String,
    pub backend: String,
    pub limits: Option<EffectiveLimits>,
    pub enforcement: Enforcement,
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

impl Report {
    pub fn from_outcome(
        outcome: Outcome,
        capabilities: Vec<String>,
        policy_digest: String,
        invocation_id: String,
        backend: &str,
        limits: Option<EffectiveLimits>,
    ) -> Report {
        Report {
            status: outcome.status,
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            wall_ms: outcome.wall_ms,
            cpu_ms: outcome.cpu_ms,
            peak_memory_bytes: outcome.peak_memory_bytes,
            stdout_bytes: outcome.stdout_bytes,
            stderr_bytes: outcome.stderr_bytes,
            truncated: outcome.truncated,
            violations: outcome.violations,
            capabilities,
            policy_digest,
            invocation_id,
            backend: backend.to_string(),
            limits,
            enforcement: outcome.enforcement,
            warnings: outcome.warnings,
            error: outcome.error,
        }
    }

    /// A report for a run that never started (bad flag, bad policy).
    pub fn setup_error(message: String, invocation_id: String, backend: &str) -> Report {
        Report {
            status: Status::Error,
            exit_code: None,
            signal: None,
            wall_ms: 0,
            cpu_ms: 0,
            peak_memory_bytes: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            violations: Vec::new(),
            capabilities: Vec::new(),
            policy_digest: String::new(),
            invocation_id,
            backend: backend.to_string(),
            limits: None,
            enforcement: Default::default(),
            warnings: Vec::new(),
            error: Some(message),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            format!("{{\"status\":\"error\",\"error\":\"report serialisation failed: {e}\"}}")
        })
    }
}
