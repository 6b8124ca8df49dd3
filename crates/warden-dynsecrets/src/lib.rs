//! Dynamic secrets: credentials created per lease and destroyed when it ends.
//!
//! One engine so far, PostgreSQL: [`PostgresEngine::issue`] creates a login
//! role `<prefix><lease id>` with a random password and `VALID UNTIL` the
//! lease's end, granted the roles its [`PostgresDefinition`] names;
//! [`PostgresEngine::revoke`] ends its sessions and drops it;
//! [`PostgresEngine::reap`] drops roles whose lease is gone (a Warden that
//! died). The lease id and expiry come in as plain values, so this crate
//! does not depend on the lease store. See docs/dynamic-secrets.md.
#![forbid(unsafe_code)]

mod credential;
mod definition;
mod engine;
mod error;
pub mod sql;

pub use credential::Credential;
pub use definition::{AdminConnection, CredentialFormat, DefinitionError, PostgresDefinition};
pub use engine::{
    PostgresEngine, ReapFailure, ReapReport, Revocation, LEASE_ID_HEX_DIGITS, MAX_EXPIRES_AT,
};
pub use error::Error;
