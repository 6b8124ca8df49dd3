//! The on-disk compile cache and the host key that authenticates it and
//! `.cwasm` files.
//!
//! * **Where.** `WasmConfig::cache_dir` (by default [`default_dir`]: `$WARDEN_CACHE_DIR`,
//!   else `/var/cache/warden/wasm` for root, else `$XDG_CACHE_HOME/warden/wasm` or
//!   `~/.cache/warden/wasm`). Made with mode 0700 if missing. A directory that is a
//!   symbolic link, is not owned by the effective user or is writable by group or
//!   others is refused: no entry is read from it or written to it, and `.cwasm`
//!   files cannot be made or loaded (the run itself goes on, compiling).
//! * **The host key.** `key` in that directory: 32 random bytes, mode 0600, made
//!   on first use (written to a temporary file and hard-linked into place, so
//!   that two processes starting at once agree on one key), read with
//!   `O_NOFOLLOW` and refused unless it is a regular file of the effective user
//!   that nobody else can read.
//! * **Entries.** One file per (engine fingerprint, source digest), named by the
//!   SHA-256 of both: a header, the wasmtime artifact, and an HMAC-SHA256 tag
//!   under the host key over everything before it (so over the artifact, the
//!   source digest and the fingerprint). A load verifies the tag, then that the
//!   digest and fingerprint are the ones asked for, before anything reaches
//!   wasmtime's (unsafe) deserializer; an entry that fails any check is deleted.
//!   Entries are written to a temporary file and renamed into place.
//! * **Bounded.** After each write, entries beyond [`MAX_ENTRIES`] or beyond
//!   the configured byte budget are evicted, least recently used first (a load
//!   refreshes an entry's modification time when it is older than ten minutes).
//!   Temporary files left by a crashed writer are removed after an hour.
//! * **`.cwasm`.** `warden compile` appends a trailer to the wasmtime artifact:
//!   an HMAC-SHA256 tag under the same key (another domain string, so an entry
//!   is never a valid `.cwasm` or the reverse) and an 8-byte magic.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use wasmtime::Engine;

use crate::engines::EngineKind;

/// The wasmtime version Warden is built with (`=48.0.8` in Cargo.toml; a
/// unit test checks it against Cargo.lock). Part of every cache key: an
/// artifact of another version is never looked up (and wasmtime would
/// refuse it anyway).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Largest precompiled artifact Warden reads (a `.cwasm` or a cache entry).
pub const MAX_ARTIFACT_BYTES: u64 = 512 << 20;
/// Default byte budget of the on-disk cache.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1 << 30;
/// Most entries the on-disk cache keeps.
pub const MAX_ENTRIES: usize = 1024;

const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;
const DIGEST_LEN: usize = 32;
const ENTRY_MAGIC: &[u8; 8] = b"WDNWCE01";
const CWASM_MAGIC: &[u8; 8] = b"WDNCWA01";
const ENTRY_DOMAIN: &[u8] = b"warden-wasm compile-cache entry v1\0";
const CWASM_DOMAIN: &[u8] = b"warden-wasm cwasm v1\0";
const ENTRY_HEADER: usize = ENTRY_MAGIC.len() + 2 * DIGEST_LEN;
/// A load refreshes an entry's modification time (its place in the LRU
/// order) only when it is older than this: one write per entry per period.
const TOUCH_AFTER: Duration = Duration::from_secs(600);
/// Temporary files older than this are a crashed writer's and are removed.
const STALE_TEMP: Duration = Duration::from_secs(3600);
const TEMP_PREFIX: &str = "tmp.";

/// A SHA-256 digest.
pub type Digest = [u8; DIGEST_LEN];

/// Why the on-disk cache (and with it the host key) is not used.
#[derive(Debug, Error)]
pub enum CacheError {
    #[error(
        "no cache directory (WARDEN_CACHE_DIR is empty, or neither XDG_CACHE_HOME nor HOME is set)"
    )]
    NoDirectory,
    #[error("cache directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache directory {} refused: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("host key {} refused: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
}

