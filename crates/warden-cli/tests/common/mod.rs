//! Helpers shared by the integration suites: temporary directories, a
//! builder that runs the real `warden` binary with a deadline, report
//! accessors and host-side probes (processes, cgroups).
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const MIB: u64 = 1 << 20;

/// Path of the `warden` binary cargo built for this test.
pub fn warden_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A Rust guest (wasm32-wasip1), built once per test process by
/// tests-guests/build.sh.
pub fn rust_guest(name: &str) -> String {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out = Command::new("sh")
            .arg(repo().join("tests-guests/build.sh"))
            .output()
            .expect("run tests-guests/build.sh");
        assert!(
            out.status.success(),
            "tests-guests/build.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    });
    let path = dir.join(format!("wasm32-wasip1/release/{name}.wasm"));
    assert!(path.is_file(), "guest {} was not built", path.display());
    path.display().to_string()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A string no other test (or earlier run) uses: for marker arguments and names.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("warden-it-{tag}-{}-{n}-{nanos}", std::process::id())
}

/// A temporary directory, removed on drop. Layout: `root/` holds the
/// report and policy files, `root/work/` is the default working directory.
pub struct TempDir {
    pub root: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let root = std::env::temp_dir().join(unique(tag));
        fs::create_dir_all(root.join("work")).expect("create temp dir");
        // Canonical, so that paths compared against the report match.
        let root = fs::canonicalize(&root).expect("canonicalize temp dir");
        TempDir { root }
    }

    /// The default working directory of runs.
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// `work/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.work().join(rel)
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).expect("mkdir");
        p
    }

    /// Writes `work/rel` (creating parents).
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir parent");
        }
        fs::write(&p, content).expect("write file");
        p
    }

    /// Writes `root/rel` (outside the working directory).
    pub fn write_root(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.root.join(rel);
        fs::write(&p, content).expect("write file");
        p
    }

    /// Makes the whole tree usable by any user (for unprivileged runs).
    pub fn open_to_everyone(&self) {
        for dir in [self.root.clone(), self.work()] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        }
    }

    /// A copy of the warden binary inside this directory, mode 0755, so that
    /// an unprivileged user can run it whatever the permissions of the
    /// build directory.
    pub fn private_warden(&self) -> PathBuf {
        let dst = self.root.join("warden");
        // A hard link where it can be: a copy's write descriptor, inherited
        // by a child that another test thread forks meanwhile, would make
        // its exec fail with ETXTBSY.
        if fs::hard_link(warden_bin(), &dst).is_err() {
            fs::copy(warden_bin(), &dst).expect("copy warden binary");
        }
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).expect("chmod warden");
        dst
    }

    pub fn report_path(&self) -> PathBuf {
        self.root.join("report.json")
    }

    /// Runs a bash `script` in `work/` with `$WARDEN` (the binary) and
    /// `$REPORT` (`report_path`) set, plus `env`: for pipelines around
    /// warden (a reader that stops or lags).
    pub fn shell(&self, script: &str, env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = Command::new("bash");
        cmd.args(["-c", script])
            .current_dir(self.work())
            .env("WARDEN", warden_bin())
            .env("REPORT", self.report_path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run bash")
    }

    /// The report at `report_path`, parsed.
    pub fn report_json(&self) -> Value {
        let text = fs::read_to_string(self.report_path()).expect("a report was written");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON: {e}\n{text}"))
    }

    /// Runs warden (`warden run --report root/report.json ARGS`) in `work/`.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut run = Run::new(self);
        run.args = vec!["run".into(), "--report".into(), self.report_path().into()];
        run.args.extend(args.into_iter().map(Into::into));
        run
    }

    /// Runs warden with exactly `args` (no `run`, no `--report`) in `work/`.
    pub fn raw<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut run = Run::new(self);
        run.args = args.into_iter().map(Into::into).collect();
        run.report = None;
        run
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A warden invocation being built.
pub struct Run {
    pub bin: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub stdin: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub deadline: Duration,
    pub report: Option<PathBuf>,
    /// Run warden through `setpriv` as this uid/gid.
    pub as_user: Option<u32>,
}

