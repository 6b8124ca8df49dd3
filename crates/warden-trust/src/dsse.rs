//! DSSE (Dead Simple Signing Envelope) v1: the signature covers
//! `PAE(payloadType, payload)` = `"DSSEv1" SP LEN(type) SP type SP
//! LEN(body) SP body`, lengths in ASCII decimal; the JSON envelope carries
//! the payload and signatures in base64.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys::KeyPair;

/// The payload type of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Envelopes larger than this are refused before parsing.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 (standard alphabet, padded).
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the 64-byte Ed25519 signature.
    pub sig: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("unknown key: no trusted key {0}")]
    UnknownKey(String),
    #[error("bad signature by {0}")]
    BadSignature(String),
    #[error("wrong payload type {got:?} (expected {want:?})")]
    PayloadType { got: String, want: String },
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `payload` as `payload_type` with `key`.
    pub fn sign(key: &KeyPair, payload_type: &str, payload: &[u8]) -> Envelope {
        let sig: Signature = key.signing().sign(&pae(payload_type, payload));
        Envelope {
            payload_type: payload_type.to_string(),
            payload: STANDARD.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: key.id(),
                sig: STANDARD.encode(sig.to_bytes()),
            }],
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses an envelope, with a size bound and every field required.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, DsseError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DsseError::Malformed(format!(
                "larger than {MAX_ENVELOPE_BYTES} bytes"
            )));
        }
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| DsseError::Malformed(e.to_string()))?;
        if env.signatures.is_empty() {
            return Err(DsseError::Malformed("no signatures".into()));
        }
        Ok(env)
    }

    /// The decoded payload, unverified.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, DsseError> {
        STANDARD
            .decode(&self.payload)
            .map_err(|e| DsseError::Malformed(format!("payload is not base64: {e}")))
    }

    /// Verifies the envelope as `want_type`: the first signature whose key
    /// `lookup` knows (by key id) must verify strictly over the PAE.
    /// Returns the key id that signed it and the payload.
    pub fn verify(
        &self,
        want_type: &str,
        lookup: impl Fn(&str) -> Option<VerifyingKey>,
    ) -> Result<(String, Vec<u8>), DsseError> {
        if self.payload_type != want_type {
            return Err(DsseError::PayloadType {
                got: self.payload_type.clone(),
                want: want_type.to_string(),
            });
        }
        let payload = self.payload_bytes()?;
        let message = pae(&self.payload_type, &payload);
        let mut unknown = None;
        for s in &self.signatures {
            let Some(key) = lookup(&s.keyid) else {
                unknown.get_or_insert_with(|| s.keyid.clone());
                continue;
            };
            let bytes = STANDARD
                .decode(&s.sig)
                .map_err(|e| DsseError::Malformed(format!("signature is not base64: {e}")))?;
            let sig = Signature::from_slice(&bytes)
                .map_err(|_| DsseError::Malformed("signature is not 64 bytes".into()))?;
            key.verify_strict(&message, &sig)
                .map_err(|_| DsseError::BadSignature(s.keyid.clone()))?;
            return Ok((s.keyid.clone(), payload));
        }
        Err(DsseError::UnknownKey(unknown.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn envelopes_verify_and_every_change_is_refused() {
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let env = Envelope::sign(&key, IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}");
        let vk = key.verifying();
        let id = key.id();
        let lookup = |k: &str| (k == id).then_some(vk);
        let parsed = Envelope::parse(env.to_json().as_bytes()).unwrap();
        let (signer, body) = parsed.verify(IN_TOTO_PAYLOAD_TYPE, lookup).unwrap();
        assert_eq!(
            (signer.as_str(), body.as_slice()),
            (id.as_str(), &b"{\"a\":1}"[..])
        );
        // Another payload type: the PAE differs, so a signature cannot move.
        assert!(matches!(
            parsed.verify("application/other", lookup),
            Err(DsseError::PayloadType { .. })
        ));
        let mut moved = parsed.clone();
        moved.payload_type = "application/other".into();
        assert!(matches!(
            moved.verify("application/other", lookup),
            Err(DsseError::BadSignature(_))
        ));
        let mut changed = parsed.clone();
        changed.payload = STANDARD.encode(b"{\"a\":2}");
        assert!(matches!(
            changed.verify(IN_TOTO_PAYLOAD_TYPE, lookup),
            Err(DsseError::BadSignature(_))
        ));
        let oid = other.id();
        let ovk = other.verifying();
        assert!(matches!(
            parsed.verify(IN_TOTO_PAYLOAD_TYPE, |k: &str| (k == oid).then_some(ovk)),
            Err(DsseError::UnknownKey(_))
        ));
        for bad in [
            &b"{}"[..],
            b"not json",
            b"{\"payloadType\":\"x\",\"payload\":\"\",\"signatures\":[]}",
        ] {
            assert!(
                matches!(Envelope::parse(bad), Err(DsseError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut short = parsed.clone();
        short.signatures[0].sig = STANDARD.encode([0u8; 10]);
        assert!(matches!(
            short.verify(IN_TOTO_PAYLOAD_TYPE, lookup),
            Err(DsseError::Malformed(_))
        ));
    }
}

/// A tool nobody here wrote checks Warden's signature: OpenSSL verifies the
/// Ed25519 signature over the PAE with the exported PEM key.
#[cfg(test)]
mod interop {
    use super::*;

    #[test]
    fn openssl_verifies_a_warden_signature_with_the_exported_key() {
        let dir = std::env::temp_dir().join(format!("warden-trust-openssl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let env = Envelope::sign(&key, IN_TOTO_PAYLOAD_TYPE, b"{\"statement\":true}");
        let pem = crate::keys::public_pem(&key.verifying()).unwrap();
        std::fs::write(dir.join("pub.pem"), pem).unwrap();
        let body = env.payload_bytes().unwrap();
        std::fs::write(dir.join("pae.bin"), pae(&env.payload_type, &body)).unwrap();
        let sig = STANDARD.decode(&env.signatures[0].sig).unwrap();
        std::fs::write(dir.join("sig.bin"), &sig).unwrap();
        let verify = |message: &str| {
            std::process::Command::new("openssl")
                .args([
                    "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
                ])
                .args(["-in", message, "-sigfile", "sig.bin"])
                .current_dir(&dir)
                .output()
                .expect("openssl runs (scripts/setup.sh installs it)")
        };
        let ok = verify("pae.bin");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        // The payload alone (no PAE) is not what was signed.
        std::fs::write(dir.join("body.bin"), &body).unwrap();
        assert!(!verify("body.bin").status.success());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
