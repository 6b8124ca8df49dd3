//! Trusted configuration: `STATE/warden.yaml` (or `--config FILE`) holds
//! the settings that matter for security, and says which `WARDEN_*`
//! environment variables may override which of them; the others are
//! ignored with a warning (removed from the process before anything reads
//! them). With `require_signed_config: true` in the trust store, the
//! configuration, every policy file (each of an `extends` chain) and the
//! RBAC file must carry a valid signature (`FILE.sig`: type `config`, or
//! `policy` for a policy) before any field of them is used: the bytes
//! verified are the bytes parsed.
//!
//! ```yaml
//! require_signed: true            # processors need a trusted signature, whatever the policy
//! policy: /etc/warden/policy.yaml # the policy in force when a command names none
//! rbac: /etc/warden/rbac.yaml     # default STATE/rbac.yaml
//! trust_store: /etc/warden/trust.json  # default STATE/trust/keys.json
//! ledger:
//!   origin: warden.example.com/node-1  # for a new ledger
//!   checkpoint_every: 1000
//!   checkpoint_interval: 10m
//! env_overrides:                  # variable: the setting it may override
//!   WARDEN_POLICY: policy
//! serve:                          # `warden serve` only (see docs/serve.md)
//!   quotas:
//!     default: {concurrent_runs: 8, runs_per_minute: 600}
//!     tenants:
//!       acme: {concurrent_runs: 2, runs_per_minute: 60, cpu_seconds_per_hour: 3600}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use warden_trust::ArtifactType;

/// Largest configuration, RBAC or policy file verified as signed.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Each environment variable that can stand for a setting, and the
/// setting's name in `env_overrides`.
pub const ENV_SETTINGS: [(&str, &str); 8] = [
    ("WARDEN_POLICY", "policy"),
    ("WARDEN_RBAC", "rbac"),
    ("WARDEN_TRUST_STORE", "trust_store"),
    ("WARDEN_REQUIRE_SIGNED", "require_signed"),
    ("WARDEN_LEDGER_ORIGIN", "ledger.origin"),
    ("WARDEN_CACHE_DIR", "cache_dir"),
    ("WARDEN_KV_DIR", "kv_dir"),
    ("WARDEN_MASTER_KEY_FILE", "master_key_file"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
    /// A parse error with its place: `FILE:LINE:COLUMN: message`.
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: refused: the trust store says require_signed_config, and {why}")]
    Unsigned { path: PathBuf, why: String },
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    require_signed: Option<bool>,
    policy: Option<PathBuf>,
    rbac: Option<PathBuf>,
    trust_store: Option<PathBuf>,
    ledger: Option<LedgerSection>,
    #[serde(default)]
    env_overrides: BTreeMap<String, String>,
    serve: Option<ServeSection>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServeSection {
    quotas: Option<QuotasSection>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QuotasSection {
    default: Option<Quota>,
    #[serde(default)]
    tenants: BTreeMap<String, Quota>,
}

/// One tenant's quotas (`serve.quotas` in `warden.yaml`); a field left out
/// is no limit (or, under `tenants:`, the `default:` one). Zero is refused
/// when parsed: leave a quota out for none.
#[derive(serde::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Runs of the tenant admitted at once (waiting for a worker or running).
    pub concurrent_runs: Option<std::num::NonZeroU32>,
    /// Runs admitted in any 60 s.
    pub runs_per_minute: Option<std::num::NonZeroU32>,
    /// Accepted, not enforced: the service has no sandboxes yet.
    pub active_sandboxes: Option<std::num::NonZeroU32>,
    /// CPU seconds the tenant's finished runs used in the last hour (their
    /// reports' `cpu_ms`); a run is admitted while the sum is under it.
    pub cpu_seconds_per_hour: Option<std::num::NonZeroU64>,
}

impl Quota {
    /// `self`, with the fields it leaves out taken from `base`.
    pub fn over(self, base: Quota) -> Quota {
        Quota {
            concurrent_runs: self.concurrent_runs.or(base.concurrent_runs),
            runs_per_minute: self.runs_per_minute.or(base.runs_per_minute),
            active_sandboxes: self.active_sandboxes.or(base.active_sandboxes),
            cpu_seconds_per_hour: self.cpu_seconds_per_hour.or(base.cpu_seconds_per_hour),
        }
    }
}

/// The per-tenant quotas of `warden serve`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    pub default: Quota,
    pub tenants: BTreeMap<String, Quota>,
}

impl Quotas {
    /// The quotas of `tenant`: its own, field by field over the default.
    pub fn of(&self, tenant: &str) -> Quota {
        match self.tenants.get(tenant) {
            Some(q) => q.over(self.default),
            None => self.default,
        }
    }
}

/// The settings of `warden serve` (`serve:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeConfig {
    pub quotas: Quotas,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LedgerSection {
    origin: Option<String>,
    checkpoint_every: Option<u64>,
    checkpoint_interval: Option<String>,
}

/// The settings in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub state: PathBuf,
    /// The file they came from, if there is one.
    pub file: Option<PathBuf>,
    pub require_signed: bool,
    pub policy: Option<PathBuf>,
    pub rbac: PathBuf,
    pub trust_store: PathBuf,
    pub origin: Option<String>,
    pub audit: crate::audit::AuditConfig,
    /// The trust store says configuration must be signed.
    pub signed_config: bool,
    /// `serve:`, for `warden serve`.
    pub serve: ServeConfig,
}

