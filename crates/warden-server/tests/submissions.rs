//! Submissions end to end: the real `warden-serve` on a loopback port,
//! driven over HTTP (the harness is a trimmed copy of tests/serve.rs's;
//! this one can start a service again on the same state directory).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{serve_bin, warden_bin};
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a service on `state`; on a fresh state, also the dev key.
    fn start(state: &Path, extra: &[&str]) -> (Server, Option<String>) {
        let warden = warden_bin();
        let mut child = Command::new(serve_bin())
            .arg("--state")
            .arg(state)
            .args(["--listen", "127.0.0.1:0", "--warden"])
            .arg(&warden)
            // The receivers here listen on loopback.
            .arg("--callback-allow-private")
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
        while base.is_none() {
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
        let server = Server {
            child,
            base: base.unwrap(),
            log,
        };
        (server, key)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    }

    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "warden-serve still running {within:?} after SIGTERM: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
    }
}

/// A fresh state and a service on it, with its dev key.
struct Fixture {
    server: Server,
    key: String,
    state: tempfile::TempDir,
}

fn fixture(extra: &[&str]) -> Fixture {
    fixture_with(extra, |_| {})
}

/// As [`fixture`]; `prepare` may write into the fresh state first.
fn fixture_with(extra: &[&str], prepare: impl FnOnce(&Path)) -> Fixture {
    let state = tempfile::Builder::new()
        .prefix("warden-submissions-test-")
        .tempdir()
        .expect("temp state");
    prepare(state.path());
    let (server, key) = Server::start(state.path(), extra);
    Fixture {
        server,
        key: key.expect("a fresh state prints the dev key"),
        state,
    }
}

impl Fixture {
    fn post(&self, path: &str, body: &Value) -> Answer {
        request(
            "POST",
            &self.server.url(path),
            Some(&self.key),
            Some(body.to_string()),
        )
    }

    fn get(&self, id: &str) -> Answer {
        get_as(&self.server, &self.key, id)
    }

    fn warden(&self, args: &[&str]) -> std::process::Output {
        warden(self.state.path(), args)
    }

