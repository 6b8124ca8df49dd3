//! The routes, the shared state and the service's life: bind, serve,
//! drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{watch, Semaphore};
use utoipa::OpenApi as _;

use crate::api::{
    self, Bounds, ExecuteAnswer, ExecuteResponse, Language, Program, Runtime, Runtimes,
};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::refusals::{Recorder, Refusal};
use crate::runner::{RunError, Runner};

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub runner: Runner,
    pub bounds: Bounds,
    /// Largest request body.
    pub body_limit: usize,
    /// Runs at once.
    pub workers: usize,
    /// Requests waiting for a worker before 503.
    pub queue: usize,
    /// How long in-flight requests may take after SIGTERM/SIGINT before
    /// their runs are stopped.
    pub shutdown_grace: Duration,
    /// Per-tenant quotas (`serve.quotas` in `warden.yaml`).
    pub quotas: warden_engine::config::Quotas,
    /// Submissions that may wait for a worker before `POST
    /// /v1/submissions` answers 503 (a queue of their own, apart from
    /// `queue`).
    pub submission_queue: usize,
    /// How long a finished submission (its result) is kept.
    pub submission_ttl: Duration,
    /// Longest `ttl_s` (and `idle_timeout_s`) of a sandbox.
    pub sandbox_max_ttl: Duration,
    /// Callbacks may go to private and loopback addresses
    /// (`--callback-allow-private`); link-local and metadata ones never.
    pub callback_allow_private: bool,
    /// Where sandboxes' workspaces are (`ROOT/ID/workspace`): outside the
    /// state directory, since the jail refuses to grant a path inside it.
    pub sandbox_root: PathBuf,
    /// Run WebAssembly requests in this process (see [`crate::inproc`])
    /// rather than in a `warden` child.
    pub wasm_in_process: bool,
    /// How long and how much of streamed runs' events is kept.
    pub streams: crate::stream::StreamSettings,
    /// HTTPS with this configuration (`--tls-cert`/`--tls-key`, see
    /// [`crate::tls::load`]); plain HTTP without.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Settings {
    /// Runs at once on this machine: twice the cores.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot start the ledger writer of refusals: {0}")]
    Recorder(std::io::Error),
    #[error("{0}")]
    Submissions(#[from] crate::store::StoreError),
    #[error("cannot start in-process WebAssembly runs: {0}")]
    InProcess(String),
}

