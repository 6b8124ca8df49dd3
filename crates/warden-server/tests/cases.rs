//! `POST /v1/execute` with `test_cases` and with `processor`, end to end:
//! the real `warden-serve` on a free loopback port with a temporary state
//! directory, driven over HTTP. Each case is its own run (its own jail or
//! WebAssembly instance) with its own verdict and ledger entry; a
//! processor registered with `warden processor add` runs as `warden
//! invoke` runs it, under RBAC `invoke` of its name.

mod common;

use std::io::{BufRead, BufReader};
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
    key: String,
    state: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let warden = warden_bin();
        let state = tempfile::Builder::new()
            .prefix("warden-cases-test-")
            .tempdir()
            .expect("temp state");
        let mut child = Command::new(serve_bin())
            .arg("--state")
            .arg(state.path())
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

    /// `warden --state STATE ARGS` (as the operator, or the principal of
    /// `key`), which must succeed; its stdout.
    fn warden_ok(&self, key: Option<&str>, args: &[&str]) -> String {
        let out = self.warden(key, args);
        assert!(
            out.status.success(),
            "warden {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn warden(&self, key: Option<&str>, args: &[&str]) -> std::process::Output {
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

    fn execute(&self, body: &Value) -> Answer {
        self.execute_as(&self.key, body)
    }

    fn execute_as(&self, key: &str, body: &Value) -> Answer {
        self.call("POST", "/v1/execute", key, Some(body))
    }

    fn call(&self, method: &str, path: &str, key: &str, body: Option<&Value>) -> Answer {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {key}");
        let sent = match body {
            Some(body) if method == "POST" => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .header("Authorization", &auth)
                .send(body.to_string()),
            _ => agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = sent.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .expect("read body");
        Answer { status, body }
    }

    /// The ledger's entries, as `warden audit log` prints them.
    fn entries(&self) -> Vec<Value> {
        self.warden_ok(None, &["audit", "log"])
            .lines()
            .map(|l| serde_json::from_str(l).expect("entries are JSON"))
            .collect()
    }

    fn verify_ledger(&self) {
        let out = self.warden(None, &["audit", "verify"]);
        assert!(
            out.status.success(),
            "audit verify: {out:?}\n{:?}",
            self.log.lock().unwrap()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
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
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The 200 answer's body.
    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        self.json()
    }

    /// Asserts an error answer: status and code; its message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["code"], code, "{}", self.body);
        v["message"].as_str().expect("message").to_string()
    }
}

fn verdicts(v: &Value) -> Vec<String> {
    v["test_cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no test_cases: {v}"))
        .iter()
        .map(|c| c["verdict"].as_str().expect("verdict").to_string())
        .collect()
}

/// Each case's ledger index: all there, all different, each the index of
/// a `run` entry of the ledger made by the caller's principal.
fn distinct_run_entries(s: &Server, v: &Value) -> Vec<u64> {
    let indexes: Vec<u64> = v["test_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let i = c["ledger_index"].as_u64().unwrap_or_else(|| panic!("{c}"));
            assert_eq!(c["report"]["audit"]["index"].as_u64(), Some(i), "{c}");
            i
        })
        .collect();
    let mut unique = indexes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), indexes.len(), "{indexes:?}");
    let entries = s.entries();
    for i in &indexes {
        let e = entries
            .iter()
            .find(|e| e["index"].as_u64() == Some(*i))
            .unwrap_or_else(|| panic!("no entry {i}"));
        assert_eq!(e["kind"], "run", "{e}");
        assert_eq!(e["event"]["principal"], "dev", "{e}");
    }
    indexes
}

const JUDGED: &str = r#"read x
case "$x" in
  sleep) sleep 5 ;;
  flood) yes flood ;;
  fail) echo partial; exit 3 ;;
  fresh) if [ -e /tmp/mark ]; then echo seen; else : > /tmp/mark; echo fresh; fi ;;
  *) echo $((x * 2)) ;;
