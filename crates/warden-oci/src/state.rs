//! A container's state under `--root/ID`: what `state`, `start`, `kill`,
//! `exec` and `delete` need once `create` has returned, written atomically
//! (a new file renamed over the old), so a shim that calls in at any
//! moment reads a whole record or none.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::OciError;

/// The file of a container's record in its directory.
const RECORD: &str = "state.json";
/// The FIFO the container's init waits on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";
/// The outcome the monitor writes when the container's process ends.
pub const REPORT: &str = "report.json";

/// What `create` recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339.
    pub created: String,
    /// The container's first process (host pid), and its start time in
    /// clock ticks since boot (`/proc/PID/stat` field 22), so that a
    /// recycled pid is never taken for it.
    pub pid: i32,
    pub pid_start: u64,
    /// The process the shim waits on: it waits on the container's first
    /// process and ends as it did, after writing the report.
    pub monitor_pid: i32,
    /// The container's cgroup (one directory per v1 hierarchy, or the v2
    /// one), made by `create`, removed by `delete`.
    pub cgroup: crate::cgroups::Cgroup,
    /// The freezer's directory, for `pause`/`resume` and `paused`.
    pub freezer: Option<PathBuf>,
    pub annotations: HashMap<String, String>,
    pub backend: String,
    /// `start` has released the process.
    pub started: bool,
    /// The spec's hooks (poststart and poststop run after `create`).
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The profile `exec`'s processes get too.
    #[serde(default)]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// Paused by runsc (gVisor pauses in its Sentry, not by the freezer).
    #[serde(default)]
    pub paused: bool,
}

/// The state a hook reads on its stdin.
pub fn hook_state(
    id: &str,
    status: &str,
    pid: i32,
    bundle: &Path,
    annotations: &HashMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.2.0",
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations,
    })
}

/// The OCI state's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// Container ids as runc takes them: letters, digits and `_+-.`, not
/// starting with a dot (they name a directory).
pub fn check_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(OciError::Usage(format!("invalid container id {id:?}")))
    }
}

pub fn dir_of(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Makes the container's directory (0700); an id in use is refused.
pub fn make_dir(root: &Path, id: &str) -> Result<PathBuf, OciError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
        .map_err(|e| OciError::Io(format!("create {}", root.display()), e))?;
    let dir = dir_of(root, id);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(OciError::Exists(id.to_string()))
        }
        Err(e) => Err(OciError::Io(format!("create {}", dir.display()), e)),
    }
}

impl Record {
    pub fn load(root: &Path, id: &str) -> Result<Record, OciError> {
        check_id(id)?;
        let path = dir_of(root, id).join(RECORD);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OciError::NotFound(id.to_string()))
            }
            Err(e) => return Err(OciError::Io(format!("read {}", path.display()), e)),
        };
        serde_json::from_slice(&text)
            .map_err(|e| OciError::Config(format!("{}: {e}", path.display())))
    }

    /// Writes the record: a temporary file, synced, renamed into place.
    pub fn save(&self, root: &Path) -> Result<(), OciError> {
        let dir = dir_of(root, &self.id);
        let tmp = dir.join(format!(".{RECORD}.tmp"));
        let io = |what: &str| {
            let what = format!("{what} {}", tmp.display());
            move |e| OciError::Io(what, e)
        };
        let text = serde_json::to_vec(self).map_err(|e| OciError::Config(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create"))?;
        f.write_all(&text).map_err(io("write"))?;
        f.sync_all().map_err(io("sync"))?;
        std::fs::rename(&tmp, dir.join(RECORD)).map_err(io("rename"))
    }

    /// The container's status now.
    pub fn status(&self) -> Status {
        if !process_is(self.pid, self.pid_start) {
            return Status::Stopped;
        }
        if !self.started {
            return Status::Created;
        }
        if self.paused {
            return Status::Paused;
        }
        if let Some(f) = &self.freezer {
            if crate::cgroups::frozen(f) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    /// The OCI state document `state` prints.
    pub fn oci_state(&self) -> serde_json::Value {
        let status = self.status();
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        serde_json::json!({
            "ociVersion": "1.2.0",
            "id": self.id,
            "pid": pid,
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
        })
    }
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks), if the
/// process exists and is not a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields are
    // counted after its closing one.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start`.
pub fn process_is(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_own_start_time_is_read() {
        for ok in ["a", "abc-1.2_3+x", "0"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", ".hidden", "x\0y"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        assert!(process_is(me, start));
        assert!(!process_is(me, start + 1));
        assert!(!process_is(-1, start));
    }
}