/// What every handler shares.
pub struct AppState {
    pub settings: Settings,
    pub(crate) workers: Arc<Semaphore>,
    waiting: AtomicUsize,
    pub(crate) stop: watch::Receiver<bool>,
    runtimes: Vec<Runtime>,
    pub(crate) quotas: Arc<crate::quota::Tracker>,
    refusals: Recorder,
    /// The submissions: their store in the state directory and their queue.
    pub(crate) submissions: crate::submissions::Submissions,
    /// Turns true when shutdown begins: no submission is started after it.
    pub(crate) draining: watch::Sender<bool>,
    /// The persistent sandboxes (`STATE/serve/sandboxes`).
    pub(crate) sandboxes: crate::sandboxes::Sandboxes,
    /// The RBAC gate, loaded again only when its files change.
    pub(crate) gates: crate::gates::Gates,
    /// The identity file, kept read (see [`crate::gates::Identities`]).
    pub(crate) identities: crate::gates::Identities,
    /// The ledger, one connection shared by this process's appends
    /// (group commit); `None` when it could not be opened at start (each
    /// run then fails on it as `warden run` does).
    pub(crate) audit: Option<warden_engine::audit::SharedAudit>,
    /// WebAssembly runs in this process; `None`: in a `warden` child.
    pub(crate) inproc: Option<crate::inproc::InProcess>,
    /// The events of streamed runs, kept for resuming.
    pub(crate) streams: crate::stream::Streams,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// The state, and the thread that writes refusals to the ledger.
    pub fn new(
        settings: Settings,
        stop: watch::Receiver<bool>,
        runtimes: Vec<Runtime>,
    ) -> Result<Shared, ServeError> {
        let submissions = crate::submissions::Submissions::open(
            &settings.runner.state,
            settings.submission_queue,
        )?;
        let sandboxes =
            crate::sandboxes::Sandboxes::open(&settings.runner.state, &settings.sandbox_root)?;
        let state = &settings.runner.state;
        let audit = match warden_engine::audit::SharedAudit::open(state) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!("the audit ledger cannot be opened now: {e}; runs will fail on it");
                None
            }
        };
        let inproc = match (&audit, settings.wasm_in_process) {
            (Some(a), true) => {
                let handle = a.clone();
                // Instance slots: a few per worker (a module may call
                // others: each callee is an instance too).
                let slots = u32::try_from(settings.workers.max(1) * 4).unwrap_or(u32::MAX);
                Some(
                    crate::inproc::InProcess::new(state, handle, slots)
                        .map_err(|e| ServeError::InProcess(e.to_string()))?,
                )
            }
            _ => None,
        };
        Ok(Arc::new(AppState {
            gates: crate::gates::Gates::new(state),
            identities: crate::gates::Identities::new(state),
            audit,
            inproc,
            sandboxes,
            streams: crate::stream::Streams::new(settings.streams.clone()),
            workers: Arc::new(Semaphore::new(settings.workers.max(1))),
            waiting: AtomicUsize::new(0),
            quotas: crate::quota::Tracker::new(settings.quotas.clone()),
            refusals: Recorder::start(settings.runner.state.clone())
                .map_err(ServeError::Recorder)?,
            submissions,
            draining: watch::channel(false).0,
            settings,
            stop,
            runtimes,
        }))
    }

    /// Workers busy now.
    fn busy(&self) -> usize {
        self.settings
            .workers
            .max(1)
            .saturating_sub(self.workers.available_permits())
    }
}

/// Who made a refused request, when it got that far; left on the answer's
/// extensions for [`track`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Who {
    pub(crate) principal: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) quota: Option<&'static str>,
}

/// The statuses that are refusals: counted, and (but 403) ledger entries.
const REFUSAL_STATUSES: [u16; 6] = [400, 401, 403, 413, 429, 503];

/// Around every request: counts it by route and status, times it, and
/// counts and audits a refusal. A 403 is counted but not entered again:
/// its RBAC denial is an `authz` entry already, and a refused run its
/// `run` entry.
async fn track(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = crate::metrics::route_label(request.uri().path());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    crate::metrics::request(route, status, started.elapsed());
    let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    if let Some(code) = code.filter(|c| *c != "not_ready") {
        if REFUSAL_STATUSES.contains(&status) {
            crate::metrics::refusal(status, code);
            let who = response
                .extensions()
                .get::<Who>()
                .cloned()
                .unwrap_or_default();
            if let (Some(tenant), Some(quota)) = (&who.tenant, who.quota) {
                crate::metrics::quota_refusal(tenant, quota);
            }
            if status != 403 {
                state.refusals.record(Refusal {
                    route: route.to_string(),
                    method,
                    status,
                    code: code.to_string(),
                    principal: who.principal,
                    tenant: who.tenant,
                    quota: who.quota.map(str::to_string),
                });
            }
        }
    }
    response
}

