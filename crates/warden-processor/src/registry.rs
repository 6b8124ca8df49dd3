//! The content-addressed processor registry under `STATE/registry/`.
//!
//! ```text
//! registry/                         0700 (the state directory is private)
//!   lock                            flock(2) held by add and remove
//!   objects/sha256/<hex>/           a processor tree: dirs 0555, files 0444 or 0555
//!   objects/sha256/<hex>.sig        its signature envelope, if one was given (0444)
//!   index/<name>/<version>.json     one Record per NAME@VERSION
//!   tmp/                            staging; emptied by add and remove
//! ```
//!
//! Objects are written from the bytes that were hashed ([`Tree`]), never
//! re-read from the source directory, into `tmp/` and renamed into place;
//! records are written to a temporary file, fsynced and renamed. A tree's
//! manifest is one of its files, so a digest names exactly one
//! NAME@VERSION. [`Registry::load`] reads an object back and re-verifies
//! its digest from the bytes read.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::manifest::{
    check_name, check_tree, render_all, sha256_digest, Kind, Language, Manifest, Sbom,
    MANIFEST_FILE,
};
use crate::tree::{Tree, TreeError};

/// Largest index record read back, in bytes.
const MAX_RECORD_BYTES: u64 = 1 << 20;
/// Largest signature envelope stored, in bytes.
pub const MAX_SIGNATURE_BYTES: usize = 1 << 20;

/// Why a registry operation failed. Displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// NAME@VERSION is registered with another digest.
    #[error(
        "{id} is already registered with digest {existing}; remove it first (this tree is {new})"
    )]
    Conflict {
        /// `NAME@VERSION`.
        id: String,
        /// The registered digest.
        existing: String,
        /// The digest of the tree being added.
        new: String,
    },
    /// NAME@VERSION is registered, with the same digest, and another
    /// signature.
    #[error("{id} is already registered with another signature; remove it first to replace it")]
    SignatureConflict {
        /// `NAME@VERSION`.
        id: String,
    },
    /// The manifest given is not the one the tree holds.
    #[error("the manifest given to add is not the tree's {MANIFEST_FILE} ({why})")]
    ManifestMismatch {
        /// What differs, or the tree's manifest diagnostics.
        why: String,
    },
    /// Nothing matches a reference.
    #[error("no processor {spec} in the registry")]
    NotFound {
        /// The reference, as given.
        spec: String,
    },
    /// A reference that is not `NAME`, `NAME@VERSION` or `NAME@sha256:HEX`.
    #[error("invalid processor reference {spec:?}: {why}")]
    BadSpec {
        /// The reference.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// A stored object, signature or record no longer matches what was
    /// registered.
    #[error("registry damaged: {0}")]
    Tampered(String),
    /// A signature envelope over [`MAX_SIGNATURE_BYTES`].
    #[error("signature envelope is too large ({0} bytes; at most {MAX_SIGNATURE_BYTES})")]
    SignatureTooLarge(usize),
    /// An unreadable index record.
    #[error("{}: invalid registry record: {why}", path.display())]
    BadRecord {
        /// Where.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The tree could not be stored or read back.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a record keeps of the manifest, for `list` and `show` without
/// reading the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Script, native or WebAssembly.
    pub kind: Kind,
    /// The interpreter of a script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// The file that runs, relative to the object directory.
    pub entry: String,
    /// The capabilities requested, as `--allow` takes them.
    pub capabilities: Vec<String>,
    /// The limits requested, `key -> value` in a policy's syntax.
    pub limits: BTreeMap<String, String>,
    /// The description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The SBOM's path and digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Sbom>,
    /// The tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Number of files in the tree.
    pub files: usize,
    /// Bytes of all files together.
    pub bytes: u64,
}

impl Summary {
    fn new(manifest: &Manifest, tree: &Tree) -> Summary {
        Summary {
            kind: manifest.kind,
            language: manifest.language,
            entry: manifest.entry.clone(),
            capabilities: manifest
                .capabilities
                .iter()
                .map(ToString::to_string)
                .collect(),
            limits: manifest.limit_map(),
            description: manifest.description.clone(),
            sbom: manifest.sbom.clone(),
            tags: manifest.tags.clone(),
            files: tree.files().len(),
            bytes: tree.total_bytes(),
        }
    }
}

/// One registered NAME@VERSION (`index/NAME/VERSION.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The processor's name.
    pub name: String,
    /// Its version, as semver prints it.
    pub version: String,
    /// `sha256:HEX` of the tree's canonical listing.
    pub digest: String,
    /// The manifest, summarized.
    pub summary: Summary,
    /// When it was added, RFC 3339 UTC (`2026-12-06T22:25:58Z`).
    pub added_at: String,
    /// Who signed it, as the caller named them (e.g. a key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// `sha256:HEX` of the signature envelope stored beside the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_sha256: Option<String>,
}

