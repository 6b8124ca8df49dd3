use serde::Serialize;

use crate::{
    human_bytes, Connection, Discarded, EffectiveLimits, Enforcement, LimitReached, LogRecord,
    Outcome, Status, StreamDigests, View, Violation,
};

/// A run's entry in the audit ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRef {
    /// The ledger's origin (the name its checkpoints carry).
    pub origin: String,
    pub index: u64,
    /// Hex SHA-256 leaf hash of the entry (RFC 9162).
    pub leaf_hash: String,
}

/// The processor an invocation ran (`warden invoke`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessorRef {
    pub name: String,
    pub version: String,
    /// `sha256:` digest of the processor's canonical tree listing.
    pub digest: String,
    /// Key id of the signature it was added with; null when unsigned.
    pub signer: Option<String>,
}

/// A secret leased to the run: which, and under which lease (never its
/// value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseRef {
    pub secret: String,
    pub version: u64,
    pub lease: String,
}

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
    pub fuel_consumed: Option<u64>,
    pub instantiate_us: Option<u64>,
    /// WASM only: records the guest logged through the host; omitted when
    /// there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogRecord>,
    /// Present (and true) only when log records were dropped at the cap.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub logs_truncated: bool,
    /// Every limit the run reached (`[]` when none was).
    pub limits_reached: Vec<LimitReached>,
    /// Network connections the program attempted (`[]` when none).
    pub connections: Vec<Connection>,
    /// Grants shown at a chosen path inside (`--at`); omitted when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<View>,
    /// Files left in the scratch working directory, gone with the jail;
    /// null where there is no scratch directory or it was not looked at.
    pub discarded: Option<Discarded>,
    /// SHA-256 of stdin, stdout and stderr; null when nothing ran.
    pub streams: Option<StreamDigests>,
    /// WASM only: the digest of the module that ran; omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_digest: Option<String>,
    /// Where the run's entry is in the audit ledger; null with `--no-audit`.
    pub audit: Option<AuditRef>,
    /// Why Warden would not run it (status `refused`); omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Secrets leased to the run; omitted when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<LeaseRef>,
    /// Why the run went to its backend (`--backend`, the program's file
    /// type, a processor's kind, the default); omitted when nothing was
    /// routed (a request refused before routing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    /// The processor that ran (`warden invoke`); omitted for `warden run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<ProcessorRef>,
    /// Lines for the caller's terminal about what the run did differently
    /// from what was asked (e.g. another program than the caller's PATH
    /// names); also among `warnings`.
    #[serde(skip)]
    pub notices: Vec<String>,
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
            fuel_consumed: outcome.fuel_consumed,
            instantiate_us: outcome.instantiate_us,
            logs: outcome.logs,
            logs_truncated: outcome.logs_truncated,
            limits_reached: outcome.limits_reached,
            connections: outcome.connections,
            views: Vec::new(),
            discarded: outcome.discarded,
            streams: outcome.streams,
            module_digest: outcome.module_digest,
            audit: None,
            refusal: None,
            leases: Vec::new(),
            processor: None,
            notices: Vec::new(),
            routing: None,
        }
    }

    /// What `warden run` says on stderr after the program's own output
    /// (without the `warden: ` prefix): the notices, one line per limit
    /// reached, and the files discarded with the scratch directory.
    pub fn terminal_lines(&self) -> Vec<String> {
        let mut lines = self.notices.clone();
        for r in &self.limits_reached {
            let exit = if r.stopped {
                format!(" (exit {})", self.exit_status())
            } else {
                String::new()
            };
            lines.push(format!(
                "{} limit {} reached: {}{exit}; raise it with {}",
                r.label(),
                r.value,
                r.effect,
                r.flag()
            ));
        }
        if let Some(d) = self.discarded.as_ref().filter(|d| d.files > 0) {
            let dir = d.dir.display();
            lines.push(format!(
                "{} file{} ({}) left in the scratch working directory {dir} were discarded with the jail; grant fs:write:{dir} to keep them",
                d.files,
                if d.files == 1 { "" } else { "s" },
                human_bytes(d.bytes),
            ));
        }
        lines
    }

    /// A report for a run that never started (bad flag, bad policy).
    pub fn setup_error(message: String, invocation_id: String, backend: &str) -> Report {
        let outcome = Outcome {
            error: Some(message),
            ..Outcome::with_status(Status::Error)
        };
        Report::from_outcome(
            outcome,
            Vec::new(),
            String::new(),
            invocation_id,
            backend,
            None,
        )
    }

    /// A run refused before anything ran (exit 126): `refusal` names the
    /// cause, and so does `error`, for readers that only look there.
    pub fn refused(message: String, invocation_id: String, backend: &str) -> Report {
        let outcome = Outcome {
            error: Some(message.clone()),
            ..Outcome::with_status(Status::Refused)
        };
        let mut report = Report::from_outcome(
            outcome,
            Vec::new(),
            String::new(),
            invocation_id,
            backend,
            None,
        );
        report.refusal = Some(message);
        report
    }

    /// Applies `redact` to every string a program, its input or a secret
    /// could have reached: the error, refusal, warnings, notices, log
    /// messages and violation details.
    pub fn redact_with(&mut self, redact: &dyn Fn(&str) -> String) {
        for s in self
            .error
            .iter_mut()
            .chain(self.refusal.iter_mut())
            .chain(self.warnings.iter_mut())
            .chain(self.notices.iter_mut())
        {
            *s = redact(s);
        }
        for log in &mut self.logs {
            log.message = redact(&log.message);
        }
        for v in &mut self.violations {
            v.detail = redact(&v.detail);
        }
    }

    /// Exit status of `warden run` for this report.
    pub fn exit_status(&self) -> i32 {
        crate::exit_status(self.status, self.exit_code, self.signal)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            format!("{{\"status\":\"error\",\"error\":\"report serialisation failed: {e}\"}}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    const SCHEMA: &str = include_str!("../../../docs/report.schema.json");

    fn sample() -> Report {
        let outcome = Outcome {
            status: Status::Violation,
            exit_code: Some(0),
            wall_ms: 5,
            cpu_ms: 3,
            peak_memory_bytes: 1 << 20,
            stdout_bytes: 2,
            violations: vec![Violation {
                kind: "syscall".into(),
                detail: "ptrace denied".into(),
            }],
            ..sample_outcome()
        };
        Report::from_outcome(
            outcome,
            vec!["fs:read:/data".into()],
            format!("sha256:{}", "0".repeat(64)),
            "0".repeat(32),
            "jail",
            Some(EffectiveLimits::default()),
        )
    }

    /// The documented schema and the serialised report name the same
    /// fields, at the top level and in `limits`, and the same statuses.
    #[test]
    fn report_matches_its_schema() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
        let report = serde_json::to_value(sample()).expect("report serialises");
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let required = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            k.sort();
            k
        };
        assert_eq!(keys(&report), required(&schema));
        assert_eq!(
            keys(&report["limits"]),
            required(&schema["properties"]["limits"])
        );
        let statuses: Vec<&str> = schema["properties"]["status"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for status in [
            Status::Exited,
            Status::Signaled,
            Status::Timeout,
            Status::MemoryLimit,
            Status::CpuLimit,
            Status::OutputLimit,
            Status::Violation,
            Status::Error,
            Status::Refused,
        ] {
            assert!(statuses.contains(&status.as_str()));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(report["violations"][0]["detail"], "ptrace denied");
        assert_eq!(report["limits"]["wall_time_ms"], 60000);

        // The optional fields: present only when there is something to say,
        // described in the schema but not required.
        let mut with_logs = sample();
        with_logs.logs = vec![LogRecord {
            level: crate::LogLevel::Warn,
            message: "low disk".into(),
        }];
        with_logs.logs_truncated = true;
        with_logs.views = vec![View {
            grant: "/srv/fixtures".into(),
            at: "/data".into(),
        }];
        with_logs.refusal = Some("unsigned processor".into());
        with_logs.processor = Some(crate::ProcessorRef {
            name: "parser".into(),
            version: "1.0.0".into(),
            digest: format!("sha256:{}", "1".repeat(64)),
            signer: None,
        });
        let with_logs = serde_json::to_value(with_logs).expect("report serialises");
        let properties = keys(&schema["properties"]);
        let optional: Vec<String> = keys(&with_logs)
            .into_iter()
            .filter(|k| !required(&schema).contains(k))
            .collect();
        assert_eq!(
            optional,
            ["logs", "logs_truncated", "processor", "refusal", "views"]
        );
        assert_eq!(
            keys(&with_logs["processor"]),
            required(&schema["properties"]["processor"])
        );
        let view_item = &schema["properties"]["views"]["items"];
        assert_eq!(keys(&with_logs["views"][0]), required(view_item));
        for k in &optional {
            assert!(properties.contains(k), "{k} is not in the schema");
        }
        assert_eq!(with_logs["logs"][0]["level"], "warn");
        assert_eq!(with_logs["logs"][0]["message"], "low disk");
        let log_item = &schema["properties"]["logs"]["items"];
        assert_eq!(keys(&with_logs["logs"][0]), required(log_item));
        let levels = log_item["properties"]["level"]["enum"].as_array().unwrap();
        for level in ["trace", "debug", "info", "warn", "error"] {
            assert!(levels.iter().any(|l| l == level), "{level}");
        }
    }

    #[test]
    fn exit_statuses_follow_timeout_and_the_shell() {
        let mut o = sample_outcome();
        o.status = Status::Exited;
        o.exit_code = Some(3);
        assert_eq!(o.exit_status(), 3);
        o.status = Status::Timeout;
        o.signal = Some(9);
        assert_eq!(o.exit_status(), 124);
        o.status = Status::CpuLimit;
        assert_eq!(o.exit_status(), 137);
        o.status = Status::Error;
        o.signal = None;
        o.exit_code = Some(127);
        assert_eq!(o.exit_status(), 127);
        o.exit_code = None;
        assert_eq!(o.exit_status(), 125);
        o.signal = Some(2);
        assert_eq!(o.exit_status(), 130);
        // A WASM guest's 32-bit exit code: the low byte, as a native
        // process's wait status keeps it.
        o.status = Status::Exited;
        o.signal = None;
        for (code, status) in [(256, 0), (300, 44), (-1, 255), (255, 255)] {
            o.exit_code = Some(code);
            assert_eq!(o.exit_status(), status, "exit code {code}");
        }
    }

    fn sample_outcome() -> Outcome {
        Outcome::with_status(Status::Exited)
    }
}
