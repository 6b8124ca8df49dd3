//! Persistent sandboxes (first version): a tenant's record and a private
//! workspace on the host, `ROOT/ID/workspace` (0700; `--sandbox-root`,
//! by default the state directory's sibling `STATE-sandboxes`: the jail
//! refuses to grant a path inside the state directory), that persists
//! between commands. Each `exec` is its own jailed run (a
//! `warden` child, as for `POST /v1/execute`) with the workspace granted
//! read-write at `/workspace`, also its working directory, under the
//! limits and capabilities the sandbox was created with. No process
//! outlives its exec: a long-lived jail is the next step.
//!
//! Records are `STATE/serve/sandboxes/ID.json` (0600, written by rename),
//! so that sandboxes survive a restart. Create, delete, pause, resume and
//! each reaping is a ledger entry of kind `sandbox`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, RwLock};
use utoipa::ToSchema;

use crate::api::{self, Language, Limits, LimitsSpec, Plan, Program};
use crate::error::{ApiError, ErrorBody};
use crate::server::{Shared, Who};
use crate::store::{self, StoreError};
use crate::workspace::{self, FileError};

/// `ttl_s` when the request has none.
pub const DEFAULT_TTL_S: u64 = 3600;
/// `idle_timeout_s` when the request has none.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 600;
/// Longest `code` of an exec (it is passed as an argument: `sh -c CODE`).
pub const MAX_CODE_BYTES: usize = 100 << 10;
/// How often expired and idle sandboxes are looked for.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// What an idle sandbox becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdleAction {
    /// Paused: its workspace is kept; `resume` it to exec again.
    #[default]
    Pause,
    /// Destroyed with its workspace.
    Destroy,
}

/// Where a sandbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    /// New execs are refused (409 `paused`) until `resume`.
    Paused,
}

/// `POST /v1/sandboxes`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The language an exec's `code` is run by when the exec names none.
    #[serde(default)]
    pub language: Option<Language>,
    /// Every exec's limits (`wall_time_ms` may be given per exec).
    #[serde(default)]
    pub limits: LimitsSpec,
    /// As for `POST /v1/execute` (`fs:` and `env:` refused).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Seconds until it is destroyed (default 3600; at most the
    /// service's `--sandbox-max-ttl`).
    #[serde(default)]
    pub ttl_s: Option<u64>,
    /// Seconds without exec or file access until `idle_action` (default
    /// 600).
    #[serde(default)]
    pub idle_timeout_s: Option<u64>,
    #[serde(default)]
    pub idle_action: IdleAction,
}

/// `POST /v1/sandboxes/{id}/exec`: `command`, or `code` (with a
/// `language`, or the sandbox's).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments, e.g. `["sh", "-c", "ls"]` (looked
    /// up on the jail's `PATH`; run in `/workspace`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Source to run with the language's interpreter (`python3 -c`,
    /// `node -e`, `php -r` (no `<?php`), `sh -c`); at most 100 KiB.
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub language: Option<Language>,
    #[serde(default)]
    pub stdin: Option<String>,
    /// This exec's wall-clock limit, instead of the sandbox's.
    #[serde(default)]
    pub wall_time_ms: Option<u64>,
}

/// A sandbox as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub tenant: String,
    pub principal: String,
    pub language: Option<Language>,
    pub limits: Limits,
    pub capabilities: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub idle_timeout_s: u64,
    pub idle_action: IdleAction,
    pub last_used_ms: u64,
    pub execs: u64,
    pub state: SandboxState,
}

/// A sandbox, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    /// 128 random bits, 32 lowercase hex digits.
    pub id: String,
    pub state: SandboxState,
    pub language: Option<Language>,
    /// RFC 3339, UTC, milliseconds.
    pub created: String,
    pub expires_at: String,
    /// The last exec, file access or resume.
    pub last_used: String,
    pub idle_timeout_s: u64,
    pub idle_action: IdleAction,
    pub capabilities: Vec<String>,
    /// Execs run so far.
    pub execs: u64,
    /// Bytes of the regular files in its workspace.
    pub disk_bytes: u64,
}

