//! `kv`: a per-tenant key-value store, embedded (one redb database file
//! per tenant, `<kv_dir>/<tenant>.redb`; one table per namespace).
//!
//! `kv:read:NS` allows `get` and `list`, `kv:write:NS` also `set` and
//! `delete` (NS `*`: every namespace). Every bound is a status code, never
//! a trap: keys 1 byte to 1 KiB, values up to 1 MiB, and per run at most
//! [`MAX_OPS`] operations, [`MAX_WRITTEN_BYTES`] written and
//! [`MAX_READ_BYTES`] read; a tenant's database file grows to at most
//! `WasmConfig::kv_max_tenant_bytes` (default [`DEFAULT_MAX_TENANT_BYTES`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, TableDefinition, TableError};
use warden_policy::Capability;

use super::{HostError, HostState};
use crate::WasmBackend;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1 << 10;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Operations per run.
pub const MAX_OPS: u32 = 10_000;
/// Bytes of keys and values written per run.
pub const MAX_WRITTEN_BYTES: u64 = 64 << 20;
/// Bytes of keys and values read per run.
pub const MAX_READ_BYTES: u64 = 256 << 20;
/// Default size cap of one tenant's database file.
pub const DEFAULT_MAX_TENANT_BYTES: u64 = 256 << 20;
/// Keys per page of `list`.
pub const LIST_MAX_KEYS: usize = 1000;
/// Bytes of keys per page of `list`.
pub const LIST_MAX_BYTES: usize = 64 << 10;
/// Cache of one tenant's open database (redb's default, 1 GiB, would let
/// each tenant's reads grow Warden's memory by that much).
const CACHE_BYTES: usize = 16 << 20;

/// The open databases of a backend, one per tenant, opened on first use
/// (redb allows one open handle per file and process).
pub(crate) struct Stores {
    dir: Option<PathBuf>,
    max_tenant_bytes: u64,
    open: Mutex<HashMap<String, Arc<Tenant>>>,
}

/// One tenant's open database and its file (whose size is capped).
pub(crate) struct Tenant {
    db: Database,
    file: std::fs::File,
}

impl Stores {
    pub fn new(dir: Option<PathBuf>, max_tenant_bytes: u64) -> Self {
        Stores {
            dir,
            max_tenant_bytes,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's database, created (with its directory, mode 0700) if
    /// needed.
    fn database(&self, tenant: &str) -> Result<Arc<Tenant>, HostError> {
        let dir = self
            .dir
            .as_deref()
            .ok_or_else(|| HostError::Unavailable("no key-value directory is configured".into()))?;
        if !warden_core::valid_tenant(tenant) {
            return Err(HostError::Invalid(format!(
                "invalid tenant name {tenant:?}"
            )));
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = open.get(tenant) {
            return Ok(db.clone());
        }
        create_private_dir(dir)
            .map_err(|e| HostError::Unavailable(format!("{}: {e}", dir.display())))?;
        check_private_dir(dir)?;
        let path = dir.join(format!("{tenant}.redb"));
        let file = open_private_file(&path)?;
        let size_probe = file
            .try_clone()
            .map_err(|e| HostError::Unavailable(format!("{}: {e}", path.display())))?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_file(file)
            .map_err(|e| {
                HostError::Unavailable(format!("key-value store {}: {e}", path.display()))
            })?;
        let tenant_store = Arc::new(Tenant {
            db,
            file: size_probe,
        });
        open.insert(tenant.to_string(), tenant_store.clone());
        Ok(tenant_store)
    }
}

/// Refuses a key-value directory that someone else could change: it must
/// be a directory of Warden's own user, writable by no one else (else
/// another user could plant or swap a tenant's database file).
fn check_private_dir(dir: &Path) -> Result<(), HostError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)
        .map_err(|e| HostError::Unavailable(format!("{}: {e}", dir.display())))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(HostError::Unavailable(format!(
            "key-value directory {} must be a directory owned by uid {me} and writable by no one else",
            dir.display()
        )));
    }
    Ok(())
}

/// Opens (or creates, mode 0600) a tenant's database file: never through a
/// symlink, and only a regular file of Warden's own user with no other
/// name (a hard link).
fn open_private_file(path: &Path) -> Result<std::fs::File, HostError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: String| HostError::Unavailable(format!("{}: {why}", path.display()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(path)
        .map_err(|e| refuse(e.to_string()))?;
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != me || meta.nlink() != 1 {
        return Err(refuse(format!(
            "not a regular file of uid {me} with a single name"
        )));
    }
    Ok(file)
}

/// Where the key-value stores live when nothing else is said (see
/// [`warden_core::state::default_kv_dir`]).
pub fn default_kv_dir() -> Option<PathBuf> {
    warden_core::state::default_kv_dir()
}

/// Makes `dir` (and its parents) with mode 0700 if it is missing.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    warden_core::state::private_dir(dir)
}

