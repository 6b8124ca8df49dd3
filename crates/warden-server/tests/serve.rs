//! `warden serve` end to end: the real `warden-serve` binary on a free
//! loopback port with a temporary state directory, driven over HTTP. Each
//! test starts its own service (its own state, RBAC file, limits).
//!
//! The service runs every invocation with the `warden` binary beside it;
//! cargo builds `warden-serve` for this test, and the first test to need
//! `warden` builds it (`cargo build -p warden-cli`) into the same directory.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
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
    key: String,
    state: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_with(extra, |_| {})
    }

    /// Starts a service; `prepare` may write into the state directory
    /// before it starts (it is fresh: the service bootstraps it).
    fn start_with(extra: &[&str], prepare: impl FnOnce(&Path)) -> Server {
        Server::launch(false, extra, prepare, &[])
    }

    /// Starts a service with `env` added to its environment.
    fn start_with_env(extra: &[&str], env: &[(&str, &Path)]) -> Server {
        Server::launch(false, extra, |_| {}, env)
    }

    /// Started as users start it: `warden serve`, which executes
    /// `warden-serve` beside it.
    fn start_via_warden(extra: &[&str]) -> Server {
        Server::launch(true, extra, |_| {}, &[])
    }

    fn launch(
        via_warden: bool,
        extra: &[&str],
        prepare: impl FnOnce(&Path),
        env: &[(&str, &Path)],
    ) -> Server {
        let warden = warden_bin();
        let state = tempfile::Builder::new()
            .prefix("warden-serve-test-")
            .tempdir()
            .expect("temp state");
        prepare(state.path());
        let mut command = if via_warden {
            let mut c = Command::new(&warden);
            c.arg("--state").arg(state.path()).arg("serve");
            c
        } else {
            let mut c = Command::new(serve_bin());
            c.arg("--state").arg(state.path());
            c
        };
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--warden"])
            .arg(&warden)
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
        Server {
            child,
            base: base.unwrap(),
            key: key.unwrap(),
            state,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    fn warden(&self, args: &[&str]) -> std::process::Output {
        self.warden_as(None, args)
    }

    /// `warden --state STATE ARGS`, as the principal of `key` if given.
    fn warden_as(&self, key: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(warden_bin());
        if let Some(key) = key {
            command.env("WARDEN_API_KEY", key);
        }
        command
            .arg("--state")
            .arg(self.state.path())
            .args(args)
            .output()
            .expect("run warden")
    }

    fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    }

    /// Waits for the service to exit; its status.
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

    fn execute(&self, body: &Value) -> Answer {
        request(
            "POST",
            &self.url("/v1/execute"),
            Some(&self.key),
            Some(body.to_string()),
        )
    }
}

impl Drop for Server {
    /// SIGTERM, so that the service removes its run directory; SIGKILL if
    /// it has not ended within 10 s.
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

    /// Asserts an error answer: status and code.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["code"], code, "{}", self.body);
        v["message"].as_str().expect("message").to_string()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn request(method: &str, url: &str, key: Option<&str>, body: Option<String>) -> Answer {
    let agent = agent();
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

/// A raw HTTP/1.1 exchange: `head` (request line and headers, without
/// the blank line), then `body`; the status and body of the answer.
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    // The service may answer before reading all of it, and close.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn sh(script: &str) -> Value {
    json!({"language": "sh", "files": [{"name": "main.sh", "content": script}]})
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(marker) {
                found.push(format!("{name}: {text}"));
            }
        }
    }
    found
}

