//! Loading modules: `.wasm` (binary), `.wat` (text) and `.cwasm`
//! (precompiled by `warden compile`), compiled once per engine and content
//! digest and kept, with their preview-1 imports resolved, in a
//! process-wide cache in front of the on-disk one (`cache.rs`).
//!
//! A miss in memory reads the file once (bounded by [`MAX_MODULE_BYTES`],
//! or [`MAX_ARTIFACT_BYTES`] for a `.cwasm`), hashes it, and then: a
//! `.cwasm` is authenticated with the host key and deserialized; a `.wasm`
//! or `.wat` is loaded from an authenticated disk-cache entry if there is
//! one, else compiled under the caller's deadline (`compile.rs`) and the
//! artifact stored on disk for the next process.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::Component;
use wasmtime::{Engine, InstancePre, Module, Precompiled};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::cache::{self, Authenticated, CacheError, Digest, DiskCache, MAX_ARTIFACT_BYTES};
use crate::compile::{self, Compiled, Compiler, Failure};
use crate::engines::{EngineKind, EngineSlot};
use crate::run::RunState;
use crate::{WasmBackend, WasmConfig, WasmError};

/// How many compiled modules the cache keeps (per backend).
const CACHE_CAPACITY: usize = 64;
/// Largest `.wasm` or `.wat` file Warden reads. Well above real modules (a
/// CPython or SQLite build is a few MiB), and a bound on the memory a
/// hostile module can make the compiler use.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;
/// A file changed this recently may change again within the same timestamp
/// tick without its metadata changing: its in-memory entry is re-checked
/// against the content digest on use (the "racy git" problem).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The file formats Warden runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleFormat {
    /// WebAssembly binary (or text: wasmtime accepts both for `.wasm`).
    Wasm,
    /// WebAssembly text.
    Wat,
    /// Precompiled by `warden compile` on this host, for this wasmtime
    /// version and engine configuration.
    Cwasm,
}

impl ModuleFormat {
    /// By file name: `.cwasm` is precompiled, `.wat` is text, anything else
    /// is read as a binary (or text) module.
    pub fn of(path: &Path) -> ModuleFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("cwasm") => ModuleFormat::Cwasm,
            Some("wat") => ModuleFormat::Wat,
            _ => ModuleFormat::Wasm,
        }
    }
}

/// Where a prepared module's machine code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Compiled by this process.
    Compiled,
    /// An authenticated entry of the on-disk cache.
    DiskCache,
    /// An authenticated `.cwasm`.
    Precompiled,
}

/// A compiled module or component, its imports resolved against the WASI
/// linker of its engine: instantiating it is all a run has left to do.
/// Cheap to clone.
#[derive(Clone)]
pub struct PreparedModule {
    pub(crate) kind: EngineKind,
    pub(crate) engine: Engine,
    pub(crate) code: Code,
    /// Host interfaces it imports (see [`crate::host::host_imports`]).
    pub(crate) host_imports: Arc<[(String, crate::host::Interface)]>,
    pub(crate) path: PathBuf,
    pub(crate) format: ModuleFormat,
    digest: Digest,
    origin: Origin,
}

/// What is run.
#[derive(Clone)]
pub(crate) enum Code {
    /// A core module using WASI preview 1; its `_start` is called.
    Module(InstancePre<RunState>, Option<SyncPre>),
    /// A component using WASI 0.2; its `wasi:cli/run` is called.
    Component(CommandPre<RunState>),
}

