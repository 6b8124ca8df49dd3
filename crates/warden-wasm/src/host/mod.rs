//! Host capabilities offered to guests: `log`, `kv`, `http`, `call` and
//! `secret` (plus the gating of WASI's clocks and randomness).
//!
//! One layer of host logic (this module and [`log`], [`kv`], [`http`],
//! [`call`], [`secret`]) works on a run's [`HostState`]; two thin ABIs sit on top of
//! it: the preview-1 import module `warden` for core modules ([`p1`]) and
//! the WIT package `warden:host@0.1.0` for components ([`component`]).
//! docs/host.md documents both.
//!
//! Capabilities are checked twice: before instantiation, a module that
//! imports an interface none of whose capabilities the run has is refused
//! ([`check_imports`]: "an ungranted host function is not even linked");
//! and every call checks the exact capability it needs (a namespace, a
//! host, a module name). A refused call returns a status code (never a
//! trap) and is recorded as a `capability` violation of the run.

pub(crate) mod call;
pub(crate) mod component;
pub(crate) mod http;
pub(crate) mod kv;
pub(crate) mod log;
pub(crate) mod p1;
pub(crate) mod secret;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use thiserror::Error;
use warden_core::{Invocation, ModuleRef, Violation};
use warden_policy::Capability;
use warden_secrets::Redactor;

use crate::module::{Code as ModuleCode, PreparedModule};
use crate::{WasmBackend, WasmError};

/// Name of the preview-1 import module of Warden's host functions.
pub const P1_MODULE: &str = "warden";
/// The WIT package of Warden's host interfaces (components).
pub const WIT_PACKAGE: &str = "warden:host";

/// Longest namespace or module name a guest may pass (longer: too large).
pub(crate) const MAX_NAME: usize = 256;
/// Longest HTTP method a guest may pass.
pub(crate) const MAX_METHOD: usize = 16;

/// Status codes of the preview-1 ABI (`i32` results); the WIT ABI returns
/// the same conditions as `warden:host/types.error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum HostCode {
    Ok = 0,
    Denied = 1,
    NotFound = 2,
    Invalid = 3,
    TooLarge = 4,
    Limit = 5,
    Unavailable = 6,
    Timeout = 7,
    Failed = 8,
    /// The result does not fit the guest's buffer; the needed length was
    /// written to the length out-pointer (p1 only).
    BufferTooSmall = 9,
}

/// Why a host call failed. Shown in violations and logs; mapped to a
/// [`HostCode`] for the guest.
#[derive(Debug, Error)]
pub(crate) enum HostError {
    #[error("{function}: {capability} not granted")]
    Denied {
        function: &'static str,
        capability: String,
    },
    /// A granted secret whose lease is no longer valid (a denial too).
    #[error("{function}: the lease of secret:{secret} {why}")]
    LeaseEnded {
        function: &'static str,
        secret: String,
        why: &'static str,
    },
    #[error("not found")]
    NotFound,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("limit reached: {0}")]
    Limit(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("deadline reached")]
    Timeout,
    #[error("failed: {0}")]
    Failed(String),
    /// A connection to an address the run may not reach (a denial too).
    #[error("refused: {0}")]
    Refused(String),
}

impl HostError {
    pub fn code(&self) -> HostCode {
        match self {
            HostError::Denied { .. } | HostError::LeaseEnded { .. } | HostError::Refused(_) => {
                HostCode::Denied
            }
            HostError::NotFound => HostCode::NotFound,
            HostError::Invalid(_) => HostCode::Invalid,
            HostError::TooLarge(_) => HostCode::TooLarge,
            HostError::Limit(_) => HostCode::Limit,
            HostError::Unavailable(_) => HostCode::Unavailable,
            HostError::Timeout => HostCode::Timeout,
            HostError::Failed(_) => HostCode::Failed,
        }
    }
}