impl Run {
    fn new(dir: &TempDir) -> Run {
        Run {
            bin: warden_bin(),
            args: Vec::new(),
            cwd: dir.work(),
            stdin: Vec::new(),
            env: Vec::new(),
            deadline: Duration::from_secs(60),
            report: Some(dir.report_path()),
            as_user: None,
        }
    }

    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Run {
        self.cwd = cwd.into();
        self
    }

    pub fn stdin(mut self, data: &str) -> Run {
        self.stdin = data.as_bytes().to_vec();
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Run {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn deadline(mut self, d: Duration) -> Run {
        self.deadline = d;
        self
    }

    pub fn bin(mut self, bin: PathBuf) -> Run {
        self.bin = bin;
        self
    }

    pub fn user(mut self, uid: u32) -> Run {
        self.as_user = Some(uid);
        self
    }

    /// Starts warden; the caller decides when to wait.
    pub fn spawn(self) -> Running {
        if let Some(report) = &self.report {
            let _ = fs::remove_file(report);
        }
        let mut cmd = match self.as_user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = self.as_user {
            // An ordinary user has a state directory of its own (root's
            // HOME, which the environment still names, is not writable).
            let state = std::env::temp_dir().join(format!("warden-it-state-{uid}"));
            let _ = fs::create_dir_all(&state);
            let _ = std::os::unix::fs::chown(&state, Some(uid), Some(uid));
            cmd.env("WARDEN_STATE", &state);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let mut stdin = child.stdin.take().expect("stdin");
        let input = self.stdin.clone();
        let stdin_thread = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
            // Dropping closes the pipe: the program sees EOF.
        });
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let out_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let err_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        Running {
            child,
            started,
            deadline: self.deadline,
            report: self.report,
            args: self.args,
            threads: Some((stdin_thread, out_thread, err_thread)),
        }
    }

    /// Runs warden to completion (killing it after the deadline).
    pub fn go(self) -> Outcome {
        self.spawn().wait()
    }
}

type Threads = (JoinHandle<()>, JoinHandle<Vec<u8>>, JoinHandle<Vec<u8>>);

/// A warden process that was started.
pub struct Running {
    pub child: Child,
    started: Instant,
    deadline: Duration,
    report: Option<PathBuf>,
    args: Vec<OsString>,
    threads: Option<Threads>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name like `TERM`) to warden itself.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    pub fn wait(mut self) -> Outcome {
        let mut timed_out = false;
        let status: ExitStatus = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if self.started.elapsed() > self.deadline {
                timed_out = true;
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        let (i, o, e) = self.threads.take().expect("threads");
        let _ = i.join();
        let stdout = o.join().unwrap_or_default();
        let stderr = e.join().unwrap_or_default();
        let code = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => -1,
        };
        let report = self
            .report
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok());
        let outcome = Outcome {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stdout_raw: stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            report_text: report,
            elapsed,
            args: self
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        };
        assert!(
            !timed_out,
            "warden did not finish within {:?} (the test killed it)\n{}",
            self.deadline,
            outcome.ctx()
        );
        outcome
    }
}

/// What a finished warden run left.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stdout_raw: Vec<u8>,
    pub stderr: String,
    pub report_text: Option<String>,
    pub elapsed: Duration,
    pub args: Vec<String>,
}

fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

impl Outcome {
    /// Context for assertion messages: the command, exit code, output, report.
    pub fn ctx(&self) -> String {
        format!(
            "  warden {}\n  exit code: {}\n  stdout: {}\n  stderr: {}\n  report: {}",
            self.args.join(" "),
            self.code,
            clip(&self.stdout, 1500),
            clip(&self.stderr, 1500),
            clip(self.report_text.as_deref().unwrap_or("<none>"), 2500)
        )
    }

