//! One invocation: the request's files in a fresh private directory, the
//! small `warden` binary started as a child (`warden run --report FILE`),
//! with the caller's API key as `WARDEN_API_KEY`, so that its identity,
//! secret leases, redaction and ledger entry are exactly the CLI's.
//!
//! A jail run forks without exec and must not happen in this
//! multi-threaded process; the child is a fresh single-threaded process.
//! That costs an exec per request (a zygote comes later).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::{Language, Plan, Program};
use crate::chunk::{Channel, Chunk, ChunkSink};

/// Where the jail shows the request's files, and the program's working
/// directory.
pub const JAIL_WORKDIR: &str = "/work";

/// Where a sandbox's exec sees its workspace, and its working directory.
pub const SANDBOX_WORKSPACE: &str = "/workspace";

/// The `PATH` the child gets: the jail's own, so that the interpreter it
/// names is the one the jail runs (and no warning says otherwise).
const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Bytes of Warden's own stderr lines kept beyond the output limit.
pub const STDERR_SLACK: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot prepare the run's directory {0}: {1}")]
    Prepare(PathBuf, std::io::Error),
    #[error("cannot start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("the run's output could not be read: {0}")]
    Output(std::io::Error),
    #[error("warden exited ({status}) without a report: {stderr}")]
    NoReport { status: String, stderr: String },
    #[error("the report {0} is not JSON: {1}")]
    BadReport(PathBuf, serde_json::Error),
    /// An in-process run whose entry (or report) could not be made.
    #[error("{0}")]
    Unrecorded(String),
}

/// What the service needs to start runs.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The `warden` binary.
    pub warden: PathBuf,
    pub state: PathBuf,
    pub config: Option<PathBuf>,
    /// A private (0700) directory of this service's run directories.
    pub runtime_dir: PathBuf,
}

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub report: serde_json::Value,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A run's directory, removed on drop.
pub(crate) struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn private_dir(path: &Path) -> Result<(), RunError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| RunError::Prepare(path.to_path_buf(), e))
}

fn write_files(dir: &Path, plan: &Plan) -> Result<(), RunError> {
    for (name, content) in plan.files() {
        if !crate::api::is_beneath(name) {
            return Err(RunError::Prepare(
                dir.join(name),
                std::io::Error::other("not beneath the run's directory"),
            ));
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .recursive(true)
                .create(parent)
                .map_err(|e| RunError::Prepare(parent.to_path_buf(), e))?;
        }
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, content));
        written.map_err(|e| RunError::Prepare(path.clone(), e))?;
    }
    Ok(())
}

/// The `warden` command line of a plan (after the binary).
pub fn command_line(runner: &Runner, plan: &Plan, files: &Path, report: &Path) -> Vec<String> {
    let (language, entry) = match &plan.program {
        Program::Files {
            language, entry, ..
        } => (*language, entry),
        Program::Processor(spec) => return invoke_command_line(runner, plan, spec, report),
    };
    let mut argv: Vec<String> = vec!["--state".into(), runner.state.display().to_string()];
    if let Some(config) = &runner.config {
        argv.push("--config".into());
        argv.push(config.display().to_string());
    }
    argv.push("run".into());
    argv.push("--report".into());
    argv.push(report.display().to_string());
    argv.push("--quiet".into());
    argv.push("--allow".into());
    argv.push(format!("fs:read:{}", files.display()));
    if language != Language::Wasm {
        argv.extend(["--at".into(), JAIL_WORKDIR.into()]);
        argv.extend(["--workdir".into(), JAIL_WORKDIR.into()]);
    }
    for cap in &plan.capabilities {
        argv.push("--allow".into());
        argv.push(cap.clone());
    }
    push_limits(&mut argv, plan);
    let entry = format!("./{}", entry.display());
    if language == Language::Wasm {
        let by_name = entry.ends_with(".wasm") || entry.ends_with(".wat");
        if !by_name {
            argv.extend(["--backend".into(), "wasm".into()]);
        }
    }
    argv.push("--".into());
    if let Some(interpreter) = language.interpreter() {
        argv.push(interpreter.into());
    }
    argv.push(entry);
    argv.extend(plan.args.iter().cloned());
    argv
}

/// The `warden` command line of a processor's plan (after the binary):
/// `warden invoke SPEC` with the plan's capabilities as its ceiling (the
/// processor may get no capability that is not covered by one of them;
/// none: no ceiling but the policy's) and its limits as the most the
/// processor gets (its own when smaller). `spec` is the registry's
/// `NAME@VERSION` (see [`crate::server::authorize`]).
pub fn invoke_command_line(runner: &Runner, plan: &Plan, spec: &str, report: &Path) -> Vec<String> {
    let mut argv: Vec<String> = vec!["--state".into(), runner.state.display().to_string()];
    if let Some(config) = &runner.config {
        argv.push("--config".into());
        argv.push(config.display().to_string());
    }
    argv.push("invoke".into());
    argv.push("--report".into());
    argv.push(report.display().to_string());
    argv.push("--quiet".into());
    for cap in &plan.capabilities {
        argv.push("--ceiling".into());
        argv.push(cap.clone());
    }
    push_limits(&mut argv, plan);
    argv.push(spec.to_string());
    argv.push("--".into());
    argv.extend(plan.args.iter().cloned());
    argv
}

