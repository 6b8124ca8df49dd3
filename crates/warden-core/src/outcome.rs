use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

/// How a run ended. The strings are part of Warden's contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The program exited by itself.
    Exited,
    /// The program was killed by a signal it did not get from a Warden limit.
    Signaled,
    /// Wall-clock limit reached.
    Timeout,
    MemoryLimit,
    CpuLimit,
    OutputLimit,
    /// The program attempted something its grants deny (e.g. a denied syscall).
    Violation,
    /// Warden could not run the program (setup failure, not found, interrupted).
    Error,
    /// Warden would not run it: an unsigned or badly signed processor, a
    /// capability the policy does not allow, `--no-audit` under a policy
    /// that requires auditing. Nothing ran; the report's `refusal` says why.
    Refused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Exited => "exited",
            Status::Signaled => "signaled",
            Status::Timeout => "timeout",
            Status::MemoryLimit => "memory_limit",
            Status::CpuLimit => "cpu_limit",
            Status::OutputLimit => "output_limit",
            Status::Violation => "violation",
            Status::Error => "error",
            Status::Refused => "refused",
        }
    }
}

/// Something the program tried and was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// e.g. `syscall`
    pub kind: String,
    /// e.g. `ptrace denied (3 attempts)`
    pub detail: String,
}

/// A network connection the program attempted, allowed or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// The destination address, as the program asked for it (IPv4-mapped
    /// IPv6 addresses written as IPv4); for a WASM `http` call, the address
    /// connected to, or the URL's host when none was (refused, or a name
    /// that did not resolve).
    pub dest: String,
    pub port: u16,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    pub allowed: bool,
    /// The granted name the address was pinned for, when there is one (for
    /// a WASM `http` call, the URL's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The grant that allowed it, or why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes the program sent and received on it; null where the backend
    /// does not count them.
    pub bytes_out: Option<u64>,
    pub bytes_in: Option<u64>,
}

/// A limit the run reached, from the kernel's own counters where they
/// exist (cgroup `pids.events` and `memory.oom_control`/`memory.events`,
/// processes the jail's init saw killed by SIGXFSZ, `/tmp`'s usage at the
/// end) and Warden's own otherwise (wall clock, CPU time, output, the WASM
/// limiter).
impl Connection {
    /// An attempt to reach `dest`:`port` over `proto`, not (yet) allowed,
    /// with nothing counted.
    pub fn attempt(dest: String, port: u16, proto: &'static str) -> Connection {
        Connection {
            dest,
            port,
            proto,
            allowed: false,
            name: None,
            grant: None,
            reason: None,
            bytes_out: None,
            bytes_in: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitReached {
    /// The limit's name, as in the report's `limits` and `enforcement`:
    /// `memory`, `cpu_time`, `wall_time`, `pids`, `output`, `file_size`,
    /// `open_files`, `tmpfs`, `fuel`.
    pub limit: Cow<'static, str>,
    /// The limit and what reaching it did, e.g. `64 processes: 212 forks refused`.
    pub detail: String,
    /// How often it was reached: refused forks, processes killed, files
    /// cut, refused calls; 1 for a limit that stopped the run.
    pub count: u64,
    /// The limit's value as shown (`64 MiB`), for the line on stderr.
    #[serde(skip)]
    pub value: String,
    /// What reaching it did (`212 forks refused`), for the line on stderr.
    #[serde(skip)]
    pub effect: String,
    /// The limit stopped the program.
    #[serde(skip)]
    pub stopped: bool,
}

impl LimitReached {
    pub fn new(
        limit: impl Into<Cow<'static, str>>,
        value: String,
        effect: String,
        count: u64,
        stopped: bool,
    ) -> LimitReached {
        LimitReached {
            limit: limit.into(),
            detail: format!("{value}: {effect}"),
            count,
            value,
            effect,
            stopped,
        }
    }

    /// The flag that sets this limit on `warden run`.
    pub fn flag(&self) -> &'static str {
        match &*self.limit {
            "memory" => "--memory",
            "cpu_time" => "--cpu-time",
            "wall_time" => "--wall-time",
            "pids" => "--pids",
            "output" => "--output-limit",
            "file_size" => "--file-size",
            "open_files" => "--open-files",
            "tmpfs" => "--tmpfs",
            "fuel" => "--fuel",
            "net_bytes" => "--allow net:limit:bytes:SIZE",
            "net_connections" => "--allow net:limit:connections:N",
            "net_idle" => "--allow net:limit:idle:DURATION",
            _ => "--help",
        }
    }

    /// The limit's name as a person reads it (`cpu_time` → `cpu time`).
    pub fn label(&self) -> String {
        match &*self.limit {
            "tmpfs" => "/tmp size".to_string(),
            other => other.replace('_', " "),
        }
    }
}

/// Files the program left in its scratch working directory (one no grant
/// covers), which vanish with the jail.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Discarded {
    pub files: u64,
    pub bytes: u64,
    /// The scratch directory, for the line on stderr.
    #[serde(skip)]
    pub dir: std::path::PathBuf,
}

/// `bytes` as a person reads a limit: `64 MiB`, `1 GiB`, `1500 bytes`.
pub fn human_bytes(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64);
    }
    format!("{bytes} bytes")
}

