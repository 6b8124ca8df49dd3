//! A sandbox's workspace on the host: made private, read and written by
//! the service through paths that cannot leave it, measured and removed.
//!
//! A program in the sandbox owns what is in its workspace: it may plant
//! symbolic links (`ln -s /etc/passwd p`), FIFOs or read-only directories
//! there. So the service never follows a link in it: every path is opened
//! from the workspace's descriptor with `openat2` and `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, the last component with
//! `O_NOFOLLOW | O_NONBLOCK`, and only a regular file is read or written.

use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("no such file")]
    NotFound,
    #[error("is a symbolic link, or passes through one (never followed)")]
    Symlink,
    #[error("is not a regular file")]
    NotRegular,
    #[error("is larger than {0} bytes, the cap")]
    TooLarge(u64),
    #[error("cannot be written: {0}")]
    Refused(std::io::Error),
    #[error("{0}")]
    Io(std::io::Error),
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn classify(e: Errno) -> FileError {
    match e {
        Errno::NOENT => FileError::NotFound,
        // O_NOFOLLOW on a link, or RESOLVE_NO_SYMLINKS on the way.
        Errno::LOOP => FileError::Symlink,
        Errno::XDEV => FileError::Symlink,
        Errno::NOTDIR | Errno::ISDIR | Errno::NXIO => FileError::NotRegular,
        Errno::ACCESS | Errno::PERM | Errno::ROFS | Errno::EXIST => FileError::Refused(e.into()),
        e => FileError::Io(e.into()),
    }
}

fn open_dir(path: &Path) -> Result<OwnedFd, FileError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(classify)
}

fn names(rel: &Path) -> Result<Vec<&std::ffi::OsStr>, FileError> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(FileError::NotFound),
        })
        .collect()
}

/// Makes `dir` and its `workspace/` (both 0700; the jail's user reaches
/// the workspace through its grant, idmapped to the owner).
pub fn create(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    let workspace = dir.join("workspace");
    std::fs::DirBuilder::new().mode(0o700).create(&workspace)?;
    Ok(workspace)
}

/// Writes `bytes` to `rel` beneath `workspace` (making its directories,
/// 0755), replacing a regular file there.
pub fn write_file(workspace: &Path, rel: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let parts = names(rel)?;
    let Some((last, dirs)) = parts.split_last() else {
        return Err(FileError::NotFound);
    };
    let mut dir = open_dir(workspace)?;
    for name in dirs {
        match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(classify(e)),
        }
        dir = rustix::fs::openat2(
            &dir,
            *name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(classify)?;
    }
    let fd = rustix::fs::openat2(
        &dir,
        *last,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
        RESOLVE,
    )
    .map_err(classify)?;
    let stat = rustix::fs::fstat(&fd).map_err(classify)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(FileError::NotRegular);
    }
    rustix::fs::ftruncate(&fd, 0).map_err(classify)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(FileError::Io)?;
    Ok(())
}

/// The bytes of the regular file `rel` beneath `workspace`, at most `cap`.
pub fn read_file(workspace: &Path, rel: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    names(rel)?;
    let dir = open_dir(workspace)?;
    let fd = rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
    .map_err(classify)?;
    let stat = rustix::fs::fstat(&fd).map_err(classify)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(FileError::NotRegular);
    }
    if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > cap {
        return Err(FileError::TooLarge(cap));
    }
    let mut out = Vec::new();
    // The file may grow while it is read: never past the cap.
    std::fs::File::from(fd)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(FileError::Io)?;
    if out.len() as u64 > cap {
        return Err(FileError::TooLarge(cap));
    }
    Ok(out)
}

/// Bytes of the regular files beneath `dir` (links not followed).
pub fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// Removes `dir` and everything in it, also directories its programs made
/// read-only or unsearchable (they are made 0700 first; links are never
/// followed). Missing already: done.
pub fn remove_all(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let is_dir = d.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
        if !is_dir {
            continue;
        }
        let _ = std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_never_followed_and_only_regular_files_are_read() {
        let t = tempfile::tempdir().unwrap();
        let ws = create(&t.path().join("s")).unwrap();
        write_file(&ws, Path::new("a/b/c.txt"), b"hi").unwrap();
        assert_eq!(read_file(&ws, Path::new("a/b/c.txt"), 10).unwrap(), b"hi");
        write_file(&ws, Path::new("a/b/c.txt"), b"x").unwrap();
        assert_eq!(read_file(&ws, Path::new("a/b/c.txt"), 10).unwrap(), b"x");
        assert!(matches!(
            read_file(&ws, Path::new("a/b/c.txt"), 0),
            Err(FileError::TooLarge(0))
        ));
        std::os::unix::fs::symlink("/etc/passwd", ws.join("p")).unwrap();
        std::os::unix::fs::symlink("/etc", ws.join("d")).unwrap();
        assert!(matches!(
            read_file(&ws, Path::new("p"), 1 << 20),
            Err(FileError::Symlink)
        ));
        assert!(matches!(
            read_file(&ws, Path::new("d/passwd"), 1 << 20),
            Err(FileError::Symlink)
        ));
        assert!(matches!(
            write_file(&ws, Path::new("p"), b"x"),
            Err(FileError::Symlink)
        ));
        // A link where a directory should be: O_DIRECTORY | O_NOFOLLOW
        // answers ENOTDIR.
        let e = write_file(&ws, Path::new("d/x"), b"x").unwrap_err();
        assert!(
            matches!(e, FileError::Symlink | FileError::NotRegular),
            "{e:?}"
        );
        assert!(!Path::new("/etc/x").exists());
        assert!(matches!(
            read_file(&ws, Path::new("a"), 10),
            Err(FileError::NotRegular)
        ));
        assert!(matches!(
            read_file(&ws, Path::new("nope"), 10),
            Err(FileError::NotFound)
        ));
        // A FIFO the program made: neither read (which would block) nor
        // written.
        let made = std::process::Command::new("mkfifo")
            .arg(ws.join("fifo"))
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            read_file(&ws, Path::new("fifo"), 10),
            Err(FileError::NotRegular)
        ));
        let e = write_file(&ws, Path::new("fifo"), b"x").unwrap_err();
        assert!(matches!(e, FileError::NotRegular), "{e:?}");
        assert_eq!(disk_bytes(&ws), 1);
        std::fs::set_permissions(
            ws.join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o500),
        )
        .unwrap();
        remove_all(&t.path().join("s")).unwrap();
        assert!(!t.path().join("s").exists());
        remove_all(&t.path().join("s")).unwrap();
    }
}
