//! The canonical digest of a processor directory.
//!
//! [`Tree::read`] walks a directory without following any symbolic link
//! (each step is an `openat` with `O_NOFOLLOW` relative to the directory
//! already open, so nothing can be swapped under the walk), reads every
//! regular file once into memory and hashes those bytes. The digest is the
//! SHA-256 of one canonical listing, a line per regular file sorted by
//! path bytes:
//!
//! ```text
//! <sha256 hex of the contents> <size in bytes> <644|755> <path>\n
//! ```
//!
//! `755` if any execute bit is set, else `644`; the path is relative to the
//! directory, `/`-separated, valid UTF-8 without control characters.
//! Directories are not listed (an empty directory is not part of a
//! processor). Digest: `sha256:` and the hex SHA-256 of the listing.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use sha2::{Digest as _, Sha256};

/// Most regular files in a processor directory.
pub const MAX_FILES: usize = 10_000;
/// Most directories in a processor directory (the top one included).
pub const MAX_DIRS: usize = 10_000;
/// Most bytes of all files together.
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;
/// Deepest directory nesting below the top.
pub const MAX_DEPTH: usize = 64;
/// Longest relative path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why a directory is not a processor tree. Displays as one line, starting
/// with the offending path.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A symbolic link (never followed).
    #[error("{}: is a symbolic link; a processor directory may hold only regular files and directories", path.display())]
    Symlink {
        /// Where.
        path: PathBuf,
    },
    /// A device, FIFO, socket or other special file.
    #[error("{}: is {kind}; a processor directory may hold only regular files and directories", path.display())]
    Special {
        /// Where.
        path: PathBuf,
        /// `"a character device"`, `"a FIFO"`, ….
        kind: &'static str,
    },
    /// A path that cannot be written in the listing.
    #[error("{}: {why}", path.display())]
    BadPath {
        /// Where (lossily decoded).
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Over [`MAX_FILES`] files.
    #[error("{}: more than {MAX_FILES} files", path.display())]
    TooManyFiles {
        /// The top directory.
        path: PathBuf,
    },
    /// Over [`MAX_DIRS`] directories.
    #[error("{}: more than {MAX_DIRS} directories", path.display())]
    TooManyDirs {
        /// The top directory.
        path: PathBuf,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("{}: nested deeper than {MAX_DEPTH} directories", path.display())]
    TooDeep {
        /// The first directory too deep.
        path: PathBuf,
    },
    /// Over [`MAX_TOTAL_BYTES`] in all.
    #[error("{}: the files add up to more than {MAX_TOTAL_BYTES} bytes", path.display())]
    TooLarge {
        /// The file at which the total went over.
        path: PathBuf,
    },
    /// A file changed size or identity while it was read.
    #[error("{}: changed while it was being read", path.display())]
    Changed {
        /// Where.
        path: PathBuf,
    },
    /// The same path twice, or a path that is both a file and a directory
    /// (only from [`Tree::from_files`]).
    #[error("{}: {why}", path.display())]
    Conflict {
        /// Where.
        path: PathBuf,
        /// Which conflict.
        why: &'static str,
    },
}

/// One regular file of a [`Tree`], with the bytes that were hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    path: String,
    executable: bool,
    sha256: [u8; 32],
    bytes: Vec<u8>,
}

impl File {
    /// The path relative to the tree's top, `/`-separated.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// True if any execute bit was set.
    pub fn executable(&self) -> bool {
        self.executable
    }

    /// The mode in the listing: `0o755` if executable, else `0o644`.
    pub fn mode(&self) -> u32 {
        if self.executable {
            0o755
        } else {
            0o644
        }
    }

    /// Hex SHA-256 of the contents.
    pub fn sha256(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The contents, exactly the bytes that were hashed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The file's line in the listing, with its newline.
    pub fn listing_line(&self) -> String {
        format!(
            "{} {} {:o} {}\n",
            self.sha256(),
            self.size(),
            self.mode(),
            self.path
        )
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("size", &self.size())
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("sha256", &self.sha256())
            .finish_non_exhaustive()
    }
}

/// A processor directory read into memory, with its canonical listing and
/// digest. Immutable: the bytes are the bytes the digest covers.
#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    files: Vec<File>,
    listing: String,
    digest: String,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree")
            .field("digest", &self.digest)
            .field("files", &self.files)
            .finish()
    }
}

impl Tree {
    /// Reads the directory `dir`: every regular file once, no symbolic
    /// link followed (one anywhere, `dir` itself included, is an error, as
    /// is a device, FIFO or socket), within [`MAX_FILES`], [`MAX_DIRS`],
    /// [`MAX_DEPTH`] and [`MAX_TOTAL_BYTES`].
    pub fn read(dir: &Path) -> Result<Tree, TreeError> {
        Walk::new(dir).run()
    }