/// Preview-1 imports with which a run never waits, given no preopened
/// directory, a stdin that is not the caller's, and output that does not
/// queue (see `run::run`): such a run needs no fiber, and a deadline is
/// enforced by epochs alone. Clocks and randomness are gated as on the
/// asynchronous path; `fd_read` can only read the given stdin.
pub(crate) const SYNC_IMPORTS: &[(&str, &str)] = &[
    ("wasi_snapshot_preview1", "args_get"),
    ("wasi_snapshot_preview1", "args_sizes_get"),
    ("wasi_snapshot_preview1", "environ_get"),
    ("wasi_snapshot_preview1", "environ_sizes_get"),
    ("wasi_snapshot_preview1", "clock_res_get"),
    ("wasi_snapshot_preview1", "clock_time_get"),
    ("wasi_snapshot_preview1", "random_get"),
    ("wasi_snapshot_preview1", "fd_write"),
    ("wasi_snapshot_preview1", "fd_read"),
    ("wasi_snapshot_preview1", "fd_close"),
    ("wasi_snapshot_preview1", "fd_seek"),
    ("wasi_snapshot_preview1", "fd_tell"),
    ("wasi_snapshot_preview1", "fd_fdstat_get"),
    ("wasi_snapshot_preview1", "fd_filestat_get"),
    ("wasi_snapshot_preview1", "fd_prestat_get"),
    ("wasi_snapshot_preview1", "fd_prestat_dir_name"),
    ("wasi_snapshot_preview1", "proc_exit"),
    ("wasi_snapshot_preview1", "sched_yield"),
    ("warden", "log"),
    ("warden", "secret"),
];

/// A module's instantiation through the synchronous linker.
#[derive(Clone)]
pub(crate) struct SyncPre {
    pub pre: InstancePre<RunState>,
    /// Imports `fd_read`: only with a stdin that cannot block.
    pub reads_stdin: bool,
}

impl SyncPre {
    /// `None` unless every import of `module` is in [`SYNC_IMPORTS`].
    fn new(slot: &EngineSlot, module: &Module) -> Option<SyncPre> {
        let linker = slot.sync_linker.as_ref()?;
        let mut reads_stdin = false;
        for import in module.imports() {
            let name = (import.module(), import.name());
            if !SYNC_IMPORTS.contains(&name) {
                return None;
            }
            reads_stdin |= name.1 == "fd_read";
        }
        let pre = linker.instantiate_pre(module).ok()?;
        Some(SyncPre { pre, reads_stdin })
    }
}

impl std::fmt::Debug for PreparedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedModule")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("component", &self.is_component())
            .field("metered", &self.kind.metered)
            .field("pooled", &self.kind.pooled)
            .field("origin", &self.origin)
            .finish()
    }
}

impl PreparedModule {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> ModuleFormat {
        self.format
    }

    /// A WASI 0.2 component (else a preview-1 core module).
    pub fn is_component(&self) -> bool {
        matches!(self.code, Code::Component(_))
    }

    /// Compiled with fuel metering.
    pub fn metered(&self) -> bool {
        self.kind.metered
    }

    /// Identifies the module file's content: its SHA-256, or for a `.cwasm`
    /// its authentication tag (a MAC of the content under the host key).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Loaded from the on-disk compile cache (not compiled by this process).
    pub fn from_disk_cache(&self) -> bool {
        self.origin == Origin::DiskCache
    }

    /// Compiled by this process (not loaded from the disk cache or a
    /// `.cwasm`).
    pub fn compiled_here(&self) -> bool {
        self.origin == Origin::Compiled
    }
}

