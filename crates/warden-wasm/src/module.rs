//! Loading modules: `.wasm` (binary), `.wat` (text) and `.cwasm`
//! (precompiled by wasmtime), compiled once per engine and file version
//! and kept, with their preview-1 imports resolved, in a process-wide cache.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wasmtime::component::Component;
use wasmtime::{Engine, InstancePre, Module, Precompiled};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::engines::{EngineKind, EngineSlot};
use crate::run::RunState;
use crate::WasmError;

/// How many compiled modules the cache keeps (per backend).
const CACHE_CAPACITY: usize = 64;
/// Largest module file Warden reads.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// The file formats Warden runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleFormat {
    /// WebAssembly binary (or text: wasmtime accepts both for `.wasm`).
    Wasm,
    /// WebAssembly text.
    Wat,
    /// Precompiled for this wasmtime version and engine configuration.
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

/// A compiled module or component, its imports resolved against the WASI
/// linker of its engine: instantiating it is all a run has left to do.
/// Cheap to clone.
#[derive(Clone)]
pub struct PreparedModule {
    pub(crate) kind: EngineKind,
    pub(crate) engine: Engine,
    pub(crate) code: Code,
    pub(crate) path: PathBuf,
    pub(crate) format: ModuleFormat,
}

/// What is run.
#[derive(Clone)]
pub(crate) enum Code {
    /// A core module using WASI preview 1; its `_start` is called.
    Module(InstancePre<RunState>),
    /// A component using WASI 0.2; its `wasi:cli/run` is called.
    Component(CommandPre<RunState>),
}

impl std::fmt::Debug for PreparedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedModule")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("component", &self.is_component())
            .field("metered", &self.kind.metered)
            .field("pooled", &self.kind.pooled)
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
}

#[derive(Default)]
pub(crate) struct ModuleCache {
    map: Mutex<HashMap<FileKey, PreparedModule>>,
}

impl ModuleCache {
    /// The prepared module for `path` on engine `slot`, compiling it on a
    /// miss.
    pub fn get_or_load(
        &self,
        slot: &EngineSlot,
        kind: EngineKind,
        path: &Path,
    ) -> Result<PreparedModule, WasmError> {
        let meta = std::fs::metadata(path).map_err(|e| WasmError::NotFound {
            path: path.to_path_buf(),
            source: e,
        })?;
        let key = FileKey::new(kind, path, &meta);
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.clone());
        }
        // Read through one handle and key the entry by that handle's
        // metadata, so what is cached is what was read.
        let mut file = File::open(path).map_err(|e| WasmError::NotFound {
            path: path.to_path_buf(),
            source: e,
        })?;
        let meta = file.metadata().map_err(|e| WasmError::NotFound {
            path: path.to_path_buf(),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(WasmError::Invalid {
                path: path.to_path_buf(),
                message: "not a regular file".into(),
            });
        }
        if meta.len() > MAX_MODULE_BYTES {
            return Err(WasmError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "{} bytes is larger than the {} bytes Warden accepts",
                    meta.len(),
                    MAX_MODULE_BYTES
                ),
            });
        }
        let key = FileKey::new(kind, path, &meta);
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(MAX_MODULE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| WasmError::NotFound {
                path: path.to_path_buf(),
                source: e,
            })?;
        let prepared = prepare(slot, kind, path, &bytes)?;
        let mut map = self.lock();
        if map.len() >= CACHE_CAPACITY {
            // Drop entries for older versions of this file first, else any.
            map.retain(|k, _| k.path != key.path);
            if map.len() >= CACHE_CAPACITY {
                if let Some(k) = map.keys().next().cloned() {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, prepared.clone());
        Ok(prepared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, PreparedModule>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Compiles (or deserializes) `bytes` and resolves its imports.
pub(crate) fn prepare(
    slot: &EngineSlot,
    kind: EngineKind,
    path: &Path,
    bytes: &[u8],
) -> Result<PreparedModule, WasmError> {
    let format = ModuleFormat::of(path);
    let invalid = |message: String| WasmError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let link = |e: wasmtime::Error| WasmError::Link {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    };
    let precompiled = Engine::detect_precompiled(bytes);
    let component = match format {
        ModuleFormat::Cwasm => match precompiled {
            Some(Precompiled::Component) => true,
            Some(Precompiled::Module) => false,
            None => return Err(invalid("not a precompiled wasmtime module".into())),
        },
        ModuleFormat::Wasm | ModuleFormat::Wat => {
            if precompiled.is_some() {
                return Err(invalid("a precompiled module must be named *.cwasm".into()));
            }
            is_component(bytes)
        }
    };
    let compiled = match format {
        ModuleFormat::Cwasm => deserialize(&slot.engine, kind, bytes, component),
        _ if component => Component::new(&slot.engine, bytes)
            .map(Compiled::Component)
            .map_err(|e| format!("{e:#}")),
        _ => Module::new(&slot.engine, bytes)
            .map(Compiled::Module)
            .map_err(|e| format!("{e:#}")),
    }
    .map_err(invalid)?;
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
            Code::Module(slot.linker.instantiate_pre(&m).map_err(link)?)
        }
    };
    Ok(PreparedModule {
        kind,
        engine: slot.engine.clone(),
        code,
        path: path.to_path_buf(),
        format,
    })
}

/// A component's preamble: magic, then version 0x0d and layer 1.
pub(crate) fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

enum Compiled {
    Module(Module),
    Component(Component),
}

/// Loads a `.cwasm` made by [`crate::WasmBackend::precompile`] (or
/// `wasmtime compile` with the same settings).
fn deserialize(
    engine: &Engine,
    kind: EngineKind,
    bytes: &[u8],
    component: bool,
) -> Result<Compiled, String> {
    // SAFETY: `Module::deserialize` and `Component::deserialize` trust their
    // input to be an artifact that wasmtime itself produced: wasmtime checks
    // the header, its version and that the engine settings match, but then
    // maps the machine code inside as executable. The bytes are our own
    // copy in memory (not a mapping of a file that could change
    // underneath), and a `.cwasm` is only loaded when the caller names one
    // explicitly, which makes its producer part of the trusted base, like
    // the `warden` binary itself. Untrusted code comes as `.wasm`/`.wat`
    // and is compiled by Warden.
    #[allow(unsafe_code)]
    let loaded = unsafe {
        if component {
            Component::deserialize(engine, bytes).map(Compiled::Component)
        } else {
            Module::deserialize(engine, bytes).map(Compiled::Module)
        }
    };
    loaded.map_err(|e| {
        let mut message = format!("{e:#}");
        if message.contains("fuel") || message.contains("compatible") {
            message.push_str(if kind.metered {
                " (this run meters fuel: the module must be precompiled with fuel metering)"
            } else {
                " (this run does not meter fuel: the module must be precompiled without fuel metering)"
            });
        }
        message
    })
}