    /// Builds a tree from `(path, executable, bytes)`, checking the paths
    /// as [`Tree::read`] would and the same limits.
    pub fn from_files(
        files: impl IntoIterator<Item = (String, bool, Vec<u8>)>,
    ) -> Result<Tree, TreeError> {
        let mut out = Vec::new();
        let mut total: u64 = 0;
        for (path, executable, bytes) in files {
            check_path(&path).map_err(|why| TreeError::BadPath {
                path: PathBuf::from(&path),
                why,
            })?;
            if out.len() >= MAX_FILES {
                return Err(TreeError::TooManyFiles {
                    path: PathBuf::from("."),
                });
            }
            total = total.saturating_add(bytes.len() as u64);
            if total > MAX_TOTAL_BYTES {
                return Err(TreeError::TooLarge {
                    path: PathBuf::from(&path),
                });
            }
            out.push(File::new(path, executable, bytes));
        }
        Tree::assemble(out)
    }

    /// Sorts, checks for duplicate and file-versus-directory paths, and
    /// computes the listing and digest.
    fn assemble(mut files: Vec<File>) -> Result<Tree, TreeError> {
        files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let conflict = |path: &str, why| TreeError::Conflict {
            path: PathBuf::from(path),
            why,
        };
        for pair in files.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(conflict(&pair[0].path, "listed twice"));
            }
        }
        let paths: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for file in &files {
            let mut rest = file.path.as_str();
            while let Some((parent, _)) = rest.rsplit_once('/') {
                if paths.contains(parent) {
                    return Err(conflict(parent, "is both a file and a directory"));
                }
                rest = parent;
            }
        }
        let listing: String = files.iter().map(File::listing_line).collect();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(listing.as_bytes())));
        Ok(Tree {
            files,
            listing,
            digest,
        })
    }

    /// The regular files, sorted by path bytes.
    pub fn files(&self) -> &[File] {
        &self.files
    }

    /// The file at `path` (relative, `/`-separated), if any.
    pub fn file(&self, path: &str) -> Option<&File> {
        self.files
            .binary_search_by(|f| f.path.as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| &self.files[i])
    }

    /// The canonical listing the digest is computed over.
    pub fn listing(&self) -> &str {
        &self.listing
    }

    /// `sha256:HEX`.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The digest's 64 hex digits, without `sha256:`.
    pub fn digest_hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }

    /// Bytes of all files together.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(File::size).sum()
    }
}

impl File {
    fn new(path: String, executable: bool, bytes: Vec<u8>) -> File {
        File {
            sha256: Sha256::digest(&bytes).into(),
            path,
            executable,
            bytes,
        }
    }
}

/// Whether a relative path can be written in the listing.
fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("path is longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.chars().any(char::is_control) {
        return Err("path contains a control character (newline, tab, …)".to_owned());
    }
    if path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|c| matches!(c, "" | "." | ".."))
    {
        return Err("not a plain relative path".to_owned());
    }
    Ok(())
}

/// One directory being walked: its descriptor, its path relative to the
/// top ("" for the top), its entries' names and the next one to visit.
struct Frame {
    fd: OwnedFd,
    prefix: String,
    names: Vec<Vec<u8>>,
    next: usize,
}

struct Walk<'d> {
    top: &'d Path,
    files: Vec<File>,
    dirs: usize,
    total: u64,
}