/// The cache directory used when none is configured (see
/// [`warden_core::state::default_cache_dir`]).
pub fn default_dir() -> Option<PathBuf> {
    warden_core::state::default_cache_dir()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Identifies the code an engine generates: the wasmtime version, the
/// engine kind and wasmtime's own compatibility hash (target, compiler
/// flags, tunables, enabled features).
pub(crate) fn fingerprint(engine: &Engine, kind: EngineKind) -> Digest {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    h.write(b"warden-wasm engine v1\0");
    h.write(WASMTIME_VERSION.as_bytes());
    h.write(&[u8::from(kind.metered), u8::from(kind.pooled)]);
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.finalize().into()
}

/// The per-host secret. Never printed.
pub(crate) struct HostKey([u8; KEY_LEN]);

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostKey(..)")
    }
}

impl HostKey {
    fn hmac(&self, domain: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(domain);
        for p in parts {
            mac.update(p);
        }
        mac
    }

    fn tag(&self, domain: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
        self.hmac(domain, parts).finalize().into_bytes().into()
    }

    /// Constant-time comparison of `tag` with the expected one.
    fn verify(&self, domain: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        self.hmac(domain, parts).verify_slice(tag).is_ok()
    }
}

/// Bytes of a wasmtime artifact whose tag under the host key checked out.
/// Made only in this file, after the check: it is the only input
/// `module::deserialize` accepts.
pub(crate) struct Authenticated<'a>(&'a [u8]);

impl Authenticated<'_> {
    pub fn bytes(&self) -> &[u8] {
        self.0
    }
}

/// A `.cwasm` file: the artifact, then its tag and the trailer magic.
pub(crate) fn seal_cwasm(key: &HostKey, mut artifact: Vec<u8>) -> Vec<u8> {
    let tag = key.tag(CWASM_DOMAIN, &[&artifact]);
    artifact.reserve(TAG_LEN + CWASM_MAGIC.len());
    artifact.extend_from_slice(&tag);
    artifact.extend_from_slice(CWASM_MAGIC);
    artifact
}

/// The tag in the trailer of what looks like a sealed `.cwasm` (not
/// checked: that is [`open_cwasm`]'s job).
pub(crate) fn cwasm_tag(file: &[u8]) -> Option<Digest> {
    let body_len = file.len().checked_sub(TAG_LEN + CWASM_MAGIC.len())?;
    let trailer = &file[body_len..];
    if &trailer[TAG_LEN..] != CWASM_MAGIC {
        return None;
    }
    trailer[..TAG_LEN].try_into().ok()
}

/// The artifact inside a `.cwasm` made by [`seal_cwasm`] with this key, or
/// `None` (no trailer, or a tag that does not match).
pub(crate) fn open_cwasm<'a>(key: &HostKey, file: &'a [u8]) -> Option<Authenticated<'a>> {
    let body_len = file.len().checked_sub(TAG_LEN + CWASM_MAGIC.len())?;
    let (artifact, trailer) = file.split_at(body_len);
    let (tag, magic) = trailer.split_at(TAG_LEN);
    if magic != CWASM_MAGIC || !key.verify(CWASM_DOMAIN, &[artifact], tag) {
        return None;
    }
    Some(Authenticated(artifact))
}

/// An entry read from disk whose tag, digest and fingerprint checked out.
pub(crate) struct VerifiedEntry {
    bytes: Vec<u8>,
}

impl VerifiedEntry {
    pub fn artifact(&self) -> Authenticated<'_> {
        Authenticated(&self.bytes[ENTRY_HEADER..self.bytes.len() - TAG_LEN])
    }
}

/// An open, checked cache directory and its key.
pub(crate) struct DiskCache {
    path: PathBuf,
    dir: OwnedFd,
    key: HostKey,
    uid: u32,
    max_bytes: u64,
    evicting: Mutex<()>,
}