impl Sandbox {
    fn of(r: &Record, disk_bytes: u64) -> Sandbox {
        Sandbox {
            id: r.id.clone(),
            state: r.state,
            language: r.language,
            created: store::rfc3339_ms(r.created_ms),
            expires_at: store::rfc3339_ms(r.expires_ms),
            last_used: store::rfc3339_ms(r.last_used_ms),
            idle_timeout_s: r.idle_timeout_s,
            idle_action: r.idle_action,
            capabilities: r.capabilities.clone(),
            execs: r.execs,
            disk_bytes,
        }
    }
}

/// One sandbox in memory.
struct Entry {
    record: Mutex<Record>,
    /// Execs and file accesses hold it shared; pause, delete and reaping
    /// take it whole, so they wait for those in flight.
    gate: Arc<RwLock<()>>,
    /// Turns true when it is destroyed: an exec in flight is stopped.
    kill: watch::Sender<bool>,
}

impl Entry {
    fn new(record: Record) -> Arc<Entry> {
        Arc::new(Entry {
            record: Mutex::new(record),
            gate: Arc::new(RwLock::new(())),
            kill: watch::channel(false).0,
        })
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gone(&self) -> bool {
        *self.kill.borrow()
    }
}

/// The sandboxes of this service.
pub struct Sandboxes {
    /// The records: `STATE/serve/sandboxes`.
    dir: PathBuf,
    /// The workspaces: `ROOT/ID/workspace`.
    root: PathBuf,
    map: Mutex<HashMap<String, Arc<Entry>>>,
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(path.to_path_buf(), e)
}

impl Sandboxes {
    /// Opens `STATE/serve/sandboxes` and loads the records there (one
    /// that does not parse is skipped with a warning and left in place).
    pub fn open(state: &std::path::Path, root: &std::path::Path) -> Result<Sandboxes, StoreError> {
        let dir = state.join("serve").join("sandboxes");
        store::private_dirs(&dir)?;
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if !store::is_id(id) {
                continue;
            }
            let path = entry.path();
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(r) if r.id == id => {
                    map.insert(id.to_string(), Entry::new(r));
                }
                Ok(_) => tracing::warn!("{}: the record names another id", path.display()),
                Err(e) => tracing::warn!("{}: not a sandbox record: {e}", path.display()),
            }
        }
        crate::metrics::active_sandboxes(map.len());
        Ok(Sandboxes {
            dir,
            root: root.to_path_buf(),
            map: Mutex::new(map),
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn workspace(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("workspace")
    }

    /// The sandbox `id` of `tenant`, or the same 404 for an unknown id,
    /// a malformed one and another tenant's.
    fn lookup(&self, tenant: &str, id: &str) -> Result<Arc<Entry>, ApiError> {
        let found = store::is_id(id)
            .then(|| self.map().get(id).cloned())
            .flatten()
            .filter(|e| e.record().tenant == tenant && !e.gone());
        found.ok_or_else(not_found)
    }

    /// Makes the root of the workspaces (0700; given by the operator, it
    /// may exist already: it is the service's). At the first create, so
    /// that a service that makes no sandbox leaves no directory.
    fn make_root(&self) -> Result<(), StoreError> {
        store::private_dirs(&self.root)?;
        std::fs::set_permissions(
            &self.root,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(io(&self.root))
    }

    fn count(&self) -> usize {
        self.map().len()
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no sandbox with this id",
    )
}

fn paused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "paused",
        "the sandbox is paused: POST /v1/sandboxes/{id}/resume first",
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))
}

