//! Leases: the right of one invocation to read one secret version for a
//! while.
//!
//! Each lease is `STATE/leases/<id>.json` (0600), replaced atomically on
//! every change; changes take an exclusive lock on `STATE/leases/.lock` so
//! a renewal racing a revocation can never undo it. A lease names its
//! holder by pid *and* the process start time from `/proc/PID/stat`, so a
//! recycled pid is not mistaken for the holder: [`LeaseStore::reap`]
//! (run on start) revokes every lease that expired or whose holder is gone.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::fsutil;
use crate::store::{valid_secret_name, SecretStore};
use crate::SecretError;

/// Added to a run's wall-time limit for the default lease TTL, so a run
/// that uses all its time can still read its secrets at the end.
pub const LEASE_TTL_MARGIN: Duration = Duration::from_secs(30);

/// The default TTL of a lease for a run limited to `wall_time`.
pub fn default_ttl(wall_time: Duration) -> Duration {
    wall_time.saturating_add(LEASE_TTL_MARGIN)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lease errors. None carries a secret value.
#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("lease {0} expired")]
    Expired(String),
    #[error("lease {0} was revoked")]
    Revoked(String),
    #[error("no lease {0}")]
    Unknown(String),
    #[error("invalid tenant name {0:?}")]
    InvalidTenant(String),
    #[error("invalid secret name {0:?}")]
    InvalidName(String),
    #[error("{path}: not a lease file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] SecretError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>, source: io::Error) -> LeaseError {
    LeaseError::Io {
        what: what.into(),
        source,
    }
}

/// The process a lease belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot when the
    /// process started. A pid reused by a later process differs here.
    pub start_time: u64,
}

/// What `/proc/PID/stat` says of a process: its state letter and start
/// time. `None` when there is no such process.
fn proc_stat(pid: u32) -> io::Result<Option<(char, u64)>> {
    let text = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ESRCH: the process went away while we read.
        Err(e) if e.raw_os_error() == Some(3) => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name may hold spaces and parentheses: fields resume
    // after the last ')'. There the state is field 3, start time field 22.
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat");
    let rest = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(bad)?;
    let start_time = fields
        .get(22 - 3)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok(Some((state, start_time)))
}

impl Holder {
    /// This process.
    pub fn current() -> io::Result<Holder> {
        Holder::of_pid(std::process::id())
    }

    /// A running process (`NotFound` when there is none).
    pub fn of_pid(pid: u32) -> io::Result<Holder> {
        match proc_stat(pid)? {
            Some((_, start_time)) => Ok(Holder { pid, start_time }),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no process {pid}"),
            )),
        }
    }

    /// Whether the holder still runs: same pid, same start time, and not
    /// a zombie (a dead child its parent has not reaped yet).
    pub fn is_alive(&self) -> bool {
        match proc_stat(self.pid) {
            Ok(Some((state, start_time))) => {
                start_time == self.start_time && !matches!(state, 'Z' | 'X' | 'x')
            }
            Ok(None) => false,
            // Unreadable (e.g. hidepid): do not revoke on a guess.
            Err(_) => true,
        }
    }
}

/// Why a lease stopped being usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevokeReason {
    /// Revoked on request.
    Revoked,
    /// Reaped after its TTL ran out.
    Expired,
    /// Reaped because its holder process is gone.
    HolderGone,
}

/// One lease, as stored in `STATE/leases/<id>.json`. Holds no value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// 128 random bits, 32 lowercase hex digits.
    pub id: String,
    pub tenant: String,
    pub secret: String,
    pub version: u64,
    pub holder: Holder,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the lease is expired from this second on.
    pub expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<RevokeReason>,
}

impl Lease {
    /// Whether the lease may be used at `now`.
    pub fn status(&self, now: u64) -> Result<(), LeaseError> {
        if self.revoked_at.is_some() {
            Err(LeaseError::Revoked(self.id.clone()))
        } else if now >= self.expires {
            Err(LeaseError::Expired(self.id.clone()))
        } else {
            Ok(())
        }
    }
}