    /// The parsed report; panics (with context) if there is none.
    pub fn report(&self) -> Value {
        let text = self
            .report_text
            .as_deref()
            .unwrap_or_else(|| panic!("no report was written\n{}", self.ctx()));
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("report is not JSON: {e}\n{}", self.ctx()))
    }

    pub fn status(&self) -> String {
        self.report()["status"]
            .as_str()
            .unwrap_or("<missing>")
            .to_owned()
    }

    pub fn num(&self, field: &str) -> u64 {
        self.report()[field]
            .as_u64()
            .unwrap_or_else(|| panic!("report field {field} is not a number\n{}", self.ctx()))
    }

    /// `(kind, detail)` of every violation.
    pub fn violations(&self) -> Vec<(String, String)> {
        self.report()["violations"]
            .as_array()
            .unwrap_or_else(|| panic!("report has no violations array\n{}", self.ctx()))
            .iter()
            .map(|v| {
                (
                    v["kind"].as_str().unwrap_or("").to_owned(),
                    v["detail"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    pub fn capabilities(&self) -> Vec<String> {
        self.report()["capabilities"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(self.code, code, "{what}: wrong exit status\n{}", self.ctx());
        self
    }

    pub fn expect_status(&self, status: &str, what: &str) -> &Self {
        assert_eq!(
            self.status(),
            status,
            "{what}: wrong report status\n{}",
            self.ctx()
        );
        self
    }

    /// Exit 0, status `exited`.
    pub fn expect_ok(&self, what: &str) -> &Self {
        self.expect_code(0, what).expect_status("exited", what)
    }

    /// A warden error: exit 125 and a first stderr line from warden or clap.
    pub fn expect_warden_error(&self, what: &str) -> &Self {
        self.expect_code(125, what);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let first = lines.first().copied().unwrap_or("");
        assert!(
            first.starts_with("warden:"),
            "{what}: stderr must start with `warden:`\n{}",
            self.ctx()
        );
        assert_eq!(
            lines.len(),
            1,
            "{what}: warden's error must be one line on stderr\n{}",
            self.ctx()
        );
        self
    }

    pub fn expect_stdout_has(&self, needle: &str, what: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "{what}: stdout lacks {needle:?}\n{}",
            self.ctx()
        );
        self
    }

    pub fn expect_stdout_lacks(&self, needle: &str, what: &str) -> &Self {
        assert!(
            !self.stdout.contains(needle),
            "{what}: stdout contains {needle:?} — it leaked\n{}",
            self.ctx()
        );
        self
    }

    /// A violation whose detail names `name` (e.g. `ptrace`).
    pub fn expect_violation(&self, name: &str, what: &str) -> &Self {
        let found = self
            .violations()
            .iter()
            .any(|(kind, detail)| kind == "syscall" && detail.contains(name));
        assert!(
            found,
            "{what}: no syscall violation naming {name:?} recorded (the call went unnoticed)\n{}",
            self.ctx()
        );
        self
    }
}

/// Sends a signal by name to a process (through kill(1): no libc here).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Host processes whose command line contains `marker`, except warden
/// itself and this test process: `(pid, cmdline)`.
pub fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(argv0) = args.first() else {
            continue;
        };
        let is_warden = argv0.ends_with("warden") || argv0.ends_with("setpriv");
        if !is_warden && args.iter().any(|a| a.contains(marker)) {
            // Zombies have an empty cmdline and are skipped above.
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// Waits until a process with `marker` shows up (the jail has started).
pub fn wait_for_process(marker: &str, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if !processes_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits until no process with `marker` is left; returns the survivors.
pub fn wait_gone(marker: &str, within: Duration) -> Vec<(u32, String)> {
    let start = Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() || start.elapsed() > within {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills leftovers a failed test found, so they do not disturb others.
pub fn kill_all(procs: &[(u32, String)]) {
    for (pid, _) in procs {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

/// Every directory under /sys/fs/cgroup (a few levels deep) whose name
/// satisfies `pred`.
pub fn cgroup_dirs(pred: &dyn Fn(&str, &Path) -> bool) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: u32, pred: &dyn Fn(&str, &Path) -> bool, out: &mut Vec<PathBuf>) {
        if depth == 0 {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() || ft.is_symlink() {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if pred(&name, &path) {
                out.push(path.clone());
            }
            walk(&path, depth - 1, pred, out);
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 7, pred, &mut out);
    out
}

/// First line of the host's /etc/shadow: what must never show up in a jail.
pub fn host_shadow_line() -> String {
    let text =
        fs::read_to_string("/etc/shadow").expect("the tests run as root and read /etc/shadow");
    text.lines()
        .find(|l| !l.trim().is_empty())
        .expect("non-empty /etc/shadow")
        .to_owned()
}