/// A duration as a person reads a limit: `60 s`, `1500 ms`.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// Severity of a record a guest logged through the host (`log:write`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One record a guest logged through the host: already capped and redacted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
}

/// How each limit was enforced on this run, e.g. `memory` → `cgroup_v1`.
/// Mostly fixed names: borrowed, so that a run does not allocate them.
pub type EnforcementMap = BTreeMap<Cow<'static, str>, Cow<'static, str>>;

/// An [`EnforcementMap`], or a borrowed one: a backend whose runs share a
/// few fixed maps (the WASM backend) lends one instead of building it for
/// every run.
pub type Enforcement = Cow<'static, EnforcementMap>;

/// SHA-256 (hex) of the bytes that crossed each standard stream: what the
/// program read from its stdin, and what of its stdout and stderr reached
/// the caller (within the output limit). `stdin` is `None` where the
/// backend does not see it (a WASM guest reading the caller's stdin
/// directly).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamDigests {
    pub stdin: Option<String>,
    pub stdout: String,
    pub stderr: String,
}

/// What a backend observed. The engine turns it into a [`crate::Report`].
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
    pub violations: Vec<Violation>,
    pub enforcement: Enforcement,
    /// Limits that could not be enforced as asked, and how they fell back.
    pub warnings: Vec<String>,
    /// Why the run is an `error`, or why it was stopped.
    pub error: Option<String>,
    /// WASM only: fuel used, when fuel was metered.
    pub fuel_consumed: Option<u64>,
    /// WASM only: time to instantiate the module, in µs.
    pub instantiate_us: Option<u64>,
    /// WASM only: what the guest logged through the host (`log:write`),
    /// in order, capped and redacted.
    pub logs: Vec<LogRecord>,
    /// Log records (or bytes of them) were dropped at the cap.
    pub logs_truncated: bool,
    /// Every limit the run reached, in the order they were found.
    pub limits_reached: Vec<LimitReached>,
    /// Network connections the program attempted, in order.
    pub connections: Vec<Connection>,
    /// What the program left in its scratch working directory; `None` where
    /// there is none (the directory is granted, or not writable), or the
    /// backend could not look (a run stopped by a limit).
    pub discarded: Option<Discarded>,
    /// Digests of the standard streams; `None` when nothing ran.
    pub streams: Option<StreamDigests>,
    /// WASM only: what ran, `sha256:HEX` of the module's bytes as read
    /// (`cwasm-tag:HEX`, its authentication tag, for a precompiled one).
    pub module_digest: Option<String>,
}

