//! Asynchronous submissions: `POST /v1/submissions` (and `/batch`) check a
//! request as `POST /v1/execute` does, store it in the state directory and
//! answer 202 with its id at once; `GET /v1/submissions/{id}` shows where
//! it is and, once done, what execute would have answered.
//!
//! Submissions wait in a queue of their own (bounded: full is 503), apart
//! from the requests waiting for a worker, and run on the same workers. A
//! restart loses none: queued ones are queued again, and one that was
//! running is run again (at least once). A finished one with a
//! `callback_url` is POSTed there, signed (see [`crate::callback`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::api::{self, ExecuteAnswer, ExecuteRequest};
use crate::callback;
use crate::error::{ApiError, ErrorBody};
use crate::quota::Slot;
use crate::server::{Shared, Who};
use crate::store::{self, CallbackState, Input, Record, Status, Store, StoreError};

/// Most submissions in one batch.
pub const MAX_BATCH: usize = 20;
/// `Retry-After` of a full submission queue, in seconds.
pub const QUEUE_RETRY_AFTER: u64 = 5;
/// How often finished submissions past their retention are looked for.
const REAP_EVERY: Duration = Duration::from_secs(60);

/// `POST /v1/submissions`: the body of `POST /v1/execute` and a
/// `callback_url`. (This type documents the body; it is read as an execute
/// request once `callback_url` is taken out.)
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SubmissionRequest {
    #[serde(flatten)]
    pub execute: ExecuteRequest,
    /// An `http` or `https` URL to POST the finished submission to (the
    /// `GET /v1/submissions/{id}` body without `callback`), with
    /// `X-Warden-Signature: sha256=HEX` and `X-Warden-Submission: ID`.
    #[schema(example = "https://hooks.example.com/warden")]
    pub callback_url: Option<String>,
}

/// `POST /v1/submissions/batch`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 20 submissions, each as for `POST /v1/submissions`.
    #[schema(value_type = Vec<SubmissionRequest>)]
    pub submissions: Vec<serde_json::Value>,
}

/// A submission accepted: its id, to poll.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// 128 random bits, 32 lowercase hex digits.
    #[schema(example = "3f0c9a1be2d44b7f8a6c0d1e2f3a4b5c")]
    pub id: String,
    pub status: Status,
}

/// A batch accepted: the ids in the order of the request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    pub submissions: Vec<Accepted>,
}

/// `GET /v1/submissions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Submission {
    pub id: String,
    pub status: Status,
    /// RFC 3339, UTC, milliseconds.
    pub created: String,
    /// When its (last) run started.
    pub started: Option<String>,
    pub finished: Option<String>,
    /// Runs started: more than 1 when a run was cut off by a restart or
    /// the shutdown deadline and started again.
    pub runs: u32,
    /// `done`: exactly what `POST /v1/execute` would have answered.
    pub result: Option<ExecuteAnswer>,
    /// `failed`: the error `POST /v1/execute` would have answered (or why
    /// the submission could not run).
    pub error: Option<ErrorBody>,
    /// With a `callback_url`: its delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackState>,
}

impl Submission {
    pub fn of(r: &Record) -> Submission {
        Submission {
            id: r.id.clone(),
            status: r.status,
            created: store::rfc3339_ms(r.created_ms),
            started: r.started_ms.map(store::rfc3339_ms),
            finished: r.finished_ms.map(store::rfc3339_ms),
            runs: r.runs,
            result: r.result.clone(),
            error: r.error.clone(),
            callback: r.callback.clone(),
        }
    }
}

/// The store, the queue and what the queued hold.
pub struct Submissions {
    store: Store,
    tx: mpsc::UnboundedSender<String>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Submissions queued and not yet given a worker.
    queued: AtomicUsize,
    limit: usize,
    /// Quota slots of submissions accepted by this service, held until
    /// their run ends (as a request to execute holds its slot while it
    /// waits for a worker).
    slots: Mutex<std::collections::HashMap<String, Slot>>,
    seq: AtomicU64,
    key: tokio::sync::OnceCell<Arc<callback::Key>>,
}