impl fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskCache")
            .field("path", &self.path)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl DiskCache {
    /// Opens (making it if missing) and checks the directory, then reads
    /// (making it on first use) the host key.
    pub fn open(path: &Path, max_bytes: u64) -> Result<DiskCache, CacheError> {
        let uid = rustix::process::geteuid().as_raw();
        let dir = open_dir(path)?;
        let st = rustix::fs::fstat(&dir).map_err(|e| io_error(path, e))?;
        if let Some(reason) = unsafe_dir(&st, uid) {
            return Err(CacheError::Unsafe {
                path: path.to_path_buf(),
                reason,
            });
        }
        let key = load_or_create_key(&dir, path, uid)?;
        Ok(DiskCache {
            path: path.to_path_buf(),
            dir,
            key,
            uid,
            max_bytes,
            evicting: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn key(&self) -> &HostKey {
        &self.key
    }

    /// The entry for `source` compiled by an engine of fingerprint `fp`,
    /// if there is one and it authenticates. One that does not is deleted.
    pub fn load(&self, fp: &Digest, source: &Digest) -> Option<VerifiedEntry> {
        let name = entry_name(fp, source);
        let fd = match rustix::fs::openat(
            &self.dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return None,
            Err(_) => {
                self.remove(&name);
                return None;
            }
        };
        let st = rustix::fs::fstat(&fd).ok()?;
        let size = st.st_size as u64;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_uid != self.uid
            || size < (ENTRY_HEADER + TAG_LEN) as u64
            || size > MAX_ARTIFACT_BYTES
        {
            self.remove(&name);
            return None;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        let mut file = std::fs::File::from(fd);
        if (&mut file)
            .take(MAX_ARTIFACT_BYTES + 1)
            .read_to_end(&mut bytes)
            .is_err()
            || !self.verify_entry(&bytes, fp, source)
        {
            self.remove(&name);
            return None;
        }
        if age(&st) > TOUCH_AFTER {
            let now = Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            };
            let _ = rustix::fs::futimens(
                &file,
                &Timestamps {
                    last_access: now,
                    last_modification: now,
                },
            );
        }
        Some(VerifiedEntry { bytes })
    }

    fn verify_entry(&self, bytes: &[u8], fp: &Digest, source: &Digest) -> bool {
        let Some(body_len) = bytes.len().checked_sub(TAG_LEN) else {
            return false;
        };
        if body_len < ENTRY_HEADER || !bytes.starts_with(ENTRY_MAGIC) {
            return false;
        }
        let (body, tag) = bytes.split_at(body_len);
        if !self.key.verify(ENTRY_DOMAIN, &[body], tag) {
            return false;
        }
        let m = ENTRY_MAGIC.len();
        body[m..m + DIGEST_LEN] == source[..] && body[m + DIGEST_LEN..ENTRY_HEADER] == fp[..]
    }

    /// Deletes the entry of (`fp`, `source`): wasmtime refused it.
    pub fn discard(&self, fp: &Digest, source: &Digest) {
        self.remove(&entry_name(fp, source));
    }

    fn remove(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
    }

    /// Writes the entry of (`fp`, `source`) atomically, then evicts what is
    /// over budget. Best effort: a cache that cannot be written is skipped.
    pub fn store(&self, fp: &Digest, source: &Digest, artifact: &[u8]) {
        let total = (ENTRY_HEADER + artifact.len() + TAG_LEN) as u64;
        if total > MAX_ARTIFACT_BYTES || total > self.max_bytes {
            return;
        }
        let mut bytes = Vec::with_capacity(total as usize);
        bytes.extend_from_slice(ENTRY_MAGIC);
        bytes.extend_from_slice(source);
        bytes.extend_from_slice(fp);
        bytes.extend_from_slice(artifact);
        let tag = self.key.tag(ENTRY_DOMAIN, &[&bytes]);
        bytes.extend_from_slice(&tag);
        let name = entry_name(fp, source);
        if write_new(&self.dir, &name, &bytes, 0o600, Replace::Yes).is_ok() {
            self.evict();
        }
    }

    /// Removes the least recently used entries until at most 90% of the
    /// entry and byte budgets are used (so that a full cache is not scanned
    /// at every write), and stale temporary files.
    pub fn evict(&self) {
        let Ok(_evicting) = self.evicting.try_lock() else {
            return;
        };
        let Ok(dir) = rustix::fs::Dir::read_from(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, String)> = Vec::new();
        let mut total = 0u64;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Ok(st) = rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let Some(name) = name.to_str().ok() else {
                continue;
            };
            if is_entry_name(name) {
                total += st.st_size as u64;
                entries.push((mtime(&st), st.st_size as u64, name.to_string()));
            } else if name.starts_with(TEMP_PREFIX) && age(&st) > STALE_TEMP {
                self.remove(name);
            }
        }
        if entries.len() <= MAX_ENTRIES && total <= self.max_bytes {
            return;
        }
        let keep_entries = MAX_ENTRIES * 9 / 10;
        let keep_bytes = self.max_bytes / 10 * 9;
        entries.sort();
        let mut count = entries.len();
        for (_, size, name) in entries {
            if count <= keep_entries && total <= keep_bytes {
                break;
            }
            self.remove(&name);
            count -= 1;
            total = total.saturating_sub(size);
        }
    }
}

fn io_error(path: &Path, e: Errno) -> CacheError {
    CacheError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// When a file was last modified.
fn mtime(st: &Stat) -> SystemTime {
    UNIX_EPOCH
        + Duration::new(
            u64::try_from(st.st_mtime).unwrap_or(0),
            u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        )
}

/// How long ago a file was last modified (zero if in the future).
fn age(st: &Stat) -> Duration {
    SystemTime::now()
        .duration_since(mtime(st))
        .unwrap_or_default()
}

fn entry_name(fp: &Digest, source: &Digest) -> String {
    let mut h = Sha256::new();
    h.update(fp);
    h.update(source);
    hex(&h.finalize())
}

fn is_entry_name(name: &str) -> bool {
    name.len() == 2 * DIGEST_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn open_dir(path: &Path) -> Result<OwnedFd, CacheError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let opened = match rustix::fs::open(path, flags, Mode::empty()) {
        Err(Errno::NOENT) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| CacheError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            rustix::fs::open(path, flags, Mode::empty())
        }
        other => other,
    };
    opened.map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => CacheError::Unsafe {
            path: path.to_path_buf(),
            reason: "not a directory (or a symbolic link)".into(),
        },
        e => io_error(path, e),
    })
}