/// Writes `entry`'s record (under its lock, so that two writes cannot
/// land out of order).
async fn persist(state: &Shared, entry: &Arc<Entry>) -> Result<(), ApiError> {
    let entry = entry.clone();
    let dir = state.sandboxes.dir.clone();
    blocking(move || {
        let r = entry.record();
        let bytes = serde_json::to_vec_pretty(&*r)
            .map_err(|e| ApiError::internal(format!("cannot encode the sandbox: {e}")))?;
        store::write_atomic(&dir.join(format!("{}.json", r.id)), &bytes)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?
}

/// A ledger entry of kind `sandbox`.
async fn audit(state: &Shared, event: serde_json::Value) -> Result<(), String> {
    let dir = state.settings.runner.state.clone();
    let written = blocking(move || {
        warden_engine::audit::Audit::open(&dir)
            .and_then(|mut a| a.record("sandbox", event))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    match written {
        Ok(r) => r,
        Err(e) => Err(e.message),
    }
}

/// A ledger entry after the fact: a failure is logged and counted.
async fn audit_or_warn(state: &Shared, event: serde_json::Value) {
    if let Err(e) = audit(state, event).await {
        tracing::warn!("a sandbox ledger entry was not recorded: {e}");
        crate::metrics::unrecorded(1);
    }
}

fn event(action: &str, r: &Record, principal: Option<&str>) -> serde_json::Value {
    let mut e = serde_json::json!({
        "action": action,
        "sandbox": r.id,
        "tenant": r.tenant,
    });
    if let Some(p) = principal {
        e["principal"] = serde_json::Value::from(p);
    }
    e
}

/// Removes a sandbox taken out of the map: stops an exec in flight, waits
/// for what holds it, removes its workspace and record.
async fn destroy(state: &Shared, entry: &Arc<Entry>) -> Result<(), ApiError> {
    entry.kill.send_replace(true);
    let _whole = entry.gate.write().await;
    let id = entry.record().id.clone();
    let dir = state.sandboxes.sandbox_dir(&id);
    let record = state.sandboxes.record_path(&id);
    crate::metrics::active_sandboxes(state.sandboxes.count());
    blocking(move || {
        workspace::remove_all(&dir)
            .map_err(|e| ApiError::internal(format!("cannot remove {}: {e}", dir.display())))?;
        match std::fs::remove_file(&record) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ApiError::internal(format!(
                "cannot remove {}: {e}",
                record.display()
            ))),
        }
    })
    .await?
}

/// Answers `result`, leaving who asked on an error for the refusal layer.
fn respond<T: IntoResponse>(result: Result<T, ApiError>, who: Who) -> Response {
    match result {
        Ok(t) => t.into_response(),
        Err(e) => {
            let mut response = e.into_response();
            response.extensions_mut().insert(who);
            response
        }
    }
}

async fn who_is(
    state: &Shared,
    headers: &HeaderMap,
    who: &mut Who,
) -> Result<(String, warden_engine::identity::Actor), ApiError> {
    let key = crate::server::bearer(headers)?;
    let actor = crate::server::authenticate(state, &key).await?;
    who.principal = Some(actor.principal.clone());
    who.tenant = Some(actor.tenant.clone());
    Ok((key, actor))
}

fn seconds(field: &str, value: Option<u64>, default: u64, max: u64) -> Result<u64, ApiError> {
    match value {
        None => Ok(default.min(max)),
        Some(0) => Err(ApiError::bad(
            "invalid_field",
            format!("{field} must be at least 1"),
        )),
        Some(s) if s > max => Err(ApiError::bad(
            "invalid_field",
            format!("{field} may be at most {max} on this service"),
        )),
        Some(s) => Ok(s),
    }
}

/// Creates a sandbox.
#[utoipa::path(post, path = "/v1/sandboxes",
    request_body = CreateRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created, running", body = Sandbox),
        (status = 400, description = "bad JSON, unknown field, invalid limit, capability, ttl_s or idle_timeout_s", body = ErrorBody),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 413, description = "body larger than the configured cap", body = ErrorBody),
        (status = 429, description = "the tenant's active_sandboxes quota", body = ErrorBody),
        (status = 500, description = "the workspace or the ledger entry could not be made", body = ErrorBody),
    ))]
pub async fn create(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let mut who = Who::default();
    let result = create_inner(&state, &headers, body, &mut who).await;
    respond(result.map(|s| (StatusCode::CREATED, Json(s))), who)
}

