//! The in-toto Statement v1 a Warden signature carries: the artifact's
//! SHA-256 as its subject, and a Warden predicate saying what the artifact
//! is (module, processor, policy, config), its name and version, when it
//! was signed and until when the statement holds.

use serde::{Deserialize, Serialize};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// The predicate type of Warden's artifact statements.
pub const PREDICATE_TYPE: &str = "urn:warden:predicate:artifact:v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactType {
    Module,
    Processor,
    Policy,
    Config,
}

impl ArtifactType {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactType::Module => "module",
            ArtifactType::Processor => "processor",
            ArtifactType::Policy => "policy",
            ArtifactType::Config => "config",
        }
    }

    pub fn parse(s: &str) -> Option<ArtifactType> {
        Some(match s {
            "module" => ArtifactType::Module,
            "processor" => ArtifactType::Processor,
            "policy" => ArtifactType::Policy,
            "config" => ArtifactType::Config,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub digest: Digests,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    pub sha256: String,
}

/// Warden's predicate. Times are RFC 3339 UTC, as seconds since the epoch
/// beside them so that a verifier needs no date parser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    #[serde(rename = "artifactType")]
    pub artifact_type: ArtifactType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(rename = "signedAt")]
    pub signed_at: u64,
    /// Seconds since the Unix epoch; `None`: no expiry.
    #[serde(rename = "expiresAt", default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Predicate,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatementError {
    #[error("malformed statement: {0}")]
    Malformed(String),
    #[error("wrong type: signed as {got}, expected {want}")]
    WrongType {
        got: &'static str,
        want: &'static str,
    },
    #[error("digest mismatch: the file is not what was signed (sha256 {actual}, signed {signed})")]
    DigestMismatch { actual: String, signed: String },
    #[error("expired statement: it held until {expires_at} (now {now})")]
    Expired { expires_at: u64, now: u64 },
    #[error("statement signed in the future ({signed_at}, now {now})")]
    FromTheFuture { signed_at: u64, now: u64 },
}

impl Statement {
    /// A statement about the artifact whose SHA-256 is `sha256` (hex).
    pub fn new(subject_name: &str, sha256: &str, predicate: Predicate) -> Statement {
        Statement {
            statement_type: STATEMENT_TYPE.to_string(),
            subject: vec![Subject {
                name: subject_name.to_string(),
                digest: Digests {
                    sha256: sha256.to_string(),
                },
            }],
            predicate_type: PREDICATE_TYPE.to_string(),
            predicate,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<Statement, StatementError> {
        let s: Statement =
            serde_json::from_slice(bytes).map_err(|e| StatementError::Malformed(e.to_string()))?;
        if s.statement_type != STATEMENT_TYPE {
            return Err(StatementError::Malformed(format!(
                "_type {:?}",
                s.statement_type
            )));
        }
        if s.predicate_type != PREDICATE_TYPE {
            return Err(StatementError::Malformed(format!(
                "predicateType {:?}",
                s.predicate_type
            )));
        }
        if s.subject.len() != 1 {
            return Err(StatementError::Malformed("expected one subject".into()));
        }
        Ok(s)
    }

    /// Checks that the statement is about an artifact of `want` type whose
    /// SHA-256 is `actual` (hex), valid at `now` (seconds since the epoch).
    pub fn check(&self, want: ArtifactType, actual: &str, now: u64) -> Result<(), StatementError> {
        let p = &self.predicate;
        if p.artifact_type != want {
            return Err(StatementError::WrongType {
                got: p.artifact_type.as_str(),
                want: want.as_str(),
            });
        }
        let signed = &self.subject[0].digest.sha256;
        if !signed.eq_ignore_ascii_case(actual) {
            return Err(StatementError::DigestMismatch {
                actual: actual.to_string(),
                signed: signed.clone(),
            });
        }
        if let Some(expires_at) = p.expires_at {
            if now >= expires_at {
                return Err(StatementError::Expired { expires_at, now });
            }
        }
        // A little clock skew between signer and verifier is allowed.
        if p.signed_at > now + 300 {
            return Err(StatementError::FromTheFuture {
                signed_at: p.signed_at,
                now,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(expires_at: Option<u64>) -> Statement {
        Statement::new(
            "parser.wasm",
            &"ab".repeat(32),
            Predicate {
                artifact_type: ArtifactType::Module,
                name: Some("parser".into()),
                version: Some("1.2.0".into()),
                signed_at: 1_000,
                expires_at,
            },
        )
    }

    #[test]
    fn statements_round_trip_and_are_checked() {
        let s = statement(Some(2_000));
        let json = s.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(
            text.contains("\"_type\":\"https://in-toto.io/Statement/v1\""),
            "{text}"
        );
        assert!(text.contains("\"sha256\":\""), "{text}");
        let back = Statement::parse(&json).unwrap();
        assert_eq!(back, s);
        let digest = "ab".repeat(32);
        assert!(back.check(ArtifactType::Module, &digest, 1_500).is_ok());
        assert!(matches!(
            back.check(ArtifactType::Policy, &digest, 1_500),
            Err(StatementError::WrongType { .. })
        ));
        assert!(matches!(
            back.check(ArtifactType::Module, &"cd".repeat(32), 1_500),
            Err(StatementError::DigestMismatch { .. })
        ));
        assert!(matches!(
            back.check(ArtifactType::Module, &digest, 2_000),
            Err(StatementError::Expired { .. })
        ));
        assert!(statement(None)
            .check(ArtifactType::Module, &digest, u64::MAX / 2)
            .is_ok());
        assert!(Statement::parse(b"{\"_type\":\"x\"}").is_err());
        let mut other = serde_json::to_value(&s).unwrap();
        other["predicateType"] = "https://slsa.dev/provenance/v1".into();
        assert!(Statement::parse(other.to_string().as_bytes()).is_err());
    }
}
