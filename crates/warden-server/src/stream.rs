//! Streamed runs: `POST /v1/execute` and `POST /v1/sandboxes/{id}/exec`
//! with `Accept: text/event-stream`, and `GET /v1/streams/{id}` to resume
//! one.
//!
//! A streamed run is admitted exactly as a plain one (every refusal is a
//! JSON error before the stream starts); then it runs in a task of its own
//! that feeds a [`RunStream`]: the events, numbered from 1, kept in memory
//! for a bounded window. The HTTP answer only reads that log, so a client
//! that goes away does not stop the run, and one that comes back with
//! `Last-Event-ID` gets what it missed.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use utoipa::ToSchema;

use crate::api::{ExecuteResponse, OutputEncoding};
use crate::chunk::{Channel, Chunk, ChunkSink, SINK_DEPTH};
use crate::error::{ApiError, ErrorBody};
use crate::server::{Shared, Who};

/// The header naming a streamed run's stream (also the first event's data).
pub const STREAM_ID_HEADER: HeaderName = HeaderName::from_static("warden-stream-id");

/// How long and how much of streams is kept.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How long a stream is kept after its run ended.
    pub retention: Duration,
    /// The interval of keep-alive comments while a run is silent.
    pub keep_alive: Duration,
    /// Finished streams kept at most (the oldest finished go first).
    pub max_streams: usize,
    /// Bytes of event data kept at most, all streams together (the oldest
    /// finished go first; running streams are never dropped).
    pub max_bytes: usize,
}

impl Default for StreamSettings {
    fn default() -> StreamSettings {
        StreamSettings {
            retention: Duration::from_secs(300),
            keep_alive: Duration::from_secs(15),
            max_streams: 256,
            max_bytes: 256 << 20,
        }
    }
}

/// The data of a `stdout` or `stderr` event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutputChunk {
    /// The bytes: the text itself, or their base64 when they are not
    /// valid UTF-8.
    pub data: String,
    pub encoding: OutputEncoding,
}

/// The data of a stream's first event (`event: stream`, `id: 1`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamOpened {
    /// The id to resume with: `GET /v1/streams/{stream_id}`.
    pub stream_id: String,
}

/// Whether a request asks for an event stream: its `Accept` names
/// `text/event-stream` (with no `q=0`). `*/*` is no such request.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                let q = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="));
                q.and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("text/event-stream") && !refused
        })
}

/// Bytes of event data one stream keeps: both outputs at their caps,
/// encoded (base64 is 4/3, JSON escapes more), and the report.
pub fn per_stream_cap(output_bytes: u64) -> usize {
    let outputs = output_bytes
        .saturating_mul(2)
        .saturating_add(crate::runner::STDERR_SLACK);
    let cap = outputs.saturating_mul(2).saturating_add(1 << 20);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Why a resume is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("Last-Event-ID {0:?} is not a whole number")]
    BadId(String),
    #[error("Last-Event-ID {after} is past the stream's last event, {last}")]
    Ahead { after: u64, last: u64 },
    #[error("events after {after} are no longer kept (the oldest kept is {first_kept})")]
    Truncated { after: u64, first_kept: u64 },
}

impl From<ResumeError> for ApiError {
    fn from(e: ResumeError) -> ApiError {
        match e {
            ResumeError::BadId(_) | ResumeError::Ahead { .. } => {
                ApiError::bad("invalid_field", e.to_string())
            }
            ResumeError::Truncated { .. } => {
                ApiError::new(StatusCode::GONE, "stream_truncated", e.to_string())
            }
        }
    }
}

/// One event as kept: its id, name and one-line JSON data.
#[derive(Debug, Clone)]
struct Stored {
    id: u64,
    name: &'static str,
    data: String,
}

impl Stored {
    fn event(&self) -> Event {
        Event::default()
            .id(self.id.to_string())
            .event(self.name)
            .data(&self.data)
    }
}