/// What a run did with the store so far, against its quotas. A run and
/// the modules it calls share one (a callee's operations count against
/// its caller's quota: calls do not multiply it).
#[derive(Debug, Default)]
pub(crate) struct Quota {
    ops: u32,
    read: u64,
    written: u64,
    /// HTTP requests sent (the `http` capability shares this quota).
    http_requests: u32,
    /// The run's network state (names pinned, connections recorded),
    /// which its callees share too.
    net: Arc<super::http::RunNet>,
}

/// A run's access to its tenant's store.
pub(crate) struct Session {
    backend: WasmBackend,
    tenant: String,
    quota: Arc<Mutex<Quota>>,
    /// Why the store could not be opened, the first time: the guest only
    /// gets UNAVAILABLE, the operator reads this in the report's warnings.
    unavailable: Option<String>,
    /// The quota (and the network state in it) is this run's own, not a
    /// caller's: its report lists the connections.
    owner: bool,
}

impl Session {
    /// `quota`: the caller's, for a called module; `None` for a run of
    /// its own.
    /// The backend's state shared by runs.
    pub fn shared(&self) -> &super::HostShared {
        self.backend.host_shared()
    }

    pub fn new(backend: &WasmBackend, tenant: &str, quota: Option<Arc<Mutex<Quota>>>) -> Self {
        Session {
            backend: backend.clone(),
            tenant: tenant.to_string(),
            owner: quota.is_none(),
            quota: quota.unwrap_or_default(),
            unavailable: None,
        }
    }

    /// The run's network state, shared with its callees.
    pub fn net(&self) -> Arc<super::http::RunNet> {
        self.with_quota(|q| q.net.clone())
    }

    /// True for a run of its own (not a called module).
    pub fn owner(&self) -> bool {
        self.owner
    }

    /// Why the tenant's store could not be opened, if it could not.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// The quota this run counts against (to share with a callee).
    pub fn quota(&self) -> Arc<Mutex<Quota>> {
        self.quota.clone()
    }

