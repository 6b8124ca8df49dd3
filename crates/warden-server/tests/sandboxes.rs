//! Persistent sandboxes end to end: the real `warden-serve` on a loopback
//! port, driven over HTTP (the harness is a trimmed copy of
//! tests/submissions.rs's: a service can be started again on the same
//! state directory).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
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
    /// `--sandbox-root`: the workspaces.
    root: tempfile::TempDir,
}

fn temp(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("warden-sandboxes-test-{what}-"))
        .tempdir()
        .expect("temp dir")
}

fn fixture(extra: &[&str]) -> Fixture {
    fixture_with(extra, |_| {})
}

/// As [`fixture`]; `prepare` may write into the fresh state first.
fn fixture_with(extra: &[&str], prepare: impl FnOnce(&Path)) -> Fixture {
    let state = temp("state");
    let root = temp("root");
    prepare(state.path());
    let mut args = vec!["--sandbox-root", root.path().to_str().expect("UTF-8 path")];
    args.extend_from_slice(extra);
    let (server, key) = Server::start(state.path(), &args);
    Fixture {
        server,
        key: key.expect("a fresh state prints the dev key"),
        state,
        root,
    }
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["code"], code, "{}", self.text());
        v["message"].as_str().expect("message").to_string()
    }
}

fn request(method: &str, url: &str, key: Option<&str>, body: Option<Vec<u8>>) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut response = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" {
                agent.get(url)
            } else {
                agent.delete(url)
            };
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = if method == "PUT" {
                agent.put(url)
            } else {
                agent.post(url)
            };
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body.unwrap_or_default())
        }
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("read body");
    Answer { status, body }
}

