//! The PostgreSQL engine: one login role per lease, created with a random
//! password and `VALID UNTIL` the lease's end, dropped on revoke, expiry or
//! reaping — what Vault's database secrets engine does for PostgreSQL.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use zeroize::{Zeroize, Zeroizing};

use crate::credential::Credential;
use crate::definition::{AdminConnection, PostgresDefinition};
use crate::error::Error;
use crate::sql::{quote_identifier, quote_literal, rfc3339_utc};

/// Lease ids are 128 random bits in lowercase hex (as warden-secrets makes them).
pub const LEASE_ID_HEX_DIGITS: usize = 32;

/// Random bytes in each password: 256 bits, 43 base64url characters.
const PASSWORD_BYTES: usize = 32;

/// Role attributes a granted role must not carry, directly or through the
/// roles it belongs to: a member could `SET ROLE` to it and hold them.
const ESCALATING_ATTRIBUTES: [(&str, &str); 4] = [
    ("rolsuper", "SUPERUSER"),
    ("rolcreaterole", "CREATEROLE"),
    ("rolreplication", "REPLICATION"),
    ("rolbypassrls", "BYPASSRLS"),
];

/// What [`PostgresEngine::revoke`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub role: String,
    /// False when there was no such role (revoked before, or never issued).
    pub existed: bool,
    /// Sessions of the role that were ended.
    pub sessions_terminated: u64,
}

/// What [`PostgresEngine::reap`] dropped, kept and failed to drop, by role
/// name, in name order.
#[derive(Debug, Default)]
pub struct ReapReport {
    pub dropped: Vec<String>,
    pub kept: Vec<String>,
    /// Roles that could not be dropped (say, they own objects in a third
    /// database); each is left `NOLOGIN` where that step got through.
    pub failed: Vec<ReapFailure>,
}

#[derive(Debug)]
pub struct ReapFailure {
    pub role: String,
    pub error: Error,
}

/// The latest `VALID UNTIL` written: PostgreSQL's timestamps end at 294276
/// AD, but RFC 3339 (and our formatter) at 9999-12-31T23:59:59Z.
pub const MAX_EXPIRES_AT: u64 = 253_402_300_799;

/// Issues, revokes and reaps PostgreSQL credentials. Holds no connection:
/// each call connects as the definition's admin and disconnects.
#[derive(Debug, Clone)]
pub struct PostgresEngine {
    connect_timeout: Duration,
    statement_timeout: Duration,
    terminate_wait: Duration,
}

impl Default for PostgresEngine {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            terminate_wait: Duration::from_secs(5),
        }
    }
}

