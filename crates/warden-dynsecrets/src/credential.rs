//! The credential one lease receives, and the value handed to the program.

use std::fmt;
use std::fmt::Write as _;

use zeroize::Zeroizing;

use crate::definition::CredentialFormat;

/// A leased PostgreSQL login. Its `Debug` never shows the password, and the
/// password is wiped from memory when the credential is dropped.
#[derive(Clone)]
pub struct Credential {
    pub(crate) lease_id: String,
    pub(crate) user: String,
    pub(crate) password: Zeroizing<String>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: String,
    pub(crate) expires_at: u64,
    pub(crate) format: CredentialFormat,
}

impl Credential {
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// The login role's name (`<prefix><lease id>`).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password, for handing on and for registering with the redactor
    /// (register it on its own: a program may print it outside the URI).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A socket directory (leading `/`) or a loopback address.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// When the role's `VALID UNTIL` passes, in unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// The value handed to the program, in the definition's format.
    pub fn render(&self) -> Zeroizing<String> {
        match self.format {
            CredentialFormat::Uri => self.to_uri(),
            CredentialFormat::Json => self.to_json(),
        }
    }

    /// A libpq connection URI, every component percent-encoded:
    /// `postgresql://USER:PASSWORD@/DB?host=%2Frun%2Fpostgresql&port=5432`
    /// for a socket, `postgresql://USER:PASSWORD@127.0.0.1:5432/DB` over TCP.
    pub fn to_uri(&self) -> Zeroizing<String> {
        // Sized up front so the buffer holding the password never reallocates
        // (a reallocation would leave an unwiped copy behind).
        let capacity = 64
            + 3 * (self.user.len() + self.password.len() + self.host.len())
            + 3 * self.dbname.len();
        let mut uri = Zeroizing::new(String::with_capacity(capacity));
        uri.push_str("postgresql://");
        percent_encode_into(&mut uri, &self.user);
        uri.push(':');
        percent_encode_into(&mut uri, &self.password);
        uri.push('@');
        let socket = self.host.starts_with('/');
        if !socket {
            if self.host.contains(':') {
                // An IPv6 literal goes in brackets.
                let _ = write!(uri, "[{}]:{}", self.host, self.port);
            } else {
                percent_encode_into(&mut uri, &self.host);
                let _ = write!(uri, ":{}", self.port);
            }
        }
        uri.push('/');
        percent_encode_into(&mut uri, &self.dbname);
        if socket {
            uri.push_str("?host=");
            percent_encode_into(&mut uri, &self.host);
            let _ = write!(uri, "&port={}", self.port);
        }
        uri
    }

    /// A JSON object: `{"user":…,"password":…,"host":…,"port":…,"dbname":…}`.
    pub fn to_json(&self) -> Zeroizing<String> {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            user: &'a str,
            password: &'a str,
            host: &'a str,
            port: u16,
            dbname: &'a str,
        }
        let shown = Shown {
            user: &self.user,
            password: &self.password,
            host: &self.host,
            port: self.port,
            dbname: &self.dbname,
        };
        // JSON escaping at most sextuples a byte (\u00XX); sized so no reallocation.
        let capacity = 96
            + 6 * (self.user.len() + self.password.len())
            + 6 * (self.host.len() + self.dbname.len());
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        serde_json::to_writer(&mut *bytes, &shown).expect("serializing strings cannot fail");
        let text = String::from_utf8(std::mem::take(&mut *bytes)).expect("JSON is UTF-8");
        Zeroizing::new(text)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("lease_id", &self.lease_id)
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// RFC 3986 percent-encoding: everything but the unreserved characters.
fn percent_encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(host: &str, format: CredentialFormat) -> Credential {
        Credential {
            lease_id: "0123456789abcdef0123456789abcdef".into(),
            user: "warden_0123456789abcdef0123456789abcdef".into(),
            password: Zeroizing::new("Pa55-w0rd_xyz".into()),
            host: host.into(),
            port: 5433,
            dbname: "app db".into(),
            expires_at: 1_800_000_000,
            format,
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let shown = format!("{:?}", credential("/run/postgresql", CredentialFormat::Uri));
        assert!(!shown.contains("Pa55"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn uri_for_a_socket_puts_the_directory_in_the_query() {
        let c = credential("/run/postgresql", CredentialFormat::Uri);
        assert_eq!(
            c.render().as_str(),
            "postgresql://warden_0123456789abcdef0123456789abcdef:Pa55-w0rd_xyz@/app%20db?host=%2Frun%2Fpostgresql&port=5433"
        );
    }

    #[test]
    fn uri_over_tcp_names_host_and_port() {
        assert_eq!(
            credential("127.0.0.1", CredentialFormat::Uri).to_uri().as_str(),
            "postgresql://warden_0123456789abcdef0123456789abcdef:Pa55-w0rd_xyz@127.0.0.1:5433/app%20db"
        );
        assert!(credential("::1", CredentialFormat::Uri)
            .to_uri()
            .contains("@[::1]:5433/"));
    }

    #[test]
    fn json_has_the_five_fields() {
        let c = credential("/run/postgresql", CredentialFormat::Json);
        let value: serde_json::Value = serde_json::from_str(&c.render()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "user": "warden_0123456789abcdef0123456789abcdef",
                "password": "Pa55-w0rd_xyz",
                "host": "/run/postgresql",
                "port": 5433,
                "dbname": "app db",
            })
        );
    }
}