impl Outcome {
    /// An outcome with `status` and nothing observed yet (no exit code,
    /// zero usage, no violations); fill in what is known.
    pub fn with_status(status: Status) -> Outcome {
        Outcome {
            status,
            exit_code: None,
            signal: None,
            wall_ms: 0,
            cpu_ms: 0,
            peak_memory_bytes: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            violations: Vec::new(),
            enforcement: Cow::Owned(EnforcementMap::new()),
            warnings: Vec::new(),
            error: None,
            fuel_consumed: None,
            instantiate_us: None,
            logs: Vec::new(),
            logs_truncated: false,
            limits_reached: Vec::new(),
            connections: Vec::new(),
            discarded: None,
            streams: None,
            module_digest: None,
        }
    }

    /// Records that `reached.limit` was reached, unless it already is.
    pub fn reached(&mut self, reached: LimitReached) {
        if !self.limits_reached.iter().any(|r| r.limit == reached.limit) {
            self.limits_reached.push(reached);
        }
    }

    /// Adds the limit behind a limit status (`timeout`, `cpu_limit`,
    /// `output_limit`, `memory_limit`) when the backend has not said more
    /// about it already: every stop by a limit is in `limits_reached`.
    pub fn note_stop_limit(&mut self, limits: &crate::EffectiveLimits) {
        let stopped = self.exit_code.is_none();
        let (limit, value) = match self.status {
            Status::Timeout => ("wall_time", human_duration(limits.wall_time)),
            Status::CpuLimit => (
                "cpu_time",
                limits.cpu_time.map_or("budget".into(), human_duration),
            ),
            Status::OutputLimit => ("output", human_bytes(limits.output_bytes)),
            Status::MemoryLimit => ("memory", human_bytes(limits.memory_bytes)),
            _ => return,
        };
        // A CPU stop of a metered guest is its fuel, said by the backend.
        if limit == "cpu_time" && self.limits_reached.iter().any(|r| r.limit == "fuel") {
            return;
        }
        let effect = match (limit, stopped) {
            ("output", true) => "output truncated, program stopped",
            ("output", false) => "output truncated",
            (_, true) => "program stopped",
            (_, false) => "limit reached; the program went on and exited",
        };
        self.reached(LimitReached::new(
            limit,
            value,
            effect.to_string(),
            1,
            stopped,
        ));
    }

    /// Exit status of `warden run` for this outcome; see [`exit_status`].
    pub fn exit_status(&self) -> i32 {
        exit_status(self.status, self.exit_code, self.signal)
    }
}

/// Exit status of `warden run`, following timeout(1) and the shell: the
/// program's own code, 124 for a wall-clock timeout, 128+N for a signal,
/// 125 for Warden's own error, 126 for a refusal; a failed exec keeps its 126/127; a limit
/// stop without a signal is 137 and a WASM trap 134.
pub fn exit_status(status: Status, exit_code: Option<i32>, signal: Option<i32>) -> i32 {
    match (status, exit_code, signal) {
        (Status::Timeout, _, _) => 124,
        (Status::Refused, _, _) => 126,
        (Status::Error, Some(code @ (126 | 127)), _) => code,
        // Warden itself was interrupted by this signal.
        (Status::Error, _, Some(sig)) => 128 + sig,
        (Status::Error, _, _) => 125,
        (_, _, Some(sig)) => 128 + sig,
        // What a native process's status would keep of it (a WASM guest
        // may exit with any 32-bit code; the report keeps the whole value).
        (_, Some(code), _) => code & 0xff,
        // A limit stop without a signal (the WASM backend stops the guest
        // itself): the same status a jail's SIGKILL would give.
        (Status::MemoryLimit | Status::CpuLimit | Status::OutputLimit, None, None) => 137,
        // A guest trap: like a crash (SIGABRT).
        (Status::Violation, None, None) => 134,
        _ => 125,
    }
}