/// The service's routes.
pub fn router(state: Shared) -> Router {
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;
    // Longest a request may take: the longest run plus its setup and the
    // time Warden takes to stop it.
    let timeout = state.settings.bounds.max_wall_time + Duration::from_secs(60);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/runtimes", get(runtimes))
        .route("/v1/execute", post(execute))
        .route("/v1/submissions", post(crate::submissions::submit))
        .route(
            "/v1/submissions/batch",
            post(crate::submissions::submit_batch),
        )
        .route("/v1/submissions/{id}", get(crate::submissions::get))
        .route("/v1/sandboxes", post(crate::sandboxes::create))
        .route(
            "/v1/sandboxes/{id}",
            get(crate::sandboxes::get).delete(crate::sandboxes::delete),
        )
        .route("/v1/sandboxes/{id}/exec", post(crate::sandboxes::exec))
        .route("/v1/sandboxes/{id}/pause", post(crate::sandboxes::pause))
        .route("/v1/sandboxes/{id}/resume", post(crate::sandboxes::resume))
        .route(
            "/v1/sandboxes/{id}/files/{*path}",
            get(crate::sandboxes::get_file).put(crate::sandboxes::put_file),
        )
        .route("/v1/streams/{id}", get(crate::stream::resume))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        .layer(TraceLayer::new_for_http())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the state directory and the `warden` binary are usable.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready", body = String, content_type = "text/plain"),
    (status = 503, description = "not ready, and why", body = ErrorBody)))]
pub async fn readyz(State(state): State<Shared>) -> Response {
    match ready(&state.settings.runner) {
        Ok(()) => "ready".into_response(),
        Err(why) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why).into_response()
        }
    }
}

fn ready(runner: &Runner) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let state = &runner.state;
    let meta = std::fs::metadata(state).map_err(|e| format!("state {}: {e}", state.display()))?;
    if !meta.is_dir() {
        return Err(format!("state {}: not a directory", state.display()));
    }
    rustix::fs::access(
        state,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| format!("state {}: not writable: {e}", state.display()))?;
    let bin = &runner.warden;
    let meta = std::fs::metadata(bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{}: not an executable file", bin.display()));
    }
    if !runner.runtime_dir.is_dir() {
        return Err(format!("{}: missing", runner.runtime_dir.display()));
    }
    Ok(())
}

/// The languages, with the interpreter found and its version.
#[utoipa::path(get, path = "/v1/runtimes", responses((status = 200, body = Runtimes)))]
pub async fn runtimes(State(state): State<Shared>) -> Json<Runtimes> {
    Json(Runtimes {
        runtimes: state.runtimes.clone(),
    })
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "the OpenAPI document", body = Object)))]
pub async fn openapi() -> Response {
    match crate::openapi::ApiDoc::openapi().to_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => {
            ApiError::internal(format!("cannot render the OpenAPI document: {e}")).into_response()
        }
    }
}

/// The service's metrics, in the Prometheus text format. No key needed;
/// it shows counts by route, status, backend and tenant, never a key or
/// anything a program wrote.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"),
    (status = 500, description = "no recorder", body = ErrorBody)))]
pub async fn metrics(State(state): State<Shared>) -> Response {
    let Some(handle) = crate::metrics::handle() else {
        return ApiError::internal("another metrics recorder is installed in this process")
            .into_response();
    };
    crate::metrics::pool(
        state.settings.workers.max(1),
        state.busy(),
        state.waiting.load(Ordering::SeqCst),
    );
    crate::metrics::submissions_queued(state.submissions.queued());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// The bearer key of a request, or 401.
pub fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer API key"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("malformed Authorization header"))?;
    let (scheme, key) = text.split_once(' ').ok_or_else(|| {
        ApiError::unauthenticated("malformed Authorization header: expected `Bearer KEY`")
    })?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() || key.contains(char::is_whitespace)
    {
        return Err(ApiError::unauthenticated(
            "malformed Authorization header: expected `Bearer KEY`",
        ));
    }
    if !key.starts_with(warden_engine::identity::KEY_PREFIX) {
        return Err(ApiError::unauthenticated("not a Warden API key"));
    }
    Ok(key.to_string())
}

