use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use warden_policy::Capability;

/// Every limit a backend enforces, all resolved to concrete values
/// (defaults filled in by the engine). `None` means "no limit" and is only
/// allowed where Warden has no default.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EffectiveLimits {
    pub memory_bytes: u64,
    #[serde(rename = "cpu_time_ms", serialize_with = "opt_ms")]
    pub cpu_time: Option<Duration>,
    #[serde(rename = "wall_time_ms", serialize_with = "ms")]
    pub wall_time: Duration,
    pub pids: u32,
    /// Share of one core, in percent (`cpu:limit`).
    pub cpu_percent: Option<u32>,
    pub output_bytes: u64,
    pub file_size_bytes: u64,
    pub open_files: u64,
    pub tmpfs_bytes: u64,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

impl Default for EffectiveLimits {
    /// Warden's defaults: bounded in every dimension, generous enough for
    /// an ordinary interpreter run.
    fn default() -> Self {
        EffectiveLimits {
            memory_bytes: 512 << 20,
            cpu_time: None,
            wall_time: Duration::from_secs(60),
            pids: 64,
            cpu_percent: None,
            output_bytes: 64 << 20,
            file_size_bytes: 64 << 20,
            open_files: 256,
            tmpfs_bytes: 64 << 20,
        }
    }
}

/// One run of untrusted code, fully resolved: the effective grants are
/// already the intersection of what was requested and what the policy
/// allows, and every path is absolute.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub invocation_id: String,
    /// argv; `argv[0]` is looked up on the jail's fixed PATH when it has no `/`.
    pub argv: Vec<String>,
    /// Environment given to the program: only granted variables.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox (absolute).
    pub workdir: PathBuf,
    /// Effective grants (non-limit capabilities).
    pub capabilities: Vec<Capability>,
    pub limits: EffectiveLimits,
    /// WASM only: a fuel budget (instructions, roughly); `None` = no fuel metering.
    pub fuel: Option<u64>,
    /// WASM only: fixed clock, seeded randomness, no threads — same input,
    /// same output.
    pub deterministic: bool,
}