/// What the host capabilities of a backend share between runs: the open
/// key-value stores, the registry of callable modules, the HTTP client.
pub(crate) struct HostShared {
    pub kv: kv::Stores,
    pub modules: RwLock<HashMap<String, ModuleRef>>,
    pub http: http::HttpConfig,
    /// The TLS connector of every call's HTTP client.
    pub http_tls: Arc<ureq::unversioned::transport::RustlsConnector>,
    /// Key-value quotas of callers, handed to the callees they are
    /// starting, by the callee's invocation id (see [`call`]).
    pub call_quotas: Mutex<HashMap<String, Arc<Mutex<kv::Quota>>>>,
}

impl HostShared {
    pub fn new(kv_dir: Option<PathBuf>, kv_max_tenant_bytes: u64, http: http::HttpConfig) -> Self {
        HostShared {
            kv: kv::Stores::new(kv_dir, kv_max_tenant_bytes),
            modules: RwLock::new(HashMap::new()),
            http,
            http_tls: http::tls(),
            call_quotas: Mutex::new(HashMap::new()),
        }
    }
}

/// Distinct denied host calls kept per run (then only counted).
const MAX_DENIED_KINDS: usize = 64;
/// Distinct refused connections named among a run's violations (as the
/// jail names); the rest are summed in one.
const MAX_NET_REFUSALS: usize = 16;
/// Violations of callees kept per run.
const MAX_CALLEE_VIOLATIONS: usize = 64;

/// The host side of one run: its grants and what its host calls did.
pub(crate) struct HostState {
    /// Effective grants of the run (limits excluded).
    pub grants: Vec<Capability>,
    pub log: log::LogBuffer,
    /// Only for a module that imports the key-value store, `call` or
    /// `http` (it holds the per-run quotas they share with callees).
    /// Boxed, as `call`: most runs have neither, and the run's state is
    /// moved into its store.
    kv: Option<Box<kv::Session>>,
    /// The run's wall-clock deadline: no host call outlives it.
    pub deadline: Instant,
    /// Only for a run that holds leased secrets.
    pub secrets: Option<Box<secret::Secrets>>,
    /// Only for a module that imports `call`.
    pub call: Option<Box<call::CallContext>>,
    /// Denied calls by detail (`function: capability not granted`), counted.
    denied: BTreeMap<String, u64>,
    /// Other denials beyond [`MAX_DENIED_KINDS`].
    denied_overflow: u64,
    /// Refused connections (`net` violations) by detail, counted.
    net_refused: BTreeMap<String, u64>,
    /// Refused connections beyond [`MAX_NET_REFUSALS`].
    net_refused_overflow: u64,
    /// Violations that happened in callees, already prefixed.
    callee_violations: Vec<Violation>,
    /// Callees' violations beyond [`MAX_CALLEE_VIOLATIONS`], counted by
    /// kind (so that the report says some are missing).
    callee_violations_dropped: BTreeMap<String, u64>,
}

impl HostState {
    /// `redactor`: the run's secrets' (see [`log::LogBuffer::new`]).
    pub fn new(
        backend: &WasmBackend,
        inv: &Invocation,
        deadline: Instant,
        call: Option<call::CallContext>,
        kv: bool,
        redactor: Option<Arc<Redactor>>,
    ) -> Self {
        HostState {
            grants: inv
                .capabilities
                .iter()
                .filter(|c| !c.is_limit())
                .cloned()
                .collect(),
            log: log::LogBuffer::new(&inv.redact, &inv.secrets, redactor),
            kv: kv.then(|| {
                Box::new(kv::Session::new(
                    backend,
                    &inv.tenant,
                    call::caller_quota(backend, inv),
                ))
            }),
            deadline,
            secrets: secret::Secrets::new(inv, backend.config().lease_state_dir.as_deref())
                .map(Box::new),
            call: call.map(Box::new),
            denied: BTreeMap::new(),
            denied_overflow: 0,
            net_refused: BTreeMap::new(),
            net_refused_overflow: 0,
            callee_violations: Vec::new(),
            callee_violations_dropped: BTreeMap::new(),
        }
    }

