//! `warden secret put|list|rm` and `warden lease list|revoke`. Values come
//! from stdin or `--from-file`, never from the command line, and are never
//! printed; every change is a ledger entry naming the secret and version.

use std::io::Write;

use warden_engine::audit::Audit;
use warden_secrets::{LeaseStore, SecretStore, MAX_SECRET_LEN};

use crate::app::{acting, state_dir};
use crate::cli::{LeaseCommand, SecretCommand};

/// The tenant a command acts for: `--tenant` (the OS user may name any;
/// a principal only its own), else the actor's.
fn tenant_for(given: Option<String>) -> anyhow::Result<(warden_engine::identity::Actor, String)> {
    let actor = acting().map_err(|e| anyhow::anyhow!(e))?;
    let tenant = match given {
        Some(t) if !actor.os_user && t != actor.tenant => anyhow::bail!(
            "principal {} belongs to tenant {}, not {t}",
            actor.principal,
            actor.tenant
        ),
        Some(t) => t,
        None => actor.tenant.clone(),
    };
    Ok((actor, tenant))
}

fn record(
    audit: &mut Audit,
    actor: &warden_engine::identity::Actor,
    tenant: &str,
    mut event: serde_json::Value,
) -> anyhow::Result<u64> {
    event["principal"] = actor.principal.clone().into();
    event["tenant"] = tenant.into();
    Ok(audit
        .record("secret", event)
        .map_err(|e| {
            anyhow::anyhow!("the change was made but its ledger entry could not be written: {e}")
        })?
        .index)
}

pub(crate) fn secret(command: SecretCommand) -> anyhow::Result<()> {
    let state = state_dir()?;
    let mut out = std::io::stdout().lock();
    match command {
        SecretCommand::Put {
            name,
            tenant,
            from_file,
            dynamic,
        } => {
            let (actor, tenant) = tenant_for(tenant)?;
            let mut audit = Audit::open(&state)?;
            crate::app::authorize(
                &actor,
                &tenant,
                warden_authz::Action::SecretPut,
                &name,
                Some(&mut audit),
            )?;
            let value = match &from_file {
                Some(path) => {
                    let f = std::fs::File::open(path)
                        .map_err(|e| anyhow::anyhow!("--from-file {}: {e}", path.display()))?;
                    warden_secrets::read_value(f, MAX_SECRET_LEN)?
                }
                None => warden_secrets::read_value(std::io::stdin().lock(), MAX_SECRET_LEN)?,
            };
            let value = match dynamic.as_deref() {
                None => value,
                Some("postgres") => warden_engine::secrets::dynamic_postgres_value(&value)?,
                Some(other) => {
                    anyhow::bail!("--dynamic {other:?}: the one kind of dynamic secret is postgres")
                }
            };
            let master = warden_engine::secrets::master_key(&state)?;
            let store = SecretStore::open(&state, &master)?;
            let version = store.put(&tenant, &name, &value)?;
            let index = record(
                &mut audit,
                &actor,
                &tenant,
                serde_json::json!({"action": "put", "name": name, "version": version, "dynamic": dynamic}),
            )?;
            writeln!(
                out,
                "stored {name} version {version} for tenant {tenant} (audit entry {index})"
            )?;
        }
        SecretCommand::List { tenant } => {
            let (_, tenant) = tenant_for(tenant)?;
            let master = warden_engine::secrets::master_key(&state)?;
            let store = SecretStore::open(&state, &master)?;
            for s in store.list(&tenant)? {
                let versions: Vec<String> = s.versions.iter().map(u64::to_string).collect();
                writeln!(
                    out,
                    "{}\t{}\tversions {}",
                    s.name,
                    s.latest,
                    versions.join(",")
                )?;
            }
        }
        SecretCommand::Rm { name, tenant } => {
            let (actor, tenant) = tenant_for(tenant)?;
            let mut audit = Audit::open(&state)?;
            crate::app::authorize(
                &actor,
                &tenant,
                warden_authz::Action::SecretPut,
                &name,
                Some(&mut audit),
            )?;
            let master = warden_engine::secrets::master_key(&state)?;
            let store = SecretStore::open(&state, &master)?;
            store.remove(&tenant, &name)?;
            let index = record(
                &mut audit,
                &actor,
                &tenant,
                serde_json::json!({"action": "rm", "name": name}),
            )?;
            writeln!(
                out,
                "removed {name} of tenant {tenant} (audit entry {index})"
            )?;
        }
    }
    Ok(())
}

pub(crate) fn lease(command: LeaseCommand) -> anyhow::Result<()> {
    let state = state_dir()?;
    let leases = LeaseStore::open(&state)?;
    let now = warden_secrets::unix_now();
    let mut out = std::io::stdout().lock();
    let actor = acting().map_err(|e| anyhow::anyhow!(e))?;
    // A principal sees and revokes its own tenant's leases only.
    let only = (!actor.os_user).then(|| actor.tenant.clone());
    match command {
        LeaseCommand::List => {
            for l in leases.list(only.as_deref())? {
                let status = match l.status(now) {
                    Ok(()) => "active".to_string(),
                    Err(e) => e.to_string(),
                };
                writeln!(
                    out,
                    "{}\t{}\t{}@{}\texpires {}\t{status}",
                    l.id,
                    l.tenant,
                    l.secret,
                    l.version,
                    warden_trust::truststore::rfc3339(l.expires)
                )?;
            }
        }
        LeaseCommand::Revoke { id } => {
            let lease = leases.get(&id)?;
            if only.as_ref().is_some_and(|t| *t != lease.tenant) {
                anyhow::bail!("no lease {id}");
            }
            let mut audit = Audit::open(&state)?;
            crate::app::authorize(
                &actor,
                &lease.tenant,
                warden_authz::Action::LeaseRevoke,
                &lease.id,
                Some(&mut audit),
            )?;
            let lease = leases.revoke(&id, now)?;
            let index = record(
                &mut audit,
                &actor,
                &lease.tenant.clone(),
                serde_json::json!({"action": "lease.revoke", "lease": lease.id, "name": lease.secret, "version": lease.version}),
            )?;
            writeln!(out, "revoked lease {} (audit entry {index})", lease.id)?;
        }
    }
    Ok(())
}