/// The principal a key belongs to (the engine's lookup, as
/// `WARDEN_API_KEY` is resolved), or 401.
pub async fn authenticate(
    state: &Shared,
    key: &str,
) -> Result<warden_engine::identity::Actor, ApiError> {
    use warden_engine::identity::IdentityError;
    // In memory while the identity file is unchanged (one stat); read
    // again off the async threads when it changed.
    let found = match state.identities.fresh() {
        Some(file) => file.actor(key),
        None => {
            let shared = Arc::clone(state);
            let key = key.to_string();
            tokio::task::spawn_blocking(move || {
                shared
                    .identities
                    .load(&shared.settings.runner.state)
                    .and_then(|file| file.actor(&key))
            })
            .await
            .map_err(|e| ApiError::internal(format!("authentication failed: {e}")))?
        }
    };
    match found {
        Ok(actor) => Ok(actor),
        Err(IdentityError::UnknownKey) => Err(ApiError::unauthenticated(
            "the API key is not the key of any principal",
        )),
        Err(IdentityError::RevokedKey(p)) => Err(ApiError::unauthenticated(format!(
            "the API key belongs to principal {p}, which was revoked"
        ))),
        Err(e) => Err(ApiError::internal(format!("cannot read identities: {e}"))),
    }
}

/// RBAC: `invoke` of `runtime:LANGUAGE` with the requested capabilities
/// (plain `warden run` is not gated; the service is); for a processor,
/// `invoke` of the processor (its name and tags) with the capabilities it
/// requests, as `warden invoke` asks. A denial is a ledger entry and 403.
///
/// A processor is first looked up in the caller's tenant's registry: one
/// that is not there is 400 `unknown_processor`, a malformed reference 400
/// `invalid_field`; `plan` then names the `NAME@VERSION` it resolved to,
/// so the run is of the version authorized.
pub(crate) async fn authorize(
    state: &Shared,
    actor: &warden_engine::identity::Actor,
    plan: &mut api::Plan,
) -> Result<(), ApiError> {
    let spec = match &plan.program {
        Program::Files { language, .. } => {
            return authorize_as(state, actor, language.resource(), plan).await
        }
        Program::Processor(spec) => spec.clone(),
    };
    let record = resolve_processor(state, &actor.tenant, &spec).await?;
    let mut resource = warden_authz::Resource::new(
        warden_authz::ResourceKind::Processor,
        &record.name,
        &actor.tenant,
    );
    resource.tags = record.summary.tags.clone();
    gate(
        state,
        actor,
        resource,
        record.summary.capabilities.clone(),
        plan.input_bytes(),
    )
    .await?;
    plan.program = Program::Processor(record.id());
    Ok(())
}

