//! Every run leaves an entry in the audit ledger (`STATE/ledger/`): what
//! ran, for whom, under which grants and policy, and how it ended — also
//! a run refused or failed before it started. The ledger is opened, and
//! its write lock taken once, before the run, so that a read-only or full
//! state directory refuses the run instead of leaving it unrecorded; the
//! entry is durable before the report says the run is done.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use warden_core::{AuditRef, Report};
use warden_ledger::group::GroupLedger;
use warden_ledger::store::Ledger;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Store(#[from] warden_ledger::store::StoreError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the state directory's filesystem ({0}) has less than 1 MiB free")]
    Full(PathBuf),
    #[error("{0}: {1}")]
    Config(PathBuf, String),
}

/// The ledger, open for appending runs.
pub struct Audit {
    ledger: Sink,
    origin: String,
    dir: PathBuf,
    config: AuditConfig,
}

/// The ledger of a long-lived service, open once: [`SharedAudit::handle`]
/// makes an [`Audit`] on the same connection for each use, and appends
/// made at once through them share commits. Cheap to clone.
#[derive(Clone)]
pub struct SharedAudit {
    group: Arc<GroupLedger>,
    origin: String,
    dir: PathBuf,
    config: AuditConfig,
}

impl SharedAudit {
    /// Opens the ledger of `state` (after [`Audit::check`]).
    pub fn open(state: &Path) -> Result<SharedAudit, AuditError> {
        Audit::check(state)?;
        let opened = Audit::open_with(state, |l| Sink::Shared(Arc::new(GroupLedger::new(l))))?;
        match opened.ledger {
            Sink::Shared(group) => Ok(SharedAudit {
                group,
                origin: opened.origin,
                dir: opened.dir,
                config: opened.config,
            }),
            Sink::Own(_) => Err(AuditError::Config(
                opened.dir,
                "the ledger was not opened for shared appends".into(),
            )),
        }
    }

    /// A handle for appending.
    pub fn handle(&self) -> Audit {
        Audit {
            ledger: Sink::Shared(Arc::clone(&self.group)),
            origin: self.origin.clone(),
            dir: self.dir.clone(),
            config: self.config.clone(),
        }
    }
}

/// Where an [`Audit`] appends: its own connection (a command, one
/// transaction per call), or a connection shared by the handles of a
/// long-lived service, whose concurrent appends are committed together
/// (one transaction and one sync per group: see [`GroupLedger`]).
enum Sink {
    Own(Ledger),
    Shared(Arc<GroupLedger>),
}

impl Sink {
    fn append(
        &mut self,
        time: u64,
        batch: &[(&str, serde_json::Value)],
    ) -> Result<Vec<(u64, warden_ledger::merkle::Hash)>, warden_ledger::store::StoreError> {
        match self {
            Sink::Own(l) => l.append(time, batch),
            // Each durable before the next: entries of one call stay in
            // order, and other handles' entries may come between them.
            Sink::Shared(g) => batch
                .iter()
                .map(|(kind, event)| g.append(time, kind, event))
                .collect(),
        }
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        match self {
            Sink::Own(l) => f(l),
            Sink::Shared(g) => g.with_ledger(f),
        }
    }
}

/// A checkpoint is signed automatically after every this many entries,
/// unless `STATE/config.yaml` says otherwise.
pub const CHECKPOINT_EVERY: u64 = 1000;

/// When the log signs checkpoints by itself: `ledger:` in
/// `STATE/warden.yaml` (see [`crate::config`]), e.g.
///
/// ```yaml
/// ledger:
///   checkpoint_every: 1000    # entries; 0: never by count
///   checkpoint_interval: 10m  # the oldest entry no checkpoint covers is at most this old
/// ```
///
/// With no daemon, the interval is checked when an entry is appended: the
/// append that finds the oldest uncovered entry older than the interval
/// signs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    pub checkpoint_every: u64,
    pub checkpoint_interval: Option<std::time::Duration>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every: CHECKPOINT_EVERY,
            checkpoint_interval: None,
        }
    }
}