async fn create_inner(
    state: &Shared,
    headers: &HeaderMap,
    body: Body,
    who: &mut Who,
) -> Result<Sandbox, ApiError> {
    let (_key, actor, bytes) = crate::server::caller(state, headers, body, who).await?;
    let request: CreateRequest = api::parse_json(&bytes)?;
    let limits = api::check_limits(&request.limits, &state.settings.bounds)?;
    let capabilities = api::check_capabilities(&request.capabilities)?;
    let max = state.settings.sandbox_max_ttl.as_secs().max(1);
    let ttl_s = seconds("ttl_s", request.ttl_s, DEFAULT_TTL_S, max)?;
    let idle_timeout_s = seconds(
        "idle_timeout_s",
        request.idle_timeout_s,
        DEFAULT_IDLE_TIMEOUT_S,
        max,
    )?;
    let id = store::new_id().map_err(|e| ApiError::internal(e.to_string()))?;
    let now = store::now_ms();
    let record = Record {
        id: id.clone(),
        tenant: actor.tenant.clone(),
        principal: actor.principal.clone(),
        language: request.language,
        limits,
        capabilities,
        created_ms: now,
        expires_ms: now.saturating_add(ttl_s.saturating_mul(1000)),
        idle_timeout_s,
        idle_action: request.idle_action,
        last_used_ms: now,
        execs: 0,
        state: SandboxState::Running,
    };
    let entry = Entry::new(record.clone());
    // Counted and taken under one lock: two creates cannot both pass.
    {
        let mut map = state.sandboxes.map();
        if let Some(n) = state
            .quotas
            .quota_of(&actor.tenant)
            .active_sandboxes
            .map(|n| n.get())
        {
            let active = map
                .values()
                .filter(|e| e.record().tenant == actor.tenant)
                .count();
            if active >= n as usize {
                who.quota = Some("active_sandboxes");
                return Err(ApiError::quota(
                    format!(
                        "tenant {} has {active} sandboxes, its active_sandboxes quota; delete one",
                        actor.tenant
                    ),
                    60,
                ));
            }
        }
        map.insert(id.clone(), entry.clone());
    }
    let dir = state.sandboxes.sandbox_dir(&id);
    let shared = state.clone();
    let made = blocking(move || {
        shared
            .sandboxes
            .make_root()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        workspace::create(&dir).map(|_| ())
    })
    .await?;
    let made = match made {
        Ok(()) => persist(state, &entry).await,
        Err(e) => Err(ApiError::internal(format!(
            "cannot make the sandbox's workspace: {e}"
        ))),
    };
    let made = match made {
        Ok(()) => audit(state, event("create", &record, Some(&actor.principal)))
            .await
            .map_err(|e| {
                ApiError::internal(format!("cannot record the sandbox in the ledger: {e}"))
            }),
        Err(e) => Err(e),
    };
    if let Err(e) = made {
        state.sandboxes.map().remove(&id);
        let _ = destroy(state, &entry).await;
        return Err(e);
    }
    crate::metrics::active_sandboxes(state.sandboxes.count());
    Ok(Sandbox::of(&record, 0))
}