/// The record of processor `spec` in `tenant`'s registry: 400
/// `unknown_processor` when there is none, `invalid_field` for a malformed
/// reference.
async fn resolve_processor(
    state: &Shared,
    tenant: &str,
    spec: &str,
) -> Result<warden_processor::Record, ApiError> {
    use warden_processor::RegistryError;
    let dir = state.settings.runner.state.clone();
    let (tenant, spec) = (tenant.to_string(), spec.to_string());
    tokio::task::spawn_blocking(move || {
        let found = warden_engine::invoke::registry_for(&dir, &tenant)
            .and_then(|registry| registry.resolve(&spec));
        found.map_err(|e| match e {
            RegistryError::NotFound { .. } => ApiError::bad(
                "unknown_processor",
                format!("processor: no processor {spec} in the registry of tenant {tenant}"),
            ),
            RegistryError::BadSpec { .. } => {
                ApiError::bad("invalid_field", format!("processor: {e}"))
            }
            other => ApiError::internal(format!("the processor registry: {other}")),
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("the processor registry: {e}")))?
}

/// [`authorize`] with another resource: `invoke` of `resource_name` (a
/// sandbox's raw command is `runtime:sandbox`).
pub(crate) async fn authorize_as(
    state: &Shared,
    actor: &warden_engine::identity::Actor,
    resource_name: String,
    plan: &api::Plan,
) -> Result<(), ApiError> {
    let resource = warden_engine::authz::resource(
        warden_authz::Action::Invoke.resource_kind(),
        &resource_name,
        &actor.tenant,
    );
    gate(
        state,
        actor,
        resource,
        plan.capabilities.clone(),
        plan.input_bytes(),
    )
    .await
}

/// The RBAC gate's answer to `invoke` of `resource` with `capabilities`
/// and `input_bytes` of input: a denial is a ledger entry and 403.
async fn gate(
    state: &Shared,
    actor: &warden_engine::identity::Actor,
    resource: warden_authz::Resource,
    capabilities: Vec<String>,
    input_bytes: u64,
) -> Result<(), ApiError> {
    // Without an RBAC file nothing is gated: answered here, without a
    // trip to a blocking thread (the gate's files are stat'ed only).
    if state.gates.fresh().is_some_and(|gate| !gate.enforcing()) {
        return Ok(());
    }
    let shared = Arc::clone(state);
    let actor = actor.clone();
    let decided = tokio::task::spawn_blocking(move || {
        let gate = shared.gates.current().map_err(|e| e.to_string())?;
        if !gate.enforcing() {
            return Ok::<_, String>(Ok(()));
        }
        let dir = &shared.settings.runner.state;
        let mut audit = match shared.audit.as_ref().map(|a| a.handle()) {
            Some(a) => Some(a),
            None => warden_engine::audit::Audit::open(dir).ok(),
        };
        Ok(gate.check(
            &actor,
            &actor.tenant,
            warden_authz::Action::Invoke,
            resource,
            &capabilities,
            input_bytes,
            audit.as_mut(),
        ))
    })
    .await
    .map_err(|e| ApiError::internal(format!("authorization failed: {e}")))?;
    match decided {
        Ok(Ok(())) => Ok(()),
        Ok(Err(denied)) => Err(ApiError::forbidden(denied.0)),
        Err(config) => Err(ApiError::internal(format!(
            "the RBAC configuration is unusable: {config}"
        ))),
    }
}

/// A worker, or 503 when the queue is full. Released on drop.
pub(crate) async fn worker(state: &Shared) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    if let Ok(permit) = state.workers.clone().try_acquire_owned() {
        return Ok(permit);
    }
    let waiting = state.waiting.fetch_add(1, Ordering::SeqCst);
    struct Leave<'a>(&'a AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave(&state.waiting);
    if waiting >= state.settings.queue {
        return Err(ApiError::overloaded(
            format!(
                "all {} workers are busy and {} requests wait; retry later",
                state.settings.workers, state.settings.queue
            ),
            1,
        ));
    }
    state.workers.clone().acquire_owned().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service is stopping",
        )
    })
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                source = s.source();
            }
            Err(ApiError::bad(
                "bad_request",
                format!("cannot read the request body: {e}"),
            ))
        }
    }
}

/// Runs a program and answers with its output and report; with `Accept:
/// text/event-stream`, streams its output as it comes, then the report
/// (docs/serve.md, "Streaming").
#[utoipa::path(post, path = "/v1/execute",
    request_body = crate::api::ExecuteRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the run happened (whatever its status): its output and report; with `test_cases`, each case's verdict, output and report; with `Accept: text/event-stream` (not with `test_cases`), once it is admitted, its events (`stream`, `stdout`, `stderr`, then `report` or `error`) and a `Warden-Stream-Id` header", content(
            (ExecuteAnswer = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "bad JSON, unknown field, unknown language or processor, language and processor both or neither, invalid file, limit, capability or test case, more than 64 test cases, test cases streamed", body = ErrorBody),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "RBAC refuses invoke of runtime:LANGUAGE or of the processor, or the run was refused", body = ErrorBody),
        (status = 413, description = "body larger than the configured cap", body = ErrorBody),
        (status = 429, description = "a quota of the caller's tenant (Retry-After)", body = ErrorBody),
        (status = 500, description = "the service could not run it", body = ErrorBody),
        (status = 503, description = "every worker busy and the queue full (Retry-After)", body = ErrorBody),
    ))]
