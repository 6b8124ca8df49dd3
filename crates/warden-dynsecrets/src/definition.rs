//! A dynamic secret's definition: where the admin connection goes, which
//! roles each leased login role is granted, and how the credential is shown
//! to the program. Parsed from YAML or JSON and validated before any SQL.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::sql::identifier_problem;

/// Roles a definition may never grant, whatever the admin's own rights:
/// each one lets its members run programs or touch files on the database
/// server, which is the database host, not the data.
const SERVER_ACCESS_ROLES: [&str; 3] = [
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
];

/// Longest role prefix: leaves room for a 32-digit lease id within 63 bytes.
const MAX_PREFIX_BYTES: usize = 31;

/// One PostgreSQL dynamic secret: every lease of it gets its own login role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresDefinition {
    /// The secret's name, as capabilities (`secret:NAME`) refer to it.
    pub name: String,
    /// How Warden reaches the server as an administrator.
    pub connection: AdminConnection,
    /// Roles each leased role becomes a member of (its privileges).
    #[serde(default)]
    pub grant_roles: Vec<String>,
    /// Leased roles are named `<role_prefix><lease id>`; reaping drops only
    /// roles of this shape.
    #[serde(default = "default_role_prefix")]
    pub role_prefix: String,
    /// The database the credential names; the admin's `dbname` if absent.
    #[serde(default)]
    pub database: Option<String>,
    /// How the credential is rendered into the value the program receives.
    #[serde(default)]
    pub format: CredentialFormat,
}

/// The administrator's connection. Only a Unix socket or a loopback
/// address: this crate speaks no TLS yet, so it refuses a network hop.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConnection {
    /// A socket directory (absolute path, as libpq's `host=/run/postgresql`)
    /// or a loopback address (`127.0.0.1`, `::1`, `localhost`).
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The database the admin connects to for role statements.
    #[serde(default = "default_dbname")]
    pub dbname: String,
    /// The admin role: it needs CREATEROLE (and ADMIN OPTION on the grant
    /// roles) or superuser.
    pub user: String,
    /// None for peer or trust authentication on the socket.
    #[serde(default, deserialize_with = "deserialize_password")]
    pub password: Option<Zeroizing<String>>,
}

/// The value handed to the sandboxed program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialFormat {
    /// A libpq connection URI: `postgresql://USER:PASSWORD@/DB?host=/dir&port=N`.
    #[default]
    Uri,
    /// A JSON object: `{"user", "password", "host", "port", "dbname"}`.
    Json,
}

/// A definition that could not be read or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("definition is not valid YAML for a PostgreSQL dynamic secret: {0}")]
    Yaml(String),
    #[error("definition is not valid JSON for a PostgreSQL dynamic secret: {0}")]
    Json(String),
    #[error("definition field `{field}` {reason}")]
    Invalid { field: String, reason: String },
}

fn default_role_prefix() -> String {
    "warden_".to_owned()
}

fn default_port() -> u16 {
    5432
}

fn default_dbname() -> String {
    "postgres".to_owned()
}

/// Deserializes the password without ever echoing it: serde's stock
/// "invalid type" errors quote the offending value, which here is a secret.
fn deserialize_password<'de, D>(deserializer: D) -> Result<Option<Zeroizing<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct PasswordVisitor;
    impl<'de> serde::de::Visitor<'de> for PasswordVisitor {
        type Value = Option<Zeroizing<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("the admin password as a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Zeroizing::new(v.to_owned())))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Zeroizing::new(v)))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            // `any`, not `str`: with `str` a format reports a number itself,
            // quoting it; with `any` the number reaches `visit_u64` below.
            d.deserialize_any(PasswordVisitor)
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(NOT_A_STRING))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(NOT_A_STRING))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(NOT_A_STRING))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(NOT_A_STRING))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(NOT_A_STRING))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(NOT_A_STRING))
        }
    }
    const NOT_A_STRING: &str = "the admin password must be a string (quote it)";
    deserializer.deserialize_option(PasswordVisitor)
}

