use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use warden_policy::Capability;

/// Every limit a backend enforces, all resolved to concrete values
/// (defaults filled in by the engine). `None` means "no limit" and is only
/// allowed where Warden has no default.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EffectiveLimits {
    pub memory_bytes: u64,
    #[serde(rename = "cpu_time_ms", serialize_with = "opt_ms")]
    pub cpu_time: Option<Duration>,
    #[serde(rename = "wall_time_ms", serialize_with = "ms")]
    pub wall_time: Duration,
    pub pids: u32,
    /// Share of one core, in percent (`cpu:limit`).
    pub cpu_percent: Option<u32>,
    pub output_bytes: u64,
    pub file_size_bytes: u64,
    pub open_files: u64,
    pub tmpfs_bytes: u64,
    /// Bytes the run's connections may move, both ways; null: no bound
    /// but the wall time (`net:limit:bytes`).
    pub net_bytes: Option<u64>,
    /// Connections the run may make (`net:limit:connections`).
    pub net_connections: u64,
    /// Longest a connection may carry no data (`net:limit:idle`).
    #[serde(rename = "net_idle_ms", serialize_with = "opt_ms")]
    pub net_idle: Option<Duration>,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

impl Default for EffectiveLimits {
    /// Warden's defaults: bounded in every dimension, generous enough for
    /// an ordinary interpreter run.
    fn default() -> Self {
        EffectiveLimits {
            memory_bytes: 512 << 20,
            cpu_time: None,
            wall_time: Duration::from_secs(60),
            pids: 64,
            cpu_percent: None,
            output_bytes: 64 << 20,
            file_size_bytes: 64 << 20,
            open_files: 256,
            tmpfs_bytes: 64 << 20,
            net_bytes: None,
            net_connections: 256,
            net_idle: None,
        }
    }
}

/// One run of untrusted code, fully resolved: the effective grants are
/// already the intersection of what was requested and what the policy
/// allows, and every path is absolute.
///
/// `Default` is an empty invocation (no argv, no grants, default limits,
/// tenant `default`); fill in what a run needs with `..Default::default()`.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub invocation_id: String,
    /// argv; `argv[0]` is looked up on the jail's fixed PATH when it has no `/`.
    pub argv: Vec<String>,
    /// Environment given to the program: only granted variables.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox (absolute).
    pub workdir: PathBuf,
    /// Effective grants (non-limit capabilities).
    pub capabilities: Vec<Capability>,
    pub limits: EffectiveLimits,
    /// WASM only: a fuel budget (instructions, roughly); `None` = no fuel metering.
    pub fuel: Option<u64>,
    /// WASM only: fixed clock, seeded randomness, no threads — same input,
    /// same output.
    pub deterministic: bool,
    /// WASM only: the seed of the random stream in deterministic mode
    /// (`None`: Warden's fixed seed). Two runs with the same seed and input
    /// give the same output.
    pub deterministic_seed: Option<u64>,
    /// Who the run is for: selects the tenant's key-value store (the `kv`
    /// host capability). A name of ASCII letters, digits, `_`, `-` and `.`
    /// (not starting with `.` or `-`), at most 64 bytes; see
    /// [`valid_tenant`].
    pub tenant: String,
    /// Literal strings replaced by `[REDACTED]` in what the run logs
    /// through the host (`log` capability), e.g. leased secret values.
    pub redact: Vec<String>,
    /// WASM only: modules the run may call by name (`module:call:NAME`),
    /// besides those registered with the backend.
    pub modules: Vec<ModuleRef>,
    /// Granted paths shown at a chosen path inside instead of their own
    /// (`--allow fs:read:./fixtures --at /data`).
    pub views: Vec<View>,
    /// Secrets leased to this invocation: a file `/run/secrets/NAME` in
    /// the jail (and an environment variable with `secret:NAME:env`); every
    /// value is redacted from what the run prints and reports.
    pub secrets: Vec<LeasedSecret>,
    /// A processor's code: the content-addressed copy Warden verified
    /// (inside its own state directory), shown read-only at
    /// [`PROCESSOR_DIR`]. Not a grant: the state directory stays refused
    /// to grants.
    pub code: Option<PathBuf>,
}

/// A secret's value: wiped when dropped, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(zeroize::Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: zeroize::Zeroizing<Vec<u8>>) -> SecretValue {
        SecretValue(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[secret]")
    }
}

/// A secret leased to an invocation (`secret:NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedSecret {
    /// The secret's name, as granted.
    pub name: String,
    pub version: u64,
    pub lease_id: String,
    /// Also given as the environment variable [`secret_env_name`].
    pub env: bool,
    pub value: SecretValue,
}

/// The environment variable a `secret:NAME:env` grant sets: NAME in upper
/// case with `-`, `.` and `/` as `_`, prefixed `SECRET_` (`db-password` →
/// `SECRET_DB_PASSWORD`).
pub fn secret_env_name(name: &str) -> String {
    let body: String = name
        .chars()
        .map(|c| match c {
            '-' | '.' | '/' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("SECRET_{body}")
}

/// Where the jail shows leased secrets.
pub const SECRETS_DIR: &str = "/run/secrets";

/// Where a jailed processor sees its own code.
pub const PROCESSOR_DIR: &str = "/processor";

/// A granted path (`fs:read`/`fs:write`) shown inside the sandbox at
/// another path than its own.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct View {
    /// The granted path on the host: the path of an `fs:` capability of
    /// the invocation.
    pub grant: PathBuf,
    /// Where the program sees it: absolute, without `.` or `..`.
    pub at: PathBuf,
}

impl Invocation {
    /// Where the program sees the granted `path`: its chosen place, or the
    /// path itself.
    pub fn inside_path<'a>(&'a self, path: &'a std::path::Path) -> &'a std::path::Path {
        self.views
            .iter()
            .find(|v| v.grant == path)
            .map_or(path, |v| v.at.as_path())
    }
}

impl Default for Invocation {
    fn default() -> Self {
        Invocation {
            invocation_id: "0".repeat(32),
            argv: Vec::new(),
            env: Vec::new(),
            workdir: PathBuf::from("/"),
            capabilities: Vec::new(),
            limits: EffectiveLimits::default(),
            fuel: None,
            deterministic: false,
            deterministic_seed: None,
            tenant: DEFAULT_TENANT.to_string(),
            redact: Vec::new(),
            modules: Vec::new(),
            views: Vec::new(),
            secrets: Vec::new(),
            code: None,
        }
    }
}

/// The tenant of a run that names none.
pub const DEFAULT_TENANT: &str = "default";

/// True if `name` is a valid tenant name: 1 to 64 ASCII letters, digits,
/// `_`, `-` and `.`, starting with a letter, digit or `_` (so it is safe
/// as a file name).
pub fn valid_tenant(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A module another module may call by name (`module:call:NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRef {
    /// The name callers use (the alphabet of `module:call:NAME`).
    pub name: String,
    /// The module file (absolute).
    pub path: PathBuf,
    /// What the module asks for. A callee gets these grants intersected
    /// with its caller's (never more than the caller has); `None` means
    /// "whatever the caller has".
    pub grants: Option<Vec<Capability>>,
}