pub async fn execute(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let mut who = Who::default();
    match execute_inner(&state, &headers, body, &mut who).await {
        Ok(answer) => answer,
        Err(e) => {
            let mut response = e.into_response();
            response.extensions_mut().insert(who);
            response
        }
    }
}

async fn execute_inner(
    state: &Shared,
    headers: &HeaderMap,
    body: Body,
    who: &mut Who,
) -> Result<Response, ApiError> {
    let (key, actor, bytes) = caller(state, headers, body, who).await?;
    let request = api::parse_request(&bytes)?;
    let mut plan = api::plan(request, &state.settings.bounds)?;
    let streamed = crate::stream::wants_stream(headers);
    if streamed && !plan.cases.is_empty() {
        return Err(ApiError::bad(
            "invalid_field",
            "test_cases: a request with test cases is not streamed; send it without Accept: text/event-stream",
        ));
    }
    authorize(state, &actor, &mut plan).await?;
    // Quotas: after authentication and RBAC, before the queue.
    let slot = admit(state, &actor, who)?;
    let permit = worker(state).await.inspect_err(|_| slot.unstart())?;
    if streamed {
        let shared = state.clone();
        let output_bytes = plan.output_bytes;
        return crate::stream::start(state, &actor.tenant, output_bytes, move |sink| async move {
            let _permit = permit;
            let finished = shared
                .settings
                .runner
                .run_into(&plan, &key, shared.stop.clone(), Some(sink))
                .await
                .map_err(run_error)?;
            Ok(streamed_answer(finished, Some(&slot)))
        });
    }
    let answer = run_plan(state, plan, &key, &actor, Some(&slot), true).await;
    drop(permit);
    answer.map(|a| Json(a).into_response())
}

/// Runs an authorized plan for the principal whose key is `key`: one run
/// ([`answer`]: 403 when it was refused), or each test case in turn
/// ([`crate::cases`]). WebAssembly runs in this process when `in_process`
/// allows it and the service does.
pub(crate) async fn run_plan(
    state: &Shared,
    plan: api::Plan,
    key: &str,
    actor: &warden_engine::identity::Actor,
    slot: Option<&crate::quota::Slot>,
    in_process: bool,
) -> Result<ExecuteAnswer, ApiError> {
    let in_process =
        in_process && plan.language() == Some(Language::Wasm) && state.inproc.is_some();
    if !plan.cases.is_empty() {
        return crate::cases::run(state, plan, key, actor, slot, in_process)
            .await
            .map(ExecuteAnswer::TestCases);
    }
    let finished = if in_process {
        run_in_process(state, plan, actor.clone()).await?
    } else {
        state
            .settings
            .runner
            .run(&plan, key, state.stop.clone())
            .await
            .map_err(run_error)?
    };
    answer(finished, slot).map(ExecuteAnswer::Run)
}

/// A WebAssembly plan run in this process (see [`crate::inproc`]), on a
/// blocking thread: a run keeps its thread until it ends (its wall-time
/// limit bounds it; the shutdown deadline does not stop it).
pub(crate) async fn run_in_process(
    state: &Shared,
    plan: api::Plan,
    actor: warden_engine::identity::Actor,
) -> Result<crate::runner::Finished, ApiError> {
    let shared = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let Some(inproc) = shared.inproc.as_ref() else {
            return Err(ApiError::internal("in-process runs are off"));
        };
        inproc
            .run(&shared.settings.runner, &shared.gates, &plan, &actor)
            .map_err(run_error)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the run's thread failed: {e}")))?
}

/// The caller's key and principal, and the request body: 401, then 413
/// (by `Content-Length` at once, or while reading), 400 `bad_request`.
pub(crate) async fn caller(
    state: &Shared,
    headers: &HeaderMap,
    body: Body,
    who: &mut Who,
) -> Result<(String, warden_engine::identity::Actor, axum::body::Bytes), ApiError> {
    let key = bearer(headers)?;
    let actor = authenticate(state, &key).await?;
    who.principal = Some(actor.principal.clone());
    who.tenant = Some(actor.tenant.clone());
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > state.settings.body_limit as u64 {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is larger than {} bytes",
                    state.settings.body_limit
                ),
            ));
        }
    }
    let bytes = read_body(body, state.settings.body_limit).await?;
    Ok((key, actor, bytes))
}