/// Identifies one version of one file: a replaced or rewritten file has a
/// new inode, size, modification or change time, and misses the cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    kind: EngineKind,
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn new(kind: EngineKind, path: &Path, m: &std::fs::Metadata) -> Self {
        FileKey {
            kind,
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Changed within [`RACY_WINDOW`] of `now` (or in the future).
    fn racy(&self, now: SystemTime) -> bool {
        let at = |(s, ns): (i64, i64)| {
            UNIX_EPOCH
                + Duration::new(
                    u64::try_from(s).unwrap_or(0),
                    u32::try_from(ns).unwrap_or(0),
                )
        };
        let changed = at(self.mtime).max(at(self.ctime));
        now.duration_since(changed)
            .map_or(true, |age| age < RACY_WINDOW)
    }
}

struct Cached {
    module: PreparedModule,
    racy: bool,
}

pub(crate) struct ModuleCache {
    map: Mutex<HashMap<FileKey, Cached>>,
    disk_dir: Option<PathBuf>,
    disk_max_bytes: u64,
    disk: OnceLock<Result<Arc<DiskCache>, CacheError>>,
    fingerprints: Mutex<Vec<(EngineKind, Digest)>>,
    compiler: Compiler,
}

/// A module file read into memory.
struct ModuleFile {
    bytes: Vec<u8>,
    key: FileKey,
    digest: Digest,
}

impl ModuleCache {
    pub fn new(config: &WasmConfig) -> Self {
        ModuleCache {
            map: Mutex::new(HashMap::new()),
            disk_dir: config.cache_dir.clone(),
            disk_max_bytes: config.cache_max_bytes,
            disk: OnceLock::new(),
            fingerprints: Mutex::new(Vec::new()),
            compiler: Compiler::default(),
        }
    }

    /// The on-disk cache (opened on first use), or why there is none.
    pub fn disk(&self) -> Result<&Arc<DiskCache>, &CacheError> {
        self.disk
            .get_or_init(|| {
                let dir = self.disk_dir.as_deref().ok_or(CacheError::NoDirectory)?;
                DiskCache::open(dir, self.disk_max_bytes).map(Arc::new)
            })
            .as_ref()
    }

    fn fingerprint(&self, slot: &EngineSlot, kind: EngineKind) -> Digest {
        let mut fps = lock(&self.fingerprints);
        if let Some((_, fp)) = fps.iter().find(|(k, _)| *k == kind) {
            return *fp;
        }
        let fp = cache::fingerprint(&slot.engine, kind);
        fps.push((kind, fp));
        fp
    }

    /// The prepared module for `path` on engine `slot`, compiling it on a
    /// miss; a compile gives up at `deadline`.
    pub fn get_or_load(
        &self,
        slot: &EngineSlot,
        kind: EngineKind,
        path: &Path,
        deadline: Option<Instant>,
    ) -> Result<PreparedModule, WasmError> {
        let meta = std::fs::metadata(path).map_err(|e| not_found(path, e))?;
        let key = FileKey::new(kind, path, &meta);
        let hit = lock(&self.map)
            .get(&key)
            .map(|c| (c.module.clone(), c.racy));
        let read = match hit {
            Some((module, false)) => return Ok(module),
            Some((module, true)) => {
                // Changed recently: the same metadata may hide new content.
                let read = read_module(kind, path)?;
                if read.key == key && read.digest == module.digest {
                    if !read.key.racy(SystemTime::now()) {
                        if let Some(c) = lock(&self.map).get_mut(&key) {
                            c.racy = false;
                        }
                    }
                    return Ok(module);
                }
                read
            }
            None => read_module(kind, path)?,
        };
        let racy = read.key.racy(SystemTime::now());
        let key = read.key.clone();
        let prepared = self.prepare(slot, kind, path, read, deadline)?;
        let mut map = lock(&self.map);
        if map.len() >= CACHE_CAPACITY {
            // Drop entries for older versions of this file first, else any.
            map.retain(|k, _| k.path != key.path);
            if map.len() >= CACHE_CAPACITY {
                if let Some(k) = map.keys().next().cloned() {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            key,
            Cached {
                module: prepared.clone(),
                racy,
            },
        );
        Ok(prepared)
    }

    /// Compiles (or loads) what was read and resolves its imports.
    fn prepare(
        &self,
        slot: &EngineSlot,
        kind: EngineKind,
        path: &Path,
        read: ModuleFile,
        deadline: Option<Instant>,
    ) -> Result<PreparedModule, WasmError> {
        let format = ModuleFormat::of(path);
        let invalid = |message: String| WasmError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let (compiled, origin) = match format {
            ModuleFormat::Cwasm => {
                let disk = self
                    .disk()
                    .map_err(|e| invalid(format!("cannot be authenticated: {e}")))?;
                let artifact = cache::open_cwasm(disk.key(), &read.bytes).ok_or_else(|| {
                    invalid(
                        "not produced by this host's `warden compile` (authentication failed)"
                            .into(),
                    )
                })?;
                let component = match Engine::detect_precompiled(artifact.bytes()) {
                    Some(Precompiled::Component) => true,
                    Some(Precompiled::Module) => false,
                    None => return Err(invalid("not a precompiled wasmtime module".into())),
                };
                let compiled = deserialize(&slot.engine, artifact, component)
                    .map_err(|e| invalid(explain_mismatch(e, kind)))?;
                (compiled, Origin::Precompiled)
            }
            ModuleFormat::Wasm | ModuleFormat::Wat => {
                if Engine::detect_precompiled(&read.bytes).is_some() {
                    return Err(invalid("a precompiled module must be named *.cwasm".into()));
                }
                let component = is_component(&read.bytes);
                let fp = self.fingerprint(slot, kind);
                let disk = self.disk().ok().cloned();
                match disk
                    .as_ref()
                    .and_then(|d| load_entry(d, &slot.engine, &fp, &read.digest, component))
                {
                    Some(compiled) => (compiled, Origin::DiskCache),
                    None => {
                        let engine = slot.engine.clone();
                        let digest = read.digest;
                        let bytes = read.bytes;
                        let job = move || {
                            let compiled = compile::compile(&engine, &bytes, component)?;
                            if let Some(disk) = disk {
                                if let Ok(artifact) = compiled.serialize() {
                                    disk.store(&fp, &digest, &artifact);
                                }
                            }
                            Ok(compiled)
                        };
                        let compiled = self
                            .compiler
                            .run((kind, read.digest), deadline, job)
                            .map_err(|f| match f {
                                Failure::Invalid(message) => invalid(message),
                                Failure::Timeout => WasmError::CompileTimeout {
                                    path: path.to_path_buf(),
                                },
                            })?;
                        (compiled, Origin::Compiled)
                    }
                }
            }
        };
        let link = |e: wasmtime::Error| WasmError::Link {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let code = match compiled {
            Compiled::Component(c) => {
                let pre = slot.component_linker.instantiate_pre(&c).map_err(link)?;
                let pre = CommandPre::new(pre).map_err(|e| {
                    invalid(format!(
                        "not a WASI command component (no `wasi:cli/run` export): {e:#}"
                    ))
                })?;
                Code::Component(pre)
            }
            Compiled::Module(m) => {
                if m.get_export("_start").is_none() {
                    return Err(invalid(
                        "exports no `_start` function (not a WASI command)".into(),
                    ));
                }
                let pre = slot.linker.instantiate_pre(&m).map_err(link)?;
                let sync = SyncPre::new(slot, &m);
                Code::Module(pre, sync)
            }
        };
        let host_imports = crate::host::host_imports(&code, &slot.engine).into();
        Ok(PreparedModule {
            kind,
            engine: slot.engine.clone(),
            code,
            host_imports,
            path: path.to_path_buf(),
            format,
            digest: read.digest,
            origin,
        })
    }

    /// `warden compile`: the artifact of `bytes` (read from `path`, named
    /// in errors) for the engine of `slot`, sealed with the host key.
    pub fn precompile(
        &self,
        slot: &EngineSlot,
        bytes: &[u8],
        path: &Path,
    ) -> Result<Vec<u8>, WasmError> {
        let disk = self.disk().map_err(|e| WasmError::HostKey(e.to_string()))?;
        let artifact = if is_component(bytes) {
            slot.engine.precompile_component(bytes)
        } else {
            slot.engine.precompile_module(bytes)
        }
        .map_err(|e| WasmError::Invalid {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })?;
        Ok(cache::seal_cwasm(disk.key(), artifact))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A module file that could not be opened or read: not found (exit status
/// 127) only when it does not exist, else unreadable (126), as the jail's
/// failed exec.
fn not_found(path: &Path, e: std::io::Error) -> WasmError {
    if e.kind() == std::io::ErrorKind::NotFound {
        WasmError::NotFound {
            path: path.to_path_buf(),
            source: e,
        }
    } else {
        WasmError::Unreadable {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// The bytes of the module source at `path` (`warden compile`), bounded by
/// [`MAX_MODULE_BYTES`].
pub(crate) fn read_source(path: &Path) -> Result<Vec<u8>, WasmError> {
    let kind = EngineKind {
        metered: false,
        pooled: false,
    };
    if ModuleFormat::of(path) == ModuleFormat::Cwasm {
        return Err(WasmError::Invalid {
            path: path.to_path_buf(),
            message: "already precompiled: compile the .wasm or .wat it was made from".into(),
        });
    }
    Ok(read_module(kind, path)?.bytes)
}

/// Reads a module file through one handle, bounded by the size its format
/// allows, and keys it by that handle's metadata (so what is cached is what
/// was read).
fn read_module(kind: EngineKind, path: &Path) -> Result<ModuleFile, WasmError> {
    let limit = match ModuleFormat::of(path) {
        ModuleFormat::Cwasm => MAX_ARTIFACT_BYTES,
        _ => MAX_MODULE_BYTES,
    };
    let mut file = File::open(path).map_err(|e| not_found(path, e))?;
    let meta = file.metadata().map_err(|e| not_found(path, e))?;
    if !meta.is_file() {
        return Err(WasmError::Invalid {
            path: path.to_path_buf(),
            message: "not a regular file".into(),
        });
    }
    let too_big = |n: u64| WasmError::Invalid {
        path: path.to_path_buf(),
        message: format!("{n} bytes is larger than the {limit} bytes Warden accepts"),
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| not_found(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(ModuleFile {
        digest: match ModuleFormat::of(path) {
            // Hashing a large artifact on every start would cost as much
            // as authenticating it: its tag identifies it as well.
            ModuleFormat::Cwasm => {
                cache::cwasm_tag(&bytes).unwrap_or_else(|| cache::sha256(&bytes))
            }
            _ => cache::sha256(&bytes),
        },
        key: FileKey::new(kind, path, &meta),
        bytes,
    })
}

/// The disk-cache entry of `digest`, deserialized, if it authenticates and
/// wasmtime accepts it; an entry wasmtime refuses is deleted.
fn load_entry(
    disk: &DiskCache,
    engine: &Engine,
    fp: &Digest,
    digest: &Digest,
    component: bool,
) -> Option<Compiled> {
    let entry = disk.load(fp, digest)?;
    match deserialize(engine, entry.artifact(), component) {
        Ok(compiled) if compiled.is_component() == component => Some(compiled),
        _ => {
            disk.discard(fp, digest);
            None
        }
    }
}

/// A component's preamble: magic, then version 0x0d and layer 1.
pub(crate) fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// Loads an artifact whose authenticity was checked: a `.cwasm` sealed by
/// `warden compile` or a disk-cache entry, both with this host's key.
#[allow(unsafe_code)]
fn deserialize(
    engine: &Engine,
    artifact: Authenticated<'_>,
    component: bool,
) -> Result<Compiled, wasmtime::Error> {
    let bytes = artifact.bytes();
    // SAFETY: `Module::deserialize` and `Component::deserialize` require
    // their input to be an artifact wasmtime itself produced (they check
    // the header, the version and the engine settings, then map the machine
    // code inside as executable). An `Authenticated` is made only by
    // `cache.rs` after an HMAC-SHA256 tag under this host's key checked out
    // over exactly these bytes, and that key tags only output of
    // `Engine::precompile_*` (`warden compile`) or `Module::serialize` /
    // `Component::serialize` (the compile cache) of this wasmtime version;
    // the key is 32 random bytes readable only by the user Warden runs as,
    // in a directory that user alone can write. So the bytes are such an
    // artifact unless that user's account or the `warden` binary is
    // compromised, which is outside what Warden defends. The bytes are our
    // own copy in memory (wasmtime copies them again into a fresh mapping),
    // so nothing can change them between the check and the load.
    unsafe {
        if component {
            Component::deserialize(engine, bytes).map(Compiled::Component)
        } else {
            Module::deserialize(engine, bytes).map(Compiled::Module)
        }
    }
}

/// wasmtime's refusal of a `.cwasm`; when the engine's fuel setting is what
/// differs (wasmtime: "compiled with(out) fuel support", or the epoch
/// setting that goes with it), one line saying what to do instead.
pub(crate) fn explain_mismatch(e: wasmtime::Error, kind: EngineKind) -> String {
    let message = format!("{e:#}");
    let fuel = message.contains("fuel support") || message.contains("epoch interruption");
    match (fuel, kind.metered) {
        (true, true) => "precompiled without fuel metering, so it cannot run with --fuel: \
             recompile it with `warden compile --metered` (or run without --fuel)"
            .into(),
        (true, false) => "precompiled with fuel metering (`warden compile --metered`), so it \
             runs only with --fuel N: recompile it without `--metered` to run it without a fuel budget"
            .into(),
        (false, _) => message,
    }
}

impl WasmBackend {
    /// Like [`WasmBackend::prepare`], but a compile that has not finished
    /// at `deadline` is given up ([`WasmError::CompileTimeout`]; it goes on
    /// in the background and its result is still cached).
    pub fn prepare_until(
        &self,
        path: &Path,
        kind: EngineKind,
        deadline: Option<Instant>,
    ) -> Result<PreparedModule, WasmError> {
        let slot = self.inner.engines.get(kind)?;
        self.inner.cache.get_or_load(&slot, kind, path, deadline)
    }

    /// The on-disk compile cache's directory, or why it is not used (then
    /// every process compiles, and `.cwasm` files can be neither made nor
    /// run).
    pub fn disk_cache(&self) -> Result<PathBuf, String> {
        self.inner
            .cache
            .disk()
            .map(|d| d.path().to_path_buf())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_changed_at(t: SystemTime) -> FileKey {
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        let at = (d.as_secs() as i64, i64::from(d.subsec_nanos()));
        FileKey {
            kind: EngineKind {
                metered: false,
                pooled: false,
            },
            path: PathBuf::from("/m.wasm"),
            dev: 1,
            ino: 2,
            size: 3,
            mtime: at,
            ctime: at,
        }
    }

    #[test]
    fn recently_changed_files_are_racy() {
        let now = SystemTime::now();
        assert!(key_changed_at(now).racy(now));
        assert!(key_changed_at(now - Duration::from_millis(1500)).racy(now));
        assert!(key_changed_at(now + Duration::from_secs(60)).racy(now));
        assert!(!key_changed_at(now - Duration::from_secs(3)).racy(now));
        // A change of status (ctime) counts as well.
        let mut k = key_changed_at(now - Duration::from_secs(60));
        k.ctime = key_changed_at(now).ctime;
        assert!(k.racy(now));
    }

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(ModuleFormat::of(Path::new("a.cwasm")), ModuleFormat::Cwasm);
        assert_eq!(ModuleFormat::of(Path::new("a.wat")), ModuleFormat::Wat);
        assert_eq!(ModuleFormat::of(Path::new("a.wasm")), ModuleFormat::Wasm);
        assert_eq!(ModuleFormat::of(Path::new("a")), ModuleFormat::Wasm);
        assert!(is_component(b"\0asm\x0d\0\x01\0"));
        assert!(!is_component(b"\0asm\x01\0\0\0"));
    }
}