/// Why a directory with this status must not hold the cache, if it must not.
fn unsafe_dir(st: &Stat, uid: u32) -> Option<String> {
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Some("not a directory".into());
    }
    if st.st_uid != uid {
        return Some(format!(
            "owned by uid {}, not by the current user (uid {uid})",
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Some(format!(
            "writable by group or others (mode {:o})",
            st.st_mode & 0o7777
        ));
    }
    None
}

enum KeyRead {
    Missing,
    Bad(String),
}

fn load_or_create_key(dir: &OwnedFd, path: &Path, uid: u32) -> Result<HostKey, CacheError> {
    let key_path = path.join(KEY_FILE);
    let refused = |reason: String| CacheError::Key {
        path: key_path.clone(),
        reason,
    };
    // A second round reads the key another process linked in first.
    for _ in 0..2 {
        match read_key(dir, uid) {
            Ok(key) => return Ok(key),
            Err(KeyRead::Bad(reason)) => return Err(refused(reason)),
            Err(KeyRead::Missing) => {}
        }
        let mut key = [0u8; KEY_LEN];
        fill_random(&mut key).map_err(|e| refused(format!("no random bytes: {e}")))?;
        match write_new(dir, KEY_FILE, &key, 0o600, Replace::No) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(refused(format!("cannot create: {e}"))),
        }
    }
    Err(refused("disappeared while it was being created".into()))
}