/// A stream's events and what is needed to add to them.
#[derive(Debug)]
struct Log {
    events: VecDeque<Stored>,
    next_id: u64,
    /// Data bytes of `events`.
    bytes: usize,
    /// Past it, the oldest events are dropped.
    cap: usize,
    /// When the run ended (its report or error is the last event).
    ended: Option<Instant>,
    /// Per channel: an incomplete UTF-8 sequence that ended the last
    /// chunk, to be completed by the next, so that text stays text.
    carry: [Vec<u8>; 2],
}

impl Log {
    fn push(&mut self, name: &'static str, data: String) {
        let id = self.next_id;
        self.next_id += 1;
        self.bytes += data.len();
        self.events.push_back(Stored { id, name, data });
        // The last event (the report, at the end) always stays.
        while self.bytes > self.cap && self.events.len() > 1 {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.data.len();
            }
        }
    }

    fn push_output(&mut self, channel: Channel, bytes: &[u8], encoding: OutputEncoding) {
        let data = match encoding {
            OutputEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            OutputEncoding::Base64 => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(bytes)
            }
        };
        let chunk = OutputChunk { data, encoding };
        self.push(channel.name(), to_json(&chunk));
    }

    /// A chunk of output: utf8 up to an incomplete sequence at its end
    /// (carried to the next chunk), base64 when it is not UTF-8.
    fn output(&mut self, chunk: Chunk) {
        let slot = chunk.channel as usize;
        let mut bytes = std::mem::take(&mut self.carry[slot]);
        bytes.extend_from_slice(&chunk.bytes);
        match std::str::from_utf8(&bytes) {
            Ok(_) => self.push_output(chunk.channel, &bytes, OutputEncoding::Utf8),
            Err(e) if e.error_len().is_none() => {
                let (text, rest) = bytes.split_at(e.valid_up_to());
                if !text.is_empty() {
                    self.push_output(chunk.channel, text, OutputEncoding::Utf8);
                }
                self.carry[slot] = rest.to_vec();
            }
            Err(_) => self.push_output(chunk.channel, &bytes, OutputEncoding::Base64),
        }
    }

    /// The end: what is carried goes out (as base64: it never became
    /// UTF-8), then the report or the error.
    fn end(&mut self, result: Result<ExecuteResponse, ApiError>) {
        for channel in [Channel::Stdout, Channel::Stderr] {
            let rest = std::mem::take(&mut self.carry[channel as usize]);
            if !rest.is_empty() {
                self.push_output(channel, &rest, OutputEncoding::Base64);
            }
        }
        match result {
            Ok(report) => self.push("report", to_json(&report)),
            Err(e) => self.push("error", to_json(&e.body())),
        }
        self.ended = Some(Instant::now());
    }

    fn first_kept(&self) -> u64 {
        self.events.front().map_or(self.next_id, |e| e.id)
    }
}

/// One-line JSON of `value` (serde_json escapes newlines, as SSE needs).
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        to_json(&ErrorBody {
            code: "internal".into(),
            message: format!("cannot render the event: {e}"),
        })
    })
}

/// The events of one streamed run.
#[derive(Debug)]
pub struct RunStream {
    id: String,
    tenant: String,
    log: Mutex<Log>,
    /// Touched on every new event.
    changed: watch::Sender<()>,
}

impl RunStream {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn output(&self, chunk: Chunk) {
        self.log().output(chunk);
        self.changed.send_replace(());
    }

    fn end(&self, result: Result<ExecuteResponse, ApiError>) {
        {
            let mut log = self.log();
            if log.ended.is_some() {
                return;
            }
            log.end(result);
        }
        self.changed.send_replace(());
    }

    /// Whether a client that saw every event up to `after` can resume.
    fn check_resume(&self, after: u64) -> Result<(), ResumeError> {
        let log = self.log();
        let last = log.next_id - 1;
        if after > last {
            return Err(ResumeError::Ahead { after, last });
        }
        let first_kept = log.first_kept();
        if after + 1 < first_kept {
            return Err(ResumeError::Truncated { after, first_kept });
        }
        Ok(())
    }
}

/// Ends a stream with an error if its task ends without a report (a
/// panic in the run), so that no reader waits forever.
struct EndGuard(Arc<RunStream>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.end(Err(ApiError::internal(
            "the run's task ended without a report",
        )));
    }
}