    fn with_quota<R>(&self, f: impl FnOnce(&mut Quota) -> R) -> R {
        f(&mut self.quota.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn count_op(&mut self) -> Result<(), HostError> {
        self.with_quota(|q| {
            if q.ops >= MAX_OPS {
                return Err(HostError::Limit(format!(
                    "at most {MAX_OPS} key-value operations per run"
                )));
            }
            q.ops += 1;
            Ok(())
        })
    }

    /// Counts one outgoing HTTP request against `max` per run (callees
    /// included).
    pub(crate) fn count_http_request(&mut self, max: u32) -> Result<(), HostError> {
        self.with_quota(|q| {
            if q.http_requests >= max {
                return Err(HostError::Limit(format!(
                    "at most {max} HTTP requests per run (called modules included)"
                )));
            }
            q.http_requests += 1;
            Ok(())
        })
    }

    fn count_read(&mut self, n: usize) -> Result<(), HostError> {
        self.with_quota(|q| {
            q.read = q.read.saturating_add(n as u64);
            if q.read > MAX_READ_BYTES {
                return Err(HostError::Limit(format!(
                    "at most {MAX_READ_BYTES} bytes read from the key-value store per run"
                )));
            }
            Ok(())
        })
    }

    fn count_written(&mut self, n: usize) -> Result<(), HostError> {
        self.with_quota(|q| {
            let total = q.written.saturating_add(n as u64);
            if total > MAX_WRITTEN_BYTES {
                return Err(HostError::Limit(format!(
                    "at most {MAX_WRITTEN_BYTES} bytes written to the key-value store per run"
                )));
            }
            q.written = total;
            Ok(())
        })
    }

    fn database(&mut self) -> Result<Arc<Tenant>, HostError> {
        let opened = self.backend.host_shared().kv.database(&self.tenant);
        if let Err(HostError::Unavailable(why)) = &opened {
            self.unavailable.get_or_insert_with(|| why.clone());
        }
        opened
    }
}

/// A namespace name: the alphabet of `kv:read:NS` (not `*`).
fn check_namespace(ns: &str) -> Result<(), HostError> {
    let valid = ns != "*"
        && matches!(
            format!("kv:read:{ns}").parse::<Capability>(),
            Ok(Capability::KvRead(_))
        );
    if valid {
        Ok(())
    } else {
        Err(HostError::Invalid(format!("invalid namespace {ns:?}")))
    }
}

fn check_key(key: &[u8]) -> Result<(), HostError> {
    if key.is_empty() {
        return Err(HostError::Invalid("empty key".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(HostError::TooLarge(format!(
            "key of {} bytes (at most {MAX_KEY_BYTES})",
            key.len()
        )));
    }
    Ok(())
}

fn storage(e: impl std::fmt::Display) -> HostError {
    HostError::Failed(format!("key-value store: {e}"))
}

fn table(ns: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(ns)
}

/// Checks the names, the grant (recording a denial) and the operation
/// quota of one call.
fn begin(
    state: &mut HostState,
    function: &'static str,
    ns: &str,
    write: bool,
) -> Result<Arc<Tenant>, HostError> {
    check_namespace(ns)?;
    let needed = if write {
        Capability::KvWrite(ns.to_string())
    } else {
        Capability::KvRead(ns.to_string())
    };
    state.require(function, needed)?;
    let session = state.kv_session()?;
    session.count_op()?;
    session.database()
}

/// The value of `key` in namespace `ns`.
pub(crate) fn get(
    state: &mut HostState,
    function: &'static str,
    ns: &str,
    key: &[u8],
) -> Result<Option<Vec<u8>>, HostError> {
    check_key(key)?;
    let store = begin(state, function, ns, false)?;
    let txn = store.db.begin_read().map_err(storage)?;
    let table = match txn.open_table(table(ns)) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(storage(e)),
    };
    let value = table.get(key).map_err(storage)?.map(|v| v.value().to_vec());
    if let Some(v) = &value {
        state.kv_session()?.count_read(v.len())?;
    }
    Ok(value)
}

/// Stores `value` under `key`, durably.
pub(crate) fn set(
    state: &mut HostState,
    function: &'static str,
    ns: &str,
    key: &[u8],
    value: &[u8],
) -> Result<(), HostError> {
    check_key(key)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(HostError::TooLarge(format!(
            "value of {} bytes (at most {MAX_VALUE_BYTES})",
            value.len()
        )));
    }
    let store = begin(state, function, ns, true)?;
    let size = store.file.metadata().map_err(storage)?.len();
    let cap = state.shared()?.kv.max_tenant_bytes;
    if size.saturating_add((key.len() + value.len()) as u64) > cap {
        return Err(HostError::Limit(format!(
            "the tenant's store is full ({size} of at most {cap} bytes)"
        )));
    }
    state.kv_session()?.count_written(key.len() + value.len())?;
    let txn = store.db.begin_write().map_err(storage)?;
    {
        let mut t = txn.open_table(table(ns)).map_err(storage)?;
        t.insert(key, value).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

/// Removes `key`; true if it was there.
pub(crate) fn delete(
    state: &mut HostState,
    function: &'static str,
    ns: &str,
    key: &[u8],
) -> Result<bool, HostError> {
    check_key(key)?;
    let store = begin(state, function, ns, true)?;
    let txn = store.db.begin_write().map_err(storage)?;
    let existed = {
        let mut t = txn.open_table(table(ns)).map_err(storage)?;
        let removed = t.remove(key).map_err(storage)?;
        removed.is_some()
    };
    txn.commit().map_err(storage)?;
    Ok(existed)
}

/// One page of keys.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyPage {
    pub keys: Vec<Vec<u8>>,
    pub more: bool,
}

/// Keys of `ns` starting with `prefix`, strictly after `after` when given.
pub(crate) fn list(
    state: &mut HostState,
    function: &'static str,
    ns: &str,
    prefix: &[u8],
    after: Option<&[u8]>,
) -> Result<KeyPage, HostError> {
    if prefix.len() > MAX_KEY_BYTES || after.is_some_and(|a| a.len() > MAX_KEY_BYTES) {
        return Err(HostError::TooLarge(format!(
            "prefix or start key over {MAX_KEY_BYTES} bytes"
        )));
    }
    let store = begin(state, function, ns, false)?;
    let txn = store.db.begin_read().map_err(storage)?;
    let table = match txn.open_table(table(ns)) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(KeyPage::default()),
        Err(e) => return Err(storage(e)),
    };
    let start: &[u8] = match after {
        Some(a) if a >= prefix => a,
        _ => prefix,
    };
    let mut page = KeyPage::default();
    let mut bytes = 0usize;
    for entry in table.range::<&[u8]>(start..).map_err(storage)? {
        let (k, _) = entry.map_err(storage)?;
        let k = k.value();
        if after.is_some_and(|a| k == a) {
            continue;
        }
        if !k.starts_with(prefix) {
            break;
        }
        if page.keys.len() >= LIST_MAX_KEYS || bytes + k.len() > LIST_MAX_BYTES {
            page.more = true;
            break;
        }
        bytes += k.len();
        page.keys.push(k.to_vec());
    }
    state.kv_session()?.count_read(bytes)?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_keys_are_checked() {
        assert!(check_namespace("orders").is_ok());
        assert!(check_namespace("a.b-c_d").is_ok());
        for bad in ["", "*", ".hidden", "-x", "a/b", "a:b", "../x"] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
        assert!(check_key(b"").is_err());
        assert!(check_key(&[0u8; MAX_KEY_BYTES]).is_ok());
        assert!(matches!(
            check_key(&[0u8; MAX_KEY_BYTES + 1]),
            Err(HostError::TooLarge(_))
        ));
    }
}