fn marker(tag: &str) -> String {
    format!(
        "warden-serve-it-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

#[test]
fn health_readiness_runtimes_and_openapi() {
    let s = Server::start(&[]);
    let a = request("GET", &s.url("/healthz"), None, None);
    assert_eq!((a.status, a.body.as_str()), (200, "ok"));
    let a = request("GET", &s.url("/readyz"), None, None);
    assert_eq!(a.status, 200, "{}", a.body);
    let a = request("GET", &s.url("/v1/runtimes"), None, None);
    assert_eq!(a.status, 200);
    let runtimes = a.json();
    let list = runtimes["runtimes"].as_array().expect("runtimes");
    let langs: Vec<&str> = list
        .iter()
        .map(|r| r["language"].as_str().unwrap())
        .collect();
    assert_eq!(langs, ["python", "node", "php", "sh", "wasm"]);
    let sh = list.iter().find(|r| r["language"] == "sh").unwrap();
    assert_eq!(sh["available"], true, "{sh}");
    let py = list.iter().find(|r| r["language"] == "python").unwrap();
    assert!(
        py["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("Python 3")),
        "{py}"
    );
    let a = request("GET", &s.url("/openapi.json"), None, None);
    assert_eq!(a.status, 200);
    let doc = a.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let execute = &doc["paths"]["/v1/execute"]["post"];
    assert!(execute.is_object(), "no POST /v1/execute");
    for status in ["200", "400", "401", "403", "413", "503"] {
        assert!(execute["responses"][status].is_object(), "no {status}");
    }
    for path in ["/healthz", "/readyz", "/v1/runtimes", "/openapi.json"] {
        assert!(doc["paths"][path].is_object(), "no {path}");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let a = request("GET", &s.url("/nowhere"), None, None);
    a.error(404, "not_found");
}

#[test]
fn readiness_fails_without_the_warden_binary() {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(serve_bin())
        .arg("--state")
        .arg(state.path())
        .args(["--listen", "127.0.0.1:0", "--warden", "/nonexistent/warden"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("warden-serve ended").unwrap();
        if let Some(rest) = line.strip_prefix("warden: listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let a = request("GET", &format!("{base}/readyz"), None, None);
    let message = a.error(503, "not_ready");
    assert!(message.contains("/nonexistent/warden"), "{message}");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn execute_sh_leaves_a_verified_ledger_entry() {
    let s = Server::start(&[]);
    let mut body = sh("echo hi; cat; printf '%s|' \"$@\"; pwd >&2");
    body["stdin"] = json!("from stdin\n");
    body["args"] = json!(["a b", "-c"]);
    let a = s.execute(&body);
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["stdout"], "hi\nfrom stdin\na b|-c|", "{v}");
    assert_eq!(v["stdout_encoding"], "utf8");
    assert_eq!(v["stderr"], "/work\n");
    assert_eq!(v["report"]["status"], "exited", "{v}");
    assert_eq!(v["report"]["exit_code"], 0);
    assert_eq!(v["report"]["backend"], "jail");
    let index = v["ledger_index"].as_u64().expect("ledger_index");
    assert_eq!(v["report"]["audit"]["index"].as_u64(), Some(index));
    // The entry names the principal whose key made the request.
    let log = s.warden(&[
        "audit",
        "log",
        "--from",
        &index.to_string(),
        "--to",
        &(index + 1).to_string(),
    ]);
    assert!(log.status.success(), "{log:?}");
    let entry = String::from_utf8_lossy(&log.stdout);
    assert!(entry.contains("\"dev\""), "{entry}");
    let verify = s.warden(&["audit", "verify"]);
    assert!(verify.status.success(), "audit verify: {verify:?}");
    // Nothing of the run's directory is left.
    let a = s.execute(&sh("exit 3"));
    assert_eq!(a.json()["report"]["exit_code"], 3);
}

#[test]
fn execute_python_wasm_and_binary_output() {
    let s = Server::start(&[]);
    let a = s.execute(&json!({
        "language": "python",
        "files": [
            {"name": "main.py", "content": "import lib.util as u\nprint(u.f(), open('data.bin','rb').read())"},
            {"name": "lib/util.py", "content": "def f():\n    return sum(range(10))\n"},
            {"name": "data.bin", "content": "AAEC", "encoding": "base64"},
        ],
    }));
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["stdout"], "45 b'\\x00\\x01\\x02'\n", "{v}");
    assert_eq!(v["report"]["status"], "exited");
    // Output that is not UTF-8 comes back as base64, and says so.
    let a = s.execute(&sh("printf '\\377\\376'"));
    let v = a.json();
    assert_eq!(
        (v["stdout"].as_str(), v["stdout_encoding"].as_str()),
        (Some("//4="), Some("base64"))
    );
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 8) "hi from wasm\n")
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 8))
        (i32.store (i32.const 4) (i32.const 13))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 24)))))"#;
    let a =
        s.execute(&json!({"language": "wasm", "files": [{"name": "hello.wat", "content": wat}]}));
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["stdout"], "hi from wasm\n", "{v}");
    assert_eq!(v["report"]["backend"], "wasm");
    assert!(v["ledger_index"].is_u64());
}