impl Submissions {
    pub fn open(state: &std::path::Path, limit: usize) -> Result<Submissions, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Submissions {
            store: Store::open(state)?,
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicUsize::new(0),
            limit,
            slots: Mutex::new(Default::default()),
            seq: AtomicU64::new(0),
            key: tokio::sync::OnceCell::new(),
        })
    }

    /// Submissions waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Room for `n` more in the queue, taken; else 503.
    fn reserve(&self, n: usize) -> Result<(), ApiError> {
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q + n <= self.limit).then_some(q + n)
            })
            .map(|_| ())
            .map_err(|q| {
                ApiError::overloaded(
                    format!(
                        "{q} submissions wait for a worker, the most this service queues ({}); retry later",
                        self.limit
                    ),
                    QUEUE_RETRY_AFTER,
                )
            })
    }

    fn unreserve(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
    }

    fn next_seq(&self) -> u64 {
        // Increasing across restarts (the clock) and within a millisecond.
        let now = store::now_ms().saturating_mul(1000);
        let prev = self.seq.fetch_max(now, Ordering::SeqCst);
        if prev >= now {
            self.seq.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
    }

    fn slot_take(&self, id: &str) -> Option<Slot> {
        self.slots.lock().ok().and_then(|mut s| s.remove(id))
    }

    async fn key(&self, state: &std::path::Path) -> Result<Arc<callback::Key>, String> {
        let state = state.to_path_buf();
        self.key
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || callback::Key::load_or_create(&state))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await
            .cloned()
    }
}

/// Runs `f` (file work) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io(
            "submissions".into(),
            std::io::Error::other(e),
        ))
    })
}

/// One submission checked: the execute request as JSON (without
/// `callback_url`), its plan, and the callback.
struct Checked {
    request: serde_json::Value,
    plan: api::Plan,
    callback_url: Option<String>,
}

/// Checks one submission body as `POST /v1/execute` checks its body
/// (same codes and messages), plus `callback_url`.
fn check(value: serde_json::Value, bounds: &api::Bounds) -> Result<Checked, ApiError> {
    let mut value = value;
    let callback_url = match value.as_object_mut().and_then(|o| o.remove("callback_url")) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(url)) => {
            callback::check_url(&url)
                .map_err(|why| ApiError::bad("invalid_field", format!("callback_url: {why}")))?;
            Some(url)
        }
        Some(other) => {
            return Err(ApiError::bad(
                "invalid_field",
                format!("callback_url: expected a string, not {other}"),
            ))
        }
    };
    let bytes = serde_json::to_vec(&value)
        .map_err(|e| ApiError::internal(format!("cannot re-encode the request: {e}")))?;
    let request = api::parse_request(&bytes)?;
    let plan = api::plan(request, bounds)?;
    Ok(Checked {
        request: value,
        plan,
        callback_url,
    })
}

/// Parses a body as JSON for [`check`]: what is not JSON is `bad_json`,
/// as for execute.
fn json_value(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    api::parse_json(bytes)
}

fn respond<T: Serialize>(answer: Result<T, ApiError>, who: Who) -> Response {
    match answer {
        Ok(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
        Err(e) => {
            let mut response = e.into_response();
            response.extensions_mut().insert(who);
            response
        }
    }
}

/// Queues a program to run; answers at once with its id.
#[utoipa::path(post, path = "/v1/submissions",
    request_body = SubmissionRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "stored and queued", body = Accepted),
        (status = 400, description = "as for /v1/execute; or a callback_url that is not http(s)", body = ErrorBody),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "RBAC refuses invoke of runtime:LANGUAGE", body = ErrorBody),
        (status = 413, description = "body larger than the configured cap", body = ErrorBody),
        (status = 429, description = "a quota of the caller's tenant (Retry-After)", body = ErrorBody),
        (status = 500, description = "the submission could not be stored", body = ErrorBody),
        (status = 503, description = "the submission queue is full (Retry-After)", body = ErrorBody),
    ))]
pub async fn submit(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let mut who = Who::default();
    let answer = async {
        let (key, actor, bytes) = crate::server::caller(&state, &headers, body, &mut who).await?;
        let checked = check(json_value(&bytes)?, &state.settings.bounds)?;
        let mut accepted = accept(&state, &key, &actor, vec![checked], &mut who).await?;
        accepted
            .pop()
            .ok_or_else(|| ApiError::internal("no submission was stored"))
    }
    .await;
    respond(answer, who)
}

