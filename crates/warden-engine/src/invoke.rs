//! `warden invoke`: a registered processor, resolved, verified and turned
//! into a run. Everything that can refuse it happens here, before anything
//! runs: the registry copy must still have its digest, its signature must
//! verify against the trust store (required under `require_signed`), and
//! every capability and limit it requests must be within the policy in
//! force. The run then executes the content-addressed copy itself — the
//! bytes that were verified — shown read-only at `/processor` in a jail, or
//! read from the registry by the WASM backend.

use std::path::{Path, PathBuf};

use warden_core::ProcessorRef;
use warden_policy::{Capability, LimitField, Limits, NetLimit, Policy};
use warden_processor::{Kind, Language, LoadedProcessor, Registry};
use warden_trust::truststore::TrustStore;
use warden_trust::ArtifactType;

use crate::RunRequest;

/// Why an invocation does not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Refused on trust or policy grounds (status `refused`, exit 126).
    #[error("{0}")]
    Refused(String),
    /// Could not be prepared (no such processor, unreadable state): exit 125.
    #[error("{0}")]
    Failed(String),
}

/// The registry of `tenant`: `STATE/registry` for the default tenant,
/// `STATE/tenants/TENANT/registry` for the others, so that one tenant's
/// processors are not even listed to another's principals.
pub fn registry_for(
    state: &Path,
    tenant: &str,
) -> Result<Registry, warden_processor::RegistryError> {
    if tenant == warden_core::DEFAULT_TENANT {
        Registry::open(state)
    } else {
        Registry::open(&state.join("tenants").join(tenant))
    }
}

/// What the caller asks for.
pub struct InvokeRequest<'a> {
    /// `NAME`, `NAME@VERSION` or `NAME@sha256:HEX`.
    pub spec: &'a str,
    /// Whose registry it is looked up in.
    pub tenant: &'a str,
    /// The policy in force (already chosen by the caller), if any.
    pub policy: Option<&'a Path>,
    pub args: Vec<String>,
    pub state: &'a Path,
    pub cwd: PathBuf,
    pub caller_env: Vec<(String, String)>,
    /// Seconds since the epoch, for signature validity.
    pub now: u64,
    /// The caller's ceiling (`warden invoke --ceiling CAP`): when given,
    /// every capability the processor requests must be covered by one of
    /// these (a limit capability: at most the ceiling's of the same kind),
    /// or the invocation is refused, as for a policy.
    pub ceiling: Option<Vec<Capability>>,
    /// The caller's limits (`--wall-time`, `--memory`, …): each one given
    /// lowers the processor's own (the run gets the smaller of the two),
    /// and is itself lowered to the policy's.
    pub limits: Limits,
}

/// A processor ready to run.
pub struct InvokePlan {
    pub request: RunRequest,
    pub processor: ProcessorRef,
    /// The verified copy's directory, to show at `/processor` (jail kinds).
    pub code: Option<PathBuf>,
    pub loaded: LoadedProcessor,
    /// Why it goes to its backend: the processor's kind.
    pub routing: String,
}

fn interpreter(language: Language) -> &'static str {
    match language {
        Language::Python => "python3",
        Language::Node => "node",
        Language::Php => "php",
        Language::Sh => "sh",
    }
}

/// The policy file a command is under: `--policy P`, else the
/// configuration's `policy`, else `STATE/policy.yaml` when there is one.
pub fn policy_in_force(given: Option<&Path>, state: &Path) -> Option<PathBuf> {
    given
        .map(Path::to_path_buf)
        .or_else(|| crate::config::current(state).default_policy())
}

/// Whether processors must be signed: the policy in force says
/// `require_signed: true`, or the configuration does.
pub fn signatures_required(policy: Option<&Policy>, state: &Path) -> bool {
    policy.is_some_and(|p| p.require_signed) || crate::config::current(state).require_signed
}

/// Loads the policy in force (with its `extends` chain), or none.
pub fn load_policy_in_force(path: Option<&Path>) -> Result<Option<Policy>, InvokeError> {
    path.map(|p| crate::load_policy(p).map_err(|e| InvokeError::Failed(e.to_string())))
        .transpose()
}

/// Checks a processor's signature envelope against the trust store:
/// `Ok(Some(keyid))` when it verifies, `Ok(None)` when there is none and
/// none is required, a refusal otherwise. A signature that is present but
/// does not verify refuses the processor whether or not one is required.
pub fn check_signature(
    state: &Path,
    id: &str,
    digest_hex: &str,
    envelope: Option<&[u8]>,
    required: bool,
    now: u64,
) -> Result<Option<String>, InvokeError> {
    let Some(envelope) = envelope else {
        return if required {
            Err(InvokeError::Refused(format!(
                "processor {id} is unsigned, and require_signed is in force (policy or warden.yaml)"
            )))
        } else {
            Ok(None)
        };
    };
    let store = TrustStore::open_file(&crate::config::current(state).trust_store)
        .map_err(|e| InvokeError::Failed(e.to_string()))?;
    match store.verify(envelope, digest_hex, Some(ArtifactType::Processor), now) {
        Ok(v) => Ok(Some(v.keyid)),
        Err(e) => Err(InvokeError::Refused(format!(
            "processor {id}: its signature does not verify: {e}"
        ))),
    }
}

