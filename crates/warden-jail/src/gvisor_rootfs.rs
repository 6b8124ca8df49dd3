//! The gVisor bundle's root directory, built once per distinct content and
//! shared by the runs that need the same one (runsc mounts it read-only).
//! It holds the jail's generated /etc, copies of the small /etc
//! directories the jail binds (each bind mount costs runsc ≈ 1 ms at
//! start), symlinks, and the mount points of the run's mounts. The cache
//! key is a digest of everything written, the copied trees included entry
//! by entry (mode, owner, size, modification time), so an edited host file
//! gives a new root, never a stale one.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Cached roots kept; past this the least recently used are removed.
const KEEP: usize = 64;

enum Item {
    File {
        at: PathBuf,
        contents: Vec<u8>,
    },
    Symlink {
        at: PathBuf,
        target: PathBuf,
    },
    /// A host directory copied as it is (symlinks as symlinks; modes and
    /// owners kept, so what the sandbox user could not read stays so).
    Tree {
        at: PathBuf,
        source: PathBuf,
    },
    MountPoint {
        at: PathBuf,
        is_dir: bool,
    },
    /// A directory the sandbox user owns (a working directory).
    Owned {
        at: PathBuf,
        uid: u32,
    },
}

#[derive(Default)]
pub(crate) struct RootPlan {
    items: Vec<Item>,
}

fn rel(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_path_buf()
}

impl RootPlan {
    pub fn file(&mut self, at: &Path, contents: &[u8]) {
        self.items.push(Item::File {
            at: rel(at),
            contents: contents.to_vec(),
        });
    }

    pub fn symlink(&mut self, at: &Path, target: &Path) {
        self.items.push(Item::Symlink {
            at: rel(at),
            target: target.to_path_buf(),
        });
    }

    pub fn tree(&mut self, at: &Path, source: &Path) {
        self.items.push(Item::Tree {
            at: rel(at),
            source: source.to_path_buf(),
        });
    }

    pub fn mount_point(&mut self, at: &Path, is_dir: bool) {
        self.items.push(Item::MountPoint {
            at: rel(at),
            is_dir,
        });
    }

    pub fn owned_dir(&mut self, at: &Path, uid: u32) {
        self.items.push(Item::Owned { at: rel(at), uid });
    }