impl Config {
    /// The defaults of a state directory with no `warden.yaml`.
    pub fn defaults(state: &Path) -> Config {
        Config {
            state: state.to_path_buf(),
            file: None,
            require_signed: false,
            policy: None,
            rbac: state.join("rbac.yaml"),
            trust_store: state.join("trust/keys.json"),
            origin: None,
            audit: crate::audit::AuditConfig::default(),
            signed_config: false,
            serve: ServeConfig::default(),
        }
    }

    /// The policy in force when a command names none: the configuration's
    /// `policy`, else `STATE/policy.yaml` if there is one.
    pub fn default_policy(&self) -> Option<PathBuf> {
        self.policy.clone().or_else(|| {
            let p = self.state.join("policy.yaml");
            p.is_file().then_some(p)
        })
    }
}

static SIGNED_SOURCES: OnceLock<PathBuf> = OnceLock::new();

/// From now on (for this process), every policy and RBAC file read must be
/// signed, checked against the trust store at `trust_store`.
pub fn require_signed_sources(trust_store: &Path) {
    let _ = SIGNED_SOURCES.set(trust_store.to_path_buf());
}

/// Whether [`require_signed_sources`] was called.
pub fn signed_sources_required() -> bool {
    SIGNED_SOURCES.get().is_some()
}

/// The trust store signed sources are checked against, once
/// [`require_signed_sources`] was called.
pub fn signed_sources() -> Option<&'static Path> {
    SIGNED_SOURCES.get().map(PathBuf::as_path)
}

/// Reads a policy or RBAC file once: the returned bytes are the ones
/// checked against `FILE.sig` when signed sources are required.
pub fn read_trusted(path: &Path, ty: ArtifactType) -> Result<Vec<u8>, ConfigError> {
    let bytes = read_capped(path)?;
    if let Some(store) = SIGNED_SOURCES.get() {
        verify_source(store, path, &bytes, ty)?;
    }
    Ok(bytes)
}