/// A run of the caller's tenant admitted under its quotas, or 429.
pub(crate) fn admit(
    state: &Shared,
    actor: &warden_engine::identity::Actor,
    who: &mut Who,
) -> Result<crate::quota::Slot, ApiError> {
    state
        .quotas
        .admit(&actor.tenant, std::time::Instant::now())
        .map_err(|over| {
            who.quota = Some(over.quota);
            ApiError::quota(over.to_string(), over.retry_after)
        })
}

/// A run that could not happen: 500.
pub(crate) fn run_error(e: RunError) -> ApiError {
    match e {
        RunError::Prepare(..) | RunError::Spawn(..) | RunError::Output(_) => {
            ApiError::internal(e.to_string())
        }
        RunError::NoReport { .. } | RunError::BadReport(..) | RunError::Unrecorded(_) => {
            ApiError::internal(e.to_string())
        }
    }
}

/// What `POST /v1/execute` answers for a finished run: its output, report
/// and ledger index, or 403 when the run was refused. Counts the
/// invocation, and charges its CPU to `slot`'s tenant.
pub(crate) fn answer(
    finished: crate::runner::Finished,
    slot: Option<&crate::quota::Slot>,
) -> Result<ExecuteResponse, ApiError> {
    let report = finished.report;
    account(&report, slot);
    if report.get("status").and_then(|s| s.as_str()) == Some("refused") {
        let why = report
            .get("refusal")
            .and_then(|r| r.as_str())
            .unwrap_or("the run was refused")
            .to_string();
        return Err(ApiError::forbidden(why));
    }
    let ledger_index = ledger_index(&report);
    let (stdout, stdout_encoding) = api::encode_output(finished.stdout);
    let (stderr, stderr_encoding) = api::encode_output(finished.stderr);
    Ok(ExecuteResponse {
        stdout,
        stdout_encoding,
        stderr,
        stderr_encoding,
        report,
        ledger_index,
    })
}

/// Counts a finished run's invocation, and charges its CPU to `slot`'s
/// tenant.
pub(crate) fn account(report: &serde_json::Value, slot: Option<&crate::quota::Slot>) {
    crate::metrics::invocation(report);
    if let (Some(cpu_ms), Some(slot)) = (report.get("cpu_ms").and_then(|v| v.as_u64()), slot) {
        slot.charge_cpu(cpu_ms, std::time::Instant::now());
    }
}

pub(crate) fn ledger_index(report: &serde_json::Value) -> Option<u64> {
    report
        .get("audit")
        .and_then(|a| a.get("index"))
        .and_then(|i| i.as_u64())
}

/// The `report` event of a streamed run: [`answer`]'s body with empty
/// `stdout` and `stderr` (the output went out as events), also for a
/// refused run (the stream has begun: no 403 any more).
pub(crate) fn streamed_answer(
    finished: crate::runner::Finished,
    slot: Option<&crate::quota::Slot>,
) -> ExecuteResponse {
    let report = finished.report;
    account(&report, slot);
    ExecuteResponse {
        stdout: String::new(),
        stdout_encoding: api::OutputEncoding::Utf8,
        stderr: String::new(),
        stderr_encoding: api::OutputEncoding::Utf8,
        ledger_index: ledger_index(&report),
        report,
    }
}

