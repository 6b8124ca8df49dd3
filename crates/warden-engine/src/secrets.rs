//! Leasing secrets to an invocation: every `secret:NAME[:env]` among its
//! effective grants becomes a lease (persisted in `STATE/leases`, held by
//! this process, for the run's wall time plus a margin) on the tenant's
//! latest version, decrypted into the invocation for the backend to place;
//! the leases are revoked when the run is over. A crashed Warden's leases
//! are reaped (revoked) by the next one that leases. Values never enter
//! the report or the ledger: those name the secret, its version and the
//! lease id only, and everything else they say is redacted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use warden_core::{LeasedSecret, Report, SecretValue};
use warden_policy::Capability;
use warden_secrets::{Holder, LeaseStore, MasterKey, Redactor, SecretStore};

/// A stored secret beginning with this line is not a value but the
/// definition of a dynamic secret (YAML after the line): each lease gets
/// its own credential, created when it is granted and destroyed when it
/// ends (see docs/dynamic-secrets.md).
pub const DYNAMIC_POSTGRES: &[u8] = b"warden-dynamic-secret: postgres\n";

/// The definition a stored value holds, if it is a dynamic secret.
fn dynamic_definition(
    value: &[u8],
) -> Option<Result<warden_dynsecrets::PostgresDefinition, LeaseFailure>> {
    let yaml = value.strip_prefix(DYNAMIC_POSTGRES)?;
    Some(
        std::str::from_utf8(yaml)
            .map_err(|_| LeaseFailure::Dynamic("the definition is not UTF-8".into()))
            .and_then(|y| {
                warden_dynsecrets::PostgresDefinition::from_yaml(y)
                    .map_err(|e| LeaseFailure::Dynamic(e.to_string()))
            }),
    )
}