impl Record {
    /// `NAME@VERSION`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The version, parsed (`None` only for a damaged record).
    pub fn semver(&self) -> Option<semver::Version> {
        semver::Version::parse(&self.version).ok()
    }

    /// The digest's hex digits.
    pub fn digest_hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// A registered processor read back and verified.
#[derive(Debug, Clone)]
pub struct LoadedProcessor {
    /// Its record.
    pub record: Record,
    /// The object directory (`STATE/registry/objects/sha256/<hex>`): the
    /// path a backend mounts or executes from. It lies in the private
    /// (0700) state directory, read-only.
    pub dir: PathBuf,
    /// The files as read from `dir`, whose digest is the record's.
    pub tree: Tree,
    /// The manifest, parsed again from the bytes read.
    pub manifest: Manifest,
    /// The signature envelope, if one is stored, checked against the
    /// record's `signature_sha256`.
    pub signature: Option<Vec<u8>>,
}

impl LoadedProcessor {
    /// The entry's absolute path in the object directory.
    pub fn entry_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.entry)
    }

    /// The entry's bytes, as verified.
    pub fn entry_bytes(&self) -> &[u8] {
        self.tree
            .file(&self.manifest.entry)
            .map_or(&[], |f| f.bytes())
    }
}

/// The registry in a state directory.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// Opens (creating, 0700) `STATE/registry/`.
    pub fn open(state: &Path) -> Result<Registry, RegistryError> {
        let root = state.join("registry");
        for dir in [
            root.clone(),
            root.join("objects").join("sha256"),
            root.join("index"),
            root.join("tmp"),
        ] {
            warden_core::state::private_dir(&dir).map_err(io(&dir))?;
        }
        Ok(Registry { root })
    }

    /// `STATE/registry`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The object directory of `digest` (`sha256:HEX`), whether or not it
    /// exists.
    pub fn object_dir(&self, digest: &str) -> Result<PathBuf, RegistryError> {
        let hex = digest_hex(digest).map_err(|why| RegistryError::BadSpec {
            spec: digest.to_owned(),
            why,
        })?;
        Ok(self.objects().join(hex))
    }

    fn objects(&self) -> PathBuf {
        self.root.join("objects").join("sha256")
    }

    fn signature_path(&self, hex: &str) -> PathBuf {
        self.objects().join(format!("{hex}.sig"))
    }

    fn record_path(&self, name: &str, version: &str) -> PathBuf {
        self.root
            .join("index")
            .join(name)
            .join(format!("{version}.json"))
    }

    /// Registers `tree` under its manifest's NAME@VERSION, storing the
    /// tree (from `tree`'s bytes) and the signature envelope if given.
    ///
    /// `manifest` must be the tree's own (as [`check_tree`] gives it).
    /// Adding the same NAME@VERSION again with the same digest returns the
    /// existing record (a signature is added if it had none); with another
    /// digest, or another signature, it is refused.
    pub fn add(
        &self,
        tree: &Tree,
        manifest: &Manifest,
        signer: Option<&str>,
        signature: Option<&[u8]>,
    ) -> Result<Record, RegistryError> {
        let own = check_tree(tree, MANIFEST_FILE).map_err(|d| RegistryError::ManifestMismatch {
            why: render_all(&d).replace('\n', "; "),
        })?;
        if own != *manifest {
            return Err(RegistryError::ManifestMismatch {
                why: format!("the tree holds {}, given {}", own.id(), manifest.id()),
            });
        }
        if let Some(sig) = signature {
            if sig.len() > MAX_SIGNATURE_BYTES {
                return Err(RegistryError::SignatureTooLarge(sig.len()));
            }
        }
        let _lock = self.lock()?;
        self.clean_tmp()?;
        let version = manifest.version.to_string();
        let signature_sha256 = signature.map(sha256_digest);
        let existing = self.get(&manifest.name, &version)?;
        let mut record = match existing {
            Some(record) if record.digest != tree.digest() => {
                return Err(RegistryError::Conflict {
                    id: record.id(),
                    existing: record.digest,
                    new: tree.digest().to_owned(),
                })
            }
            Some(record) => {
                self.store_object(tree)?;
                match (&record.signature_sha256, &signature_sha256) {
                    (_, None) => return Ok(record),
                    (Some(old), Some(new)) if old == new => return Ok(record),
                    (Some(_), Some(_)) => {
                        return Err(RegistryError::SignatureConflict { id: record.id() })
                    }
                    (None, Some(_)) => record,
                }
            }
            None => {
                self.store_object(tree)?;
                Record {
                    name: manifest.name.clone(),
                    version: version.clone(),
                    digest: tree.digest().to_owned(),
                    summary: Summary::new(manifest, tree),
                    added_at: rfc3339(SystemTime::now()),
                    signer: None,
                    signature_sha256: None,
                }
            }
        };
        if let Some(sig) = signature {
            let path = self.signature_path(tree.digest_hex());
            self.write_atomic(&path, sig, 0o444)?;
            record.signer = signer.map(str::to_owned);
            record.signature_sha256 = signature_sha256;
        } else {
            record.signer = signer.map(str::to_owned);
        }
        let dir = self.root.join("index").join(&manifest.name);
        warden_core::state::private_dir(&dir).map_err(io(&dir))?;
        let mut json =
            serde_json::to_vec_pretty(&record).map_err(|e| RegistryError::BadRecord {
                path: dir.clone(),
                why: e.to_string(),
            })?;
        json.push(b'\n');
        self.write_atomic(&self.record_path(&record.name, &version), &json, 0o600)?;
        Ok(record)
    }

    /// The record of NAME@VERSION (exactly as semver prints it), if any.
    pub fn get(&self, name: &str, version: &str) -> Result<Option<Record>, RegistryError> {
        if check_name(name).is_err() || semver::Version::parse(version).is_err() {
            return Ok(None);
        }
        let path = self.record_path(name, version);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
            Ok(_) => {}
        }
        read_record(&path).map(Some)
    }

    /// Every record, sorted by name, then by version (semver order).
    pub fn list(&self) -> Result<Vec<Record>, RegistryError> {
        let index = self.root.join("index");
        let mut records = Vec::new();
        for name in sorted_names(&index)? {
            if check_name(&name).is_err() {
                continue;
            }
            let dir = index.join(&name);
            if !std::fs::symlink_metadata(&dir).map_err(io(&dir))?.is_dir() {
                continue;
            }
            for file in sorted_names(&dir)? {
                let Some(version) = file.strip_suffix(".json") else {
                    continue;
                };
                if semver::Version::parse(version).is_err() {
                    continue;
                }
                records.push(read_record(&dir.join(&file))?);
            }
        }
        records.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| a.semver().cmp(&b.semver()))
                .then_with(|| a.version.cmp(&b.version))
        });
        Ok(records)
    }

    /// The records whose digest is `digest`.
    pub fn users(&self, digest: &str) -> Result<Vec<Record>, RegistryError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.digest == digest)
            .collect())
    }

    /// Finds a record: `NAME` (its highest version by semver precedence,
    /// a release preferred to any pre-release), `NAME@VERSION` (exactly),
    /// `NAME@sha256:HEX` (that name with exactly that digest) or
    /// `sha256:HEX` (whatever has that digest).
    pub fn resolve(&self, spec: &str) -> Result<Record, RegistryError> {
        let bad = |why: String| RegistryError::BadSpec {
            spec: spec.to_owned(),
            why,
        };
        let not_found = || RegistryError::NotFound {
            spec: spec.to_owned(),
        };
        if spec.starts_with("sha256:") {
            digest_hex(spec).map_err(bad)?;
            return self.users(spec)?.into_iter().next().ok_or_else(not_found);
        }
        let (name, rest) = match spec.split_once('@') {
            Some((name, rest)) => (name, Some(rest)),
            None => (spec, None),
        };
        check_name(name).map_err(bad)?;
        match rest {
            Some(digest) if digest.starts_with("sha256:") => {
                digest_hex(digest).map_err(bad)?;
                self.users(digest)?
                    .into_iter()
                    .find(|r| r.name == name)
                    .ok_or_else(not_found)
            }
            Some(version) => {
                let parsed = semver::Version::parse(version).map_err(|e| {
                    bad(format!(
                        "{version:?} is not a semantic version (MAJOR.MINOR.PATCH) or sha256:HEX: {e}"
                    ))
                })?;
                self.get(name, &parsed.to_string())?.ok_or_else(not_found)
            }
            None => {
                let mut candidates: Vec<(semver::Version, Record)> = self
                    .list()?
                    .into_iter()
                    .filter(|r| r.name == name)
                    .filter_map(|r| Some((r.semver()?, r)))
                    .collect();
                candidates
                    .sort_by(|a, b| (a.0.pre.is_empty(), &a.0).cmp(&(b.0.pre.is_empty(), &b.0)));
                candidates.pop().map(|(_, r)| r).ok_or_else(not_found)
            }
        }
    }

    /// Removes NAME@VERSION's record. Its object (and signature) is
    /// deleted too unless another record uses it. Ledger entries that
    /// named it keep its digest, so they still verify.
    pub fn remove(&self, name: &str, version: &str) -> Result<Record, RegistryError> {
        let spec = format!("{name}@{version}");
        check_name(name).map_err(|why| RegistryError::BadSpec {
            spec: spec.clone(),
            why,
        })?;
        let version = semver::Version::parse(version)
            .map_err(|e| RegistryError::BadSpec {
                spec: spec.clone(),
                why: e.to_string(),
            })?
            .to_string();
        let _lock = self.lock()?;
        self.clean_tmp()?;
        let record = self
            .get(name, &version)?
            .ok_or(RegistryError::NotFound { spec })?;
        let path = self.record_path(name, &version);
        std::fs::remove_file(&path).map_err(io(&path))?;
        let dir = self.root.join("index").join(name);
        sync_dir(&dir)?;
        // Only succeeds when no other version is left.
        let _ = std::fs::remove_dir(&dir);
        if self.users(&record.digest)?.is_empty() {
            let hex = record.digest_hex().to_owned();
            let sig = self.signature_path(&hex);
            match std::fs::remove_file(&sig) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&sig)(e)),
                _ => {}
            }
            self.discard(&self.objects().join(&hex))?;
            sync_dir(&self.objects())?;
        }
        Ok(record)
    }

    /// Reads `record`'s object back, re-verifies its digest from the bytes
    /// read, parses its manifest from those bytes (it must be the record's
    /// NAME@VERSION) and reads the signature, checked against the record.
    pub fn load(&self, record: &Record) -> Result<LoadedProcessor, RegistryError> {
        let dir = self.object_dir(&record.digest)?;
        let tree = Tree::read(&dir).map_err(|e| match e {
            TreeError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                RegistryError::Tampered(format!(
                    "the object of {} ({}) is missing",
                    record.id(),
                    record.digest
                ))
            }
            other => RegistryError::Tampered(format!(
                "the object of {} ({}) cannot be read as a tree: {other}",
                record.id(),
                record.digest
            )),
        })?;
        if tree.digest() != record.digest {
            return Err(RegistryError::Tampered(format!(
                "the object of {} should have digest {} but its files now hash to {}",
                record.id(),
                record.digest,
                tree.digest()
            )));
        }
        let manifest = check_tree(&tree, MANIFEST_FILE).map_err(|d| {
            RegistryError::Tampered(format!(
                "the object of {} holds an invalid manifest: {}",
                record.id(),
                render_all(&d).replace('\n', "; ")
            ))
        })?;
        if manifest.name != record.name || manifest.version.to_string() != record.version {
            return Err(RegistryError::Tampered(format!(
                "record {} points at {} of {}",
                record.id(),
                record.digest,
                manifest.id()
            )));
        }
        let signature = self.signature(record)?;
        Ok(LoadedProcessor {
            record: record.clone(),
            dir,
            tree,
            manifest,
            signature,
        })
    }

    /// The signature envelope stored for `record`, checked against its
    /// `signature_sha256`; `None` if it was added unsigned.
    pub fn signature(&self, record: &Record) -> Result<Option<Vec<u8>>, RegistryError> {
        let Some(expected) = &record.signature_sha256 else {
            return Ok(None);
        };
        let path = self.signature_path(digest_hex(&record.digest).map_err(|why| {
            RegistryError::BadSpec {
                spec: record.digest.clone(),
                why,
            }
        })?);
        let bytes = read_capped(&path, MAX_SIGNATURE_BYTES as u64).map_err(|e| match e {
            RegistryError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                RegistryError::Tampered(format!("the signature of {} is missing", record.id()))
            }
            other => other,
        })?;
        if sha256_digest(&bytes) != *expected {
            return Err(RegistryError::Tampered(format!(
                "the signature of {} is not the one that was registered",
                record.id()
            )));
        }
        Ok(Some(bytes))
    }

    /// Makes sure the object of `tree` is stored intact: an existing one
    /// that verifies is reused, a damaged one replaced, a missing one
    /// written from the tree's bytes.
    fn store_object(&self, tree: &Tree) -> Result<(), RegistryError> {
        let target = self.objects().join(tree.digest_hex());
        match std::fs::symlink_metadata(&target) {
            Ok(_) => match Tree::read(&target) {
                Ok(stored) if stored.digest() == tree.digest() => {
                    set_mode(&target, 0o555)?;
                    return Ok(());
                }
                _ => self.discard(&target)?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&target)(e)),
        }
        let staging = self.tmp_path(tree.digest_hex());
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io(&staging))?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for file in tree.files() {
            let path = staging.join(file.path());
            if let Some(parent) = path.parent() {
                if !parent.exists() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .map_err(io(parent))?;
                }
                let mut p = parent;
                while p != staging && !dirs.iter().any(|d| d == p) {
                    dirs.push(p.to_path_buf());
                    match p.parent() {
                        Some(up) => p = up,
                        None => break,
                    }
                }
            }
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(&path))?;
            out.write_all(file.bytes()).map_err(io(&path))?;
            out.sync_all().map_err(io(&path))?;
            drop(out);
            set_mode(&path, if file.executable() { 0o555 } else { 0o444 })?;
        }
        // Deepest first, so a parent is still writable while its children
        // are synced and sealed.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in &dirs {
            sync_dir(dir)?;
            set_mode(dir, 0o555)?;
        }
        sync_dir(&staging)?;
        // The top stays writable until renamed (renaming a directory
        // needs write access to it, for its "..", unless root).
        std::fs::rename(&staging, &target).map_err(io(&target))?;
        set_mode(&target, 0o555)?;
        sync_dir(&self.objects())?;
        Ok(())
    }

    /// Moves a directory out of the way into `tmp/` and deletes it (its
    /// directories made writable first; symbolic links are not followed).
    fn discard(&self, dir: &Path) -> Result<(), RegistryError> {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(dir)(e)),
            Ok(m) if m.is_dir() => set_mode(dir, 0o700)?,
            Ok(_) => {}
        }
        let aside = self.tmp_path("discarded");
        std::fs::rename(dir, &aside).map_err(io(dir))?;
        remove_tree(&aside)
    }

    /// Removes leftovers of interrupted adds and removes (the lock is held).
    fn clean_tmp(&self) -> Result<(), RegistryError> {
        let tmp = self.root.join("tmp");
        for name in sorted_names(&tmp)? {
            remove_tree(&tmp.join(name))?;
        }
        Ok(())
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.root
            .join("tmp")
            .join(format!("{what}.{}.{nanos}", std::process::id()))
    }

    /// Writes `bytes` to `path` via a fsynced temporary file in `tmp/` and
    /// a rename, then syncs `path`'s directory.
    fn write_atomic(&self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), RegistryError> {
        let tmp = self.tmp_path("write");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        out.write_all(bytes).map_err(io(&tmp))?;
        out.sync_all().map_err(io(&tmp))?;
        drop(out);
        set_mode(&tmp, mode)?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// The registry's lock, held until dropped.
    fn lock(&self) -> Result<std::fs::File, RegistryError> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(&path)(e.into()))?;
        Ok(file)
    }
}