impl fmt::Debug for AdminConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl AdminConnection {
    /// Whether `host` names a Unix socket directory (libpq's rule: a leading `/`).
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

impl PostgresDefinition {
    /// Parses and validates a YAML definition.
    pub fn from_yaml(text: &str) -> Result<Self, DefinitionError> {
        let mut options = serde_saphyr::Options::default();
        // Snippets quote the lines around an error, which may hold the password.
        options.with_snippet = false;
        let definition: Self = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| DefinitionError::Yaml(e.to_string()))?;
        definition.validate()?;
        Ok(definition)
    }

    /// Parses and validates a JSON definition.
    pub fn from_json(text: &str) -> Result<Self, DefinitionError> {
        let definition: Self =
            serde_json::from_str(text).map_err(|e| DefinitionError::Json(e.to_string()))?;
        definition.validate()?;
        Ok(definition)
    }

    /// The database the credential names.
    pub fn credential_database(&self) -> &str {
        self.database.as_deref().unwrap_or(&self.connection.dbname)
    }

    /// Checks everything that can be checked without a server. Called by the
    /// parsers; call it again after building or changing a definition by hand.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        let invalid = |field: &str, reason: &str| DefinitionError::Invalid {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if self.name.is_empty()
            || self.name.len() > 128
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "name",
                "must be 1 to 128 characters of letters, digits, '.', '_' and '-'",
            ));
        }
        validate_prefix(&self.role_prefix).map_err(|reason| invalid("role_prefix", reason))?;
        validate_host(&self.connection.host).map_err(|r| invalid("connection.host", r))?;
        if self.connection.port == 0 {
            return Err(invalid("connection.port", "must not be 0"));
        }
        for (field, value) in [
            ("connection.user", &self.connection.user),
            ("connection.dbname", &self.connection.dbname),
        ] {
            if let Some(reason) = identifier_problem(value) {
                return Err(invalid(field, reason));
            }
        }
        if let Some(database) = &self.database {
            if let Some(reason) = identifier_problem(database) {
                return Err(invalid("database", reason));
            }
        }
        if let Some(password) = &self.connection.password {
            if password.contains('\0') {
                return Err(invalid("connection.password", "contains a NUL byte"));
            }
        }
        for (index, role) in self.grant_roles.iter().enumerate() {
            let field = format!("grant_roles[{index}]");
            if let Some(reason) = identifier_problem(role) {
                return Err(invalid(&field, reason));
            }
            if role.starts_with(&self.role_prefix) {
                // Reaping would treat it as a leased role; and one lease's
                // role must never be granted to another.
                return Err(invalid(&field, "starts with the role prefix"));
            }
            if SERVER_ACCESS_ROLES.contains(&role.as_str()) {
                return Err(invalid(
                    &field,
                    "grants access to the database server's programs or files",
                ));
            }
            if self.grant_roles[..index].contains(role) {
                return Err(invalid(&field, "is listed twice"));
            }
        }
        Ok(())
    }
}

/// The prefix is spelled into role names and compared by reaping, so it is
/// kept to unquoted-identifier characters, and out of `pg_` (reserved).
fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    let mut bytes = prefix.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
    if !first_ok || !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_')) {
        return Err("must start with a lowercase letter or '_' and hold only a-z, 0-9 and '_'");
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err("is longer than 31 bytes (the role name must fit in 63 with the lease id)");
    }
    if prefix.starts_with("pg_") {
        return Err("starts with pg_, which PostgreSQL reserves");
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), &'static str> {
    if host.starts_with('/') {
        if host.contains('\0') {
            return Err("contains a NUL byte");
        }
        return Ok(());
    }
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err("must be a Unix socket directory or a loopback address: this engine has no TLS yet, so it does not send credentials across a network")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
name: app-readonly
connection:
  host: /run/postgresql
  port: 5433
  dbname: postgres
  user: warden_admin
  password: "s3cret-admin-pw"