/// Its state and use.
#[utoipa::path(get, path = "/v1/sandboxes/{id}",
    params(("id" = String, Path, description = "the sandbox's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Sandbox),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 404, description = "no sandbox with this id for the caller's tenant", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut who = Who::default();
    let result = async {
        let (_key, actor) = who_is(&state, &headers, &mut who).await?;
        let entry = state.sandboxes.lookup(&actor.tenant, &id)?;
        let workspace = state.sandboxes.workspace(&id);
        let disk = blocking(move || workspace::disk_bytes(&workspace)).await?;
        let record = entry.record().clone();
        Ok(Json(Sandbox::of(&record, disk)))
    }
    .await;
    respond(result, who)
}

/// Destroys it: an exec in flight is stopped, the workspace and
/// everything in it removed.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}",
    params(("id" = String, Path, description = "the sandbox's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "destroyed"),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 404, description = "no sandbox with this id for the caller's tenant", body = ErrorBody),
        (status = 500, description = "its workspace could not be removed", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut who = Who::default();
    let result = async {
        let (_key, actor) = who_is(&state, &headers, &mut who).await?;
        let entry = state.sandboxes.lookup(&actor.tenant, &id)?;
        // Taken out first: a second DELETE or a reaper cannot take it too.
        if state.sandboxes.map().remove(&id).is_none() {
            return Err(not_found());
        }
        destroy(&state, &entry).await?;
        let record = entry.record().clone();
        audit_or_warn(&state, event("delete", &record, Some(&actor.principal))).await;
        Ok(StatusCode::NO_CONTENT)
    }
    .await;
    respond(result, who)
}

/// Pauses it: new execs get 409 `paused`. An exec in flight is not frozen
/// (this version has no cgroup of its own to freeze): the answer waits
/// for it to end.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause",
    params(("id" = String, Path, description = "the sandbox's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "paused (also when it was)", body = Sandbox),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 404, description = "no sandbox with this id for the caller's tenant", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    set_state(state, id, headers, SandboxState::Paused).await
}

/// Resumes a paused sandbox (its idle time starts again).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume",
    params(("id" = String, Path, description = "the sandbox's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "running (also when it was)", body = Sandbox),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 404, description = "no sandbox with this id for the caller's tenant", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    set_state(state, id, headers, SandboxState::Running).await
}

async fn set_state(state: Shared, id: String, headers: HeaderMap, to: SandboxState) -> Response {
    let mut who = Who::default();
    let result = async {
        let (_key, actor) = who_is(&state, &headers, &mut who).await?;
        let entry = state.sandboxes.lookup(&actor.tenant, &id)?;
        let changed = {
            let mut r = entry.record();
            let changed = r.state != to;
            r.state = to;
            if to == SandboxState::Running {
                r.last_used_ms = store::now_ms();
            }
            changed
        };
        persist(&state, &entry).await?;
        if to == SandboxState::Paused {
            // Those in flight end first.
            drop(entry.gate.write().await);
        }
        let record = entry.record().clone();
        if changed {
            let action = match to {
                SandboxState::Paused => "pause",
                SandboxState::Running => "resume",
            };
            audit_or_warn(&state, event(action, &record, Some(&actor.principal))).await;
        }
        let workspace = state.sandboxes.workspace(&id);
        let disk = blocking(move || workspace::disk_bytes(&workspace)).await?;
        Ok(Json(Sandbox::of(&record, disk)))
    }
    .await;
    respond(result, who)
}

/// Runs a command in the sandbox: a jailed run of its own with the
/// workspace at `/workspace` (read-write, the working directory). RBAC:
/// `invoke` of `runtime:LANGUAGE` for `code`, of `runtime:sandbox` for a
/// `command`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec",
    params(("id" = String, Path, description = "the sandbox's id")),
    request_body = ExecRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the run happened (whatever its status); with `Accept: text/event-stream`, once it is admitted, its events (`stream`, `stdout`, `stderr`, then `report` or `error`) and a `Warden-Stream-Id` header", content(
            (crate::api::ExecuteResponse = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "bad JSON, unknown field, neither or both of command and code, no language, bad wall_time_ms", body = ErrorBody),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "RBAC refuses invoke of runtime:LANGUAGE or runtime:sandbox, or the run was refused", body = ErrorBody),
        (status = 404, description = "no sandbox with this id for the caller's tenant", body = ErrorBody),
        (status = 409, description = "the sandbox is paused", body = ErrorBody),
        (status = 413, description = "body larger than the configured cap", body = ErrorBody),
        (status = 429, description = "a quota of the caller's tenant (Retry-After)", body = ErrorBody),
        (status = 500, description = "the service could not run it", body = ErrorBody),
        (status = 503, description = "every worker busy and the queue full (Retry-After)", body = ErrorBody),
    ))]
pub async fn exec(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut who = Who::default();
    let result = exec_inner(&state, &id, &headers, body, &mut who).await;
    respond(result, who)
}

/// The program of an exec and the RBAC resource it is authorized as.
fn program(
    request: &ExecRequest,
    sandbox: Option<Language>,
) -> Result<(Vec<String>, String, Language), ApiError> {
    match (&request.command, &request.code) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "invalid_field",
            "command, code: give one of them, not both",
        )),
        (None, None) => Err(ApiError::bad(
            "missing_field",
            "missing field command (or code)",
        )),
        (Some(command), None) => {
            if request.language.is_some() {
                return Err(ApiError::bad(
                    "invalid_field",
                    "language: only with code (a command names its program)",
                ));
            }
            if command.is_empty() {
                return Err(ApiError::bad("invalid_field", "command: is empty"));
            }
            if command.len() > api::MAX_ARGS {
                return Err(ApiError::bad(
                    "invalid_field",
                    format!(
                        "command: {} words; at most {}",
                        command.len(),
                        api::MAX_ARGS
                    ),
                ));
            }
            if let Some(i) = command.iter().position(|a| a.contains('\0')) {
                return Err(ApiError::bad(
                    "invalid_field",
                    format!("command[{i}]: contains NUL"),
                ));
            }
            if command[0].is_empty() {
                return Err(ApiError::bad("invalid_field", "command[0]: is empty"));
            }
            Ok((command.clone(), "runtime:sandbox".to_string(), Language::Sh))
        }
        (None, Some(code)) => {
            let language = request.language.or(sandbox).ok_or_else(|| {
                ApiError::bad(
                    "missing_field",
                    "missing field language (the sandbox was created without one)",
                )
            })?;
            if code.len() > MAX_CODE_BYTES {
                return Err(ApiError::bad(
                    "invalid_field",
                    format!("code: {} bytes; at most {MAX_CODE_BYTES}", code.len()),
                ));
            }
            if code.contains('\0') {
                return Err(ApiError::bad("invalid_field", "code: contains NUL"));
            }
            let flag = match language {
                Language::Python | Language::Sh => "-c",
                Language::Node => "-e",
                Language::Php => "-r",
                Language::Wasm => {
                    return Err(ApiError::bad(
                        "unknown_language",
                        "language: wasm code cannot be given inline; upload the module and exec it as a command",
                    ))
                }
            };
            let interpreter = language.interpreter().unwrap_or("sh");
            Ok((
                vec![interpreter.to_string(), flag.to_string(), code.clone()],
                language.resource(),
                language,
            ))
        }
    }
}

