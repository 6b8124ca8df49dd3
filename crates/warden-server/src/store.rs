//! Submissions in the state directory: `STATE/serve/submissions/`, one
//! JSON file per submission (`ID.json`: its status, times, result and
//! callback state) and, while it has not finished, one with what it needs
//! to run (`ID.input.json`: the request and the caller's API key). Every
//! file is 0600 in 0700 directories, written to a temporary name, synced
//! and renamed over the old one, so that a crash leaves the old file or
//! the new one, never half of one. The input is deleted once the
//! submission has finished; the record is deleted after the retention
//! time.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::ExecuteAnswer;
use crate::error::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("submissions store {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("submissions store {0}: not a submission: {1}")]
    Json(PathBuf, serde_json::Error),
    #[error("cannot draw a random id: {0}")]
    Random(std::io::Error),
}

/// Where a submission is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a worker (also after a restart).
    Queued,
    /// Its run has started.
    Running,
    /// Its run happened: `result` is what `POST /v1/execute` would have
    /// answered (whatever the report's status).
    Done,
    /// It could not run, or the run was refused: `error` says why (the
    /// error body `POST /v1/execute` would have answered).
    Failed,
}

impl Status {
    pub fn finished(self) -> bool {
        matches!(self, Status::Done | Status::Failed)
    }
}

/// The delivery of a submission's callback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackState {
    /// POSTs made so far.
    pub attempts: u32,
    /// Whether one was answered 2xx.
    pub delivered: bool,
    /// Why the last attempt failed (a connection error, or the status it
    /// was answered with).
    pub last_error: Option<String>,
}

/// A submission as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// The tenant of the principal that submitted it: only that tenant's
    /// principals see it.
    pub tenant: String,
    pub principal: String,
    pub status: Status,
    /// Milliseconds since the epoch.
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Order of submission (queued ones run in this order after a restart).
    pub seq: u64,
    /// Runs started: more than 1 when a run was cut off (by a restart or
    /// the shutdown deadline) and started again.
    pub runs: u32,
    pub result: Option<ExecuteAnswer>,
    pub error: Option<ErrorBody>,
    pub callback_url: Option<String>,
    pub callback: Option<CallbackState>,
}

/// What a submission needs to run; deleted once it has finished.
#[derive(Serialize, Deserialize)]
pub struct Input {
    /// The `POST /v1/execute` body (without `callback_url`).
    pub request: serde_json::Value,
    /// The caller's API key: the run is the caller's (`WARDEN_API_KEY`),
    /// as for `POST /v1/execute`.
    pub key: String,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").finish_non_exhaustive()
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-05-01T12:34:56.789Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let in_day = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60,
        ms % 1000
    )
}

/// A fresh id: 128 random bits, 32 lowercase hex digits.
pub fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    rustix::rand::getrandom(&mut bytes[..], rustix::rand::GetRandomFlags::empty())
        .map_err(|e| StoreError::Random(e.into()))?;
    Ok(hex::encode(bytes))
}

/// Whether `id` has the form of an id (and so is a safe file name).
pub fn is_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The directory of submissions.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(path.to_path_buf(), e)
}

/// Makes `dir` (and missing parents) 0700.
pub fn private_dirs(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(io(dir))
}

/// Writes `bytes` to `path` by rename: a 0600 temporary file beside it,
/// synced, renamed over `path`, the directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", new_id()?));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::Io(path.to_path_buf(), e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Store {
    /// `STATE/serve/submissions`, made 0700 if missing.
    pub fn open(state: &Path) -> Result<Store, StoreError> {
        let dir = state.join("serve").join("submissions");
        private_dirs(&dir)?;
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn input_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.input.json"))
    }

    /// Stores a new submission: its input first, then its record (a
    /// record is never without its input while it has not finished).
    pub fn create(&self, record: &Record, input: &Input) -> Result<(), StoreError> {
        let path = self.input_path(&record.id);
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec(input).map_err(|e| StoreError::Json(path.clone(), e))?,
        );
        write_atomic(&path, &bytes)?;
        self.save(record).inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })
    }

    pub fn save(&self, record: &Record) -> Result<(), StoreError> {
        let path = self.record_path(&record.id);
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Json(path.clone(), e))?;
        write_atomic(&path, &bytes)
    }

    /// The record of `id`; `None` when there is none (or `id` is not an id).
    pub fn load(&self, id: &str) -> Result<Option<Record>, StoreError> {
        if !is_id(id) {
            return Ok(None);
        }
        let path = self.record_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Json(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }

    pub fn load_input(&self, id: &str) -> Result<Option<Input>, StoreError> {
        if !is_id(id) {
            return Ok(None);
        }
        let path = self.input_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Json(path, e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }

    /// Deletes the input of `id` (the request's files and the key).
    pub fn delete_input(&self, id: &str) -> Result<(), StoreError> {
        let path = self.input_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }

    /// Deletes `id` altogether.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.delete_input(id)?;
        let path = self.record_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }

    /// Every record (a file that does not parse is skipped with a
    /// warning, and left where it is), and the ids of inputs without a
    /// record.
    pub fn scan(&self) -> Result<(Vec<Record>, Vec<String>), StoreError> {
        let mut records = Vec::new();
        let mut inputs = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_suffix(".input.json") {
                if is_id(id) {
                    inputs.push(id.to_string());
                }
            } else if let Some(id) = name.strip_suffix(".json") {
                if !is_id(id) {
                    continue;
                }
                match self.load(id) {
                    Ok(Some(r)) => records.push(r),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                // A write cut off by a crash.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let orphans = inputs
            .into_iter()
            .filter(|id| !records.iter().any(|r| &r.id == id))
            .collect();
        records.sort_by_key(|r| (r.seq, r.created_ms));
        Ok((records, orphans))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, seq: u64) -> Record {
        Record {
            id: id.into(),
            tenant: "t".into(),
            principal: "p".into(),
            status: Status::Queued,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            seq,
            runs: 0,
            result: None,
            error: None,
            callback_url: None,
            callback: None,
        }
    }

    #[test]
    fn ids_are_128_bits_of_hex_and_checked() {
        let a = new_id().unwrap();
        assert!(is_id(&a), "{a}");
        assert_ne!(a, new_id().unwrap());
        for bad in ["", "../x", &a[..31], &a.to_uppercase(), &format!("{a}0")] {
            assert!(!is_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn records_and_inputs_round_trip_privately() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.dir()), 0o700);
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        let input = Input {
            request: serde_json::json!({"language": "sh"}),
            key: "wdn_x".into(),
        };
        store.create(&record(&b, 2), &input).unwrap();
        store.create(&record(&a, 1), &input).unwrap();
        assert_eq!(mode(&store.input_path(&a)), 0o600);
        assert_eq!(mode(&store.record_path(&a)), 0o600);
        assert_eq!(store.load_input(&a).unwrap().unwrap().key, "wdn_x");
        let (all, orphans) = store.scan().unwrap();
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [a.as_str(), b.as_str()]);
        assert!(orphans.is_empty());
        store.delete_input(&a).unwrap();
        assert!(store.load_input(&a).unwrap().is_none());
        assert!(store.load(&a).unwrap().is_some());
        store.delete(&b).unwrap();
        assert!(store.load(&b).unwrap().is_none());
        assert!(store.load("../../etc/passwd").unwrap().is_none());
    }
}