/// The log's signing key (`ledger/log.key`, 32 bytes of seed in hex, 0600),
/// made on first use.
pub fn log_key(ledger_dir: &Path) -> Result<ed25519_dalek::SigningKey, AuditError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = ledger_dir.join("log.key");
    let io = |e| AuditError::Io(path.clone(), e);
    let read = || -> Result<ed25519_dalek::SigningKey, AuditError> {
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                AuditError::Io(
                    path.clone(),
                    std::io::Error::other("not a 32-byte hex seed"),
                )
            })?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
    };
    if path.exists() {
        return read();
    }
    let mut seed = [0u8; 32];
    rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| io(e.into()))?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(hex::encode(seed).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io)?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        // Another process made it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(),
        Err(e) => Err(io(e)),
    }
}

/// The log's verifier (C2SP signed-note key) for `origin`.
pub fn verifier(
    origin: &str,
    key: &ed25519_dalek::SigningKey,
) -> Result<warden_ledger::note::Verifier, AuditError> {
    warden_ledger::note::Verifier::new(origin, key.verifying_key())
        .map_err(|e| AuditError::Store(warden_ledger::store::StoreError::Encode(e.to_string())))
}

/// The sealed field that stands for the digest of a run's stdin when part
/// of its input is confidential: a plain SHA-256 of the whole input would
/// let anyone who can guess the rest of it test guesses of the
/// confidential part offline, defeating the salted commitment.
pub const SEALED_STDIN: &str = "streams.stdin";

/// The same for stdout, when part of the output is confidential.
pub const SEALED_STDOUT: &str = "streams.stdout";

/// Who asked for a run, and what it was.
pub struct RunFacts<'a> {
    pub principal: &'a str,
    pub tenant: &'a str,
    pub argv: &'a [String],
    /// Confidential fields (see [`crate::seal`]): the seal id and each
    /// field's commitment; `argv` among them replaces the argv, and
    /// [`SEALED_STDIN`] the digest of stdin.
    pub sealed: Option<&'a (String, std::collections::BTreeMap<String, String>)>,
}