/// The streams of this service.
#[derive(Debug)]
pub struct Streams {
    settings: StreamSettings,
    map: Mutex<HashMap<String, Arc<RunStream>>>,
}

impl Streams {
    pub fn new(settings: StreamSettings) -> Streams {
        Streams {
            settings,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<RunStream>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new stream of `tenant`, whose first event names it.
    fn open(&self, tenant: &str, cap: usize) -> Result<Arc<RunStream>, ApiError> {
        let id = crate::store::new_id()
            .map_err(|e| ApiError::internal(format!("cannot make a stream id: {e}")))?;
        let mut log = Log {
            events: VecDeque::new(),
            next_id: 1,
            bytes: 0,
            cap,
            ended: None,
            carry: [Vec::new(), Vec::new()],
        };
        log.push(
            "stream",
            to_json(&StreamOpened {
                stream_id: id.clone(),
            }),
        );
        let stream = Arc::new(RunStream {
            id: id.clone(),
            tenant: tenant.to_string(),
            log: Mutex::new(log),
            changed: watch::channel(()).0,
        });
        self.map().insert(id, stream.clone());
        self.sweep(Instant::now());
        Ok(stream)
    }

    /// The stream `id` of `tenant`: `None` for an unknown, expired or
    /// malformed id and for another tenant's.
    fn lookup(&self, tenant: &str, id: &str) -> Option<Arc<RunStream>> {
        self.sweep(Instant::now());
        if !crate::store::is_id(id) {
            return None;
        }
        self.map().get(id).filter(|s| s.tenant == tenant).cloned()
    }

    /// Drops the finished streams past their retention, then the oldest
    /// finished ones while there are too many or they hold too much.
    pub fn sweep(&self, now: Instant) {
        let mut map = self.map();
        let retention = self.settings.retention;
        let mut finished: Vec<(Instant, String, usize)> = Vec::new();
        let mut total = 0usize;
        map.retain(|id, stream| {
            let log = stream.log();
            total += log.bytes;
            match log.ended {
                Some(ended) if now.saturating_duration_since(ended) >= retention => {
                    total -= log.bytes;
                    false
                }
                Some(ended) => {
                    finished.push((ended, id.clone(), log.bytes));
                    true
                }
                None => true,
            }
        });
        finished.sort();
        let mut finished = finished.into_iter();
        let mut kept_finished = finished.len();
        while kept_finished > self.settings.max_streams || total > self.settings.max_bytes {
            let Some((_, id, bytes)) = finished.next() else {
                break;
            };
            map.remove(&id);
            kept_finished -= 1;
            total -= bytes;
        }
    }
}

/// Starts `job` as a streamed run of `tenant` and answers with its event
/// stream. The job gets the sink to feed and returns what the report
/// event carries (or the error event's error); it runs in a task of its
/// own, so that the client going away does not stop it.
pub(crate) fn start<F, Fut>(
    state: &Shared,
    tenant: &str,
    output_bytes: u64,
    job: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(ChunkSink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<ExecuteResponse, ApiError>> + Send + 'static,
{
    let stream = state.streams.open(tenant, per_stream_cap(output_bytes))?;
    let (sink, mut chunks) = mpsc::channel::<Chunk>(SINK_DEPTH);
    let guard = EndGuard(stream.clone());
    let shared = state.clone();
    tokio::spawn(async move {
        let mut job = std::pin::pin!(job(sink));
        let result = loop {
            tokio::select! {
                result = &mut job => break result,
                Some(chunk) = chunks.recv() => guard.0.output(chunk),
            }
        };
        // The runner has sent everything before it returned.
        chunks.close();
        while let Ok(chunk) = chunks.try_recv() {
            guard.0.output(chunk);
        }
        guard.0.end(result);
        drop(guard);
        shared.streams.sweep(Instant::now());
    });
    crate::metrics::stream("opened");
    Ok(respond(stream, 0, state.streams.settings.keep_alive))
}

/// The event stream of `stream` after event `after`, live to its end.
fn respond(stream: Arc<RunStream>, after: u64, keep_alive: Duration) -> Response {
    let id = HeaderValue::from_str(&stream.id).ok();
    let reader = Reader {
        changed: stream.changed.subscribe(),
        stream,
        cursor: after,
        pending: VecDeque::new(),
        done: false,
    };
    let events = futures_util::stream::unfold(reader, Reader::next);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    let headers = response.headers_mut();
    if let Some(id) = id {
        headers.insert(STREAM_ID_HEADER, id);
    }
    // Proxies that buffer answers would hold the chunks back.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

/// One client's place in a stream.
struct Reader {
    stream: Arc<RunStream>,
    changed: watch::Receiver<()>,
    /// The last event sent.
    cursor: u64,
    pending: VecDeque<Event>,
    done: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Reader)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            // Marked seen before the log is read: an event added after
            // this read wakes the wait below.
            self.changed.borrow_and_update();
            let ended = {
                let log = self.stream.log();
                if self.cursor + 1 < log.first_kept() {
                    // This client fell so far behind that its next events
                    // were dropped (past the stream's byte cap).
                    let gone = ResumeError::Truncated {
                        after: self.cursor,
                        first_kept: log.first_kept(),
                    };
                    let body = ApiError::from(gone).body();
                    self.pending
                        .push_back(Event::default().event("error").data(to_json(&body)));
                    self.done = true;
                    continue;
                }
                let after = self.cursor;
                for stored in log.events.iter().filter(|e| e.id > after) {
                    self.pending.push_back(stored.event());
                    self.cursor = stored.id;
                }
                log.ended.is_some() && self.cursor + 1 >= log.next_id
            };
            if ended {
                self.done = true;
                continue;
            }
            if self.pending.is_empty() && self.changed.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// The `Last-Event-ID` of a request: the last event its client saw (0, the
/// start, without one).
fn last_event_id(headers: &HeaderMap) -> Result<u64, ResumeError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(0);
    };
    let text = value
        .to_str()
        .map_err(|_| ResumeError::BadId(String::from_utf8_lossy(value.as_bytes()).into()))?
        .trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse::<u64>()
        .map_err(|_| ResumeError::BadId(text.chars().take(40).collect()))
}

/// Resumes a streamed run's events: every event after `Last-Event-ID`
/// (from the start without it), then live until the report.
#[utoipa::path(get, path = "/v1/streams/{id}",
    params(
        ("id" = String, Path, description = "the stream id (the `Warden-Stream-Id` header of the streamed answer, and its first event)"),
        ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event the client got: the events after it are sent"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the events after Last-Event-ID, then live until the `report` (or `error`) event", body = String, content_type = "text/event-stream"),
        (status = 400, description = "Last-Event-ID is not a whole number, or past the stream's last event", body = ErrorBody),
        (status = 401, description = "missing, malformed, unknown or revoked API key", body = ErrorBody),
        (status = 404, description = "no stream with this id (unknown, expired, malformed or another tenant's)", body = ErrorBody),
        (status = 410, description = "the events after Last-Event-ID are no longer kept (`stream_truncated`)", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut who = Who::default();
    match resume_inner(&state, &id, &headers, &mut who).await {
        Ok(response) => response,
        Err(e) => {
            let mut response = e.into_response();
            response.extensions_mut().insert(who);
            response
        }
    }
}

async fn resume_inner(
    state: &Shared,
    id: &str,
    headers: &HeaderMap,
    who: &mut Who,
) -> Result<Response, ApiError> {
    let key = crate::server::bearer(headers)?;
    let actor = crate::server::authenticate(state, &key).await?;
    who.principal = Some(actor.principal.clone());
    who.tenant = Some(actor.tenant.clone());
    let stream = state.streams.lookup(&actor.tenant, id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no stream with this id")
    })?;
    let after = last_event_id(headers)?;
    stream.check_resume(after)?;
    crate::metrics::stream("resumed");
    Ok(respond(stream, after, state.streams.settings.keep_alive))
}

/// Drops expired streams every few seconds, also when no request comes.
pub(crate) fn start_sweeper(state: &Shared) {
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let Some(state) = state.upgrade() else { return };
            state.streams.sweep(Instant::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(cap: usize) -> Log {
        Log {
            events: VecDeque::new(),
            next_id: 1,
            bytes: 0,
            cap,
            ended: None,
            carry: [Vec::new(), Vec::new()],
        }
    }

    fn chunk(bytes: &[u8]) -> Chunk {
        Chunk {
            channel: Channel::Stdout,
            bytes: bytes.to_vec(),
        }
    }

    fn data(log: &Log) -> Vec<serde_json::Value> {
        log.events
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    #[test]
    fn a_utf8_sequence_split_across_chunks_stays_text() {
        let mut log = log(1 << 20);
        let text = "é€😀".as_bytes();
        log.output(chunk(&text[..1]));
        log.output(chunk(&text[1..4]));
        log.output(chunk(&text[4..]));
        let got = data(&log);
        assert!(got.iter().all(|d| d["encoding"] == "utf8"), "{got:?}");
        let joined: String = got.iter().map(|d| d["data"].as_str().unwrap()).collect();
        assert_eq!(joined, "é€😀");
        assert!(log.carry[0].is_empty());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_base64_and_a_dangling_sequence_at_the_end_too() {
        let mut log = log(1 << 20);
        log.output(chunk(&[0xff, 0x00, b'a']));
        log.output(chunk(&[b'b', 0xe2, 0x82]));
        log.end(Err(ApiError::internal("x")));
        let got = data(&log);
        assert_eq!(got[0]["encoding"], "base64");
        assert_eq!(got[0]["data"], "/wBh");
        assert_eq!(got[1]["data"], "b");
        assert_eq!(got[2]["encoding"], "base64");
        assert_eq!(got[2]["data"], "4oI=");
        assert_eq!(log.events[3].name, "error");
    }

    #[test]
    fn past_the_cap_the_oldest_events_go_and_resume_before_them_is_refused() {
        let mut log = log(100);
        for _ in 0..10 {
            log.output(chunk(&[b'x'; 30]));
        }
        assert!(log.bytes <= 100);
        assert!(log.first_kept() > 1);
        let stream = RunStream {
            id: "s".into(),
            tenant: "t".into(),
            log: Mutex::new(log),
            changed: watch::channel(()).0,
        };
        assert!(matches!(
            stream.check_resume(0),
            Err(ResumeError::Truncated { .. })
        ));
        assert_eq!(stream.check_resume(10), Ok(()));
        assert!(matches!(
            stream.check_resume(11),
            Err(ResumeError::Ahead { .. })
        ));
    }

    #[test]
    fn accept_asks_for_a_stream_only_when_it_names_event_stream() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            wants_stream(&h)
        };
        assert!(with("text/event-stream"));
        assert!(with("application/json, Text/Event-Stream; q=0.5"));
        assert!(!with("*/*"));
        assert!(!with("application/json"));
        assert!(!with("text/event-stream;q=0"));
        assert!(!wants_stream(&HeaderMap::new()));
    }

    #[test]
    fn sweep_drops_expired_and_then_the_oldest_finished() {
        let streams = Streams::new(StreamSettings {
            max_streams: 1,
            ..StreamSettings::default()
        });
        let a = streams.open("t", 1 << 20).unwrap();
        let b = streams.open("t", 1 << 20).unwrap();
        let c = streams.open("t", 1 << 20).unwrap();
        a.end(Err(ApiError::internal("x")));
        b.end(Err(ApiError::internal("x")));
        streams.sweep(Instant::now());
        assert!(streams.lookup("t", &a.id).is_none());
        assert!(streams.lookup("t", &b.id).is_some());
        assert!(streams.lookup("t", &c.id).is_some(), "running: kept");
        assert!(streams.lookup("u", &b.id).is_none(), "another tenant's");
        streams.sweep(Instant::now() + Duration::from_secs(301));
        assert!(streams.lookup("t", &b.id).is_none());
    }
}