/// The 64 hex digits of `sha256:HEX` (lowercase).
fn digest_hex(digest: &str) -> Result<&str, String> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => Err("a digest is sha256: and 64 lowercase hex digits".to_owned()),
    }
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, RegistryError> {
    use std::io::Read as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io(path))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > max {
        return Err(RegistryError::BadRecord {
            path: path.to_path_buf(),
            why: format!("larger than {max} bytes"),
        });
    }
    Ok(bytes)
}

fn read_record(path: &Path) -> Result<Record, RegistryError> {
    let bytes = read_capped(path, MAX_RECORD_BYTES)?;
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadRecord {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let expected = format!("{}.json", record.version);
    if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str())
        || path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            != Some(record.name.as_str())
        || digest_hex(&record.digest).is_err()
    {
        return Err(RegistryError::BadRecord {
            path: path.to_path_buf(),
            why: format!(
                "it names {} ({}), not what its place says",
                record.id(),
                record.digest
            ),
        });
    }
    Ok(record)
}

/// The names in a directory (UTF-8 ones; hidden ones skipped), sorted.
fn sorted_names(dir: &Path) -> Result<Vec<String>, RegistryError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            if !name.starts_with('.') {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RegistryError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), RegistryError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Deletes a file or a directory tree that may hold read-only
/// directories, without following symbolic links.
fn remove_tree(path: &Path) -> Result<(), RegistryError> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path)(e)),
        Ok(m) => m,
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path).map_err(io(path));
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        set_mode(&dir, 0o700)?;
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            if entry.file_type().map_err(io(&dir))?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    std::fs::remove_dir_all(path).map_err(io(path))
}

/// RFC 3339 UTC with seconds, e.g. `2026-12-06T22:25:58Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_595_958), "2026-12-06T22:25:58Z");
    }

    #[test]
    fn digest_syntax() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(digest_hex(&good).is_ok());
        assert!(digest_hex(&good.to_uppercase()).is_err());
        assert!(digest_hex("sha256:abc").is_err());
        assert!(digest_hex(&"a".repeat(64)).is_err());
    }
}