async fn exec_inner(
    state: &Shared,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    who: &mut Who,
) -> Result<Response, ApiError> {
    let (key, actor, bytes) = crate::server::caller(state, headers, body, who).await?;
    let request: ExecRequest = api::parse_json(&bytes)?;
    let entry = state.sandboxes.lookup(&actor.tenant, id)?;
    let record = entry.record().clone();
    if record.state == SandboxState::Paused {
        return Err(paused());
    }
    let (argv, resource, language) = program(&request, record.language)?;
    let mut limits = record.limits;
    if request.wall_time_ms.is_some() {
        let spec = LimitsSpec {
            wall_time_ms: request.wall_time_ms,
            ..LimitsSpec::default()
        };
        limits.wall_time = api::check_limits(&spec, &state.settings.bounds)?.wall_time;
    }
    let plan = Plan {
        program: Program::Files {
            language,
            files: Vec::new(),
            entry: PathBuf::new(),
        },
        args: Vec::new(),
        stdin: request.stdin.map(String::into_bytes).unwrap_or_default(),
        capabilities: record.capabilities.clone(),
        wall_time: limits.wall_time,
        cpu_time: limits.cpu_time,
        memory_bytes: limits.memory_bytes,
        pids: limits.pids,
        output_bytes: limits.output_bytes,
        cases: Vec::new(),
    };
    crate::server::authorize_as(state, &actor, resource, &plan).await?;
    let slot = crate::server::admit(state, &actor, who)?;
    // Owned: a streamed exec holds it in its own task.
    let shared = entry.gate.clone().read_owned().await;
    // Paused or destroyed while this one waited.
    if entry.gone() {
        slot.unstart();
        return Err(not_found());
    }
    if entry.record().state == SandboxState::Paused {
        slot.unstart();
        return Err(paused());
    }
    entry.record().last_used_ms = store::now_ms();
    let permit = crate::server::worker(state)
        .await
        .inspect_err(|_| slot.unstart())?;
    let admitted = AdmittedExec {
        state: state.clone(),
        id: id.to_string(),
        entry,
        plan,
        argv,
        key,
        _shared: shared,
        _permit: permit,
    };
    if crate::stream::wants_stream(headers) {
        let output_bytes = admitted.plan.output_bytes;
        return crate::stream::start(state, &actor.tenant, output_bytes, move |sink| async move {
            let finished = admitted.run(Some(sink)).await?;
            Ok(crate::server::streamed_answer(finished, Some(&slot)))
        });
    }
    let finished = admitted.run(None).await?;
    crate::server::answer(finished, Some(&slot)).map(|a| Json(a).into_response())
}