grant_roles: [app_read, "odd \"name\"; --"]
database: app
format: json
"#;

    #[test]
    fn yaml_with_every_field() {
        let d = PostgresDefinition::from_yaml(YAML).unwrap();
        assert_eq!(d.name, "app-readonly");
        assert!(d.connection.is_unix_socket());
        assert_eq!(d.connection.port, 5433);
        assert_eq!(
            d.connection.password.as_deref().map(String::as_str),
            Some("s3cret-admin-pw")
        );
        assert_eq!(d.grant_roles, ["app_read", "odd \"name\"; --"]);
        assert_eq!(d.role_prefix, "warden_");
        assert_eq!(d.credential_database(), "app");
        assert_eq!(d.format, CredentialFormat::Json);
    }

    #[test]
    fn json_with_defaults() {
        let d = PostgresDefinition::from_json(
            r#"{"name":"n","connection":{"host":"127.0.0.1","user":"postgres"}}"#,
        )
        .unwrap();
        assert_eq!(d.connection.port, 5432);
        assert_eq!(d.connection.dbname, "postgres");
        assert!(d.connection.password.is_none());
        assert!(d.grant_roles.is_empty());
        assert_eq!(d.credential_database(), "postgres");
        assert_eq!(d.format, CredentialFormat::Uri);
    }

    #[test]
    fn debug_never_shows_the_admin_password() {
        let d = PostgresDefinition::from_yaml(YAML).unwrap();
        let shown = format!("{d:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn parse_errors_never_quote_the_password() {
        let yaml_number = "name: n\nconnection:\n  host: /s\n  user: u\n  password: 987654321\n";
        let json_number =
            r#"{"name":"n","connection":{"host":"/s","user":"u","password":987654321}}"#;
        let yaml_later_error =
            "name: n\nconnection:\n  host: /s\n  user: u\n  password: \"987654321\"\n  port: many\n";
        let yaml_broken = "name: n\nconnection:\n  password: \"987654321\"\n  host: [\n";
        for result in [
            PostgresDefinition::from_yaml(yaml_number),
            PostgresDefinition::from_json(json_number),
            PostgresDefinition::from_yaml(yaml_later_error),
            PostgresDefinition::from_yaml(yaml_broken),
        ] {
            let error = result.expect_err("must not parse");
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("987654321"), "{shown}");
        }
    }

    fn invalid_field(yaml_grants: &str, prefix: &str, host: &str) -> String {
        let text = format!(
            "name: n\nrole_prefix: {prefix}\nconnection: {{host: \"{host}\", user: u}}\ngrant_roles: {yaml_grants}\n"
        );
        match PostgresDefinition::from_yaml(&text) {
            Err(DefinitionError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn unacceptable_values_are_named_by_field() {
        let long = "r".repeat(64);
        assert_eq!(
            invalid_field(&format!("[{long}]"), "w_", "/s"),
            "grant_roles[0]"
        );
        assert_eq!(
            invalid_field("[ok, \"a\\0b\"]", "w_", "/s"),
            "grant_roles[1]"
        );
        assert_eq!(invalid_field("[w_other]", "w_", "/s"), "grant_roles[0]");
        assert_eq!(
            invalid_field("[pg_execute_server_program]", "w_", "/s"),
            "grant_roles[0]"
        );
        assert_eq!(invalid_field("[a, a]", "w_", "/s"), "grant_roles[1]");
        assert_eq!(invalid_field("[]", "Warden_", "/s"), "role_prefix");
        assert_eq!(invalid_field("[]", "pg_x_", "/s"), "role_prefix");
        assert_eq!(invalid_field("[]", "\"a;b\"", "/s"), "role_prefix");
        assert_eq!(invalid_field("[]", &"w".repeat(32), "/s"), "role_prefix");
        assert_eq!(
            invalid_field("[]", "w_", "db.example.com"),
            "connection.host"
        );
        assert_eq!(invalid_field("[]", "w_", "10.0.0.1"), "connection.host");
    }

    #[test]
    fn loopback_hosts_and_sockets_are_accepted() {
        for host in [
            "/tmp/sock dir",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "localhost",
        ] {
            assert!(validate_host(host).is_ok(), "{host}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "name: n\nconnection: {host: /s, user: u}\ngrant_role: [x]\n";
        assert!(matches!(
            PostgresDefinition::from_yaml(text),
            Err(DefinitionError::Yaml(_))
        ));
    }
}
