//! A fresh state directory gets a tenant `default` and a principal `dev`
//! (role `admin`) whose API key is printed once, so that `warden serve`
//! works with no setup.

use std::path::Path;

use warden_engine::audit::Audit;
use warden_engine::identity::{Identity, IdentityError};

/// The development principal's name.
pub const DEV_PRINCIPAL: &str = "dev";
/// The role it is given.
pub const DEV_ROLE: &str = "admin";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("the development principal was made but its ledger entry could not be written: {0}")]
    Audit(#[from] warden_engine::audit::AuditError),
}

/// When the state has no tenants and no principals: makes them and
/// returns the key (shown once; only its SHA-256 is kept). Each change is
/// a ledger entry, as `warden tenant add` / `principal add` make.
pub fn bootstrap(state: &Path) -> Result<Option<zeroize::Zeroizing<String>>, BootstrapError> {
    let identity = Identity::open(state)?;
    let file = identity.read()?;
    if !file.tenants.is_empty() || !file.principals.is_empty() {
        return Ok(None);
    }
    let tenant = warden_core::DEFAULT_TENANT;
    identity.add_tenant(tenant)?;
    let (p, key) = identity.add_principal(DEV_PRINCIPAL, tenant, &[DEV_ROLE.to_string()])?;
    let actor = warden_engine::audit::os_principal();
    let mut audit = Audit::open(state)?;
    audit.record_many(
        "identity",
        vec![
            serde_json::json!({"action": "tenant.add", "name": tenant, "principal": actor, "tenant": tenant, "by": "warden serve"}),
            serde_json::json!({
                "action": "principal.add",
                "name": p.name,
                "of_tenant": p.tenant,
                "roles": p.roles,
                "key_sha256": p.key_sha256,
                "principal": actor,
                "tenant": tenant,
                "by": "warden serve",
            }),
        ],
    )?;
    Ok(Some(key))
}
