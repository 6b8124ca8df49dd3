//! Shared helpers for warden-wasm's integration tests: guest programs
//! (WAT from tests-guests/wat, Rust built by tests-guests/build.sh),
//! invocations, temporary directories.
#![allow(dead_code)]

pub mod net;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use warden_core::{EffectiveLimits, Invocation, Outcome, Status};
use warden_policy::Capability;
use warden_wasm::{Input, RunIo, WasmBackend};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A WAT (or raw) guest from tests-guests/wat.
pub fn wat(name: &str) -> PathBuf {
    root().join("tests-guests/wat").join(name)
}

/// A Rust guest as a WASI preview-1 module, built once per test process
/// by tests-guests/build.sh.
pub fn rust(name: &str) -> PathBuf {
    guest("wasm32-wasip1", name)
}

/// A Rust guest as a WASI 0.2 component.
pub fn component(name: &str) -> PathBuf {
    guest("wasm32-wasip2", name)
}

fn guest(target: &str, name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let script = root().join("tests-guests/build.sh");
        let out = Command::new("sh")
            .arg(&script)
            .output()
            .expect("run tests-guests/build.sh");
        assert!(
            out.status.success(),
            "tests-guests/build.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = String::from_utf8(out.stdout).expect("build.sh prints a path");
        PathBuf::from(dir.trim())
    });
    let path = dir
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"));
    assert!(path.is_file(), "guest {} was not built", path.display());
    path
}

/// One backend per test process (as the service will have).
pub fn backend() -> &'static WasmBackend {
    static B: OnceLock<WasmBackend> = OnceLock::new();
    B.get_or_init(|| WasmBackend::new().expect("wasm backend"))
}

/// An invocation of `module` with `args`, default limits, no grants.
pub fn inv(module: &Path, args: &[&str]) -> Invocation {
    let mut argv = vec![module.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    Invocation {
        invocation_id: "0".repeat(32),
        argv,
        env: Vec::new(),
        workdir: PathBuf::from("/"),
        capabilities: Vec::new(),
        limits: EffectiveLimits {
            wall_time: Duration::from_secs(20),
            ..EffectiveLimits::default()
        },
        fuel: None,
        deterministic: false,
        ..Invocation::default()
    }
}

/// What a captured run produced.
pub struct Ran {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Asserts that the run ended by itself (status `exited`).
    pub fn expect_exited(&self) {
        assert_eq!(
            self.outcome.status,
            Status::Exited,
            "{:?} {}",
            self.outcome,
            self.stderr
        );
    }
}

/// Runs with stdin from `stdin`, capturing stdout and stderr.
pub fn run_with(inv: &Invocation, stdin: Input) -> Ran {
    let (io, out, err) = RunIo::captured(stdin);
    let outcome = backend().run_with_io(inv, &io).expect("backend runs");
    Ran {
        outcome,
        stdout: out.text(),
        stderr: err.text(),
    }
}

/// Runs with empty stdin, capturing stdout and stderr.
pub fn run(inv: &Invocation) -> Ran {
    run_with(inv, Input::Empty)
}

/// A fresh directory under the system's temporary directory (canonical
/// path), removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir().canonicalize().expect("temp dir");
        let dir = base.join(format!(
            "warden-wasm-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("make temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn read(path: &Path) -> Capability {
    Capability::FsRead(path.to_path_buf())
}

pub fn write(path: &Path) -> Capability {
    Capability::FsWrite(path.to_path_buf())
}

/// Resident set size of this process, in KiB (from /proc/self/status).
pub fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Capabilities from their strings.
pub fn caps(list: &[&str]) -> Vec<Capability> {
    list.iter()
        .map(|c| c.parse().unwrap_or_else(|e| panic!("{c}: {e}")))
        .collect()
}

/// The details of an outcome's violations of `kind`.
pub fn violations_of(outcome: &Outcome, kind: &str) -> Vec<String> {
    outcome
        .violations
        .iter()
        .filter(|v| v.kind == kind)
        .map(|v| v.detail.clone())
        .collect()
}