/// The languages and what runs them, looked up once at start.
pub async fn probe_runtimes(warden: &std::path::Path) -> Vec<Runtime> {
    let mut out = Vec::new();
    for language in Language::ALL {
        let (interpreter, path) = match language.interpreter() {
            Some(name) => (name.to_string(), find_on_jail_path(name)),
            None => {
                let full = warden.with_file_name("warden-wasm");
                ("warden-wasm".to_string(), full.is_file().then_some(full))
            }
        };
        let version = match (&path, language) {
            (Some(p), Language::Python | Language::Node | Language::Php) => version_of(p).await,
            (Some(p), Language::Wasm) => version_of(p).await,
            _ => None,
        };
        out.push(Runtime {
            language,
            available: path.is_some(),
            interpreter,
            path: path.map(|p| p.display().to_string()),
            version,
        });
    }
    out
}

/// Where the jail's `PATH` finds `name` (the jail shows the host's `/usr`).
fn find_on_jail_path(name: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

async fn version_of(path: &std::path::Path) -> Option<String> {
    let run = tokio::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .ok()?
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .next()?
        .trim()
        .to_string();
    (!line.is_empty()).then_some(line)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Serves until `shutdown` resolves; then stops accepting, lets requests
/// in flight finish for `shutdown_grace`, then stops their runs (SIGTERM:
/// each still ends with its report and answer), and returns once every
/// connection is closed. `on_listening` gets the bound address.
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| ServeError::Bind(settings.listen, e))?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    let runtimes = probe_runtimes(&settings.runner.warden).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = settings.shutdown_grace;
    // Installed before the first request, so that its gauges show at once.
    if let Some(handle) = crate::metrics::handle() {
        let handle = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        });
    }
    let state = AppState::new(settings, stop_rx, runtimes)?;
    // The submissions left by the last service: queued again (and those
    // it was running: at least once), their callbacks resumed.
    crate::submissions::start(&state).await?;
    // Sandboxes left by the last service are kept; the reaper ends the
    // expired and idle ones.
    crate::sandboxes::start(&state);
    crate::stream::start_sweeper(&state);
    let app = router(state.clone());
    on_listening(addr);
    let (begun_tx, begun_rx) = watch::channel(false);
    let mut begun = begun_rx.clone();
    let draining = state.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; requests in flight may finish");
        let _ = draining.draining.send(true);
        let _ = begun_tx.send(true);
    };
    // The deadline: after the grace, runs still going are stopped.
    tokio::spawn(async move {
        if begun.wait_for(|b| *b).await.is_ok() {
            tokio::time::sleep(grace).await;
            tracing::warn!("shutdown grace over: stopping the runs still in flight");
            let _ = stop_tx.send(true);
        }
    });
    // The same server and the same graceful shutdown over TCP or TLS: the
    // TLS listener hands over connections whose handshake is done.
    let served: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
        match state.settings.tls.clone() {
            None => Box::pin(std::future::IntoFuture::into_future(
                axum::serve(listener, app).with_graceful_shutdown(signal),
            )),
            Some(config) => {
                let listener =
                    crate::tls::TlsListener::new(listener, config).map_err(ServeError::Serve)?;
                Box::pin(std::future::IntoFuture::into_future(
                    axum::serve(listener, app).with_graceful_shutdown(signal),
                ))
            }
        };
    // A connection that stays open past the grace and the runs' stop (a
    // client that never finishes its request) does not hold the service.
    let mut begun = begun_rx;
    let cap = async move {
        if begun.wait_for(|b| *b).await.is_ok() {
            tokio::time::sleep(grace + Duration::from_secs(15)).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = served => r.map_err(ServeError::Serve)?,
        () = cap => tracing::warn!("connections still open after the shutdown deadline: closing them"),
    }
    // Every worker back: no run of this service is left. Submissions'
    // runs answer no connection, so they may still go on here: up to the
    // grace, then they are stopped (and queued again for the next start).
    let all = state.settings.workers.max(1) as u32;
    let _ = tokio::time::timeout(
        grace + Duration::from_secs(10),
        state.workers.acquire_many(all),
    )
    .await;
    // The refusals still queued go to the ledger.
    let writer = state.clone();
    let _ =
        tokio::task::spawn_blocking(move || writer.refusals.finish(Duration::from_secs(10))).await;
    Ok(())
}
