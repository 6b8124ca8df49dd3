//! The RBAC gate in force, loaded (parsed, compiled to Cedar, validated)
//! once and again only when a file it was made from changes: the RBAC
//! file, its signature and, when sources must be signed, the trust store.
//! A request costs a few `stat`s instead of a Cedar compile, and an
//! edited or revoked file still takes effect on the next request.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use warden_engine::authz::{Gate, GateError};

/// What identifies a version of a file: missing, or its inode, size and
/// change times (a rewrite in place changes `ctime`, a rename the inode).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stamp {
    Missing,
    Present {
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i128,
        ctime_ns: i128,
    },
}

impl Stamp {
    fn of(path: &Path) -> Stamp {
        match std::fs::metadata(path) {
            Ok(m) => Stamp::Present {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            },
            Err(_) => Stamp::Missing,
        }
    }
}

/// The files a gate of `state` is made from.
fn sources(state: &Path) -> Vec<PathBuf> {
    let rbac = warden_engine::config::current(state).rbac;
    let mut sig = rbac.clone().into_os_string();
    sig.push(".sig");
    let mut out = vec![rbac, PathBuf::from(sig)];
    if let Some(trust) = warden_engine::config::signed_sources() {
        out.push(trust.to_path_buf());
    }
    out
}

/// A value read from files, kept with the files' stamps at reading: it
/// stands while they are unchanged and settled (see [`settled`]).
struct Kept<T>(Mutex<Option<(Vec<Stamp>, Arc<T>)>>);

impl<T> Kept<T> {
    fn new() -> Kept<T> {
        Kept(Mutex::new(None))
    }

    /// The value kept at `stamps`, if they are settled and the same.
    fn at(&self, stamps: &[Stamp]) -> Option<Arc<T>> {
        if !stamps.iter().all(settled) {
            return None;
        }
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match kept.as_ref() {
            Some((at, value)) if at == stamps => Some(Arc::clone(value)),
            _ => None,
        }
    }

    /// Keeps `value`, read at `stamps`, when they have settled.
    fn keep(&self, stamps: Vec<Stamp>, value: &Arc<T>) {
        if stamps.iter().all(settled) {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((stamps, Arc::clone(value)));
        }
    }
}

/// The gate of one state directory, with the stamps it was loaded at.
pub struct Gates {
    state: PathBuf,
    loaded: Kept<Gate>,
}

impl Gates {
    pub fn new(state: &Path) -> Gates {
        Gates {
            state: state.to_path_buf(),
            loaded: Kept::new(),
        }
    }

    fn stamps(&self) -> Vec<Stamp> {
        sources(&self.state).iter().map(|f| Stamp::of(f)).collect()
    }

    /// The gate as last loaded, if none of its files changed since (stats
    /// only, never a load: callable on the async threads).
    pub fn fresh(&self) -> Option<Arc<Gate>> {
        self.loaded.at(&self.stamps())
    }

    /// The gate in force now. A file changed within the last second is
    /// read again on every call until it is older (a write within the
    /// timestamp granularity could otherwise hide behind equal stamps).
    pub fn current(&self) -> Result<Arc<Gate>, GateError> {
        let stamps = self.stamps();
        if let Some(gate) = self.loaded.at(&stamps) {
            return Ok(gate);
        }
        let gate = Arc::new(Gate::load(&self.state)?);
        self.loaded.keep(stamps, &gate);
        Ok(gate)
    }
}

/// Whether a file's last change is more than a second ago.
fn settled(stamp: &Stamp) -> bool {
    let Stamp::Present {
        mtime_ns, ctime_ns, ..
    } = stamp
    else {
        return true;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    now - (*mtime_ns).max(*ctime_ns) > 1_000_000_000
}

/// The identity file (principals and their key hashes), kept read while
/// its stamp stays the same: a request's key is checked in memory, and a
/// key revoked on disk is refused from the next request on (a changed
/// file is read again, and one changed within the last second on every
/// call, as for the gate).
pub struct Identities {
    path: PathBuf,
    loaded: Kept<warden_engine::identity::IdentityFile>,
}

impl Identities {
    pub fn new(state: &Path) -> Identities {
        Identities {
            path: state.join("identity").join("identity.json"),
            loaded: Kept::new(),
        }
    }

    /// The file as last read, if it has not changed since (one stat).
    pub fn fresh(&self) -> Option<Arc<warden_engine::identity::IdentityFile>> {
        self.loaded.at(&[Stamp::of(&self.path)])
    }

    /// Reads the file again (blocking), keeping it when it has settled
    /// and did not change while it was read.
    pub fn load(
        &self,
        state: &Path,
    ) -> Result<Arc<warden_engine::identity::IdentityFile>, warden_engine::identity::IdentityError>
    {
        let stamp = Stamp::of(&self.path);
        let file = Arc::new(warden_engine::identity::Identity::open(state)?.read()?);
        if Stamp::of(&self.path) == stamp {
            self.loaded.keep(vec![stamp], &file);
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_stamped_by_content_version_and_a_missing_one_as_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("rbac.yaml");
        assert_eq!(Stamp::of(&f), Stamp::Missing);
        std::fs::write(&f, "a").expect("write");
        let first = Stamp::of(&f);
        assert_ne!(first, Stamp::Missing);
        std::fs::write(&f, "ab").expect("write");
        assert_ne!(Stamp::of(&f), first, "a rewrite changes the stamp");
        assert!(!settled(&Stamp::of(&f)), "just written: not settled");
        assert!(settled(&Stamp::Missing));
    }
}