    /// The run's key-value session, which also holds the per-run quotas
    /// shared with callees (there is one for every module that imports the
    /// store, `call` or `http`).
    pub fn kv_session(&mut self) -> Result<&mut kv::Session, HostError> {
        self.kv.as_deref_mut().ok_or_else(no_session)
    }

    /// The backend's state shared by runs (key-value stores, the HTTP
    /// client), reached through the run's session: a module that imports
    /// none of `kv`, `call` and `http` holds no reference to the backend.
    pub fn shared(&self) -> Result<&HostShared, HostError> {
        self.kv
            .as_deref()
            .map(kv::Session::shared)
            .ok_or_else(no_session)
    }

    /// Why the key-value store was unavailable to this run, if it was.
    pub fn kv_unavailable(&self) -> Option<&str> {
        self.kv.as_ref().and_then(|k| k.unavailable())
    }

    /// True if some grant covers `needed`.
    pub fn has(&self, needed: &Capability) -> bool {
        self.grants.iter().any(|g| g.subsumes(needed))
    }

    /// `Ok` if `needed` is granted; otherwise records the denial of
    /// `function` and returns [`HostError::Denied`].
    pub fn require(&mut self, function: &'static str, needed: Capability) -> Result<(), HostError> {
        if self.has(&needed) {
            return Ok(());
        }
        Err(self.deny(function, needed.to_string()))
    }

    /// Records that `function` was refused for want of `capability`.
    pub fn deny(&mut self, function: &'static str, capability: String) -> HostError {
        self.record_denial(HostError::Denied {
            function,
            capability,
        })
    }

    /// Records a refused call (a `capability` violation of the run).
    pub fn record_denial(&mut self, err: HostError) -> HostError {
        let detail = err.to_string();
        if let Some(n) = self.denied.get_mut(&detail) {
            *n += 1;
        } else if self.denied.len() < MAX_DENIED_KINDS {
            self.denied.insert(detail, 1);
        } else {
            self.denied_overflow += 1;
        }
        err
    }

    /// Records a refused connection (a `net` violation of the run).
    pub fn refuse_net(&mut self, detail: String) {
        if let Some(n) = self.net_refused.get_mut(&detail) {
            *n += 1;
        } else if self.net_refused.len() < MAX_NET_REFUSALS {
            self.net_refused.insert(detail, 1);
        } else {
            self.net_refused_overflow += 1;
        }
    }

    /// The connections the run attempted and the warnings about them, for
    /// its report: a run of its own takes them (its callees' included); a
    /// called module has none of its own (its caller lists them).
    pub fn take_connections(&self) -> (Vec<warden_core::Connection>, Vec<String>) {
        match self.kv.as_deref() {
            Some(session) if session.owner() => session.net().take(),
            _ => (Vec::new(), Vec::new()),
        }
    }

    /// Adds a callee's violations (prefixed with its name) to this run's.
    pub fn add_callee_violations(&mut self, module: &str, violations: &[Violation]) {
        for v in violations {
            if self.callee_violations.len() >= MAX_CALLEE_VIOLATIONS {
                *self
                    .callee_violations_dropped
                    .entry(v.kind.clone())
                    .or_insert(0) += 1;
                continue;
            }
            self.callee_violations.push(Violation {
                kind: v.kind.clone(),
                detail: format!("in module {module}: {}", v.detail),
            });
        }
    }

    /// The run's denied host calls as report violations, then its
    /// callees'.
    pub fn violations(&self) -> Vec<Violation> {
        if !self.any_denied()
            && self.callee_violations.is_empty()
            && self.callee_violations_dropped.is_empty()
        {
            return Vec::new();
        }
        let mut out: Vec<Violation> = self
            .denied
            .iter()
            .map(|(detail, count)| Violation {
                kind: "capability".into(),
                detail: if *count == 1 {
                    detail.clone()
                } else {
                    format!("{detail} ({count} attempts)")
                },
            })
            .collect();
        if self.denied_overflow > 0 {
            out.push(Violation {
                kind: "capability".into(),
                detail: format!("{} more denied host calls", self.denied_overflow),
            });
        }
        out.extend(self.net_refused.iter().map(|(detail, count)| Violation {
            kind: "net".into(),
            detail: if *count == 1 {
                detail.clone()
            } else {
                format!("{detail} ({count} attempts)")
            },
        }));
        if self.net_refused_overflow > 0 {
            out.push(Violation {
                kind: "net".into(),
                detail: format!(
                    "{} more connection attempts refused",
                    self.net_refused_overflow
                ),
            });
        }
        out.extend(self.callee_violations.iter().cloned());
        out.extend(
            self.callee_violations_dropped
                .iter()
                .map(|(kind, n)| Violation {
                    kind: kind.clone(),
                    detail: format!("{n} more in called modules"),
                }),
        );
        out
    }