/// The `warden run` flags of a plan's limits.
fn push_limits(argv: &mut Vec<String>, plan: &Plan) {
    argv.push("--wall-time".into());
    argv.push(format!("{}ms", plan.wall_time.as_millis()));
    if let Some(d) = plan.cpu_time {
        argv.push("--cpu-time".into());
        argv.push(format!("{}ms", d.as_millis()));
    }
    if let Some(b) = plan.memory_bytes {
        argv.push("--memory".into());
        argv.push(b.to_string());
    }
    if let Some(n) = plan.pids {
        argv.push("--pids".into());
        argv.push(n.to_string());
    }
    argv.push("--output-limit".into());
    argv.push(plan.output_bytes.to_string());
}

/// The `warden` command line of a sandbox's exec (after the binary): the
/// workspace granted read-write at [`SANDBOX_WORKSPACE`], the plan's
/// capabilities and limits, then `program`, started in
/// [`SANDBOX_WORKSPACE`] by a `sh` that `cd`s there and `exec`s it
/// (`warden run --workdir` names a directory of the host, and the
/// workspace is at another path inside the jail).
pub fn exec_command_line(
    runner: &Runner,
    plan: &Plan,
    workspace: &Path,
    report: &Path,
    program: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = vec!["--state".into(), runner.state.display().to_string()];
    if let Some(config) = &runner.config {
        argv.push("--config".into());
        argv.push(config.display().to_string());
    }
    argv.push("run".into());
    argv.push("--report".into());
    argv.push(report.display().to_string());
    argv.push("--quiet".into());
    argv.push("--allow".into());
    argv.push(format!("fs:write:{}", workspace.display()));
    argv.extend(["--at".into(), SANDBOX_WORKSPACE.into()]);
    for cap in &plan.capabilities {
        argv.push("--allow".into());
        argv.push(cap.clone());
    }
    push_limits(&mut argv, plan);
    argv.push("--".into());
    argv.extend([
        "sh".into(),
        "-c".into(),
        format!("cd {SANDBOX_WORKSPACE} || exit 125; exec \"$@\""),
        "warden-exec".into(),
    ]);
    argv.extend(program.iter().cloned());
    argv
}

/// Reads at most `cap` bytes of `r`, then drains (and drops) the rest so
/// that the writer never blocks on a full pipe. With a sink, each read is
/// also sent to it as it comes (a sink whose receiver is gone is dropped:
/// the run goes on).
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    cap: u64,
    mut sink: Option<(ChunkSink, Channel)>,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut capped = (&mut r).take(cap);
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = capped.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if let Some((to, channel)) = &sink {
            let chunk = Chunk {
                channel: *channel,
                bytes: buf[..n].to_vec(),
            };
            if to.send(chunk).await.is_err() {
                sink = None;
            }
        }
    }
    tokio::io::copy(&mut r, &mut tokio::io::sink()).await?;
    Ok(out)
}

impl Runner {
    /// Runs `plan` for the principal whose key is `api_key`. `stop`
    /// turning true (the service's shutdown deadline) sends the child
    /// SIGTERM: the run stops, and its report and ledger entry are written.
    pub async fn run(
        &self,
        plan: &Plan,
        api_key: &str,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Finished, RunError> {
        self.run_into(plan, api_key, stop, None).await
    }

    /// [`Runner::run`], sending the output to `sink` as it comes too.
    pub async fn run_into(
        &self,
        plan: &Plan,
        api_key: &str,
        stop: tokio::sync::watch::Receiver<bool>,
        sink: Option<ChunkSink>,
    ) -> Result<Finished, RunError> {
        let (dir, files) = self.prepare_files(plan)?;
        self.run_prepared(plan, &dir, &files, 0, &plan.stdin, api_key, stop, sink)
            .await
    }

    /// One run of `plan` whose files [`Runner::prepare_files`] wrote to
    /// `files` in `dir`, with `stdin` (a test case's): its own `warden`
    /// child, so its own jail, writing its report to `dir/report-N.json`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_prepared(
        &self,
        plan: &Plan,
        dir: &RunDir,
        files: &Path,
        n: usize,
        stdin: &[u8],
        api_key: &str,
        stop: tokio::sync::watch::Receiver<bool>,
        sink: Option<ChunkSink>,
    ) -> Result<Finished, RunError> {
        let report = dir.0.join(format!("report-{n}.json"));
        let argv = command_line(self, plan, files, &report);
        self.invoke(&argv, files, plan, stdin, &report, api_key, stop, sink)
            .await
    }

