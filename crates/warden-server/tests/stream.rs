//! Streamed runs end to end: the real `warden-serve` on a loopback port,
//! `Accept: text/event-stream` on execute and exec, read incrementally
//! over a raw TCP connection (HTTP/1.1 chunked, then server-sent events),
//! and `GET /v1/streams/{id}` with `Last-Event-ID`. The harness is a
//! trimmed copy of tests/sandboxes.rs's.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{serve_bin, warden_bin};
use serde_json::{json, Value};

struct Server {
    child: Child,
    addr: String,
    key: String,
    state: tempfile::TempDir,
    _root: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let warden = warden_bin();
        let state = temp("state");
        let root = temp("root");
        let mut child = Command::new(serve_bin())
            .arg("--state")
            .arg(state.path())
            .args(["--listen", "127.0.0.1:0", "--warden"])
            .arg(&warden)
            .arg("--sandbox-root")
            .arg(root.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start warden-serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (mut key, mut base) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while key.is_none() || base.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("warden-serve did not start: {:?}", log.lock().unwrap())
            });
            if let Some(k) = line.strip_prefix("warden: development API key: ") {
                key = Some(k.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("warden: listening on ") {
                base = rest.split_whitespace().next().map(str::to_string);
            }
        }
        let base: String = base.unwrap();
        Server {
            child,
            addr: base.trim_start_matches("http://").to_string(),
            key: key.unwrap(),
            state,
            _root: root,
            log,
        }
    }

    fn warden(&self, args: &[&str]) -> std::process::Output {
        Command::new(warden_bin())
            .env("WARDEN_API_KEY", &self.key)
            .arg("--state")
            .arg(self.state.path())
            .args(args)
            .output()
            .expect("run warden")
    }

    /// A principal of a new tenant `other`, and its key.
    fn other_tenant(&self) -> String {
        let added = self.warden(&["tenant", "add", "other"]);
        assert!(added.status.success(), "{added:?}");
        let added = self.warden(&["principal", "add", "eve", "--tenant", "other"]);
        assert!(added.status.success(), "{added:?}");
        String::from_utf8(added.stdout).unwrap().trim().to_string()
    }

    /// Sends a request; the answer's head, and a reader of its body.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Http {
        let mut conn = TcpStream::connect(&self.addr).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes()).expect("send head");
        conn.write_all(body.as_bytes()).expect("send body");
        Http::read_head(BufReader::new(conn))
    }

    /// A request as the service's dev principal, asking for a stream.
    fn stream(&self, method: &str, path: &str, body: &str) -> Http {
        let key = self.key.clone();
        self.stream_as(&key, method, path, body, None)
    }

    fn stream_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: &str,
        last_event_id: Option<&str>,
    ) -> Http {
        let auth = format!("Bearer {key}");
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Accept", "text/event-stream"),
        ];
        if let Some(id) = last_event_id {
            headers.push(("Last-Event-ID", id));
        }
        self.send(method, path, &headers, body)
    }

    fn create_sandbox(&self) -> String {
        let auth = format!("Bearer {}", self.key);
        let mut a = self.send(
            "POST",
            "/v1/sandboxes",
            &[("Authorization", &auth)],
            r#"{"language": "python"}"#,
        );
        assert_eq!(a.status, 201);
        a.json()["id"].as_str().expect("id").to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("service log: {:?}", self.log.lock().unwrap());
    }
}

fn temp(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("warden-stream-test-{what}-"))
        .tempdir()
        .expect("temp dir")
}

/// One server-sent event, and when it was read.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    name: String,
    data: String,
    at: Instant,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// An HTTP/1.1 answer read as it comes.
struct Http {
    conn: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
    /// Body bytes read but not yet parsed as events.
    pending: Vec<u8>,
    /// Every body byte read, to look for what must not be there.
    raw: Vec<u8>,
    /// Keep-alive comments seen.
    comments: usize,
    body_done: bool,
}

