//! Errors of the PostgreSQL engine. None carries a password: messages name
//! roles, steps and servers only, and PostgreSQL's own errors (kept as the
//! source) quote no statement text, which in any case holds only a SCRAM
//! verifier, never a password.

use crate::definition::DefinitionError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("lease id {lease_id:?} is not 32 lowercase hex digits")]
    InvalidLeaseId { lease_id: String },
    #[error("lease {lease_id} expired at {expires_at} (unix seconds), not after now ({now})")]
    LeaseAlreadyExpired {
        lease_id: String,
        expires_at: u64,
        now: u64,
    },
    #[error("lease expiry {expires_at} (unix seconds) is after 9999-12-31T23:59:59Z")]
    ExpiryOutOfRange { expires_at: u64 },
    #[error("could not draw random bytes for a password")]
    Random(#[source] std::io::Error),
    #[error("could not connect to PostgreSQL at {target}")]
    Connect {
        target: String,
        #[source]
        source: postgres::Error,
    },
    #[error("PostgreSQL refused to {step} (role {role:?})")]
    Sql {
        step: &'static str,
        role: String,
        #[source]
        source: postgres::Error,
    },
    #[error("role {role:?} already exists: lease ids are issued once")]
    AlreadyIssued { role: String },
    #[error("grant role {grant_role:?} does not exist")]
    GrantRoleMissing { grant_role: String },
    #[error("grant role {grant_role:?} is or inherits from a role with {attribute}: a lease must not become that")]
    GrantRoleTooPowerful {
        grant_role: String,
        attribute: String,
    },
}