/// A raw HTTP/1.1 GET of `path` (not normalized by a client): status and
/// body.
fn raw_get(base: &str, key: &str, path: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
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

impl Fixture {
    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        self.call_as(&self.key, method, path, body)
    }

    fn call_as(&self, key: &str, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        request(method, &self.server.url(path), Some(key), body)
    }

    fn create(&self, body: &Value) -> String {
        let a = self.call("POST", "/v1/sandboxes", Some(body.to_string().into_bytes()));
        assert_eq!(a.status, 201, "{}", a.text());
        let v = a.json();
        assert_eq!(v["state"], "running", "{v}");
        assert!(
            v["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')),
            "{v}"
        );
        v["id"].as_str().expect("id").to_string()
    }

    fn exec(&self, id: &str, body: &Value) -> Answer {
        self.call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(body.to_string().into_bytes()),
        )
    }

    /// Runs `sh -c script` in `id`; its answer, which must be 200.
    fn sh(&self, id: &str, script: &str) -> Value {
        let a = self.exec(id, &json!({"command": ["sh", "-c", script]}));
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    }

    fn info(&self, id: &str) -> Answer {
        self.call("GET", &format!("/v1/sandboxes/{id}"), None)
    }

    fn warden(&self, args: &[&str]) -> std::process::Output {
        warden(self.state.path(), args)
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.path().join(id)
    }

    fn record(&self, id: &str) -> PathBuf {
        self.state
            .path()
            .join("serve")
            .join("sandboxes")
            .join(format!("{id}.json"))
    }

    /// A principal of a new tenant `other`, and its key.
    fn other_tenant(&self) -> String {
        let added = self.warden(&["tenant", "add", "other"]);
        assert!(added.status.success(), "{added:?}");
        let added = self.warden(&["principal", "add", "eve", "--tenant", "other"]);
        assert!(added.status.success(), "{added:?}");
        String::from_utf8(added.stdout).unwrap().trim().to_string()
    }

    /// The ledger's `sandbox` entries.
    fn sandbox_entries(&self) -> Vec<Value> {
        let log = self.warden(&["audit", "log"]);
        assert!(log.status.success(), "{log:?}");
        String::from_utf8_lossy(&log.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == "sandbox")
            .collect()
    }

    fn verify(&self) {
        let verify = self.warden(&["audit", "verify"]);
        assert!(verify.status.success(), "audit verify: {verify:?}");
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

fn with_config(yaml: &'static str) -> impl FnOnce(&Path) {
    move |state: &Path| std::fs::write(state.join("warden.yaml"), yaml).unwrap()
}

/// Waits until `done` holds, for at most `within`.
fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not after {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn state_persists_between_execs_and_files_round_trip() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(&[]);
    let id = f.create(&json!({"language": "python", "limits": {"wall_time_ms": 20000}}));
    assert_eq!(id.len(), 32, "{id}");
    let dir = f.sandbox_dir(&id);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("workspace")), 0o700);
    assert_eq!(mode(&f.record(&id)), 0o600);
    assert_eq!(mode(f.root.path()), 0o700);

    // State kept between execs; the working directory is /workspace.
    let v = f.sh(&id, "echo 1 > /workspace/a; pwd");
    assert_eq!(v["report"]["status"], "exited", "{v}");
    assert_eq!(v["stdout"], "/workspace\n", "{v}");
    assert!(v["ledger_index"].as_u64().is_some(), "{v}");
    let a = f.exec(&id, &json!({"command": ["cat", "/workspace/a"]}));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["stdout"], "1\n");
    // Code in the sandbox's language, and stdin.
    let a = f.exec(
        &id,
        &json!({"code": "import sys; print(open('a').read().strip(), sys.stdin.read())", "stdin": "in"}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["stdout"], "1 in\n", "{}", a.text());

    // PUT, then the program reads it; the program writes, GET returns it.
    let a = f.call(
        "PUT",
        &format!("/v1/sandboxes/{id}/files/src/in.txt"),
        Some(b"uploaded\x00bytes".to_vec()),
    );
    assert_eq!(a.status, 204, "{}", a.text());
    let v = f.sh(
        &id,
        "od -c src/in.txt | head -1; printf 'from the sandbox' > out.bin",
    );
    assert!(v["stdout"].as_str().unwrap().contains("u   p   l"), "{v}");
    let a = f.call("GET", &format!("/v1/sandboxes/{id}/files/out.bin"), None);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.body, b"from the sandbox");
    let a = f.call("GET", &format!("/v1/sandboxes/{id}/files/src/in.txt"), None);
    assert_eq!(a.body, b"uploaded\x00bytes");
    f.call("GET", &format!("/v1/sandboxes/{id}/files/missing"), None)
        .error(404, "not_found");

    // Traversal, absolute paths and NUL: refused, never the host's bytes.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for path in [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "a%2F..%2F..%2Fx",
        "%2Fetc%2Fpasswd",
        "a%00b",
        "./a",
        "a//b",
    ] {
        let (status, body) = raw_get(
            &f.server.base,
            &f.key,
            &format!("/v1/sandboxes/{id}/files/{path}"),
        );
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
    // A symbolic link the program plants is not followed, for reading or
    // writing (the link's target is outside, on the host).
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    std::fs::write(&target, "host file").unwrap();
    f.sh(
        &id,
        &format!(
            "ln -s /etc/passwd /workspace/p; ln -s {} /workspace/q; ln -s /etc /workspace/etc",
            target.display()
        ),
    );
    for path in ["p", "q", "etc/passwd"] {
        let a = f.call("GET", &format!("/v1/sandboxes/{id}/files/{path}"), None);
        assert!(a.status == 400 || a.status == 404, "{path}: {}", a.text());
        assert!(!a.text().contains("root:") && !a.text().contains(&passwd[..10]));
        assert!(!a.text().contains("host file"), "{path}: {}", a.text());
    }
    for path in ["q", "etc/x"] {
        let a = f.call(
            "PUT",
            &format!("/v1/sandboxes/{id}/files/{path}"),
            Some(b"overwritten".to_vec()),
        );
        assert_eq!(a.status, 400, "{path}: {}", a.text());
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "host file");
    assert!(!Path::new("/etc/x").exists());

    // Its state counts the execs (5 above) and the workspace's bytes.
    let v = f.info(&id).json();
    assert_eq!(v["id"], id.as_str(), "{v}");
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["execs"], 5, "{v}");
    assert!(v["disk_bytes"].as_u64().unwrap() >= 30, "{v}");
    for t in ["created", "expires_at", "last_used"] {
        assert!(v[t].as_str().is_some_and(|s| s.ends_with('Z')), "{t}: {v}");
    }

    // Bad execs: 400 naming the field.
    let m = f
        .exec(&id, &json!({"command": ["true"], "code": "x"}))
        .error(400, "invalid_field");
    assert!(m.contains("command"), "{m}");
    f.exec(&id, &json!({})).error(400, "missing_field");
    f.exec(&id, &json!({"command": []}))
        .error(400, "invalid_field");
    f.exec(&id, &json!({"command": ["true"], "bogus": 1}))
        .error(400, "unknown_field");
    f.exec(&id, &json!({"command": ["true"], "wall_time_ms": 0}))
        .error(400, "invalid_limit");
    f.call(
        "POST",
        "/v1/sandboxes",
        Some(
            json!({"capabilities": ["fs:read:/etc"]})
                .to_string()
                .into_bytes(),
        ),
    )
    .error(400, "invalid_capability");
    f.call(
        "POST",
        "/v1/sandboxes",
        Some(json!({"ttl_s": 0}).to_string().into_bytes()),
    )
    .error(400, "invalid_field");

    // Another tenant's principal: the same 404 as an unknown id.
    let eve = f.other_tenant();
    let unknown = f.info(&"0".repeat(32));
    let m = unknown.error(404, "not_found");
    for (method, path) in [
        ("GET", format!("/v1/sandboxes/{id}")),
        ("POST", format!("/v1/sandboxes/{id}/exec")),
        ("GET", format!("/v1/sandboxes/{id}/files/a")),
        ("PUT", format!("/v1/sandboxes/{id}/files/a")),
        ("POST", format!("/v1/sandboxes/{id}/pause")),
        ("DELETE", format!("/v1/sandboxes/{id}")),
    ] {
        let body = (method != "GET" && method != "DELETE")
            .then(|| json!({"command": ["true"]}).to_string().into_bytes());
        let a = f.call_as(&eve, method, &path, body);
        assert_eq!(a.error(404, "not_found"), m, "{method} {path}");
    }
    assert_eq!(f.info(&id).status, 200);
    f.info("../../identity").error(404, "not_found");

    // DELETE removes everything, read-only directories included.
    f.sh(
        &id,
        "mkdir -p ro/deep && touch ro/deep/f && chmod 0444 ro/deep/f && chmod 0555 ro/deep ro",
    );
    let a = f.call("DELETE", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(a.status, 204, "{}", a.text());
    assert!(!dir.exists(), "{} left", dir.display());
    assert!(!f.record(&id).exists());
    f.info(&id).error(404, "not_found");
    f.call("DELETE", &format!("/v1/sandboxes/{id}"), None)
        .error(404, "not_found");

    let actions: Vec<String> = f
        .sandbox_entries()
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(actions, ["create", "delete"], "{actions:?}");
    f.verify();
}