fn read_key(dir: &OwnedFd, uid: u32) -> Result<HostKey, KeyRead> {
    let fd = match rustix::fs::openat(
        dir,
        KEY_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Err(KeyRead::Missing),
        Err(Errno::LOOP) => return Err(KeyRead::Bad("is a symbolic link".into())),
        Err(e) => return Err(KeyRead::Bad(e.to_string())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| KeyRead::Bad(e.to_string()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(KeyRead::Bad("not a regular file".into()));
    }
    if st.st_uid != uid {
        return Err(KeyRead::Bad(format!(
            "owned by uid {}, not by the current user (uid {uid})",
            st.st_uid
        )));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(KeyRead::Bad(format!(
            "accessible to group or others (mode {:o})",
            st.st_mode & 0o7777
        )));
    }
    if st.st_size != KEY_LEN as i64 {
        return Err(KeyRead::Bad(format!("{} bytes, not {KEY_LEN}", st.st_size)));
    }
    let mut key = [0u8; KEY_LEN];
    std::fs::File::from(fd)
        .read_exact(&mut key)
        .map_err(|e| KeyRead::Bad(e.to_string()))?;
    Ok(HostKey(key))
}

fn fill_random(buf: &mut [u8]) -> Result<(), Errno> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Rename over an existing file.
    Yes,
    /// Hard-link into place: fails with `EEXIST` if the name is taken.
    No,
}

/// Writes `bytes` to a new temporary file in `dir` and moves it to `name`:
/// readers see the whole file or none of it.
fn write_new(
    dir: &OwnedFd,
    name: &str,
    bytes: &[u8],
    mode: u32,
    replace: Replace,
) -> Result<(), Errno> {
    let mut suffix = [0u8; 12];
    fill_random(&mut suffix)?;
    let tmp = format!("{TEMP_PREFIX}{}", hex(&suffix));
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    let mut file = std::fs::File::from(fd);
    let written = file
        .write_all(bytes)
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
        .and_then(|()| {
            if replace == Replace::No {
                // The key is written once and must survive a crash.
                rustix::fs::fsync(&file)?;
            }
            Ok(())
        });
    drop(file);
    let moved = written.and_then(|()| match replace {
        Replace::Yes => rustix::fs::renameat(dir, tmp.as_str(), dir, name),
        Replace::No => rustix::fs::linkat(dir, tmp.as_str(), dir, name, AtFlags::empty()),
    });
    if moved.is_err() || replace == Replace::No {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> HostKey {
        HostKey([b; KEY_LEN])
    }

    #[test]
    fn the_wasmtime_version_matches_the_lock_file() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .expect("Cargo.lock");
        let needle = format!("name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"");
        assert!(lock.contains(&needle), "update WASMTIME_VERSION");
    }

    #[test]
    fn a_sealed_cwasm_opens_with_its_key_only() {
        let sealed = seal_cwasm(&key(1), b"artifact".to_vec());
        assert_eq!(open_cwasm(&key(1), &sealed).unwrap().bytes(), b"artifact");
        assert!(open_cwasm(&key(2), &sealed).is_none());
        assert!(open_cwasm(&key(1), b"artifact").is_none());
        assert!(open_cwasm(&key(1), b"").is_none());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x40;
            assert!(open_cwasm(&key(1), &t).is_none(), "flipped byte {i}");
        }
        let mut longer = b"x".to_vec();
        longer.extend_from_slice(&sealed);
        assert!(open_cwasm(&key(1), &longer).is_none());
    }

    #[test]
    fn entry_names_are_recognised() {
        let name = entry_name(&[1; 32], &[2; 32]);
        assert!(is_entry_name(&name));
        assert!(!is_entry_name(KEY_FILE));
        assert!(!is_entry_name("tmp.0123"));
        assert!(!is_entry_name(&name.to_uppercase()));
    }

    #[test]
    fn unsafe_directories_are_named() {
        let mut st: Stat = unsafe_free_stat();
        st.st_mode = 0o040700;
        st.st_uid = 7;
        assert_eq!(unsafe_dir(&st, 7), None);
        assert!(unsafe_dir(&st, 8).unwrap().contains("owned by uid 7"));
        st.st_mode = 0o040770;
        assert!(unsafe_dir(&st, 7).unwrap().contains("mode 770"));
        st.st_mode = 0o040702;
        assert!(unsafe_dir(&st, 7).is_some());
        st.st_mode = 0o040755;
        assert_eq!(unsafe_dir(&st, 7), None);
        st.st_mode = 0o100700;
        assert!(unsafe_dir(&st, 7).is_some());
    }

    /// A `Stat` read from a real file, to be edited.
    fn unsafe_free_stat() -> Stat {
        rustix::fs::stat("/").expect("stat /")
    }
}