fn ttl_secs(ttl: Duration) -> u64 {
    // Round up: a TTL is a promise of at least that long.
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

fn valid_lease_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The persisted leases under `STATE/leases`.
#[derive(Debug)]
pub struct LeaseStore {
    dir: PathBuf,
}

/// Holds the leases directory's lock while alive.
struct DirLock(#[allow(dead_code)] fs::File);

impl LeaseStore {
    /// Opens (creating 0700 when missing) the leases under `state`.
    pub fn open(state: &Path) -> Result<Self, LeaseError> {
        let dir = state.join("leases");
        fsutil::private_dir(&dir)?;
        Ok(LeaseStore { dir })
    }

    /// Grants `holder` a lease on `tenant`/`name` at `version` for `ttl`
    /// from `now`. The caller resolves the version and checks the grant
    /// (`secret:NAME`) first.
    pub fn grant(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
        ttl: Duration,
        holder: Holder,
        now: u64,
    ) -> Result<Lease, LeaseError> {
        if !warden_core::valid_tenant(tenant) {
            return Err(LeaseError::InvalidTenant(tenant.to_string()));
        }
        if !valid_secret_name(name) {
            return Err(LeaseError::InvalidName(name.to_string()));
        }
        let _lock = self.lock()?;
        loop {
            let lease = Lease {
                id: fsutil::random_hex_id()?,
                tenant: tenant.to_string(),
                secret: name.to_string(),
                version,
                holder,
                created: now,
                expires: now.saturating_add(ttl_secs(ttl)),
                revoked_at: None,
                revoked_reason: None,
            };
            let path = self.path(&lease.id);
            let json = serde_json::to_vec_pretty(&lease).expect("a lease serializes");
            match fsutil::write_new_file(&path, &json, 0o600) {
                Ok(()) => return Ok(lease),
                // 2^-128 odds, but never overwrite another lease.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(format!("write {}", path.display()), e)),
            }
        }
    }

    /// Extends a usable lease to `now + ttl`. Revoked or expired leases
    /// stay dead.
    pub fn renew(&self, id: &str, ttl: Duration, now: u64) -> Result<Lease, LeaseError> {
        let _lock = self.lock()?;
        let mut lease = self.get(id)?;
        lease.status(now)?;
        lease.expires = now.saturating_add(ttl_secs(ttl));
        self.save(&lease)?;
        Ok(lease)
    }

    /// Revokes a lease (again is fine: the first revocation's time stays).
    pub fn revoke(&self, id: &str, now: u64) -> Result<Lease, LeaseError> {
        let _lock = self.lock()?;
        let mut lease = self.get(id)?;
        if lease.revoked_at.is_none() {
            lease.revoked_at = Some(now);
            lease.revoked_reason = Some(RevokeReason::Revoked);
            self.save(&lease)?;
        }
        Ok(lease)
    }

    /// One lease by id.
    pub fn get(&self, id: &str) -> Result<Lease, LeaseError> {
        if !valid_lease_id(id) {
            return Err(LeaseError::Unknown(id.to_string()));
        }
        let path = self.path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LeaseError::Unknown(id.to_string()))
            }
            Err(e) => return Err(io_error(format!("read {}", path.display()), e)),
        };
        let lease: Lease = serde_json::from_slice(&bytes).map_err(|e| LeaseError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if lease.id != id {
            return Err(LeaseError::Corrupt {
                path,
                reason: format!("holds lease {}", lease.id),
            });
        }
        Ok(lease)
    }

    /// Every lease (of `tenant` when given), oldest first.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Lease>, LeaseError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| io_error(format!("list {}", self.dir.display()), e))?;
        let mut leases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(format!("list {}", self.dir.display()), e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|id| valid_lease_id(id))
                .map(str::to_owned)
            else {
                continue;
            };
            let lease = match self.get(&id) {
                Ok(lease) => lease,
                // Removed between listing and reading.
                Err(LeaseError::Unknown(_)) => continue,
                Err(e) => return Err(e),
            };
            if tenant.is_none_or(|t| t == lease.tenant) {
                leases.push(lease);
            }
        }
        leases.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(leases)
    }

    /// The lease when it may be used at `now`: known, not revoked, not
    /// expired.
    pub fn check(&self, id: &str, now: u64) -> Result<Lease, LeaseError> {
        let lease = self.get(id)?;
        lease.status(now)?;
        Ok(lease)
    }

    /// Reads the leased secret's value: fails once the lease is revoked or
    /// expired (or the secret was removed).
    pub fn read(
        &self,
        store: &SecretStore,
        id: &str,
        now: u64,
    ) -> Result<Zeroizing<Vec<u8>>, LeaseError> {
        let lease = self.check(id, now)?;
        Ok(store.get(&lease.tenant, &lease.secret, Some(lease.version))?)
    }

    /// Revokes every live lease that expired by `now` or whose holder is
    /// gone (after a crash), and returns them as revoked. Run on start.
    pub fn reap(&self, now: u64) -> Result<Vec<Lease>, LeaseError> {
        let _lock = self.lock()?;
        let mut reaped = Vec::new();
        for mut lease in self.list(None)? {
            if lease.revoked_at.is_some() {
                continue;
            }
            let reason = if now >= lease.expires {
                RevokeReason::Expired
            } else if !lease.holder.is_alive() {
                RevokeReason::HolderGone
            } else {
                continue;
            };
            lease.revoked_at = Some(now);
            lease.revoked_reason = Some(reason);
            self.save(&lease)?;
            reaped.push(lease);
        }
        Ok(reaped)
    }

    /// Deletes the files of leases revoked before `before` (unix secs), so
    /// the directory does not grow without end; returns how many.
    pub fn purge(&self, before: u64) -> Result<usize, LeaseError> {
        let _lock = self.lock()?;
        let mut purged = 0;
        for lease in self.list(None)? {
            if lease.revoked_at.is_some_and(|t| t < before) {
                let path = self.path(&lease.id);
                fs::remove_file(&path)
                    .map_err(|e| io_error(format!("remove {}", path.display()), e))?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn save(&self, lease: &Lease) -> Result<(), LeaseError> {
        let path = self.path(&lease.id);
        let json = serde_json::to_vec_pretty(lease).expect("a lease serializes");
        fsutil::write_replace(&path, &json, 0o600)
            .map_err(|e| io_error(format!("write {}", path.display()), e))
    }

    fn lock(&self) -> Result<DirLock, LeaseError> {
        let path = self.dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(format!("open {}", path.display()), e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_error(format!("lock {}", path.display()), e.into()))?;
        Ok(DirLock(file))
    }
}
