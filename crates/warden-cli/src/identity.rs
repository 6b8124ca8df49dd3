//! `warden tenant add|list` and `warden principal add|list|revoke`; every
//! change is a ledger entry.

use std::io::Write;

use warden_engine::audit::Audit;
use warden_engine::identity::Identity;

use crate::app::{acting, state_dir};
use crate::cli::{PrincipalCommand, TenantCommand};
use crate::evidence::now_secs;

fn rfc3339(t: u64) -> String {
    warden_trust::truststore::rfc3339(t)
}

/// Records an identity change, naming who made it.
fn record(audit: &mut Audit, mut event: serde_json::Value) -> anyhow::Result<u64> {
    let actor = acting().map_err(|e| anyhow::anyhow!(e))?;
    event["principal"] = actor.principal.into();
    event["tenant"] = actor.tenant.into();
    let r = audit.record("identity", event).map_err(|e| {
        anyhow::anyhow!("the change was made but its ledger entry could not be written: {e}")
    })?;
    Ok(r.index)
}

pub(crate) fn tenant(command: TenantCommand) -> anyhow::Result<()> {
    let state = state_dir()?;
    let identity = Identity::open(&state)?;
    let mut out = std::io::stdout().lock();
    match command {
        TenantCommand::Add { name } => {
            let mut audit = Audit::open(&state)?;
            let actor = acting().map_err(|e| anyhow::anyhow!(e))?;
            crate::app::authorize(
                &actor,
                &name,
                warden_authz::Action::TenantAdmin,
                &name,
                Some(&mut audit),
            )?;
            let t = identity.add_tenant(&name)?;
            let index = record(
                &mut audit,
                serde_json::json!({"action": "tenant.add", "name": t.name}),
            )?;
            writeln!(out, "added tenant {} (audit entry {index})", t.name)?;
        }
        TenantCommand::List => {
            for t in identity.read()?.tenants {
                writeln!(out, "{}\t{}", t.name, rfc3339(t.created_at))?;
            }
        }
    }
    Ok(())
}

pub(crate) fn principal(command: PrincipalCommand) -> anyhow::Result<()> {
    let state = state_dir()?;
    let identity = Identity::open(&state)?;
    let mut out = std::io::stdout().lock();
    match command {
        PrincipalCommand::Add {
            name,
            tenant,
            roles,
        } => {
            let mut audit = Audit::open(&state)?;
            let actor = acting().map_err(|e| anyhow::anyhow!(e))?;
            crate::app::authorize(
                &actor,
                &tenant,
                warden_authz::Action::TenantAdmin,
                &tenant,
                Some(&mut audit),
            )?;
            let (p, key) = identity.add_principal(&name, &tenant, &roles)?;
            let index = record(
                &mut audit,
                serde_json::json!({
                    "action": "principal.add",
                    "name": p.name,
                    "of_tenant": p.tenant,
                    "roles": p.roles,
                    "key_sha256": p.key_sha256,
                }),
            )?;
            // The key alone on stdout (for scripts), once.
            writeln!(out, "{}", &*key)?;
            crate::app::say(format!(
                "principal {} of tenant {} added (audit entry {index}); its API key above is shown only now: give it as WARDEN_API_KEY",
                p.name, p.tenant
            ));
        }
        PrincipalCommand::List => {
            for p in identity.read()?.principals {
                let status = match p.revoked_at {
                    Some(t) => format!("revoked {}", rfc3339(t)),
                    None => "active".into(),
                };
                writeln!(
                    out,
                    "{}\t{}\t{}\t{status}",
                    p.name,
                    p.tenant,
                    if p.roles.is_empty() {
                        "-".to_string()
                    } else {
                        p.roles.join(",")
                    }
                )?;
            }
        }
        PrincipalCommand::Revoke { name } => {
            let mut audit = Audit::open(&state)?;
            let actor = acting().map_err(|e| anyhow::anyhow!(e))?;
            let of = identity
                .read()?
                .principals
                .into_iter()
                .find(|p| p.name == name)
                .map(|p| p.tenant)
                .ok_or_else(|| anyhow::anyhow!("no principal {name}"))?;
            crate::app::authorize(
                &actor,
                &of,
                warden_authz::Action::TenantAdmin,
                &of,
                Some(&mut audit),
            )?;
            let p = identity.revoke_principal(&name)?;
            let index = record(
                &mut audit,
                serde_json::json!({"action": "principal.revoke", "name": p.name}),
            )?;
            writeln!(
                out,
                "revoked principal {} at {} (audit entry {index})",
                p.name,
                rfc3339(p.revoked_at.unwrap_or_else(now_secs))
            )?;
        }
    }
    Ok(())
}