#[test]
fn pause_refuses_execs_until_resume() {
    let f = fixture(&[]);
    let id = f.create(&json!({}));
    f.sh(&id, "echo kept > k");
    let a = f.call("POST", &format!("/v1/sandboxes/{id}/pause"), None);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["state"], "paused");
    assert_eq!(f.info(&id).json()["state"], "paused");
    f.exec(&id, &json!({"command": ["true"]}))
        .error(409, "paused");
    let a = f.call("POST", &format!("/v1/sandboxes/{id}/resume"), None);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["state"], "running");
    let v = f.sh(&id, "cat k");
    assert_eq!(v["stdout"], "kept\n", "{v}");
    let actions: Vec<String> = f
        .sandbox_entries()
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(actions, ["create", "pause", "resume"], "{actions:?}");
    f.verify();
}

#[test]
fn expired_and_idle_sandboxes_are_reaped() {
    let f = fixture(&[]);
    let ttl = f.create(&json!({"ttl_s": 2}));
    let idle = f.create(&json!({"idle_timeout_s": 1, "idle_action": "destroy"}));
    let paused = f.create(&json!({"idle_timeout_s": 1}));
    f.sh(&ttl, "echo x > x");
    for id in [&ttl, &idle] {
        let dir = f.sandbox_dir(id);
        eventually(Duration::from_secs(15), "reaped", || {
            f.info(id).status == 404 && !dir.exists() && !f.record(id).exists()
        });
    }
    eventually(Duration::from_secs(15), "idle pause", || {
        f.info(&paused).json()["state"] == "paused"
    });
    f.exec(&paused, &json!({"command": ["true"]}))
        .error(409, "paused");
    assert!(f.sandbox_dir(&paused).join("workspace").is_dir());
    let reaped: Vec<(String, String, String)> = f
        .sandbox_entries()
        .iter()
        .filter(|e| e["event"]["action"] == "reap")
        .map(|e| {
            let s = |k: &str| e["event"][k].as_str().unwrap_or("").to_string();
            (s("sandbox"), s("reason"), s("outcome"))
        })
        .collect();
    for want in [
        (ttl.clone(), "expired", "destroyed"),
        (idle.clone(), "idle", "destroyed"),
        (paused.clone(), "idle", "paused"),
    ] {
        assert!(
            reaped
                .iter()
                .any(|(i, r, o)| *i == want.0 && r == want.1 && o == want.2),
            "{want:?} not in {reaped:?}"
        );
    }
    f.verify();
}

