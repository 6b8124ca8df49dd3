//! Where Warden keeps its own state on the host, named in one place: the
//! WebAssembly compile cache (whose per-host key authenticates machine
//! code), the key-value stores and the state directory (signing keys,
//! trust store, registry, ledger). No sandboxed program may see any of
//! them (the jail masks them inside any grant that covers them).

use std::path::{Path, PathBuf};

/// Makes `dir` (and its parents) with mode 0700 if it is missing: Warden's
/// state is nobody else's to read.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The compile cache used when none is configured: `$WARDEN_CACHE_DIR` if
/// set (empty: no cache), else `/var/cache/warden/wasm` for root, else
/// `$XDG_CACHE_HOME/warden/wasm` (if absolute) or `$HOME/.cache/warden/wasm`.
pub fn default_cache_dir() -> Option<PathBuf> {
    default_dir(
        "WARDEN_CACHE_DIR",
        "/var/cache/warden/wasm",
        "XDG_CACHE_HOME",
        ".cache",
        "wasm",
    )
}

/// Where the key-value stores live when nothing else is said:
/// `$WARDEN_KV_DIR`, else `/var/lib/warden/kv` for root, else
/// `$XDG_DATA_HOME/warden/kv` or `~/.local/share/warden/kv`. `None` if
/// none of these can be named (no `HOME`).
pub fn default_kv_dir() -> Option<PathBuf> {
    default_dir(
        "WARDEN_KV_DIR",
        "/var/lib/warden/kv",
        "XDG_DATA_HOME",
        ".local/share",
        "kv",
    )
}

/// The state directory (keys, trust store, registry, ledger):
/// `$WARDEN_STATE` (the CLI's `--state DIR` sets it), else
/// `/var/lib/warden` for root, else `$XDG_STATE_HOME/warden` (if absolute)
/// or `~/.local/state/warden`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WARDEN_STATE") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/warden"));
    }
    if let Some(base) = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from) {
        if base.is_absolute() {
            return Some(base.join("warden"));
        }
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/warden"))
}

/// Every directory of Warden's own state this process would use by
/// default.
pub fn default_state_dirs() -> Vec<PathBuf> {
    [default_cache_dir(), default_kv_dir(), default_state_dir()]
        .into_iter()
        .flatten()
        .collect()
}

fn default_dir(
    env: &str,
    for_root: &str,
    xdg: &str,
    under_home: &str,
    leaf: &str,
) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(env) {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from(for_root));
    }
    if let Some(base) = std::env::var_os(xdg).map(PathBuf::from) {
        if base.is_absolute() {
            return Some(base.join("warden").join(leaf));
        }
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(under_home).join("warden").join(leaf))
}
