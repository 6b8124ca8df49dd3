//! The trust store (`STATE/trust/keys.json`): the public keys whose
//! signatures Warden accepts, each with the artifact types it may sign, a
//! validity window for signing times (rotation: two keys valid side by side
//! for an overlap), and a revocation time from which its signatures fail.
//! Written whole to a temporary file and renamed, so a reader never sees
//! half of it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::dsse::{DsseError, Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::keys::{key_id, public_from_pem, KeyError};
use crate::statement::{ArtifactType, Statement, StatementError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub keyid: String,
    /// SubjectPublicKeyInfo PEM.
    pub pem: String,
    /// Artifact types it may sign; empty: every type.
    #[serde(default)]
    pub types: Vec<ArtifactType>,
    /// Signatures made before this time (seconds since the epoch) fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// Signatures made after this time fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
    /// From this time on, its signatures fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    pub version: u32,
    pub keys: Vec<TrustedKey>,
    /// The configuration (`warden.yaml`), policies and the RBAC file are
    /// used only with a valid `config`/`policy` signature.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_signed_config: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid trust store: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("key {0} is already trusted")]
    AlreadyTrusted(String),
    #[error("key {0} is not in the trust store")]
    NotTrusted(String),
    #[error("key {0} is already revoked")]
    AlreadyRevoked(String),
}

/// Why a signature does not verify: one line each, the contract of
/// `warden verify`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("unknown key: {0} is not in the trust store")]
    UnknownKey(String),
    #[error("revoked key: {keyid} was revoked at {at}{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Revoked {
        keyid: String,
        at: String,
        reason: Option<String>,
    },
    #[error("bad signature: the envelope was not signed by {0} as it stands")]
    BadSignature(String),
    #[error("wrong type: {0}")]
    WrongType(String),
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    #[error("expired statement: {0}")]
    Expired(String),
    #[error("outside the key's validity: {0}")]
    OutsideValidity(String),
}

/// What a valid signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub keyid: String,
    pub statement: Statement,
}

pub struct TrustStore {
    path: PathBuf,
    pub file: TrustFile,
}

/// RFC 3339 UTC of `secs` since the epoch.
pub fn rfc3339(secs: u64) -> String {
    jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}

/// Seconds since the epoch of an RFC 3339 time (`2026-12-31T00:00:00Z`).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let t: jiff::Timestamp = text
        .parse()
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))?;
    u64::try_from(t.as_second()).map_err(|_| format!("{text:?} is before 1970"))
}

impl TrustStore {
    /// The trust store of the state directory `state` (empty if none yet).
    pub fn open(state: &Path) -> Result<TrustStore, TrustError> {
        let dir = state.join("trust");
        crate::keystore::private_dir(&dir).map_err(|source| TrustError::Io {
            path: dir.clone(),
            source,
        })?;
        TrustStore::open_file(&dir.join("keys.json"))
    }