#[test]
fn a_wall_time_limit_stops_the_run() {
    let s = Server::start(&[]);
    let mut body = sh("sleep 5");
    body["limits"] = json!({"wall_time_ms": 200});
    let started = Instant::now();
    let a = s.execute(&body);
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["report"]["status"], "timeout", "{v}");
    assert_eq!(v["report"]["limits"]["wall_time_ms"], 200);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn missing_wrong_malformed_and_revoked_keys_are_401() {
    let s = Server::start(&[]);
    let body = sh("echo hi").to_string();
    let url = s.url("/v1/execute");
    let m = request("POST", &url, None, Some(body.clone())).error(401, "unauthenticated");
    assert!(m.contains("missing"), "{m}");
    let a = request(
        "POST",
        &url,
        Some("wdn_notakeyofanyone"),
        Some(body.clone()),
    );
    assert!(a
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer")));
    a.error(401, "unauthenticated");
    request("POST", &url, Some("notwarden"), Some(body.clone())).error(401, "unauthenticated");
    let (status, raw_body) = raw(
        &s.addr(),
        &format!(
            "POST /v1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Zm9vOmJhcg==\r\nContent-Length: {}",
            body.len()
        ),
        body.as_bytes(),
    );
    assert_eq!(status, 401, "{raw_body}");
    // A principal added and then revoked.
    let added = s.warden(&["principal", "add", "bob", "--tenant", "default"]);
    assert!(added.status.success(), "{added:?}");
    let bob = String::from_utf8(added.stdout).unwrap().trim().to_string();
    assert!(bob.starts_with("wdn_"));
    let ok = request("POST", &url, Some(&bob), Some(body.clone()));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let revoked = s.warden(&["principal", "revoke", "bob"]);
    assert!(revoked.status.success(), "{revoked:?}");
    let m = request("POST", &url, Some(&bob), Some(body)).error(401, "unauthenticated");
    assert!(m.contains("revoked"), "{m}");
}

#[test]
fn bad_requests_are_400_with_a_code_naming_the_field() {
    let s = Server::start(&[]);
    let url = s.url("/v1/execute");
    let post = |text: &str| request("POST", &url, Some(&s.key), Some(text.to_string()));
    post("{\"language\": \"sh\",").error(400, "bad_json");
    post("[]").error(400, "invalid_field");
    let m = post(r#"{"language":"sh","files":[{"name":"a","content":"x"}],"timeout":5}"#)
        .error(400, "unknown_field");
    assert!(m.contains("timeout"), "{m}");
    let m =
        post(r#"{"language":"sh","files":[{"name":"a","content":"x"}],"limits":{"wall_ms":5}}"#)
            .error(400, "unknown_field");
    assert!(m.contains("limits.wall_ms"), "{m}");
    let m = post(r#"{"language":"cobol","files":[{"name":"a","content":"x"}]}"#)
        .error(400, "unknown_language");
    assert!(m.contains("cobol"), "{m}");
    let m = post(r#"{"language":"sh","files":[{"name":"../../etc/x","content":"x"}]}"#)
        .error(400, "invalid_file");
    assert!(m.contains("files[0].name"), "{m}");
    post(r#"{"language":"sh","files":[{"name":"/etc/passwd","content":"x"}]}"#)
        .error(400, "invalid_file");
    let m = post(
        r#"{"language":"sh","files":[{"name":"a","content":"x"}],"limits":{"memory_bytes":1}}"#,
    )
    .error(400, "invalid_limit");
    assert!(m.contains("limits.memory_bytes"), "{m}");
    post(r#"{"language":"sh","files":[{"name":"a","content":"x"}],"limits":{"pids":0}}"#)
        .error(400, "invalid_limit");
    let m = post(
        r#"{"language":"sh","files":[{"name":"a","content":"x"}],"capabilities":["net:nope"]}"#,
    )
    .error(400, "invalid_capability");
    assert!(m.contains("capabilities[0]"), "{m}");
    post(r#"{"language":"sh","files":[{"name":"a","content":"x"}],"capabilities":["fs:read:/"]}"#)
        .error(400, "invalid_capability");
    post(r#"{"language":"sh","files":[]}"#).error(400, "invalid_file");
    post(r#"{"language":"sh"}"#).error(400, "missing_field");
}

#[test]
fn a_body_over_the_cap_is_413() {
    let s = Server::start(&[]);
    // Default cap, 8 MiB: a declared length past it is refused at once.
    let (status, body) = raw(
        &s.addr(),
        &format!(
            "POST /v1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}",
            s.key,
            9 << 20
        ),
        b"{\"language\":",
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // Just under it is read (and then judged on its content).
    let big = "x".repeat(7 << 20);
    let a = s.execute(&json!({"language": "sh", "files": [{"name": "a", "content": "echo ok"}, {"name": "big", "content": big}]}));
    assert_eq!(a.status, 200, "{}", &a.body[..a.body.len().min(300)]);
    // A chunked body, with no length to judge by, is cut at the cap.
    let small = Server::start(&["--max-body", "1KiB"]);
    let chunk = "y".repeat(4096);
    let (status, body) = raw(
        &small.addr(),
        &format!(
            "POST /v1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked",
            small.key
        ),
        format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len()).as_bytes(),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
}

#[test]
fn rbac_denial_is_403_naming_the_action() {
    let rbac = "roles:\n  admin: {}\nbindings:\n  - {principal: dev, tenant: default, roles: [admin]}\nrules:\n  - allow: invoke\n    role: admin\n    resources: [\"runtime:python\"]\n  - allow: audit.read\n    role: admin\n";
    let s = Server::start_with(&[], |state| {
        std::fs::write(state.join("rbac.yaml"), rbac).unwrap();
    });
    let m = s.execute(&sh("echo never")).error(403, "forbidden");
    assert!(m.contains("invoke") && m.contains("runtime:sh"), "{m}");
    // The denial is in the ledger, which still verifies.
    let log = s.warden_as(Some(&s.key), &["audit", "log"]);
    let text = String::from_utf8_lossy(&log.stdout);
    assert!(
        text.contains("\"deny\"") && text.contains("runtime:sh"),
        "{log:?}"
    );
    let verify = s.warden_as(Some(&s.key), &["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
    // Counted as a refusal, but not entered a second time.
    let (_, m) = scrape(&s);
    assert_eq!(
        sample(
            &m,
            "warden_refusals_total",
            &[("status", "403"), ("code", "forbidden")]
        ),
        1.0
    );
    assert!(!text.contains("\"refusal\""), "{text}");
    // What the file allows runs.
    let a = s.execute(
        &json!({"language": "python", "files": [{"name": "m.py", "content": "print(1)"}]}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["stdout"], "1\n");
}

#[test]
fn a_full_queue_is_503_with_retry_after() {
    let s = Server::start(&["--workers", "1", "--queue", "0"]);
    let url = s.url("/v1/execute");
    let key = s.key.clone();
    let slow = std::thread::spawn(move || {
        request(
            "POST",
            &url,
            Some(&key),
            Some(sh("sleep 2; echo slow").to_string()),
        )
    });
    std::thread::sleep(Duration::from_millis(700));
    let a = s.execute(&sh("echo fast"));
    a.error(503, "overloaded");
    assert_eq!(a.header("retry-after"), Some("1"));
    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200, "{}", slow.body);
    assert_eq!(slow.json()["stdout"], "slow\n");
}

#[test]
fn sigterm_lets_a_run_in_flight_answer_and_exits_0_leaving_no_child() {
    // Through `warden serve`: the exec from `warden` (which holds the
    // termination signals blocked) must leave them deliverable.
    let mut s = Server::start_via_warden(&[]);
    let mark = marker("term");
    let url = s.url("/v1/execute");
    let key = s.key.clone();
    let mut body = sh("sleep 1.5; echo finished \"$1\"");
    body["args"] = json!([mark]);
    let text = body.to_string();
    let inflight = std::thread::spawn(move || request("POST", &url, Some(&key), Some(text)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&mark).is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.terminate();
    let a = inflight.join().unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["stdout"], format!("finished {mark}\n"), "{v}");
    assert_eq!(v["report"]["status"], "exited");
    let status = s.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {:?}", s.log.lock().unwrap());
    assert!(
        processes_with(&mark).is_empty(),
        "{:?}",
        processes_with(&mark)
    );
    // No new connection is taken.
    assert!(TcpStream::connect(s.addr()).is_err());
    // Its private run directory is gone.
    let prefix = format!("warden-serve-{}-", s.child.id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn after_the_shutdown_grace_runs_are_stopped_with_their_reports() {
    let mut s = Server::start(&["--shutdown-grace", "500ms"]);
    let mark = marker("grace");
    let url = s.url("/v1/execute");
    let key = s.key.clone();
    let mut body = sh("sleep 30; echo never \"$1\"");
    body["args"] = json!([mark]);
    let text = body.to_string();
    let inflight = std::thread::spawn(move || request("POST", &url, Some(&key), Some(text)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&mark).is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = Instant::now();
    s.terminate();
    let a = inflight.join().unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["stdout"], "", "{v}");
    // Warden stopped it on SIGTERM: status error, the signal, a ledger entry.
    assert_eq!(v["report"]["status"], "error", "{v}");
    assert_eq!(v["report"]["signal"], 15, "{v}");
    assert!(v["ledger_index"].is_u64(), "{v}");
    let status = s.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopped.elapsed()
    );
    assert!(
        processes_with(&mark).is_empty(),
        "{:?}",
        processes_with(&mark)
    );
    assert!(s.warden(&["audit", "verify"]).status.success());
}

#[test]
fn warden_serve_is_what_warden_serve_runs() {
    let warden = warden_bin();
    let out = Command::new(&warden)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--listen"), "{help}");
    assert!(help.contains("--max-body"), "{help}");
}

#[test]
fn secrets_are_leased_to_the_callers_run_and_redacted() {
    let s = Server::start(&[]);
    let value = "hunter2-topsecret-value";
    common::put_secret(s.state.path(), &s.key, "db-pass", value.as_bytes());
    let mut body = sh("cat /run/secrets/db-pass; echo; echo \"$SECRET_DB_PASS\" >&2");
    body["capabilities"] = json!(["secret:db-pass:env"]);
    let a = s.execute(&body);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!a.body.contains(value), "{}", a.body);
    let v = a.json();
    assert_eq!(v["stdout"], "[REDACTED:db-pass]\n", "{v}");
    assert_eq!(v["stderr"], "[REDACTED:db-pass]\n", "{v}");
    assert_eq!(v["report"]["leases"][0]["secret"], "db-pass", "{v}");
    let log = s.warden(&["audit", "log"]);
    assert!(!String::from_utf8_lossy(&log.stdout).contains(value));
}

#[test]
fn a_client_that_goes_away_stops_its_run_which_is_still_recorded() {
    let s = Server::start(&[]);
    let mark = marker("gone");
    let mut body = sh("sleep 30");
    body["args"] = json!([mark]);
    let text = body.to_string();
    let mut conn = TcpStream::connect(s.addr()).unwrap();
    write!(
        conn,
        "POST /v1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{text}",
        s.key,
        text.len()
    )
    .unwrap();
    // The program itself, in its jail (not only the `warden` child, which
    // a SIGTERM would stop while it still builds the jail).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&mark)
        .iter()
        .any(|p| p.contains(": sh ./main.sh "))
    {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&mark).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still running: {:?}",
            processes_with(&mark)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Warden stopped it on SIGTERM and wrote its entry.
    let log = s.warden(&["audit", "log"]);
    let text = String::from_utf8_lossy(&log.stdout);
    let entry = text
        .lines()
        .find(|l| l.contains(&mark))
        .expect("no entry of the run");
    assert!(entry.contains("interrupted by signal 15"), "{entry}");
}

/// One sample of the Prometheus text format: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the Prometheus text exposition format strictly: every line is
/// a `# HELP`/`# TYPE` comment or a sample `name{label="value",…} value`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let is_name = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (what, name) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            assert!(what == "HELP" || what == "TYPE", "bad comment: {line}");
            assert!(is_name(name), "bad name in: {line}");
            if what == "TYPE" {
                let ty = words.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                    "bad type: {line}"
                );
            }
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(is_name(&key), "bad label name in: {line}");
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(c @ ('\\' | '"')) => value.push(c),
                                other => panic!("bad escape {other:?} in: {line}"),
                            },
                            Some('"') => break,
                            Some(c) => value.push(c),
                            None => panic!("unterminated label in: {line}"),
                        }
                    }
                    labels.push((key, value));
                    match chars.next() {
                        Some(',') | None => {}
                        other => panic!("bad separator {other:?} in: {line}"),
                    }
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "bad metric name: {line}");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

/// The service's metrics, parsed.
fn scrape(s: &Server) -> (String, Vec<Sample>) {
    let a = request("GET", &s.url("/metrics"), None, None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        a.headers
    );
    let samples = parse_prometheus(&a.body);
    (a.body, samples)
}

/// The value of `name` with (at least) `labels`, 0 if absent.
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Ledger entries of kind `refusal`, waiting up to 10 s for `count` of
/// them (the writer thread appends them just after the answer).
fn refusal_entries(s: &Server, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = s.warden(&["audit", "log"]);
        assert!(log.status.success(), "{log:?}");
        let found: Vec<Value> = String::from_utf8_lossy(&log.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == "refusal")
            .collect();
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn with_config(yaml: &'static str) -> impl FnOnce(&Path) {
    move |state: &Path| std::fs::write(state.join("warden.yaml"), yaml).unwrap()
}

#[test]
fn metrics_are_prometheus_text_and_move_after_a_run_and_a_401() {
    let s = Server::start(&[]);
    let (_, before) = scrape(&s);
    assert_eq!(sample(&before, "warden_active_sandboxes", &[]), 0.0);
    for gauge in [
        "warden_queue_depth",
        "warden_workers_busy",
        "warden_workers",
    ] {
        assert!(
            before.iter().any(|(n, _, _)| n == gauge),
            "no {gauge}: {before:?}"
        );
    }
    let secret_output = marker("out");
    let a = s.execute(&sh(&format!("echo {secret_output}")));
    assert_eq!(a.status, 200, "{}", a.body);
    let mut slow = sh("sleep 5");
    slow["limits"] = json!({"wall_time_ms": 100});
    assert_eq!(s.execute(&slow).json()["report"]["status"], "timeout");
    request(
        "POST",
        &s.url("/v1/execute"),
        None,
        Some(sh("true").to_string()),
    )
    .error(401, "unauthenticated");
    let (text, after) = scrape(&s);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    let exited = [("status", "exited"), ("backend", "jail")];
    assert_eq!(moved("warden_invocations_total", &exited), 1.0, "{text}");
    let timeout = [("status", "timeout"), ("backend", "jail")];
    assert_eq!(moved("warden_invocations_total", &timeout), 1.0, "{text}");
    assert_eq!(
        moved("warden_limit_kills_total", &[("limit", "timeout")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(
            "warden_invocation_wall_seconds_count",
            &[("backend", "jail")]
        ),
        2.0,
        "{text}"
    );
    let route = [("route", "/v1/execute")];
    assert_eq!(
        moved(
            "warden_http_requests_total",
            &[("route", "/v1/execute"), ("status", "200")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        moved(
            "warden_http_requests_total",
            &[("route", "/v1/execute"), ("status", "401")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved("warden_http_request_duration_seconds_count", &route),
        3.0,
        "{text}"
    );
    assert_eq!(
        moved(
            "warden_refusals_total",
            &[("status", "401"), ("code", "unauthenticated")]
        ),
        1.0,
        "{text}"
    );
    // A histogram: buckets up to +Inf, whose count is the _count.
    let inf = sample(
        &after,
        "warden_http_request_duration_seconds_bucket",
        &[("route", "/v1/execute"), ("le", "+Inf")],
    );
    assert_eq!(
        inf,
        sample(&after, "warden_http_request_duration_seconds_count", &route)
    );
    // Nothing secret: no key, no program output.
    assert!(!text.contains(&s.key), "{text}");
    assert!(!text.contains(&secret_output), "{text}");
    // And it is in the OpenAPI document.
    let doc = request("GET", &s.url("/openapi.json"), None, None).json();
    assert!(doc["paths"]["/metrics"]["get"].is_object());
    assert!(doc["paths"]["/v1/execute"]["post"]["responses"]["429"].is_object());
}

#[test]
fn a_concurrent_runs_quota_is_429_with_retry_after_while_the_run_goes_on() {
    let s = Server::start_with(
        &[],
        with_config("serve:\n  quotas:\n    tenants:\n      default: {concurrent_runs: 1}\n"),
    );
    let mark = marker("quota");
    let url = s.url("/v1/execute");
    let key = s.key.clone();
    let mut body = sh("sleep 1; echo slow");
    body["args"] = json!([mark]);
    let text = body.to_string();
    let first = std::thread::spawn(move || request("POST", &url, Some(&key), Some(text)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&mark).is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a = s.execute(&sh("echo second"));
    let m = a.error(429, "quota_exceeded");
    assert!(
        m.contains("concurrent_runs") && m.contains("default"),
        "{m}"
    );
    assert_eq!(a.header("retry-after"), Some("1"));
    let first = first.join().unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["stdout"], "slow\n");
    let again = s.execute(&sh("echo again"));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["stdout"], "again\n");
    let (_, m) = scrape(&s);
    assert_eq!(
        sample(
            &m,
            "warden_quota_refusals_total",
            &[("tenant", "default"), ("quota", "concurrent_runs")]
        ),
        1.0
    );
}

#[test]
fn a_runs_per_minute_quota_refuses_the_third_run() {
    let s = Server::start_with(
        &[],
        with_config("serve:\n  quotas:\n    default:\n      runs_per_minute: 2\n"),
    );
    for i in 0..2 {
        let a = s.execute(&sh("true"));
        assert_eq!(a.status, 200, "run {i}: {}", a.body);
    }
    let a = s.execute(&sh("true"));
    let m = a.error(429, "quota_exceeded");
    assert!(
        m.contains("runs_per_minute") && m.contains("default"),
        "{m}"
    );
    let retry: u64 = a
        .header("retry-after")
        .and_then(|r| r.parse().ok())
        .expect("Retry-After");
    assert!((50..=60).contains(&retry), "{retry}");
}

#[test]
fn every_refusal_is_a_ledger_entry_and_the_ledger_verifies() {
    let s = Server::start_with(
        &["--workers", "1", "--queue", "0", "--max-body", "64KiB"],
        with_config("serve:\n  quotas:\n    default: {runs_per_minute: 3}\n"),
    );
    let url = s.url("/v1/execute");
    // 401
    request("POST", &url, None, Some(sh("true").to_string())).error(401, "unauthenticated");
    // 400
    request("POST", &url, Some(&s.key), Some("{\"language\":".into())).error(400, "bad_json");
    // 413
    let (status, _) = raw(
        &s.addr(),
        &format!(
            "POST /v1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}",
            s.key,
            1 << 20
        ),
        b"{",
    );
    assert_eq!(status, 413);
    // 503: the one worker is busy and no one may wait.
    let mark = marker("refusals");
    let key = s.key.clone();
    let mut body = sh("sleep 1");
    body["args"] = json!([mark]);
    let text = body.to_string();
    let slow_url = url.clone();
    let slow = std::thread::spawn(move || request("POST", &slow_url, Some(&key), Some(text)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&mark).is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.execute(&sh("true")).error(503, "overloaded");
    assert_eq!(slow.join().unwrap().status, 200);
    // 429: the 503 did not count against runs_per_minute; the third run
    // does, the fourth is refused.
    assert_eq!(s.execute(&sh("true")).status, 200);
    assert_eq!(s.execute(&sh("true")).status, 200);
    s.execute(&sh("true")).error(429, "quota_exceeded");

    let entries = refusal_entries(&s, 5);
    let codes: Vec<(u64, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["event"]["status"].as_u64().unwrap(),
                e["event"]["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (401, "unauthenticated"),
            (400, "bad_json"),
            (413, "payload_too_large"),
            (503, "overloaded"),
            (429, "quota_exceeded"),
        ],
        "{entries:?}"
    );
    for e in &entries {
        assert_eq!(e["event"]["route"], "/v1/execute", "{e}");
        assert_eq!(e["event"]["method"], "POST", "{e}");
        let text = e.to_string();
        assert!(!text.contains(&s.key), "{text}");
        assert!(!text.contains("wdn_"), "{text}");
    }
    // Unknown before authentication; known after.
    assert!(
        entries[0]["event"].get("principal").is_none(),
        "{}",
        entries[0]
    );
    for e in &entries[1..] {
        assert_eq!(e["event"]["principal"], "dev", "{e}");
        assert_eq!(e["event"]["tenant"], "default", "{e}");
    }
    assert_eq!(entries[4]["event"]["quota"], "runs_per_minute");
    let verify = s.warden(&["audit", "verify"]);
    assert!(verify.status.success(), "audit verify: {verify:?}");
    // And each is counted.
    let (text, m) = scrape(&s);
    for (status, code) in codes {
        let st = status.to_string();
        assert_eq!(
            sample(
                &m,
                "warden_refusals_total",
                &[("status", st.as_str()), ("code", code)]
            ),
            1.0,
            "{status} {code}: {text}"
        );
    }
    assert_eq!(sample(&m, "warden_refusals_unrecorded_total", &[]), 0.0);
}

#[test]
fn a_bad_serve_section_stops_the_service_with_one_line_naming_file_and_line() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("warden.yaml");
    for (yaml, line) in [
        (
            "serve:\n  quotas:\n    tenants:\n      acme: {concurent_runs: 1}\n",
            4,
        ),
        ("serve:\n  quota: {}\n", 2),
        (
            "serve:\n  quotas:\n    default:\n      runs_per_minute: 0\n",
            4,
        ),
    ] {
        std::fs::write(&config, yaml).unwrap();
        let out = Command::new(serve_bin())
            .arg("--state")
            .arg(state.path())
            .args(["--listen", "127.0.0.1:0", "--warden"])
            .arg(warden_bin())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{yaml}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{yaml}: {stderr}");
        let want = format!("{}:{line}:", config.display());
        assert!(
            lines[0].starts_with("warden: ") && lines[0].contains(&want),
            "{yaml}: {stderr}"
        );
    }
}

/// The Python client in clients/python, as the README shows it: an execute,
/// a submission waited for, and a refusal with its code.
#[test]
fn the_python_client_runs_executes_and_submissions() {
    let server = Server::start(&[]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("python3")
        .arg(root.join("clients/python/example.py"))
        .arg(&server.base)
        .arg(&server.key)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("execute: exited 'HELLO\\n' ledger "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("submission: exited 'queued-42\\n' ledger "),
        "{stdout}"
    );
    assert_eq!(lines[2], "refused: 400 unknown_language", "{stdout}");
    let verify = server.warden(&["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
}

/// schemathesis (installed by scripts/setup.sh into target/tools/venv)
/// against the service's own /openapi.json, bounded in examples and with
/// a fixed seed: no answer is a 5xx, and every answer's status, content
/// type, headers and body match the document.
#[test]
fn the_api_survives_a_schemathesis_run_and_matches_its_document() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tool = root.join("target/tools/venv/bin/schemathesis");
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/setup.sh",
        tool.display()
    );
    let server = Server::start(&[]);
    // schemathesis keeps its replay data in .schemathesis/ of its working
    // directory: a scratch one, not the checkout.
    let scratch = tempfile::tempdir().expect("scratch directory");
    let out = Command::new(&tool)
        .current_dir(scratch.path())
        .args(["run", &server.url("/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {}", server.key)])
        .args(["--max-examples", "15", "--seed", "1", "--workers", "1"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
    let verify = server.warden(&["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
}

fn wasm_file(name: &str, bytes: &[u8]) -> Value {
    use base64::Engine as _;
    json!({"name": name, "content": base64::engine::general_purpose::STANDARD.encode(bytes), "encoding": "base64"})
}

/// WebAssembly requests run inside the service (one shared engine, no
/// `warden` child): with the same output, report and ledger entry as a
/// run in a `warden` child (`--wasm-in-child`), secrets leased and
/// redacted, limits kept, the module compiled once and reused.
#[test]
fn wasm_runs_in_the_service_as_in_a_warden_child() {
    let inside = Server::start(&[]);
    let child = Server::start(&["--wasm-in-child"]);
    let env = common::guest("env");
    let body = json!({"language": "wasm", "files": [wasm_file("env.wasm", &env)], "args": ["a b"]});
    let mut seen = Vec::new();
    for s in [&inside, &child] {
        let a = s.execute(&body);
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json();
        let r = &v["report"];
        assert_eq!(r["backend"], "wasm", "{v}");
        assert_eq!(r["status"], "exited", "{v}");
        assert!(v["ledger_index"].is_u64(), "{v}");
        assert!(r["module_digest"].is_string(), "{v}");
        // The guest's argv[0] names the module in the run's directory,
        // which differs from run to run.
        let stdout = v["stdout"].as_str().unwrap_or_default();
        let at = stdout
            .find("/files/")
            .expect("argv[0] in the run's directory");
        seen.push((
            stdout[at..].to_string(),
            v["stderr"].clone(),
            r["exit_code"].clone(),
            r["module_digest"].clone(),
            r["limits"].clone(),
        ));
    }
    assert_eq!(seen[0], seen[1], "in-process and child runs differ");
    assert!(
        seen[0].0.starts_with("/files/./env.wasm\narg:a b\n"),
        "{:?}",
        seen[0]
    );
    // The same module again (now compiled), and another module.
    let again = inside.execute(&body);
    assert!(again.json()["stdout"]
        .as_str()
        .is_some_and(|o| o.ends_with(&seen[0].0)));
    let cat = common::guest("cat");
    let a = inside.execute(&json!({
        "language": "wasm", "files": [wasm_file("cat.wasm", &cat)], "stdin": "through stdin\n",
    }));
    assert_eq!(a.json()["stdout"], "through stdin\n", "{}", a.body);
    // A secret leased to the run, and redacted from what it prints.
    let value = "wasm-topsecret-value-42";
    common::put_secret(
        inside.state.path(),
        &inside.key,
        "db-pass",
        value.as_bytes(),
    );
    let mut leased = body.clone();
    leased["capabilities"] = json!(["secret:db-pass:env"]);
    let a = inside.execute(&leased);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!a.body.contains(value), "{}", a.body);
    let v = a.json();
    assert!(
        v["stdout"]
            .as_str()
            .is_some_and(|o| o.contains("SECRET_DB_PASS=[REDACTED:db-pass]")),
        "{v}"
    );
    assert_eq!(v["report"]["leases"][0]["secret"], "db-pass", "{v}");
    // Limits: a guest that never ends is stopped at its wall time.
    let spin =
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop $l (br $l))))";
    let a = inside.execute(&json!({
        "language": "wasm", "files": [{"name": "spin.wat", "content": spin}],
        "limits": {"wall_time_ms": 300},
    }));
    let v = a.json();
    assert_eq!(v["report"]["status"], "timeout", "{v}");
    // A module that is not one: the run's error, as `warden run` gives it.
    let a = inside.execute(&json!({
        "language": "wasm", "files": [{"name": "bad.wasm", "content": "bm90IGEgbW9kdWxl", "encoding": "base64"}],
    }));
    let v = a.json();
    assert_eq!(v["report"]["status"], "error", "{v}");
    assert_eq!(v["report"]["exit_code"], 126, "{v}");
    assert!(
        v["stderr"]
            .as_str()
            .is_some_and(|e| e.starts_with("warden: error: ")),
        "{v}"
    );
    // Every run is an entry, and the ledger verifies.
    let log = inside.warden(&["audit", "log"]);
    let text = String::from_utf8_lossy(&log.stdout);
    assert!(!text.contains(value), "{text}");
    assert_eq!(text.matches("\"kind\":\"run\"").count(), 6, "{text}");
    let verify = inside.warden(&["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
}

/// A WebAssembly run's `http` requests, in the service and in a `warden`
/// child alike, go where the jail's egress rules let them (names from the
/// hosts file named by WARDEN_EGRESS_HOSTS, never loopback) and are in the
/// report's `connections`. The service, its test server and this client
/// live in a private network namespace.
#[test]
fn wasm_http_requests_in_the_service_go_through_egress_and_are_reported() {
    use std::io::{BufRead, Write};
    common::in_private_net(|| {
        let public = std::net::TcpListener::bind((common::PUBLIC, 0)).unwrap();
        let port = public.local_addr().unwrap().port();
        let lo = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        for (listener, tag) in [(public, "public"), (lo, "loopback")] {
            let hits = hits.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    hits.lock().unwrap().push(tag);
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                    }
                    let mut s = stream;
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    );
                }
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            format!("{} api.example\n127.0.0.1 sneaky.example\n", common::PUBLIC),
        )
        .unwrap();
        let env = [("WARDEN_EGRESS_HOSTS", hosts.as_path())];
        let inside = Server::start_with_env(&[], &env);
        let child = Server::start_with_env(&["--wasm-in-child"], &env);
        let guest = common::guest("hosthttp");
        for s in [&inside, &child] {
            let a = s.execute(&json!({
                "language": "wasm", "files": [wasm_file("hosthttp.wasm", &guest)],
                "args": ["GET", format!("http://api.example:{port}/hello")],
                "capabilities": ["net:http:api.example"],
            }));
            assert_eq!(a.status, 200, "{}", a.body);
            let v = a.json();
            assert_eq!(v["stdout"], "rc=0 status=200 len=5\nhello\n", "{v}");
            assert_eq!(
                v["report"]["connections"],
                json!([{
                    "dest": common::PUBLIC, "port": port, "proto": "tcp", "allowed": true,
                    "name": "api.example", "grant": "net:http:api.example",
                    "bytes_out": 0, "bytes_in": 5,
                }]),
                "{v}"
            );
            for (grant, host) in [
                ("net:http:sneaky.example", "sneaky.example"),
                ("net:http:127.0.0.1", "127.0.0.1"),
            ] {
                let a = s.execute(&json!({
                    "language": "wasm", "files": [wasm_file("hosthttp.wasm", &guest)],
                    "args": ["GET", format!("http://{host}:{port}/")],
                    "capabilities": [grant],
                }));
                let v = a.json();
                assert_eq!(v["stdout"], "rc=1 status=0 len=0\n", "{v}");
                let r = &v["report"];
                assert_eq!(r["status"], "violation", "{v}");
                assert_eq!(r["connections"][0]["allowed"], false, "{v}");
                assert_eq!(r["connections"][0]["dest"], host, "{v}");
                assert!(
                    r["violations"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["kind"] == "net"
                            && x["detail"].as_str().unwrap_or("").contains("loopback")),
                    "{v}"
                );
            }
        }
        assert_eq!(*hits.lock().unwrap(), ["public", "public"]);
    })
}

/// RBAC decides for in-process runs as for the others: `invoke` of
/// `runtime:wasm`, then `secret.read` of each granted secret.
#[test]
fn rbac_refuses_a_secret_to_an_in_process_wasm_run() {
    let rbac = "roles:\n  admin: {}\nbindings:\n  - {principal: dev, tenant: default, roles: [admin]}\nrules:\n  - allow: invoke\n    role: admin\n    resources: [\"runtime:wasm\"]\n  - allow: secret.put\n    role: admin\n  - allow: audit.read\n    role: admin\n";
    let s = Server::start_with(&[], |state| {
        std::fs::write(state.join("rbac.yaml"), rbac).unwrap();
    });
    common::put_secret(s.state.path(), &s.key, "api-token", b"tok-123456789");
    let env = common::guest("env");
    let a = s.execute(&json!({"language": "wasm", "files": [wasm_file("env.wasm", &env)]}));
    assert_eq!(a.status, 200, "{}", a.body);
    let a = s.execute(&json!({
        "language": "wasm", "files": [wasm_file("env.wasm", &env)],
        "capabilities": ["secret:api-token:env"],
    }));
    let m = a.error(403, "forbidden");
    assert!(m.contains("secret.read") && m.contains("api-token"), "{m}");
    let log = s.warden_as(Some(&s.key), &["audit", "log"]);
    let text = String::from_utf8_lossy(&log.stdout);
    assert!(text.contains("\"refused\""), "{text}");
    assert!(!text.contains("tok-123456789"), "{text}");
}
