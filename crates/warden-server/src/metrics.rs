//! `GET /metrics`: the service's counters, gauges and histograms in the
//! Prometheus text format (the `metrics` facade, rendered by
//! `metrics-exporter-prometheus`). Labels are routes, HTTP statuses, error
//! codes, report statuses, backends, limits, quotas and tenant names:
//! never a key, a principal's secret or anything a program wrote.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "warden_http_requests_total";
pub const REQUEST_SECONDS: &str = "warden_http_request_duration_seconds";
pub const INVOCATIONS: &str = "warden_invocations_total";
pub const INVOCATION_SECONDS: &str = "warden_invocation_wall_seconds";
pub const QUEUE_DEPTH: &str = "warden_queue_depth";
pub const WORKERS_BUSY: &str = "warden_workers_busy";
pub const WORKERS: &str = "warden_workers";
pub const ACTIVE_SANDBOXES: &str = "warden_active_sandboxes";
pub const VIOLATIONS: &str = "warden_violations_total";
pub const LIMIT_KILLS: &str = "warden_limit_kills_total";
pub const REFUSALS: &str = "warden_refusals_total";
pub const QUOTA_REFUSALS: &str = "warden_quota_refusals_total";
pub const REFUSALS_UNRECORDED: &str = "warden_refusals_unrecorded_total";
pub const SUBMISSIONS_QUEUED: &str = "warden_submissions_queued";
pub const STREAMS: &str = "warden_streams_total";
pub const TLS_HANDSHAKE_FAILURES: &str = "warden_tls_handshake_failures_total";

/// Histogram buckets, in seconds: 1 ms … 5 min.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The report statuses that mean a Warden limit stopped the run.
pub const LIMIT_STATUSES: [&str; 4] = ["timeout", "memory_limit", "cpu_limit", "output_limit"];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use. `None` if another
/// recorder was installed first (then `/metrics` says so).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    describe_counter!(REQUESTS, "HTTP requests answered, by route and status");
    describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "time to answer an HTTP request, by route"
    );
    describe_counter!(
        INVOCATIONS,
        "runs that ended with a report, by report status and backend"
    );
    describe_histogram!(
        INVOCATION_SECONDS,
        metrics::Unit::Seconds,
        "the report's wall time of each run, by backend"
    );
    describe_gauge!(QUEUE_DEPTH, "requests waiting for a worker");
    describe_gauge!(WORKERS_BUSY, "workers running a request");
    describe_gauge!(WORKERS, "workers (runs at once)");
    describe_gauge!(ACTIVE_SANDBOXES, "persistent sandboxes (running or paused)");
    describe_counter!(VIOLATIONS, "violations in run reports, by backend");
    describe_counter!(
        LIMIT_KILLS,
        "runs stopped by a Warden limit, by limit (the report status)"
    );
    describe_counter!(
        REFUSALS,
        "requests refused with 400, 401, 403, 413, 429 or 503, by status and code"
    );
    describe_counter!(QUOTA_REFUSALS, "429 answers, by tenant and quota");
    describe_counter!(
        REFUSALS_UNRECORDED,
        "refusals whose ledger entry was dropped (the writer's queue was full, or the ledger failed)"
    );
    describe_gauge!(
        SUBMISSIONS_QUEUED,
        "submissions waiting for a worker (their own queue, apart from warden_queue_depth)"
    );
    describe_counter!(
        STREAMS,
        "event streams answered, by kind: opened (a streamed run) or resumed (GET /v1/streams/{id})"
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS connections dropped before a request: failed, timed-out or too many handshakes"
    );
    gauge!(ACTIVE_SANDBOXES).set(0.0);
    gauge!(SUBMISSIONS_QUEUED).set(0.0);
}

/// An event stream answered: `opened` or `resumed`.
pub fn stream(kind: &'static str) {
    counter!(STREAMS, "kind" => kind).increment(1);
}

/// The route label of a request path: one of the service's routes, or
/// `other` (so that scanners do not grow the label set).
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        "/v1/runtimes" => "/v1/runtimes",
        "/v1/execute" => "/v1/execute",
        "/v1/submissions" => "/v1/submissions",
        "/v1/submissions/batch" => "/v1/submissions/batch",
        p if p
            .strip_prefix("/v1/submissions/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
        {
            "/v1/submissions/{id}"
        }
        "/v1/sandboxes" => "/v1/sandboxes",
        p if p
            .strip_prefix("/v1/streams/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
        {
            "/v1/streams/{id}"
        }
        p if p.starts_with("/v1/sandboxes/") => sandbox_route(&p["/v1/sandboxes/".len()..]),
        _ => "other",
    }
}