impl Http {
    fn read_head(mut conn: BufReader<TcpStream>) -> Http {
        let mut line = String::new();
        conn.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        Http {
            conn,
            status,
            headers,
            pending: Vec::new(),
            raw: Vec::new(),
            comments: 0,
            body_done: false,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more of the body (one chunk of a chunked body, or all of a
    /// sized one); false at its end.
    fn fill(&mut self) -> bool {
        if self.body_done {
            return false;
        }
        if self.header("transfer-encoding") == Some("chunked") {
            let mut size = String::new();
            self.conn.read_line(&mut size).expect("chunk size");
            let n = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            let mut chunk = vec![0u8; n + 2];
            self.conn.read_exact(&mut chunk).expect("chunk");
            chunk.truncate(n);
            if n == 0 {
                self.body_done = true;
                return false;
            }
            self.raw.extend_from_slice(&chunk);
            self.pending.extend_from_slice(&chunk);
        } else {
            let n: usize = self
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; n];
            self.conn.read_exact(&mut body).expect("body");
            self.raw.extend_from_slice(&body);
            self.pending.extend_from_slice(&body);
            self.body_done = true;
        }
        true
    }

    /// The whole body, for an answer that is not a stream.
    fn json(&mut self) -> Value {
        while self.fill() {}
        serde_json::from_slice(&self.pending).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.pending))
        })
    }

    /// The next event; `None` at the end of the stream.
    fn next_event(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("events are UTF-8");
                let (mut id, mut name, mut data) = (None, String::new(), Vec::new());
                for line in text.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if name.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Sse {
                    id,
                    name,
                    data: data.join("\n"),
                    at: Instant::now(),
                });
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Every event to the end.
    fn events(&mut self) -> Vec<Sse> {
        std::iter::from_fn(|| self.next_event()).collect()
    }
}

fn python(code: &str) -> String {
    json!({"language": "python", "files": [{"name": "main.py", "content": code}]}).to_string()
}

fn sh(script: &str) -> Value {
    json!({"language": "sh", "files": [{"name": "main.sh", "content": script}]})
}

/// The bytes of the `channel` events, decoded and put together.
fn output(events: &[Sse], channel: &str) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.name == channel) {
        let v = e.json();
        let data = v["data"].as_str().expect("data");
        match v["encoding"].as_str() {
            Some("utf8") => out.extend_from_slice(data.as_bytes()),
            Some("base64") => out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .expect("base64"),
            ),
            other => panic!("encoding {other:?}"),
        }
    }
    out
}

/// Ids are 1, 2, 3, … with no gap; the first event names the stream and
/// the last is the report.
fn check_shape(events: &[Sse], stream_id: &str) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.id, Some(i as u64 + 1), "{events:?}");
    }
    assert_eq!(events[0].name, "stream", "{events:?}");
    assert_eq!(events[0].json()["stream_id"], stream_id);
    assert_eq!(events.last().unwrap().name, "report", "{events:?}");
}

#[test]
fn output_arrives_as_it_is_written_before_the_report() {
    let s = Server::start(&[]);
    let code = "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b', flush=True)\n";
    let mut a = s.stream("POST", "/v1/execute", &python(code));
    assert_eq!(a.status, 200);
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        a.headers
    );
    let stream_id = a.header("warden-stream-id").expect("stream id").to_string();
    let events = a.events();
    check_shape(&events, &stream_id);
    let outs: Vec<&Sse> = events.iter().filter(|e| e.name == "stdout").collect();
    assert_eq!(outs.len(), 2, "separate events: {events:?}");
    assert_eq!(outs[0].json()["data"], "a\n");
    assert_eq!(outs[1].json()["data"], "b\n");
    let report = events.last().unwrap();
    assert!(
        report.at.duration_since(outs[0].at) >= Duration::from_millis(500),
        "the first chunk came with the report: {events:?}"
    );
    let v = report.json();
    assert_eq!(v["report"]["status"], "exited", "{v}");
    assert_eq!(v["stdout"], "", "{v}");
    assert_eq!(v["stderr"], "", "{v}");
    assert!(v["ledger_index"].is_u64(), "{v}");
}

#[test]
fn a_request_without_the_stream_accept_still_gets_json() {
    let s = Server::start(&[]);
    let auth = format!("Bearer {}", s.key);
    let body = python("print('plain')");
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(accept) = accept {
            headers.push(("Accept", accept));
        }
        let mut a = s.send("POST", "/v1/execute", &headers, &body);
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert!(a.header("warden-stream-id").is_none());
        assert_eq!(a.json()["stdout"], "plain\n");
    }
}

#[test]
fn refusals_are_json_errors_before_any_stream() {
    let s = Server::start(&[]);
    let bad = s.stream_as("wdn_nope", "POST", "/v1/execute", &python("1"), None);
    assert_eq!(bad.status, 401);
    let mut bad = s.stream(
        "POST",
        "/v1/execute",
        r#"{"language": "cobol", "files": []}"#,
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("content-type"), Some("application/json"));
    assert_eq!(bad.json()["code"], "unknown_language");
    let mut missing = s.stream(
        "POST",
        "/v1/sandboxes/00000000000000000000000000000000/exec",
        r#"{"command": ["true"]}"#,
    );
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "not_found");
}

