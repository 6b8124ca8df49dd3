//! Tenants and principals (`STATE/identity/identity.json`): who may act,
//! for which tenant. A principal's API key — 256 random bits, shown once —
//! is stored only as its SHA-256, so the file does not hand out keys; a
//! key this long needs no slow hash. Changes are read-modify-write under
//! an exclusive lock on `identity.lock` and written by rename, so
//! concurrent `warden principal add`s lose nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The prefix of every API key, so that a leaked one is recognisable.
pub const KEY_PREFIX: &str = "wdn_";

/// Largest identity file read.
const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: not a Warden identity file: {1}")]
    Malformed(PathBuf, String),
    #[error("invalid {what} name {name:?}: expected 1-64 ASCII letters, digits, '_', '-' or '.', not starting with '-' or '.'")]
    BadName { what: &'static str, name: String },
    #[error("tenant {0} already exists")]
    TenantExists(String),
    #[error("no tenant {0} (add it with `warden tenant add {0}`)")]
    NoTenant(String),
    #[error("principal {0} already exists")]
    PrincipalExists(String),
    #[error("no principal {0}")]
    NoPrincipal(String),
    #[error("invalid role name {0:?}")]
    BadRole(String),
    #[error("WARDEN_API_KEY is not the key of any principal")]
    UnknownKey,
    #[error("WARDEN_API_KEY belongs to principal {0}, which was revoked")]
    RevokedKey(String),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    pub version: u32,
    pub tenants: Vec<Tenant>,
    pub principals: Vec<Principal>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub name: String,
    pub created_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub name: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// Hex SHA-256 of the API key.
    pub key_sha256: String,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// Who is acting, as the engine and the ledger name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// A principal's name, or `os:USER` for the OS user.
    pub principal: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// True for the OS user (no API key given).
    pub os_user: bool,
}

/// The identity store of a state directory.
pub struct Identity {
    path: PathBuf,
    lock: PathBuf,
}

/// A fresh API key: the prefix and 32 random bytes, base64url.
fn new_key() -> Result<String, IdentityError> {
    use base64::Engine as _;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rustix::rand::getrandom(&mut bytes[..], rustix::rand::GetRandomFlags::empty())
        .map_err(|e| IdentityError::Io(PathBuf::from("getrandom"), e.into()))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..])
    ))
}

fn key_hash(key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(key.trim().as_bytes()))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn check_name(what: &'static str, name: &str) -> Result<(), IdentityError> {
    if warden_core::valid_tenant(name) {
        Ok(())
    } else {
        Err(IdentityError::BadName {
            what,
            name: name.to_string(),
        })
    }
}

impl Identity {
    pub fn open(state: &Path) -> Result<Identity, IdentityError> {
        let dir = state.join("identity");
        for d in [state, dir.as_path()] {
            warden_core::state::private_dir(d).map_err(|e| IdentityError::Io(d.into(), e))?;
        }
        Ok(Identity {
            path: dir.join("identity.json"),
            lock: dir.join("identity.lock"),
        })
    }

    /// The file as it is now (empty when there is none yet).
    pub fn read(&self) -> Result<IdentityFile, IdentityError> {
        use std::io::Read;
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IdentityFile {
                    version: 1,
                    ..IdentityFile::default()
                })
            }
            Err(e) => return Err(IdentityError::Io(self.path.clone(), e)),
        };
        let mut text = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| IdentityError::Io(self.path.clone(), e))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(IdentityError::Malformed(
                self.path.clone(),
                "too large".into(),
            ));
        }
        let parsed: IdentityFile = serde_json::from_slice(&text)
            .map_err(|e| IdentityError::Malformed(self.path.clone(), e.to_string()))?;
        if parsed.version != 1 {
            return Err(IdentityError::Malformed(
                self.path.clone(),
                format!("version {} (this build reads 1)", parsed.version),
            ));
        }
        Ok(parsed)
    }

    /// Runs `change` on the file under the exclusive lock and writes the
    /// result by rename.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut IdentityFile) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| IdentityError::Io(p, e)
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)
            .map_err(io(&self.lock))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| IdentityError::Io(self.lock.clone(), e.into()))?;
        let mut file = self.read()?;
        let out = change(&mut file)?;
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| IdentityError::Malformed(self.path.clone(), e.to_string()))?;
        let written = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(IdentityError::Io(self.path.clone(), e));
        }
        Ok(out)
    }

    pub fn add_tenant(&self, name: &str) -> Result<Tenant, IdentityError> {
        check_name("tenant", name)?;
        // `_…` names are Warden's own (the sealed ledger fields' store).
        if name.starts_with('_') {
            return Err(IdentityError::BadName {
                what: "tenant",
                name: name.to_string(),
            });
        }
        self.update(|f| {
            if f.tenants.iter().any(|t| t.name == name) {
                return Err(IdentityError::TenantExists(name.to_string()));
            }
            let t = Tenant {
                name: name.to_string(),
                created_at: now(),
            };
            f.tenants.push(t.clone());
            Ok(t)
        })
    }

    /// Adds a principal of `tenant` with `roles`; returns it and its API
    /// key, which is not stored and cannot be shown again.
    pub fn add_principal(
        &self,
        name: &str,
        tenant: &str,
        roles: &[String],
    ) -> Result<(Principal, zeroize::Zeroizing<String>), IdentityError> {
        check_name("principal", name)?;
        if let Some(bad) = roles.iter().find(|r| !warden_core::valid_tenant(r)) {
            return Err(IdentityError::BadRole(bad.clone()));
        }
        let key = zeroize::Zeroizing::new(new_key()?);
        let principal = self.update(|f| {
            if !f.tenants.iter().any(|t| t.name == tenant) {
                return Err(IdentityError::NoTenant(tenant.to_string()));
            }
            if f.principals.iter().any(|p| p.name == name) {
                return Err(IdentityError::PrincipalExists(name.to_string()));
            }
            let p = Principal {
                name: name.to_string(),
                tenant: tenant.to_string(),
                roles: roles.to_vec(),
                key_sha256: key_hash(&key),
                created_at: now(),
                revoked_at: None,
            };
            f.principals.push(p.clone());
            Ok(p)
        })?;
        Ok((principal, key))
    }

    /// Revokes a principal's key: from now on it authenticates nobody.
    pub fn revoke_principal(&self, name: &str) -> Result<Principal, IdentityError> {
        self.update(|f| {
            let p = f
                .principals
                .iter_mut()
                .find(|p| p.name == name)
                .ok_or_else(|| IdentityError::NoPrincipal(name.to_string()))?;
            p.revoked_at.get_or_insert_with(now);
            Ok(p.clone())
        })
    }

    /// The principal an API key belongs to.
    pub fn authenticate(&self, key: &str) -> Result<Principal, IdentityError> {
        self.read()?.authenticate(key).cloned()
    }
}