#[test]
fn the_active_sandboxes_quota_is_429_and_the_gauge_tracks_them() {
    let f = fixture_with(
        &[],
        with_config("serve:\n  quotas:\n    default: {active_sandboxes: 2}\n"),
    );
    let gauge = || {
        let a = request("GET", &f.server.url("/metrics"), None, None);
        a.text()
            .lines()
            .find_map(|l| l.strip_prefix("warden_active_sandboxes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("warden_active_sandboxes")
    };
    assert_eq!(gauge(), 0.0);
    let a = f.create(&json!({}));
    let _b = f.create(&json!({}));
    assert_eq!(gauge(), 2.0);
    let m = f
        .call("POST", "/v1/sandboxes", Some(b"{}".to_vec()))
        .error(429, "quota_exceeded");
    assert!(m.contains("active_sandboxes"), "{m}");
    // Another tenant has its own count.
    let eve = f.other_tenant();
    let theirs = f.call_as(&eve, "POST", "/v1/sandboxes", Some(b"{}".to_vec()));
    assert_eq!(theirs.status, 201, "{}", theirs.text());
    assert_eq!(gauge(), 3.0);
    assert_eq!(
        f.call("DELETE", &format!("/v1/sandboxes/{a}"), None).status,
        204
    );
    assert_eq!(gauge(), 2.0);
    f.create(&json!({}));
    f.verify();
}

#[test]
fn a_sandbox_and_its_files_survive_a_restart() {
    let state = temp("state");
    let root = temp("root");
    let args = ["--sandbox-root", root.path().to_str().expect("UTF-8 path")];
    let (mut first, key) = Server::start(state.path(), &args);
    let key = key.expect("dev key");
    let url = |s: &Server, p: &str| s.url(p);
    let a = request(
        "POST",
        &url(&first, "/v1/sandboxes"),
        Some(&key),
        Some(json!({"language": "sh"}).to_string().into_bytes()),
    );
    assert_eq!(a.status, 201, "{}", a.text());
    let id = a.json()["id"].as_str().unwrap().to_string();
    let a = request(
        "PUT",
        &url(&first, &format!("/v1/sandboxes/{id}/files/note")),
        Some(&key),
        Some(b"before the restart".to_vec()),
    );
    assert_eq!(a.status, 204, "{}", a.text());
    let a = request(
        "POST",
        &url(&first, &format!("/v1/sandboxes/{id}/exec")),
        Some(&key),
        Some(json!({"code": "echo made > made"}).to_string().into_bytes()),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    first.terminate();
    assert!(first.wait(Duration::from_secs(30)).success());
    drop(first);

    let (second, again) = Server::start(state.path(), &args);
    assert!(again.is_none(), "the state is not fresh");
    let a = request(
        "GET",
        &url(&second, &format!("/v1/sandboxes/{id}")),
        Some(&key),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["execs"], 1, "{}", a.text());
    let a = request(
        "POST",
        &url(&second, &format!("/v1/sandboxes/{id}/exec")),
        Some(&key),
        Some(json!({"code": "cat note made"}).to_string().into_bytes()),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json()["stdout"],
        "before the restartmade\n",
        "{}",
        a.text()
    );
    let a = request(
        "GET",
        &url(&second, &format!("/v1/sandboxes/{id}/files/made")),
        Some(&key),
        None,
    );
    assert_eq!(a.body, b"made\n");
    let verify = warden(state.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "audit verify: {verify:?}");
}

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(marker) && !text.contains("sandboxes-") {
                found.push(text);
            }
        }
    }
    found
}

