//! The master key: 32 random bytes that encrypt every stored secret.
//!
//! It lives in `STATE/master.key` (created 0600 on first use) unless the
//! caller names another file (the CLI passes `WARDEN_MASTER_KEY_FILE`;
//! this library reads no environment). The file holds the key as 64 hex
//! digits (a trailing newline is allowed) or as 32 raw bytes.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

use crate::fsutil;
use crate::SecretError;

/// Bytes in a master key.
pub const MASTER_KEY_LEN: usize = 32;

/// The file name of the default master key inside the state directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The key every secret is encrypted under. Its bytes are wiped on drop
/// and never printed.
pub struct MasterKey(SecretBox<[u8; MASTER_KEY_LEN]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([secret])")
    }
}

impl MasterKey {
    /// A key from raw bytes (tests, or a caller with its own key source).
    /// The caller wipes its own copy.
    pub fn from_bytes(bytes: &[u8; MASTER_KEY_LEN]) -> Self {
        MasterKey(SecretBox::init_with_mut(
            |key: &mut [u8; MASTER_KEY_LEN]| key.copy_from_slice(bytes),
        ))
    }

    /// A fresh random key from the kernel's CSPRNG.
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        fsutil::random_bytes(&mut *bytes)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Loads the master key. With `key_file`, that file must exist (an
    /// operator-provisioned key: creating one at a mistyped path would make
    /// every secret unreadable later). Without it, `STATE/master.key` is
    /// read, or created 0600 with a fresh key on first use; concurrent
    /// first uses agree on one key (the file appears whole, by link, and a
    /// loser reads the winner's). The default file is refused when group or
    /// others may access it.
    pub fn load_or_create(state: &Path, key_file: Option<&Path>) -> Result<Self, SecretError> {
        if let Some(path) = key_file {
            return read_key_file(path, false);
        }
        let path = state.join(MASTER_KEY_FILE);
        match read_key_file(&path, true) {
            Err(SecretError::MasterKeyMissing(_)) => {}
            other => return other,
        }
        fsutil::private_dir(state)?;
        let key = Self::generate()?;
        match fsutil::write_new_file(&path, &*key.hex_line(), 0o600) {
            Ok(()) => Ok(key),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(&path, true),
            Err(e) => Err(SecretError::io(format!("create {}", path.display()), e)),
        }
    }

    /// The key as 64 hex digits and a newline, in a buffer wiped on drop.
    fn hex_line(&self) -> Zeroizing<[u8; 2 * MASTER_KEY_LEN + 1]> {
        let mut line = Zeroizing::new([b'\n'; 2 * MASTER_KEY_LEN + 1]);
        hex::encode_to_slice(self.expose(), &mut line[..2 * MASTER_KEY_LEN])
            .expect("buffer is exactly twice the key length");
        line
    }

    pub(crate) fn expose(&self) -> &[u8; MASTER_KEY_LEN] {
        self.0.expose_secret()
    }
}

fn read_key_file(path: &Path, strict_mode: bool) -> Result<MasterKey, SecretError> {
    let mut file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SecretError::MasterKeyMissing(path.to_path_buf()))
        }
        Err(e) => return Err(SecretError::io(format!("open {}", path.display()), e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| SecretError::io(format!("stat {}", path.display()), e))?;
    if strict_mode && meta.mode() & 0o077 != 0 {
        return Err(bad_key(
            path,
            format!(
                "mode {:o} lets group or others access it (want 0600)",
                meta.mode() & 0o777
            ),
        ));
    }
    // Read a little more than the longest accepted form so a huge file is
    // refused without reading it all.
    let mut text = Zeroizing::new(Vec::with_capacity(2 * MASTER_KEY_LEN + 3));
    (&mut file)
        .take(2 * MASTER_KEY_LEN as u64 + 2)
        .read_to_end(&mut text)
        .map_err(|e| SecretError::io(format!("read {}", path.display()), e))?;
    let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    if text.len() == MASTER_KEY_LEN {
        key.copy_from_slice(&text);
    } else {
        let digits = text.strip_suffix(b"\n").unwrap_or(&text);
        let digits = digits.strip_suffix(b"\r").unwrap_or(digits);
        if digits.len() != 2 * MASTER_KEY_LEN || hex::decode_to_slice(digits, &mut *key).is_err() {
            return Err(bad_key(
                path,
                "want 64 hex digits or 32 raw bytes".to_string(),
            ));
        }
    }
    Ok(MasterKey::from_bytes(&key))
}

fn bad_key(path: &Path, reason: String) -> SecretError {
    SecretError::MasterKeyInvalid {
        path: PathBuf::from(path),
        reason,
    }
}

/// Writes a master key file the way [`MasterKey::load_or_create`] would
/// (hex, 0600, never replacing an existing file): for an operator who
/// provisions `WARDEN_MASTER_KEY_FILE` ahead of time.
pub fn write_master_key_file(path: &Path, key: &MasterKey) -> Result<(), SecretError> {
    fsutil::write_new_file(path, &*key.hex_line(), 0o600)
        .map_err(|e| SecretError::io(format!("create {}", path.display()), e))
}