/// Resolves, verifies and plans the invocation.
pub fn plan(req: &InvokeRequest<'_>) -> Result<InvokePlan, InvokeError> {
    let policy = load_policy_in_force(req.policy)?;
    if !warden_core::valid_tenant(req.tenant) {
        return Err(InvokeError::Failed(format!(
            "invalid tenant {:?}",
            req.tenant
        )));
    }
    let registry =
        registry_for(req.state, req.tenant).map_err(|e| InvokeError::Failed(e.to_string()))?;
    let record = registry
        .resolve(req.spec)
        .map_err(|e| InvokeError::Failed(e.to_string()))?;
    // Read back and hashed again: a registry copy changed since it was
    // added is refused, not run.
    let loaded = registry.load(&record).map_err(|e| match e {
        warden_processor::RegistryError::Tampered(why) => InvokeError::Refused(format!(
            "processor {}: the registry copy no longer matches its digest ({why})",
            record.id()
        )),
        other => InvokeError::Failed(other.to_string()),
    })?;
    let id = record.id();
    let require_signed = signatures_required(policy.as_ref(), req.state);
    let signer = check_signature(
        req.state,
        &id,
        loaded.tree.digest_hex(),
        loaded.signature.as_deref(),
        require_signed,
        req.now,
    )?;
    let manifest = &loaded.manifest;
    // Relative grants mean what they mean on the command line.
    let requested: Vec<Capability> = manifest
        .capabilities
        .iter()
        .map(|c| c.clone().with_base(&req.cwd))
        .collect();
    if let Some(policy) = &policy {
        if let Some(outside) = requested.iter().find(|c| !policy.permits(c)) {
            return Err(InvokeError::Refused(format!(
                "processor {id} requests {outside}, which policy {} does not allow",
                policy.origin
            )));
        }
        let exceeding = manifest.limits.exceeding(&policy.limits);
        if !exceeding.is_empty() {
            return Err(InvokeError::Refused(format!(
                "processor {id} asks for limits above policy {}: {}",
                policy.origin,
                exceeding.join(", ")
            )));
        }
    }
    if let Some(ceiling) = &req.ceiling {
        if let Some(outside) = requested.iter().find(|c| !within(c, ceiling)) {
            return Err(InvokeError::Refused(format!(
                "processor {id} requests {outside}, which the caller's ceiling does not allow"
            )));
        }
    }
    // The caller's limits, within the policy's; then the smaller of them
    // and the processor's, also where a limit capability sets one.
    let caller = match &policy {
        Some(p) => at_most(&req.limits, &p.limits, false),
        None => req.limits.clone(),
    };
    let limits = at_most(&manifest.limits, &caller, true);
    let requested: Vec<Capability> = requested.into_iter().map(|c| lowered(c, &caller)).collect();
    let entry = &manifest.entry;
    let inside = Path::new(warden_core::PROCESSOR_DIR).join(entry);
    let inside = inside.display().to_string();
    let (argv, backend, code) = match manifest.kind {
        Kind::Script => {
            let language = manifest.language.ok_or_else(|| {
                InvokeError::Failed(format!("processor {id}: a script without a language"))
            })?;
            (
                vec![interpreter(language).to_string(), inside],
                "jail",
                Some(loaded.dir.clone()),
            )
        }
        Kind::Native => (vec![inside], "jail", Some(loaded.dir.clone())),
        Kind::Wasm => (
            vec![loaded.entry_path().display().to_string()],
            "wasm",
            None,
        ),
    };
    // Native code and scripts run on the jail, or on gVisor when the
    // policy in force asks strong isolation.
    let strong = policy
        .as_ref()
        .is_some_and(|p| p.isolation == Some(warden_policy::Isolation::Strong));
    let backend = if backend == "jail" && strong {
        "gvisor"
    } else {
        backend
    };
    let mut argv = argv;
    argv.extend(req.args.iter().cloned());
    let request = RunRequest {
        argv,
        policy: req.policy.map(Path::to_path_buf),
        allow: requested.iter().map(ToString::to_string).collect(),
        at: Vec::new(),
        env: Vec::new(),
        limits,
        // A jailed processor works in a scratch directory of its own, not
        // in the caller's.
        workdir: (backend != "wasm").then(|| PathBuf::from("/tmp")),
        backend: Some(backend.to_string()),
        fuel: None,
        deterministic: false,
        tenant: None,
        modules: Vec::new(),
        redact: Vec::new(),
        caller_env: req.caller_env.clone(),
        cwd: req.cwd.clone(),
        exact_grants: true,
    };
    let kind = match manifest.kind {
        Kind::Script => "script",
        Kind::Native => "native",
        Kind::Wasm => "wasm",
    };
    let routing = match (&policy, backend) {
        (Some(p), "gvisor") => format!(
            "processor kind {kind}, and policy {} asks isolation: strong: the gvisor backend",
            p.origin
        ),
        _ => format!("processor kind {kind}: the {backend}"),
    };
    Ok(InvokePlan {
        routing,
        request,
        processor: ProcessorRef {
            name: record.name.clone(),
            version: record.version.clone(),
            digest: record.digest.clone(),
            signer,
        },
        code,
        loaded,
    })
}