#[test]
fn no_process_outlives_its_exec() {
    let f = fixture(&[]);
    let id = f.create(&json!({}));
    let started = Instant::now();
    let v = f.sh(&id, "sleep 41.7 & echo started");
    assert_eq!(v["stdout"], "started\n", "{v}");
    assert!(started.elapsed() < Duration::from_secs(20), "{v}");
    eventually(
        Duration::from_secs(10),
        "the background sleep ended",
        || processes_with("sleep 41.7").is_empty(),
    );
}

#[test]
fn rbac_gates_code_by_its_language_and_commands_as_runtime_sandbox() {
    let rbac = "roles:\n  admin: {}\nbindings:\n  - {principal: dev, tenant: default, roles: [admin]}\nrules:\n  - allow: invoke\n    role: admin\n    resources: [\"runtime:python\"]\n";
    let f = fixture_with(&[], |state| {
        std::fs::write(state.join("rbac.yaml"), rbac).unwrap();
    });
    let id = f.create(&json!({"language": "python"}));
    let m = f
        .exec(&id, &json!({"command": ["true"]}))
        .error(403, "forbidden");
    assert!(m.contains("runtime:sandbox"), "{m}");
    let m = f
        .exec(&id, &json!({"code": "echo no", "language": "sh"}))
        .error(403, "forbidden");
    assert!(m.contains("runtime:sh"), "{m}");
    let a = f.exec(&id, &json!({"code": "print(6*7)"}));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["stdout"], "42\n");
}

#[test]
fn pause_waits_for_an_exec_in_flight_and_delete_stops_one() {
    let f = Arc::new(fixture(&[]));
    let id = f.create(&json!({}));
    // Pause while an exec runs: the exec finishes, then pause answers.
    let (g, i) = (f.clone(), id.clone());
    let running = std::thread::spawn(move || g.sh(&i, "sleep 2; echo done"));
    std::thread::sleep(Duration::from_millis(700));
    let a = f.call("POST", &format!("/v1/sandboxes/{id}/pause"), None);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        running.is_finished(),
        "pause answered before the exec ended"
    );
    let v = running.join().unwrap();
    assert_eq!(v["stdout"], "done\n", "{v}");
    f.exec(&id, &json!({"command": ["true"]}))
        .error(409, "paused");
    assert_eq!(
        f.call("POST", &format!("/v1/sandboxes/{id}/resume"), None)
            .status,
        200
    );
    // Delete while an exec runs: it is stopped, the workspace removed.
    let (g, i) = (f.clone(), id.clone());
    let started = Instant::now();
    let running = std::thread::spawn(move || {
        g.exec(
            &i,
            &json!({"command": ["sh", "-c", "while :; do echo x >> log; sleep 0.1; done"]}),
        )
    });
    std::thread::sleep(Duration::from_millis(1000));
    let a = f.call("DELETE", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(a.status, 204, "{}", a.text());
    let a = running.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(9), "not stopped");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_ne!(a.json()["report"]["status"], "exited", "{}", a.text());
    assert!(!f.sandbox_dir(&id).exists());
    f.verify();
}

#[test]
fn the_default_root_is_beside_the_state_and_made_only_when_needed() {
    let state = temp("state");
    let mut name = state.path().as_os_str().to_os_string();
    name.push("-sandboxes");
    let root = PathBuf::from(name);
    let (server, key) = Server::start(state.path(), &[]);
    let key = key.expect("dev key");
    assert!(!root.exists(), "{} made before any sandbox", root.display());
    let a = request(
        "POST",
        &server.url("/v1/sandboxes"),
        Some(&key),
        Some(b"{}".to_vec()),
    );
    assert_eq!(a.status, 201, "{}", a.text());
    let id = a.json()["id"].as_str().unwrap().to_string();
    let made = root.join(&id).join("workspace").is_dir();
    let a = request(
        "DELETE",
        &server.url(&format!("/v1/sandboxes/{id}")),
        Some(&key),
        None,
    );
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&root);
    assert!(made, "no workspace under {}", root.display());
    assert_eq!(a.status, 204, "{}", a.text());
    assert!(left.is_empty(), "{left:?}");
    // Inside the state directory: refused at start.
    let inside = state.path().join("ws");
    let out = Command::new(serve_bin())
        .arg("--state")
        .arg(state.path())
        .arg("--sandbox-root")
        .arg(&inside)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run warden-serve");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inside the state directory"),
        "{out:?}"
    );
}