/// Queues up to 20 programs at once; answers at once with their ids, in
/// order. The batch is checked as a whole: one bad item and none is queued.
#[utoipa::path(post, path = "/v1/submissions/batch",
    request_body = BatchRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "all stored and queued", body = BatchAccepted),
        (status = 400, description = "empty or over 20, or an item as for /v1/submissions (the message names submissions[INDEX])", body = ErrorBody),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "RBAC refuses an item's invoke of runtime:LANGUAGE", body = ErrorBody),
        (status = 413, description = "body larger than the configured cap", body = ErrorBody),
        (status = 429, description = "a quota of the caller's tenant (Retry-After)", body = ErrorBody),
        (status = 500, description = "the submissions could not be stored", body = ErrorBody),
        (status = 503, description = "the submission queue has no room for them all (Retry-After)", body = ErrorBody),
    ))]
pub async fn submit_batch(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let mut who = Who::default();
    let answer = async {
        let (key, actor, bytes) = crate::server::caller(&state, &headers, body, &mut who).await?;
        let batch: BatchRequest = api::parse_json(&bytes)?;
        let n = batch.submissions.len();
        if n == 0 {
            return Err(ApiError::bad(
                "invalid_field",
                "submissions: at least one submission is needed",
            ));
        }
        if n > MAX_BATCH {
            return Err(ApiError::bad(
                "invalid_field",
                format!("submissions: {n} submissions; at most {MAX_BATCH}"),
            ));
        }
        let mut checked = Vec::with_capacity(n);
        for (i, item) in batch.submissions.into_iter().enumerate() {
            checked.push(check(item, &state.settings.bounds).map_err(|e| ApiError {
                message: format!("submissions[{i}]: {}", e.message),
                ..e
            })?);
        }
        let submissions = accept(&state, &key, &actor, checked, &mut who).await?;
        Ok(BatchAccepted { submissions })
    }
    .await;
    respond(answer, who)
}

/// RBAC, quotas and room in the queue for every item, then stores and
/// queues them all (or none).
async fn accept(
    state: &Shared,
    key: &str,
    actor: &warden_engine::identity::Actor,
    checked: Vec<Checked>,
    who: &mut Who,
) -> Result<Vec<Accepted>, ApiError> {
    let n = checked.len();
    let index = |i: usize, e: ApiError| {
        if n > 1 {
            ApiError {
                message: format!("submissions[{i}]: {}", e.message),
                ..e
            }
        } else {
            e
        }
    };
    let mut checked = checked;
    for (i, c) in checked.iter_mut().enumerate() {
        crate::server::authorize(state, actor, &mut c.plan)
            .await
            .map_err(|e| index(i, e))?;
    }
    let mut slots = Vec::with_capacity(n);
    for _ in 0..n {
        match crate::server::admit(state, actor, who) {
            Ok(slot) => slots.push(slot),
            Err(e) => {
                slots.iter().for_each(Slot::unstart);
                return Err(e);
            }
        }
    }
    let subs = &state.submissions;
    subs.reserve(n).inspect_err(|_| {
        slots.iter().for_each(Slot::unstart);
    })?;
    let created_ms = store::now_ms();
    let mut made = Vec::with_capacity(n);
    for c in checked {
        let id = match store::new_id() {
            Ok(id) => id,
            Err(e) => {
                made.push(Err(e));
                break;
            }
        };
        let record = Record {
            id,
            tenant: actor.tenant.clone(),
            principal: actor.principal.clone(),
            status: Status::Queued,
            created_ms,
            started_ms: None,
            finished_ms: None,
            seq: subs.next_seq(),
            runs: 0,
            result: None,
            error: None,
            callback: c.callback_url.as_ref().map(|_| CallbackState::default()),
            callback_url: c.callback_url,
        };
        let input = Input {
            request: c.request,
            key: key.to_string(),
        };
        made.push(Ok((record, input)));
    }
    let store = subs.store.clone();
    let stored = blocking(move || {
        let mut ids: Vec<String> = Vec::new();
        for m in made {
            let (record, input) = m?;
            if let Err(e) = store.create(&record, &input) {
                for id in &ids {
                    let _ = store.delete(id.as_str());
                }
                return Err(e);
            }
            ids.push(record.id.clone());
        }
        Ok(ids)
    })
    .await;
    let ids = match stored {
        Ok(ids) => ids,
        Err(e) => {
            subs.unreserve(n);
            slots.iter().for_each(Slot::unstart);
            return Err(ApiError::internal(format!(
                "the submission could not be stored: {e}"
            )));
        }
    };
    if let Ok(mut held) = subs.slots.lock() {
        for (id, slot) in ids.iter().zip(slots) {
            held.insert(id.clone(), slot);
        }
    }
    for id in &ids {
        // The receiver lives as long as the state: this cannot fail while
        // the service runs; a submission not sent stays queued on disk.
        let _ = subs.tx.send(id.clone());
    }
    Ok(ids
        .into_iter()
        .map(|id| Accepted {
            id,
            status: Status::Queued,
        })
        .collect())
}