    /// The trust store in the file `path` (empty if there is none yet).
    pub fn open_file(path: &Path) -> Result<TrustStore, TrustError> {
        let path = path.to_path_buf();
        let file = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TrustError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TrustFile {
                version: 1,
                keys: Vec::new(),
                require_signed_config: false,
            },
            Err(source) => return Err(TrustError::Io { path, source }),
        };
        Ok(TrustStore { path, file })
    }

    /// Sets `require_signed_config` and saves.
    pub fn set_require_signed_config(&mut self, on: bool) -> Result<(), TrustError> {
        self.file.require_signed_config = on;
        self.save()
    }

    fn save(&self) -> Result<(), TrustError> {
        let io = |source| TrustError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            crate::keystore::private_dir(dir).map_err(io)?;
        }
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(&self.file).unwrap_or_default();
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).and_then(|()| f.sync_all()).map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Adds a public key (PEM); returns the entry.
    pub fn add(
        &mut self,
        pem: &str,
        types: Vec<ArtifactType>,
        not_before: Option<u64>,
        not_after: Option<u64>,
    ) -> Result<TrustedKey, TrustError> {
        let key = public_from_pem(pem)?;
        let keyid = key_id(&key);
        if self.file.keys.iter().any(|k| k.keyid == keyid) {
            return Err(TrustError::AlreadyTrusted(keyid));
        }
        let entry = TrustedKey {
            keyid,
            pem: crate::keys::public_pem(&key)?,
            types,
            not_before,
            not_after,
            revoked_at: None,
            revoked_reason: None,
        };
        self.file.keys.push(entry.clone());
        self.save()?;
        Ok(entry)
    }

    /// Revokes a key from `at` on.
    pub fn revoke(
        &mut self,
        keyid: &str,
        at: u64,
        reason: Option<String>,
    ) -> Result<TrustedKey, TrustError> {
        let entry = self
            .file
            .keys
            .iter_mut()
            .find(|k| k.keyid == keyid)
            .ok_or_else(|| TrustError::NotTrusted(keyid.to_string()))?;
        if entry.revoked_at.is_some() {
            return Err(TrustError::AlreadyRevoked(keyid.to_string()));
        }
        entry.revoked_at = Some(at);
        entry.revoked_reason = reason;
        let entry = entry.clone();
        self.save()?;
        Ok(entry)
    }

    fn lookup(&self, keyid: &str) -> Option<(&TrustedKey, VerifyingKey)> {
        let entry = self.file.keys.iter().find(|k| k.keyid == keyid)?;
        let key = public_from_pem(&entry.pem).ok()?;
        Some((entry, key))
    }

    /// Verifies `envelope` (bytes of a `.sig`) over an artifact whose
    /// SHA-256 is `sha256` (hex), at `now`, as `want` (any type if `None`).
    pub fn verify(
        &self,
        envelope: &[u8],
        sha256: &str,
        want: Option<ArtifactType>,
        now: u64,
    ) -> Result<Verified, VerifyError> {
        let env = Envelope::parse(envelope).map_err(|e| match e {
            DsseError::Malformed(m) => VerifyError::Malformed(m),
            other => VerifyError::Malformed(other.to_string()),
        })?;
        if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(VerifyError::Malformed(format!(
                "payloadType {:?} is not {IN_TOTO_PAYLOAD_TYPE}",
                env.payload_type
            )));
        }
        // Revocation is checked before the signature: a revoked key's
        // signatures fail whatever they say.
        for s in &env.signatures {
            if let Some((entry, _)) = self.lookup(&s.keyid) {
                if let Some(at) = entry.revoked_at.filter(|at| now >= *at) {
                    return Err(VerifyError::Revoked {
                        keyid: entry.keyid.clone(),
                        at: rfc3339(at),
                        reason: entry.revoked_reason.clone(),
                    });
                }
            }
        }
        let (keyid, payload) = env
            .verify(IN_TOTO_PAYLOAD_TYPE, |id| self.lookup(id).map(|(_, k)| k))
            .map_err(|e| match e {
                DsseError::UnknownKey(k) => VerifyError::UnknownKey(k),
                DsseError::BadSignature(k) => VerifyError::BadSignature(k),
                DsseError::Malformed(m) => VerifyError::Malformed(m),
                DsseError::PayloadType { got, .. } => {
                    VerifyError::Malformed(format!("payloadType {got:?}"))
                }
            })?;
        let statement = Statement::parse(&payload).map_err(|e| match e {
            StatementError::Malformed(m) => VerifyError::Malformed(format!("statement: {m}")),
            other => VerifyError::Malformed(other.to_string()),
        })?;
        let p = &statement.predicate;
        let want = want.unwrap_or(p.artifact_type);
        statement.check(want, sha256, now).map_err(|e| match e {
            StatementError::WrongType { got, want } => {
                VerifyError::WrongType(format!("signed as {got}, expected {want}"))
            }
            StatementError::DigestMismatch { actual, signed } => VerifyError::DigestMismatch(
                format!("the file is not what was signed (sha256 {actual}, signed {signed})"),
            ),
            StatementError::Expired { expires_at, .. } => {
                VerifyError::Expired(format!("it held until {}", rfc3339(expires_at)))
            }
            other => VerifyError::Malformed(other.to_string()),
        })?;
        let Some((entry, _)) = self.lookup(&keyid) else {
            return Err(VerifyError::UnknownKey(keyid));
        };
        if !entry.types.is_empty() && !entry.types.contains(&p.artifact_type) {
            return Err(VerifyError::WrongType(format!(
                "key {keyid} is trusted for {}, not {}",
                entry
                    .types
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                p.artifact_type.as_str()
            )));
        }
        if let Some(nb) = entry.not_before.filter(|nb| p.signed_at < *nb) {
            return Err(VerifyError::OutsideValidity(format!(
                "signed at {}, before the key's not-before {}",
                rfc3339(p.signed_at),
                rfc3339(nb)
            )));
        }
        if let Some(na) = entry.not_after.filter(|na| p.signed_at > *na) {
            return Err(VerifyError::OutsideValidity(format!(
                "signed at {}, after the key's not-after {}",
                rfc3339(p.signed_at),
                rfc3339(na)
            )));
        }
        Ok(Verified { keyid, statement })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{public_pem, KeyPair};
    use crate::statement::Predicate;

    fn signed(
        key: &KeyPair,
        ty: ArtifactType,
        digest: &str,
        at: u64,
        expires: Option<u64>,
    ) -> Vec<u8> {
        let st = Statement::new(
            "f",
            digest,
            Predicate {
                artifact_type: ty,
                name: None,
                version: None,
                signed_at: at,
                expires_at: expires,
            },
        );
        Envelope::sign(key, IN_TOTO_PAYLOAD_TYPE, &st.to_json())
            .to_json()
            .into_bytes()
    }

    #[test]
    fn every_failure_has_its_cause() {
        let state = std::env::temp_dir().join(format!("warden-trust-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let mut store = TrustStore::open(&state).unwrap();
        let old = KeyPair::generate().unwrap();
        let new = KeyPair::generate().unwrap();
        let stranger = KeyPair::generate().unwrap();
        let d = "ab".repeat(32);
        // Rotation: old valid until 2000, new from 1500; both valid in between.
        store
            .add(
                &public_pem(&old.verifying()).unwrap(),
                vec![],
                None,
                Some(2_000),
            )
            .unwrap();
        store
            .add(
                &public_pem(&new.verifying()).unwrap(),
                vec![ArtifactType::Module],
                Some(1_500),
                None,
            )
            .unwrap();
        let store = TrustStore::open(&state).unwrap();
        let m = ArtifactType::Module;
        let ok = |k: &KeyPair, at| store.verify(&signed(k, m, &d, at, None), &d, Some(m), 3_000);
        assert!(
            ok(&old, 1_600).is_ok() && ok(&new, 1_600).is_ok(),
            "overlap"
        );
        assert!(matches!(
            ok(&old, 2_500),
            Err(VerifyError::OutsideValidity(_))
        ));
        assert!(matches!(
            ok(&new, 1_000),
            Err(VerifyError::OutsideValidity(_))
        ));
        assert!(matches!(
            ok(&stranger, 1_600),
            Err(VerifyError::UnknownKey(_))
        ));
        let sig = signed(&new, m, &d, 1_600, Some(2_500));
        assert!(matches!(
            store.verify(&sig, &d, Some(m), 3_000),
            Err(VerifyError::Expired(_))
        ));
        assert!(matches!(
            store.verify(&sig, &"cd".repeat(32), Some(m), 2_000),
            Err(VerifyError::DigestMismatch(_))
        ));
        assert!(matches!(
            store.verify(&sig, &d, Some(ArtifactType::Policy), 2_000),
            Err(VerifyError::WrongType(_))
        ));
        // The new key may sign modules only.
        let policy_sig = signed(&new, ArtifactType::Policy, &d, 1_600, None);
        assert!(matches!(
            store.verify(&policy_sig, &d, None, 2_000),
            Err(VerifyError::WrongType(_))
        ));
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"payloadType\":\"x\",\"payload\":\"\",\"signatures\":[{\"sig\":\"\"}]}",
        ] {
            assert!(matches!(
                store.verify(bad, &d, None, 2_000),
                Err(VerifyError::Malformed(_))
            ));
        }
        // Revocation: from its time on.
        let mut store = TrustStore::open(&state).unwrap();
        store
            .revoke(&old.id(), 2_800, Some("leaked".into()))
            .unwrap();
        let before = store.verify(&signed(&old, m, &d, 1_600, None), &d, Some(m), 2_700);
        assert!(before.is_ok());
        let after = store.verify(&signed(&old, m, &d, 1_600, None), &d, Some(m), 2_800);
        assert!(
            matches!(after, Err(VerifyError::Revoked { .. })),
            "{after:?}"
        );
        assert!(after.unwrap_err().to_string().contains("leaked"));
        fs::remove_dir_all(&state).unwrap();
    }
}