    /// True if this run itself (not a callee) had a host call refused (a
    /// connection included).
    pub fn any_denied(&self) -> bool {
        !self.denied.is_empty()
            || self.denied_overflow > 0
            || !self.net_refused.is_empty()
            || self.net_refused_overflow > 0
    }
}

/// A host call that needs the run's key-value session in a module that has
/// none (it imports none of `kv`, `call`, `http`).
fn no_session() -> HostError {
    HostError::Failed("no key-value session for this module".into())
}

/// A host interface a module can import, and what its presence requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interface {
    Log,
    Kv,
    Http,
    Call,
    Secret,
    /// `wasi:clocks/*` functions (components only; preview-1 clock
    /// functions are gated when called).
    Clocks,
    /// `wasi:random/*` functions (components only, as above).
    Random,
}

impl Interface {
    /// The capability a run needs to import this interface at all: any
    /// grant of the family (the exact one is checked at each call).
    pub fn needs(self) -> &'static str {
        match self {
            Interface::Log => "log:write",
            Interface::Kv => "kv:read:NS or kv:write:NS",
            Interface::Http => "net:http:HOST",
            Interface::Call => "module:call:NAME",
            Interface::Secret => "secret:NAME",
            Interface::Clocks => "clock:read",
            Interface::Random => "random:read",
        }
    }

    /// True if some grant of `grants` lets a module import this interface.
    pub fn granted(self, grants: &[Capability]) -> bool {
        grants.iter().any(|g| match self {
            Interface::Log => matches!(g, Capability::LogWrite),
            Interface::Kv => matches!(g, Capability::KvRead(_) | Capability::KvWrite(_)),
            Interface::Http => matches!(g, Capability::NetHttp(_) | Capability::NetHttps(_)),
            Interface::Call => matches!(g, Capability::ModuleCall(_)),
            Interface::Secret => matches!(g, Capability::Secret(_) | Capability::SecretEnv(_)),
            Interface::Clocks => matches!(g, Capability::ClockRead),
            Interface::Random => matches!(g, Capability::RandomRead),
        })
    }

    /// The interface of a preview-1 import `module`.`name`, if it is one
    /// of Warden's.
    pub fn of_p1_import(module: &str, name: &str) -> Option<Interface> {
        if module != P1_MODULE {
            return None;
        }
        Some(match name {
            "log" => Interface::Log,
            n if n.starts_with("kv_") => Interface::Kv,
            n if n.starts_with("http_") => Interface::Http,
            "call" => Interface::Call,
            "secret" => Interface::Secret,
            _ => return None,
        })
    }

    /// The interface of a component import (an instance name such as
    /// `warden:host/kv@0.1.0` or `wasi:clocks/wall-clock@0.2.6`).
    pub fn of_component_import(name: &str) -> Option<Interface> {
        let unversioned = name.split('@').next().unwrap_or(name);
        let (package, interface) = unversioned.split_once('/')?;
        match package {
            WIT_PACKAGE => Some(match interface {
                "log" => Interface::Log,
                "kv" => Interface::Kv,
                "http" => Interface::Http,
                "call" => Interface::Call,
                "secret" => Interface::Secret,
                _ => return None,
            }),
            "wasi:clocks" => Some(Interface::Clocks),
            "wasi:random" => Some(Interface::Random),
            _ => None,
        }
    }
}