const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl<'d> Walk<'d> {
    fn new(top: &'d Path) -> Walk<'d> {
        Walk {
            top,
            files: Vec::new(),
            dirs: 0,
            total: 0,
        }
    }

    fn full(&self, relative: &str) -> PathBuf {
        if relative.is_empty() {
            self.top.to_path_buf()
        } else {
            self.top.join(relative)
        }
    }

    fn io(&self, relative: &str, source: rustix::io::Errno) -> TreeError {
        TreeError::Io {
            path: self.full(relative),
            source: source.into(),
        }
    }

    fn run(mut self) -> Result<Tree, TreeError> {
        let top = match rustix::fs::open(self.top, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            // O_NOFOLLOW | O_DIRECTORY on a symlink: ELOOP or ENOTDIR.
            Err(e)
                if std::fs::symlink_metadata(self.top)
                    .is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                let _ = e;
                return Err(TreeError::Symlink {
                    path: self.top.to_path_buf(),
                });
            }
            Err(e) => return Err(self.io("", e)),
        };
        let mut stack = vec![self.frame(top, String::new())?];
        loop {
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else {
                break;
            };
            let Some(name) = frame.names.get(frame.next).cloned() else {
                stack.pop();
                continue;
            };
            frame.next += 1;
            let relative =
                relative_path(&frame.prefix, &name).map_err(|(path, why)| TreeError::BadPath {
                    path: self.full(&path),
                    why,
                })?;
            let name = OsStr::from_bytes(&name);
            let stat = rustix::fs::statat(&frame.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.io(&relative, e))?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => {
                    let fd = rustix::fs::openat(&frame.fd, name, FILE_FLAGS, Mode::empty())
                        .map_err(|e| self.io(&relative, e))?;
                    self.file(fd, &stat, relative)?;
                }
                FileType::Directory => {
                    if depth > MAX_DEPTH {
                        return Err(TreeError::TooDeep {
                            path: self.full(&relative),
                        });
                    }
                    let fd = rustix::fs::openat(&frame.fd, name, DIR_FLAGS, Mode::empty())
                        .map_err(|e| match e {
                            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                                TreeError::Changed {
                                    path: self.full(&relative),
                                }
                            }
                            e => self.io(&relative, e),
                        })?;
                    let now = rustix::fs::fstat(&fd).map_err(|e| self.io(&relative, e))?;
                    if (now.st_dev, now.st_ino) != (stat.st_dev, stat.st_ino) {
                        return Err(TreeError::Changed {
                            path: self.full(&relative),
                        });
                    }
                    let next = self.frame(fd, relative)?;
                    stack.push(next);
                }
                FileType::Symlink => {
                    return Err(TreeError::Symlink {
                        path: self.full(&relative),
                    })
                }
                other => {
                    return Err(TreeError::Special {
                        path: self.full(&relative),
                        kind: match other {
                            FileType::CharacterDevice => "a character device",
                            FileType::BlockDevice => "a block device",
                            FileType::Fifo => "a FIFO",
                            FileType::Socket => "a socket",
                            _ => "a special file",
                        },
                    })
                }
            }
        }
        Tree::assemble(self.files)
    }

    /// Lists a directory's entries (sorted, so errors are reproducible).
    fn frame(&mut self, fd: OwnedFd, prefix: String) -> Result<Frame, TreeError> {
        self.dirs += 1;
        if self.dirs > MAX_DIRS {
            return Err(TreeError::TooManyDirs {
                path: self.top.to_path_buf(),
            });
        }
        let mut names = Vec::new();
        let dir = Dir::read_from(&fd).map_err(|e| self.io(&prefix, e))?;
        for entry in dir {
            let entry = entry.map_err(|e| self.io(&prefix, e))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // Bounds the memory of one huge directory before the file
            // count is reached.
            if names.len() > MAX_FILES + MAX_DIRS {
                return Err(TreeError::TooManyFiles {
                    path: self.top.to_path_buf(),
                });
            }
            names.push(name.to_vec());
        }
        names.sort();
        Ok(Frame {
            fd,
            prefix,
            names,
            next: 0,
        })
    }

    /// Reads one regular file, already opened without following links.
    fn file(
        &mut self,
        fd: OwnedFd,
        listed: &rustix::fs::Stat,
        relative: String,
    ) -> Result<(), TreeError> {
        let changed = |walk: &Walk<'_>| TreeError::Changed {
            path: walk.full(&relative),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.io(&relative, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile
            || (stat.st_dev, stat.st_ino) != (listed.st_dev, listed.st_ino)
        {
            return Err(changed(self));
        }
        if self.files.len() >= MAX_FILES {
            return Err(TreeError::TooManyFiles {
                path: self.top.to_path_buf(),
            });
        }
        let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
        let remaining = MAX_TOTAL_BYTES - self.total;
        if size > remaining {
            return Err(TreeError::TooLarge {
                path: self.full(&relative),
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        std::fs::File::from(fd)
            .take(remaining + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| TreeError::Io {
                path: self.full(&relative),
                source,
            })?;
        let read = bytes.len() as u64;
        if read > remaining {
            return Err(TreeError::TooLarge {
                path: self.full(&relative),
            });
        }
        if read != size {
            return Err(changed(self));
        }
        self.total += read;
        let executable = stat.st_mode & 0o111 != 0;
        self.files.push(File::new(relative, executable, bytes));
        Ok(())
    }
}

/// `prefix/name` if `name` is valid UTF-8 without control characters;
/// else the lossy path and why.
fn relative_path(prefix: &str, name: &[u8]) -> Result<String, (String, String)> {
    let join = |n: &str| {
        if prefix.is_empty() {
            n.to_owned()
        } else {
            format!("{prefix}/{n}")
        }
    };
    let Ok(name) = std::str::from_utf8(name) else {
        let lossy = join(&String::from_utf8_lossy(name));
        return Err((lossy, "file name is not valid UTF-8".to_owned()));
    };
    let path = join(name);
    if name.chars().any(char::is_control) {
        return Err((
            path.escape_debug().to_string(),
            "file name contains a control character (newline, tab, …)".to_owned(),
        ));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err((path, format!("path is longer than {MAX_PATH_BYTES} bytes")));
    }
    Ok(path)
}