fn sandbox_route(rest: &str) -> &'static str {
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if id.is_empty() {
        return "other";
    }
    match tail {
        "" => "/v1/sandboxes/{id}",
        "exec" => "/v1/sandboxes/{id}/exec",
        "pause" => "/v1/sandboxes/{id}/pause",
        "resume" => "/v1/sandboxes/{id}/resume",
        t if t.starts_with("files/") && t.len() > "files/".len() => {
            "/v1/sandboxes/{id}/files/{path}"
        }
        _ => "other",
    }
}

/// The sandboxes there are now.
pub fn active_sandboxes(n: usize) {
    gauge!(ACTIVE_SANDBOXES).set(n as f64);
}

pub fn request(route: &'static str, status: u16, took: Duration) {
    counter!(REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    histogram!(REQUEST_SECONDS, "route" => route).record(took.as_secs_f64());
}

pub fn refusal(status: u16, code: &'static str) {
    counter!(REFUSALS, "status" => status.to_string(), "code" => code).increment(1);
}

pub fn quota_refusal(tenant: &str, quota: &'static str) {
    counter!(QUOTA_REFUSALS, "tenant" => tenant.to_string(), "quota" => quota).increment(1);
}

/// A TLS connection dropped before its handshake finished.
pub fn tls_handshake_failure() {
    counter!(TLS_HANDSHAKE_FAILURES).increment(1);
}

pub fn unrecorded(n: u64) {
    counter!(REFUSALS_UNRECORDED).increment(n);
}

/// What a run's report says: its status and backend, wall time,
/// violations and whether a limit stopped it.
pub fn invocation(report: &serde_json::Value) {
    let text = |k: &str| {
        report
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    let status = text("status");
    let backend = text("backend");
    counter!(INVOCATIONS, "status" => status.clone(), "backend" => backend.clone()).increment(1);
    if let Some(ms) = report.get("wall_ms").and_then(|v| v.as_u64()) {
        histogram!(INVOCATION_SECONDS, "backend" => backend.clone()).record(ms as f64 / 1000.0);
    }
    let violations = report
        .get("violations")
        .and_then(|v| v.as_array())
        .map_or(0, |v| v.len() as u64);
    if violations > 0 {
        counter!(VIOLATIONS, "backend" => backend).increment(violations);
    }
    if let Some(limit) = LIMIT_STATUSES.iter().find(|s| **s == status) {
        counter!(LIMIT_KILLS, "limit" => *limit).increment(1);
    }
}

/// Submissions waiting for a worker, set just before each render.
pub fn submissions_queued(n: usize) {
    gauge!(SUBMISSIONS_QUEUED).set(n as f64);
}

/// The pool's state, set just before each render.
pub fn pool(workers: usize, busy: usize, waiting: usize) {
    gauge!(WORKERS).set(workers as f64);
    gauge!(WORKERS_BUSY).set(busy as f64);
    gauge!(QUEUE_DEPTH).set(waiting as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_moves_its_counters() {
        let h = handle().expect("recorder");
        invocation(&serde_json::json!({
            "status": "memory_limit", "backend": "jail", "wall_ms": 12,
            "violations": [{"kind": "syscall", "detail": "ptrace"}],
        }));
        refusal(401, "unauthenticated");
        request("/v1/execute", 401, Duration::from_millis(3));
        pool(4, 1, 0);
        let text = h.render();
        for want in [
            "warden_invocations_total{status=\"memory_limit\",backend=\"jail\"} 1",
            "warden_limit_kills_total{limit=\"memory_limit\"} 1",
            "warden_violations_total{backend=\"jail\"} 1",
            "warden_refusals_total{status=\"401\",code=\"unauthenticated\"} 1",
            "warden_http_request_duration_seconds_bucket{route=\"/v1/execute\",le=\"0.005\"} 1",
            "warden_workers_busy 1",
            "warden_active_sandboxes 0",
        ] {
            assert!(text.contains(want), "no {want} in\n{text}");
        }
        assert_eq!(route_label("/v1/execute/../x"), "other");
        assert_eq!(route_label("/v1/submissions/abc"), "/v1/submissions/{id}");
        assert_eq!(route_label("/v1/submissions/a/b"), "other");
    }
}