impl PostgresEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long to wait for the server to accept a connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The admin session's `statement_timeout` and `lock_timeout`: a stuck
    /// lock must fail a call, not hang Warden.
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The role name a lease gets under a definition: `<prefix><lease id>`.
    pub fn role_name(definition: &PostgresDefinition, lease_id: &str) -> Result<String, Error> {
        if !is_lease_id(lease_id) {
            return Err(Error::InvalidLeaseId {
                lease_id: lease_id.chars().take(80).collect(),
            });
        }
        Ok(format!("{}{lease_id}", definition.role_prefix))
    }

    /// Creates the lease's login role, granted the definition's roles, with a
    /// fresh random password and `VALID UNTIL` `expires_at` (unix seconds),
    /// all in one transaction: on any error nothing is left behind.
    pub fn issue(
        &self,
        definition: &PostgresDefinition,
        lease_id: &str,
        expires_at: u64,
    ) -> Result<Credential, Error> {
        definition.validate()?;
        let role = Self::role_name(definition, lease_id)?;
        let now = unix_now();
        if expires_at <= now {
            return Err(Error::LeaseAlreadyExpired {
                lease_id: lease_id.to_owned(),
                expires_at,
                now,
            });
        }
        if expires_at > MAX_EXPIRES_AT {
            return Err(Error::ExpiryOutOfRange { expires_at });
        }
        let password = random_password()?;
        // Only the SCRAM verifier reaches the server: the password itself
        // never appears in statement logs, pg_stat_activity or the WAL.
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());

        let mut client = self.connect(&definition.connection, &definition.connection.dbname)?;
        let sql = |step: &'static str| {
            let role = role.clone();
            move |source| Error::Sql { step, role, source }
        };
        let mut tx = client.transaction().map_err(sql("begin a transaction"))?;
        let exists = tx
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .map_err(sql("look the role up"))?
            .is_some();
        if exists {
            return Err(Error::AlreadyIssued { role });
        }
        for grant_role in &definition.grant_roles {
            check_grant_role(&mut tx, grant_role).map_err(|e| match e {
                GrantCheck::Refused(error) => error,
                GrantCheck::Sql(source) => Error::Sql {
                    step: "check a grant role",
                    role: role.clone(),
                    source,
                },
            })?;
        }
        let create = format!(
            "CREATE ROLE {} WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE \
             NOREPLICATION NOBYPASSRLS PASSWORD {} VALID UNTIL {}",
            quote_identifier(&role),
            quote_literal(&verifier),
            quote_literal(&rfc3339_utc(expires_at)),
        );
        tx.batch_execute(&create).map_err(|source| {
            if source.code() == Some(&SqlState::DUPLICATE_OBJECT) {
                Error::AlreadyIssued { role: role.clone() }
            } else {
                sql("create the role")(source)
            }
        })?;
        let comment = format!(
            "COMMENT ON ROLE {} IS {}",
            quote_identifier(&role),
            quote_literal(&format!(
                "Warden dynamic secret {}, lease {lease_id}",
                definition.name
            ))
        );
        tx.batch_execute(&comment)
            .map_err(sql("comment on the role"))?;
        for grant_role in &definition.grant_roles {
            let grant = format!(
                "GRANT {} TO {}",
                quote_identifier(grant_role),
                quote_identifier(&role)
            );
            tx.batch_execute(&grant).map_err(sql("grant a role"))?;
        }
        tx.commit().map_err(sql("commit the new role"))?;

        Ok(Credential {
            lease_id: lease_id.to_owned(),
            user: role,
            password,
            host: definition.connection.host.clone(),
            port: definition.connection.port,
            dbname: definition.credential_database().to_owned(),
            expires_at,
            format: definition.format,
        })
    }

    /// Ends the lease's role: no more logins, its sessions terminated, what it
    /// owns reassigned to the admin, its privileges dropped, the role dropped.
    /// Revoking a lease that has no role (any more) succeeds.
    pub fn revoke(
        &self,
        definition: &PostgresDefinition,
        lease_id: &str,
    ) -> Result<Revocation, Error> {
        definition.validate()?;
        let role = Self::role_name(definition, lease_id)?;
        let mut client = self.connect(&definition.connection, &definition.connection.dbname)?;
        self.drop_role(&mut client, definition, &role)
    }

    /// Crash recovery: drops every role of the definition's prefix and lease
    /// shape whose lease is not in `live_lease_ids`, or whose `VALID UNTIL`
    /// is at or before `now` (unix seconds). Other roles are never touched.
    pub fn reap<I>(
        &self,
        definition: &PostgresDefinition,
        live_lease_ids: I,
        now: u64,
    ) -> Result<ReapReport, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        definition.validate()?;
        let live: HashSet<String> = live_lease_ids
            .into_iter()
            .map(|id| id.as_ref().to_owned())
            .collect();
        let mut client = self.connect(&definition.connection, &definition.connection.dbname)?;
        // `starts_with`, not LIKE: `_` in the prefix is a LIKE wildcard.
        let rows = client
            .query(
                "SELECT rolname::text, extract(epoch FROM rolvaliduntil)::float8 \
                 FROM pg_roles WHERE starts_with(rolname::text, $1) ORDER BY rolname",
                &[&definition.role_prefix],
            )
            .map_err(|source| Error::Sql {
                step: "list the prefixed roles",
                role: format!("{}*", definition.role_prefix),
                source,
            })?;
        let mut report = ReapReport::default();
        for row in rows {
            let role: String = row.get(0);
            let valid_until: Option<f64> = row.get(1);
            let lease_id = &role[definition.role_prefix.len()..];
            if !is_lease_id(lease_id) {
                continue;
            }
            // NULL means no expiry: only liveness decides then.
            let expired = valid_until.is_some_and(|t| t <= now as f64);
            if live.contains(lease_id) && !expired {
                report.kept.push(role);
                continue;
            }
            match self.drop_role(&mut client, definition, &role) {
                Ok(_) => report.dropped.push(role),
                // One stubborn role must not keep every other orphan alive;
                // a lost connection, though, fails them all alike.
                Err(error) if !client.is_closed() => {
                    report.failed.push(ReapFailure { role, error })
                }
                Err(error) => return Err(error),
            }
        }
        Ok(report)
    }

    fn drop_role(
        &self,
        client: &mut Client,
        definition: &PostgresDefinition,
        role: &str,
    ) -> Result<Revocation, Error> {
        let sql = |step: &'static str| {
            let role = role.to_owned();
            move |source| Error::Sql { step, role, source }
        };
        let oid: Option<u32> = client
            .query_opt("SELECT oid FROM pg_roles WHERE rolname = $1", &[&role])
            .map_err(sql("look the role up"))?
            .map(|row| row.get(0));
        let Some(oid) = oid else {
            return Ok(Revocation {
                role: role.to_owned(),
                existed: false,
                sessions_terminated: 0,
            });
        };
        let quoted = quote_identifier(role);
        // Committed on its own, first, so no new session starts while the
        // existing ones are ended.
        match client.batch_execute(&format!("ALTER ROLE {quoted} NOLOGIN")) {
            Ok(()) => {}
            // Dropped by a concurrent revoke since we looked: nothing to do.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                return Ok(Revocation {
                    role: role.to_owned(),
                    existed: false,
                    sessions_terminated: 0,
                })
            }
            Err(e) => return Err(sql("forbid the role's logins")(e)),
        }
        let mut sessions_terminated = self
            .terminate_sessions(client, oid)
            .map_err(sql("terminate the role's sessions"))?;

        // REASSIGN and DROP OWNED act on the current database (and shared
        // objects): the credential's database needs its own pass.
        let credential_database = definition.credential_database();
        if credential_database != definition.connection.dbname {
            let mut other = self.connect(&definition.connection, credential_database)?;
            other
                .batch_execute(&owned_cleanup(&quoted))
                .map_err(sql("reassign and drop what the role owns"))?;
        }
        let mut tx = client.transaction().map_err(sql("begin a transaction"))?;
        tx.batch_execute(&owned_cleanup(&quoted))
            .map_err(sql("reassign and drop what the role owns"))?;
        tx.batch_execute(&format!("DROP ROLE IF EXISTS {quoted}"))
            .map_err(sql("drop the role"))?;
        tx.commit().map_err(sql("commit dropping the role"))?;
        // A session that was still authenticating when we looked outlives the
        // role's row; it is found by the old oid.
        sessions_terminated += self
            .terminate_sessions(client, oid)
            .map_err(sql("terminate the role's remaining sessions"))?;
        Ok(Revocation {
            role: role.to_owned(),
            existed: true,
            sessions_terminated,
        })
    }

    fn terminate_sessions(&self, client: &mut Client, oid: u32) -> Result<u64, postgres::Error> {
        let wait_ms = i64::try_from(self.terminate_wait.as_millis()).unwrap_or(i64::MAX);
        // With a timeout, pg_terminate_backend waits until the backend is
        // gone (PostgreSQL 14+), so its locks are released before we drop.
        // The targets are chosen first, in a materialized CTE: in one WHERE
        // clause the planner may call pg_terminate_backend before the filter.
        let row = client.query_one(
            "WITH targets AS MATERIALIZED ( \
               SELECT pid FROM pg_stat_activity \
               WHERE usesysid = $1 AND pid <> pg_backend_pid()) \
             SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, $2)) FROM targets",
            &[&oid, &wait_ms],
        )?;
        let count: i64 = row.get(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn connect(&self, connection: &AdminConnection, dbname: &str) -> Result<Client, Error> {
        let mut config = postgres::Config::new();
        if connection.is_unix_socket() {
            config.host_path(&connection.host);
        } else {
            config.host(&connection.host);
        }
        config
            .port(connection.port)
            .user(&connection.user)
            .dbname(dbname)
            .application_name("warden-dynsecrets")
            .ssl_mode(SslMode::Disable)
            .connect_timeout(self.connect_timeout);
        if let Some(password) = &connection.password {
            config.password(password.as_bytes());
        }
        let target = format!(
            "{}:{} database {dbname:?} as {:?}",
            connection.host, connection.port, connection.user
        );
        let mut client = config.connect(NoTls).map_err(|source| Error::Connect {
            target: target.clone(),
            source,
        })?;
        let timeout_ms = self.statement_timeout.as_millis();
        client
            .batch_execute(&format!(
                "SET statement_timeout = {timeout_ms}; SET lock_timeout = {timeout_ms}"
            ))
            .map_err(|source| Error::Connect { target, source })?;
        Ok(client)
    }
}

fn owned_cleanup(quoted_role: &str) -> String {
    format!("REASSIGN OWNED BY {quoted_role} TO CURRENT_USER; DROP OWNED BY {quoted_role}")
}

enum GrantCheck {
    Refused(Error),
    Sql(postgres::Error),
}

impl From<postgres::Error> for GrantCheck {
    fn from(e: postgres::Error) -> Self {
        GrantCheck::Sql(e)
    }
}

/// A grant role must exist, and neither it nor any role it inherits may
/// carry an attribute that would let the lease escape its privileges.
fn check_grant_role(
    tx: &mut postgres::Transaction<'_>,
    grant_role: &str,
) -> Result<(), GrantCheck> {
    let exists = tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&grant_role])?
        .is_some();
    if !exists {
        return Err(GrantCheck::Refused(Error::GrantRoleMissing {
            grant_role: grant_role.to_owned(),
        }));
    }
    for (column, attribute) in ESCALATING_ATTRIBUTES {
        // `column` comes from the constant above, never from input.
        let query = format!(
            "SELECT EXISTS (SELECT 1 FROM pg_roles r \
             WHERE r.{column} AND pg_has_role($1::text::name, r.oid, 'MEMBER'))"
        );
        let escalates: bool = tx.query_one(&query, &[&grant_role])?.get(0);
        if escalates {
            return Err(GrantCheck::Refused(Error::GrantRoleTooPowerful {
                grant_role: grant_role.to_owned(),
                attribute: attribute.to_owned(),
            }));
        }
    }
    Ok(())
}

fn is_lease_id(text: &str) -> bool {
    text.len() == LEASE_ID_HEX_DIGITS
        && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn random_password() -> Result<Zeroizing<String>, Error> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    let result = fill_random(&mut bytes);
    let password = result.map(|()| Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes)));
    bytes.zeroize();
    password
}

fn fill_random(buffer: &mut [u8]) -> Result<(), Error> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n =
            rustix::rand::getrandom(&mut buffer[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(|e| Error::Random(e.into()))?;
        filled += n;
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_43_base64url_characters_and_differ() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(*a, *b);
    }

    #[test]
    fn lease_ids_are_exactly_32_lowercase_hex_digits() {
        assert!(is_lease_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_lease_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_lease_id("0123456789abcdef"));
        assert!(!is_lease_id("0123456789abcdef0123456789abcdef0"));
        assert!(!is_lease_id("0123456789abcdef0123456789abcde\""));
    }
}