/// Refuses a module that imports a host interface the run has no grant
/// for, before it is instantiated: such a function is not linked for it.
pub(crate) fn check_imports(
    module: &PreparedModule,
    grants: &[Capability],
) -> Result<(), WasmError> {
    for (import, interface) in module.host_imports.iter() {
        if !interface.granted(grants) {
            return Err(WasmError::UngrantedImport {
                path: module.path.clone(),
                import: import.clone(),
                capability: interface.needs(),
            });
        }
    }
    Ok(())
}

/// The host interfaces a module imports (with one import naming each),
/// found once when it is prepared. A component counts for an interface only
/// if it imports one of its functions (importing `wasi:clocks/wall-clock`
/// for its `datetime` type, as every component using the filesystem does,
/// needs no grant).
pub(crate) fn host_imports(
    code: &ModuleCode,
    engine: &wasmtime::Engine,
) -> Vec<(String, Interface)> {
    use wasmtime::component::types::ComponentItem;
    let mut found: Vec<(String, Interface)> = Vec::new();
    let mut add = |import: String, interface: Interface| {
        if !found.iter().any(|(_, i)| *i == interface) {
            found.push((import, interface));
        }
    };
    match code {
        ModuleCode::Module(pre, _) => {
            for import in pre.module().imports() {
                if let Some(interface) = Interface::of_p1_import(import.module(), import.name()) {
                    add(format!("{}.{}", import.module(), import.name()), interface);
                }
            }
        }
        ModuleCode::Component(pre) => {
            let component = pre.instance_pre().component();
            for (name, item) in component.component_type().imports(engine) {
                let Some(interface) = Interface::of_component_import(name) else {
                    continue;
                };
                let uses_functions = match &item.ty {
                    ComponentItem::ComponentInstance(instance) => instance
                        .exports(engine)
                        .any(|(_, export)| matches!(export.ty, ComponentItem::ComponentFunc(_))),
                    ComponentItem::ComponentFunc(_) => true,
                    _ => false,
                };
                if uses_functions {
                    add(name.to_string(), interface);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_map_to_interfaces() {
        assert_eq!(
            Interface::of_p1_import("warden", "log"),
            Some(Interface::Log)
        );
        assert_eq!(
            Interface::of_p1_import("warden", "kv_set"),
            Some(Interface::Kv)
        );
        assert_eq!(
            Interface::of_p1_import("warden", "http_request"),
            Some(Interface::Http)
        );
        assert_eq!(
            Interface::of_p1_import("warden", "call"),
            Some(Interface::Call)
        );
        assert_eq!(
            Interface::of_p1_import("warden", "secret"),
            Some(Interface::Secret)
        );
        assert_eq!(Interface::of_p1_import("env", "log"), None);
        assert_eq!(
            Interface::of_component_import("warden:host/kv@0.1.0"),
            Some(Interface::Kv)
        );
        assert_eq!(
            Interface::of_component_import("warden:host/secret@0.1.0"),
            Some(Interface::Secret)
        );
        assert_eq!(
            Interface::of_component_import("warden:host/types@0.1.0"),
            None
        );
        assert_eq!(
            Interface::of_component_import("wasi:clocks/wall-clock@0.2.6"),
            Some(Interface::Clocks)
        );
        assert_eq!(
            Interface::of_component_import("wasi:random/insecure-seed@0.2.4"),
            Some(Interface::Random)
        );
        assert_eq!(
            Interface::of_component_import("wasi:cli/stdout@0.2.6"),
            None
        );
    }

    #[test]
    fn any_grant_of_a_family_links_its_interface() {
        let grants = vec![Capability::KvRead("orders".into())];
        assert!(Interface::Kv.granted(&grants));
        assert!(!Interface::Log.granted(&grants));
        assert!(!Interface::Http.granted(&[]));
        assert!(Interface::Secret.granted(&[Capability::SecretEnv("db".into())]));
        assert!(!Interface::Secret.granted(&grants));
    }
}