esac
"#;

#[test]
fn each_test_case_runs_in_its_own_jail_with_its_verdict_and_ledger_entry() {
    let s = Server::start(&[]);
    let before = s.entries().len();
    let started = Instant::now();
    let v = s
        .execute(&json!({
            "language": "sh",
            "files": [{"name": "judge.sh", "content": JUDGED}],
            "limits": {"wall_time_ms": 1000, "output_bytes": 4096},
            "test_cases": [
                {"name": "doubles", "stdin": "21\n", "expected_stdout": "42\n"},
                // Trailing whitespace does not count, on either side.
                {"stdin": "5", "expected_stdout": "10  \n\n"},
                {"name": "wrong", "stdin": "1\n", "expected_stdout": "3\n"},
                // Leading whitespace does.
                {"stdin": "2\n", "expected_stdout": " 4\n"},
                {"name": "exit 3", "stdin": "fail\n", "expected_stdout": "partial\n"},
                {"name": "sleeps", "stdin": "sleep\n", "expected_stdout": ""},
                {"name": "floods", "stdin": "flood\n", "expected_stdout": "flood\n"},
                // A fresh jail each: what one case leaves in /tmp, the next
                // does not see.
                {"stdin": "fresh\n", "expected_stdout": "fresh\n"},
                {"stdin": "fresh\n", "expected_stdout": "fresh\n"},
            ],
        }))
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        verdicts(&v),
        [
            "passed",
            "passed",
            "wrong_answer",
            "wrong_answer",
            "runtime_error",
            "time_limit",
            "output_limit",
            "passed",
            "passed"
        ],
        "{v}"
    );
    assert_eq!(v["verdict"], "wrong_answer", "{v}");
    assert_eq!(
        (v["passed"].as_u64(), v["total"].as_u64()),
        (Some(4), Some(9))
    );
    let cases = v["test_cases"].as_array().unwrap();
    assert_eq!(cases[0]["name"], "doubles");
    assert!(cases[1].get("name").is_none(), "{}", cases[1]);
    assert_eq!(cases[0]["stdout"], "42\n");
    assert_eq!(cases[0]["exit_code"], 0);
    assert!(cases[0]["time_ms"].is_u64(), "{}", cases[0]);
    assert_eq!(cases[2]["stdout"], "2\n");
    assert_eq!(cases[4]["exit_code"], 3);
    assert_eq!(cases[4]["stdout"], "partial\n");
    assert_eq!(cases[5]["report"]["status"], "timeout");
    assert_eq!(cases[5]["report"]["limits"]["wall_time_ms"], 1000);
    assert_eq!(cases[6]["report"]["status"], "output_limit");
    assert!(cases[6]["stdout"].as_str().unwrap().len() <= 4096);
    for c in cases {
        assert_eq!(c["report"]["backend"], "jail", "{c}");
    }
    // Nine runs, nine entries of their own, and the ledger verifies.
    let indexes = distinct_run_entries(&s, &v);
    assert_eq!(indexes.len(), 9);
    assert_eq!(s.entries().len(), before + 9);
    s.verify_ledger();
}

#[test]
fn a_program_over_its_memory_is_a_memory_limit_verdict() {
    let s = Server::start(&[]);
    let bomb = "import sys\nn = int(sys.stdin.read() or 0)\na = []\nfor _ in range(n):\n    a.append(b'\\x01' * (1 << 20))\nprint(len(a))\n";
    let v = s
        .execute(&json!({
            "language": "python",
            "files": [{"name": "m.py", "content": bomb}],
            "limits": {"memory_bytes": 64 << 20, "wall_time_ms": 20000},
            "test_cases": [
                {"stdin": "4", "expected_stdout": "4"},
                {"stdin": "1000", "expected_stdout": "1000"},
            ],
        }))
        .ok();
    assert_eq!(verdicts(&v), ["passed", "memory_limit"], "{v}");
    assert_eq!(v["verdict"], "memory_limit");
    assert_eq!(v["test_cases"][1]["report"]["status"], "memory_limit");
    distinct_run_entries(&s, &v);
}

