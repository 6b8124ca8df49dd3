//! Small file-system helpers: private directories, random bytes, and
//! writes that never leave a half-written file where a reader looks.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::SecretError;

/// Fills `buf` from the kernel's CSPRNG (getrandom(2), blocking until the
/// pool is seeded).
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), SecretError> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(SecretError::io("getrandom", e.into())),
        }
    }
    Ok(())
}

/// 128 random bits as 32 lowercase hex digits.
pub(crate) fn random_hex_id() -> Result<String, SecretError> {
    let mut id = [0u8; 16];
    random_bytes(&mut id)?;
    Ok(hex::encode(id))
}

/// Creates `dir` (and parents) 0700 when missing.
pub(crate) fn private_dir(dir: &Path) -> Result<(), SecretError> {
    warden_core::state::private_dir(dir)
        .map_err(|e| SecretError::io(format!("create directory {}", dir.display()), e))
}

/// Writes `bytes` to a new temporary file beside `path`, fsynced, and
/// returns its name. The caller links or renames it into place.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut suffix = [0u8; 8];
    random_bytes(&mut suffix).map_err(io::Error::other)?;
    let temp = dir.join(format!(".tmp.{}", hex::encode(suffix)));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `path` with `bytes`, atomically and durably, failing with
/// `AlreadyExists` if it exists: a link never replaces, so of racing
/// creators exactly one wins and readers never see a partial file.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let temp = write_temp(path, bytes, mode)?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    linked?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Replaces (or creates) `path` with `bytes`, atomically and durably.
pub(crate) fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let temp = write_temp(path, bytes, mode)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}