/// Where a submission is, and its result once done. Another tenant's id
/// and an unknown one are both 404 `not_found`.
#[utoipa::path(get, path = "/v1/submissions/{id}",
    params(("id" = String, Path, description = "the id POST /v1/submissions answered")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the submission", body = Submission),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 404, description = "no submission of the caller's tenant has this id", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut who = Who::default();
    let answer = async {
        let key = crate::server::bearer(&headers)?;
        let actor = crate::server::authenticate(&state, &key).await?;
        who.principal = Some(actor.principal.clone());
        who.tenant = Some(actor.tenant.clone());
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no submission with this id",
            )
        };
        if !store::is_id(&id) {
            return Err(not_found());
        }
        let store = state.submissions.store.clone();
        let record = blocking(move || store.load(&id))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match record {
            Some(r) if r.tenant == actor.tenant => Ok(Submission::of(&r)),
            _ => Err(not_found()),
        }
    }
    .await;
    match answer {
        Ok(s) => Json(s).into_response(),
        Err(e) => {
            let mut response = e.into_response();
            response.extensions_mut().insert(who);
            response
        }
    }
}

/// At start: the last service's submissions back in the queue (a
/// `running` one is run again: at least once), inputs of finished ones
/// deleted, callbacks not yet delivered resumed; then the dispatcher and
/// the reaper.
pub async fn start(state: &Shared) -> Result<(), StoreError> {
    let store = state.submissions.store.clone();
    let ttl = state.settings.submission_ttl;
    let (queued, callbacks) = blocking(move || recover(&store, ttl)).await?;
    let subs = &state.submissions;
    if !queued.is_empty() {
        tracing::info!(
            "{} submissions left by the last service queued again",
            queued.len()
        );
    }
    subs.queued.fetch_add(queued.len(), Ordering::SeqCst);
    for id in queued {
        let _ = subs.tx.send(id);
    }
    for id in callbacks {
        tokio::spawn(deliver(state.clone(), id));
    }
    let rx = subs.rx.lock().ok().and_then(|mut r| r.take());
    if let Some(rx) = rx {
        tokio::spawn(dispatch(state.clone(), rx));
    }
    tokio::spawn(reap_loop(state.clone()));
    Ok(())
}

/// What to queue and whose callbacks to resume.
fn recover(store: &Store, ttl: Duration) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let (records, orphans) = store.scan()?;
    for id in orphans {
        store.delete_input(&id)?;
    }
    let mut queued = Vec::new();
    let mut callbacks = Vec::new();
    for mut r in records {
        match r.status {
            Status::Queued | Status::Running => {
                if store.load_input(&r.id)?.is_none() {
                    r.status = Status::Failed;
                    r.finished_ms = Some(store::now_ms());
                    r.error = Some(ErrorBody {
                        code: "internal".into(),
                        message: "the submission's request was lost from the state directory"
                            .into(),
                    });
                    store.save(&r)?;
                    continue;
                }
                if r.status == Status::Running {
                    // The service stopped while it ran: run it again.
                    r.status = Status::Queued;
                    r.started_ms = None;
                    store.save(&r)?;
                }
                queued.push(r.id);
            }
            Status::Done | Status::Failed => {
                store.delete_input(&r.id)?;
                if expired(&r, ttl, store::now_ms()) {
                    store.delete(&r.id)?;
                } else if callback_pending(&r) {
                    callbacks.push(r.id);
                }
            }
        }
    }
    Ok((queued, callbacks))
}

fn callback_pending(r: &Record) -> bool {
    r.callback_url.is_some()
        && r.callback
            .as_ref()
            .is_none_or(|c| !c.delivered && c.attempts < callback::MAX_ATTEMPTS)
}

fn expired(r: &Record, ttl: Duration, now: u64) -> bool {
    let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    r.status.finished()
        && !callback_pending(r)
        && r.finished_ms.is_some_and(|f| now.saturating_sub(f) >= ttl)
}

