//! The encrypted secret store.
//!
//! Layout: `STATE/secrets/<tenant>/<name>/<version>.bin`, directories 0700
//! and files 0600. Versions count from 1 and are never reused for a name,
//! even after [`SecretStore::remove`] (which leaves `.last` behind holding
//! the highest version it removed), so a lease on an old version can never
//! read a newer value put under the same name.
//!
//! A version file is `b"WSEC"`, a format byte (1), a random 24-byte nonce,
//! then the XChaCha20-Poly1305 ciphertext with its 16-byte tag. The
//! associated data is [`associated_data`] of (format, tenant, name,
//! version) taken from where the file is *looked up*, so a file copied to
//! another tenant, name or version does not decrypt.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::fsutil;
use crate::master::MasterKey;
use crate::SecretError;

/// The largest secret value accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

const MAGIC: &[u8; 4] = b"WSEC";
const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + NONCE_LEN;
const AAD_DOMAIN: &[u8] = b"warden-secret\0";
const LAST_VERSION_FILE: &str = ".last";

/// Whether `name` may name a secret: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
pub fn valid_secret_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The canonical associated data binding a ciphertext to its place:
/// `"warden-secret\0"`, the format byte, then tenant and name each as a
/// big-endian u32 length and their bytes, then the version as a big-endian
/// u64. Length prefixes make the encoding injective.
pub fn associated_data(tenant: &str, name: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 1 + 8 + tenant.len() + name.len() + 8);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.push(FORMAT_VERSION);
    for part in [tenant, name] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Reads a secret value from `reader` (stdin or a file, never an
/// argument) into a buffer wiped on drop, refusing more than `max` bytes
/// or nothing at all. The buffer is reserved up front so growing it leaves
/// no unwiped copies behind.
pub fn read_value(reader: impl Read, max: usize) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let mut value = Zeroizing::new(Vec::with_capacity(max + 1));
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut value)
        .map_err(|e| SecretError::io("read secret value", e))?;
    if value.len() > max {
        return Err(SecretError::TooLarge {
            size: value.len(),
            max,
        });
    }
    if value.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(value)
}

/// One secret as `list` shows it: never its value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    pub name: String,
    /// Every stored version, ascending.
    pub versions: Vec<u64>,
    pub latest: u64,
}

/// The per-tenant encrypted store under `STATE/secrets`.
pub struct SecretStore {
    root: PathBuf,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// Opens (creating 0700 when missing) the store under `state`.
    pub fn open(state: &Path, master: &MasterKey) -> Result<Self, SecretError> {
        let root = state.join("secrets");
        fsutil::private_dir(&root)?;
        let cipher = XChaCha20Poly1305::new_from_slice(master.expose())
            .expect("the master key has the cipher's key length");
        Ok(SecretStore { root, cipher })
    }

    /// Stores `value` as the next version of `tenant`/`name` and returns
    /// that version. Racing writers get distinct versions.
    pub fn put(&self, tenant: &str, name: &str, value: &[u8]) -> Result<u64, SecretError> {
        let dir = self.secret_dir(tenant, name)?;
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        if value.len() > MAX_SECRET_LEN {
            return Err(SecretError::TooLarge {
                size: value.len(),
                max: MAX_SECRET_LEN,
            });
        }
        fsutil::private_dir(&dir)?;
        let mut version = self.highest_version(&dir)? + 1;
        loop {
            let file = self.seal(tenant, name, version, value)?;
            let path = dir.join(format!("{version}.bin"));
            match fsutil::write_new_file(&path, &file, 0o600) {
                Ok(()) => return Ok(version),
                // Another writer took this version: take the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => version += 1,
                Err(e) => return Err(SecretError::io(format!("write {}", path.display()), e)),
            }
        }
    }

