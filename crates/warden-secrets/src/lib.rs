//! Warden's secrets: an encrypted per-tenant store ([`SecretStore`]) under
//! a master key ([`MasterKey`]), leases that hand a secret to one
//! invocation for a while ([`LeaseStore`]), and the streaming redactor
//! that keeps leased values out of everything a run prints or records
//! ([`Redactor`], [`StreamRedactor`]). The formats are in docs/secrets.md.
//!
//! Secret values are held in buffers that are wiped on drop
//! ([`zeroize::Zeroizing`]), no type holding one derives `Debug`, and no
//! error carries a value: errors name tenants, secrets and versions only.
#![forbid(unsafe_code)]

mod fsutil;
pub mod lease;
pub mod master;
pub mod redact;
pub mod store;

use std::path::PathBuf;

use thiserror::Error;

pub use lease::{unix_now, Holder, Lease, LeaseError, LeaseStore};
pub use master::{MasterKey, MASTER_KEY_LEN};
pub use redact::{Redactor, StreamRedactor, MIN_DERIVED_LEN};
pub use store::{read_value, valid_secret_name, SecretInfo, SecretStore, MAX_SECRET_LEN};

/// Errors of the store and the master key. None carries a secret value.
#[derive(Debug, Error)]
pub enum SecretError {
    #[error("invalid tenant name {0:?}")]
    InvalidTenant(String),
    #[error("invalid secret name {0:?} (want [A-Za-z0-9][A-Za-z0-9_.-]{{0,127}})")]
    InvalidName(String),
    #[error("secret value is {size} bytes, more than the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("secret value is empty")]
    Empty,
    #[error("no secret {name:?} for tenant {tenant:?}{}", version.map(|v| format!(" at version {v}")).unwrap_or_default())]
    NotFound {
        tenant: String,
        name: String,
        version: Option<u64>,
    },
    #[error(
        "secret {name:?} version {version} of tenant {tenant:?} does not decrypt: \
         wrong master key, a damaged file, or a ciphertext moved from another \
         tenant, name or version"
    )]
    Decrypt {
        tenant: String,
        name: String,
        version: u64,
    },
    #[error("{path}: not a Warden secret file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("master key file {0} does not exist")]
    MasterKeyMissing(PathBuf),
    #[error("master key file {path}: {reason}")]
    MasterKeyInvalid { path: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SecretError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SecretError::Io {
            what: what.into(),
            source,
        }
    }
}