/// Gives queued submissions workers, in order, until shutdown begins.
async fn dispatch(state: Shared, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut draining = state.draining.subscribe();
    loop {
        let id = tokio::select! {
            id = rx.recv() => id,
            _ = draining.wait_for(|d| *d) => break,
        };
        let Some(id) = id else { break };
        let permit = tokio::select! {
            p = state.workers.clone().acquire_owned() => p,
            _ = draining.wait_for(|d| *d) => break,
        };
        let Ok(permit) = permit else { break };
        if *draining.borrow() {
            break;
        }
        state.submissions.queued.fetch_sub(1, Ordering::SeqCst);
        tokio::spawn(run_one(state.clone(), id, permit));
    }
    // What is left stays queued in the state directory for the next start.
}

/// Runs one submission on the worker `permit`, records its outcome, then
/// delivers its callback.
async fn run_one(state: Shared, id: String, permit: tokio::sync::OwnedSemaphorePermit) {
    let subs = &state.submissions;
    let store = subs.store.clone();
    let loaded = {
        let id = id.clone();
        blocking(move || {
            let Some(mut r) = store.load(&id)? else {
                return Ok(None);
            };
            if r.status != Status::Queued {
                return Ok(None);
            }
            let input = store.load_input(&id)?;
            r.status = Status::Running;
            r.started_ms = Some(store::now_ms());
            r.runs += 1;
            store.save(&r)?;
            Ok(Some((r, input)))
        })
        .await
    };
    let (mut record, input) = match loaded {
        Ok(Some(found)) => found,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("submission {id}: {e}");
            return;
        }
    };
    let slot = subs.slot_take(&id);
    let outcome = match input {
        Some(input) => execute(&state, &input, slot.as_ref()).await,
        None => Err(ApiError::internal(
            "the submission's request was lost from the state directory",
        )),
    };
    drop(permit);
    drop(slot);
    // Cut off by the shutdown deadline: not the program's outcome. Queued
    // again, to run after the restart.
    let stopped = *state.stop.borrow();
    let cut_off = stopped
        && match &outcome {
            Ok(ExecuteAnswer::Run(r)) => {
                r.report.get("status").and_then(|s| s.as_str()) == Some("error")
            }
            // A case stopped by the deadline, or not run because of it.
            Ok(ExecuteAnswer::TestCases(c)) => c
                .test_cases
                .iter()
                .any(|t| t.verdict == api::Verdict::Error),
            Err(_) => true,
        };
    if cut_off {
        record.status = Status::Queued;
        record.started_ms = None;
    } else {
        record.finished_ms = Some(store::now_ms());
        match outcome {
            Ok(result) => {
                record.status = Status::Done;
                record.result = Some(result);
            }
            Err(e) => {
                record.status = Status::Failed;
                record.error = Some(e.body());
            }
        }
    }
    let store = subs.store.clone();
    let saved = {
        let record = record.clone();
        blocking(move || {
            store.save(&record)?;
            if record.status.finished() {
                store.delete_input(&record.id)?;
            }
            Ok(())
        })
        .await
    };
    if let Err(e) = saved {
        tracing::warn!("submission {id}: its outcome could not be stored: {e}");
        return;
    }
    if record.status.finished() && callback_pending(&record) {
        deliver(state.clone(), id).await;
    }
}

/// The run of a stored submission, as `POST /v1/execute` would run it,
/// for the principal whose key submitted it (so a principal revoked since
/// fails, and RBAC is asked again).
async fn execute(
    state: &Shared,
    input: &Input,
    slot: Option<&Slot>,
) -> Result<ExecuteAnswer, ApiError> {
    let actor = crate::server::authenticate(state, &input.key).await?;
    let bytes = serde_json::to_vec(&input.request)
        .map_err(|e| ApiError::internal(format!("the stored request: {e}")))?;
    let request = api::parse_request(&bytes)?;
    let mut plan = api::plan(request, &state.settings.bounds)?;
    crate::server::authorize(state, &actor, &mut plan).await?;
    // In a `warden` child (also WebAssembly), so that the shutdown
    // deadline stops it and it runs again at the next start.
    crate::server::run_plan(state, plan, &input.key, &actor, slot, false).await
}