#[test]
fn exec_in_a_sandbox_streams_stdout_and_stderr() {
    let s = Server::start(&[]);
    let id = s.create_sandbox();
    let body = json!({"command": ["sh", "-c", "echo one; echo two >&2; echo kept > /workspace/f"]});
    let mut a = s.stream(
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        &body.to_string(),
    );
    assert_eq!(a.status, 200);
    let stream_id = a.header("warden-stream-id").expect("stream id").to_string();
    let events = a.events();
    check_shape(&events, &stream_id);
    assert_eq!(output(&events, "stdout"), b"one\n");
    assert_eq!(output(&events, "stderr"), b"two\n");
    assert_eq!(
        events.last().unwrap().json()["report"]["status"],
        "exited",
        "{events:?}"
    );
    // It was the sandbox's exec: its workspace has the file.
    let again = json!({"command": ["cat", "/workspace/f"]});
    let events = s
        .stream(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            &again.to_string(),
        )
        .events();
    assert_eq!(output(&events, "stdout"), b"kept\n");
}

#[test]
fn bytes_that_are_not_utf8_are_base64_and_a_split_character_stays_text() {
    let s = Server::start(&[]);
    let events = s
        .stream(
            "POST",
            "/v1/execute",
            &sh("printf '\\377\\376abc'").to_string(),
        )
        .events();
    let outs: Vec<Value> = events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(Sse::json)
        .collect();
    assert_eq!(outs.len(), 1, "{events:?}");
    assert_eq!(outs[0]["encoding"], "base64");
    assert_eq!(outs[0]["data"], "//5hYmM=");
    // "é" written one byte at a time, with a pause between: two reads,
    // one event of text.
    let code = "import sys, time\nsys.stdout.buffer.write(b'\\xc3'); sys.stdout.flush()\ntime.sleep(0.3)\nsys.stdout.buffer.write(b'\\xa9!'); sys.stdout.flush()\n";
    let events = s.stream("POST", "/v1/execute", &python(code)).events();
    let outs: Vec<Value> = events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(Sse::json)
        .collect();
    assert!(outs.iter().all(|o| o["encoding"] == "utf8"), "{events:?}");
    assert_eq!(output(&events, "stdout"), "é!".as_bytes());
}

#[test]
fn a_granted_secret_printed_by_the_program_is_in_no_event() {
    let s = Server::start(&[]);
    let value = "hunter2-streamed-secret";
    common::put_secret(s.state.path(), &s.key, "db-pass", value.as_bytes());
    let mut body = sh("cat /run/secrets/db-pass; echo; sleep 0.2; echo \"$SECRET_DB_PASS\" >&2");
    body["capabilities"] = json!(["secret:db-pass:env"]);
    let mut a = s.stream("POST", "/v1/execute", &body.to_string());
    assert_eq!(a.status, 200);
    let events = a.events();
    let raw = String::from_utf8_lossy(&a.raw).into_owned();
    assert!(!raw.contains(value), "{raw}");
    assert_eq!(output(&events, "stdout"), b"[REDACTED:db-pass]\n");
    assert_eq!(output(&events, "stderr"), b"[REDACTED:db-pass]\n");
    let report = events.last().unwrap().json();
    assert_eq!(
        report["report"]["leases"][0]["secret"], "db-pass",
        "{report}"
    );
}

#[test]
fn a_dropped_client_resumes_with_last_event_id_and_misses_nothing() {
    let s = Server::start(&[]);
    let code = "import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(0.4)\n";
    let mut a = s.stream("POST", "/v1/execute", &python(code));
    let stream_id = a.header("warden-stream-id").expect("stream id").to_string();
    let mut first = Vec::new();
    while first.iter().filter(|e: &&Sse| e.name == "stdout").count() < 2 {
        first.push(a.next_event().expect("an event before the end"));
    }
    let last_seen = first.last().unwrap().id.unwrap();
    drop(a); // the connection goes away mid-run
    std::thread::sleep(Duration::from_millis(700));
    let mut b = s.stream_as(
        &s.key.clone(),
        "GET",
        &format!("/v1/streams/{stream_id}"),
        "",
        Some(&last_seen.to_string()),
    );
    assert_eq!(b.status, 200);
    assert_eq!(b.header("warden-stream-id"), Some(stream_id.as_str()));
    let rest = b.events();
    assert_eq!(
        rest.first().and_then(|e| e.id),
        Some(last_seen + 1),
        "{rest:?}"
    );
    let mut all = first.clone();
    all.extend(rest.iter().cloned());
    check_shape(&all, &stream_id);
    assert_eq!(output(&all, "stdout"), b"0\n1\n2\n3\n4\n5\n");
    // The run was not stopped by the client going away.
    assert_eq!(all.last().unwrap().json()["report"]["status"], "exited");
    // Without Last-Event-ID: the whole stream again, from its first event.
    let replay = s
        .stream("GET", &format!("/v1/streams/{stream_id}"), "")
        .events();
    assert_eq!(replay.len(), all.len(), "{replay:?}");
    check_shape(&replay, &stream_id);
    assert_eq!(output(&replay, "stdout"), b"0\n1\n2\n3\n4\n5\n");
    // Past the end, or not a number: 400.
    let key = s.key.clone();
    let path = format!("/v1/streams/{stream_id}");
    let mut ahead = s.stream_as(&key, "GET", &path, "", Some("999"));
    assert_eq!(ahead.status, 400);
    assert_eq!(ahead.json()["code"], "invalid_field");
    let mut junk = s.stream_as(&key, "GET", &path, "", Some("x1"));
    assert_eq!(junk.status, 400);
    assert_eq!(junk.json()["code"], "invalid_field");
}