impl IdentityFile {
    /// The principal whose key `key` is, unless revoked.
    pub fn authenticate(&self, key: &str) -> Result<&Principal, IdentityError> {
        let hash = key_hash(key);
        // Compared as hashes: equal-length hex of a one-way function, so
        // a timing difference tells nothing about the key.
        let p = self
            .principals
            .iter()
            .find(|p| p.key_sha256 == hash)
            .ok_or(IdentityError::UnknownKey)?;
        if p.revoked_at.is_some() {
            return Err(IdentityError::RevokedKey(p.name.clone()));
        }
        Ok(p)
    }

    /// [`IdentityFile::authenticate`] as the acting principal.
    pub fn actor(&self, key: &str) -> Result<Actor, IdentityError> {
        let p = self.authenticate(key)?;
        Ok(Actor {
            principal: p.name.clone(),
            tenant: p.tenant.clone(),
            roles: p.roles.clone(),
            os_user: false,
        })
    }
}

/// The acting principal of a CLI command: the one `api_key`
/// (`WARDEN_API_KEY`) belongs to, else the OS user (`os:NAME`) in the
/// default tenant.
pub fn actor(state: &Path, api_key: Option<&str>) -> Result<Actor, IdentityError> {
    match api_key.filter(|k| !k.trim().is_empty()) {
        Some(key) => Identity::open(state)?.read()?.actor(key),
        None => Ok(Actor {
            principal: crate::audit::os_principal(),
            tenant: warden_core::DEFAULT_TENANT.to_string(),
            roles: Vec::new(),
            os_user: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "warden-identity-{tag}-{}-{}",
            std::process::id(),
            now()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keys_are_shown_once_stored_as_hashes_and_revocable() {
        let s = state("keys");
        let id = Identity::open(&s).unwrap();
        id.add_tenant("acme").unwrap();
        assert!(matches!(
            id.add_tenant("acme"),
            Err(IdentityError::TenantExists(_))
        ));
        let (p, key) = id
            .add_principal("alice", "acme", &["operator".into()])
            .unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        assert_eq!(key.len(), KEY_PREFIX.len() + 43);
        let text = std::fs::read_to_string(s.join("identity/identity.json")).unwrap();
        assert!(!text.contains(key.trim_start_matches(KEY_PREFIX)));
        assert!(text.contains(&p.key_sha256));
        assert_eq!(id.authenticate(&key).unwrap().name, "alice");
        let a = actor(&s, Some(&key)).unwrap();
        assert_eq!((a.principal.as_str(), a.tenant.as_str()), ("alice", "acme"));
        assert!(matches!(
            id.authenticate("wdn_nothing"),
            Err(IdentityError::UnknownKey)
        ));
        assert!(matches!(
            id.add_principal("bob", "nowhere", &[]),
            Err(IdentityError::NoTenant(_))
        ));
        assert!(matches!(
            id.add_principal("alice", "acme", &[]),
            Err(IdentityError::PrincipalExists(_))
        ));
        assert!(matches!(
            id.add_principal("-x", "acme", &[]),
            Err(IdentityError::BadName { .. })
        ));
        id.revoke_principal("alice").unwrap();
        assert!(matches!(
            id.authenticate(&key),
            Err(IdentityError::RevokedKey(_))
        ));
        let _ = std::fs::remove_dir_all(&s);
    }

    #[test]
    fn concurrent_adds_lose_nothing() {
        let s = state("race");
        Identity::open(&s).unwrap().add_tenant("t").unwrap();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let s = &s;
                scope.spawn(move || {
                    let id = Identity::open(s).unwrap();
                    for j in 0..5 {
                        id.add_principal(&format!("p{i}-{j}"), "t", &[]).unwrap();
                    }
                });
            }
        });
        let file = Identity::open(&s).unwrap().read().unwrap();
        assert_eq!(file.principals.len(), 40);
        let _ = std::fs::remove_dir_all(&s);
    }
}