    /// Every secret of `tenant` with its versions, sorted by name.
    pub fn list(&self, tenant: &str) -> Result<Vec<SecretInfo>, SecretError> {
        let dir = self.tenant_dir(tenant)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SecretError::io(format!("list {}", dir.display()), e)),
        };
        let mut secrets = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SecretError::io(format!("list {}", dir.display()), e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !valid_secret_name(&name) {
                continue;
            }
            let versions = self.versions_in(&entry.path())?;
            if let Some(&latest) = versions.last() {
                secrets.push(SecretInfo {
                    name,
                    versions,
                    latest,
                });
            }
        }
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(secrets)
    }

    /// The version `get` would read: `version` itself if stored, else the
    /// latest when `None`.
    pub fn resolve_version(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<u64, SecretError> {
        let dir = self.secret_dir(tenant, name)?;
        let versions = self.versions_in(&dir)?;
        let found = match version {
            Some(v) => versions.contains(&v).then_some(v),
            None => versions.last().copied(),
        };
        found.ok_or_else(|| SecretError::NotFound {
            tenant: tenant.to_string(),
            name: name.to_string(),
            version,
        })
    }

    /// Decrypts one version (the latest when `None`). Meant for making a
    /// lease: everything else reads through [`crate::LeaseStore::read`].
    pub fn get(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let version = self.resolve_version(tenant, name, version)?;
        let path = self
            .secret_dir(tenant, name)?
            .join(format!("{version}.bin"));
        let not_found = || SecretError::NotFound {
            tenant: tenant.to_string(),
            name: name.to_string(),
            version: Some(version),
        };
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(SecretError::io(format!("open {}", path.display()), e)),
        };
        let mut sealed = Vec::new();
        file.take((HEADER_LEN + MAX_SECRET_LEN + TAG_LEN) as u64 + 1)
            .read_to_end(&mut sealed)
            .map_err(|e| SecretError::io(format!("read {}", path.display()), e))?;
        self.open_sealed(&path, tenant, name, version, &sealed)
    }

    /// Removes every version of `tenant`/`name`. Its version numbers stay
    /// used: a later `put` continues after the highest removed one.
    pub fn remove(&self, tenant: &str, name: &str) -> Result<(), SecretError> {
        let dir = self.secret_dir(tenant, name)?;
        let versions = self.versions_in(&dir)?;
        let Some(&highest) = versions.last() else {
            return Err(SecretError::NotFound {
                tenant: tenant.to_string(),
                name: name.to_string(),
                version: None,
            });
        };
        let previous = self.highest_version(&dir)?;
        let last = dir.join(LAST_VERSION_FILE);
        fsutil::write_replace(&last, highest.max(previous).to_string().as_bytes(), 0o600)
            .map_err(|e| SecretError::io(format!("write {}", last.display()), e))?;
        for version in versions {
            let path = dir.join(format!("{version}.bin"));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SecretError::io(format!("remove {}", path.display()), e)),
            }
        }
        Ok(())
    }

    fn tenant_dir(&self, tenant: &str) -> Result<PathBuf, SecretError> {
        if !warden_core::valid_tenant(tenant) {
            return Err(SecretError::InvalidTenant(tenant.to_string()));
        }
        Ok(self.root.join(tenant))
    }

    fn secret_dir(&self, tenant: &str, name: &str) -> Result<PathBuf, SecretError> {
        let dir = self.tenant_dir(tenant)?;
        if !valid_secret_name(name) {
            return Err(SecretError::InvalidName(name.to_string()));
        }
        Ok(dir.join(name))
    }

    /// Stored versions, ascending (none when the directory is missing).
    fn versions_in(&self, dir: &Path) -> Result<Vec<u64>, SecretError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SecretError::io(format!("list {}", dir.display()), e)),
        };
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SecretError::io(format!("list {}", dir.display()), e))?;
            if let Some(version) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".bin"))
                .and_then(parse_version)
            {
                versions.push(version);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    /// The highest version ever used for this secret (0 for none).
    fn highest_version(&self, dir: &Path) -> Result<u64, SecretError> {
        let stored = self.versions_in(dir)?.last().copied().unwrap_or(0);
        let last = dir.join(LAST_VERSION_FILE);
        let removed = match fs::read_to_string(&last) {
            Ok(text) => parse_version(text.trim()).ok_or_else(|| SecretError::Corrupt {
                path: last.clone(),
                reason: "not a version number".to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(SecretError::io(format!("read {}", last.display()), e)),
        };
        Ok(stored.max(removed))
    }

    fn seal(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
        value: &[u8],
    ) -> Result<Vec<u8>, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        fsutil::random_bytes(&mut nonce)?;
        let aad = associated_data(tenant, name, version);
        // The plaintext is copied only into this wiped buffer, then
        // encrypted in place; room for the tag avoids a reallocation.
        let mut body = Zeroizing::new(Vec::with_capacity(value.len() + TAG_LEN));
        body.extend_from_slice(value);
        self.cipher
            .encrypt_in_place(&XNonce::from(nonce), &aad, &mut *body)
            .expect("a value within MAX_SECRET_LEN always encrypts");
        let mut file = Vec::with_capacity(HEADER_LEN + body.len());
        file.extend_from_slice(MAGIC);
        file.push(FORMAT_VERSION);
        file.extend_from_slice(&nonce);
        file.extend_from_slice(&body);
        Ok(file)
    }

    fn open_sealed(
        &self,
        path: &Path,
        tenant: &str,
        name: &str,
        version: u64,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let corrupt = |reason: &str| SecretError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if sealed.len() < HEADER_LEN + TAG_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return Err(corrupt("bad magic or too short"));
        }
        if sealed[MAGIC.len()] != FORMAT_VERSION {
            return Err(corrupt("unknown format version"));
        }
        if sealed.len() > HEADER_LEN + MAX_SECRET_LEN + TAG_LEN {
            return Err(corrupt("larger than any secret"));
        }
        let nonce: [u8; NONCE_LEN] = sealed[MAGIC.len() + 1..HEADER_LEN]
            .try_into()
            .expect("slice has the nonce length");
        let mut body = Zeroizing::new(sealed[HEADER_LEN..].to_vec());
        let aad = associated_data(tenant, name, version);
        self.cipher
            .decrypt_in_place(&XNonce::from(nonce), &aad, &mut *body)
            .map_err(|_| SecretError::Decrypt {
                tenant: tenant.to_string(),
                name: name.to_string(),
                version,
            })?;
        Ok(body)
    }
}

/// A version number: decimal, no sign or leading zero, at least 1.
fn parse_version(text: &str) -> Option<u64> {
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
