//! `call`: a guest invokes another registered module by name
//! (`module:call:NAME`).
//!
//! The callee runs as a WASI command in its own store, on the caller's
//! thread, while the caller waits: its stdin is the input, its stdout
//! (capped) is the reply, its stderr is added to the caller's (under the
//! caller's output cap: a caller whose cap it exceeds is stopped with
//! `output_limit`). It never gets more than its caller:
//! * grants: its declared grants (or, if it declares none, the caller's)
//!   intersected with the caller's — a grant narrower than one of the
//!   caller's is kept (`fs:read:/a/b` under `fs:read:/a`), a wider one is
//!   narrowed to the caller's; never a `secret:` grant (the caller's
//!   leases are not handed on);
//! * limits: the caller's remaining wall time, CPU time, fuel (what the
//!   callee burns is taken from the caller) and memory (the caller's limit
//!   less what the caller uses); output at most [`MAX_REPLY_BYTES`];
//! * depth: calls nest at most [`MAX_DEPTH`] deep.
//!
//! What the callee logs joins the caller's log (prefixed with its name),
//! and its violations the caller's report.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_core::{EffectiveLimits, Invocation, ModuleRef, Violation};
use warden_policy::Capability;
use wasmtime::AsContextMut;

use super::kv::Quota;
use super::HostError;
use crate::output::{CappedStream, Input, Output, RunIo, SharedBuffer};
use crate::run::RunState;
use crate::{WasmBackend, WasmError};

/// Deepest nesting of calls (a top-level run is depth 0).
pub const MAX_DEPTH: u32 = 8;
/// Largest input of a call.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Largest reply (the callee's stdout and stderr together are capped at
/// this, or at the caller's output limit if smaller).
pub const MAX_REPLY_BYTES: u64 = 1 << 20;
/// Smallest memory a callee is started with.
const MIN_CALLEE_MEMORY: u64 = 1 << 20;
/// How the invocation id of a callee starts (then a number unique in the
/// process): the key under which its caller's key-value quota waits for it
/// in [`HostShared::call_quotas`](super::HostShared).
const CALL_ID_PREFIX: &str = "warden-call-";

/// The key-value quota of the caller of `inv`, if `inv` is a call being
/// started (it is taken: each call's run takes it once).
pub(crate) fn caller_quota(backend: &WasmBackend, inv: &Invocation) -> Option<Arc<Mutex<Quota>>> {
    if !inv.invocation_id.starts_with(CALL_ID_PREFIX) {
        return None;
    }
    backend
        .host_shared()
        .call_quotas
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&inv.invocation_id)
}

/// Hands a caller's key-value quota to the callee it is about to start
/// (under the callee's invocation id), and takes it back when dropped if
/// the callee never took it (e.g. it was refused before it started).
struct QuotaHandoff {
    backend: WasmBackend,
    id: String,
}

impl QuotaHandoff {
    fn new(backend: &WasmBackend, quota: Arc<Mutex<Quota>>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!("{CALL_ID_PREFIX}{}", NEXT.fetch_add(1, Ordering::Relaxed));
        backend
            .host_shared()
            .call_quotas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), quota);
        QuotaHandoff {
            backend: backend.clone(),
            id,
        }
    }
}

