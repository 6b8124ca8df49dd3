//! `warden-oci`: Warden's jail as an OCI runtime with runc's command line,
//! so that containerd's `io.containerd.runc.v2` shim — and Kubernetes
//! through a RuntimeClass — starts containers in it. See docs/oci.md.

pub mod caps;
pub mod cgroups;
pub mod container;
mod devices;
mod hooks;
mod init;
mod monitor;
pub mod mounts;
pub mod seccomp;
pub mod spec;
pub mod state;

/// Why a command failed; each is one line, and the runtime exits 1 as
/// runc does.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Config(String),
    #[error("container with id {0} already exists")]
    Exists(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Create(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}