    /// A fresh private run directory with the plan's files in its
    /// `files/` (returned); the directory goes when the first is dropped.
    pub(crate) fn prepare_files(&self, plan: &Plan) -> Result<(RunDir, PathBuf), RunError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = RunDir(self.runtime_dir.join(format!("r{n}")));
        private_dir(&dir.0)?;
        let files = dir.0.join("files");
        private_dir(&files)?;
        // The jail's user reads them through the grant (idmapped to the
        // owner when the service runs as root).
        std::fs::set_permissions(&files, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| RunError::Prepare(files.clone(), e))?;
        write_files(&files, plan)?;
        Ok((dir, files))
    }

    /// Runs a sandbox's exec: `program` in a jail whose `/workspace` (and
    /// working directory) is `workspace`, read-write, under `plan`'s
    /// capabilities and limits (its files, entry and args are not used).
    pub async fn exec(
        &self,
        plan: &Plan,
        workspace: &Path,
        program: &[String],
        api_key: &str,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Finished, RunError> {
        self.exec_into(plan, workspace, program, api_key, stop, None)
            .await
    }

    /// [`Runner::exec`], sending the output to `sink` as it comes too.
    pub async fn exec_into(
        &self,
        plan: &Plan,
        workspace: &Path,
        program: &[String],
        api_key: &str,
        stop: tokio::sync::watch::Receiver<bool>,
        sink: Option<ChunkSink>,
    ) -> Result<Finished, RunError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = RunDir(self.runtime_dir.join(format!("x{n}")));
        private_dir(&dir.0)?;
        let report = dir.0.join("report.json");
        let argv = exec_command_line(self, plan, workspace, &report, program);
        // Started in the run's own directory (empty in the jail), not the
        // workspace: the program's working directory is set inside.
        self.invoke(
            &argv,
            &dir.0,
            plan,
            &plan.stdin,
            &report,
            api_key,
            stop,
            sink,
        )
        .await
    }

    /// Starts `warden` with `argv` in `cwd` and collects its output (also
    /// sent to `sink` as it comes, if any) and the report it writes to
    /// `report`.
    #[allow(clippy::too_many_arguments)]
    async fn invoke(
        &self,
        argv: &[String],
        cwd: &Path,
        plan: &Plan,
        stdin: &[u8],
        report: &Path,
        api_key: &str,
        mut stop: tokio::sync::watch::Receiver<bool>,
        sink: Option<ChunkSink>,
    ) -> Result<Finished, RunError> {
        let mut command = tokio::process::Command::new(&self.warden);
        command
            .args(argv)
            .current_dir(cwd)
            .env("WARDEN_API_KEY", api_key)
            .env("PATH", CHILD_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a ^C at the service's terminal is the
            // service's to handle, not every run's.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| RunError::Spawn(self.warden.clone(), e))?;
        let reaped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = TermOnDrop {
            pid: child.id(),
            reaped: reaped.clone(),
        };

        let pipe = child.stdin.take();
        let input = stdin.to_vec();
        let feed = async move {
            if let Some(mut stdin) = pipe {
                // A program that does not read its stdin closes the pipe:
                // that is not the service's error.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let out_cap = plan.output_bytes;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let out_sink = sink.clone().map(|s| (s, Channel::Stdout));
        let err_sink = sink.map(|s| (s, Channel::Stderr));
        let read_out = async move {
            match stdout {
                Some(s) => read_capped(s, out_cap, out_sink).await,
                None => Ok(Vec::new()),
            }
        };
        let read_err = async move {
            match stderr {
                Some(s) => read_capped(s, out_cap + STDERR_SLACK, err_sink).await,
                None => Ok(Vec::new()),
            }
        };
        let pid = child.id();
        let wait = async {
            let status = tokio::select! {
                status = child.wait() => status,
                () = async {
                    // A dropped sender is no order to stop.
                    if stop.wait_for(|s| *s).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {
                    terminate(pid);
                    // Warden stops the run and writes its report; give it
                    // a moment, then kill it.
                    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            let _ = child.start_kill();
                            child.wait().await
                        }
                    }
                }
            };
            reaped.store(true, Ordering::SeqCst);
            status
        };
        let ((), out, err, status) = tokio::join!(feed, read_out, read_err, wait);
        drop(guard);
        let status = status.map_err(RunError::Output)?;
        let stdout = out.map_err(RunError::Output)?;
        let stderr = err.map_err(RunError::Output)?;
        let bytes = match std::fs::read(report) {
            Ok(b) => b,
            Err(_) => {
                return Err(RunError::NoReport {
                    status: status.to_string(),
                    stderr: String::from_utf8_lossy(&stderr)
                        .chars()
                        .take(2000)
                        .collect(),
                })
            }
        };
        let report = serde_json::from_slice(&bytes)
            .map_err(|e| RunError::BadReport(report.to_path_buf(), e))?;
        Ok(Finished {
            stdout,
            stderr,
            report,
        })
    }
}

/// SIGTERM to a child not yet reaped (its pid cannot have been reused).
fn terminate(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Sends SIGTERM to the child when a run's future is dropped before it
/// ended (the client went away, the request timed out): Warden then stops
/// the jail and still writes the ledger entry; tokio reaps the orphan.
/// Until `reaped` is set the child is not reaped, so the pid is its own.
struct TermOnDrop {
    pid: Option<u32>,
    reaped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::SeqCst) {
            terminate(self.pid);
        }
    }
}