    /// The digest of what the root would hold.
    fn key(&self) -> io::Result<String> {
        let mut h = Sha256::new();
        h.update(b"warden-gvisor-rootfs v1\n");
        let mut field = |tag: &str, bytes: &[u8]| {
            h.update(tag.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        for item in &self.items {
            match item {
                Item::File { at, contents } => {
                    field("file", at.as_os_str().as_encoded_bytes());
                    field("contents", contents);
                }
                Item::Symlink { at, target } => {
                    field("link", at.as_os_str().as_encoded_bytes());
                    field("target", target.as_os_str().as_encoded_bytes());
                }
                Item::MountPoint { at, is_dir } => field(
                    if *is_dir { "mdir" } else { "mfile" },
                    at.as_os_str().as_encoded_bytes(),
                ),
                Item::Owned { at, uid } => {
                    field("owned", at.as_os_str().as_encoded_bytes());
                    field("uid", &uid.to_le_bytes());
                }
                Item::Tree { at, source } => {
                    field("tree", at.as_os_str().as_encoded_bytes());
                    field("source", source.as_os_str().as_encoded_bytes());
                    walk(source, &mut |rel, meta, link| {
                        field("entry", rel.as_os_str().as_encoded_bytes());
                        let stamp = [
                            u64::from(meta.mode()),
                            u64::from(meta.uid()),
                            u64::from(meta.gid()),
                            meta.size(),
                            meta.mtime() as u64,
                            meta.mtime_nsec() as u64,
                        ];
                        for v in stamp {
                            field("", &v.to_le_bytes());
                        }
                        if let Some(target) = link {
                            field("to", target.as_os_str().as_encoded_bytes());
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(hex(&h.finalize()))
    }

    /// The root for this plan under `cache` (0700): the cached one, or one
    /// built now (in a private directory, then renamed into place, so a
    /// concurrent run never sees half of it).
    pub fn materialize(&self, cache: &Path) -> io::Result<PathBuf> {
        let root = cache.join(self.key()?);
        if root.is_dir() {
            // Marks it used, for the pruning below.
            let _ = std::fs::File::open(&root)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(root);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache)?;
        let building = cache.join(format!(
            ".build-{}-{}",
            std::process::id(),
            root.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_dir_all(&building);
        std::fs::DirBuilder::new().mode(0o755).create(&building)?;
        let built = self
            .build(&building)
            .and_then(|()| std::fs::rename(&building, &root));
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&building);
            // Another run renamed the same root into place first.
            if root.is_dir() {
                return Ok(root);
            }
            return Err(e);
        }
        prune(cache, &root);
        Ok(root)
    }

    fn build(&self, root: &Path) -> io::Result<()> {
        let parent = |p: &Path| -> io::Result<()> {
            match p.parent() {
                Some(d) => std::fs::create_dir_all(d),
                None => Ok(()),
            }
        };
        for item in &self.items {
            match item {
                Item::File { at, contents } => {
                    let p = root.join(at);
                    parent(&p)?;
                    std::fs::write(&p, contents)?;
                }
                Item::Symlink { at, target } => {
                    let p = root.join(at);
                    parent(&p)?;
                    std::os::unix::fs::symlink(target, &p)?;
                }
                Item::Tree { at, source } => {
                    let dest = root.join(at);
                    parent(&dest)?;
                    copy_tree(source, &dest)?;
                }
                Item::MountPoint { at, is_dir } => {
                    let p = root.join(at);
                    if p.symlink_metadata().is_ok() {
                        continue;
                    }
                    if *is_dir {
                        std::fs::create_dir_all(&p)?;
                    } else {
                        parent(&p)?;
                        std::fs::File::create(&p)?;
                    }
                }
                Item::Owned { at, uid } => {
                    let p = root.join(at);
                    std::fs::create_dir_all(&p)?;
                    // An ordinary user's own files are the sandbox's uid 0
                    // (rootless runsc maps the user to it): nothing to give.
                    if as_root() {
                        std::os::unix::fs::chown(&p, Some(*uid), Some(*uid))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What [`walk`] calls for each entry: its relative path, metadata (not
/// followed) and, for a symlink, its target.
type Visit<'a> = dyn FnMut(&Path, &std::fs::Metadata, Option<&Path>) -> io::Result<()> + 'a;

/// Calls `f` for every entry below `dir` (not `dir` itself), depth first
/// in name order, with its relative path, metadata (not followed) and, for
/// a symlink, its target.
fn walk(dir: &Path, f: &mut Visit<'_>) -> io::Result<()> {
    fn go(base: &Path, dir: &Path, f: &mut Visit<'_>) -> io::Result<()> {
        let listed = match std::fs::read_dir(dir) {
            // An ordinary user's sandbox holds what the user can read: a
            // directory closed to it (/etc/ssl/private) is left out.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !as_root() => return Ok(()),
            listed => listed?,
        };
        let mut entries: Vec<_> = listed.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let rel = path.strip_prefix(base).unwrap_or(&path).to_path_buf();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                f(&rel, &meta, Some(&target))?;
            } else {
                f(&rel, &meta, None)?;
                if meta.is_dir() {
                    go(base, &path, f)?;
                }
            }
        }
        Ok(())
    }
    go(dir, dir, f)
}

fn as_root() -> bool {
    crate::sys::getuid() == 0
}

fn copy_tree(source: &Path, dest: &Path) -> io::Result<()> {
    let top = std::fs::symlink_metadata(source)?;
    std::fs::create_dir(dest)?;
    let keep = |p: &Path, meta: &std::fs::Metadata| -> io::Result<()> {
        // Ownership is carried over by root only (an ordinary user's
        // copies are its own: the sandbox's uid 0 when rootless).
        if as_root() {
            std::os::unix::fs::lchown(p, Some(meta.uid()), Some(meta.gid()))?;
        }
        if !meta.file_type().is_symlink() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        Ok(())
    };
    // Modes are set after the contents: a directory without write
    // permission for its owner is still filled first.
    let mut dirs = vec![(dest.to_path_buf(), top)];
    walk(source, &mut |rel, meta, link| {
        let to = dest.join(rel);
        if let Some(target) = link {
            std::os::unix::fs::symlink(target, &to)?;
            keep(&to, meta)
        } else if meta.is_dir() {
            std::fs::create_dir(&to)?;
            dirs.push((to, meta.clone()));
            Ok(())
        } else if meta.is_file() {
            match std::fs::copy(source.join(rel), &to) {
                // As for directories: what the user cannot read is left out.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !as_root() => Ok(()),
                copied => copied.and_then(|_| keep(&to, meta)),
            }
        } else {
            Ok(()) // sockets, fifos, devices: not carried over
        }
    })?;
    for (dir, meta) in dirs.iter().rev() {
        keep(dir, meta)?;
    }
    Ok(())
}

/// Keeps the [`KEEP`] most recently used roots in `cache` (and `current`).
fn prune(cache: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let mut roots: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if roots.len() <= KEEP {
        return;
    }
    roots.sort();
    let excess = roots.len() - KEEP;
    for (_, path) in roots.into_iter().take(excess) {
        if path != current {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_built_once_and_a_changed_source_makes_another() {
        let base = std::env::temp_dir().join(format!("warden-rootfs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = base.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/a.conf"), "one").unwrap();
        std::os::unix::fs::symlink("sub/a.conf", src.join("link")).unwrap();
        std::fs::set_permissions(
            src.join("sub/a.conf"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let plan = |_: ()| {
            let mut p = RootPlan::default();
            p.file(Path::new("/etc/passwd"), b"root:x:0:0::/:/bin/sh\n");
            p.symlink(Path::new("/bin"), Path::new("usr/bin"));
            p.tree(Path::new("/etc/conf"), &src);
            p.mount_point(Path::new("/usr"), true);
            p.mount_point(Path::new("/.warden/init"), false);
            p
        };
        let cache = base.join("cache");
        let first = plan(()).materialize(&cache).unwrap();
        assert_eq!(plan(()).materialize(&cache).unwrap(), first);
        assert_eq!(
            std::fs::read_to_string(first.join("etc/conf/sub/a.conf")).unwrap(),
            "one"
        );
        let mode = std::fs::metadata(first.join("etc/conf/sub/a.conf"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_link(first.join("etc/conf/link")).unwrap(),
            Path::new("sub/a.conf")
        );
        assert!(first.join("usr").is_dir() && first.join(".warden/init").is_file());
        // Edited in place (same directory listing): a new root.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(src.join("sub/a.conf"), "two").unwrap();
        let second = plan(()).materialize(&cache).unwrap();
        assert_ne!(second, first);
        assert_eq!(
            std::fs::read_to_string(second.join("etc/conf/sub/a.conf")).unwrap(),
            "two"
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