impl Drop for QuotaHandoff {
    fn drop(&mut self) {
        self.backend
            .host_shared()
            .call_quotas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// What a run needs to know to make calls.
pub(crate) struct CallContext {
    pub backend: WasmBackend,
    /// This run's depth (0 at the top).
    pub depth: u32,
    /// Modules named by the invocation (searched before the backend's
    /// registry).
    pub modules: Vec<ModuleRef>,
    /// The caller's environment (a callee sees the granted part of it).
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub limits: EffectiveLimits,
    pub metered: bool,
    pub deterministic: bool,
    pub deterministic_seed: Option<u64>,
    pub tenant: String,
    pub redact: Vec<String>,
    /// Thread CPU time (since an arbitrary origin) at which the caller's
    /// CPU-time limit is reached.
    pub cpu_deadline: Option<Duration>,
    /// The caller's stderr, where the callee's is forwarded.
    pub stderr: CappedStream,
}

impl CallContext {
    pub fn new(
        backend: &WasmBackend,
        inv: &Invocation,
        depth: u32,
        cpu_deadline: Option<Duration>,
        stderr: CappedStream,
    ) -> Self {
        CallContext {
            backend: backend.clone(),
            depth,
            modules: inv.modules.clone(),
            env: inv.env.clone(),
            workdir: inv.workdir.clone(),
            limits: inv.limits.clone(),
            metered: inv.fuel.is_some(),
            deterministic: inv.deterministic,
            deterministic_seed: inv.deterministic_seed,
            tenant: inv.tenant.clone(),
            redact: inv.redact.clone(),
            cpu_deadline,
            stderr,
        }
    }

    fn find(&self, name: &str) -> Option<ModuleRef> {
        self.modules
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .or_else(|| self.backend.registered_module(name))
    }
}

/// What a call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The callee's exit status as `warden run` reports it.
    pub exit_code: i32,
    pub output: Vec<u8>,
}

/// The meet of two grant sets: every capability both allow. For each pair
/// the narrower of the two is kept (for `fs:` and `kv:` the common part:
/// `fs:read:/` and `fs:write:/a` meet in `fs:read:/a`).
pub(crate) fn intersect(wanted: &[Capability], ceiling: &[Capability]) -> Vec<Capability> {
    let mut out: Vec<Capability> = Vec::new();
    for w in wanted.iter().filter(|c| !c.is_limit()) {
        for c in ceiling {
            let Some(common) = meet(w, c) else {
                continue;
            };
            if !out.iter().any(|o| o.subsumes(&common)) {
                out.retain(|o| !common.subsumes(o));
                out.push(common);
            }
        }
    }
    out
}

/// The largest capability both `a` and `b` grant, if it has a name.
fn meet(a: &Capability, b: &Capability) -> Option<Capability> {
    use Capability as C;
    match (a, b) {
        (C::FsRead(p) | C::FsWrite(p), C::FsRead(q) | C::FsWrite(q)) => {
            let path = if C::FsRead(p.clone()).subsumes(&C::FsRead(q.clone())) {
                q
            } else if C::FsRead(q.clone()).subsumes(&C::FsRead(p.clone())) {
                p
            } else {
                return None;
            };
            Some(
                if matches!(a, C::FsWrite(_)) && matches!(b, C::FsWrite(_)) {
                    C::FsWrite(path.clone())
                } else {
                    C::FsRead(path.clone())
                },
            )
        }
        (C::KvRead(x) | C::KvWrite(x), C::KvRead(y) | C::KvWrite(y)) => {
            let ns = if x == "*" {
                y
            } else if y == "*" || x == y {
                x
            } else {
                return None;
            };
            Some(
                if matches!(a, C::KvWrite(_)) && matches!(b, C::KvWrite(_)) {
                    C::KvWrite(ns.clone())
                } else {
                    C::KvRead(ns.clone())
                },
            )
        }
        _ if b.subsumes(a) => Some(a.clone()),
        _ if a.subsumes(b) => Some(b.clone()),
        _ => None,
    }
}

/// A module name: the alphabet of `module:call:NAME`.
pub(crate) fn check_name(name: &str) -> Result<(), HostError> {
    match format!("module:call:{name}").parse::<Capability>() {
        Ok(Capability::ModuleCall(_)) => Ok(()),
        _ => Err(HostError::Invalid(format!("invalid module name {name:?}"))),
    }
}

/// Everything a call needs from the caller's store, taken before the
/// callee runs.
struct Plan {
    backend: WasmBackend,
    target: ModuleRef,
    callee: Invocation,
    depth: u32,
    stderr: CappedStream,
    /// The caller's key-value quota, waiting for the callee (taken back
    /// when the plan is dropped, after the call).
    _quota: QuotaHandoff,
}

/// Checks the call and derives the callee's invocation from the caller's.
fn plan(
    state: &mut RunState,
    fuel_left: Option<u64>,
    function: &'static str,
    name: &str,
    input_len: usize,
) -> Result<Plan, HostError> {
    check_name(name)?;
    let used_memory = state.limiter_current();
    let host = &mut state.host;
    host.require(function, Capability::ModuleCall(name.to_string()))?;
    let quota = host.kv_session()?.quota();
    let ctx = host
        .call
        .as_ref()
        .ok_or_else(|| HostError::Failed("no call context for this module".into()))?;
    if ctx.depth >= MAX_DEPTH {
        return Err(HostError::Limit(format!(
            "calls nest at most {MAX_DEPTH} deep"
        )));
    }
    if input_len > MAX_INPUT_BYTES {
        return Err(HostError::TooLarge(format!(
            "input of {input_len} bytes (at most {MAX_INPUT_BYTES})"
        )));
    }
    let target = ctx.find(name).ok_or(HostError::NotFound)?;

    // Grants: the callee's own (or the caller's), never beyond the caller's;
    // and no secrets (their leases are the caller's alone).
    let wanted = target.grants.as_deref().unwrap_or(&host.grants);
    let mut grants = intersect(wanted, &host.grants);
    grants.retain(|g| !matches!(g, Capability::Secret(_) | Capability::SecretEnv(_)));

    // Limits: what remains of the caller's.
    let wall = host.deadline.saturating_duration_since(Instant::now());
    if wall.is_zero() {
        return Err(HostError::Timeout);
    }
    let cpu_time = match ctx.cpu_deadline {
        Some(at) => {
            let left = at.saturating_sub(crate::run::thread_cpu());
            if left.is_zero() {
                return Err(HostError::Limit("no CPU time left".into()));
            }
            Some(left)
        }
        None => None,
    };
    let memory = ctx.limits.memory_bytes.saturating_sub(used_memory);
    if memory < MIN_CALLEE_MEMORY {
        return Err(HostError::Limit(format!(
            "{memory} bytes of memory left for a callee (at least {MIN_CALLEE_MEMORY} needed)"
        )));
    }
    if fuel_left == Some(0) {
        return Err(HostError::Limit("no fuel left".into()));
    }
    let env = ctx
        .env
        .iter()
        .filter(|(k, _)| {
            grants
                .iter()
                .any(|g| matches!(g, Capability::Env(n) if n == k))
        })
        .cloned()
        .collect();
    let quota = QuotaHandoff::new(&ctx.backend, quota);
    let callee = Invocation {
        invocation_id: quota.id.clone(),
        argv: vec![target.name.clone()],
        env,
        workdir: ctx.workdir.clone(),
        capabilities: grants,
        limits: EffectiveLimits {
            memory_bytes: memory,
            cpu_time,
            wall_time: wall,
            output_bytes: ctx.limits.output_bytes.min(MAX_REPLY_BYTES),
            ..ctx.limits.clone()
        },
        fuel: fuel_left,
        deterministic: ctx.deterministic,
        deterministic_seed: ctx.deterministic_seed,
        tenant: ctx.tenant.clone(),
        redact: ctx.redact.clone(),
        modules: ctx.modules.clone(),
        // A callee sees its grants at their own paths.
        views: Vec::new(),
        secrets: Vec::new(),
        code: None,
    };
    Ok(Plan {
        backend: ctx.backend.clone(),
        target,
        callee,
        depth: ctx.depth + 1,
        stderr: ctx.stderr.clone(),
        _quota: quota,
    })
}

/// Calls module `name` with `input` on behalf of the run in `store`. The
/// outer error is a trap of the caller (its output cap was exceeded by
/// the callee's stderr); the inner one a failed call.
pub(crate) async fn invoke<S>(
    mut store: S,
    function: &'static str,
    name: &str,
    input: Vec<u8>,
) -> wasmtime::Result<Result<Reply, HostError>>
where
    S: AsContextMut<Data = RunState> + Send,
{
    let mut stderr = None;
    let reply = call(&mut store, function, name, input, &mut stderr).await;
    // The callee's stderr, under the caller's cap.
    if let Some((to, bytes)) = stderr {
        to.write_capped(&bytes).map_err(wasmtime::Error::new)?;
    }
    Ok(reply)
}

async fn call<S>(
    mut store: S,
    function: &'static str,
    name: &str,
    input: Vec<u8>,
    stderr: &mut Option<(CappedStream, Vec<u8>)>,
) -> Result<Reply, HostError>
where
    S: AsContextMut<Data = RunState> + Send,
{
    let metered = store
        .as_context_mut()
        .data()
        .host
        .call
        .as_ref()
        .is_some_and(|c| c.metered);
    let fuel_left = if metered {
        Some(store.as_context_mut().get_fuel().unwrap_or(0))
    } else {
        None
    };
    let plan = plan(
        store.as_context_mut().data_mut(),
        fuel_left,
        function,
        name,
        input.len(),
    )?;
    let kind = plan.backend.engine_kind(&plan.callee);
    let module = plan
        .backend
        .prepare(&plan.target.path, kind)
        .map_err(|e| HostError::Failed(format!("module {name}: {e}")))?;
    let out = SharedBuffer::new();
    let err = SharedBuffer::new();
    let io = RunIo {
        stdin: Input::Bytes(input),
        stdout: Output::Buffer(out.clone()),
        stderr: Output::Buffer(err.clone()),
    };
    let ran = Box::pin(crate::run::run_async(
        &plan.backend,
        &module,
        &plan.callee,
        &io,
        None,
        plan.depth,
    ))
    .await;
    *stderr = Some((plan.stderr.clone(), err.contents()));
    let outcome = match ran {
        Ok(o) => o,
        Err(e @ WasmError::UngrantedImport { .. }) => {
            // The callee wants more than the caller can give it: it is
            // refused, as a top-level run would be (exit status 126).
            store
                .as_context_mut()
                .data_mut()
                .host
                .add_callee_violations(
                    name,
                    &[Violation {
                        kind: "capability".into(),
                        detail: e.to_string(),
                    }],
                );
            return Ok(Reply {
                exit_code: 126,
                output: Vec::new(),
            });
        }
        Err(e) => return Err(HostError::Failed(format!("module {name}: {e}"))),
    };
    if let (Some(before), Some(used)) = (fuel_left, outcome.fuel_consumed) {
        let _ = store.as_context_mut().set_fuel(before.saturating_sub(used));
    }
    let mut ctx = store.as_context_mut();
    let host = &mut ctx.data_mut().host;
    for record in &outcome.logs {
        let message = format!("{name}: {}", record.message);
        host.log.push(record.level, message.as_bytes(), false);
    }
    // Records the callee dropped or cut are missing from the caller's
    // log too: its report must say so.
    if outcome.logs_truncated {
        host.log.truncated = true;
    }
    host.add_callee_violations(name, &outcome.violations);
    Ok(Reply {
        exit_code: outcome.exit_status(),
        output: out.contents(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<Capability> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn a_callee_never_gets_more_than_its_caller() {
        let caller = caps(&["fs:read:/a", "kv:write:orders", "log:write"]);
        // Narrower grants are kept, wider ones narrowed, others dropped.
        let wanted = caps(&[
            "fs:read:/a/b",
            "fs:write:/",
            "kv:read:*",
            "net:http:*",
            "clock:read",
        ]);
        let got = intersect(&wanted, &caller);
        assert_eq!(got, caps(&["fs:read:/a", "kv:read:orders"]));
        for g in &got {
            assert!(
                caller.iter().any(|c| c.subsumes(g)),
                "{g} exceeds the caller"
            );
        }
        assert!(intersect(&caps(&["fs:read:/b"]), &caller).is_empty());
        assert!(intersect(&caps(&["module:call:x"]), &caller).is_empty());
        assert_eq!(intersect(&caller, &caller), caller);
        assert_eq!(
            intersect(&caps(&["fs:read:/"]), &caps(&["fs:write:/a"])),
            caps(&["fs:read:/a"])
        );
        assert_eq!(
            intersect(&caps(&["fs:write:/a/b"]), &caps(&["fs:write:/a"])),
            caps(&["fs:write:/a/b"])
        );
        assert_eq!(
            intersect(&caps(&["net:http:api.x.com"]), &caps(&["net:http:*.x.com"])),
            caps(&["net:http:api.x.com"])
        );
    }

    #[test]
    fn module_names_are_checked() {
        assert!(check_name("parser").is_ok());
        assert!(check_name("a.b-c").is_ok());
        for bad in ["", "-x", "a/b", "a:b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