#[test]
fn test_cases_are_bounded_and_checked_before_anything_runs() {
    let s = Server::start(&[]);
    let before = s.entries().len();
    let case = json!({"stdin": "1", "expected_stdout": "2"});
    let body = |n: usize| {
        json!({
            "language": "sh",
            "files": [{"name": "m.sh", "content": "echo 2"}],
            "test_cases": vec![case.clone(); n],
        })
    };
    let m = s.execute(&body(65)).error(400, "invalid_field");
    assert_eq!(m, "test_cases: 65 test cases; at most 64");
    s.execute(&body(0)).error(400, "invalid_field");
    let mut with_stdin = body(1);
    with_stdin["stdin"] = json!("x");
    let m = s.execute(&with_stdin).error(400, "invalid_field");
    assert!(m.starts_with("stdin:"), "{m}");
    let mut too_long = body(64);
    too_long["limits"] = json!({"wall_time_ms": 10000});
    let m = s.execute(&too_long).error(400, "invalid_limit");
    assert!(m.contains("64 test cases"), "{m}");
    let m = s
        .execute(
            &json!({"language": "sh", "files": [{"name": "m.sh", "content": ""}],
            "test_cases": [{"stdin": "1", "expected": "2"}]}),
        )
        .error(400, "unknown_field");
    assert!(m.contains("test_cases[0].expected"), "{m}");
    // Not streamed.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut streamed = agent
        .post(format!("{}/v1/execute", s.base))
        .header("Authorization", &format!("Bearer {}", s.key))
        .header("Accept", "text/event-stream")
        .send(body(1).to_string())
        .unwrap();
    assert_eq!(streamed.status().as_u16(), 400);
    let text = streamed.body_mut().read_to_string().unwrap();
    assert!(text.contains("not streamed"), "{text}");
    // Nothing ran: the ledger holds the refusals (400), no run.
    std::thread::sleep(Duration::from_millis(300));
    let entries = s.entries();
    let new = &entries[before..];
    assert!(new.iter().all(|e| e["kind"] == "refusal"), "{new:?}");
    assert_eq!(new.len(), 6, "{new:?}");
    // 64 is the most, and runs.
    let v = s.execute(&body(64)).ok();
    assert_eq!(v["passed"], 64, "{v}");
    assert_eq!(v["test_cases"][0]["report"]["limits"]["wall_time_ms"], 4687);
    assert_eq!(distinct_run_entries(&s, &v).len(), 64);
    s.verify_ledger();
}

fn wasm_file(name: &str, bytes: &[u8]) -> Value {
    use base64::Engine as _;
    json!({"name": name, "content": base64::engine::general_purpose::STANDARD.encode(bytes), "encoding": "base64"})
}

/// WebAssembly cases: in the service (a fresh instance of the module
/// compiled once, per case) and in a `warden` child each, alike.
#[test]
fn wasm_test_cases_run_each_in_a_fresh_instance() {
    let cat = common::guest("cat");
    let body = json!({
        "language": "wasm",
        "files": [wasm_file("cat.wasm", &cat)],
        "test_cases": [
            {"stdin": "one\n", "expected_stdout": "one"},
            {"stdin": "two", "expected_stdout": "two\n"},
            {"stdin": "three", "expected_stdout": "four"},
        ],
    });
    let spin =
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop $l (br $l))))";
    let spinning = json!({
        "language": "wasm",
        "files": [{"name": "spin.wat", "content": spin}],
        "limits": {"wall_time_ms": 200},
        "test_cases": [{"expected_stdout": ""}],
    });
    for extra in [&[][..], &["--wasm-in-child"][..]] {
        let s = Server::start(extra);
        let v = s.execute(&body).ok();
        assert_eq!(
            verdicts(&v),
            ["passed", "passed", "wrong_answer"],
            "{extra:?}: {v}"
        );
        assert_eq!(v["test_cases"][2]["stdout"], "three");
        for c in v["test_cases"].as_array().unwrap() {
            assert_eq!(c["report"]["backend"], "wasm", "{c}");
        }
        distinct_run_entries(&s, &v);
        let v = s.execute(&spinning).ok();
        assert_eq!(verdicts(&v), ["time_limit"], "{extra:?}: {v}");
        s.verify_ledger();
    }
}