/// An exec past every check, holding its sandbox's gate (shared) and a
/// worker until it has run.
struct AdmittedExec {
    state: Shared,
    id: String,
    entry: Arc<Entry>,
    plan: Plan,
    argv: Vec<String>,
    key: String,
    _shared: tokio::sync::OwnedRwLockReadGuard<()>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AdmittedExec {
    /// Runs it (its output also to `sink`, if any) and counts it in the
    /// sandbox's record.
    async fn run(
        self,
        sink: Option<crate::chunk::ChunkSink>,
    ) -> Result<crate::runner::Finished, ApiError> {
        let AdmittedExec {
            state, id, entry, ..
        } = &self;
        // Stopped by the service's shutdown deadline or the sandbox's end.
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut global = state.stop.clone();
        let mut kill = entry.kill.subscribe();
        let relay = tokio::spawn(async move {
            let global = async move {
                // A dropped sender is no order to stop.
                if global.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let kill = async move {
                if kill.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = global => {}
                () = kill => {}
            }
            let _ = stop_tx.send(true);
        });
        let workspace = state.sandboxes.workspace(id);
        let finished = state
            .settings
            .runner
            .exec_into(&self.plan, &workspace, &self.argv, &self.key, stop_rx, sink)
            .await;
        relay.abort();
        let finished = finished.map_err(crate::server::run_error)?;
        {
            let mut r = entry.record();
            r.execs += 1;
            r.last_used_ms = store::now_ms();
        }
        if !entry.gone() {
            persist(state, entry).await?;
        }
        Ok(finished)
    }
}

fn file_error(path: &str, e: FileError) -> ApiError {
    match e {
        FileError::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{path:?}: no such file in the workspace"),
        ),
        FileError::Symlink | FileError::NotRegular => {
            ApiError::bad("invalid_file", format!("{path:?}: {e}"))
        }
        FileError::TooLarge(cap) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{path:?}: larger than {cap} bytes, the cap of a file"),
        ),
        FileError::Refused(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", format!("{path:?}: {e}"))
        }
        FileError::Io(_) => ApiError::internal(format!("{path:?}: {e}")),
    }
}

/// Uploads a file into the workspace (the raw body; its directories are
/// made). The path is relative, without `.`/`..`, NUL or links.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files/{path}",
    params(("id" = String, Path, description = "the sandbox's id"),
           ("path" = String, Path, description = "relative to /workspace")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "written"),
        (status = 400, description = "a bad path, or one through a symbolic link or to a non-regular file", body = ErrorBody),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 404, description = "no sandbox with this id for the caller's tenant", body = ErrorBody),
        (status = 409, description = "the workspace refuses it (a read-only directory the sandbox made)", body = ErrorBody),
        (status = 413, description = "body larger than the configured cap", body = ErrorBody),
    ))]