    fn submit(&self, body: &Value) -> String {
        let a = self.post("/v1/submissions", body);
        assert_eq!(a.status, 202, "{}", a.body);
        let v = a.json();
        assert_eq!(v["status"], "queued", "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    /// Polls `id` until it is done or failed.
    fn finished(&self, id: &str, within: Duration) -> Value {
        finished(&self.server, &self.key, id, within)
    }
}

fn warden(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(warden_bin())
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .expect("run warden")
}

fn get_as(server: &Server, key: &str, id: &str) -> Answer {
    request(
        "GET",
        &server.url(&format!("/v1/submissions/{id}")),
        Some(key),
        None,
    )
}

fn finished(server: &Server, key: &str, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let a = get_as(server, key, id);
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json();
        if v["status"] == "done" || v["status"] == "failed" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "submission {id} not finished after {within:?}: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["code"], code, "{}", self.body);
        v["message"].as_str().expect("message").to_string()
    }
}

fn request(method: &str, url: &str, key: Option<&str>, body: Option<String>) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut response = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(k) = key {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some(k) = key {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            r.send(body.unwrap_or_default())
        }
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .expect("read body");
    Answer {
        status,
        headers,
        body,
    }
}

fn sh(script: &str) -> Value {
    json!({"language": "sh", "files": [{"name": "main.sh", "content": script}]})
}

/// Files in the submissions directory.
fn stored(state: &Path) -> Vec<String> {
    let dir = state.join("serve").join("submissions");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The ledger's entries.
fn ledger(state: &Path) -> Vec<Value> {
    let log = warden(state, &["audit", "log"]);
    assert!(log.status.success(), "{log:?}");
    String::from_utf8_lossy(&log.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn index_of(entry: &Value) -> Option<u64> {
    entry["index"].as_u64().or_else(|| entry["seq"].as_u64())
}

#[test]
fn a_submission_runs_and_its_result_is_what_execute_answers() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(&[]);
    let mut body = sh("echo hi; cat; printf '%s|' \"$@\"");
    body["stdin"] = json!("from stdin\n");
    body["args"] = json!(["a b"]);
    let id = f.submit(&body);
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let v = f.finished(&id, Duration::from_secs(60));
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["id"], id.as_str());
    for t in ["created", "started", "finished"] {
        assert!(v[t].as_str().is_some_and(|s| s.ends_with('Z')), "{t}: {v}");
    }
    assert_eq!(v["runs"], 1);
    let direct = f.post("/v1/execute", &body);
    assert_eq!(direct.status, 200, "{}", direct.body);
    let direct = direct.json();
    let result = &v["result"];
    assert_eq!(result["stdout"], direct["stdout"], "{v}");
    assert_eq!(result["stdout"], "hi\nfrom stdin\na b|");
    assert_eq!(result["stderr"], direct["stderr"]);
    assert_eq!(result["report"]["status"], direct["report"]["status"]);
    assert_eq!(result["report"]["status"], "exited");
    let index = result["ledger_index"].as_u64().expect("ledger_index");
    assert_eq!(result["report"]["audit"]["index"].as_u64(), Some(index));
    assert_ne!(Some(index), direct["ledger_index"].as_u64());
    // The request (its files, the key) is gone; the record stays, 0600.
    let files = stored(f.state.path());
    assert_eq!(files, [format!("{id}.json")], "{files:?}");
    let dir = f.state.path().join("serve").join("submissions");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join(format!("{id}.json"))), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert!(!std::fs::read_to_string(dir.join(format!("{id}.json")))
        .unwrap()
        .contains(&f.key));

    // Unknown ids and another tenant's: the same 404.
    let unknown = f.get(&"0".repeat(32));
    let m = unknown.error(404, "not_found");
    f.get("../../identity.json").error(404, "not_found");
    f.get("nothex").error(404, "not_found");
    let added = f.warden(&["tenant", "add", "other"]);
    assert!(added.status.success(), "{added:?}");
    let added = f.warden(&["principal", "add", "eve", "--tenant", "other"]);
    assert!(added.status.success(), "{added:?}");
    let eve = String::from_utf8(added.stdout).unwrap().trim().to_string();
    let theirs = get_as(&f.server, &eve, &id);
    assert_eq!(theirs.error(404, "not_found"), m);
    assert_eq!(theirs.body, unknown.body);
    // Another principal of the same tenant sees it.
    let added = f.warden(&["principal", "add", "bob", "--tenant", "default"]);
    assert!(added.status.success(), "{added:?}");
    let bob = String::from_utf8(added.stdout).unwrap().trim().to_string();
    assert_eq!(get_as(&f.server, &bob, &id).status, 200);
    // No key: 401.
    request(
        "GET",
        &f.server.url(&format!("/v1/submissions/{id}")),
        None,
        None,
    )
    .error(401, "unauthenticated");
}

#[test]
fn submissions_are_checked_as_execute_requests_are() {
    let f = fixture(&[]);
    let url = f.server.url("/v1/submissions");
    let post = |text: &str| request("POST", &url, Some(&f.key), Some(text.to_string()));
    post("{\"language\": \"sh\",").error(400, "bad_json");
    let m = post(r#"{"language":"sh","files":[{"name":"a","content":"x"}],"timeout":5}"#)
        .error(400, "unknown_field");
    assert!(m.contains("timeout"), "{m}");
    post(r#"{"language":"cobol","files":[{"name":"a","content":"x"}]}"#)
        .error(400, "unknown_language");
    let m = post(r#"{"language":"sh","files":[{"name":"../a","content":"x"}]}"#)
        .error(400, "invalid_file");
    assert!(m.contains("files[0].name"), "{m}");
    post(r#"{"language":"sh","files":[{"name":"a","content":"x"}],"limits":{"wall_time_ms":0}}"#)
        .error(400, "invalid_limit");
    for bad in ["ftp://127.0.0.1/x", "file:///etc/passwd", "not a url"] {
        let mut body = sh("true");
        body["callback_url"] = json!(bad);
        let m = f.post("/v1/submissions", &body).error(400, "invalid_field");
        assert!(m.starts_with("callback_url:"), "{m}");
    }
    let mut body = sh("true");
    body["callback_url"] = json!(5);
    f.post("/v1/submissions", &body).error(400, "invalid_field");
    request("POST", &url, None, Some(sh("true").to_string())).error(401, "unauthenticated");
    request(
        "POST",
        &url,
        Some("wdn_nobody"),
        Some(sh("true").to_string()),
    )
    .error(401, "unauthenticated");
    // Nothing was stored.
    assert!(stored(f.state.path()).is_empty());
}

#[test]
fn submissions_get_execute_s_413_403_and_429() {
    let rbac = "roles:\n  admin: {}\nbindings:\n  - {principal: dev, tenant: default, roles: [admin]}\nrules:\n  - allow: invoke\n    role: admin\n    resources: [\"runtime:python\"]\n  - allow: audit.read\n    role: admin\n";
    let f = fixture_with(&["--max-body", "4KiB"], |state| {
        std::fs::write(state.join("rbac.yaml"), rbac).unwrap();
        std::fs::write(
            state.join("warden.yaml"),
            "serve:\n  quotas:\n    tenants:\n      default: {runs_per_minute: 2}\n",
        )
        .unwrap();
    });
    let py =
        |code: &str| json!({"language": "python", "files": [{"name": "m.py", "content": code}]});
    let mut big = py("print(1)");
    big["stdin"] = json!("x".repeat(8 << 10));
    f.post("/v1/submissions", &big)
        .error(413, "payload_too_large");
    let m = f
        .post("/v1/submissions", &sh("echo never"))
        .error(403, "forbidden");
    assert!(m.contains("invoke") && m.contains("runtime:sh"), "{m}");
    let m = f
        .post(
            "/v1/submissions/batch",
            &json!({"submissions": [py("print(1)"), sh("echo never")]}),
        )
        .error(403, "forbidden");
    assert!(m.starts_with("submissions[1]:"), "{m}");
    // runs_per_minute 2: a batch of 3 is refused whole, and uses none.
    let a = f.post(
        "/v1/submissions/batch",
        &json!({"submissions": [py("print(1)"), py("print(2)"), py("print(3)")]}),
    );
    let m = a.error(429, "quota_exceeded");
    assert!(m.contains("runs_per_minute"), "{m}");
    assert!(a.header("retry-after").is_some());
    assert!(stored(f.state.path()).is_empty());
    let one = f.submit(&py("print(1)"));
    let two = f.submit(&py("print(2)"));
    f.post("/v1/submissions", &py("print(3)"))
        .error(429, "quota_exceeded");
    for (id, out) in [(one, "1\n"), (two, "2\n")] {
        let v = f.finished(&id, Duration::from_secs(60));
        assert_eq!(v["result"]["stdout"], out, "{v}");
    }
}

#[test]
fn a_batch_runs_in_order_and_is_refused_as_a_whole() {
    let f = fixture(&[]);
    let items: Vec<Value> = (0..3).map(|i| sh(&format!("echo {i}"))).collect();
    let a = f.post("/v1/submissions/batch", &json!({ "submissions": items }));
    assert_eq!(a.status, 202, "{}", a.body);
    let ids: Vec<String> = a.json()["submissions"]
        .as_array()
        .expect("submissions")
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "queued");
            s["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 3);
    for (i, id) in ids.iter().enumerate() {
        let v = f.finished(id, Duration::from_secs(60));
        assert_eq!(v["status"], "done", "{v}");
        assert_eq!(v["result"]["stdout"], format!("{i}\n"), "{v}");
        assert!(v["result"]["ledger_index"].is_u64(), "{v}");
    }
    let before = stored(f.state.path());
    // Over 20, empty, not a list: 400 naming the field.
    let many: Vec<Value> = (0..21).map(|_| sh("true")).collect();
    let m = f
        .post("/v1/submissions/batch", &json!({ "submissions": many }))
        .error(400, "invalid_field");
    assert!(m.starts_with("submissions:") && m.contains("20"), "{m}");
    let m = f
        .post("/v1/submissions/batch", &json!({ "submissions": [] }))
        .error(400, "invalid_field");
    assert!(m.starts_with("submissions:"), "{m}");
    f.post("/v1/submissions/batch", &json!({}))
        .error(400, "missing_field");
    f.post("/v1/submissions/batch", &json!({"submissions": [], "x": 1}))
        .error(400, "unknown_field");
    // One bad item: 400 naming its index, none queued.
    let mut bad = sh("true");
    bad["limits"] = json!({"memory_bytes": 5});
    let m = f
        .post(
            "/v1/submissions/batch",
            &json!({ "submissions": [sh("true"), bad, sh("true")] }),
        )
        .error(400, "invalid_limit");
    assert!(m.starts_with("submissions[1]: limits.memory_bytes"), "{m}");
    let mut bad = sh("true");
    bad["callback_url"] = json!("gopher://x/");
    let m = f
        .post(
            "/v1/submissions/batch",
            &json!({ "submissions": [sh("true"), sh("true"), bad] }),
        )
        .error(400, "invalid_field");
    assert!(m.starts_with("submissions[2]: callback_url"), "{m}");
    assert_eq!(stored(f.state.path()), before);
}

#[test]
fn a_full_submission_queue_is_503_audited_and_execute_still_runs() {
    let f = fixture(&["--workers", "1", "--submission-queue", "1"]);
    let first = f.submit(&sh("sleep 2"));
    // The first has a worker (it left the queue); the second waits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.get(&first).json()["status"] != "running" {
        assert!(Instant::now() < deadline, "the first never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = f.submit(&sh("echo second"));
    let a = f.post("/v1/submissions", &sh("echo third"));
    a.error(503, "overloaded");
    assert!(a.header("retry-after").is_some(), "{:?}", a.headers);
    let a = f.post(
        "/v1/submissions/batch",
        &json!({"submissions": [sh("true")]}),
    );
    a.error(503, "overloaded");
    // Execute has its own queue (64 by default): it waits for the worker
    // and runs, it is not refused.
    let e = f.post("/v1/execute", &sh("echo direct"));
    assert_eq!(e.status, 200, "{}", e.body);
    assert_eq!(e.json()["stdout"], "direct\n");
    assert_eq!(
        f.finished(&first, Duration::from_secs(60))["status"],
        "done"
    );
    assert_eq!(
        f.finished(&second, Duration::from_secs(60))["status"],
        "done"
    );
    // The two 503s are refusals in the ledger.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refusals: Vec<Value> = ledger(f.state.path())
            .into_iter()
            .filter(|e| e["kind"] == "refusal")
            .collect();
        let ours = refusals
            .iter()
            .filter(|e| e["event"]["status"] == 503 && e["event"]["code"] == "overloaded")
            .count();
        if ours == 2 {
            let routes: Vec<&str> = refusals
                .iter()
                .map(|e| e["event"]["route"].as_str().unwrap_or(""))
                .collect();
            assert!(routes.contains(&"/v1/submissions"), "{routes:?}");
            assert!(routes.contains(&"/v1/submissions/batch"), "{routes:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{refusals:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let verify = f.warden(&["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver on a loopback port answering `statuses` in turn; what it got.
fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for status in statuses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut headers = Vec::new();
            let mut line = String::new();
            let _ = reader.read_line(&mut line); // request line
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((n, v)) = l.split_once(':') {
                    headers.push((n.trim().to_string(), v.trim().to_string()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            sink.lock().unwrap().push(Delivery { headers, body });
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}

#[test]
fn a_callback_is_retried_until_delivered_and_signed() {
    use hmac::{Hmac, Mac};
    let f = fixture(&[]);
    let (url, got) = receiver(vec![500, 500, 200]);
    let mut body = sh("echo called back");
    body["callback_url"] = json!(url);
    let id = f.submit(&body);
    let v = f.finished(&id, Duration::from_secs(60));
    assert_eq!(v["status"], "done", "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let v = loop {
        let v = f.get(&id).json();
        if v["callback"]["delivered"] == true {
            break v;
        }
        assert!(Instant::now() < deadline, "not delivered: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["callback"]["attempts"], 3, "{v}");
    assert!(v["callback"]["last_error"].is_null(), "{v}");
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    let key_text =
        std::fs::read_to_string(f.state.path().join("serve").join("callback.key")).unwrap();
    let key = hex::decode(key_text.trim()).expect("hex key");
    assert_eq!(key.len(), 32);
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(f.state.path().join("serve").join("callback.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    for d in &got {
        assert_eq!(d.body, got[0].body, "the same bytes every time");
        assert_eq!(d.header("x-warden-submission"), Some(id.as_str()));
        let signature = d.header("x-warden-signature").expect("signature");
        let hex_sig = signature.strip_prefix("sha256=").expect("sha256=");
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&d.body);
        mac.verify_slice(&hex::decode(hex_sig).unwrap())
            .expect("the signature verifies with the key in the state directory");
    }
    let posted: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(posted["id"], id.as_str());
    assert_eq!(posted["status"], "done");
    assert_eq!(posted["result"]["stdout"], "called back\n");
    assert_eq!(posted["result"], v["result"]);
}

#[test]
fn an_undeliverable_callback_gives_up_and_says_why() {
    let f = fixture(&[]);
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut body = sh("true");
    body["callback_url"] = json!(format!("http://127.0.0.1:{port}/"));
    let id = f.submit(&body);
    let deadline = Instant::now() + Duration::from_secs(90);
    let v = loop {
        let v = f.get(&id).json();
        if v["callback"]["attempts"] == 5 {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["callback"]["delivered"], false, "{v}");
    assert!(v["callback"]["last_error"].is_string(), "{v}");
}

#[test]
fn queued_submissions_survive_a_restart_and_none_is_lost() {
    let state = tempfile::Builder::new()
        .prefix("warden-submissions-restart-")
        .tempdir()
        .unwrap();
    // One worker, and no grace: the run in flight at SIGTERM is stopped
    // (and run again after the restart: at least once).
    let (mut first, key) =
        Server::start(state.path(), &["--workers", "1", "--shutdown-grace", "0s"]);
    let key = key.expect("dev key");
    let ids: Vec<String> = (0..4)
        .map(|i| {
            let a = request(
                "POST",
                &first.url("/v1/submissions"),
                Some(&key),
                Some(sh(&format!("sleep 1; echo run {i}")).to_string()),
            );
            assert_eq!(a.status, 202, "{}", a.body);
            a.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_as(&first, &key, &ids[0]).json()["status"] != "running" {
        assert!(Instant::now() < deadline, "the first never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.terminate();
    assert!(first.wait(Duration::from_secs(30)).success());
    drop(first);
    // Stopped with work left: some not done, every one still stored.
    let records = stored(state.path());
    for id in &ids {
        assert!(
            records.contains(&format!("{id}.json")),
            "{id} lost: {records:?}"
        );
    }
    let left = ids
        .iter()
        .filter(|id| {
            let text = std::fs::read_to_string(
                state
                    .path()
                    .join("serve/submissions")
                    .join(format!("{id}.json")),
            )
            .unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            v["status"] == "queued"
        })
        .count();
    assert!(left >= 3, "{left} queued at the stop");

    let (second, no_key) = Server::start(state.path(), &["--workers", "1"]);
    assert!(no_key.is_none(), "not a fresh state");
    let mut indexes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let v = finished(&second, &key, id, Duration::from_secs(60));
        assert_eq!(v["status"], "done", "{v}");
        assert_eq!(v["result"]["stdout"], format!("run {i}\n"), "{v}");
        assert!(v["runs"].as_u64().unwrap() >= 1, "{v}");
        indexes.push(v["result"]["ledger_index"].as_u64().expect("ledger index"));
    }
    // The first was cut off by the stop and ran again.
    let v = get_as(&second, &key, &ids[0]).json();
    assert_eq!(v["runs"], 2, "{v}");
    // A ledger entry per run, and the ledger verifies.
    let entries = ledger(state.path());
    for index in &indexes {
        assert!(
            entries
                .iter()
                .any(|e| index_of(e) == Some(*index) && e["kind"] == "run"),
            "no run entry {index}: {entries:?}"
        );
    }
    let runs = entries.iter().filter(|e| e["kind"] == "run").count();
    assert!(
        runs > ids.len(),
        "{runs} run entries (the cut-off run has one too)"
    );
    let verify = warden(state.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "audit verify: {verify:?}");
    // Their requests are gone; only the records stay.
    assert_eq!(stored(state.path()).len(), ids.len());
}

#[test]
fn the_submission_routes_are_in_the_openapi_document() {
    let f = fixture(&[]);
    let doc = request("GET", &f.server.url("/openapi.json"), None, None).json();
    for (path, method) in [
        ("/v1/submissions", "post"),
        ("/v1/submissions/batch", "post"),
        ("/v1/submissions/{id}", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
    assert!(doc["paths"]["/v1/submissions"]["post"]["responses"]["202"].is_object());
    assert!(doc["paths"]["/v1/submissions/{id}"]["get"]["responses"]["404"].is_object());
    for schema in [
        "SubmissionRequest",
        "BatchRequest",
        "Submission",
        "Accepted",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
