//! Root mode: the program runs as an unprivileged host user
//! ([`SANDBOX_HOST_ID`]), and each grant is a detached mount tree prepared
//! by the supervisor (which, as root, may idmap it) so that the grant's
//! owner appears as the sandbox user inside it. Granted paths stay usable
//! — the owner's permissions apply — without the program ever holding a
//! privileged host identity: files it creates are stored as the owner's,
//! sockets it connects to see an unprivileged peer, and sysctls and other
//! root-only host objects stay out of reach.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::sys;

/// The host uid and gid of the program when Warden runs as root ("nobody").
pub const SANDBOX_HOST_ID: u32 = 65534;

/// User namespaces that map one owner (uid, gid) to the sandbox user's
/// host id, made once per owner and kept for the process's life.
pub(crate) struct IdMaps {
    by_owner: HashMap<(u32, u32), OwnedFd>,
    /// The host id a grant's owner appears as: [`SANDBOX_HOST_ID`] for the
    /// jail; the sandbox uid itself for gVisor, whose file server (root)
    /// reports host owners to the Sentry unchanged.
    target: u32,
    /// gVisor: the file server creates files as root before it chowns them
    /// to the Sentry's user, so root must be mapped too (from
    /// [`SANDBOX_HOST_ID`] on disk, an id nothing is created as otherwise).
    map_root: bool,
}

impl Default for IdMaps {
    fn default() -> Self {
        IdMaps::mapping_to(SANDBOX_HOST_ID)
    }
}

impl IdMaps {
    pub(crate) fn mapping_to(target: u32) -> Self {
        IdMaps {
            by_owner: HashMap::new(),
            target,
            map_root: false,
        }
    }

    /// [`IdMaps::mapping_to`], with root mapped as well (see `map_root`).
    pub(crate) fn for_file_server(target: u32) -> Self {
        IdMaps {
            map_root: true,
            ..IdMaps::mapping_to(target)
        }
    }

    fn userns_for(&mut self, uid: u32, gid: u32) -> io::Result<&OwnedFd> {
        let (target, map_root) = (self.target, self.map_root);
        match self.by_owner.entry((uid, gid)) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => Ok(e.insert(mapping_userns(uid, gid, target, map_root)?)),
        }
    }

    /// A detached copy of the mount tree at `source` (an `O_PATH`
    /// descriptor opened without following symlinks), recursively nosuid,
    /// nodev, read-only unless `writable`, and idmapped so that its owner
    /// is the sandbox user. Owner and tree both come from the descriptor:
    /// a second lookup by path could be raced onto another directory. When
    /// the filesystem cannot be idmapped, the tree is returned without it
    /// and `Ok((fd, false))` tells the caller to warn.
    pub(crate) fn detached_tree(
        &mut self,
        source: &OwnedFd,
        writable: bool,
    ) -> io::Result<(OwnedFd, bool)> {
        let meta = std::fs::metadata(format!("/proc/self/fd/{}", source.as_raw_fd()))?;
        let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        if !writable {
            attrs |= sys::MOUNT_ATTR_RDONLY;
        }
        let userns = self.userns_for(meta.uid(), meta.gid())?.as_raw_fd();
        let tree = sys::open_tree_clone_at(source.as_raw_fd(), c"")?;
        match sys::mount_setattr_recursive(tree.as_raw_fd(), attrs, Some(userns)) {
            Ok(()) => Ok((tree, true)),
            Err(_) => {
                // Idmapping is refused per filesystem (and once set cannot be
                // retried on the same tree): start again without it.
                let tree = sys::open_tree_clone_at(source.as_raw_fd(), c"")?;
                sys::mount_setattr_recursive(tree.as_raw_fd(), attrs, None)?;
                Ok((tree, false))
            }
        }
    }
}

/// A user namespace whose only mapping is owner uid → sandbox uid and
/// owner gid → sandbox gid, held by descriptor.
fn mapping_userns(uid: u32, gid: u32, target: u32, map_root: bool) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = sys::pipe()?;
    let (done_r, done_w) = sys::pipe()?;
    // SAFETY: the supervisor is single-threaded here (before the jail's
    // clone), and the child only unshares, signals, waits and _exits.
    #[allow(unsafe_code)]
    let pid = match unsafe { sys::fork() }? {
        0 => {
            drop(ready_r);
            drop(done_w);
            let ok = sys::unshare(libc::CLONE_NEWUSER).is_ok();
            let _ = sys::write_all(ready_w.as_raw_fd(), if ok { b"1" } else { b"0" });
            let mut b = [0u8; 1];
            let _ = sys::read(done_r.as_raw_fd(), &mut b);
            sys::exit_now(0)
        }
        pid => pid,
    };
    drop(ready_w);
    drop(done_r);
    let result = (|| {
        let mut b = [0u8; 1];
        if sys::read(ready_r.as_raw_fd(), &mut b)? != 1 || b[0] != b'1' {
            return Err(io::Error::other(
                "could not create an idmapping user namespace",
            ));
        }
        let proc = format!("/proc/{pid}");
        // Each line: the id on disk, the id it appears as, one id.
        let map = |owner: u32| {
            let mut m = format!("{owner} {target} 1\n");
            if map_root && owner != SANDBOX_HOST_ID && target != 0 {
                m.push_str(&format!("{SANDBOX_HOST_ID} 0 1\n"));
            }
            m
        };
        std::fs::write(format!("{proc}/uid_map"), map(uid))?;
        std::fs::write(format!("{proc}/gid_map"), map(gid))?;
        Ok(OwnedFd::from(std::fs::File::open(format!(
            "{proc}/ns/user"
        ))?))
    })();
    drop(done_w);
    let _ = sys::waitpid(pid, 0);
    result
}