/// Checks a dynamic secret's definition before it is stored, and returns
/// what to store.
pub fn dynamic_postgres_value(yaml: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, LeaseFailure> {
    let text = std::str::from_utf8(yaml)
        .map_err(|_| LeaseFailure::Dynamic("the definition is not UTF-8".into()))?;
    let def = warden_dynsecrets::PostgresDefinition::from_yaml(text)
        .map_err(|e| LeaseFailure::Dynamic(e.to_string()))?;
    def.validate()
        .map_err(|e| LeaseFailure::Dynamic(e.to_string()))?;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(DYNAMIC_POSTGRES.len() + yaml.len()));
    out.extend_from_slice(DYNAMIC_POSTGRES);
    out.extend_from_slice(yaml);
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseFailure {
    #[error("dynamic secret: {0}")]
    Dynamic(String),
    #[error("{0}")]
    Secret(#[from] warden_secrets::SecretError),
    #[error("{0}")]
    Lease(#[from] warden_secrets::LeaseError),
    #[error("cannot name this process as the lease holder: {0}")]
    Holder(std::io::Error),
}

/// The leases of one run, revoked by [`Leases::release`] (or, if this
/// process dies first, reaped by the next Warden).
pub struct Leases {
    store: LeaseStore,
    pub granted: Vec<warden_secrets::Lease>,
    pub redactor: Arc<Redactor>,
    /// Credentials made for dynamic secrets, destroyed on release.
    dynamic: Vec<(String, warden_dynsecrets::PostgresDefinition)>,
}

/// The master key file: `WARDEN_MASTER_KEY_FILE` (when the configuration
/// lets it override), else `STATE/master.key`.
pub fn master_key_file() -> Option<PathBuf> {
    std::env::var_os("WARDEN_MASTER_KEY_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The master key of `state`, made on first use.
pub fn master_key(state: &Path) -> Result<MasterKey, LeaseFailure> {
    Ok(MasterKey::load_or_create(
        state,
        master_key_file().as_deref(),
    )?)
}

/// The secret names an invocation's grants ask for, each once.
pub fn granted_secrets(capabilities: &[Capability]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for cap in capabilities {
        let (name, env) = match cap {
            Capability::Secret(n) => (n, false),
            Capability::SecretEnv(n) => (n, true),
            _ => continue,
        };
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 |= env,
            None => out.push((name.clone(), env)),
        }
    }
    out
}

/// Leases every secret `prepared` is granted, for `tenant`, and puts the
/// values into its invocation. `None` when it is granted none.
pub fn lease_for(
    prepared: &mut crate::Prepared,
    state: &Path,
    tenant: &str,
) -> Result<Option<Leases>, LeaseFailure> {
    let wanted = granted_secrets(&prepared.invocation.capabilities);
    if wanted.is_empty() {
        return Ok(None);
    }
    // No core dump of this process from here on can hold a value (and
    // ptrace needs CAP_SYS_PTRACE): the values are about to be in memory.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let now = warden_secrets::unix_now();
    let leases = LeaseStore::open(state)?;
    let master = master_key(state)?;
    let store = SecretStore::open(state, &master)?;
    // Leases of Warden processes that died are revoked before new ones
    // (and the credentials of dynamic ones destroyed).
    if let Ok(reaped) = leases.reap(now) {
        for lease in reaped {
            if let Ok(value) = store.get(&lease.tenant, &lease.secret, Some(lease.version)) {
                if let Some(Ok(def)) = dynamic_definition(&value) {
                    let _ = warden_dynsecrets::PostgresEngine::new().revoke(&def, &lease.id);
                }
            }
        }
    }
    let holder = Holder::current().map_err(LeaseFailure::Holder)?;
    let ttl = warden_secrets::lease::default_ttl(prepared.invocation.limits.wall_time);
    let mut granted = Vec::new();
    let mut secrets = Vec::new();
    let mut dynamic = Vec::new();
    // Parts of a credential a program may print on their own.
    let mut also_redact: Vec<(String, zeroize::Zeroizing<Vec<u8>>)> = Vec::new();
    let result = (|| -> Result<(), LeaseFailure> {
        for (name, env) in &wanted {
            let version = store.resolve_version(tenant, name, None)?;
            let mut value = store.get(tenant, name, Some(version))?;
            let lease = leases.grant(tenant, name, version, ttl, holder, now)?;
            granted.push(lease.clone());
            if let Some(def) = dynamic_definition(&value) {
                let def = def?;
                let credential = warden_dynsecrets::PostgresEngine::new()
                    .issue(&def, &lease.id, lease.expires)
                    .map_err(|e| LeaseFailure::Dynamic(e.to_string()))?;
                also_redact.push((
                    name.clone(),
                    zeroize::Zeroizing::new(credential.password().as_bytes().to_vec()),
                ));
                value = zeroize::Zeroizing::new(credential.render().as_bytes().to_vec());
                dynamic.push((lease.id.clone(), def));
            }
            secrets.push(LeasedSecret {
                name: name.clone(),
                version,
                lease_id: lease.id.clone(),
                env: *env,
                value: SecretValue::new(value),
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (id, def) in &dynamic {
            let _ = warden_dynsecrets::PostgresEngine::new().revoke(def, id);
        }
        for lease in &granted {
            let _ = leases.revoke(&lease.id, now);
        }
        return Err(e);
    }
    let pairs: Vec<(&str, &[u8])> = secrets
        .iter()
        .map(|s| (s.name.as_str(), s.value.expose()))
        .chain(also_redact.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
        .collect();
    let redactor = Arc::new(Redactor::new(&pairs));
    // The WASM backend's log redaction takes text values.
    prepared.invocation.redact.extend(
        secrets
            .iter()
            .filter_map(|s| std::str::from_utf8(s.value.expose()).ok())
            .map(str::to_string),
    );
    prepared.invocation.secrets = secrets;
    Ok(Some(Leases {
        store: leases,
        granted,
        redactor,
        dynamic,
    }))
}

impl Leases {
    /// Redacts every string of `report` a secret could have reached, and
    /// names the leases in it.
    pub fn redact_report(&self, report: &mut Report) {
        report.redact_with(&|s: &str| self.redactor.redact_str(s));
        report.leases = self
            .granted
            .iter()
            .map(|l| warden_core::LeaseRef {
                secret: l.secret.clone(),
                version: l.version,
                lease: l.id.clone(),
            })
            .collect();
    }

    /// `text` redacted.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact_str(text)
    }

    /// Revokes the run's leases, and destroys their dynamic credentials:
    /// it is over.
    pub fn release(&self) {
        for (id, def) in &self.dynamic {
            let _ = warden_dynsecrets::PostgresEngine::new().revoke(def, id);
        }
        let now = warden_secrets::unix_now();
        for lease in &self.granted {
            let _ = self.store.revoke(&lease.id, now);
        }
    }
}