#[derive(Serialize)]
struct RunEvent<'a> {
    principal: &'a str,
    tenant: &'a str,
    /// The argv, or `{"commitment": …}` when it is confidential.
    argv: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidential: Option<serde_json::Value>,
    invocation_id: &'a str,
    backend: &'a str,
    /// The rule that chose the backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    routing: Option<&'a str>,
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
    /// SHA-256 of stdin, stdout and stderr (stdin as `{"commitment": …}`
    /// when it is sealed).
    streams: Option<serde_json::Value>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processor: Option<&'a warden_core::ProcessorRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    module_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    leases: &'a [warden_core::LeaseRef],
    /// Network connections attempted, allowed or refused; omitted when
    /// there were none.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    connections: &'a [warden_core::Connection],
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
        Audit::check(state)?;
        Audit::open_checked(state)
    }

    /// What [`Audit::open`] checks before it opens the database, without
    /// opening it (cheap: a run checks this first and opens the ledger
    /// while its sandbox is being built): the directories exist and are
    /// private, there is free space, and the ledger is writable.
    pub fn check(state: &Path) -> Result<(), AuditError> {
        let dir = state.join("ledger");
        for d in [state, dir.as_path()] {
            warden_core::state::private_dir(d).map_err(|e| AuditError::Io(d.to_path_buf(), e))?;
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
        Ok(())
    }

    /// [`Audit::open`] after [`Audit::check`] passed.
    pub fn open_checked(state: &Path) -> Result<Audit, AuditError> {
        Audit::open_with(state, Sink::Own)
    }

    fn open_with(state: &Path, sink: impl FnOnce(Ledger) -> Sink) -> Result<Audit, AuditError> {
        let dir = state.join("ledger");
        let settings = crate::config::current(state);
        let config = settings.audit.clone();
        let ledger = Ledger::open(&dir)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let origin = ledger.origin(
            &settings
                .origin
                .clone()
                .unwrap_or_else(|| format!("warden.local/{host}")),
        )?;
        Ok(Audit {
            ledger: sink(ledger),
            origin,
            dir,
            config,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Appends one entry of `kind` (e.g. `trust`, `processor`), durably.
    pub fn record(&mut self, kind: &str, event: serde_json::Value) -> Result<AuditRef, AuditError> {
        self.record_many(kind, vec![event])?.pop().ok_or_else(|| {
            AuditError::Store(warden_ledger::store::StoreError::Encode(
                "the ledger acknowledged no entry".into(),
            ))
        })
    }

    /// Appends entries of `kind` in one transaction (one fsync), durably.
    pub fn record_many(
        &mut self,
        kind: &str,
        events: Vec<serde_json::Value>,
    ) -> Result<Vec<AuditRef>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let batch: Vec<(&str, serde_json::Value)> = events.into_iter().map(|e| (kind, e)).collect();
        let acks = self.ledger.append(seconds_now(), &batch)?;
        if let (Some(first), Some(last)) = (acks.first(), acks.last()) {
            self.maybe_checkpoint(first.0, last.0);
        }
        Ok(acks
            .into_iter()
            .map(|(index, leaf)| AuditRef {
                origin: self.origin.clone(),
                index,
                leaf_hash: hex::encode(leaf),
            })
            .collect())
    }

    /// Appends a long stream of events of `kind` (a bulk import) in
    /// transactions of 1000, calling `ack` with each index once durable;
    /// returns how many were appended.
    pub fn record_stream(
        &mut self,
        kind: &str,
        events: impl IntoIterator<Item = serde_json::Value>,
        mut ack: impl FnMut(u64),
    ) -> Result<u64, AuditError> {
        let time = seconds_now();
        let mut first: Option<u64> = None;
        let mut last = 0;
        let n = self.ledger.with(|ledger| {
            ledger.append_stream(
                events
                    .into_iter()
                    .map(|e| warden_ledger::store::Prepared::new(time, kind, &e)),
                1000,
                |index, _| {
                    first.get_or_insert(index);
                    last = index;
                    ack(index);
                },
            )
        })?;
        if let Some(first) = first {
            self.maybe_checkpoint(first, last);
        }
        Ok(n)
    }

    /// Signs a checkpoint when entries `first..=last` crossed a multiple of
    /// `checkpoint_every`, or the oldest entry no checkpoint covers is
    /// older than `checkpoint_interval`. Not worth failing for: the entries
    /// are durable already, and `warden audit checkpoint` signs one on
    /// demand.
    fn maybe_checkpoint(&mut self, first: u64, last: u64) {
        let every = self.config.checkpoint_every;
        let mut due = every > 0 && (last + 1) / every > first / every;
        if let (false, Some(interval)) = (due, self.config.checkpoint_interval) {
            let oldest = self.ledger.with(|ledger| {
                let covered = ledger
                    .checkpoints()
                    .ok()
                    .and_then(|c| c.last().map(|(size, _)| *size))
                    .unwrap_or(0);
                ledger
                    .entry(covered)
                    .ok()
                    .flatten()
                    .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
                    .and_then(|v| v.get("time").and_then(|t| t.as_u64()))
            });
            due = oldest.is_some_and(|t| seconds_now().saturating_sub(t) >= interval.as_secs());
        }
        if due {
            if let Ok(key) = log_key(&self.dir) {
                let origin = &self.origin;
                let _ = self.ledger.with(|ledger| ledger.checkpoint(origin, &key));
            }
        }
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
            argv: match facts.sealed.and_then(|(_, c)| c.get("argv")) {
                Some(c) => serde_json::json!({ "commitment": c }),
                None => serde_json::json!(facts.argv),
            },
            confidential: facts
                .sealed
                .map(|(id, c)| serde_json::json!({"seal": id, "commitments": c})),
            invocation_id: &report.invocation_id,
            backend: &report.backend,
            routing: report.routing.as_deref(),
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
            streams: report.streams.as_ref().map(|s| {
                let mut v = serde_json::json!(s);
                for (sealed, stream) in [(SEALED_STDIN, "stdin"), (SEALED_STDOUT, "stdout")] {
                    if let (Some(c), Some(digest)) = (
                        facts.sealed.and_then(|(_, c)| c.get(sealed)),
                        v.get_mut(stream).filter(|d| !d.is_null()),
                    ) {
                        *digest = serde_json::json!({ "commitment": c });
                    }
                }
                v
            }),
            refusal: report.refusal.as_deref(),
            processor: report.processor.as_ref(),
            module_digest: report.module_digest.as_deref(),
            leases: &report.leases,
            connections: &report.connections,
        };
        let value = serde_json::to_value(&event)
            .map_err(|e| warden_ledger::store::StoreError::Encode(e.to_string()))?;
        report.audit = Some(self.record("run", value)?);
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