#[test]
fn another_tenants_stream_and_an_unknown_one_are_404() {
    let s = Server::start(&[]);
    let mut a = s.stream("POST", "/v1/execute", &python("print(1)"));
    let stream_id = a.header("warden-stream-id").expect("stream id").to_string();
    a.events();
    let eve = s.other_tenant();
    let path = format!("/v1/streams/{stream_id}");
    let mut theirs = s.stream_as(&eve, "GET", &path, "", None);
    assert_eq!(theirs.status, 404);
    assert_eq!(theirs.json()["code"], "not_found");
    for unknown in ["0123456789abcdef0123456789abcdef", "not-an-id"] {
        let mut none = s.stream("GET", &format!("/v1/streams/{unknown}"), "");
        assert_eq!(none.status, 404);
        assert_eq!(none.json()["code"], "not_found");
    }
    let unauthenticated = s.send("GET", &path, &[("Accept", "text/event-stream")], "");
    assert_eq!(unauthenticated.status, 401);
    // The owner still has it.
    let mine = s.stream("GET", &path, "").events();
    check_shape(&mine, &stream_id);
}

#[test]
fn a_finished_stream_expires_after_its_retention() {
    let s = Server::start(&["--stream-retention", "1s"]);
    let mut a = s.stream("POST", "/v1/execute", &python("print(1)"));
    let stream_id = a.header("warden-stream-id").expect("stream id").to_string();
    a.events();
    std::thread::sleep(Duration::from_millis(1500));
    let mut gone = s.stream("GET", &format!("/v1/streams/{stream_id}"), "");
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["code"], "not_found");
}

#[test]
fn a_silent_run_gets_keep_alive_comments_and_the_counter_moves() {
    let s = Server::start(&["--stream-keepalive", "200ms"]);
    let mut a = s.stream("POST", "/v1/execute", &sh("sleep 1; echo done").to_string());
    let events = a.events();
    assert!(a.comments >= 2, "{} keep-alive comments", a.comments);
    assert_eq!(output(&events, "stdout"), b"done\n");
    let metrics = s.send("GET", "/metrics", &[], "").json_text();
    assert!(
        metrics.contains("warden_streams_total{kind=\"opened\"} 1"),
        "{metrics}"
    );
}

impl Http {
    fn json_text(mut self) -> String {
        while self.fill() {}
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[test]
fn an_rbac_denial_is_403_before_the_stream_and_a_refused_run_is_its_report() {
    let s = Server::start(&[]);
    common::put_secret(s.state.path(), &s.key, "db-pass", b"s3cret-value");
    // Read on every request: python may be invoked, no secret read.
    let rbac = "roles:\n  admin: {}\nbindings:\n  - {principal: dev, tenant: default, roles: [admin]}\nrules:\n  - allow: invoke\n    role: admin\n    resources: [\"runtime:python\"]\n";
    std::fs::write(s.state.path().join("rbac.yaml"), rbac).unwrap();
    let mut denied = s.stream("POST", "/v1/execute", &sh("echo never").to_string());
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("content-type"), Some("application/json"));
    assert_eq!(denied.json()["code"], "forbidden");
    let mut body: Value = serde_json::from_str(&python("print('never')")).unwrap();
    body["capabilities"] = json!(["secret:db-pass:env"]);
    let mut a = s.stream("POST", "/v1/execute", &body.to_string());
    assert_eq!(a.status, 200);
    let events = a.events();
    assert!(output(&events, "stdout").is_empty(), "{events:?}");
    let report = events.last().expect("a report").json();
    assert_eq!(report["report"]["status"], "refused", "{report}");
    assert!(report["report"]["refusal"].is_string(), "{report}");
}
