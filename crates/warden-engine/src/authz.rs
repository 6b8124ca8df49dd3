//! The one authorization call every command makes before it acts: the
//! RBAC file in force (`rbac` in `warden.yaml`, else `STATE/rbac.yaml`),
//! loaded, compiled to Cedar and validated once per process, decides. With
//! no RBAC file, nothing is enforced (a single-user machine: the OS user
//! may do anything, as before). A denial names its deciding rule and is a
//! ledger entry with the principal; the use of a time-bound override, an
//! override that appeared in the file (granted) and one that lapsed are
//! ledger entries too.

use std::path::{Path, PathBuf};

use warden_authz::{Action, Authz, Request, Resource, ResourceKind};

use crate::audit::Audit;
use crate::identity::Actor;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: invalid RBAC file: {first}")]
    Invalid { path: PathBuf, first: String },
}

/// The RBAC file in force, if there is one.
pub struct Gate {
    authz: Option<Authz>,
    state: PathBuf,
}

/// Why an action was refused, as the caller reports it (status
/// `refused`, exit 126).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Seen {
    /// `rules[N]@expires` of every override seen so far.
    overrides: Vec<String>,
    /// When overrides were last looked at, unix seconds.
    checked_at: i64,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Gate {
    /// Loads the RBAC file in force for `state` (signed, when the trust
    /// store says configuration must be).
    pub fn load(state: &Path) -> Result<Gate, GateError> {
        let path = crate::config::current(state).rbac;
        let bytes = match crate::config::read_trusted(&path, warden_trust::ArtifactType::Config) {
            Ok(b) => b,
            Err(crate::config::ConfigError::Io(_, e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Gate {
                    authz: None,
                    state: state.to_path_buf(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8(bytes).map_err(|_| GateError::Invalid {
            path: path.clone(),
            first: "not valid UTF-8".into(),
        })?;
        let origin = path.display().to_string();
        let authz = Authz::load(&text, &origin).map_err(|d| GateError::Invalid {
            path: path.clone(),
            first: d
                .iter()
                .map(|d| d.to_string())
                .next()
                .unwrap_or_else(|| "rejected".into()),
        })?;
        Ok(Gate {
            authz: Some(authz),
            state: state.to_path_buf(),
        })
    }

    /// Whether an RBAC file is in force.
    pub fn enforcing(&self) -> bool {
        self.authz.is_some()
    }

    /// The RBAC principal of `actor`: its name, or for the OS user the
    /// principal `os_users` maps it to (else `os:NAME`, bound to nothing).
    pub fn principal_of(&self, actor: &Actor) -> String {
        match (&self.authz, actor.os_user) {
            (Some(a), true) => {
                let user = actor.principal.trim_start_matches("os:");
                a.os_principal(user)
                    .map_or_else(|| actor.principal.clone(), str::to_string)
            }
            _ => actor.principal.clone(),
        }
    }

    /// Asks whether `actor`, acting for `tenant`, may do `action` to the
    /// resource; a denial (and the use of an override) is recorded in
    /// `audit` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        actor: &Actor,
        tenant: &str,
        action: Action,
        resource: Resource,
        capabilities: &[String],
        input_bytes: u64,
        audit: Option<&mut Audit>,
    ) -> Result<(), Denied> {
        let Some(authz) = &self.authz else {
            return Ok(());
        };
        let principal = self.principal_of(actor);
        let request = Request {
            principal: principal.clone(),
            tenant: tenant.to_string(),
            action,
            resource: resource.clone(),
            capabilities: capabilities.to_vec(),
            input_bytes,
            now: now(),
        };
        let decision = authz.decide(&request);
        let rules: Vec<String> = decision.deciding.iter().map(|r| r.to_string()).collect();
        let event = |what: &str| {
            serde_json::json!({
                "action": what,
                "principal": actor.principal,
                "rbac_principal": principal,
                "tenant": tenant,
                "requested": action.as_str(),
                "resource": {"kind": resource.kind.as_str(), "name": resource.name, "tenant": resource.tenant},
                "capabilities": capabilities,
                "reason": decision.reason,
                "rules": rules,
            })
        };
        if let Some(audit) = audit {
            self.observe_overrides(authz, audit);
            if !decision.allowed {
                let _ = audit.record("authz", event("deny"));
            }
            for o in decision.overrides_used() {
                let mut e = event("override.used");
                e["override"] = o.to_string().into();
                let _ = audit.record("authz", e);
            }
        }
        if decision.allowed {
            return Ok(());
        }
        let by = match decision.deciding.first() {
            Some(rule) => format!(" (deciding rule {rule})"),
            None => String::new(),
        };
        Err(Denied(format!(
            "RBAC refuses {} {} {:?} to {principal} in tenant {tenant}: {}{by}",
            action.as_str(),
            resource.kind.as_str(),
            resource.name,
            decision.reason
        )))
    }

    /// Records overrides that appeared in the file since the last look
    /// (granted) and those that lapsed since then.
    fn observe_overrides(&self, authz: &Authz, audit: &mut Audit) {
        let path = self.state.join("authz-overrides.json");
        let mut seen: Seen = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let now = now();
        let mut changed = false;
        for o in authz.overrides() {
            let key = format!("{}@{}", o.id, o.expires.unwrap_or(0));
            if !seen.overrides.contains(&key) {
                let _ = audit.record(
                    "authz",
                    serde_json::json!({"action": "override.granted", "override": o.to_string(), "expires": o.expires}),
                );
                seen.overrides.push(key);
                changed = true;
            }
        }
        if seen.checked_at > 0 {
            for o in authz.lapsed_between(seen.checked_at, now) {
                let _ = audit.record(
                    "authz",
                    serde_json::json!({"action": "override.lapsed", "override": o.to_string(), "expires": o.expires}),
                );
                changed = true;
            }
        }
        if changed || now > seen.checked_at {
            seen.checked_at = now;
            if let Ok(bytes) = serde_json::to_vec(&seen) {
                let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
                if std::fs::write(&tmp, bytes).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        }
    }
}

/// A resource of `kind` named `name` in `tenant`.
pub fn resource(kind: ResourceKind, name: &str, tenant: &str) -> Resource {
    Resource::new(kind, name, tenant)
}