pub async fn put_file(
    State(state): State<Shared>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut who = Who::default();
    let result = async {
        let (_key, actor, bytes) = crate::server::caller(&state, &headers, body, &mut who).await?;
        let rel = api::check_name("path", &path)?;
        let entry = state.sandboxes.lookup(&actor.tenant, &id)?;
        let _shared = entry.gate.read().await;
        if entry.gone() {
            return Err(not_found());
        }
        entry.record().last_used_ms = store::now_ms();
        let workspace = state.sandboxes.workspace(&id);
        blocking(move || workspace::write_file(&workspace, &rel, &bytes))
            .await?
            .map_err(|e| file_error(&path, e))?;
        persist(&state, &entry).await?;
        Ok(StatusCode::NO_CONTENT)
    }
    .await;
    respond(result, who)
}

/// Downloads a file of the workspace (at most the body cap).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/{path}",
    params(("id" = String, Path, description = "the sandbox's id"),
           ("path" = String, Path, description = "relative to /workspace")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the file's bytes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "a bad path, or one through a symbolic link or to a non-regular file", body = ErrorBody),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 404, description = "no such sandbox for the caller's tenant, or no such file", body = ErrorBody),
        (status = 413, description = "the file is larger than the cap", body = ErrorBody),
    ))]
pub async fn get_file(
    State(state): State<Shared>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut who = Who::default();
    let result = async {
        let (_key, actor) = who_is(&state, &headers, &mut who).await?;
        let rel = api::check_name("path", &path)?;
        let entry = state.sandboxes.lookup(&actor.tenant, &id)?;
        let _shared = entry.gate.read().await;
        if entry.gone() {
            return Err(not_found());
        }
        entry.record().last_used_ms = store::now_ms();
        let workspace = state.sandboxes.workspace(&id);
        let cap = state.settings.body_limit as u64;
        let bytes = blocking(move || workspace::read_file(&workspace, &rel, cap))
            .await?
            .map_err(|e| file_error(&path, e))?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
    }
    .await;
    respond(result, who)
}

/// Starts the reaper: every second, expired sandboxes are destroyed and
/// idle ones paused or destroyed (as their `idle_action` says).
pub fn start(state: &Shared) {
    tokio::spawn(reap_loop(state.clone()));
}

async fn reap_loop(state: Shared) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        reap(&state).await;
    }
}

/// One round of the reaper.
pub async fn reap(state: &Shared) {
    let now = store::now_ms();
    let entries: Vec<Arc<Entry>> = state.sandboxes.map().values().cloned().collect();
    for entry in entries {
        let record = entry.record().clone();
        let expired = now >= record.expires_ms;
        let idle = record.state == SandboxState::Running
            && now.saturating_sub(record.last_used_ms)
                >= record.idle_timeout_s.saturating_mul(1000);
        if !expired && !idle {
            continue;
        }
        if !expired {
            // Idle: not while an exec or a file access holds it.
            let Ok(whole) = entry.gate.try_write() else {
                continue;
            };
            drop(whole);
            if record.idle_action == IdleAction::Pause {
                entry.record().state = SandboxState::Paused;
                if let Err(e) = persist(state, &entry).await {
                    tracing::warn!(
                        "sandbox {}: cannot record its pause: {}",
                        record.id,
                        e.message
                    );
                }
                let mut e = event("reap", &record, None);
                e["reason"] = "idle".into();
                e["outcome"] = "paused".into();
                audit_or_warn(state, e).await;
                continue;
            }
        }
        let taken = state.sandboxes.map().remove(&record.id).is_some();
        if !taken {
            continue;
        }
        if let Err(e) = destroy(state, &entry).await {
            tracing::warn!("sandbox {}: {}", record.id, e.message);
        }
        let mut e = event("reap", &record, None);
        e["reason"] = if expired { "expired" } else { "idle" }.into();
        e["outcome"] = "destroyed".into();
        audit_or_warn(state, e).await;
    }
}
