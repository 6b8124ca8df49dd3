//! Named signing keys in the state directory's `keys/`: `NAME.key`
//! (PKCS#8 PEM, 0600, created exclusively) and `NAME.pub` (PEM). A
//! private key is never printed; only its public half and id leave here.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::keys::{public_from_pem, public_pem, KeyError, KeyPair};

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("invalid key name {0:?}: expected 1-64 ASCII letters, digits, '_', '-' or '.', not starting with '.' or '-'")]
    BadName(String),
    #[error("key {0} already exists")]
    Exists(String),
    #[error("no key named {0}")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
}

/// The `keys/` directory of a state directory.
pub struct KeyStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub use warden_core::state::private_dir;

pub fn valid_key_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

impl KeyStore {
    /// The key store of `state` (created 0700 with the state directory on
    /// first use).
    pub fn open(state: &Path) -> Result<KeyStore, KeyStoreError> {
        private_dir(state).map_err(io(state))?;
        let dir = state.join("keys");
        private_dir(&dir).map_err(io(&dir))?;
        Ok(KeyStore { dir })
    }

    fn paths(&self, name: &str) -> Result<(PathBuf, PathBuf), KeyStoreError> {
        if !valid_key_name(name) {
            return Err(KeyStoreError::BadName(name.to_string()));
        }
        Ok((
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.pub")),
        ))
    }

    /// Makes a new key named `name`; returns its id.
    pub fn create(&self, name: &str) -> Result<String, KeyStoreError> {
        let (private, public) = self.paths(name)?;
        let pair = KeyPair::generate().map_err(|source| KeyStoreError::Key {
            path: private.clone(),
            source,
        })?;
        let pem = pair.to_pkcs8_pem().map_err(|source| KeyStoreError::Key {
            path: private.clone(),
            source,
        })?;
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&private)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(KeyStoreError::Exists(name.to_string()))
            }
            Err(e) => return Err(io(&private)(e)),
        };
        let written = file
            .write_all(pem.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&private);
            return Err(io(&private)(e));
        }
        let public_text = public_pem(&pair.verifying()).map_err(|source| KeyStoreError::Key {
            path: public.clone(),
            source,
        })?;
        fs::write(&public, public_text).map_err(io(&public))?;
        Ok(pair.id())
    }

    /// The key pair named `name`.
    pub fn load(&self, name: &str) -> Result<KeyPair, KeyStoreError> {
        let (private, _) = self.paths(name)?;
        let text = read_small(&private, name)?;
        KeyPair::from_pkcs8_pem(&text).map_err(|source| KeyStoreError::Key {
            path: private,
            source,
        })
    }

    /// The public key of `name`, as PEM.
    pub fn public_pem(&self, name: &str) -> Result<String, KeyStoreError> {
        let (_, public) = self.paths(name)?;
        let text = read_small(&public, name)?;
        public_from_pem(&text).map_err(|source| KeyStoreError::Key {
            path: public.clone(),
            source,
        })?;
        Ok(text)
    }

    /// Every key: its name and id, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, String)>, KeyStoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".pub")) else {
                continue;
            };
            if !valid_key_name(name) {
                continue;
            }
            let pem = self.public_pem(name)?;
            let key = public_from_pem(&pem).map_err(|source| KeyStoreError::Key {
                path: entry.path(),
                source,
            })?;
            out.push((name.to_string(), crate::keys::key_id(&key)));
        }
        out.sort();
        Ok(out)
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Reads a key file of at most 64 KiB.
fn read_small(path: &Path, name: &str) -> Result<String, KeyStoreError> {
    use std::io::Read;
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyStoreError::NotFound(name.to_string()))
        }
        Err(e) => return Err(io(path)(e)),
    };
    let mut text = String::new();
    file.take(64 << 10)
        .read_to_string(&mut text)
        .map_err(io(path))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn keys_are_private_and_named_safely() {
        let state = std::env::temp_dir().join(format!("warden-keystore-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let store = KeyStore::open(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        let id = store.create("release").unwrap();
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        let key = state.join("keys/release.key");
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert!(matches!(
            store.create("release"),
            Err(KeyStoreError::Exists(_))
        ));
        assert_eq!(store.load("release").unwrap().id(), id);
        assert!(store
            .public_pem("release")
            .unwrap()
            .contains("BEGIN PUBLIC KEY"));
        assert_eq!(store.list().unwrap(), vec![("release".to_string(), id)]);
        for bad in ["", "../x", ".hidden", "a/b", "-x", &"k".repeat(65)] {
            assert!(
                matches!(store.create(bad), Err(KeyStoreError::BadName(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            store.load("missing"),
            Err(KeyStoreError::NotFound(_))
        ));
        fs::remove_dir_all(&state).unwrap();
    }
}