/// A processor directory: `processor.yaml` and its files.
fn processor_dir(root: &Path, name: &str, manifest: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("processor.yaml"), manifest).unwrap();
    for (path, content) in files {
        std::fs::write(dir.join(path), content).unwrap();
    }
    dir
}

const UPPER: &str = "import sys, time\ntext = sys.stdin.read()\nif text == 'sleep':\n    time.sleep(5)\nprint(text.upper(), end='')\nprint('|', ' '.join(sys.argv[1:]), sep='', end='')\n";

/// Signs `dir` with a new key that the trust store then trusts for
/// processors, and adds it to the registry of the default tenant.
fn sign_and_add(s: &Server, dir: &Path) {
    let keys = s.warden(None, &["key", "list"]);
    if !String::from_utf8_lossy(&keys.stdout).contains("rel") {
        s.warden_ok(None, &["key", "new", "rel"]);
        let pem = s.warden_ok(None, &["key", "export", "rel"]);
        let pem_path = dir.with_extension("pem");
        std::fs::write(&pem_path, pem).unwrap();
        s.warden_ok(
            None,
            &[
                "trust",
                "add",
                &pem_path.display().to_string(),
                "--types",
                "processor",
            ],
        );
    }
    let d = dir.display().to_string();
    s.warden_ok(None, &["sign", "--key", "rel", "--type", "processor", &d]);
    let added = s.warden_ok(Some(&s.key), &["processor", "add", &d]);
    assert!(added.contains("signed by sha256:"), "{added}");
}