/// Whether `cap` is covered by `ceiling`: a grant by one that subsumes
/// it; a limit capability by every one of the ceiling's of its kind (none:
/// not limited by the ceiling).
fn within(cap: &Capability, ceiling: &[Capability]) -> bool {
    match LimitField::of_capability(cap) {
        Some((field, _)) => ceiling
            .iter()
            .filter(|c| LimitField::of_capability(c).is_some_and(|(f, _)| f == field))
            .all(|c| c.subsumes(cap)),
        None => ceiling.iter().any(|c| c.subsumes(cap)),
    }
}

/// Field by field, the smaller of `limits` and `ceiling` where both are
/// set; where only `ceiling` is, its value if `fill`, else none.
fn at_most(limits: &Limits, ceiling: &Limits, fill: bool) -> Limits {
    let mut out = Limits::default();
    for field in LimitField::ALL {
        let value = match (limits.get(field), ceiling.get(field)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (Some(a), None) => Some(a),
            (None, Some(b)) if fill => Some(b),
            (None, _) => None,
        };
        if let Some(v) = value {
            out.set(field, v);
        }
    }
    out
}

/// A limit capability lowered to the caller's limit of its kind; any
/// other capability as it is.
fn lowered(cap: Capability, caller: &Limits) -> Capability {
    match cap {
        Capability::MemLimit(b) => Capability::MemLimit(caller.memory.map_or(b, |m| b.min(m))),
        Capability::CpuLimit(p) => Capability::CpuLimit(caller.cpu_percent.map_or(p, |m| p.min(m))),
        Capability::TimeLimit(d) => Capability::TimeLimit(caller.wall_time.map_or(d, |m| d.min(m))),
        Capability::ProcLimit(n) => Capability::ProcLimit(caller.pids.map_or(n, |m| n.min(m))),
        Capability::NetLimit(NetLimit::Bytes(b)) => {
            Capability::NetLimit(NetLimit::Bytes(caller.net_bytes.map_or(b, |m| b.min(m))))
        }
        Capability::NetLimit(NetLimit::Connections(n)) => Capability::NetLimit(
            NetLimit::Connections(caller.net_connections.map_or(n, |m| n.min(m))),
        ),
        Capability::NetLimit(NetLimit::Idle(d)) => {
            Capability::NetLimit(NetLimit::Idle(caller.net_idle.map_or(d, |m| d.min(m))))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caps(list: &[&str]) -> Vec<Capability> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn a_ceiling_covers_grants_and_bounds_limit_capabilities() {
        let ceiling = caps(&["net:http:*.example.com", "mem:limit:64MiB"]);
        let ok = caps(&[
            "net:http:api.example.com",
            "mem:limit:32MiB",
            "proc:limit:4",
        ]);
        assert!(ok.iter().all(|c| within(c, &ceiling)));
        for bad in caps(&["net:http:other.org", "mem:limit:128MiB", "clock:read"]) {
            assert!(!within(&bad, &ceiling), "{bad}");
        }
        assert!(!within(&caps(&["clock:read"])[0], &[]));
    }

    #[test]
    fn the_caller_lowers_limits_never_raises_them() {
        let manifest = Limits {
            memory: Some(256 << 20),
            wall_time: Some(Duration::from_secs(60)),
            ..Limits::default()
        };
        let caller = Limits {
            memory: Some(512 << 20),
            wall_time: Some(Duration::from_secs(2)),
            output: Some(1024),
            ..Limits::default()
        };
        let got = at_most(&manifest, &caller, true);
        assert_eq!(got.memory, Some(256 << 20));
        assert_eq!(got.wall_time, Some(Duration::from_secs(2)));
        assert_eq!(got.output, Some(1024));
        assert_eq!(got.pids, None);
        let policy = Limits {
            output: Some(100),
            ..Limits::default()
        };
        let clamped = at_most(&caller, &policy, false);
        assert_eq!(clamped.output, Some(100));
        assert_eq!(clamped.pids, None);
        assert_eq!(clamped.memory, Some(512 << 20));
        assert_eq!(
            lowered("time:limit:1m".parse().unwrap(), &caller).to_string(),
            lowered("time:limit:2s".parse().unwrap(), &Limits::default()).to_string()
        );
    }
}