/// Delivers the callback of finished submission `id`: POSTs until one is
/// answered 2xx or [`callback::MAX_ATTEMPTS`] were made, each recorded.
/// Stops (to resume after a restart) when shutdown begins.
async fn deliver(state: Shared, id: String) {
    let subs = &state.submissions;
    let mut draining = state.draining.subscribe();
    let store = subs.store.clone();
    let loaded = {
        let id = id.clone();
        blocking(move || store.load(&id)).await
    };
    let Ok(Some(mut record)) = loaded else { return };
    let Some(url) = record.callback_url.clone() else {
        return;
    };
    // The body: the GET answer without `callback`; the same bytes on
    // every attempt (and after a restart: the record does not change).
    let mut view = Submission::of(&record);
    view.callback = None;
    let Ok(body) = serde_json::to_vec(&view) else {
        return;
    };
    let key = match subs.key(&state.settings.runner.state).await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("submission {id}: no callback key: {e}");
            let c = record.callback.get_or_insert_with(Default::default);
            c.last_error = Some(format!("no signing key: {e}"));
            let store = subs.store.clone();
            let _ = blocking(move || store.save(&record)).await;
            return;
        }
    };
    let signature = key.sign(&body);
    let body = Arc::new(body);
    loop {
        let c = record.callback.clone().unwrap_or_default();
        if c.delivered || c.attempts >= callback::MAX_ATTEMPTS {
            return;
        }
        let wait = callback::backoff(c.attempts);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = draining.wait_for(|d| *d) => return,
        }
        let (u, i, s, b) = (url.clone(), id.clone(), signature.clone(), body.clone());
        let private = state.settings.callback_allow_private;
        let sent = tokio::task::spawn_blocking(move || callback::post(&u, &i, &s, &b, private))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let c = record.callback.get_or_insert_with(Default::default);
        c.attempts += 1;
        match sent {
            Ok(()) => {
                c.delivered = true;
                c.last_error = None;
            }
            Err(e) => c.last_error = Some(e),
        }
        let store = subs.store.clone();
        let saved = {
            let record = record.clone();
            blocking(move || store.save(&record)).await
        };
        if let Err(e) = saved {
            tracing::warn!("submission {id}: callback state not stored: {e}");
        }
    }
}

/// Deletes finished submissions past the retention time, every minute.
async fn reap_loop(state: Shared) {
    let ttl = state.settings.submission_ttl;
    let mut draining = state.draining.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(REAP_EVERY.min(ttl.max(Duration::from_secs(1)))) => {}
            _ = draining.wait_for(|d| *d) => return,
        }
        let store = state.submissions.store.clone();
        let reaped = blocking(move || {
            let (records, _) = store.scan()?;
            let now = store::now_ms();
            let mut n = 0;
            for r in records.iter().filter(|r| expired(r, ttl, now)) {
                store.delete(&r.id)?;
                n += 1;
            }
            Ok(n)
        })
        .await;
        match reaped {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} finished submissions past their retention deleted"),
            Err(e) => tracing::warn!("reaping submissions: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_url_is_taken_out_and_checked() {
        let b = api::Bounds::default();
        let c = check(
            serde_json::json!({"language": "sh", "files": [{"name": "m", "content": "true"}], "callback_url": "http://127.0.0.1:1/x"}),
            &b,
        )
        .unwrap();
        assert_eq!(c.callback_url.as_deref(), Some("http://127.0.0.1:1/x"));
        assert!(c.request.get("callback_url").is_none());
        let e = check(
            serde_json::json!({"language": "sh", "files": [{"name": "m", "content": "true"}], "callback_url": "ftp://x/"}),
            &b,
        )
        .err()
        .unwrap();
        assert_eq!(e.code, "invalid_field");
        assert!(e.message.starts_with("callback_url:"), "{}", e.message);
        let e = check(
            serde_json::json!({"language": "sh", "files": [{"name": "m", "content": "true"}], "extra": 1}),
            &b,
        )
        .err()
        .unwrap();
        assert_eq!(e.code, "unknown_field");
    }

    #[test]
    fn retention_spares_undelivered_callbacks() {
        let mut r = Record {
            id: "0".repeat(32),
            tenant: "t".into(),
            principal: "p".into(),
            status: Status::Done,
            created_ms: 0,
            started_ms: Some(0),
            finished_ms: Some(1000),
            seq: 0,
            runs: 1,
            result: None,
            error: None,
            callback_url: None,
            callback: None,
        };
        let ttl = Duration::from_secs(10);
        assert!(!expired(&r, ttl, 5000));
        assert!(expired(&r, ttl, 11_000));
        r.callback_url = Some("http://x/".into());
        r.callback = Some(CallbackState::default());
        assert!(!expired(&r, ttl, 11_000));
        r.callback = Some(CallbackState {
            attempts: callback::MAX_ATTEMPTS,
            delivered: false,
            last_error: Some("answered 500".into()),
        });
        assert!(expired(&r, ttl, 11_000));
        r.status = Status::Running;
        assert!(!expired(&r, ttl, 11_000));
    }
}