fn read_capped(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let io = |e| ConfigError::Io(path.to_path_buf(), e);
    let file = std::fs::File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(ConfigError::Invalid(
            path.to_path_buf(),
            "not a regular file".into(),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Invalid(
            path.to_path_buf(),
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

fn verify_source(
    trust_store: &Path,
    path: &Path,
    bytes: &[u8],
    ty: ArtifactType,
) -> Result<(), ConfigError> {
    use sha2::Digest as _;
    let mut sig = path.as_os_str().to_owned();
    sig.push(".sig");
    let sig = PathBuf::from(sig);
    let unsigned = |why: String| ConfigError::Unsigned {
        path: path.to_path_buf(),
        why,
    };
    let envelope = read_capped(&sig).map_err(|e| {
        unsigned(format!(
            "its signature {} cannot be read ({e})",
            sig.display()
        ))
    })?;
    let store = warden_trust::truststore::TrustStore::open_file(trust_store)
        .map_err(|e| unsigned(format!("the trust store cannot be read ({e})")))?;
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    store
        .verify(&envelope, &digest, Some(ty), now)
        .map(drop)
        .map_err(|e| {
            unsigned(format!(
                "its {} signature does not verify: {e}",
                ty.as_str()
            ))
        })
}

/// Loads the configuration of `state` (`explicit`: `--config FILE`), and
/// applies its environment rule: with a configuration file, a settings
/// variable it does not list under `env_overrides` is removed from this
/// process's environment (a warning says so). Returns the settings and the
/// warnings. Call it once, at start, before other threads exist.
pub fn load(state: &Path, explicit: Option<&Path>) -> Result<(Config, Vec<String>), ConfigError> {
    let mut config = Config::defaults(state);
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| state.join("warden.yaml"));
    let trust_default = config.trust_store.clone();
    let signed = warden_trust::truststore::TrustStore::open_file(&trust_default)
        .map(|s| s.file.require_signed_config)
        .unwrap_or(false);
    let bytes = match read_capped(&path) {
        Ok(b) => Some(b),
        Err(ConfigError::Io(_, e))
            if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    let mut warnings = Vec::new();
    let Some(bytes) = bytes else {
        config.signed_config = signed;
        if signed {
            require_signed_sources(&config.trust_store);
        }
        return Ok((config, warnings));
    };
    // Checked before any field is read.
    if signed {
        verify_source(&trust_default, &path, &bytes, ArtifactType::Config)?;
    }
    let invalid = |m: String| ConfigError::Invalid(path.clone(), m);
    let text = String::from_utf8(bytes).map_err(|_| invalid("not valid UTF-8".into()))?;
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_saphyr::from_str(&text).map_err(|e| parse_error(&path, &e))?
    };
    let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    for (var, setting) in &file.env_overrides {
        match ENV_SETTINGS.iter().find(|(v, _)| v == var) {
            Some((_, s)) if s == setting => {}
            Some((_, s)) => {
                return Err(invalid(format!(
                    "env_overrides: {var} stands for {s}, not {setting}"
                )))
            }
            None => {
                return Err(invalid(format!(
                    "env_overrides: {var} is not a settings variable (expected one of {})",
                    ENV_SETTINGS.map(|(v, _)| v).join(", ")
                )))
            }
        }
    }
    let allowed = |var: &str| file.env_overrides.contains_key(var);
    for (var, setting) in ENV_SETTINGS {
        if std::env::var_os(var).is_some() && !allowed(var) {
            warnings.push(format!(
                "{var} is ignored: {} does not let it override {setting} (env_overrides)",
                path.display()
            ));
            std::env::remove_var(var);
        }
    }
    let env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    config.file = Some(path.clone());
    config.require_signed = match env("WARDEN_REQUIRE_SIGNED") {
        Some(v) => v == "true" || v == "1",
        None => file.require_signed.unwrap_or(false),
    };
    config.policy = env("WARDEN_POLICY")
        .map(PathBuf::from)
        .or(file.policy.map(abs));
    if let Some(r) = env("WARDEN_RBAC").map(PathBuf::from).or(file.rbac.map(abs)) {
        config.rbac = r;
    }
    if let Some(t) = env("WARDEN_TRUST_STORE")
        .map(PathBuf::from)
        .or(file.trust_store.map(abs))
    {
        config.trust_store = t;
    }
    let ledger = file.ledger.unwrap_or_default();
    config.origin = env("WARDEN_LEDGER_ORIGIN")
        .map(|o| o.to_string_lossy().into_owned())
        .or(ledger.origin);
    if let Some(n) = ledger.checkpoint_every {
        config.audit.checkpoint_every = n;
    }
    if let Some(t) = ledger.checkpoint_interval {
        let d = warden_policy::parse_duration(&t)
            .map_err(|e| invalid(format!("ledger.checkpoint_interval: {e}")))?;
        config.audit.checkpoint_interval = Some(d);
    }
    if let Some(quotas) = file.serve.and_then(|s| s.quotas) {
        config.serve.quotas = Quotas {
            default: quotas.default.unwrap_or_default(),
            tenants: quotas.tenants,
        };
    }
    config.signed_config = signed;
    if signed {
        require_signed_sources(&config.trust_store);
    }
    Ok((config, warnings))
}

/// A YAML error as one line, at its place when the parser knows it.
fn parse_error(path: &Path, e: &serde_saphyr::Error) -> ConfigError {
    let message = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match e.location() {
        Some(at) if at.line() > 0 => {
            // The parser's text repeats the place and quotes the source
            // after ` --> `: keep the message alone.
            let head = message.split(" --> ").next().unwrap_or(&message);
            let head = head.strip_prefix("error: ").unwrap_or(head);
            let place = format!("line {} column {}: ", at.line(), at.column());
            let head = head.strip_prefix(place.as_str()).unwrap_or(head);
            ConfigError::At {
                path: path.to_path_buf(),
                line: at.line(),
                column: at.column(),
                message: head.to_string(),
            }
        }
        _ => ConfigError::Invalid(path.to_path_buf(), message),
    }
}

static CURRENT: OnceLock<Config> = OnceLock::new();

/// Makes `config` this process's settings (the first call wins).
pub fn install(config: Config) {
    let _ = CURRENT.set(config);
}

/// This process's settings: those [`install`]ed, else the defaults of
/// `state`.
pub fn current(state: &Path) -> Config {
    match CURRENT.get() {
        Some(c) if c.state == state => c.clone(),
        _ => Config::defaults(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "warden-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("warden.yaml"), text).expect("write");
        let loaded = load(&dir, None).map(|(c, _)| c);
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    #[test]
    fn serve_quotas_are_read_tenant_over_default() {
        let c = load_text(
            "serve:\n  quotas:\n    default: {concurrent_runs: 4, runs_per_minute: 100}\n    tenants:\n      acme: {concurrent_runs: 1, cpu_seconds_per_hour: 60, active_sandboxes: 2}\n",
        )
        .expect("valid");
        let q = &c.serve.quotas;
        let acme = q.of("acme");
        assert_eq!(acme.concurrent_runs.map(|n| n.get()), Some(1));
        assert_eq!(acme.runs_per_minute.map(|n| n.get()), Some(100));
        assert_eq!(acme.cpu_seconds_per_hour.map(|n| n.get()), Some(60));
        assert_eq!(acme.active_sandboxes.map(|n| n.get()), Some(2));
        let other = q.of("other");
        assert_eq!(other.concurrent_runs.map(|n| n.get()), Some(4));
        assert_eq!(other.cpu_seconds_per_hour, None);
        // No serve: section, no quotas.
        assert_eq!(load_text("").expect("empty").serve, ServeConfig::default());
    }

    #[test]
    fn a_bad_serve_section_names_file_line_and_key() {
        for (text, line, word) in [
            ("serve:\n  quota: {}\n", 2, "quota"),
            (
                "serve:\n  quotas:\n    tenants:\n      acme: {concurent_runs: 1}\n",
                4,
                "concurent_runs",
            ),
            (
                "serve:\n  quotas:\n    default:\n      runs_per_minute: 0\n",
                4,
                "",
            ),
            (
                "serve:\n  quotas:\n    default:\n      runs_per_minute: lots\n",
                4,
                "",
            ),
        ] {
            let e = load_text(text).expect_err(text).to_string();
            assert!(e.contains(&format!("warden.yaml:{line}:")), "{text:?}: {e}");
            assert!(e.contains(word), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
