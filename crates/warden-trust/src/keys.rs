//! Ed25519 keys: made from the system's randomness, stored as PKCS#8 PEM
//! (private) and SubjectPublicKeyInfo PEM (public), named by a key id that
//! anyone can recompute from the exported key: `sha256:` and the hex
//! SHA-256 of its SubjectPublicKeyInfo DER (`openssl pkey -pubin -outform
//! DER | sha256sum`).

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read randomness for a key: {0}")]
    Random(String),
    #[error("not an Ed25519 public key in PEM (SubjectPublicKeyInfo): {0}")]
    PublicPem(String),
    #[error("not an Ed25519 private key in PEM (PKCS#8): {0}")]
    PrivatePem(String),
    #[error("cannot encode the key: {0}")]
    Encode(String),
}

/// A signing key and its public half.
pub struct KeyPair {
    signing: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    /// Never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", key_id(&self.verifying()))
    }
}

impl KeyPair {
    /// A new key from the kernel's randomness (getrandom).
    pub fn generate() -> Result<KeyPair, KeyError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        let mut filled = 0;
        while filled < seed.len() {
            match rustix::rand::getrandom(
                &mut seed[filled..],
                rustix::rand::GetRandomFlags::empty(),
            ) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(KeyError::Random(e.to_string())),
            }
        }
        Ok(KeyPair {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<KeyPair, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(|signing| KeyPair { signing })
            .map_err(|e| KeyError::PrivatePem(e.to_string()))
    }

    /// The private key as PKCS#8 PEM, for a 0600 file. Its buffer is wiped
    /// when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        self.signing
            .to_pkcs8_pem(Default::default())
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    pub fn verifying(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn id(&self) -> String {
        key_id(&self.verifying())
    }

    pub(crate) fn signing(&self) -> &SigningKey {
        &self.signing
    }
}

/// The public key as PEM (SubjectPublicKeyInfo).
pub fn public_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(Default::default())
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// Reads a public key from PEM (SubjectPublicKeyInfo).
pub fn public_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError::PublicPem(e.to_string()))
}

/// `sha256:` and the hex SHA-256 of the key's SubjectPublicKeyInfo DER.
pub fn key_id(key: &VerifyingKey) -> String {
    let der = key
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        // The DER of an Ed25519 SPKI is a fixed 12-byte prefix and the key.
        .unwrap_or_else(|_| {
            let mut v = hex::decode("302a300506032b6570032100").unwrap_or_default();
            v.extend_from_slice(key.as_bytes());
            v
        });
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_and_keep_their_id() {
        let pair = KeyPair::generate().unwrap();
        let pem = public_pem(&pair.verifying()).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        let back = public_from_pem(&pem).unwrap();
        assert_eq!(key_id(&back), pair.id());
        let private = pair.to_pkcs8_pem().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(KeyPair::from_pkcs8_pem(&private).unwrap().id(), pair.id());
        assert!(!format!("{pair:?}").contains("PRIVATE"));
        assert_ne!(KeyPair::generate().unwrap().id(), pair.id());
    }

    #[test]
    fn the_id_is_the_hash_of_the_spki_der() {
        // RFC 8410 §10.1's example public key.
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let key = public_from_pem(pem).unwrap();
        let der = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=",
        )
        .unwrap();
        assert_eq!(
            key_id(&key),
            format!("sha256:{}", hex::encode(Sha256::digest(der)))
        );
        assert!(
            public_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
        );
    }
}
