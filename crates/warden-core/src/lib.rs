//! Types shared by every Warden backend and front end: what to run
//! ([`Invocation`]), how it ended ([`Outcome`], [`Status`]) and the JSON
//! report built from both ([`Report`]), plus the [`Backend`] trait.
#![forbid(unsafe_code)]

mod invocation;
mod outcome;
mod report;
pub mod state;
mod text;

pub use invocation::{
    secret_env_name, valid_tenant, EffectiveLimits, Invocation, LeasedSecret, ModuleRef,
    SecretValue, View, DEFAULT_TENANT, PROCESSOR_DIR, SECRETS_DIR,
};
pub use outcome::{
    exit_status, human_bytes, human_duration, Connection, Discarded, Enforcement, EnforcementMap,
    LimitReached, LogLevel, LogRecord, Outcome, Status, StreamDigests, Violation,
};
pub use report::{AuditRef, LeaseRef, ProcessorRef, Report};
pub use text::printable;

use thiserror::Error;

/// Errors a backend reports when it cannot run an invocation at all
/// (as opposed to a program that ran and failed, which is an [`Outcome`]).
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("invalid invocation: {0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backend {0} is not available on this host: {1}")]
    Unavailable(String, String),
    /// The caller's gate (see [`Backend::run_gated`]) said no: nothing ran.
    #[error("{0}")]
    Gate(String),
}

impl BackendError {
    pub fn setup(what: impl Into<String>, source: std::io::Error) -> Self {
        BackendError::Setup {
            what: what.into(),
            source,
        }
    }
}

/// An isolation backend. Backends prepare once (in their constructor) and
/// run many invocations.
pub trait Backend {
    /// Short name used by `--backend` and in reports.
    fn name(&self) -> &'static str;
    /// Runs one invocation to completion. Standard input is inherited from
    /// the caller; standard output and error are forwarded to the caller's
    /// after capping.
    fn run(&self, invocation: &Invocation) -> Result<Outcome, BackendError>;
    /// [`Backend::run`], calling `gate` before the program starts: if it
    /// fails, the program never starts and the error is
    /// [`BackendError::Gate`]. A backend may call it while its sandbox is
    /// being built, so that the caller's work (opening the audit ledger)
    /// overlaps with that instead of adding to it; it is called at most
    /// once, on the calling thread.
    fn run_gated(
        &self,
        invocation: &Invocation,
        gate: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Outcome, BackendError> {
        gate().map_err(BackendError::Gate)?;
        self.run(invocation)
    }
}