#[test]
fn a_registered_processor_runs_as_warden_invoke_runs_it() {
    let s = Server::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let upper = processor_dir(
        root.path(),
        "upper",
        "name: upper\nversion: 1.2.0\nkind: script\nlanguage: python\nentry: main.py\ncapabilities: []\nlimits:\n  memory: 256MiB\n",
        &[("main.py", UPPER)],
    );
    sign_and_add(&s, &upper);
    let clocky = processor_dir(
        root.path(),
        "clocky",
        "name: clocky\nversion: 0.1.0\nkind: script\nlanguage: sh\nentry: main.sh\ncapabilities: [clock:read]\n",
        &[("main.sh", "date +%Y >/dev/null && echo tick\n")],
    );
    sign_and_add(&s, &clocky);

    let v = s
        .execute(&json!({"processor": "upper@1.2.0", "stdin": "hello", "args": ["a", "b"]}))
        .ok();
    assert_eq!(v["stdout"], "HELLO|a b", "{v}");
    let r = &v["report"];
    assert_eq!(r["status"], "exited", "{v}");
    assert_eq!(r["processor"]["name"], "upper", "{v}");
    assert_eq!(r["processor"]["version"], "1.2.0", "{v}");
    assert!(
        r["processor"]["signer"]
            .as_str()
            .is_some_and(|k| k.starts_with("sha256:")),
        "{v}"
    );
    // The request's limits are the most it gets; its own when smaller.
    assert_eq!(r["limits"]["memory_bytes"], 256 << 20, "{v}");
    assert_eq!(r["limits"]["wall_time_ms"], 10000, "{v}");
    let index = v["ledger_index"].as_u64().expect("ledger_index");
    let entries = s.entries();
    let entry = entries
        .iter()
        .find(|e| e["index"].as_u64() == Some(index))
        .unwrap();
    assert_eq!(entry["kind"], "run", "{entry}");
    assert_eq!(entry["event"]["principal"], "dev", "{entry}");
    assert!(entry.to_string().contains("upper"), "{entry}");
    // By name alone: its highest version.
    let v = s.execute(&json!({"processor": "upper", "stdin": "x"})).ok();
    assert_eq!(v["report"]["processor"]["version"], "1.2.0", "{v}");
    // A wall-time limit of the request stops it.
    let v = s
        .execute(&json!({"processor": "upper@1.2.0", "stdin": "sleep",
            "limits": {"wall_time_ms": 300, "memory_bytes": 128 << 20}}))
        .ok();
    assert_eq!(v["report"]["status"], "timeout", "{v}");
    assert_eq!(v["report"]["limits"]["wall_time_ms"], 300, "{v}");
    assert_eq!(v["report"]["limits"]["memory_bytes"], 128 << 20, "{v}");
    // With test cases: each its own `warden invoke`.
    let v = s
        .execute(&json!({"processor": "upper@1.2.0", "test_cases": [
            {"stdin": "abc", "expected_stdout": "ABC|"},
            {"stdin": "abc", "expected_stdout": "abc|"},
        ]}))
        .ok();
    assert_eq!(verdicts(&v), ["passed", "wrong_answer"], "{v}");
    assert_eq!(v["test_cases"][0]["report"]["processor"]["name"], "upper");
    distinct_run_entries(&s, &v);
    // Capabilities only narrow what it requests: one it requests that
    // they do not cover refuses it (its run entry says why).
    let v = s.execute(&json!({"processor": "clocky@0.1.0"})).ok();
    assert_eq!(v["stdout"], "tick\n", "{v}");
    let m = s
        .execute(&json!({"processor": "clocky@0.1.0", "capabilities": ["net:http:example.com"]}))
        .error(403, "forbidden");
    assert!(m.contains("clock:read") && m.contains("ceiling"), "{m}");
    let v = s
        .execute(&json!({"processor": "clocky@0.1.0", "capabilities": ["clock:read"]}))
        .ok();
    assert_eq!(v["stdout"], "tick\n", "{v}");
    // One of language and processor; files go with a language only.
    let m = s
        .execute(&json!({"processor": "upper@1.2.0", "language": "sh", "files": []}))
        .error(400, "invalid_field");
    assert!(m.contains("language and processor"), "{m}");
    s.execute(&json!({"stdin": "x"}))
        .error(400, "missing_field");
    let m = s
        .execute(&json!({"processor": "upper@1.2.0", "files": [{"name": "a", "content": ""}]}))
        .error(400, "invalid_field");
    assert!(m.starts_with("files:"), "{m}");
    let m = s
        .execute(&json!({"processor": "nothere@1.0.0"}))
        .error(400, "unknown_processor");
    assert!(
        m.contains("nothere@1.0.0") && m.contains("tenant default"),
        "{m}"
    );
    let m = s
        .execute(&json!({"processor": "upper@one"}))
        .error(400, "invalid_field");
    assert!(m.starts_with("processor:"), "{m}");
    s.execute(&json!({"processor": "--policy=/x"}))
        .error(400, "invalid_field");
    // The registry is the tenant's: another tenant's principal has none.
    s.warden_ok(None, &["tenant", "add", "other"]);
    let eve = s.warden_ok(None, &["principal", "add", "eve", "--tenant", "other"]);
    let m = s
        .execute_as(eve.trim(), &json!({"processor": "upper@1.2.0"}))
        .error(400, "unknown_processor");
    assert!(m.contains("tenant other"), "{m}");
    s.verify_ledger();
}

#[test]
fn rbac_refuses_a_processor_the_principal_may_not_invoke() {
    let s = Server::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let upper = processor_dir(
        root.path(),
        "upper",
        "name: upper\nversion: 1.2.0\nkind: script\nlanguage: python\nentry: main.py\ncapabilities: []\ntags: [text]\n",
        &[("main.py", UPPER)],
    );
    sign_and_add(&s, &upper);
    let grader = s
        .warden_ok(
            None,
            &[
                "principal",
                "add",
                "grader",
                "--tenant",
                "default",
                "--role",
                "judge",
            ],
        )
        .trim()
        .to_string();
    let rbac = "roles:\n  admin: {}\n  judge: {}\nbindings:\n  - {principal: dev, tenant: default, roles: [admin]}\n  - {principal: grader, tenant: default, roles: [judge]}\nrules:\n  - allow: invoke\n    role: admin\n  - allow: invoke\n    role: judge\n    resources: [\"runtime:sh\"]\n  - allow: audit.read\n    role: admin\n";
    std::fs::write(s.state.path().join("rbac.yaml"), rbac).unwrap();
    let body = json!({"processor": "upper@1.2.0", "stdin": "hi"});
    let m = s.execute_as(&grader, &body).error(403, "forbidden");
    assert!(m.contains("invoke") && m.contains("upper"), "{m}");
    let mut cases = json!({"processor": "upper@1.2.0", "test_cases": [{"stdin": "a", "expected_stdout": "A|"}]});
    s.execute_as(&grader, &cases).error(403, "forbidden");
    // What the file allows runs: the judge its runtime, the admin the processor.
    let v = s
        .execute_as(
            &grader,
            &json!({"language": "sh", "files": [{"name": "m", "content": "echo ok"}]}),
        )
        .ok();
    assert_eq!(v["stdout"], "ok\n");
    let v = s.execute(&body).ok();
    assert_eq!(v["stdout"], "HI|", "{v}");
    cases["test_cases"][0]["stdin"] = json!("b");
    let v = s.execute(&cases).ok();
    assert_eq!(verdicts(&v), ["wrong_answer"], "{v}");
    // The denials are ledger entries, and nothing of grader's ran.
    let out = s.warden_ok(Some(&s.key), &["audit", "log"]);
    let entries: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let denials: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "authz" && e["event"]["action"] == "deny")
        .collect();
    assert_eq!(denials.len(), 2, "{denials:?}");
    assert!(
        denials
            .iter()
            .all(|d| d["event"]["resource"]["name"] == "upper"
                && d["event"]["principal"] == "grader"),
        "{denials:?}"
    );
    assert!(
        !entries.iter().any(|e| e["kind"] == "run"
            && e["event"]["principal"] == "grader"
            && e.to_string().contains("upper")),
        "{out}"
    );
    let verify = s.warden(Some(&s.key), &["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
}

/// A submission takes test cases and a processor as execute does: its
/// result is execute's answer.
#[test]
fn a_submission_with_test_cases_has_their_verdicts_as_its_result() {
    let s = Server::start(&[]);
    let body = json!({
        "language": "sh",
        "files": [{"name": "m.sh", "content": "read x; echo $((x + 1))"}],
        "test_cases": [
            {"stdin": "1", "expected_stdout": "2"},
            {"stdin": "1", "expected_stdout": "3"},
        ],
    });
    let a = s.call("POST", "/v1/submissions", &s.key, Some(&body));
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let v = s
            .call("GET", &format!("/v1/submissions/{id}"), &s.key, None)
            .ok();
        if v["status"] == "done" || v["status"] == "failed" {
            break v;
        }
        assert!(Instant::now() < deadline, "still {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["status"], "done", "{done}");
    let result = &done["result"];
    assert_eq!(verdicts(result), ["passed", "wrong_answer"], "{done}");
    assert_eq!(
        (result["passed"].as_u64(), result["total"].as_u64()),
        (Some(1), Some(2))
    );
    distinct_run_entries(&s, result);
    // An unknown processor is refused when submitted, as execute refuses it.
    let a = s.call(
        "POST",
        "/v1/submissions",
        &s.key,
        Some(&json!({"processor": "nothere@1.0.0"})),
    );
    a.error(400, "unknown_processor");
    s.verify_ledger();
}
